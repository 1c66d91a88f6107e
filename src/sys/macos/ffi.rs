//! The kernel structures the macOS backend reads and writes, declared by hand with fixed-width
//! types only, so that this file compiles — and its layout tests run — on Linux as well.
//!
//! Why by hand: `libc` lacks `proc_fileinfo`, `vnode_fdinfowithpath`, `proc_regionwithpathinfo`,
//! the kqueue knote records and the private `proc_info` flavors, and `mach2` 0.4 lacks the
//! exception message layouts.
//! Every size and offset below is checked in the tests against the numbers that follow from the
//! declarations in xnu-11417 (apple-oss-distributions/xnu): `bsd/sys/proc_info.h`,
//! `bsd/sys/proc_info_private.h`, `bsd/sys/event_private.h`, `osfmk/mach/task_info.h`,
//! `osfmk/mach/arm/_structs.h`, `osfmk/mach/i386/_structs.h`, `osfmk/mach/message.h`,
//! `osfmk/mach/mach_exc.defs` and `osfmk/kdp/kdp_dyld.h` (the 64-bit `dyld_all_image_infos`).

// A transcription of headers: each build uses the items of its own architecture, and some are
// declared for the layout tests and the documentation only.
#![allow(dead_code)]

// ---- bsd/sys/proc_info.h ------------------------------------------------------------------------

/// `proc_listpids` type: every process.
pub const PROC_ALL_PIDS: u32 = 1;
/// `proc_pidinfo` flavors.
pub const PROC_PIDLISTFDS: i32 = 1;
pub const PROC_PIDTBSDINFO: i32 = 3;
/// The VM region containing the address passed as `arg`, else the next one above it, with the
/// path of the file it maps (empty when none). Fails (0, EINVAL) past the last region.
pub const PROC_PIDREGIONPATHINFO: i32 = 8;
/// proc_info_private.h: `struct proc_archinfo`.
pub const PROC_PIDARCHINFO: i32 = 19;
/// `proc_pidfdinfo` flavors.
pub const PROC_PIDFDVNODEPATHINFO: i32 = 2;
/// proc_info_private.h: an array of `kevent_extinfo`, one per knote of the kqueue; fd -1 names
/// the process's workqueue kqueue (libdispatch sources). The call returns the number of knotes.
pub const PROC_PIDFDKQUEUE_EXTINFO: i32 = 9;
/// proc_info_private.h: the kernel never reports more knotes than this per kqueue.
pub const PROC_PIDFDKQUEUE_KNOTES_MAX: usize = 1024 * 128;
/// proc_info_private.h: a `proc_pidinfo` flavor listing the ids (`kqueue_id_t`, a u64) of the
/// process's dynamic kqueues: libdispatch's workloops, which have no fd. Returns the number of ids
/// (possibly more than fit), capped at PROC_PIDDYNKQUEUES_MAX.
pub const PROC_PIDLISTDYNKQUEUES: i32 = 27;
pub const PROC_PIDDYNKQUEUES_MAX: usize = 1024 * 128;
/// proc_info_private.h: a `proc_piddynkqueueinfo` flavor, the `kevent_extinfo` array of one
/// dynamic kqueue (like PROC_PIDFDKQUEUE_EXTINFO for an fd kqueue).
pub const PROC_PIDDYNKQUEUE_EXTINFO: i32 = 1;

/// `proc_fdinfo.proc_fdtype` values.
pub const PROX_FDTYPE_VNODE: u32 = 1;
pub const PROX_FDTYPE_KQUEUE: u32 = 5;

/// `proc_fileinfo.fi_status` flags.
pub const PROC_FP_SHARED: u32 = 1;
pub const PROC_FP_CLEXEC: u32 = 2;
/// A guarded fd: closing or dup2()ing over it raises EXC_GUARD, which kills the process.
pub const PROC_FP_GUARDED: u32 = 4;

/// `proc_bsdinfo.pbi_flags`: the process runs translated (proc_info_private.h).
pub const PROC_FLAG_ROSETTA: u32 = 0x0200_0000;
/// `pbi_flags`: the process called exec (its `P_EXEC`; bsd/sys/proc_info.h).
pub const PROC_FLAG_EXEC: u32 = 0x4000;
/// `proc_bsdinfo.pbi_status` of a zombie (bsd/sys/proc.h `SZOMB`).
pub const SZOMB: u32 = 5;
/// `proc_bsdinfo.e_tdev` when the process has no controlling terminal (NODEV).
pub const NODEV: u32 = u32::MAX;

pub const MAXPATHLEN: usize = 1024;
pub const MAXCOMLEN: usize = 16;

/// `struct proc_fdinfo`: one entry of PROC_PIDLISTFDS.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcFdInfo {
    pub proc_fd: i32,
    pub proc_fdtype: u32,
}

/// `struct proc_fileinfo` (`off_t` is 64-bit on every macOS ABI).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcFileInfo {
    pub fi_openflags: u32,
    pub fi_status: u32,
    pub fi_offset: i64,
    pub fi_type: i32,
    pub fi_guardflags: u32,
}

/// `struct vinfo_stat`: a copy of stat64 with fixed-size fields. Declared `packed(4)`: in the
/// 64-bit ABI every field already sits at its natural offset (the tests check it), so the layout
/// is the same either way, and packing keeps us from taking references to fields of a struct
/// that the kernel copied into a buffer of ours: read fields by value (`{ st.vst_rdev }`).
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct VinfoStat {
    pub vst_dev: u32,
    pub vst_mode: u16,
    pub vst_nlink: u16,
    pub vst_ino: u64,
    pub vst_uid: u32,
    pub vst_gid: u32,
    pub vst_atime: i64,
    pub vst_atimensec: i64,
    pub vst_mtime: i64,
    pub vst_mtimensec: i64,
    pub vst_ctime: i64,
    pub vst_ctimensec: i64,
    pub vst_birthtime: i64,
    pub vst_birthtimensec: i64,
    pub vst_size: i64,
    pub vst_blocks: i64,
    pub vst_blksize: i32,
    pub vst_flags: u32,
    pub vst_gen: u32,
    pub vst_rdev: u32,
    pub vst_qspare: [i64; 2],
}

