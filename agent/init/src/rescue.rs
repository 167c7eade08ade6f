//! The rescue shell: Debian's busybox `sh` (in the initramfs) on a console
//! terminal, as a child of PID 1 in its own session, beside the normal
//! boot (docs/boot.md, "Rescue shell"). Opened by `nuvol.rescue` on the
//! kernel command line, a line typed on the console in the first seconds,
//! or the agent failing to start three times in a row.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::{say, Layout};

/// The shell in the initramfs.
pub const BUSYBOX: &str = "/bin/busybox";
/// How long PID 1 offers the shell on the console at boot (the agent is
/// started meanwhile, nothing waits for it).
pub const KEY_WINDOW: Duration = Duration::from_secs(10);
/// Quick agent deaths in a row (runs shorter than the backoff's healthy
/// run) that open the shell.
pub const AFTER_FAILURES: u32 = 3;
/// What PID 1 knows about the agent, for `nuvol rescue`.
pub const STATUS_FILE: &str = "/run/nuvol-init.status";

/// What the shell offers; printed when it opens and by `nuvol rescue`.
pub const HELP: &str = "  nuvol rescue         status: slot, boot count, agent, factory reset
  dmesg | tail         kernel log (the agent and PID 1 log to the console only)
  ls /data/nuvol       the agent's state; a service's log:
                       /data/nuvol/services/NAME/logs/current.log
  reboot               reboot in order (busybox's reboot sends PID 1 SIGTERM, as
                       kill -TERM 1 does: agent and services stopped, disks synced)
  poweroff             power off (SIGUSR2 to PID 1, as kill -USR2 1)
  touch /data/factory-reset && sync && reboot
                       factory reset (the data partition is wiped at the next boot)
  exit                 close this shell (not reopened unless asked again)
  nuvol rescue slot default A|B
                       boot that slot from now on, no try armed (marks an update
                       on trial there good, or gives up the other slot's update)
  nuvol rescue slot try A|B
                       boot that slot once, at the next boot only
  nuvol rescue slot disarm
                       remove an armed try
";

/// Whether the kernel command line asks for the shell: `nuvol.rescue`
/// (or `nuvol.rescue=1|yes|on|true`).
pub fn wanted(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| match w.strip_prefix("nuvol.rescue") {
            Some("") => true,
            Some(v) => matches!(v.strip_prefix('='), Some("1" | "yes" | "on" | "true")),
            None => false,
        })
}

/// The value of `key=` on the kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Counts quick agent deaths in a row.
#[derive(Debug, Default)]
pub struct FailStreak(pub u32);

impl FailStreak {
    /// Record one agent run (`healthy`: it lasted long enough to count as
    /// a good run). True when this makes [`AFTER_FAILURES`] failures in a
    /// row; the count then starts again, so three more open it again.
    pub fn record(&mut self, healthy: bool) -> bool {
        if healthy {
            self.0 = 0;
            return false;
        }
        self.0 += 1;
        if self.0 >= AFTER_FAILURES {
            self.0 = 0;
            return true;
        }
        false
    }
}

/// The console's terminals from `/sys/class/tty/console/active`; `tty0`
/// (the foreground virtual terminal) is `tty1` at boot. ttyS0 if none.
pub fn console_ttys(active: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for n in active.split_whitespace() {
        let n = if n == "tty0" { "tty1" } else { n };
        if !v.iter().any(|x| x == n) && n.bytes().all(|b| b.is_ascii_alphanumeric()) {
            v.push(n.to_string());
        }
    }
    if v.is_empty() {
        v.push("ttyS0".into());
    }
    v
}

/// The console's terminals on this box now.
pub fn console_ttys_now() -> Vec<String> {
    console_ttys(&std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default())
}

/// The console terminals watched for a line during [`KEY_WINDOW`].
pub struct Watch {
    ttys: Vec<(String, File)>,
    pub until: Instant,
}

impl Watch {
    pub fn open() -> Watch {
        let mut v = Vec::new();
        for t in console_ttys_now() {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(format!("/dev/{t}"));
            if let Ok(mut f) = f {
                let secs = KEY_WINDOW.as_secs();
                let _ = writeln!(
                    f,
                    "nuvol-init: press Enter within {secs} s for a rescue shell on {t} (the boot goes on)"
                );
                v.push((t, f));
            }
        }
        Watch {
            ttys: v,
            until: Instant::now() + KEY_WINDOW,
        }
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.ttys.iter().map(|(_, f)| f.as_fd()).collect()
    }

    /// The terminal on which something was typed (a line: the terminals
    /// are in canonical mode), if any; what was typed is consumed. A
    /// terminal that reads as hung up or failing is no longer watched (it
    /// would wake the loop at once, again and again).
    pub fn pressed(&mut self) -> Option<String> {
        let mut buf = [0u8; 256];
        let mut hit = None;
        self.ttys.retain_mut(|(t, f)| match f.read(&mut buf) {
            Ok(n) if n > 0 => {
                hit.get_or_insert_with(|| t.clone());
                true
            }
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(_) => false,
        });
        hit
    }
}

