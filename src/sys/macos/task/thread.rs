//! Running libsystem calls (close, dup2) inside the target, without writing its code or its
//! data: one thread of ours is created in the target (`thread_create`, held), given a stack of
//! its own (`mach_vm_allocate`) and an exception port of ours. Each call sets its pc at the
//! function, the arguments in registers and a return address at an unmapped sentinel, and
//! resumes it; when the function returns, the `ret` faults at the sentinel: we receive that
//! exception, read the return register, suspend the thread again and answer the exception, so it
//! waits, parked, for the next call. One thread serves every call (490 closes are 490
//! resume/fault round trips, not 490 thread creations); Drop terminates it. A fault anywhere
//! else means the call failed (libc's error path, `cerror_nocancel`, stores the app's global
//! `errno` — libsyscall/custom/errno.c — then faults reading the TSD base, which a bare thread
//! lacks). The app's own threads stay suspended by the caller meanwhile; ours is the only one
//! that runs.
//!
//! What of the app's memory this writes: none of its code; the stack we allocated for our
//! thread (on x86_64 each call's return address is written there); and, only when a call fails,
//! the global `errno` above, which no suspended thread of the app is reading at that moment (each
//! of its threads has its own errno in its TSD; the global one is a legacy variable).
//!
//! Safety of the addresses: the dyld shared cache is mapped at one slide per boot, so libsystem's
//! functions sit at the same address in every process that maps the same cache; the caller checks
//! that (`ports::shared_cache`: same UUID, same slide), and `Injector::new` checks that the
//! function's first bytes in the target are ours. Not its protection: the shared cache is mapped
//! into every task as one submap entry with `cur_prot` read-only (xnu
//! osfmk/vm/vm_shared_region.c `vm_shared_region_enter`), and `mach_vm_region`'s basic info
//! reports that entry's protection without descending into the submap (osfmk/vm/vm_map.c,
//! `VM_REGION_BASIC_INFO_64`), so every libsystem function would read as non-executable.

use super::super::arch;
use super::super::ffi;
use super::super::ffi::kern_name;
use super::super::refusals;
use super::ports::{self, Port, ReceivePort, RemoteThread};
use mach2::kern_return::KERN_SUCCESS;
use mach2::message::{
    mach_msg, mach_msg_destroy, mach_msg_header_t, MACH_RCV_MSG, MACH_RCV_TIMEOUT,
};
use mach2::port::MACH_PORT_NULL;
use std::ffi::CStr;
use std::time::Duration;

use super::left_behind::SENTINEL;
const STACK_SIZE: u64 = ports::OUR_STACK_SIZE;

use ports::state::{State, COUNT, FLAVOR};

/// How a call went wrong.
#[derive(Debug)]
pub enum CallError {
    /// The target refuses our thread state (arm64e, hardened process): nothing ran.
    Refused(String),
    /// No exception within the time-out: the thread was terminated.
    TimedOut,
    /// The call faulted somewhere other than the sentinel: it took libc's error path.
    Faulted { pc: u64, exception: i32 },
    /// A Mach call of ours failed.
    Mach(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(why) => f.write_str(why),
            CallError::TimedOut => {
                f.write_str("the call did not return in time (thread terminated)")
            }
            CallError::Faulted { pc, exception } => write!(
                f,
                "the call failed inside the target (exception {exception} at {pc:#x}: libc's \
                 error path — the fd was probably no longer valid)"
            ),
            CallError::Mach(why) => f.write_str(why),
        }
    }
}

/// A libsystem function of ours, by name.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub name: &'static str,
    pub addr: u64,
}