/// `struct vnode_info` (`fsid_t` is `int32_t val[2]`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct VnodeInfo {
    pub vi_stat: VinfoStat,
    pub vi_type: i32,
    pub vi_pad: i32,
    pub vi_fsid: [i32; 2],
}

/// `struct vnode_info_path`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VnodeInfoPath {
    pub vip_vi: VnodeInfo,
    pub vip_path: [u8; MAXPATHLEN],
}

impl Default for VnodeInfoPath {
    fn default() -> Self {
        VnodeInfoPath {
            vip_vi: VnodeInfo::default(),
            vip_path: [0; MAXPATHLEN],
        }
    }
}

impl VnodeInfoPath {
    /// The path's bytes up to its NUL.
    pub fn path_bytes(&self) -> &[u8] {
        let raw = &self.vip_path;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        &raw[..end]
    }

    /// The path up to its NUL (lossy: paths are bytes).
    pub fn path(&self) -> String {
        String::from_utf8_lossy(self.path_bytes()).into_owned()
    }
}

/// `struct vnode_fdinfowithpath`: what PROC_PIDFDVNODEPATHINFO returns.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct VnodeFdInfoWithPath {
    pub pfi: ProcFileInfo,
    pub pvip: VnodeInfoPath,
}

impl VnodeFdInfoWithPath {
    /// The path up to its NUL (lossy: paths are bytes).
    pub fn path(&self) -> String {
        self.pvip.path()
    }
}

/// `struct proc_regioninfo`: one entry of the target's VM map (a submap, such as the shared
/// cache, counts as one region).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcRegionInfo {
    pub pri_protection: u32,
    pub pri_max_protection: u32,
    pub pri_inheritance: u32,
    pub pri_flags: u32,
    pub pri_offset: u64,
    pub pri_behavior: u32,
    pub pri_user_wired_count: u32,
    pub pri_user_tag: u32,
    pub pri_pages_resident: u32,
    pub pri_pages_shared_now_private: u32,
    pub pri_pages_swapped_out: u32,
    pub pri_pages_dirtied: u32,
    pub pri_ref_count: u32,
    pub pri_shadow_depth: u32,
    pub pri_share_mode: u32,
    pub pri_private_pages_resident: u32,
    pub pri_shared_pages_resident: u32,
    pub pri_obj_id: u32,
    pub pri_depth: u32,
    pub pri_address: u64,
    pub pri_size: u64,
}

/// `struct proc_regionwithpathinfo`: what PROC_PIDREGIONPATHINFO returns; `prp_vip` is all zero
/// (an empty path) for a region that maps no file.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ProcRegionWithPathInfo {
    pub prp_prinfo: ProcRegionInfo,
    pub prp_vip: VnodeInfoPath,
}

/// `struct proc_bsdinfo`: what PROC_PIDTBSDINFO returns.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcBsdInfo {
    pub pbi_flags: u32,
    pub pbi_status: u32,
    pub pbi_xstatus: u32,
    pub pbi_pid: u32,
    pub pbi_ppid: u32,
    pub pbi_uid: u32,
    pub pbi_gid: u32,
    pub pbi_ruid: u32,
    pub pbi_rgid: u32,
    pub pbi_svuid: u32,
    pub pbi_svgid: u32,
    pub rfu_1: u32,
    pub pbi_comm: [u8; MAXCOMLEN],
    pub pbi_name: [u8; 2 * MAXCOMLEN],
    pub pbi_nfiles: u32,
    pub pbi_pgid: u32,
    pub pbi_pjobc: u32,
    /// The controlling terminal's device, NODEV when none.
    pub e_tdev: u32,
    /// The controlling terminal's foreground process group.
    pub e_tpgid: u32,
    pub pbi_nice: i32,
    pub pbi_start_tvsec: u64,
    pub pbi_start_tvusec: u64,
}

impl ProcBsdInfo {
    /// The registered name (up to 32 bytes) if any, else the 16-byte comm.
    pub fn name(&self) -> String {
        let cut = |raw: &[u8]| {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let name = cut(&self.pbi_name);
        if name.is_empty() {
            cut(&self.pbi_comm)
        } else {
            name
        }
    }
}

/// `struct proc_archinfo` (proc_info_private.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcArchInfo {
    pub p_cputype: i32,
    pub p_cpusubtype: i32,
}

// ---- bsd/sys/event.h, event_private.h, proc_info_private.h --------------------------------------

pub const EVFILT_READ: i16 = -1;
pub const EVFILT_WRITE: i16 = -2;
pub const EVFILT_VNODE: i16 = -4;
pub const EVFILT_EXCEPT: i16 = -15;

/// `struct kevent_qos_s`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KeventQos {
    pub ident: u64,
    pub filter: i16,
    pub flags: u16,
    pub qos: i32,
    pub udata: u64,
    pub fflags: u32,
    pub xflags: u32,
    pub data: i64,
    pub ext: [u64; 4],
}

/// `struct kevent_extinfo`: one knote of a kqueue, as PROC_PIDFDKQUEUE_EXTINFO reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KeventExtinfo {
    pub kqext_kev: KeventQos,
    pub kqext_sdata: u64,
    pub kqext_status: i32,
    pub kqext_sfflags: i32,
    pub kqext_reserved: [u64; 2],
}