/// Open the shell on `/dev/<tty>`: its own session, the terminal as its
/// controlling terminal and stdio, no signals blocked, a short banner.
pub fn open(tty: &str, why: &str) -> Option<Pid> {
    if !std::path::Path::new(BUSYBOX).exists() {
        say!("rescue shell: no {BUSYBOX} in this image");
        return None;
    }
    let path = CString::new(format!("/dev/{tty}")).ok()?;
    let banner = format!(
        "\n=== nuvol rescue shell on {tty} ({why}) ===\n\
         The box goes on booting and supervising beside this shell.\n{HELP}\n"
    );
    let mut cmd = Command::new(BUSYBOX);
    cmd.arg("sh")
        .env_clear()
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/root")
        .env(
            "TERM",
            if tty.starts_with("ttyS") {
                "vt100"
            } else {
                "linux"
            },
        )
        .env("PS1", "rescue# ")
        .current_dir("/");
    // SAFETY: only async-signal-safe calls (sigprocmask, setsid, open,
    // ioctl, dup2, close, write) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::ioctl(fd, libc::TIOCSCTTY, 1);
            for to in 0..3 {
                libc::dup2(fd, to);
            }
            if fd > 2 {
                libc::close(fd);
            }
            libc::write(1, banner.as_ptr().cast(), banner.len());
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => {
            let pid = Pid::from_raw(child.id() as i32);
            say!("rescue shell opened on {tty} (pid {pid}): {why}");
            // Not PID 1's -1000: what a human runs there is killable.
            let _ = crate::supervise::set_oom_score_adj(&pid.to_string(), 0);
            Some(pid)
        }
        Err(e) => {
            say!("rescue shell on {tty}: {e}");
            None
        }
    }
}

/// Record what `nuvol rescue` shows about the agent.
pub fn write_status(text: &str) {
    let _ = std::fs::write(STATUS_FILE, text);
}

/// `nuvol rescue`: the box's state as PID 1 and the disks know it, and the
/// commands; works without the agent and without the network.
pub fn status() -> String {
    let layout = Layout::default();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let mut s = format!(
        "slot: {} (kernel command line nuvol.slot=)\n",
        cmdline_value(&cmdline, "nuvol.slot").unwrap_or("unknown")
    );
    let boots = read(&layout.state_dir.join("boot-count"));
    s += &format!(
        "boot count: {}\n",
        boots.as_deref().map_or("unknown", str::trim)
    );
    s += &read(std::path::Path::new(STATUS_FILE)).unwrap_or_else(|| "agent: unknown\n".into());
    let reset = if layout.data_mount.join("factory-reset").exists() {
        "requested (carried out at the next boot)"
    } else if layout.data_mount.join("factory-reset.failed").exists() {
        "GAVE UP (see /data/factory-reset.failed)"
    } else {
        "none pending"
    };
    s += &format!(
        "factory reset: {reset}\nkernel command line: {}",
        cmdline.trim()
    );
    s += &format!("\n\n{HELP}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_flag_is_parsed_strictly() {
        let base = "console=tty0 console=ttyS0,115200n8 nuvol.slot=A";
        assert!(!wanted(base));
        assert!(wanted(&format!("{base} nuvol.rescue")));
        assert!(wanted("nuvol.rescue=1 quiet"));
        assert!(wanted("nuvol.rescue=yes"));
        assert!(!wanted("nuvol.rescue=0"));
        assert!(!wanted("nuvol.rescuex nuvol.rescue=no"));
        assert!(!wanted("xnuvol.rescue"));
        assert_eq!(cmdline_value(base, "nuvol.slot"), Some("A"));
        assert_eq!(cmdline_value("nuvol.slotx=B", "nuvol.slot"), None);
        assert_eq!(cmdline_value(base, "nuvol.boot"), None);
    }

    #[test]
    fn three_quick_failures_in_a_row_open_the_shell() {
        let mut f = FailStreak::default();
        assert!(!f.record(false));
        assert!(!f.record(false));
        assert!(!f.record(true), "a healthy run starts the count again");
        assert!(!f.record(false));
        assert!(!f.record(false));
        assert!(f.record(false), "third in a row");
        assert!(!f.record(false), "counted again from zero");
        assert!(!f.record(false));
        assert!(f.record(false));
    }

    #[test]
    fn console_terminals() {
        assert_eq!(console_ttys("tty0 ttyS0\n"), ["tty1", "ttyS0"]);
        assert_eq!(console_ttys("ttyS0"), ["ttyS0"]);
        assert_eq!(console_ttys(""), ["ttyS0"]);
        assert_eq!(console_ttys("ttyS0 ../x ttyS0"), ["ttyS0"]);
    }
}
