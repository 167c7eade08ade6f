//! A trial boot (docs/boot.md, "Update"): the slot running is not the
//! loader's default, so the loader booted it once (an OS update's try, or
//! `nuvol rescue slot try`). The agent makes it the default once it ran
//! healthy. PID 1 is the backstop for when the agent cannot: the agent's
//! third quick failure in a row, or [`TRIAL_LIMIT`] without the slot
//! becoming the default, reboots the box, and the loader boots the default
//! slot (the rollback). PID 1 leaves a note of why on the data partition;
//! the agent of the old slot puts it in the update's record.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nuvol_update::slots::{slot_from_cmdline, BootFs};

/// Longest a trial may run without becoming the default (the agent's own
/// limit is its settling time plus 10 minutes unhealthy).
pub const TRIAL_LIMIT: Duration = Duration::from_secs(20 * 60);
/// Why PID 1 ended a trial, for the agent of the old slot.
pub const NOTE_FILE: &str = "update-trial-note.txt";
/// How often the default slot is read again.
const RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Trial {
    pub slot: char,
    pub default: char,
    boot: PathBuf,
    since: Instant,
    checked: Instant,
}

impl Trial {
    /// A trial when the running slot (`nuvol.slot=` on `cmdline`) is not
    /// the default of the boot partition at `boot_root`.
    pub fn detect(cmdline: &str, boot_root: &Path) -> Option<Trial> {
        let slot = slot_from_cmdline(cmdline)?;
        let default = BootFs::new(boot_root).default_slot().ok()?;
        (slot != default).then(|| Trial {
            slot,
            default,
            boot: boot_root.to_path_buf(),
            since: Instant::now(),
            checked: Instant::now(),
        })
    }

    /// Whether the trial still runs: false once the running slot became
    /// the default (marked good). Reads the boot partition at most every
    /// [`RECHECK`].
    pub fn still_on(&mut self) -> bool {
        if self.checked.elapsed() < RECHECK {
            return true;
        }
        self.checked = Instant::now();
        match BootFs::new(&self.boot).default_slot() {
            Ok(d) => {
                self.default = d;
                d != self.slot
            }
            Err(_) => true,
        }
    }

    /// Whether it ran past [`TRIAL_LIMIT`].
    pub fn over_time(&self) -> bool {
        self.since.elapsed() >= TRIAL_LIMIT
    }
}

/// Record why a trial ended (written durably before the reboot).
pub fn leave_note(state_dir: &Path, why: &str) {
    let _ = nuvol_durable::write_atomic(
        &state_dir.join(NOTE_FILE),
        why.as_bytes(),
        nuvol_durable::Mode::Public,
    );
}

/// The note PID 1 left, removed once read.
pub fn take_note(state_dir: &Path) -> Option<String> {
    let p = state_dir.join(NOTE_FILE);
    let text = std::fs::read_to_string(&p).ok()?;
    let _ = std::fs::remove_file(&p);
    let t: String = text.trim().chars().take(512).collect();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_is_a_slot_that_is_not_the_default() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("syslinux")).unwrap();
        std::fs::write(
            d.path().join("syslinux/syslinux.cfg"),
            "DEFAULT nuvol-A\nLABEL nuvol-A\nLABEL nuvol-B\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("A")).unwrap();
        std::fs::create_dir_all(d.path().join("B")).unwrap();
        let t = Trial::detect("console=ttyS0 nuvol.slot=B", d.path());
        let t = t.expect("B runs, A is the default");
        assert_eq!((t.slot, t.default), ('B', 'A'));
        assert!(Trial::detect("nuvol.slot=A", d.path()).is_none());
        assert!(Trial::detect("console=ttyS0", d.path()).is_none());
        leave_note(d.path(), "its agent failed 3 times\n");
        assert_eq!(
            take_note(d.path()).as_deref(),
            Some("its agent failed 3 times")
        );
        assert!(take_note(d.path()).is_none());
    }
}
