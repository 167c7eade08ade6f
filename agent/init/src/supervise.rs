//! The PID 1 loop: supervise the agent, reap zombies, feed the watchdog,
//! wait for a stop request; then the orderly shutdown.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::evdev::Buttons;
use crate::{mounts, say, Halt, Layout};

/// Restart delay for the agent: doubles on each quick death, capped; resets
/// once the agent stayed up for `healthy_after`.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, healthy_after: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            healthy_after,
            current: initial,
        }
    }

    /// Delay before the next start, given how long the last run lasted.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            self.current = self.initial;
        }
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }
}

const STOP_SIGNALS: [Signal; 6] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGHUP,
];

struct Watchdog(Option<File>);

impl Watchdog {
    const TIMEOUT_S: libc::c_int = 60;
    fn open() -> Watchdog {
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/watchdog")
        else {
            return Watchdog(None);
        };
        let mut t = Self::TIMEOUT_S;
        // SAFETY: WDIOC_SETTIMEOUT reads/writes one int, which outlives the call.
        unsafe { libc::ioctl(f.as_raw_fd(), 0xC004_5706u64 as _, &mut t) };
        say!("hardware watchdog armed ({t} s)");
        Watchdog(Some(f))
    }
    fn ping(&mut self) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(b"\0");
        }
    }
    /// Magic close: disarm before a deliberate reboot/poweroff.
    fn disarm(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"V");
        }
    }
}

struct Init<'a> {
    exe: &'a Path,
    layout: &'a Layout,
    sfd: SignalFd,
    buttons: Buttons,
    buttons_scanned: Instant,
    watchdog: Watchdog,
    agent: Option<(Pid, Instant)>,
    next_start: Option<Instant>,
    backoff: Backoff,
}

impl Init<'_> {
    fn start_agent(&mut self) {
        let mut cmd = Command::new(self.exe);
        cmd.arg("agent")
            .arg("--config")
            .arg(&self.layout.config)
            .arg("--state-dir")
            .arg(&self.layout.state_dir)
            .env("NUVOL_UNDER_INIT", "1");
        // PID 1 blocks the signals it reads through signalfd; the agent must
        // start with none blocked or it would never see SIGTERM.
        // SAFETY: sigprocmask is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                SigSet::empty()
                    .thread_set_mask()
                    .map_err(std::io::Error::from)
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                say!("agent started (pid {pid})");
                self.agent = Some((pid, Instant::now()));
                self.next_start = None;
            }
            Err(e) => {
                let d = self.backoff.next(Duration::ZERO);
                say!("cannot start agent: {e}; retrying in {d:?}");
                self.next_start = Some(Instant::now() + d);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    let Some(pid) = st.pid() else { continue };
                    if let Some((apid, started)) = self.agent {
                        if pid == apid {
                            let ran = started.elapsed();
                            let d = self.backoff.next(ran);
                            say!(
                                "agent exited ({}) after {:.1} s; restarting in {:?}",
                                describe(&st),
                                ran.as_secs_f64(),
                                d
                            );
                            self.agent = None;
                            self.next_start = Some(Instant::now() + d);
                        }
                    }
                }
            }
        }
    }

    /// One turn of the loop; `Some` when the box must stop.
    fn step(&mut self) -> Option<Halt> {
        if self.agent.is_none() && self.next_start.is_none_or(|t| Instant::now() >= t) {
            self.start_agent();
        }
        if self.buttons_scanned.elapsed() > Duration::from_secs(30) {
            self.buttons = Buttons::open();
            self.buttons_scanned = Instant::now();
        }
        let mut timeout = Duration::from_secs(10);
        if let Some(t) = self.next_start {
            timeout = timeout.min(t.saturating_duration_since(Instant::now()));
        }
        let mut halt = None;
        {
            let bfds = self.buttons.fds();
            let mut fds = vec![PollFd::new(self.sfd.as_fd_ref(), PollFlags::POLLIN)];
            fds.extend(bfds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
        while let Ok(Some(info)) = self.sfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => halt = Some(Halt::Reboot),
                Ok(Signal::SIGUSR1) | Ok(Signal::SIGUSR2) => halt = Some(Halt::PowerOff),
                _ => {}
            }
        }
        if self.buttons.power_pressed() {
            say!("power button pressed");
            halt = Some(Halt::PowerOff);
        }
        self.reap();
        self.watchdog.ping();
        halt
    }
}

trait SfdRef {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl SfdRef for SignalFd {
    fn as_fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn describe(st: &WaitStatus) -> String {
    match st {
        WaitStatus::Exited(_, c) => format!("exit code {c}"),
        WaitStatus::Signaled(_, s, _) => format!("killed by {s}"),
        other => format!("{other:?}"),
    }
}

fn signal_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in STOP_SIGNALS {
        mask.add(s);
    }
    mask
}

/// Supervise until a stop is requested. Never panics out: a panic inside one
/// turn is caught, reported, and the loop goes on.
pub fn main_loop(exe: &Path, layout: &Layout) -> Halt {
    let mask = signal_mask();
    if let Err(e) = mask.thread_block() {
        say!("blocking signals: {e}");
    }
    let sfd = loop {
        match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
            Ok(s) => break s,
            Err(e) => {
                say!("signalfd: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let mut init = Init {
        exe,
        layout,
        sfd,
        buttons: Buttons::open(),
        buttons_scanned: Instant::now(),
        watchdog: Watchdog::open(),
        agent: None,
        next_start: None,
        backoff: Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(60),
        ),
    };
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init.step())) {
            Ok(Some(h)) => {
                init.watchdog.ping();
                stop_agent(&mut init);
                init.watchdog.disarm();
                return h;
            }
            Ok(None) => {}
            Err(_) => {
                say!("internal error in the init loop; continuing");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn wait_gone(pid: Option<Pid>, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => {
                if pid.is_some() && st.pid() == pid {
                    return true;
                }
                continue;
            }
            Err(_) => return true, // ECHILD: nothing left at all
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_agent(init: &mut Init<'_>) {
    if let Some((pid, _)) = init.agent.take() {
        say!("stopping agent (pid {pid})");
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_gone(Some(pid), init.layout.stop_grace) {
            say!(
                "agent did not stop within {:?}; killing it",
                init.layout.stop_grace
            );
            let _ = kill(pid, Signal::SIGKILL);
            wait_gone(Some(pid), Duration::from_secs(5));
        }
    }
}

/// Kill what is left, sync, unmount, and power off or reboot. Never returns.
pub fn shutdown(layout: &Layout, halt: Halt) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if !wait_gone(None, Duration::from_secs(3)) {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        wait_gone(None, Duration::from_secs(2));
    }
    nix::unistd::sync();
    mounts::unmount_all(layout);
    nix::unistd::sync();
    let how = match halt {
        Halt::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        Halt::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
    };
    say!(
        "{}",
        if halt == Halt::PowerOff {
            "powering off"
        } else {
            "rebooting"
        }
    );
    loop {
        let Err(e) = nix::sys::reboot::reboot(how);
        say!("reboot(2): {e}");
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_healthy_run() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30), s(60));
        let quick = s(2);
        let seq: Vec<u64> = (0..7).map(|_| b.next(quick).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.next(s(61)), s(1), "a healthy run resets the delay");
        assert_eq!(b.next(quick), s(2));
    }
}