impl Function {
    /// Looks the function up in our process, and checks it lives in a system library (hence in
    /// the shared cache).
    pub fn ours(names: &[&'static CStr]) -> Result<Function, String> {
        for name in names {
            // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches every loaded image.
            let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if addr.is_null() {
                continue;
            }
            // SAFETY: zeroed Dl_info is a valid out-buffer.
            let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
            // SAFETY: an address from dlsym and a valid out-pointer.
            let found = unsafe { libc::dladdr(addr, &mut info) } != 0 && !info.dli_fname.is_null();
            let image = if found {
                // SAFETY: dladdr's file name is a NUL-terminated string owned by dyld.
                unsafe { CStr::from_ptr(info.dli_fname) }
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            if !image.starts_with("/usr/lib/system/") {
                return Err(format!(
                    "{} resolves to {image:?}, not a system library in the shared cache",
                    name.to_string_lossy()
                ));
            }
            return Ok(Function {
                name: name.to_str().unwrap_or("?"),
                addr: addr as u64,
            });
        }
        Err(format!("cannot find {:?} in libsystem", names))
    }
}

/// Runs calls in one target on one thread of ours. Owns that thread, our exception port and the
/// stack it allocated there.
///
/// The thread is created, given its exception port and a first state (parked at the sentinel)
/// in `new`, before the caller suspends anything: it is created held, so nothing runs. Each
/// `call` sets its state, resumes it, catches the fault at the sentinel, suspends it again and
/// answers the exception (with the state it faulted in): between calls it is parked by a
/// suspension, never inside an exception whose handler could die with us. Drop terminates it.
pub struct Injector<'t> {
    task: &'t Port,
    pid: i32,
    name: String,
    exc: ReceivePort,
    stack: u64,
    timeout: Duration,
    thread: RemoteThread,
    /// The thread can take no more calls (a call timed out or the thread was lost).
    spent: Option<String>,
}

impl<'t> Injector<'t> {
    /// Checks the sentinel and the functions in the target, allocates the stack and creates our
    /// thread, parked. `announce(thread_id, stack)` runs right after the thread exists, before
    /// anything else is done with it (the guardian must know it to remove it); when it fails,
    /// the thread and its stack are removed again.
    pub fn new(
        task: &'t Port,
        (pid, name): (i32, &str),
        functions: &[Function],
        timeout: Duration,
        announce: &mut dyn FnMut(u64, u64) -> Result<(), String>,
    ) -> Result<Self, String> {
        if ports::protection_at(task, SENTINEL)
            .is_some_and(|prot| prot & mach2::vm_prot::VM_PROT_EXECUTE != 0)
        {
            return Err(format!(
                "the target has executable memory at {SENTINEL:#x} (a small __PAGEZERO): ptyreap \
                 has no safe return address in it"
            ));
        }
        // (the functions' protection is not checked: see the module's docs)
        for f in functions {
            let mut theirs = [0u8; 16];
            ports::read_memory(task, f.addr, &mut theirs)
                .map_err(|kr| format!("cannot read {} in the target: {}", f.name, kern_name(kr)))?;
            // SAFETY: our own function's first 16 bytes (code pages are readable on macOS).
            let ours = unsafe { std::slice::from_raw_parts(f.addr as *const u8, 16) };
            if ours != theirs {
                return Err(format!(
                    "{} differs between ptyreap and the target: their libsystem is not ours",
                    f.name
                ));
            }
        }
        let exc = ReceivePort::new()
            .map_err(|kr| format!("cannot allocate an exception port: {}", kern_name(kr)))?;
        let mut stack: u64 = 0;
        // SAFETY: out-pointer; memory in the target, zero-filled, freed in Drop.
        let kr = unsafe {
            mach2::vm::mach_vm_allocate(
                task.name(),
                &mut stack,
                STACK_SIZE,
                mach2::vm_statistics::VM_FLAGS_ANYWHERE,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(format!(
                "cannot allocate a stack in the target: {}",
                kern_name(kr)
            ));
        }
        let thread = match RemoteThread::create(task) {
            Ok(t) => t,
            Err(kr) => {
                // SAFETY: the stack just allocated; nothing runs on it.
                unsafe { mach2::vm::mach_vm_deallocate(task.name(), stack, STACK_SIZE) };
                return Err(format!("thread_create: {}", kern_name(kr)));
            }
        };
        let injector = Injector {
            task,
            pid,
            name: name.to_string(),
            exc,
            stack,
            timeout,
            thread,
            spent: None,
        };
        // Drop terminates the thread and frees the stack if this fails
        let id = ports::thread_id(injector.thread.port())
            .ok_or_else(|| "cannot identify our thread in the target".to_string())?;
        announce(id, stack)?;
        // SAFETY: our thread; a send right of ours (copied by the call).
        let kr = unsafe {
            mach2::thread_act::thread_set_exception_ports(
                injector.thread.name(),
                ffi::EXC_MASK_OURS,
                injector.exc.name(),
                (ffi::EXCEPTION_STATE | ffi::MACH_EXCEPTION_CODES) as _,
                FLAVOR,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(format!("thread_set_exception_ports: {}", kern_name(kr)));
        }
        // parked at the sentinel: were it ever resumed by anyone, it would only fault to us
        let initial = get_state(&injector.thread)
            .map_err(|kr| format!("thread_get_state: {}", kern_name(kr)))?;
        let parked = injector
            .prepare(&initial, SENTINEL, &[], injector.stack + STACK_SIZE)
            .map_err(|e| e.to_string())?;
        injector.set_state(parked).map_err(|e| e.to_string())?;
        Ok(injector)
    }

    /// Our thread, to keep out of the app's suspension and to announce to the guardian.
    pub fn thread(&self) -> &Port {
        self.thread.port()
    }

    fn set_state(&self, mut state: State) -> Result<(), CallError> {
        // SAFETY: `state` is COUNT words of this flavor, for our own thread.
        let kr = unsafe {
            mach2::thread_act::thread_set_state(
                self.thread.name(),
                FLAVOR,
                (&mut state as *mut State).cast(),
                COUNT,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(CallError::Refused(refusals::thread_state_refusal(
                kr, self.pid, &self.name,
            )));
        }
        Ok(())
    }

    /// Calls `f(args…)` on our thread in the target; its integer return value.
    pub fn call(&mut self, f: Function, args: &[u64]) -> Result<u64, CallError> {
        if let Some(why) = &self.spent {
            return Err(CallError::Mach(format!("not attempted: {why}")));
        }
        let initial = get_state(&self.thread)
            .map_err(|kr| CallError::Mach(format!("thread_get_state: {}", kern_name(kr))))?;
        let state = self.prepare(&initial, f.addr, args, self.stack + STACK_SIZE)?;
        self.set_state(state)?;
        // SAFETY: our thread, suspended once (created held, or parked after the last call).
        let kr = unsafe { mach2::thread_act::thread_resume(self.thread.name()) };
        if kr != KERN_SUCCESS {
            self.spent = Some(format!("thread_resume: {}", kern_name(kr)));
            return Err(CallError::Mach(format!("thread_resume: {}", kern_name(kr))));
        }
        let mut buf = AlignedBuf([0u8; ffi::EXC_MSG_BUFFER]);
        let header = buf.0.as_mut_ptr().cast::<mach_msg_header_t>();
        let timeout_ms = self.timeout.as_millis().clamp(1, u32::MAX as u128) as u32;
        // SAFETY: `buf` holds EXC_MSG_BUFFER bytes; we receive on our own port.
        let mr = unsafe {
            mach_msg(
                header,
                MACH_RCV_MSG | MACH_RCV_TIMEOUT,
                0,
                ffi::EXC_MSG_BUFFER as u32,
                self.exc.name(),
                timeout_ms,
                MACH_PORT_NULL,
            )
        };
        // Parked again before anything else: a fault answered below then leaves it held.
        // SAFETY: our thread.
        unsafe { mach2::thread_act::thread_suspend(self.thread.name()) };
        if mr != KERN_SUCCESS {
            // Still inside the call (a close() waiting behind a reader in fileproc_drain): it
            // will finish in the kernel and stay held; Drop terminates it.
            self.spent = Some("an earlier call did not return in time".into());
            return Err(if mr == mach2::message::MACH_RCV_TIMED_OUT {
                CallError::TimedOut
            } else {
                CallError::Mach(format!("mach_msg receive: {mr:#x}"))
            });
        }
        let notice = ffi::parse_exception(&buf.0);
        let last = get_state(&self.thread);
        // Answer the exception with the state it faulted in: the thread leaves the exception
        // and stays parked by the suspension above. Never destroy it unanswered: the kernel
        // would pass the fault on to the app's own handlers.
        let answered = last.as_ref().ok().and_then(|state| {
            // SAFETY: State is plain 32-bit words.
            let words = unsafe {
                std::slice::from_raw_parts((state as *const State).cast::<u32>(), COUNT as usize)
            };
            ffi::exception_reply(&buf.0, FLAVOR, words)
        });
        let sent = answered.is_some_and(|mut reply| {
            // SAFETY: a complete reply message of `reply.len()` bytes, sent on the request's
            // send-once reply right.
            let mr = unsafe {
                mach_msg(
                    reply.as_mut_ptr().cast(),
                    mach2::message::MACH_SEND_MSG,
                    reply.len() as u32,
                    0,
                    MACH_PORT_NULL,
                    0,
                    MACH_PORT_NULL,
                )
            };
            mr == KERN_SUCCESS
        });
        if sent {
            // the request's voucher right is ours once its reply right has been used
            // SAFETY: reads the header we received.
            let voucher = unsafe { (*header).msgh_voucher_port };
            if voucher != MACH_PORT_NULL {
                // SAFETY: a send right the kernel gave us with the request.
                unsafe {
                    mach2::mach_port::mach_port_deallocate(mach2::traps::mach_task_self(), voucher)
                };
            }
        }
        if !sent {
            // Terminate before releasing the message: destroying its reply right first would
            // let the kernel pass the fault on to the app's own handlers.
            self.thread.terminate();
            // SAFETY: a message we received into `buf` and did not send on.
            unsafe { mach_msg_destroy(header) };
            self.spent = Some("our thread could not be parked again".into());
        }
        let last =
            last.map_err(|kr| CallError::Mach(format!("thread_get_state: {}", kern_name(kr))))?;
        let exception = notice
            .filter(|n| n.msgh_id == ffi::MACH_EXCEPTION_RAISE_STATE_MSGH_ID)
            .map(|n| n.exception)
            .unwrap_or(-1);
        match returned(&last) {
            Some(value) if exception == ffi::EXC_BAD_ACCESS => Ok(value),
            _ => Err(CallError::Faulted {
                pc: pc_of(&last),
                exception,
            }),
        }
    }

    #[cfg(target_arch = "aarch64")]
    fn prepare(
        &self,
        initial: &State,
        func: u64,
        args: &[u64],
        top: u64,
    ) -> Result<State, CallError> {
        Ok(arch::arm64::call_state(initial, func, args, top, SENTINEL))
    }

    #[cfg(target_arch = "x86_64")]
    fn prepare(
        &self,
        initial: &State,
        func: u64,
        args: &[u64],
        top: u64,
    ) -> Result<State, CallError> {
        let (state, word) = arch::x86_64::call_state(initial, func, args, top, SENTINEL);
        let bytes = word.value.to_ne_bytes();
        // SAFETY: writes 8 bytes of ours into the stack we allocated in the target.
        let kr = unsafe {
            mach2::vm::mach_vm_write(
                self.task.name(),
                word.addr,
                bytes.as_ptr() as usize,
                bytes.len() as u32,
            )
        };
        if kr != KERN_SUCCESS {
            return Err(CallError::Mach(format!(
                "cannot write the return address on our stack: {}",
                kern_name(kr)
            )));
        }
        Ok(state)
    }
}

impl Drop for Injector<'_> {
    fn drop(&mut self) {
        self.thread.terminate();
        // SAFETY: the stack we allocated in the target; our thread no longer runs on it (a
        // thread held inside a call dies on its way back to user space, without touching it).
        unsafe { mach2::vm::mach_vm_deallocate(self.task.name(), self.stack, STACK_SIZE) };
    }
}

#[repr(C, align(8))]
struct AlignedBuf([u8; ffi::EXC_MSG_BUFFER]);

fn get_state(thread: &RemoteThread) -> Result<State, i32> {
    ports::thread_state(thread.port())
}

#[cfg(target_arch = "aarch64")]
fn returned(state: &State) -> Option<u64> {
    arch::arm64::returned(state, SENTINEL)
}
#[cfg(target_arch = "aarch64")]
fn pc_of(state: &State) -> u64 {
    state.pc
}
#[cfg(target_arch = "x86_64")]
fn returned(state: &State) -> Option<u64> {
    arch::x86_64::returned(state, SENTINEL)
}
#[cfg(target_arch = "x86_64")]
fn pc_of(state: &State) -> u64 {
    state.rip
}
