//! The container process's setup as a list of system calls, built in the
//! parent and executed by the child between `clone3` and `execve`.
//!
//! The child of a multi-threaded process may only make async-signal-safe
//! calls: another thread may have held the allocator's lock at the moment of
//! the clone. So every string, pointer array and BPF program is prepared
//! here, and the child runs [`Plan::run_child`], which neither allocates nor
//! panics and calls the kernel directly (not glibc's set*id wrappers, which
//! would try to signal the parent's other threads).

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

use crate::error::{ContainerError, Result};

/// One step of the child's setup.
#[derive(Debug)]
pub(crate) enum Op {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mkdir`, EEXIST is fine.
    Mkdir(CString),
    /// Create an empty file to bind-mount onto, if missing.
    Touch(CString),
    /// `symlink`, EEXIST is fine.
    Symlink {
        target: CString,
        link: CString,
    },
    /// Hide a path: `/dev/null` over a file, an empty read-only tmpfs over a directory; ENOENT is fine.
    Mask(CString),
    /// Bind a path onto itself read-only; ENOENT is fine.
    ReadOnly(CString),
    Chdir(CString),
    /// `pivot_root(".", ".")` then detach the old root stacked on top.
    PivotRoot,
    Sethostname(CString),
    UnshareCgroup,
    /// Join the namespaces (`CLONE_NEW*` flags) of the process behind
    /// [`Plan::join_fd`], a pidfd. The pid namespace is joined by the
    /// cloning thread instead (it only applies to children).
    Join {
        flags: libc::c_int,
    },
    LoopbackUp,
    ResetSignals,
    NoNewPrivs,
    Seccomp,
    DropBounding {
        keep: u64,
        last_cap: u32,
    },
    KeepCaps,
    SetIds {
        uid: u32,
        gid: u32,
    },
    Capset {
        keep: u64,
    },
    Ambient {
        keep: u64,
        last_cap: u32,
    },
    Stdio,
    CloseFds,
    Exec,
}

/// Everything the child needs, fully built.
pub(crate) struct Plan {
    pub ops: Vec<Op>,
    pub what: Vec<String>,
    pub exec_paths: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    groups: Vec<libc::gid_t>,
    pub bpf: Vec<libc::sock_filter>,
    pub stdio: [RawFd; 3],
    pub sync_fd: RawFd,
    pub err_fd: RawFd,
    /// A pidfd of a running container's init, for [`Op::Join`]; -1 if none.
    pub join_fd: RawFd,
    /// How long the child waits for the go byte before it gives up.
    pub start_timeout_ms: i64,
}

/// What the child reports (as its "step") for a failure before its plan
/// runs; never an index into `ops`.
pub(crate) const STEP_NOT_STARTED: u32 = u32::MAX;
pub(crate) const STEP_PDEATHSIG: u32 = u32::MAX - 1;
pub(crate) const STEP_CLOSE_FDS: u32 = u32::MAX - 2;
pub(crate) const STEP_WAIT: u32 = u32::MAX - 3;

// The calls that take 32-bit ids. On 32-bit ARM `setgroups`, `setresgid`
// and `setresuid` are the legacy 16-bit-id calls: they would keep only the
// low 16 bits of a uid (100000 becomes 34464) and read the group list as an
// array of u16. Their 32-bit-id versions carry a `32` suffix there.
#[cfg(target_arch = "arm")]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(target_arch = "arm")]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid32;
#[cfg(target_arch = "arm")]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid32;
#[cfg(not(target_arch = "arm"))]
const SYS_SETGROUPS: libc::c_long = libc::SYS_setgroups;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESGID: libc::c_long = libc::SYS_setresgid;
#[cfg(not(target_arch = "arm"))]
const SYS_SETRESUID: libc::c_long = libc::SYS_setresuid;

pub(crate) fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| ContainerError::InvalidSpec(format!("{s:?} contains a NUL byte")))
}

pub(crate) fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| ContainerError::InvalidSpec(format!("{} contains a NUL byte", p.display())))
}

impl Plan {
    pub fn new(args: &[String], env: &[String], groups: &[u32]) -> Result<Self> {
        let argv = args.iter().map(|a| cstr(a)).collect::<Result<Vec<_>>>()?;
        let envp = env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>>>()?;
        let mut plan = Plan {
            ops: Vec::new(),
            what: Vec::new(),
            exec_paths: Vec::new(),
            argv,
            envp,
            argv_ptrs: Vec::new(),
            envp_ptrs: Vec::new(),
            groups: groups.to_vec(),
            bpf: Vec::new(),
            stdio: [-1; 3],
            sync_fd: -1,
            err_fd: -1,
            join_fd: -1,
            start_timeout_ms: 60_000,
        };
        plan.argv_ptrs = plan
            .argv
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        plan.envp_ptrs = plan
            .envp
            .iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        Ok(plan)
    }

    pub fn push(&mut self, op: Op, what: impl Into<String>) {
        self.ops.push(op);
        self.what.push(what.into());
    }

    /// Runs in the child. Never returns: execs or `_exit`s after reporting the failed step.
    ///
    /// # Safety
    /// Must only be called in the freshly cloned child, with the plan's fds valid.
    pub unsafe fn run_child(&self) -> ! {
        let errno = || *libc::__errno_location();
        // Until released, die with the process that created us: its launcher
        // thread cloned us and only ends when the whole process does. The
        // usual check of getppid() after this prctl cannot work here (we are
        // PID 1 of a new pid namespace, getppid() is 0); a creator that died
        // before it is caught by the start pipe's EOF below instead.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
        {
            self.fail(STEP_PDEATHSIG, errno());
        }
        // Nothing of the agent's crosses into the container: not our copy of
        // the start pipe's write end (whose EOF tells us the agent is gone),
        // not its listeners, locks, or other launches' pipes.
        let e = self.close_inherited();
        if e != 0 {
            self.fail(STEP_CLOSE_FDS, e);
        }
        // Wait until the parent has put us into cgroups and set up the network.
        match self.wait_for_start() {
            Ok(true) => {}
            // The creator closed the pipe or died: nobody will start us.
            Ok(false) => libc::_exit(126),
            Err(e) => self.fail(
                if e == libc::ETIMEDOUT {
                    STEP_NOT_STARTED
                } else {
                    STEP_WAIT
                },
                e,
            ),
        }
        // Started: from here the container belongs to its cgroup and the
        // supervisor, not to the lifetime of the agent's process.
        if libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0 {
            self.fail(STEP_PDEATHSIG, errno());
        }
        for (i, op) in self.ops.iter().enumerate() {
            let r = self.step(op);
            if r != 0 {
                self.fail(i as u32, r);
            }
        }
        libc::_exit(127)
    }

    /// Report `(step, errno)` on the error pipe and exit.
    unsafe fn fail(&self, step: u32, errno: i32) -> ! {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(self.err_fd, msg.as_ptr().cast(), 8);
        libc::_exit(if step == STEP_NOT_STARTED { 126 } else { 127 })
    }

    /// Close every fd above stderr except the ones the plan still needs
    /// (start pipe, error pipe, the stdio fds to dup, the pidfd to join).
    /// Returns 0 or an errno.
    unsafe fn close_inherited(&self) -> i32 {
        let mut keep = [
            self.sync_fd,
            self.err_fd,
            self.stdio[0],
            self.stdio[1],
            self.stdio[2],
            self.join_fd,
        ];
        // Insertion sort: no allocation in the child.
        for i in 1..keep.len() {
            let mut j = i;
            while j > 0 && keep[j - 1] > keep[j] {
                keep.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut lo: u32 = 3;
        for k in keep {
            let Ok(k) = u32::try_from(k) else { continue };
            if k < lo {
                continue;
            }
            if k > lo && libc::syscall(libc::SYS_close_range, lo, k - 1, 0u32) < 0 {
                return *libc::__errno_location();
            }
            lo = k + 1;
        }
        if libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0u32) < 0 {
            return *libc::__errno_location();
        }
        0
    }

    /// Wait for the go byte: `Ok(true)` released, `Ok(false)` EOF,
    /// `Err(ETIMEDOUT)` after `start_timeout_ms`, `Err(errno)` otherwise.
    unsafe fn wait_for_start(&self) -> Result<bool, i32> {
        // time_t and c_long are 32 bits on 32-bit ARM: widen before scaling,
        // or the product overflows after 24 days of uptime.
        #[allow(clippy::useless_conversion)]
        let now_ms = || {
            let mut ts: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
            i64::from(ts.tv_sec) * 1000 + i64::from(ts.tv_nsec) / 1_000_000
        };
        let deadline = now_ms().saturating_add(self.start_timeout_ms);
        loop {
            let left = deadline - now_ms();
            if left <= 0 {
                return Err(libc::ETIMEDOUT);
            }
            let mut pfd = libc::pollfd {
                fd: self.sync_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let r = libc::poll(&mut pfd, 1, left.min(i32::MAX as i64) as libc::c_int);
            if r < 0 {
                let e = *libc::__errno_location();
                if e == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            if r == 0 {
                continue; // the deadline check above decides
            }
            let mut b = [0u8; 1];
            match libc::read(self.sync_fd, b.as_mut_ptr().cast(), 1) {
                1 => return Ok(true),
                0 => return Ok(false),
                _ => {
                    let e = *libc::__errno_location();
                    if e != libc::EINTR && e != libc::EAGAIN {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One step; returns 0 or an errno.
    unsafe fn step(&self, op: &Op) -> i32 {
        let errno = || *libc::__errno_location();
        let ok = |r: libc::c_long| if r < 0 { errno() } else { 0 };
        let opt = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        match op {
            Op::Mount {
                src,
                target,
                fstype,
                flags,
                data,
            } => ok(libc::mount(
                opt(src),
                target.as_ptr(),
                opt(fstype),
                *flags,
                opt(data).cast(),
            ) as libc::c_long),
            Op::Mkdir(p) => {
                if libc::mkdir(p.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                    errno()
                } else {
                    0
                }
            }
            Op::Touch(p) => {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                if fd < 0 {
                    // EROFS on a read-only image is fine if the file is already there.
                    let e = errno();
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::stat(p.as_ptr(), &mut st) == 0 {
                        0
                    } else {
                        e
                    }
                } else {
                    libc::close(fd);
                    0
                }
            }
            Op::Symlink { target, link } => {
                if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 && errno() != libc::EEXIST {
                    errno()
                } else {
                    0
                }
            }
            Op::Mask(p) => {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(p.as_ptr(), &mut st) < 0 {
                    return if errno() == libc::ENOENT { 0 } else { errno() };
                }
                let r = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=0".as_ptr().cast(),
                    )
                } else {
                    libc::mount(
                        c"/dev/null".as_ptr(),
                        p.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                ok(r as libc::c_long)
            }
            Op::ReadOnly(p) => {
                if libc::mount(
                    p.as_ptr(),
                    p.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) < 0
                {
                    return if errno() == libc::ENOENT { 0 } else { errno() };
                }
                ok(libc::mount(
                    std::ptr::null(),
                    p.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) as libc::c_long)
            }
            Op::Chdir(p) => ok(libc::chdir(p.as_ptr()) as libc::c_long),
            Op::PivotRoot => {
                let dot = c".".as_ptr();
                let r = libc::syscall(libc::SYS_pivot_root, dot, dot);
                if r < 0 {
                    return errno();
                }
                // The old root is now stacked on top of the new one: make it
                // private so the detach does not propagate, then detach it.
                if libc::mount(
                    std::ptr::null(),
                    dot,
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ) < 0
                {
                    return errno();
                }
                if libc::umount2(dot, libc::MNT_DETACH) < 0 {
                    return errno();
                }
                ok(libc::chdir(c"/".as_ptr()) as libc::c_long)
            }
            Op::Sethostname(h) => {
                ok(libc::sethostname(h.as_ptr(), h.as_bytes().len()) as libc::c_long)
            }
            Op::UnshareCgroup => ok(libc::unshare(libc::CLONE_NEWCGROUP) as libc::c_long),
            Op::Join { flags } => ok(libc::setns(self.join_fd, *flags) as libc::c_long),
            Op::LoopbackUp => {
                let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if s < 0 {
                    return errno();
                }
                let mut ifr: libc::ifreq = std::mem::zeroed();
                ifr.ifr_name[0] = b'l' as libc::c_char;
                ifr.ifr_name[1] = b'o' as libc::c_char;
                if libc::ioctl(s, libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr) < 0 {
                    let e = errno();
                    libc::close(s);
                    return e;
                }
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                let r = libc::ioctl(s, libc::SIOCSIFFLAGS as libc::Ioctl, &ifr);
                let e = errno();
                libc::close(s);
                if r < 0 {
                    e
                } else {
                    0
                }
            }
            Op::ResetSignals => {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                for sig in 1..32 {
                    if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                        libc::signal(sig, libc::SIG_DFL);
                    }
                }
                0
            }
            Op::NoNewPrivs => {
                ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as libc::c_long)
            }
            Op::Seccomp => {
                let prog = libc::sock_fprog {
                    len: self.bpf.len() as u16,
                    filter: self.bpf.as_ptr() as *mut libc::sock_filter,
                };
                ok(libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ))
            }
            Op::DropBounding { keep, last_cap } => {
                for cap in 0..=*last_cap {
                    if keep & (1u64 << cap) == 0
                        && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                    {
                        return errno();
                    }
                }
                0
            }
            Op::KeepCaps => ok(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as libc::c_long),
            Op::SetIds { uid, gid } => {
                let r = libc::syscall(SYS_SETGROUPS, self.groups.len(), self.groups.as_ptr());
                if r < 0 {
                    return errno();
                }
                if libc::syscall(SYS_SETRESGID, *gid, *gid, *gid) < 0 {
                    return errno();
                }
                ok(libc::syscall(SYS_SETRESUID, *uid, *uid, *uid))
            }
            Op::Capset { keep } => {
                #[repr(C)]
                struct Header {
                    version: u32,
                    pid: i32,
                }
                #[repr(C)]
                #[derive(Clone, Copy)]
                struct Data {
                    effective: u32,
                    permitted: u32,
                    inheritable: u32,
                }
                let hdr = Header {
                    version: 0x2008_0522,
                    pid: 0,
                };
                let lo = *keep as u32;
                let hi = (*keep >> 32) as u32;
                let data = [
                    Data {
                        effective: lo,
                        permitted: lo,
                        inheritable: lo,
                    },
                    Data {
                        effective: hi,
                        permitted: hi,
                        inheritable: hi,
                    },
                ];
                ok(libc::syscall(
                    libc::SYS_capset,
                    &hdr as *const Header,
                    data.as_ptr(),
                ))
            }
            Op::Ambient { keep, last_cap } => {
                for cap in 0..=*last_cap {
                    if keep & (1u64 << cap) != 0
                        && libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ) < 0
                    {
                        return errno();
                    }
                }
                0
            }
            Op::Stdio => {
                for (target, fd) in self.stdio.iter().enumerate() {
                    if libc::dup2(*fd, target as libc::c_int) < 0 {
                        return errno();
                    }
                }
                0
            }
            Op::CloseFds => {
                // Everything above stderr is closed by the exec (the error pipe must live until then).
                ok(libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ))
            }
            Op::Exec => {
                let mut last = libc::ENOENT;
                for p in &self.exec_paths {
                    libc::execve(p.as_ptr(), self.argv_ptrs.as_ptr(), self.envp_ptrs.as_ptr());
                    let e = errno();
                    if e != libc::ENOENT && e != libc::ENOTDIR {
                        last = e;
                    }
                }
                last
            }
        }
    }
}
