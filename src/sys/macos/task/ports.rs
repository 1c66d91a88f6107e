//! Mach ports with owners: every right we receive (task port, thread ports, our exception port)
//! lives in a guard that deallocates it on drop, and the app's suspended threads live in a guard
//! that resumes them on drop — so no path out of the reaper, error or panic, leaves a port leaked
//! or a thread of the app suspended.

use super::super::ffi;
use super::super::refusals::SharedCache;
use mach2::kern_return::{kern_return_t, KERN_FAILURE, KERN_SUCCESS};
use mach2::mach_types::{task_t, thread_act_t};
use mach2::message::mach_msg_type_number_t;
use mach2::port::{mach_port_t, MACH_PORT_NULL};
use mach2::traps::mach_task_self;

extern "C" {
    // osfmk/mach/task.defs and thread_act.defs; mach2 0.4 lacks them.
    pub fn thread_create(parent_task: task_t, child_act: *mut thread_act_t) -> kern_return_t;
    pub fn thread_terminate(target_act: thread_act_t) -> kern_return_t;
    // osfmk/mach/mach_traps.h
    pub fn pid_for_task(task: mach_port_t, pid: *mut i32) -> kern_return_t;
    // osfmk/mach/thread_act.defs
    fn thread_info(
        target_act: thread_act_t,
        flavor: u32,
        thread_info_out: *mut i32,
        thread_info_out_cnt: *mut mach_msg_type_number_t,
    ) -> kern_return_t;
}

/// Whether a call on a thread failed because the thread has exited (its port is dead or gone).
pub fn thread_exited(kr: kern_return_t) -> bool {
    matches!(
        kr,
        mach2::kern_return::KERN_TERMINATED
            | mach2::kern_return::KERN_INVALID_ARGUMENT
            | mach2::kern_return::KERN_INVALID_NAME
            // the thread's port is a dead name
            | mach2::message::MACH_SEND_INVALID_DEST
    )
}

fn info_of<T: Default>(thread: &Port, flavor: u32, count: u32) -> Option<T> {
    let mut info = T::default();
    let mut n = count;
    // SAFETY: `info` holds `count` words of this flavor.
    let kr = unsafe { thread_info(thread.name(), flavor, (&mut info as *mut T).cast(), &mut n) };
    (kr == KERN_SUCCESS).then_some(info)
}

/// The thread's id, unique system-wide for the boot (other processes name it the same).
pub fn thread_id(thread: &Port) -> Option<u64> {
    info_of::<ffi::ThreadIdentifierInfo>(
        thread,
        ffi::THREAD_IDENTIFIER_INFO,
        ffi::THREAD_IDENTIFIER_INFO_COUNT,
    )
    .map(|i| i.thread_id)
}

/// The thread's user suspend count.
pub fn suspend_count(thread: &Port) -> Option<i32> {
    info_of::<ffi::ThreadBasicInfo>(thread, ffi::THREAD_BASIC_INFO, ffi::THREAD_BASIC_INFO_COUNT)
        .map(|i| i.suspend_count)
}

/// A send right (task or thread port) we own.
#[derive(Debug)]
pub struct Port(pub mach_port_t);

impl Port {
    pub fn name(&self) -> mach_port_t {
        self.0
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        if self.0 != MACH_PORT_NULL {
            // SAFETY: we own this right in our own space.
            unsafe { mach2::mach_port::mach_port_deallocate(mach_task_self(), self.0) };
        }
    }
}

/// A port we receive on, with one send right of ours for handing out.
#[derive(Debug)]
pub struct ReceivePort(mach_port_t);

