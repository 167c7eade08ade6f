//! The default seccomp filter: allow everything except the system calls a
//! service has no business making (kernel modules, kexec, reboot, mounts,
//! namespaces, tracing, keyrings, clock setting, bpf, perf, io_uring).
//!
//! - Denied calls fail with EPERM rather than killing the process, so a
//!   program probing for a feature degrades instead of crashing.
//! - `clone` is allowed only without a `CLONE_NEW*` flag: a service cannot
//!   make a user namespace (where it would hold `CAP_NET_ADMIN` & co over
//!   its own namespaces and reach nf_tables, a well-known road to root), nor
//!   any other namespace.
//! - `clone3` answers ENOSYS: its flags sit in a struct in memory, which a
//!   seccomp filter cannot read. ENOSYS is what an older kernel says, and
//!   libcs then use `clone` (glibc's `pthread_create`, `posix_spawn` and
//!   `fork` since 2.34), where the flags are a register the filter checks.
//! - `io_uring_*` answer ENOSYS, as on a kernel built without it (the box's
//!   is): programs fall back to epoll/threads.
//! - A system call of another ABI than the one the filter was built for
//!   (i386 `int 0x80` or x32 on x86_64, arm32 on arm64) kills the process:
//!   the filter's numbers mean nothing there.
//!
//! The filter is plain classic BPF built here (a list of comparisons), for
//! x86_64, aarch64 and 32-bit arm.
//!
//! 32-bit ARM has system calls of its own: `mmap2`, `fstatat64`,
//! `fcntl64`, the 32-bit-id `setresuid32` & co beside the 16-bit-id
//! originals, and (since Linux 5.1) a `*_time64` twin of every call that
//! takes a `time_t`, which musl 1.2+ and glibc with 64-bit time call
//! instead of the old one. Being a deny-list, the filter allows all of
//! those without naming them; but where a denied call has such a twin,
//! the twin is denied too (`clock_settime64`, `clock_adjtime64`, the
//! latter also what such a libc's `adjtimex` calls), or the libc's own
//! choice would walk around the rule.

use crate::error::{ContainerError, Result};

