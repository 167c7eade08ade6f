//! The PID 1 loop: supervise the agent, reap zombies, feed the watchdog
//! while the agent's heartbeats arrive, wait for a stop request; then the
//! orderly shutdown.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::evdev::Buttons;
use crate::rescue::{self, FailStreak};
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

/// The environment variable naming the fd on which the agent writes its
/// heartbeats (one byte every few seconds) to PID 1.
pub const HEARTBEAT_FD_ENV: &str = "NUVOL_HEARTBEAT_FD";
/// The environment variable naming the directory (the data partition's
/// root) where the agent records a factory reset request for PID 1.
pub const RESET_DIR_ENV: &str = "NUVOL_RESET_DIR";
/// The fd number the heartbeat pipe gets in the agent.
const HEARTBEAT_FD: i32 = 3;
/// A started agent has this long to send its first heartbeat (a first boot
/// on a slow stick: data growth, key generation, DHCP).
const START_GRACE: Duration = Duration::from_secs(120);
/// After this long without a heartbeat the agent counts as hung: the
/// watchdog is no longer fed.
const SILENT: Duration = Duration::from_secs(30);
/// Without a hardware watchdog (or if it did not fire), PID 1 kills an agent
/// silent this long and restarts it.
const SILENT_KILL: Duration = Duration::from_secs(90);
/// `oom_score_adj` of PID 1: never picked by the OOM killer (the kernel
/// spares init anyway; this also makes it explicit).
pub const PID1_OOM_SCORE_ADJ: i32 = -1000;
/// `oom_score_adj` of the agent: picked only after every service (+500,
/// set by nuvol-container) and any other process, but still killable so a
/// leaking agent cannot hang the box (PID 1 restarts it).
pub const AGENT_OOM_SCORE_ADJ: i32 = -900;

/// Write `adj` to `/proc/<pid>/oom_score_adj` (`pid` may be `self`).
pub fn set_oom_score_adj(pid: &str, adj: i32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
}

/// Whether the agent is alive as far as the watchdog is concerned.
/// `agent`: when the running agent started and its last heartbeat.
pub fn agent_alive(agent: Option<(Instant, Option<Instant>)>, now: Instant) -> bool {
    match agent {
        // Between restarts PID 1 itself is the one doing the work.
        None => true,
        Some((started, None)) => now.saturating_duration_since(started) < START_GRACE,
        Some((_, Some(beat))) => now.saturating_duration_since(beat) < SILENT,
    }
}

pub struct Watchdog(Option<File>);

impl Watchdog {
    const TIMEOUT_S: libc::c_int = 30;
    /// `WDIOC_SETTIMEOUT`: `_IOWR('W', 6, int)`, the same number on every word size.
    const WDIOC_SETTIMEOUT: libc::Ioctl = libc::_IOWR::<libc::c_int>(b'W' as u32, 6);
    fn open() -> Watchdog {
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/watchdog")
        else {
            return Watchdog(None);
        };
        let mut t = Self::TIMEOUT_S;
        // SAFETY: WDIOC_SETTIMEOUT reads/writes one int, which outlives the call.
        unsafe { libc::ioctl(f.as_raw_fd(), Self::WDIOC_SETTIMEOUT, &mut t) };
        say!("hardware watchdog armed ({t} s)");
        Watchdog(Some(f))
    }
    fn ping(&mut self) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(b"\0");
        }
    }
    // Never disarmed (no magic close): a shutdown that hangs in unmount or
    // a driver still ends in a reset, and the box comes back.
}

/// The agent process PID 1 runs: its pid, start time, the read end of its
/// heartbeat pipe and the time of its last heartbeat.
struct Agent {
    pid: Pid,
    started: Instant,
    beats: Option<OwnedFd>,
    last_beat: Option<Instant>,
    warned: bool,
}

struct Init<'a> {
    exe: &'a Path,
    layout: &'a Layout,
    sfd: SignalFd,
    buttons: Buttons,
    buttons_scanned: Instant,
    watchdog: Watchdog,
    agent: Option<Agent>,
    next_start: Option<Instant>,
    backoff: Backoff,
    /// The console watched for a key during the first seconds of boot.
    watch: Option<rescue::Watch>,
    /// Open rescue shells: pid and terminal.
    shells: Vec<(Pid, String)>,
    failures: FailStreak,
    agent_starts: u32,
    last_exit: String,
    /// This boot runs a slot the loader booted once (see [`crate::trial`]).
    trial: Option<crate::trial::Trial>,
    /// Why the trial must end now (a reboot into the default slot).
    end_trial: Option<String>,
}

