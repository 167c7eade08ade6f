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
    pub bpf: Vec<seccompiler::sock_filter>,
    pub stdio: [RawFd; 3],
    pub sync_fd: RawFd,
    pub err_fd: RawFd,
}

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
        let mut b = [0u8; 1];
        // Wait until the parent has put us into cgroups and set up the network.
        if libc::read(self.sync_fd, b.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(126);
        }
        for (i, op) in self.ops.iter().enumerate() {
            let r = self.step(op);
            if r != 0 {
                let mut msg = [0u8; 8];
                msg[..4].copy_from_slice(&(i as u32).to_ne_bytes());
                msg[4..].copy_from_slice(&r.to_ne_bytes());
                libc::write(self.err_fd, msg.as_ptr().cast(), 8);
                libc::_exit(127);
            }
        }
        libc::_exit(127)
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
                let r = libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
                if r < 0 {
                    return errno();
                }
                if libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) < 0 {
                    return errno();
                }
                ok(libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid))
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
