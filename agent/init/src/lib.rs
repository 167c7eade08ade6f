//! `nuvol init`: PID 1 of a nuvol box.
//!
//! Tiny on purpose: no async runtime, no allocation-heavy work, nothing that
//! can panic on input. It
//! 0. leaves the initramfs's rootfs for a tmpfs root (copy, move, chroot,
//!    exec itself again), so `pivot_root` works for containers;
//! 1. mounts /proc, /sys, /dev, /dev/pts, /run, /tmp, the cgroup2 hierarchy
//!    and efivarfs (read-only); sets its `oom_score_adj` to -1000 and
//!    `user.max_user_namespaces` to 0;
//! 2. finds the `nuvol-boot` partition the box booted from (named by the
//!    boot loader's `LoaderDevicePartUUID` or `nuvol.boot=PARTUUID=` on the
//!    kernel command line) and the `nuvol-data` partition on the same disk,
//!    refusing any other disk's loudly, grows data to fill the disk on
//!    first boot, mounts boot at /boot (read-only) and data at /data;
//! 3. sets the host name from `/boot/nuvol.toml`; carries out a pending
//!    factory reset (a request on data, or a `factory-reset` file on boot):
//!    wipes the data partition before the agent starts (`nuvol_reset`);
//! 4. starts `nuvol agent` (`oom_score_adj` -900; PID 1 itself -1000,
//!    services +500) and restarts it with exponential backoff when it
//!    dies, reaping every zombie meanwhile; feeds the hardware watchdog only
//!    while the agent's heartbeats arrive (a hung agent resets the box);
//! 5. on SIGTERM or SIGINT (Ctrl-Alt-Del) reboots, on SIGUSR2 or the ACPI
//!    power button powers off: agent gets SIGTERM, then SIGKILL after a grace
//!    period, then every process; sync; unmount; reboot(2). The watchdog
//!    stays armed throughout, so a shutdown that hangs still ends in a reset;
//! 6. opens a rescue shell (busybox `sh`) on the console beside all this
//!    when `nuvol.rescue` is on the kernel command line, a line is typed on
//!    the console in the first 10 s, or the agent failed to start three
//!    times in a row (`rescue`).
//!
//! A panic anywhere in the loop is caught and the loop resumes: PID 1 exiting
//! would panic the kernel.

mod evdev;
mod mounts;
mod rescue;
mod reset;
mod rootfs;
mod supervise;
pub mod trial;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use mounts::{remount_boot_at, remount_efivars};
pub use rescue::status as rescue_status;
pub use rootfs::root_is_rootfs;
pub use supervise::{Backoff, HEARTBEAT_FD_ENV, RESET_DIR_ENV};

/// Where things live on a booted box.
#[derive(Debug, Clone)]
pub struct Layout {
    pub boot_mount: PathBuf,
    pub data_mount: PathBuf,
    /// The agent's state directory (on data).
    pub state_dir: PathBuf,
    /// The provisioning file.
    pub config: PathBuf,
    /// How long to wait for the boot disk to show up (USB sticks are slow).
    pub disk_wait: Duration,
    /// Grace period between SIGTERM and SIGKILL for the agent. The agent
    /// stops its services (each with its own grace, 10 s by default, in
    /// dependency waves) before it exits, so this is well above one grace.
    pub stop_grace: Duration,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            boot_mount: PathBuf::from("/boot"),
            data_mount: PathBuf::from("/data"),
            state_dir: PathBuf::from("/data/nuvol"),
            config: PathBuf::from("/boot/nuvol.toml"),
            disk_wait: Duration::from_secs(15),
            stop_grace: Duration::from_secs(30),
        }
    }
}

/// Write one line to the console (stderr is /dev/console for PID 1).
pub fn say(msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nuvol-init: {msg}");
}

#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::say(format_args!($($t)*)) };
}

/// The sysctl that closes user namespaces to every process of the box.
pub const NO_USER_NAMESPACES: (&str, &str) = ("/proc/sys/user/max_user_namespaces", "0");

/// The hard `RLIMIT_NOFILE` PID 1 passes on (the kernel starts it at 4096):
/// the agent raises its soft limit up to this, and sizes its connection
/// budget from it (docs/api.md, "Connections").
pub const FD_CEILING: libc::rlim_t = 65536;

/// Raise the hard fd limit to [`FD_CEILING`], keeping the soft one (1024):
/// every process of the box inherits both; only the agent raises its soft
/// limit.
fn raise_fd_ceiling() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_max >= FD_CEILING
    {
        return;
    }
    lim.rlim_max = FD_CEILING;
    // SAFETY: setrlimit reads the rlimit we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        say!("RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    }
}

/// What to do when the box stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

/// Run as PID 1. Never returns.
pub fn run(self_exe: &Path) -> ! {
    let layout = Layout::default();
    rootfs::leave_rootfs();
    mounts::early();
    if let Err(e) = supervise::set_oom_score_adj("self", supervise::PID1_OOM_SCORE_ADJ) {
        say!("oom_score_adj: {e}");
    }
    // Nothing on a box uses user namespaces; a compromised service must not
    // make one (the seccomp filter refuses it too, this is the second lock).
    if let Err(e) = std::fs::write(NO_USER_NAMESPACES.0, NO_USER_NAMESPACES.1) {
        say!("{}: {e}", NO_USER_NAMESPACES.0);
    }
    raise_fd_ceiling();
    let data_ok = mounts::disks(&layout);
    let loaded = nuvol_config::load_or_default(&layout.config);
    if let Err(e) = nix::unistd::sethostname(loaded.config.hostname()) {
        say!("sethostname: {e}");
    }
    // A pending factory reset wipes the data partition before the agent
    // sees it (docs/boot.md, "Factory reset").
    reset::at_boot(&layout, data_ok, loaded.config.debug.test_hooks);
    if !data_ok {
        say!("data partition unavailable: state is kept in memory only until it is fixed");
        let _ = std::fs::create_dir_all(&layout.state_dir);
    }
    let (halt, watchdog) = supervise::main_loop(self_exe, &layout);
    supervise::shutdown(&layout, halt, watchdog)
}