/// The system calls the default filter refuses with EPERM.
pub fn denied_syscalls() -> Vec<(&'static str, libc::c_long)> {
    let mut v: Vec<(&'static str, libc::c_long)> = vec![
        ("acct", libc::SYS_acct),
        ("add_key", libc::SYS_add_key),
        // Sets the clock as `clock_adjtime(CLOCK_REALTIME)` does. On 32-bit
        // ARM its 64-bit-time form is `clock_adjtime64`, denied there.
        ("adjtimex", libc::SYS_adjtimex),
        ("bpf", libc::SYS_bpf),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("clock_settime", libc::SYS_clock_settime),
        ("delete_module", libc::SYS_delete_module),
        ("finit_module", libc::SYS_finit_module),
        ("init_module", libc::SYS_init_module),
        ("kcmp", libc::SYS_kcmp),
        ("kexec_file_load", SYS_KEXEC_FILE_LOAD),
        ("kexec_load", libc::SYS_kexec_load),
        ("keyctl", libc::SYS_keyctl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("mount", libc::SYS_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("move_mount", libc::SYS_move_mount),
        ("open_tree", libc::SYS_open_tree),
        ("fsopen", libc::SYS_fsopen),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("pivot_root", libc::SYS_pivot_root),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("ptrace", libc::SYS_ptrace),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("reboot", libc::SYS_reboot),
        ("request_key", libc::SYS_request_key),
        ("setns", libc::SYS_setns),
        ("settimeofday", libc::SYS_settimeofday),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("syslog", libc::SYS_syslog),
        ("umount2", libc::SYS_umount2),
        ("unshare", libc::SYS_unshare),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("vhangup", libc::SYS_vhangup),
    ];
    v.extend(arch_denied());
    v
}

/// Legacy calls only some architectures have.
fn arch_denied() -> Vec<(&'static str, libc::c_long)> {
    #[cfg(target_arch = "x86_64")]
    return vec![
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        ("_sysctl", libc::SYS__sysctl),
    ];
    #[cfg(target_arch = "arm")]
    return vec![
        ("uselib", libc::SYS_uselib),
        ("clock_settime64", SYS_CLOCK_SETTIME64),
        ("clock_adjtime64", SYS_CLOCK_ADJTIME64),
    ];
    #[allow(unreachable_code)]
    Vec::new()
}

/// The system calls that answer ENOSYS, as if this kernel did not have them.
pub fn unavailable_syscalls() -> Vec<(&'static str, libc::c_long)> {
    vec![
        ("clone3", libc::SYS_clone3),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
    ]
}

/// `kexec_file_load`: the libc crate lacks it for the ARM targets.
#[cfg(target_arch = "x86_64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
#[cfg(target_arch = "arm")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 401;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
const SYS_KEXEC_FILE_LOAD: libc::c_long = -1;

/// The 64-bit-time twins of `clock_settime` and `clock_adjtime` on 32-bit
/// ARM (arch/arm/tools/syscall.tbl; the libc crate lacks them there).
#[cfg(target_arch = "arm")]
const SYS_CLOCK_SETTIME64: libc::c_long = 404;
#[cfg(target_arch = "arm")]
const SYS_CLOCK_ADJTIME64: libc::c_long = 405;

/// Every `CLONE_NEW*` flag `clone` takes (`CLONE_NEWTIME` is `clone3`/`unshare` only).
pub const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// The architecture the filter is built for: its `AUDIT_ARCH_*` value and
/// which argument of `clone` holds the flags (0 on x86_64, aarch64 and arm;
/// s390 and cris swap the first two, which is why this is per architecture).
struct Arch {
    audit: u32,
    clone_flags_arg: u32,
    /// x86_64 only: the x32 ABI's bit in the system call number.
    x32_bit: Option<u32>,
}

// `AUDIT_ARCH_*` = the ELF machine | 64-bit | little-endian.
#[cfg_attr(target_arch = "arm", allow(dead_code))]
const AUDIT_ARCH_64BIT: u32 = 0x8000_0000;
const AUDIT_ARCH_LE: u32 = 0x4000_0000;

fn arch() -> Result<Arch> {
    #[cfg(target_arch = "x86_64")]
    return Ok(Arch {
        audit: 62 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE,
        clone_flags_arg: 0,
        x32_bit: Some(0x4000_0000),
    });
    #[cfg(target_arch = "aarch64")]
    return Ok(Arch {
        audit: 183 | AUDIT_ARCH_64BIT | AUDIT_ARCH_LE,
        clone_flags_arg: 0,
        x32_bit: None,
    });
    #[cfg(target_arch = "arm")]
    return Ok(Arch {
        audit: 40 | AUDIT_ARCH_LE,
        clone_flags_arg: 0,
        x32_bit: None,
    });
    #[allow(unreachable_code)]
    Err(ContainerError::Seccomp(
        "no seccomp filter for this architecture".into(),
    ))
}

// Classic BPF, as the kernel's filter.h spells it.
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// `struct seccomp_data`: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn ret_errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Offset in `seccomp_data` of the low 32 bits of argument `n` (the kernel
/// reads only those of `clone`'s flags, and they are all there is on a
/// 32-bit architecture).
fn arg_low_word(n: u32) -> u32 {
    let base = OFF_ARGS + 8 * n;
    if cfg!(target_endian = "big") {
        base + 4
    } else {
        base
    }
}

/// Compile the default filter to classic BPF.
pub fn default_filter() -> Result<Vec<libc::sock_filter>> {
    let arch = arch()?;
    let mut p = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, arch.audit, 1, 0),
        stmt(BPF_RET_K, RET_KILL),
        stmt(BPF_LD_W_ABS, OFF_NR),
    ];
    if let Some(bit) = arch.x32_bit {
        p.push(jump(BPF_JSET_K, bit, 0, 1));
        p.push(stmt(BPF_RET_K, RET_KILL));
    }
    let rules = denied_syscalls()
        .into_iter()
        .map(|(n, nr)| (n, nr, ret_errno(libc::EPERM)))
        .chain(
            unavailable_syscalls()
                .into_iter()
                .map(|(n, nr)| (n, nr, ret_errno(libc::ENOSYS))),
        );
    for (name, nr, action) in rules {
        let nr = u32::try_from(nr).map_err(|_| {
            ContainerError::Seccomp(format!("no system call number for {name} here"))
        })?;
        p.push(jump(BPF_JEQ_K, nr, 0, 1));
        p.push(stmt(BPF_RET_K, action));
    }
    // clone: allowed unless a namespace flag is set.
    p.push(jump(BPF_JEQ_K, libc::SYS_clone as u32, 1, 0));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p.push(stmt(BPF_LD_W_ABS, arg_low_word(arch.clone_flags_arg)));
    p.push(jump(BPF_JSET_K, NAMESPACE_FLAGS, 0, 1));
    p.push(stmt(BPF_RET_K, ret_errno(libc::EPERM)));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    if p.len() > u16::MAX as usize {
        return Err(ContainerError::Seccomp("filter too long".into()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_compiles_and_every_path_returns() {
        let prog = default_filter().unwrap();
        assert!(prog.len() > 2 * denied_syscalls().len());
        assert!(prog.len() < 4096, "the kernel's BPF_MAXINSNS");
        // Every jump lands inside the program, and the program ends in a return.
        for (i, ins) in prog.iter().enumerate() {
            if ins.code & 0x07 == libc::BPF_JMP as u16 {
                assert!(
                    i + 1 + (ins.jt.max(ins.jf) as usize) < prog.len(),
                    "jump at {i}"
                );
            }
        }
        assert_eq!(prog.last().unwrap().code, BPF_RET_K);
    }

    /// A libc with 64-bit time sets the clock through the `*_time64`
    /// calls: denying only the old ones would leave the clock settable.
    #[cfg(target_arch = "arm")]
    #[test]
    fn arm_denies_the_time64_twins() {
        let denied = denied_syscalls();
        for (name, nr) in [("clock_settime64", 404), ("clock_adjtime64", 405)] {
            assert!(denied.contains(&(name, nr)), "{name} not denied");
        }
    }

    /// `adjtimex` sets the clock like `clock_adjtime`: denied on every
    /// architecture, by the libc crate's number.
    #[test]
    fn adjtimex_is_denied_like_clock_adjtime() {
        let denied = denied_syscalls();
        for call in [
            ("adjtimex", libc::SYS_adjtimex),
            ("clock_adjtime", libc::SYS_clock_adjtime),
        ] {
            assert!(denied.contains(&call), "{call:?} not denied");
        }
    }

    /// Fork a child that installs the default filter (no_new_privs, as an
    /// unprivileged process may), runs `body` and leaves with its value as
    /// the exit code, which is returned; 100: the filter did not install.
    /// `body` must make raw system calls only.
    fn in_filtered_child(body: impl FnOnce() -> i32) -> i32 {
        let prog = default_filter().unwrap();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: the child makes raw system calls only and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: in the child; every pointer refers to memory of this process.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
                    || libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog)
                        < 0
                {
                    libc::_exit(100);
                }
                libc::_exit(body());
            }
        }
        let mut st = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(libc::WIFEXITED(st), "status {st:#x}");
        let code = libc::WEXITSTATUS(st);
        assert_ne!(code, 100, "installing the filter failed");
        code
    }

    /// The filter answers `adjtimex` with EPERM even when it would only
    /// read the clock's state (`modes` 0: harmless if it were let through).
    #[test]
    fn filter_refuses_adjtimex() {
        let code = in_filtered_child(|| {
            // SAFETY: a raw system call on a zeroed struct of this process.
            unsafe {
                let mut tx: libc::timex = std::mem::zeroed();
                let r = libc::syscall(libc::SYS_adjtimex, &mut tx);
                i32::from(r < 0 && *libc::__errno_location() == libc::EPERM)
            }
        });
        assert_eq!(code, 1, "adjtimex was not refused with EPERM");
    }

    /// Install the filter in a forked child and report what each call
    /// answered through the exit code.
    #[test]
    fn filter_refuses_namespaces_and_clone3_and_allows_fork() {
        let bits = in_filtered_child(|| {
            // SAFETY: raw system calls; children made here leave at once.
            unsafe {
                let errno = || *libc::__errno_location();
                let mut bits = 0;
                // unshare: EPERM.
                if libc::unshare(libc::CLONE_NEWUSER) < 0 && errno() == libc::EPERM {
                    bits |= 1;
                }
                // clone with CLONE_NEWUSER: EPERM (a child, if made, leaves at once).
                let r = libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0,
                    0,
                    0,
                    0,
                );
                if r == 0 {
                    libc::_exit(0);
                }
                if r < 0 && errno() == libc::EPERM {
                    bits |= 2;
                }
                // clone3: ENOSYS.
                let mut args = [0u64; 11];
                args[4] = libc::SIGCHLD as u64;
                let r = libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 88usize);
                if r == 0 {
                    libc::_exit(0);
                }
                if r < 0 && errno() == libc::ENOSYS {
                    bits |= 4;
                }
                // A plain fork-like clone still works.
                let r = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
                if r == 0 {
                    libc::_exit(9);
                }
                let mut st = 0;
                if r > 0 && libc::waitpid(r as i32, &mut st, 0) == r as i32 && st == 9 << 8 {
                    bits |= 8;
                }
                bits
            }
        });
        assert_eq!(bits & 1, 1, "unshare(CLONE_NEWUSER) not refused with EPERM");
        assert_eq!(bits & 2, 2, "clone(CLONE_NEWUSER) not refused with EPERM");
        assert_eq!(bits & 4, 4, "clone3 did not answer ENOSYS");
        assert_eq!(bits & 8, 8, "a plain clone (fork) failed");
    }
}
