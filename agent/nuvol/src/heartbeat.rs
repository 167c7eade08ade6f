//! Heartbeats to PID 1: one byte every few seconds on the pipe `nuvol init`
//! hands the agent (`NUVOL_HEARTBEAT_FD`). PID 1 feeds the hardware watchdog
//! only while they arrive, so an agent that hangs (deadlock, stopped, a
//! runtime stalled for good) ends in a reset instead of a box that answers
//! nothing until someone climbs the roof.
//!
//! The beat is a task on the agent's own runtime on purpose: if that runtime
//! stops making progress, the beats stop with it.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::time::Duration;

/// How often the agent beats; PID 1 counts it silent after 30 s.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Take the heartbeat fd named by the environment, if PID 1 gave one.
/// Anything odd (not a number, not an open fd, not a pipe) is reported and
/// ignored: the agent then runs without heartbeats and PID 1 stops feeding
/// the watchdog after its start grace, which is the safe side.
pub fn take_from_env() -> Option<File> {
    let v = std::env::var(nuvol_init::HEARTBEAT_FD_ENV).ok()?;
    std::env::remove_var(nuvol_init::HEARTBEAT_FD_ENV);
    let Ok(fd) = v.parse::<i32>() else {
        tracing::error!(
            "{}={v:?} is not an fd number; no heartbeats",
            nuvol_init::HEARTBEAT_FD_ENV
        );
        return None;
    };
    // SAFETY: fstat on an arbitrary int only reads; it fails for a closed fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if fd < 3
        || unsafe { libc::fstat(fd, &mut st) } != 0
        || st.st_mode & libc::S_IFMT != libc::S_IFIFO
    {
        tracing::error!("heartbeat fd {fd} is not an open pipe; no heartbeats");
        return None;
    }
    // Nothing the agent starts may inherit it: a child holding the write end
    // would hide the agent's death from PID 1 (no EOF on the pipe).
    // SAFETY: fcntl on an fd we just checked is open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: PID 1 gave us this fd for our exclusive use; we own it now.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Beat forever on the current runtime. Writes never block (the fd is
/// non-blocking): a full pipe means PID 1 is behind, and a dropped beat is
/// harmless.
pub async fn run(mut pipe: File) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pipe.write(b".") {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                tracing::warn!("heartbeat to PID 1: {e}; stopping heartbeats");
                return;
            }
        }
    }
}
