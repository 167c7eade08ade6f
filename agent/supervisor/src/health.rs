//! Health checks, run from inside the service's network namespace.
//!
//! Each check runs on a short-lived thread of its own: the thread joins the
//! container's network namespace with `setns` (which only affects that
//! thread), so `127.0.0.1:PORT` is the service's own loopback even with a
//! private network. Exec checks run a process in the container itself
//! ([`nuvol_container::ExecTarget`]): its pid, mount, UTS, IPC, network
//! and cgroup namespaces, its cgroup, and the service's uid/gid,
//! capabilities, no_new_privs and seccomp filter.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nuvol_container::ExitStatus;

use crate::spec::{HealthKind, HealthSpec};

/// Where and as whom to run the check.
#[derive(Debug, Clone)]
pub struct Target {
    /// The container's init pid on the host.
    pub pid: i32,
    /// Join its network namespace (false for host networking).
    pub netns: bool,
    /// Where exec checks run (or why they cannot).
    pub exec: Result<nuvol_container::ExecTarget, String>,
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
    let target = t
        .exec
        .as_ref()
        .map_err(|e| format!("cannot run in the container: {e}"))?;
    let cmd = spec.command.first().map_or("", String::as_str);
    let mut p = target
        .spawn(&spec.command, nuvol_container::Stdio::default())
        .map_err(|e| format!("run {cmd:?}: {e}"))?;
    match p.wait_timeout(timeout) {
        Ok(Some(ExitStatus::Exited(0))) => Ok(()),
        Ok(Some(ExitStatus::Exited(c))) => Err(format!("{cmd:?} exited with code {c}")),
        Ok(Some(ExitStatus::Signaled(s))) => Err(format!("{cmd:?} was killed by signal {s}")),
        Ok(None) => {
            let _ = p.kill();
            Err(format!("{cmd:?} timed out after {timeout:?}"))
        }
        Err(e) => Err(format!("wait for {cmd:?}: {e}")),
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