impl Init<'_> {
    fn write_status(&self) {
        let pid = self.agent.as_ref().map(|a| a.pid.to_string());
        rescue::write_status(&format!(
            "agent: {}; starts this boot: {}, quick failures in a row: {}; last exit: {}\nrescue shells open: {}\n",
            pid.map_or("not running".into(), |p| format!("running (pid {p})")),
            self.agent_starts,
            self.failures.0,
            if self.last_exit.is_empty() { "none" } else { &self.last_exit },
            self.shells.len(),
        ));
    }

    /// Open the rescue shell on every console terminal that has none.
    fn open_rescue(&mut self, why: &str) {
        for t in rescue::console_ttys_now() {
            if !self.shells.iter().any(|(_, s)| *s == t) {
                if let Some(pid) = rescue::open(&t, why) {
                    self.shells.push((pid, t));
                    // The shell reads the console now, not PID 1.
                    self.watch = None;
                }
            }
        }
    }

    /// An agent run ended (or could not start): count it; the third quick
    /// failure in a row opens the rescue shell.
    fn agent_failed(&mut self, ran: Duration) {
        if self.failures.record(ran >= self.backoff.healthy_after) {
            match &self.trial {
                // On trial the old slot is where a human should land: back
                // to it, no rescue shell here.
                Some(t) => {
                    self.end_trial = Some(format!(
                        "slot {} was on trial and its agent failed to start 3 times in a row",
                        t.slot
                    ))
                }
                None => self
                    .open_rescue("the agent failed to start 3 times in a row; it is still retried"),
            }
        }
        self.write_status();
    }

    /// A trial that has to end: the agent failed, or it ran too long
    /// without becoming the default (not while a human's shell is open).
    fn trial_over(&mut self) -> Option<String> {
        let t = self.trial.as_mut()?;
        if !t.still_on() {
            say!("slot {} is the default now: its trial is over", t.slot);
            self.trial = None;
            return None;
        }
        if let Some(why) = self.end_trial.take() {
            return Some(why);
        }
        (t.over_time() && self.shells.is_empty()).then(|| {
            format!(
                "slot {} was on trial and did not become the default within {} minutes",
                t.slot,
                crate::trial::TRIAL_LIMIT.as_secs() / 60
            )
        })
    }

    fn start_agent(&mut self) {
        let mut cmd = Command::new(self.exe);
        cmd.arg("agent")
            .arg("--config")
            .arg(&self.layout.config)
            .arg("--state-dir")
            .arg(&self.layout.state_dir)
            .env("NUVOL_UNDER_INIT", "1")
            // Where a factory reset request goes (nuvol_reset::request).
            .env(RESET_DIR_ENV, &self.layout.data_mount);
        // The heartbeat pipe: the agent writes, PID 1 reads. Both ends are
        // close-on-exec here; the child gets the write end as fd 3.
        let pipe = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| say!("heartbeat pipe: {e}; the watchdog is fed without heartbeats"))
            .ok();
        let write_fd = pipe.as_ref().map(|(_, w)| w.as_raw_fd());
        if write_fd.is_some() {
            cmd.env(HEARTBEAT_FD_ENV, HEARTBEAT_FD.to_string());
        }
        // PID 1 blocks the signals it reads through signalfd; the agent must
        // start with none blocked or it would never see SIGTERM.
        // SAFETY: sigprocmask, dup2 and fcntl are async-signal-safe; nothing
        // else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if let Some(w) = write_fd {
                    if w == HEARTBEAT_FD {
                        if libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(w, HEARTBEAT_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The write end blocks: a full pipe (PID 1 not reading)
                    // is the agent's problem only if it writes from a
                    // blocking context, which it does not.
                    let fl = libc::fcntl(HEARTBEAT_FD, libc::F_GETFL);
                    if fl >= 0 {
                        libc::fcntl(HEARTBEAT_FD, libc::F_SETFL, fl | libc::O_NONBLOCK);
                    }
                }
                SigSet::empty()
                    .thread_set_mask()
                    .map_err(std::io::Error::from)
            });
        }
        match cmd.spawn() {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                say!("agent started (pid {pid})");
                if let Err(e) = set_oom_score_adj(&pid.to_string(), AGENT_OOM_SCORE_ADJ) {
                    say!("agent oom_score_adj {AGENT_OOM_SCORE_ADJ}: {e}");
                }
                self.agent = Some(Agent {
                    pid,
                    started: Instant::now(),
                    beats: pipe.map(|(r, _w)| r),
                    last_beat: None,
                    warned: false,
                });
                self.next_start = None;
                self.agent_starts += 1;
                self.write_status();
            }
            Err(e) => {
                let d = self.backoff.next(Duration::ZERO);
                say!("cannot start agent: {e}; retrying in {d:?}");
                self.next_start = Some(Instant::now() + d);
                self.last_exit = format!("cannot start: {e}");
                self.agent_failed(Duration::ZERO);
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => {
                    let Some(pid) = st.pid() else { continue };
                    if let Some(i) = self.shells.iter().position(|(p, _)| *p == pid) {
                        let (_, tty) = self.shells.remove(i);
                        say!("rescue shell on {tty} closed ({})", describe(&st));
                        self.write_status();
                        continue;
                    }
                    if let Some(agent) = &self.agent {
                        if pid == agent.pid {
                            let ran = agent.started.elapsed();
                            let d = self.backoff.next(ran);
                            say!(
                                "agent exited ({}) after {:.1} s; restarting in {:?}",
                                describe(&st),
                                ran.as_secs_f64(),
                                d
                            );
                            self.agent = None;
                            self.next_start = Some(Instant::now() + d);
                            self.last_exit =
                                format!("{} after {:.1} s", describe(&st), ran.as_secs_f64());
                            self.agent_failed(ran);
                        }
                    }
                }
            }
        }
    }

    /// Read pending heartbeats; note when the agent went silent.
    fn heartbeats(&mut self) {
        let shells_open = !self.shells.is_empty();
        let Some(agent) = &mut self.agent else {
            return;
        };
        if let Some(fd) = &agent.beats {
            let mut buf = [0u8; 64];
            loop {
                // SAFETY: reading into a stack buffer of the given length
                // from an fd this struct owns.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    agent.last_beat = Some(Instant::now());
                    if agent.warned {
                        say!("agent heartbeats are back");
                        agent.warned = false;
                    }
                    continue;
                }
                if n == 0 {
                    // EOF: the agent closed it or is gone; reap() sees which.
                    agent.beats = None;
                }
                break;
            }
        }
        let beat = (agent.started, agent.last_beat);
        let now = Instant::now();
        if !agent_alive(Some(beat), now) {
            let since = agent.last_beat.unwrap_or(agent.started);
            let silent = now.saturating_duration_since(since);
            if !agent.warned {
                let what = if !shells_open {
                    "the watchdog is no longer fed and resets the box"
                } else {
                    "a rescue shell is open: the watchdog stays fed, the agent is killed at 90 s"
                };
                say!(
                    "agent (pid {}) silent for {} s: {what}",
                    agent.pid,
                    silent.as_secs()
                );
                agent.warned = true;
            }
            if silent >= SILENT_KILL {
                say!("agent (pid {}) still silent; killing it", agent.pid);
                let _ = kill(agent.pid, Signal::SIGKILL);
            }
        }
    }

    fn agent_alive(&self) -> bool {
        agent_alive(
            self.agent.as_ref().map(|a| (a.started, a.last_beat)),
            Instant::now(),
        )
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
        if let Some(w) = &self.watch {
            timeout = timeout.min(w.until.saturating_duration_since(Instant::now()));
        }
        let mut halt = None;
        {
            let bfds = self.buttons.fds();
            let mut fds = vec![PollFd::new(self.sfd.as_fd_ref(), PollFlags::POLLIN)];
            fds.extend(bfds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
            if let Some(b) = self.agent.as_ref().and_then(|a| a.beats.as_ref()) {
                fds.push(PollFd::new(b.as_fd(), PollFlags::POLLIN));
            }
            if let Some(w) = &self.watch {
                fds.extend(
                    w.fds()
                        .into_iter()
                        .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
                );
            }
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
        if halt.is_none() {
            if let Some(why) = self.trial_over() {
                let default = self.trial.as_ref().map_or('?', |t| t.default);
                say!("{why}: rebooting into the default slot {default}");
                crate::trial::leave_note(&self.layout.state_dir, &why);
                halt = Some(Halt::Reboot);
            }
        }
        if let Some(w) = &mut self.watch {
            let pressed = w.pressed();
            let over = Instant::now() >= w.until;
            if pressed.is_some() || over {
                self.watch = None;
            }
            if let Some(t) = pressed {
                if let Some(pid) = rescue::open(&t, "asked for on the console") {
                    self.shells.push((pid, t));
                    self.write_status();
                }
            }
        }
        self.heartbeats();
        self.reap();
        // A human in a rescue shell is not reset under their hands: while
        // one is open the watchdog is fed and a silent agent is killed and
        // restarted instead (SILENT_KILL).
        if self.agent_alive() || !self.shells.is_empty() {
            self.watchdog.ping();
        }
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
/// turn is caught, reported, and the loop goes on. Returns what to do and
/// the (still armed) watchdog, which the shutdown keeps feeding.
pub fn main_loop(exe: &Path, layout: &Layout) -> (Halt, Watchdog) {
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
        watch: None,
        shells: Vec::new(),
        failures: FailStreak::default(),
        agent_starts: 0,
        last_exit: String::new(),
        trial: None,
        end_trial: None,
    };
    init.trial = crate::trial::Trial::detect(
        &std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        &layout.boot_mount,
    );
    if let Some(t) = &init.trial {
        say!(
            "slot {} is on trial (the default is {}): it must become the default within {} minutes",
            t.slot,
            t.default,
            crate::trial::TRIAL_LIMIT.as_secs() / 60
        );
    }
    // The agent starts first, the rescue shell only opens (or is offered)
    // beside it: nothing waits for a human.
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        init.start_agent();
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if rescue::wanted(&cmdline) {
            init.open_rescue("nuvol.rescue on the kernel command line");
        } else {
            init.watch = Some(rescue::Watch::open());
        }
    }));
    if first.is_err() {
        say!("internal error offering the rescue shell; continuing");
    }
    loop {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| init.step())) {
            Ok(Some(h)) => {
                init.watchdog.ping();
                stop_agent(&mut init);
                return (h, init.watchdog);
            }
            Ok(None) => {}
            Err(_) => {
                say!("internal error in the init loop; continuing");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Reap until `pid` (or, with `None`, every child) is gone or `grace` ran
/// out, feeding the watchdog meanwhile: PID 1 is in charge and alive here.
fn wait_gone(pid: Option<Pid>, grace: Duration, wd: &mut Watchdog) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        wd.ping();
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
    if let Some(agent) = init.agent.take() {
        let pid = agent.pid;
        say!("stopping agent (pid {pid})");
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_gone(Some(pid), init.layout.stop_grace, &mut init.watchdog) {
            say!(
                "agent did not stop within {:?}; killing it",
                init.layout.stop_grace
            );
            let _ = kill(pid, Signal::SIGKILL);
            wait_gone(Some(pid), Duration::from_secs(5), &mut init.watchdog);
        }
    }
}

/// Kill what is left, sync, unmount, and power off or reboot. Never returns.
/// The watchdog stays armed: if sync or unmount hang, it resets the box.
pub fn shutdown(layout: &Layout, halt: Halt, mut wd: Watchdog) -> ! {
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if !wait_gone(None, Duration::from_secs(3), &mut wd) {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        wait_gone(None, Duration::from_secs(2), &mut wd);
    }
    wd.ping();
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
    fn watchdog_is_fed_only_while_the_agent_beats() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(agent_alive(None, at(1000)), "between restarts PID 1 feeds");
        assert!(agent_alive(Some((t0, None)), at(60)), "start grace");
        assert!(!agent_alive(Some((t0, None)), at(121)), "never beat");
        assert!(agent_alive(Some((t0, Some(at(200)))), at(229)));
        assert!(
            !agent_alive(Some((t0, Some(at(200)))), at(230)),
            "silent 30 s"
        );
        // A clock read before the start never counts as silence.
        assert!(agent_alive(Some((at(10), None)), t0));
    }

    #[test]
    fn oom_score_adj_is_written_for_another_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id().to_string();
        // Raising needs no privilege; lowering (the agent's -900) needs
        // CAP_SYS_RESOURCE, which PID 1 has.
        set_oom_score_adj(&pid, 700).unwrap();
        let got = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.trim(), "700");
        assert!(set_oom_score_adj("self", 1001).is_err(), "out of range");
    }

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
