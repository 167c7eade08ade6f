//! A created (not yet started) container process and the process that made
//! it: the container holds none of its creator's file descriptors, dies with
//! it, gives up when nobody starts it, and does not die with the thread that
//! happened to create it.

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use common::*;
use nuvol_container::{create, create_with_timeout, ContainerError, Stdio};

/// Set in the re-executed copy of this test binary (see `helper_create_and_hang`).
const HELPER_ENV: &str = "NUVOL_TEST_LIFETIME_HELPER";

/// True while `pid` exists and is not a zombie (a zombie holds no files).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

/// `fd number -> link target` of every open fd of `pid`.
fn fds(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            let Some(n) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            out.push((n, target));
        }
    }
    out.sort();
    out
}

/// The access mode of `pid`'s fd `n` from fdinfo (`O_RDONLY`=0, `O_WRONLY`=1).
fn fd_mode(pid: i32, n: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}")).unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .map_or(u32::MAX, |f| f & 3)
}

/// What a created container's init may hold: its three standard fds as
/// inherited (replaced before exec), `/dev/null` for the stdio it was not
/// given, the read end of the start pipe and the write end of the error
/// pipe, two different pipes. Anything else crossed over from the creator.
fn only_expected_fds(pid: i32) -> Result<(), String> {
    let all = fds(pid);
    let above: Vec<_> = all.iter().filter(|(n, _)| *n > 2).collect();
    let null = above.iter().filter(|(_, t)| t == "/dev/null").count();
    let reads: Vec<_> = above
        .iter()
        .filter(|(n, t)| t.starts_with("pipe:") && fd_mode(pid, *n) == 0)
        .collect();
    let writes: Vec<_> = above
        .iter()
        .filter(|(n, t)| t.starts_with("pipe:") && fd_mode(pid, *n) == 1)
        .collect();
    let ok = above.len() == 3
        && null == 1
        && reads.len() == 1
        && writes.len() == 1
        && reads[0].1 != writes[0].1;
    if ok {
        Ok(())
    } else {
        Err(format!("container init {pid} holds {all:?}"))
    }
}

fn flock(f: &std::fs::File, flags: i32) -> bool {
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(f.as_raw_fd(), flags) == 0 }
}

/// (b) Neither a listening socket nor a file lock of the creator crosses
/// into a created container: once the creator lets go of them, the port can
/// be bound again and the lock taken, while the container still waits to be
/// started.
#[test]
fn created_container_holds_no_listener_or_lock_of_its_creator() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let lock_path = tmp.path().join("store.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    assert!(flock(&lock, libc::LOCK_EX));

    let created = create(
        &spec(&unique("fds"), &root, "true"),
        &cg.0,
        tmp.path(),
        Stdio::default(),
    )
    .unwrap();
    let pid = created.pid();
    // The child sheds what it inherited first thing; give it a moment to run.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut seen = only_expected_fds(pid);
    while seen.is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = only_expected_fds(pid);
    }
    assert!(alive(pid), "the created container is waiting to be started");
    drop(listener);
    drop(lock);
    let rebound = std::net::TcpListener::bind(addr);
    let relock = std::fs::File::open(&lock_path).unwrap();
    let locked = flock(&relock, libc::LOCK_EX | libc::LOCK_NB);
    assert!(rebound.is_ok(), "port {addr} still held: {:?}", fds(pid));
    assert!(locked, "lock still held: {:?}", fds(pid));
    seen.unwrap();
    drop(created);
    assert!(!alive(pid));
}

/// Not a test on its own: the re-executed copy of this binary runs it with
/// `HELPER_ENV` = `cgroup name|rootfs|state dir|container id`. It creates a
/// container, prints its pid and waits to be SIGKILLed.
#[test]
fn helper_create_and_hang() {
    let Ok(cfg) = std::env::var(HELPER_ENV) else {
        return;
    };
    let parts: Vec<&str> = cfg.split('|').collect();
    let [cgroup, rootfs, state, id] = parts[..] else {
        panic!("bad {HELPER_ENV}: {cfg}");
    };
    let cgroups = nuvol_container::CgroupRoot::detect(cgroup).unwrap();
    let created = create(
        &spec(id, Path::new(rootfs), "true"),
        &cgroups,
        Path::new(state),
        Stdio::default(),
    )
    .unwrap();
    println!("container-pid={}", created.pid());
    std::thread::sleep(Duration::from_secs(60));
    drop(created);
}

/// (a) The process that created a container is SIGKILLed before starting
/// it: the container process goes too, at once, instead of waiting forever
/// as PID 1 of its namespace with the creator's files open.
#[test]
fn created_container_dies_with_its_creator() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let cgroup_name =
        cg.0.dirs()
            .first()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap()
            .to_string();
    let state: PathBuf = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = format!(
        "{cgroup_name}|{}|{}|{}",
        root.display(),
        state.display(),
        unique("orphan")
    );
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_create_and_hang",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, cfg)
        .stdout(PStdio::piped())
        .stderr(PStdio::inherit())
        .spawn()
        .unwrap();
    let out = helper.stdout.take().unwrap();
    let mut pid = None;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        // libtest prints `test NAME ... ` on the same line first.
        if let Some((_, p)) = line.split_once("container-pid=") {
            pid = Some(p.trim().parse::<i32>().unwrap());
            break;
        }
    }
    let pid = pid.expect("the helper printed the container's pid");
    assert!(alive(pid));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let gone = wait_gone(pid, Duration::from_secs(3));
    // On failure the guard's drop kills what is left in the cgroup.
    assert!(gone, "container {pid} outlived its creator: {:?}", fds(pid));
}

/// A container nobody starts gives up after its start timeout, and a late
/// `start` says so.
#[test]
fn unstarted_container_gives_up_after_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let created = create_with_timeout(
        &spec(&unique("late"), &root, "true"),
        &cg.0,
        tmp.path(),
        Stdio::default(),
        Duration::from_millis(300),
    )
    .unwrap();
    let pid = created.pid();
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "still waiting: {:?}",
        fds(pid)
    );
    let e = created.start().unwrap_err();
    assert!(
        matches!(e, ContainerError::NotStarted { .. }),
        "{e:?} ({e})"
    );
    assert!(e.to_string().contains("not started within"), "{e}");
    assert!(cg.0.children().is_empty(), "cgroup left behind");
}

/// The kernel's parent-death signal follows the *thread* that cloned: a
/// container created on a short-lived thread (like tokio's blocking pool)
/// must not die when that thread ends before it is started.
#[test]
fn container_outlives_the_thread_that_created_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let (r, w) = nuvol_container::pipe().unwrap();
    let s = spec(&unique("thread"), &root, "echo started");
    let (cgroups, state) = (cg.0.clone(), tmp.path().to_path_buf());
    let created = std::thread::spawn(move || {
        create(
            &s,
            &cgroups,
            &state,
            Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: None,
            },
        )
        .unwrap()
    })
    .join()
    .unwrap();
    // The creating thread is gone; give a parent-death signal time to land.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(created.pid()), "killed with its creating thread");
    let mut c = created.start().unwrap();
    let out = read_all(r, Duration::from_secs(10));
    assert_eq!(c.wait().unwrap(), nuvol_container::ExitStatus::Exited(0));
    assert_eq!(out, "started\n");
    c.destroy().unwrap();
}
