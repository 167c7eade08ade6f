//! Health checks, run from inside the service's network namespace.
//!
//! Each check runs on a short-lived thread of its own: the thread joins the
//! container's network namespace with `setns` (which only affects that
//! thread), so `127.0.0.1:PORT` is the service's own loopback even with a
//! private network. Exec checks fork a process that joins all the
//! container's namespaces and its cgroup and drops to the service's user.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::{HealthKind, HealthSpec};

/// Where and as whom to run the check.
#[derive(Debug, Clone)]
pub struct Target {
    /// The container's init pid on the host.
    pub pid: i32,
    /// Join its network namespace (false for host networking).
    pub netns: bool,
    pub uid: u32,
    pub gid: u32,
    /// `cgroup.procs` files to join for exec checks.
    pub cgroup_procs: Vec<PathBuf>,
}

fn join_netns(pid: i32) -> std::io::Result<()> {
    let f = File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns on an fd we own; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn tcp(port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))
}

fn http(port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let mut s = tcp(port, timeout)?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: nuvol-health\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = [0u8; 512];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if buf[..got].contains(&b'\n') {
                    break;
                }
            }
            Err(e) => return Err(format!("read response: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/") {
        return Err(format!("not an HTTP response: {status_line:?}"));
    }
    match code.parse::<u16>() {
        Ok(c) if (200..400).contains(&c) => Ok(()),
        Ok(c) => Err(format!("GET {path}: status {c}")),
        Err(_) => Err(format!("bad status line {status_line:?}")),
    }
}

fn exec(spec: &HealthSpec, t: &Target, timeout: Duration) -> Result<(), String> {
    let mut ns_files = Vec::new();
    for ns in ["cgroup", "ipc", "uts", "net", "pid", "mnt"] {
        if ns == "net" && !t.netns {
            continue;
        }
        let f = File::open(format!("/proc/{}/ns/{ns}", t.pid))
            .map_err(|e| format!("open {ns} namespace: {e}"))?;
        ns_files.push(f);
    }
    let procs: Vec<File> = t
        .cgroup_procs
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("open cgroup: {e}"))?;
    let fds: Vec<i32> = ns_files.iter().map(|f| f.as_raw_fd()).collect();
    let cg: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    let (uid, gid) = (t.uid, t.gid);
    // SAFETY: the closure only makes async-signal-safe system calls on fds opened above.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &cg {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for fd in &fds {
                if libc::setns(*fd, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Drop to the service's user only now: joining namespaces needs root.
            let gids = [gid];
            if libc::setgroups(1, gids.as_ptr()) < 0
                || libc::setresgid(gid, gid, gid) < 0
                || libc::setresuid(uid, uid, uid) < 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("run {:?}: {e}", spec.command[0]))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Ok(()),
            Ok(Some(st)) => return Err(format!("{:?} exited with {st}", spec.command[0])),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{:?} timed out", spec.command[0]));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn check_blocking(spec: &HealthSpec, t: &Target) -> Result<(), String> {
    let timeout = Duration::from_millis(spec.timeout_ms);
    match spec.kind {
        HealthKind::Exec => exec(spec, t, timeout),
        HealthKind::Tcp | HealthKind::Http => {
            if t.netns {
                join_netns(t.pid).map_err(|e| format!("join network namespace: {e}"))?;
            }
            let port = spec.port.ok_or("no port")?;
            if spec.kind == HealthKind::Tcp {
                tcp(port, timeout).map(|_| ())
            } else {
                http(port, spec.path.as_deref().unwrap_or("/"), timeout)
            }
        }
    }
}

/// Run one check; `Err` says why it failed.
pub async fn check(spec: &HealthSpec, target: &Target) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (spec, target) = (spec.clone(), target.clone());
    std::thread::Builder::new()
        .name("nuvol-health".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let _ = tx.send(check_blocking(&spec, &target));
        })
        .map_err(|e| format!("spawn health thread: {e}"))?;
    rx.await
        .unwrap_or_else(|_| Err("health thread died".into()))
}