// ---- bsd/sys/poll.h, bsd/sys/_types/_fd_def.h, bsd/sys/syslimits.h -------------------------

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

/// Bits per word of an `fd_set` (`__DARWIN_NFDBITS`: its words are `__int32_t`; fd n is bit n % 32
/// of word n / 32).
pub const NFDBITS: usize = 32;
/// poll() refuses more entries than this with EINVAL (bsd/kern/sys_generic.c `poll_nocancel`).
pub const OPEN_MAX: usize = 10240;

// ---- bsd/kern/syscalls.master, osfmk/mach/i386/syscall_sw.h, libsyscall/custom/SYS.h -------

pub const SYS_SELECT: u32 = 93;
pub const SYS_POLL: u32 = 230;
pub const SYS_PSELECT: u32 = 394;
pub const SYS_PSELECT_NOCANCEL: u32 = 395;
pub const SYS_SELECT_NOCANCEL: u32 = 407;
pub const SYS_POLL_NOCANCEL: u32 = 417;
/// Number 0: the indirect `syscall(number, args…)`.
pub const SYS_SYSCALL: u32 = 0;
/// x86_64: rax holds `SYSCALL_CLASS_UNIX << SYSCALL_CLASS_SHIFT | number` for a BSD call.
pub const SYSCALL_CLASS_SHIFT: u32 = 24;
pub const SYSCALL_CLASS_UNIX: u64 = 2;
/// `~SYSCALL_CLASS_MASK` as the kernel applies it to rax (an int mask: the low 24 bits).
pub const SYSCALL_NUMBER_MASK: u64 = 0x00ff_ffff;
/// arm64: the BSD call number is in x16 (`ARM64_SYSCALL_CODE_REG_NUM`, osfmk/arm64/proc_reg.h).
pub const ARM64_SYSCALL_CODE_REG: usize = 16;
/// arm64: `svc #0x80` (SWI_SYSCALL, osfmk/mach/arm/vm_param.h), the trap of libsystem's stubs.
pub const ARM64_SVC_SYSCALL: u32 = 0xd400_1001;
/// x86_64: the `syscall` instruction.
pub const X86_SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

// ---- bsd/sys/codesign.h, osfmk/kern/cs_blobs.h ------------------------------------------------

pub const CS_OPS_STATUS: u32 = 0;
pub const CS_OPS_ENTITLEMENTS_BLOB: u32 = 7;
pub const CS_GET_TASK_ALLOW: u32 = 0x0000_0004;
pub const CS_RUNTIME: u32 = 0x0001_0000;
pub const CS_PLATFORM_BINARY: u32 = 0x0400_0000;

// ---- osfmk/mach/machine.h ----------------------------------------------------------------------

pub const CPU_ARCH_ABI64: i32 = 0x0100_0000;
pub const CPU_TYPE_X86_64: i32 = 7 | CPU_ARCH_ABI64;
pub const CPU_TYPE_ARM64: i32 = 12 | CPU_ARCH_ABI64;
/// The feature bits of a cpu subtype (e.g. CPU_SUBTYPE_PTRAUTH_ABI).
pub const CPU_SUBTYPE_MASK: u32 = 0xff00_0000;
pub const CPU_SUBTYPE_ARM64E: i32 = 2;

// ---- osfmk/mach: thread states ----------------------------------------------------------------

/// osfmk/mach/arm/thread_status.h
pub const ARM_THREAD_STATE64: i32 = 6;
/// osfmk/mach/i386/thread_status.h
pub const X86_THREAD_STATE64: i32 = 4;

/// `_STRUCT_ARM_THREAD_STATE64` (the non-opaque kernel view: x0-x28, fp, lr, sp, pc, cpsr, flags).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArmThreadState64 {
    pub x: [u64; 29],
    pub fp: u64,
    pub lr: u64,
    pub sp: u64,
    pub pc: u64,
    pub cpsr: u32,
    /// Pointer-authentication flags: the kernel sets them for plain arm64 targets itself.
    pub flags: u32,
}

/// `ARM_THREAD_STATE64_COUNT`: the size in 32-bit words.
pub const ARM_THREAD_STATE64_COUNT: u32 = (std::mem::size_of::<ArmThreadState64>() / 4) as u32;

/// `_STRUCT_X86_THREAD_STATE64`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct X86ThreadState64 {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub fs: u64,
    pub gs: u64,
}

/// `x86_THREAD_STATE64_COUNT`.
pub const X86_THREAD_STATE64_COUNT: u32 = (std::mem::size_of::<X86ThreadState64>() / 4) as u32;

// ---- osfmk/mach/task_info.h (inside `#pragma pack(push, 4)`) ---------------------------------

pub const TASK_DYLD_INFO: u32 = 17;

/// `struct task_dyld_info`.
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskDyldInfo {
    pub all_image_info_addr: u64,
    pub all_image_info_size: u64,
    pub all_image_info_format: i32,
}

pub const TASK_DYLD_INFO_COUNT: u32 = (std::mem::size_of::<TaskDyldInfo>() / 4) as u32;
/// `all_image_info_format` of a 64-bit process.
pub const TASK_DYLD_ALL_IMAGE_INFO_64: i32 = 1;

pub const MACH_TASK_BASIC_INFO: u32 = 20;

/// `struct mach_task_basic_info`: its `suspend_count` is the task-wide suspension (task_suspend,
/// pid_suspend, a debugger's stop), which holds a thread we create too (osfmk/kern/thread.c
/// `thread_create_with_options_internal`: a new thread gets a second hold when
/// `task->suspend_count > 0`, so our thread would never run).
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct MachTaskBasicInfo {
    pub virtual_size: u64,
    pub resident_size: u64,
    pub resident_size_max: u64,
    pub user_time: [i32; 2],
    pub system_time: [i32; 2],
    pub policy: i32,
    pub suspend_count: i32,
}

