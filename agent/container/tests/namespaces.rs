//! A container process cannot make namespaces of its own: `unshare`,
//! `clone` with a `CLONE_NEW*` flag and `clone3` are refused by the seccomp
//! filter, while forking and threads (glibc's `pthread_create` tries `clone3`
//! first and falls back to `clone`) keep working.
//!
//! The probe is this test binary itself, run inside the container (its own
//! `ns_probe` test, which does nothing unless `NUVOL_NS_PROBE` is set), with
//! the shared libraries it needs copied into the rootfs when it is dynamic.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use nuvol_container::{ExitStatus, Mount};

/// Copy `exe`'s shared libraries (from `ldd`) into `root` at the same paths;
/// nothing for a static binary.
fn copy_libraries(exe: &Path, root: &Path) {
    let Ok(out) = Command::new("ldd").arg(exe).output() else {
        return; // no ldd: take the binary as static (a musl build)
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let dst = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(path, &dst).unwrap();
    }
}

fn run(
    spec: &nuvol_container::ContainerSpec,
    cg: &CgroupGuard,
    state: &std::path::Path,
) -> (ExitStatus, String) {
    run_to_end(spec, cg, state, Duration::from_secs(30))
}

#[test]
fn namespaces_are_refused_and_fork_and_threads_work() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let exe = std::env::current_exe().unwrap();
    copy_libraries(&exe, &root);
    std::fs::write(root.join("probe"), b"").unwrap();
    let cg = CgroupGuard::new();
    let mut s = spec(
        &unique("ns"),
        &root,
        "NUVOL_NS_PROBE=1 /probe --exact ns_probe --nocapture --test-threads=1 2>&1; \
         if unshare -U true 2>/dev/null; then echo busybox-unshare: ok; else echo busybox-unshare: refused; fi; \
         sleep 0 & wait $! && echo busybox-fork: ok",
    );
    s.uid = 65534;
    s.gid = 65534;
    s.mounts.push(Mount {
        destination: "/probe".into(),
        fstype: "bind".into(),
        source: exe.to_string_lossy().into_owned(),
        flags: libc::MS_RDONLY,
        data: String::new(),
    });
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    let mut wants = vec![
        "unshare(CLONE_NEWUSER): EPERM",
        "clone(CLONE_NEWUSER): EPERM",
        "clone(CLONE_NEWNET): EPERM",
        "clone3(CLONE_NEWUSER): ENOSYS",
        "clone3(): ENOSYS",
        "fork: ok",
        "thread: ok",
        "busybox-unshare: refused",
        "busybox-fork: ok",
    ];
    if cfg!(target_pointer_width = "64") {
        wants.push("clone(CLONE_NEWUSER|CLONE_NEWNS) on another arg0 word: EPERM");
    }
    for want in wants {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
}

/// Runs only inside the container of the test above.
#[test]
fn ns_probe() {
    if std::env::var_os("NUVOL_NS_PROBE").is_none() {
        return;
    }
    let errno = |r: libc::c_long| {
        if r >= 0 {
            "succeeded".to_string()
        } else {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EPERM) => "EPERM".into(),
                Some(libc::ENOSYS) => "ENOSYS".into(),
                Some(libc::EINVAL) => "EINVAL".into(),
                e => format!("errno {e:?}"),
            }
        }
    };
    // SAFETY: unshare with a flag only changes this process's namespaces.
    let r = unsafe { libc::unshare(libc::CLONE_NEWUSER) } as libc::c_long;
    println!("unshare(CLONE_NEWUSER): {}", errno(r));
    // A fork-like clone: the child (if one is made) exits at once.
    let clone = |flags: libc::c_ulong| {
        // SAFETY: raw clone without CLONE_VM is a fork; the child only calls _exit.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::SIGCHLD as libc::c_ulong,
                0,
                0,
                0,
                0,
            )
        };
        if r == 0 {
            // SAFETY: in the child: leave at once.
            unsafe { libc::_exit(0) };
        }
        if r > 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
        }
        r
    };
    println!(
        "clone(CLONE_NEWUSER): {}",
        errno(clone(libc::CLONE_NEWUSER as libc::c_ulong))
    );
    println!(
        "clone(CLONE_NEWNET): {}",
        errno(clone(libc::CLONE_NEWNET as libc::c_ulong))
    );
    // The kernel reads only the low 32 bits of clone's flags: junk above
    // them must not hide a namespace flag from the filter. (A 32-bit
    // register has no bits above them.)
    #[cfg(target_pointer_width = "64")]
    println!(
        "clone(CLONE_NEWUSER|CLONE_NEWNS) on another arg0 word: {}",
        errno(clone(
            (1 << 40) | (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as libc::c_ulong
        ))
    );
    let clone3 = |flags: u64| {
        let mut args = [0u64; 11];
        args[0] = flags;
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: clone3 with a valid clone_args; a child (if one is made) exits at once.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                args.as_mut_ptr(),
                std::mem::size_of_val(&args),
            )
        };
        if r == 0 {
            // SAFETY: in the child: leave at once.
            unsafe { libc::_exit(0) };
        }
        if r > 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
        }
        r
    };
    println!(
        "clone3(CLONE_NEWUSER): {}",
        errno(clone3(libc::CLONE_NEWUSER as u64))
    );
    println!("clone3(): {}", errno(clone3(0)));
    // SAFETY: fork in a test process; the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child.
        unsafe { libc::_exit(7) };
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let forked = pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7;
    println!("fork: {}", if forked { "ok" } else { "failed" });
    let t = std::thread::spawn(|| 42).join();
    println!(
        "thread: {}",
        if matches!(t, Ok(42)) { "ok" } else { "failed" }
    );
}