impl ReceivePort {
    pub fn new() -> Result<ReceivePort, kern_return_t> {
        let mut name: mach_port_t = MACH_PORT_NULL;
        // SAFETY: out-pointer to a port name in our space.
        let kr = unsafe {
            mach2::mach_port::mach_port_allocate(
                mach_task_self(),
                mach2::port::MACH_PORT_RIGHT_RECEIVE,
                &mut name,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(kr);
        }
        let port = ReceivePort(name);
        // SAFETY: we hold the receive right of `name`.
        let kr = unsafe {
            mach2::mach_port::mach_port_insert_right(
                mach_task_self(),
                name,
                name,
                mach2::message::MACH_MSG_TYPE_MAKE_SEND,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(kr); // drop releases the receive right
        }
        Ok(port)
    }

    pub fn name(&self) -> mach_port_t {
        self.0
    }
}

impl Drop for ReceivePort {
    fn drop(&mut self) {
        // SAFETY: our own send and receive rights; a send right may already be gone if insert
        // failed, then the first call fails harmlessly.
        unsafe {
            mach2::mach_port::mach_port_deallocate(mach_task_self(), self.0);
            mach2::mach_port::mach_port_mod_refs(
                mach_task_self(),
                self.0,
                mach2::port::MACH_PORT_RIGHT_RECEIVE,
                -1,
            );
        }
    }
}

/// The target's task port, or the kern_return_t macOS refused it with.
pub fn task_for_pid(pid: i32) -> Result<Port, kern_return_t> {
    let mut task: mach_port_t = MACH_PORT_NULL;
    // SAFETY: out-pointer to a port name.
    let kr = unsafe { mach2::traps::task_for_pid(mach_task_self(), pid, &mut task) };
    if kr != KERN_SUCCESS {
        return Err(kr);
    }
    Ok(Port(task))
}

/// The pid a task port stands for (it must still be our target: pids are reused).
pub fn pid_of(task: &Port) -> Option<i32> {
    let mut pid = 0;
    // SAFETY: out-pointer to an int.
    let kr = unsafe { pid_for_task(task.name(), &mut pid) };
    (kr == KERN_SUCCESS).then_some(pid)
}

/// Every thread of the task, as ports we own.
pub fn threads(task: &Port) -> Result<Vec<Port>, kern_return_t> {
    let mut list: *mut thread_act_t = std::ptr::null_mut();
    let mut count: mach_msg_type_number_t = 0;
    // SAFETY: out-pointers; the kernel maps the array into our space.
    let kr = unsafe { mach2::task::task_threads(task.name(), &mut list, &mut count) };
    if kr != KERN_SUCCESS {
        return Err(kr);
    }
    if count == 0 || list.is_null() {
        return Ok(Vec::new()); // nothing was mapped into our space
    }
    // SAFETY: the kernel gave us `count` thread names at `list`.
    let ports = unsafe { std::slice::from_raw_parts(list, count as usize) }
        .iter()
        .map(|&t| Port(t))
        .collect();
    // SAFETY: the array was allocated in our space by the call above.
    unsafe {
        mach2::vm::mach_vm_deallocate(
            mach_task_self(),
            list as u64,
            (count as usize * std::mem::size_of::<thread_act_t>()) as u64,
        )
    };
    Ok(ports)
}

/// The thread state of our own architecture: the only flavor ptyreap reads or sets (targets of
/// another architecture are refused before).
#[cfg(target_arch = "aarch64")]
pub mod state {
    use crate::sys::macos::ffi;
    pub const FLAVOR: i32 = ffi::ARM_THREAD_STATE64;
    pub const COUNT: u32 = ffi::ARM_THREAD_STATE64_COUNT;
    pub type State = ffi::ArmThreadState64;
}
#[cfg(target_arch = "x86_64")]
pub mod state {
    use crate::sys::macos::ffi;
    pub const FLAVOR: i32 = ffi::X86_THREAD_STATE64;
    pub const COUNT: u32 = ffi::X86_THREAD_STATE64_COUNT;
    pub type State = ffi::X86ThreadState64;
}

/// A thread's state in our flavor.
pub fn thread_state(thread: &Port) -> Result<state::State, kern_return_t> {
    let mut out = state::State::default();
    let mut count = state::COUNT;
    // SAFETY: `out` holds COUNT words of this flavor.
    let kr = unsafe {
        mach2::thread_act::thread_get_state(
            thread.name(),
            state::FLAVOR,
            (&mut out as *mut state::State).cast(),
            &mut count,
        )
    };
    if kr != KERN_SUCCESS {
        return Err(kr);
    }
    Ok(out)
}

/// Reads `buf.len()` bytes of the task's memory at `addr`.
pub fn read_memory(task: &Port, addr: u64, buf: &mut [u8]) -> Result<(), kern_return_t> {
    read_memory_of(task.name(), addr, buf)
}

fn read_memory_of(task: mach_port_t, addr: u64, buf: &mut [u8]) -> Result<(), kern_return_t> {
    let mut got: u64 = 0;
    // SAFETY: `buf` is ours and holds its length.
    let kr = unsafe {
        mach2::vm::mach_vm_read_overwrite(
            task,
            addr,
            buf.len() as u64,
            buf.as_mut_ptr() as u64,
            &mut got,
        )
    };
    match kr {
        KERN_SUCCESS if got == buf.len() as u64 => Ok(()),
        KERN_SUCCESS => Err(mach2::kern_return::KERN_INVALID_ADDRESS),
        kr => Err(kr),
    }
}

/// The shared cache a task maps, from its `dyld_all_image_infos` (TASK_DYLD_INFO). `task` may be
/// our own (`mach_task_self()`), to compare.
pub fn shared_cache(task: mach_port_t) -> Option<SharedCache> {
    let info: ffi::TaskDyldInfo =
        task_info_of(task, ffi::TASK_DYLD_INFO, ffi::TASK_DYLD_INFO_COUNT)?;
    if { info.all_image_info_format } != ffi::TASK_DYLD_ALL_IMAGE_INFO_64 {
        return None;
    }
    let mut raw = [0u8; std::mem::size_of::<ffi::DyldAllImageInfosHead>()];
    read_memory_of(task, info.all_image_info_addr, &mut raw).ok()?;
    // SAFETY: `raw` holds exactly one head; read_unaligned copes with its alignment.
    let head: ffi::DyldAllImageInfosHead = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    SharedCache::from_head(&head)
}

/// The task-wide suspend count (task_suspend, pid_suspend, a debugger), or None if unreadable.
pub fn task_suspend_count(task: &Port) -> Option<i32> {
    let info: ffi::MachTaskBasicInfo = task_info_of(
        task.name(),
        ffi::MACH_TASK_BASIC_INFO,
        ffi::MACH_TASK_BASIC_INFO_COUNT,
    )?;
    Some(info.suspend_count)
}

/// `task_info` of one flavor, as `info_of` does `thread_info`: `count` words of `T`.
fn task_info_of<T: Default>(task: mach_port_t, flavor: u32, count: u32) -> Option<T> {
    let mut info = T::default();
    let mut n = count;
    // SAFETY: `info` holds `count` words of this flavor.
    let kr = unsafe { mach2::task::task_info(task, flavor, (&mut info as *mut T).cast(), &mut n) };
    (kr == KERN_SUCCESS).then_some(info)
}

/// The size of the stack the reaper allocates in the target for its thread (the guardian frees
/// it when the reaper could not).
pub const OUR_STACK_SIZE: u64 = 64 * 1024;

/// The protection of the region holding `addr`, or None when no region holds it.
pub fn protection_at(task: &Port, addr: u64) -> Option<i32> {
    use mach2::vm_region::{vm_region_basic_info_64, VM_REGION_BASIC_INFO_64};
    let mut address = addr;
    let mut size: u64 = 0;
    // SAFETY: zeroed plain-data out-buffer.
    let mut info: vm_region_basic_info_64 = unsafe { std::mem::zeroed() };
    let mut count = vm_region_basic_info_64::count();
    let mut object: mach_port_t = MACH_PORT_NULL;
    // SAFETY: valid out-pointers for this flavor.
    let kr = unsafe {
        mach2::vm::mach_vm_region(
            task.name(),
            &mut address,
            &mut size,
            VM_REGION_BASIC_INFO_64,
            (&mut info as *mut vm_region_basic_info_64).cast(),
            &mut count,
            &mut object,
        )
    };
    if object != MACH_PORT_NULL {
        drop(Port(object));
    }
    // mach_vm_region returns the first region at or above `addr`
    (kr == KERN_SUCCESS && address <= addr && addr < address + size).then_some(info.protection)
}

/// A thread of ours in the target: terminated (and its port released) on drop, whatever
/// happened to it.
pub struct RemoteThread {
    port: Port,
    terminated: bool,
}

impl RemoteThread {
    /// A new thread in the task, held (suspend count 1). Every signal is blocked in our thread
    /// around the creation: the new thread inherits that mask, so the app's process-directed
    /// signals (SIGCHLD, SIGWINCH, ...) can never be delivered to ours.
    pub fn create(task: &Port) -> Result<RemoteThread, kern_return_t> {
        let mut th: thread_act_t = MACH_PORT_NULL;
        let every = crate::sys::deferral::SignalDeferral::every().map_err(|_| KERN_FAILURE)?;
        // SAFETY: out-pointer; the new thread starts suspended.
        let kr = unsafe { thread_create(task.name(), &mut th) };
        drop(every);
        if kr != KERN_SUCCESS {
            return Err(kr);
        }
        Ok(RemoteThread {
            port: Port(th),
            terminated: false,
        })
    }

    pub fn name(&self) -> thread_act_t {
        self.port.name()
    }

    pub fn port(&self) -> &Port {
        &self.port
    }

    pub fn terminate(&mut self) {
        if !self.terminated {
            self.terminated = true;
            // SAFETY: our own thread in the target.
            unsafe { thread_terminate(self.port.name()) };
        }
    }
}

impl Drop for RemoteThread {
    fn drop(&mut self) {
        self.terminate();
    }
}
