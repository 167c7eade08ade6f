//! cgroup limits for real: memory.max kills a hog, pids.max stops a fork bomb,
//! and stopping leaves nothing in the cgroup.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nuvol_container::{spawn, ExitStatus, Stdio};

#[test]
fn memory_hog_is_oom_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    // dd fills a 256 MiB buffer from /dev/zero; the limit is 32 MiB.
    let mut s = spec(
        &unique("oom"),
        &root,
        "exec dd if=/dev/zero of=/dev/null bs=256M count=4",
    );
    s.limits.memory_max = Some(32 << 20);
    let mut c = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap();
    let st = c.wait().unwrap();
    assert_eq!(st, ExitStatus::Signaled(libc::SIGKILL));
    assert!(c.oom_killed(), "memory.events shows no oom_kill");
    c.destroy().unwrap();
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let mut s = spec(
        &unique("bomb"),
        &root,
        "(i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done) 2>/dev/null; exec sleep 60",
    );
    s.limits.pids_max = Some(16);
    let mut c = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.cgroup().pids_max_events() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.cgroup().pids_max_events() > 0, "pids.max never hit");
    assert!(
        c.cgroup().pids_current() <= 16,
        "pids.current {}",
        c.cgroup().pids_current()
    );
    assert!(c.cgroup().pids().len() <= 16);
    // Stop: SIGTERM is ignored by a shell that is PID 1, so the grace ends in SIGKILL.
    let st = c.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(st, ExitStatus::Signaled(libc::SIGKILL));
    assert!(c.cgroup().pids().is_empty(), "processes survived stop");
    assert!(!c.cgroup().populated());
    let dirs = c.cgroup().dirs();
    c.destroy().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn stop_with_grace_lets_a_service_exit_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let s = spec(
        &unique("term"),
        &root,
        "trap 'exit 7' TERM; sleep 30 & wait",
    );
    let mut c = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let st = c.stop(Duration::from_secs(10)).unwrap();
    assert_eq!(st, ExitStatus::Exited(7));
    // The background sleep was killed with the cgroup.
    assert!(c.cgroup().pids().is_empty());
    c.destroy().unwrap();
}
