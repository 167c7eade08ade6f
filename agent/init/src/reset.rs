//! The factory reset's boot step (`nuvol_reset::at_boot`) with PID 1's
//! means: the console, the boot partition remounted writable for the
//! moment the trigger file is removed, `sync`, the test hook's sleep.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{mounts, say, Layout};

struct Pid1<'a> {
    layout: &'a Layout,
}

impl nuvol_reset::Env for Pid1<'_> {
    fn say(&mut self, msg: &str) {
        say!("{msg}");
    }
    fn boot_writable(&mut self, rw: bool) -> io::Result<()> {
        mounts::remount_boot(self.layout, rw)
    }
    fn sync(&mut self) {
        nix::unistd::sync();
    }
    fn pause(&mut self, secs: u32) -> bool {
        std::thread::sleep(Duration::from_secs(u64::from(secs)));
        true
    }
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Carry out a pending factory reset before the agent starts. Never
/// panics out (PID 1 must not die): a panic is reported and the boot goes on.
pub fn at_boot(layout: &Layout, data_ok: bool, test_hooks: bool) {
    let run = || {
        let b = nuvol_reset::Boot {
            data: data_ok.then_some(layout.data_mount.as_path()),
            boot: Some(layout.boot_mount.as_path()),
            test_hooks,
        };
        nuvol_reset::at_boot(&b, &mut Pid1 { layout })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(nuvol_reset::Outcome::Wiped) => {
            if let Err(e) = std::fs::create_dir_all(&layout.state_dir) {
                say!("create {}: {e}", layout.state_dir.display());
            }
        }
        Ok(_) => {}
        Err(_) => say!("factory reset: internal error; booting on"),
    }
}