pub const MACH_TASK_BASIC_INFO_COUNT: u32 = (std::mem::size_of::<MachTaskBasicInfo>() / 4) as u32;

/// The head of the 64-bit `struct dyld_all_image_infos` (osfmk/kdp/kdp_dyld.h
/// `user64_dyld_all_image_infos`), up to the shared cache's base address: the fields that tell
/// whether a libsystem address of ours is valid in another process.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DyldAllImageInfosHead {
    pub version: u32,
    pub info_array_count: u32,
    pub info_array: u64,
    pub notification: u64,
    pub process_detached_from_shared_region: u8,
    pub lib_system_initialized: u8,
    pub dyld_image_load_address: u64,
    pub jit_info: u64,
    pub dyld_version: u64,
    pub error_message: u64,
    pub termination_flags: u64,
    pub core_symbolication_shm_page: u64,
    pub system_order_flag: u64,
    pub uuid_array_count: u64,
    pub uuid_array: u64,
    pub dyld_all_image_infos_address: u64,
    pub initial_image_count: u64,
    pub error_kind: u64,
    pub error_client_of_dylib_path: u64,
    pub error_target_dylib_path: u64,
    pub error_symbol: u64,
    /// version >= 12.
    pub shared_cache_slide: u64,
    /// version >= 13.
    pub shared_cache_uuid: [u8; 16],
    /// version >= 15.
    pub shared_cache_base_address: u64,
}

/// The first version whose head has every field above.
pub const DYLD_ALL_IMAGE_INFOS_MIN_VERSION: u32 = 15;

// ---- osfmk/mach/exception_types.h, mach_exc.defs ----------------------------------------------

pub const EXC_BAD_ACCESS: i32 = 1;
pub const EXC_MASK_BAD_ACCESS: u32 = 1 << 1;
pub const EXC_MASK_BAD_INSTRUCTION: u32 = 1 << 2;
pub const EXC_MASK_ARITHMETIC: u32 = 1 << 3;
pub const EXC_MASK_EMULATION: u32 = 1 << 4;
pub const EXC_MASK_SOFTWARE: u32 = 1 << 5;
pub const EXC_MASK_BREAKPOINT: u32 = 1 << 6;
pub const EXC_MASK_GUARD: u32 = 1 << 12;
/// Every exception a thread of ours in the target could raise on its own.
pub const EXC_MASK_OURS: u32 = EXC_MASK_BAD_ACCESS
    | EXC_MASK_BAD_INSTRUCTION
    | EXC_MASK_ARITHMETIC
    | EXC_MASK_EMULATION
    | EXC_MASK_SOFTWARE
    | EXC_MASK_BREAKPOINT
    | EXC_MASK_GUARD;
/// Behavior: the message carries the state, and no task or thread port. It is also the behavior
/// xnu allows on any target ("identity protected", osfmk/kern/ipc_tt.c).
pub const EXCEPTION_STATE: u32 = 2;
/// 64-bit exception codes (the `mach_exc` subsystem instead of `exc`).
pub const MACH_EXCEPTION_CODES: u32 = 0x8000_0000;
/// `subsystem mach_exc 2405`: raise = 2405, raise_state = 2406, raise_state_identity = 2407.
pub const MACH_EXCEPTION_RAISE_STATE_MSGH_ID: i32 = 2406;

/// `mach_msg_header_t` (osfmk/mach/message.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MachMsgHeader {
    pub msgh_bits: u32,
    pub msgh_size: u32,
    pub msgh_remote_port: u32,
    pub msgh_local_port: u32,
    pub msgh_voucher_port: u32,
    pub msgh_id: i32,
}

/// The fixed head of the `mach_exception_raise_state` request (MIG packs its messages to 4):
/// header, NDR record, exception, codeCnt, code[2]; `flavor`, `old_stateCnt` and the state follow
/// at offsets that depend on codeCnt, so they are not declared here (we read the state with
/// thread_get_state instead).
#[repr(C, packed(4))]
#[derive(Debug, Clone, Copy, Default)]
pub struct ExcRaiseStateHead {
    pub head: MachMsgHeader,
    pub ndr: [u8; 8],
    pub exception: i32,
    pub code_cnt: u32,
    pub code: [i64; 2],
}

/// Room for any exception message: the head, a state of up to THREAD_STATE_MAX (1296 words on
/// arm) and the trailer.
pub const EXC_MSG_BUFFER: usize = 8192;

/// What an exception message says, read from the raw bytes (no alignment assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionNotice {
    pub msgh_id: i32,
    pub exception: i32,
    pub code: [i64; 2],
}

/// MIG replies carry the request's id + 100.
pub const MIG_REPLY_ID_OFFSET: i32 = 100;
/// `NDR_record` (osfmk/mach/ndr.h): little-endian integers, ASCII, IEEE floats.
pub const NDR_RECORD: [u8; 8] = [0, 0, 0, 0, 1, 0, 0, 0];
/// `__Reply__mach_exception_raise_state_t` (pack 4) up to its state: Head 0, NDR 24, RetCode 32,
/// flavor 36, new_stateCnt 40, new_state 44; sent with only `new_stateCnt` words of state.
pub const EXC_REPLY_STATE_OFFSET: usize = 44;

