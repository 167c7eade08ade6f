//! `nuvol init`: PID 1 of a nuvol box.
//!
//! Tiny on purpose: no async runtime, no allocation-heavy work, nothing that
//! can panic on input. It
//! 1. mounts /proc, /sys, /dev, /dev/pts, /run, /tmp and the cgroup2 hierarchy;
//! 2. finds the `nuvol-boot` and `nuvol-data` partitions by GPT name, grows
//!    data to fill the disk on first boot, mounts boot at /boot (read-only)
//!    and data at /data;
//! 3. sets the host name from `/boot/nuvol.toml`;
//! 4. starts `nuvol agent` and restarts it with exponential backoff when it
//!    dies, reaping every zombie meanwhile;
//! 5. on SIGTERM or SIGINT (Ctrl-Alt-Del) reboots, on SIGUSR2 or the ACPI
//!    power button powers off: agent gets SIGTERM, then SIGKILL after a grace
//!    period, then every process; sync; unmount; reboot(2).
//!
//! A panic anywhere in the loop is caught and the loop resumes: PID 1 exiting
//! would panic the kernel.

mod evdev;
mod mounts;
mod supervise;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use supervise::Backoff;

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
    /// Grace period between SIGTERM and SIGKILL for the agent.
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
            stop_grace: Duration::from_secs(10),
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

/// What to do when the box stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

/// Run as PID 1. Never returns.
pub fn run(self_exe: &Path) -> ! {
    let layout = Layout::default();
    mounts::early();
    let data_ok = mounts::disks(&layout);
    let loaded = nuvol_config::load_or_default(&layout.config);
    if let Err(e) = nix::unistd::sethostname(loaded.config.hostname()) {
        say!("sethostname: {e}");
    }
    if !data_ok {
        say!("data partition unavailable: state is kept in memory only until it is fixed");
        let _ = std::fs::create_dir_all(&layout.state_dir);
    }
    let halt = supervise::main_loop(self_exe, &layout);
    supervise::shutdown(&layout, halt)
}