/// The reply to an EXCEPTION_STATE request that resumes the faulting thread with `state`
/// (`flavor`, `state.len()` words): the kernel applies it with `thread_setstatus` and the thread
/// returns to user space there. Sent on the request's reply right (its remote port, with the
/// disposition it came with), as MIG's server code does. None for a message too short to be a
/// request.
pub fn exception_reply(request: &[u8], flavor: i32, state: &[u32]) -> Option<Vec<u8>> {
    if request.len() < std::mem::size_of::<MachMsgHeader>() {
        return None;
    }
    // SAFETY: the length is checked; read_unaligned copes with any alignment.
    let head: MachMsgHeader = unsafe { std::ptr::read_unaligned(request.as_ptr().cast()) };
    let size = EXC_REPLY_STATE_OFFSET + 4 * state.len();
    let mut out = Vec::with_capacity(size);
    let remote_bits = head.msgh_bits & 0x1f; // MACH_MSGH_BITS_REMOTE
    out.extend_from_slice(&remote_bits.to_ne_bytes()); // local disposition 0
    out.extend_from_slice(&(size as u32).to_ne_bytes());
    out.extend_from_slice(&head.msgh_remote_port.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // no local port: no reply to the reply
    out.extend_from_slice(&0u32.to_ne_bytes()); // no voucher
    out.extend_from_slice(&(head.msgh_id + MIG_REPLY_ID_OFFSET).to_ne_bytes());
    out.extend_from_slice(&NDR_RECORD);
    out.extend_from_slice(&0i32.to_ne_bytes()); // RetCode: KERN_SUCCESS
    out.extend_from_slice(&flavor.to_ne_bytes());
    out.extend_from_slice(&(state.len() as u32).to_ne_bytes());
    for w in state {
        out.extend_from_slice(&w.to_ne_bytes());
    }
    Some(out)
}

// ---- osfmk/mach/thread_info.h ------------------------------------------------------------------

pub const THREAD_BASIC_INFO: u32 = 3;
pub const THREAD_IDENTIFIER_INFO: u32 = 4;

/// `struct thread_basic_info`: user_time and system_time are `time_value_t` (two int32 each).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadBasicInfo {
    pub user_time: [i32; 2],
    pub system_time: [i32; 2],
    pub cpu_usage: i32,
    pub policy: i32,
    pub run_state: i32,
    pub flags: i32,
    /// The thread's user suspend count (`user_stop_count`): what thread_suspend raises.
    pub suspend_count: i32,
    pub sleep_time: i32,
}
pub const THREAD_BASIC_INFO_COUNT: u32 = 10;

/// `struct thread_identifier_info`: `thread_id` is unique system-wide for the boot, unlike a
/// port name, so another process can name the same thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadIdentifierInfo {
    pub thread_id: u64,
    pub thread_handle: u64,
    pub dispatch_qaddr: u64,
}
pub const THREAD_IDENTIFIER_INFO_COUNT: u32 = 6;

pub fn parse_exception(msg: &[u8]) -> Option<ExceptionNotice> {
    if msg.len() < std::mem::size_of::<ExcRaiseStateHead>() {
        return None;
    }
    // SAFETY: the length is checked; read_unaligned copes with any alignment of `msg`.
    let head: ExcRaiseStateHead = unsafe { std::ptr::read_unaligned(msg.as_ptr().cast()) };
    let code_cnt = { head.code_cnt }.min(2) as usize;
    let code = { head.code };
    let mut codes = [0i64; 2];
    codes[..code_cnt].copy_from_slice(&code[..code_cnt]);
    Some(ExceptionNotice {
        msgh_id: { head.head }.msgh_id,
        exception: head.exception,
        code: codes,
    })
}

/// `kern_return_t` values the messages name (osfmk/mach/kern_return.h).
pub const KERN_SUCCESS: i32 = 0;
pub const KERN_INVALID_ADDRESS: i32 = 1;
pub const KERN_PROTECTION_FAILURE: i32 = 2;
pub const KERN_INVALID_ARGUMENT: i32 = 4;
pub const KERN_FAILURE: i32 = 5;
pub const KERN_NO_ACCESS: i32 = 8;
pub const KERN_ABORTED: i32 = 14;
pub const KERN_INVALID_NAME: i32 = 15;
pub const KERN_INVALID_TASK: i32 = 16;
pub const KERN_TERMINATED: i32 = 37;
pub const KERN_OPERATION_TIMED_OUT: i32 = 49;

/// A kern_return_t as `NAME (n)`.
pub fn kern_name(kr: i32) -> String {
    let name = match kr {
        KERN_SUCCESS => "KERN_SUCCESS",
        KERN_INVALID_ADDRESS => "KERN_INVALID_ADDRESS",
        KERN_PROTECTION_FAILURE => "KERN_PROTECTION_FAILURE",
        3 => "KERN_NO_SPACE",
        KERN_INVALID_ARGUMENT => "KERN_INVALID_ARGUMENT",
        KERN_FAILURE => "KERN_FAILURE",
        6 => "KERN_RESOURCE_SHORTAGE",
        KERN_NO_ACCESS => "KERN_NO_ACCESS",
        KERN_ABORTED => "KERN_ABORTED",
        KERN_INVALID_NAME => "KERN_INVALID_NAME",
        KERN_INVALID_TASK => "KERN_INVALID_TASK",
        KERN_TERMINATED => "KERN_TERMINATED",
        KERN_OPERATION_TIMED_OUT => "KERN_OPERATION_TIMED_OUT",
        _ => return format!("kern_return_t {kr}"),
    };
    format!("{name} ({kr})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn proc_info_layouts() {
        // proc_fdinfo: int32_t proc_fd; uint32_t proc_fdtype.
        assert_eq!(size_of::<ProcFdInfo>(), 8);
        assert_eq!(offset_of!(ProcFdInfo, proc_fdtype), 4);
        // proc_fileinfo: u32, u32, off_t (8-aligned at 8), i32 at 16, u32 at 20 → 24.
        assert_eq!(size_of::<ProcFileInfo>(), 24);
        assert_eq!(offset_of!(ProcFileInfo, fi_status), 4);
        assert_eq!(offset_of!(ProcFileInfo, fi_offset), 8);
        assert_eq!(offset_of!(ProcFileInfo, fi_type), 16);
        assert_eq!(offset_of!(ProcFileInfo, fi_guardflags), 20);
    }

    #[test]
    fn vinfo_stat_layout() {
        // vinfo_stat: 136 bytes, every field at its natural offset.
        assert_eq!(size_of::<VinfoStat>(), 136);
        assert_eq!(align_of::<VinfoStat>(), 4);
        assert_eq!(offset_of!(VinfoStat, vst_mode), 4);
        assert_eq!(offset_of!(VinfoStat, vst_nlink), 6);
        assert_eq!(offset_of!(VinfoStat, vst_ino), 8);
        assert_eq!(offset_of!(VinfoStat, vst_uid), 16);
        assert_eq!(offset_of!(VinfoStat, vst_gid), 20);
        assert_eq!(offset_of!(VinfoStat, vst_atime), 24);
        assert_eq!(offset_of!(VinfoStat, vst_mtime), 40);
        assert_eq!(offset_of!(VinfoStat, vst_ctime), 56);
        assert_eq!(offset_of!(VinfoStat, vst_birthtime), 72);
        assert_eq!(offset_of!(VinfoStat, vst_size), 88);
        assert_eq!(offset_of!(VinfoStat, vst_blocks), 96);
        assert_eq!(offset_of!(VinfoStat, vst_blksize), 104);
        assert_eq!(offset_of!(VinfoStat, vst_flags), 108);
        assert_eq!(offset_of!(VinfoStat, vst_gen), 112);
        assert_eq!(offset_of!(VinfoStat, vst_rdev), 116);
        assert_eq!(offset_of!(VinfoStat, vst_qspare), 120);
    }

    #[test]
    fn vnode_layouts() {
        // vnode_info: vinfo_stat (136), int vi_type, int vi_pad, fsid_t (2 x int32) → 152.
        assert_eq!(size_of::<VnodeInfo>(), 152);
        assert_eq!(offset_of!(VnodeInfo, vi_type), 136);
        assert_eq!(offset_of!(VnodeInfo, vi_pad), 140);
        assert_eq!(offset_of!(VnodeInfo, vi_fsid), 144);
        // vnode_info_path: vnode_info + char[MAXPATHLEN = 1024] → 1176.
        assert_eq!(size_of::<VnodeInfoPath>(), 1176);
        assert_eq!(offset_of!(VnodeInfoPath, vip_path), 152);
        // vnode_fdinfowithpath = PROC_PIDFDVNODEPATHINFO_SIZE: proc_fileinfo (24) + 1176 = 1200.
        assert_eq!(size_of::<VnodeFdInfoWithPath>(), 1200);
        assert_eq!(offset_of!(VnodeFdInfoWithPath, pvip), 24);
        // where the fields we read sit in the buffer the kernel fills
        assert_eq!(
            offset_of!(VnodeFdInfoWithPath, pvip)
                + offset_of!(VnodeInfoPath, vip_vi)
                + offset_of!(VnodeInfo, vi_stat)
                + offset_of!(VinfoStat, vst_rdev),
            140
        );
        assert_eq!(
            offset_of!(VnodeFdInfoWithPath, pvip) + offset_of!(VnodeInfoPath, vip_path),
            176
        );
    }

    #[test]
    fn region_layouts() {
        // proc_regioninfo: 4 x u32 (16), pri_offset 16, 14 x u32 from 24 (56), then
        // pri_address 80 and pri_size 88 → 96.
        assert_eq!(size_of::<ProcRegionInfo>(), 96);
        assert_eq!(align_of::<ProcRegionInfo>(), 8);
        assert_eq!(offset_of!(ProcRegionInfo, pri_offset), 16);
        assert_eq!(offset_of!(ProcRegionInfo, pri_behavior), 24);
        assert_eq!(offset_of!(ProcRegionInfo, pri_user_tag), 32);
        assert_eq!(offset_of!(ProcRegionInfo, pri_share_mode), 60);
        assert_eq!(offset_of!(ProcRegionInfo, pri_depth), 76);
        assert_eq!(offset_of!(ProcRegionInfo, pri_address), 80);
        assert_eq!(offset_of!(ProcRegionInfo, pri_size), 88);
        // proc_regionwithpathinfo = PROC_PIDREGIONPATHINFO_SIZE: 96 + vnode_info_path (1176)
        // → 1272, a multiple of 8 as C's 8-aligned vinfo_stat makes it.
        assert_eq!(size_of::<ProcRegionWithPathInfo>(), 1272);
        assert_eq!(offset_of!(ProcRegionWithPathInfo, prp_vip), 96);
        assert_eq!(
            offset_of!(ProcRegionWithPathInfo, prp_vip) + offset_of!(VnodeInfoPath, vip_path),
            248
        );
    }

    #[test]
    fn bsdinfo_and_archinfo_layouts() {
        // proc_bsdinfo = PROC_PIDTBSDINFO_SIZE: 12 x u32 (48), comm[16], name[32], 6 x 32-bit
        // (24), two u64 start times → 136.
        assert_eq!(size_of::<ProcBsdInfo>(), 136);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_comm), 48);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_name), 64);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_nfiles), 96);
        assert_eq!(offset_of!(ProcBsdInfo, e_tdev), 108);
        assert_eq!(offset_of!(ProcBsdInfo, e_tpgid), 112);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_start_tvsec), 120);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_start_tvusec), 128);
        // proc_archinfo: cpu_type_t, cpu_subtype_t.
        assert_eq!(size_of::<ProcArchInfo>(), 8);
    }

    #[test]
    fn kqueue_layouts() {
        // kevent_qos_s: ident 0, filter 8, flags 10, qos 12, udata 16, fflags 24, xflags 28,
        // data 32, ext[4] 40 → 72.
        assert_eq!(size_of::<KeventQos>(), 72);
        assert_eq!(offset_of!(KeventQos, filter), 8);
        assert_eq!(offset_of!(KeventQos, flags), 10);
        assert_eq!(offset_of!(KeventQos, qos), 12);
        assert_eq!(offset_of!(KeventQos, udata), 16);
        assert_eq!(offset_of!(KeventQos, fflags), 24);
        assert_eq!(offset_of!(KeventQos, data), 32);
        assert_eq!(offset_of!(KeventQos, ext), 40);
        // kevent_extinfo = PROC_PIDFDKQUEUE_EXTINFO_SIZE: kev 72, sdata 72, status 80,
        // sfflags 84, reserved[2] 88 → 104.
        assert_eq!(size_of::<KeventExtinfo>(), 104);
        assert_eq!(offset_of!(KeventExtinfo, kqext_sdata), 72);
        assert_eq!(offset_of!(KeventExtinfo, kqext_status), 80);
        assert_eq!(offset_of!(KeventExtinfo, kqext_sfflags), 84);
        assert_eq!(offset_of!(KeventExtinfo, kqext_reserved), 88);
    }

    #[test]
    fn pollfd_layout() {
        // pollfd: int fd 0, short events 4, short revents 6 → 8.
        assert_eq!(size_of::<PollFd>(), 8);
        assert_eq!(offset_of!(PollFd, events), 4);
        assert_eq!(offset_of!(PollFd, revents), 6);
        // kqueue_id_t is a uint64_t (event_private.h)
        assert_eq!(SYSCALL_CLASS_UNIX << SYSCALL_CLASS_SHIFT, 0x200_0000);
        assert_eq!(SYSCALL_NUMBER_MASK & 0x200_005d, 93);
        // svc #imm16 = 0xd4000001 | imm16 << 5
        assert_eq!(ARM64_SVC_SYSCALL, 0xd400_0001 | (0x80 << 5));
    }

    #[test]
    fn thread_state_layouts() {
        // arm: x[29] (232), fp 232, lr 240, sp 248, pc 256, cpsr 264, flags 268 → 272 = 68 words.
        assert_eq!(size_of::<ArmThreadState64>(), 272);
        assert_eq!(ARM_THREAD_STATE64_COUNT, 68);
        assert_eq!(offset_of!(ArmThreadState64, fp), 232);
        assert_eq!(offset_of!(ArmThreadState64, lr), 240);
        assert_eq!(offset_of!(ArmThreadState64, sp), 248);
        assert_eq!(offset_of!(ArmThreadState64, pc), 256);
        assert_eq!(offset_of!(ArmThreadState64, cpsr), 264);
        assert_eq!(offset_of!(ArmThreadState64, flags), 268);
        // x86_64: 21 u64 registers, rip 16th (128) → 168 = 42 words.
        assert_eq!(size_of::<X86ThreadState64>(), 168);
        assert_eq!(X86_THREAD_STATE64_COUNT, 42);
        assert_eq!(offset_of!(X86ThreadState64, rdi), 32);
        assert_eq!(offset_of!(X86ThreadState64, rsi), 40);
        assert_eq!(offset_of!(X86ThreadState64, rsp), 56);
        assert_eq!(offset_of!(X86ThreadState64, rip), 128);
        assert_eq!(offset_of!(X86ThreadState64, rflags), 136);
        assert_eq!(offset_of!(X86ThreadState64, gs), 160);
    }

    #[test]
    fn task_basic_info_layout() {
        // three mach_vm_size_t, two time_value_t (2 x integer_t), policy_t, integer_t under
        // pack(4): 48 bytes, MACH_TASK_BASIC_INFO_COUNT 12, suspend_count last
        assert_eq!(size_of::<MachTaskBasicInfo>(), 48);
        assert_eq!(MACH_TASK_BASIC_INFO_COUNT, 12);
        assert_eq!(offset_of!(MachTaskBasicInfo, user_time), 24);
        assert_eq!(offset_of!(MachTaskBasicInfo, suspend_count), 44);
    }

    #[test]
    fn dyld_layouts() {
        // task_dyld_info under pack(4): u64, u64, integer_t → 20 bytes = TASK_DYLD_INFO_COUNT 5.
        assert_eq!(size_of::<TaskDyldInfo>(), 20);
        assert_eq!(TASK_DYLD_INFO_COUNT, 5);
        assert_eq!(offset_of!(TaskDyldInfo, all_image_info_format), 16);
        // user64_dyld_all_image_infos: the two dyld_bool (uint8_t) at 24/25, then 8-aligned
        // addresses from 32; sharedCacheSlide is the 20th u64-sized field.
        assert_eq!(offset_of!(DyldAllImageInfosHead, info_array), 8);
        assert_eq!(
            offset_of!(DyldAllImageInfosHead, process_detached_from_shared_region),
            24
        );
        assert_eq!(
            offset_of!(DyldAllImageInfosHead, lib_system_initialized),
            25
        );
        assert_eq!(
            offset_of!(DyldAllImageInfosHead, dyld_image_load_address),
            32
        );
        assert_eq!(offset_of!(DyldAllImageInfosHead, uuid_array_count), 88);
        assert_eq!(
            offset_of!(DyldAllImageInfosHead, dyld_all_image_infos_address),
            104
        );
        assert_eq!(offset_of!(DyldAllImageInfosHead, error_symbol), 144);
        assert_eq!(offset_of!(DyldAllImageInfosHead, shared_cache_slide), 152);
        assert_eq!(offset_of!(DyldAllImageInfosHead, shared_cache_uuid), 160);
        assert_eq!(
            offset_of!(DyldAllImageInfosHead, shared_cache_base_address),
            176
        );
        assert_eq!(size_of::<DyldAllImageInfosHead>(), 184);
    }

    #[test]
    fn exception_message_layouts() {
        // mach_msg_header_t: six 32-bit fields.
        assert_eq!(size_of::<MachMsgHeader>(), 24);
        assert_eq!(offset_of!(MachMsgHeader, msgh_id), 20);
        // __Request__mach_exception_raise_state_t (pack 4): Head 0, NDR 24, exception 32,
        // codeCnt 36, code[2] 40; flavor follows at 56 when codeCnt is 2.
        assert_eq!(offset_of!(ExcRaiseStateHead, ndr), 24);
        assert_eq!(offset_of!(ExcRaiseStateHead, exception), 32);
        assert_eq!(offset_of!(ExcRaiseStateHead, code_cnt), 36);
        assert_eq!(offset_of!(ExcRaiseStateHead, code), 40);
        assert_eq!(size_of::<ExcRaiseStateHead>(), 56);
    }

    #[test]
    fn thread_info_layouts() {
        assert_eq!(
            size_of::<ThreadBasicInfo>(),
            4 * THREAD_BASIC_INFO_COUNT as usize
        );
        assert_eq!(offset_of!(ThreadBasicInfo, run_state), 24);
        assert_eq!(offset_of!(ThreadBasicInfo, suspend_count), 32);
        assert_eq!(
            size_of::<ThreadIdentifierInfo>(),
            4 * THREAD_IDENTIFIER_INFO_COUNT as usize
        );
    }

    #[test]
    fn the_exception_reply_resumes_with_the_given_state() {
        let mut req = vec![0u8; 120];
        // MACH_MSGH_BITS(remote = MACH_MSG_TYPE_PORT_SEND_ONCE 18, local = MOVE_SEND 17) | COMPLEX? no
        req[0..4].copy_from_slice(&(18u32 | (17 << 8)).to_ne_bytes());
        req[8..12].copy_from_slice(&0x1303u32.to_ne_bytes()); // the reply right
        req[12..16].copy_from_slice(&0x2207u32.to_ne_bytes()); // our exception port
        req[20..24].copy_from_slice(&2406i32.to_ne_bytes());
        let state: Vec<u32> = (0..68).collect();
        let reply = exception_reply(&req, ARM_THREAD_STATE64, &state).unwrap();
        assert_eq!(reply.len(), 44 + 68 * 4);
        let word = |at: usize| u32::from_ne_bytes(reply[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), 18, "remote disposition kept, no local");
        assert_eq!(word(4) as usize, reply.len());
        assert_eq!(word(8), 0x1303);
        assert_eq!(word(12), 0);
        assert_eq!(word(16), 0);
        assert_eq!(word(20) as i32, 2506);
        assert_eq!(&reply[24..32], &NDR_RECORD);
        assert_eq!(word(32), 0);
        assert_eq!(word(36) as i32, ARM_THREAD_STATE64);
        assert_eq!(word(40), 68);
        assert_eq!(word(44), 0);
        assert_eq!(word(44 + 67 * 4), 67);
        assert_eq!(exception_reply(&req[..20], 6, &state), None);
    }

    #[test]
    fn an_exception_message_is_parsed_from_raw_bytes() {
        let mut msg = vec![0u8; 200];
        msg[20..24].copy_from_slice(&2406i32.to_ne_bytes());
        msg[32..36].copy_from_slice(&EXC_BAD_ACCESS.to_ne_bytes());
        msg[36..40].copy_from_slice(&2u32.to_ne_bytes());
        msg[40..48].copy_from_slice(&1i64.to_ne_bytes());
        msg[48..56].copy_from_slice(&0x5eed_0000i64.to_ne_bytes());
        // at an odd offset too: nothing assumes alignment
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&msg);
        for bytes in [&msg[..], &shifted[1..]] {
            let n = parse_exception(bytes).unwrap();
            assert_eq!(n.msgh_id, MACH_EXCEPTION_RAISE_STATE_MSGH_ID);
            assert_eq!(n.exception, EXC_BAD_ACCESS);
            assert_eq!(n.code, [1, 0x5eed_0000]);
        }
        // a short code array leaves the rest zero; a truncated message is refused
        msg[36..40].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(parse_exception(&msg).unwrap().code, [1, 0]);
        assert_eq!(parse_exception(&msg[..40]), None);
    }

    #[test]
    fn names_are_cut_at_their_nul() {
        let mut info = ProcBsdInfo::default();
        info.pbi_comm[..4].copy_from_slice(b"node");
        assert_eq!(info.name(), "node");
        info.pbi_name[..6].copy_from_slice(b"Claude");
        assert_eq!(info.name(), "Claude");
        let mut v = VnodeFdInfoWithPath::default();
        v.pvip.vip_path[..9].copy_from_slice(b"/dev/ptmx");
        assert_eq!(v.path(), "/dev/ptmx");
        let mut r = ProcRegionWithPathInfo::default();
        assert_eq!(r.prp_vip.path_bytes(), b"");
        r.prp_vip.vip_path[..11].copy_from_slice(b"/a/pty.node");
        assert_eq!(r.prp_vip.path(), "/a/pty.node");
        r.prp_vip.vip_path.fill(b'a'); // no NUL: the whole buffer
        assert_eq!(r.prp_vip.path_bytes().len(), MAXPATHLEN);
    }
}
