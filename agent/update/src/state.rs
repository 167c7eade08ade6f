//! The update's record on the data partition (`<state-dir>/update.json`)
//! and the brown-out policy the agent applies at each start.
//!
//! After an update is written and its try armed the record says
//! `pending`, with the boot it was armed in. At the next start of the
//! agent:
//!
//! - running in the tried slot: the trial runs; after the settling time
//!   and the health checks the slot becomes the default (`good`);
//! - running in the old slot, same boot as armed: nothing happened yet
//!   (the agent was only restarted), wait for the reboot;
//! - running in the old slot, a later boot: the tried slot never reached
//!   `good` (a reset, panic or power cut during the trial; the loader
//!   fell back to the default). The reason is recorded and the try armed
//!   again, up to [`MAX_TRIES`] tries in all; then the update is given up
//!   (`failed`, "update X rolled back after 3 tries").
//!
//! **Versions.** The record outlives the OS that wrote it: after an update
//! the new agent reads the old one's record, after a rollback the old
//! agent reads the new one's. So fields are only ever added, with a
//! default when missing (a record of an older agent reads as before), and
//! fields this agent does not know are kept as they are when it rewrites
//! the record (`extra`), with the record's `format` number: a newer agent
//! finds its fields again after the box went back and forth.

use std::path::Path;

use nuvol_durable::json::{self, Entry, ReadError};
use serde::{Deserialize, Serialize};

/// Tries of one update, the first included.
pub const MAX_TRIES: u32 = 3;
/// The record's file name in the state directory.
pub const STATE_FILE: &str = "update.json";
/// The record format this agent writes (records without one are 1).
pub const RECORD_FORMAT: u32 = 1;

fn first_format() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Written to the inactive slot, a try armed or running.
    Pending,
    /// The tried slot passed its checks and is the default.
    Good,
    /// Given up after [`MAX_TRIES`]; the old slot stays the default.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The format it was written in (see the module's "Versions").
    #[serde(default = "first_format")]
    pub format: u32,
    pub phase: Phase,
    /// The update's OS version.
    pub version: String,
    /// The slot it was written to.
    pub slot: String,
    /// The slot and version it was applied from.
    pub from_slot: String,
    pub from_version: String,
    /// Tries armed so far.
    pub tries: u32,
    /// The boot (kernel boot id) the current try was armed in.
    pub armed_boot: String,
    /// Why the last try did not reach `good`, or why it was given up.
    #[serde(default)]
    pub reason: Option<String>,
    /// The signer's key id.
    #[serde(default)]
    pub key_id: String,
    /// The services running when the update was applied: the trial is
    /// healthy only once they run again.
    #[serde(default)]
    pub services: Vec<String>,
    /// Fields of a newer agent's format, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The services of `wanted` not in `running`, for the trial's health check.
pub fn missing_services(wanted: &[String], running: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| !running.contains(w))
        .cloned()
        .collect()
}

/// What the agent does at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// No update in flight.
    Idle,
    /// Running the tried slot: check health, then mark good.
    Trial,
    /// Armed in this very boot: the reboot has not happened yet.
    Waiting,
    /// The try failed; arm it again (the record says how many so far).
    Rearm,
    /// The last try failed: given up.
    GaveUp,
}

/// Decide (and update the record for) this start.
pub fn at_start(rec: &mut Record, running_slot: char, boot_id: &str) -> Start {
    if rec.phase != Phase::Pending {
        return Start::Idle;
    }
    if rec.slot.starts_with(running_slot) {
        return Start::Trial;
    }
    if rec.armed_boot == boot_id {
        return Start::Waiting;
    }
    let why = format!(
        "try {} of {MAX_TRIES}: slot {} never reached good (a reset, panic or power cut during its trial); the box came back in slot {running_slot}",
        rec.tries, rec.slot
    );
    if rec.tries >= MAX_TRIES {
        rec.phase = Phase::Failed;
        rec.reason = Some(format!(
            "update {} rolled back after {MAX_TRIES} tries; last: {why}",
            rec.version
        ));
        Start::GaveUp
    } else {
        rec.tries += 1;
        rec.armed_boot = boot_id.to_string();
        rec.reason = Some(why);
        Start::Rearm
    }
}

/// The update record; `None` when there is none. One that cannot be read
/// is set aside as `update.json.bad` (said on the console once) rather
/// than overwritten by the next update.
pub fn load(path: &Path) -> Option<Record> {
    match nuvol_durable::json::read(path, 64 * 1024) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nuvol: update record: {e}");
            None
        }
    }
}

pub fn save(path: &Path, rec: &Record) -> std::io::Result<()> {
    let b = serde_json::to_vec_pretty(rec).map_err(std::io::Error::other)?;
    nuvol_durable::write_atomic(path, &b, nuvol_durable::Mode::Public)
}

/// What became of an update file on the boot partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootFile {
    pub name: String,
    /// Empty when the file was refused by its length alone, unread.
    pub sha256: String,
    /// `applied`, or the refusal's code.
    pub outcome: String,
    pub message: String,
    /// The file's length, when it was refused by it alone without being
    /// read (`update_too_big`, `sha256` empty): such a file is known by
    /// its name and this length. Absent otherwise, and in the entries of
    /// older agents (which skip it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// The format of the boot files' entries this agent writes.
///
/// Their file (`update-files.json`) stays a bare JSON array, each entry
/// with its `format` and a newer agent's fields: agents before formats
/// read exactly an array of [`BootFile`] (anything else made them forget
/// every file, and look at each again), and skip fields they do not know in
/// an entry.
pub const BOOT_FILES_FORMAT: u32 = 1;
/// Largest boot files' file read.
const BOOT_FILES_MAX: u64 = 1 << 20;

/// The boot files handled so far, oldest first: none without the file. One
/// that cannot be read is moved aside (`NAME.bad`; the error says so).
pub fn load_boot_files(path: &Path) -> Result<Vec<Entry<BootFile>>, ReadError> {
    Ok(json::read(path, BOOT_FILES_MAX)?.unwrap_or_default())
}

pub fn save_boot_files(path: &Path, files: &[Entry<BootFile>]) -> std::io::Result<()> {
    json::write(path, files, nuvol_durable::Mode::Public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Record {
        Record {
            format: RECORD_FORMAT,
            extra: Default::default(),
            phase: Phase::Pending,
            version: "0.2.0".into(),
            slot: "B".into(),
            from_slot: "A".into(),
            from_version: "0.1.0".into(),
            tries: 1,
            armed_boot: "boot-1".into(),
            reason: None,
            key_id: "k".into(),
            services: vec!["web".into()],
        }
    }

    #[test]
    fn services_that_ran_before_must_run_again() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(missing_services(&s(&["web", "db"]), &s(&["db", "web", "new"])).is_empty());
        assert_eq!(
            missing_services(&s(&["web", "db"]), &s(&["db"])),
            s(&["web"])
        );
        assert!(missing_services(&[], &[]).is_empty());
    }

    #[test]
    fn trial_waiting_and_three_tries_then_given_up() {
        let mut r = pending();
        assert_eq!(at_start(&mut r, 'A', "boot-1"), Start::Waiting);
        assert_eq!(at_start(&mut r, 'B', "boot-2"), Start::Trial);
        assert_eq!(r.tries, 1);
        assert_eq!(at_start(&mut r, 'A', "boot-3"), Start::Rearm);
        assert_eq!(r.tries, 2);
        assert_eq!(r.armed_boot, "boot-3");
        assert!(r.reason.as_deref().unwrap().contains("try 1 of 3"));
        // An agent restart in the same boot does not count.
        assert_eq!(at_start(&mut r, 'A', "boot-3"), Start::Waiting);
        assert_eq!(at_start(&mut r, 'A', "boot-4"), Start::Rearm);
        assert_eq!(r.tries, 3);
        assert_eq!(at_start(&mut r, 'A', "boot-5"), Start::GaveUp);
        assert_eq!(r.phase, Phase::Failed);
        assert!(r
            .reason
            .as_deref()
            .unwrap()
            .starts_with("update 0.2.0 rolled back after 3 tries"));
        assert_eq!(at_start(&mut r, 'A', "boot-6"), Start::Idle);
    }

    #[test]
    fn record_round_trips_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STATE_FILE);
        assert!(load(&p).is_none());
        save(&p, &pending()).unwrap();
        assert_eq!(load(&p).unwrap(), pending());
        std::fs::write(&p, b"{garbage").unwrap();
        assert!(load(&p).is_none());
    }

    #[test]
    fn an_unreadable_record_is_set_aside_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("nuvol-state-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("update.json");
        std::fs::write(&p, b"{\"phase\": \"pend").unwrap();
        assert!(load(&p).is_none());
        assert!(!p.exists());
        let bad = std::fs::read(dir.join("update.json.bad")).unwrap();
        assert_eq!(bad, b"{\"phase\": \"pend");
        assert!(load(&p).is_none(), "no record now, and no error");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_of_older_and_newer_agents_are_read_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(STATE_FILE);
        // Update: the first agents wrote no format, key_id nor services.
        std::fs::write(
            &p,
            br#"{"phase": "pending", "version": "0.2.0", "slot": "B", "from_slot": "A",
                "from_version": "0.1.0", "tries": 1, "armed_boot": "boot-1", "reason": null}"#,
        )
        .unwrap();
        let r = load(&p).unwrap();
        assert_eq!((r.format, r.tries, r.key_id.as_str()), (1, 1, ""));
        assert!(r.services.is_empty() && r.extra.is_empty());
        // Rollback: a newer agent's record, with fields this one does not
        // know, is read, changed and written back with them intact.
        std::fs::write(
            &p,
            br#"{"format": 2, "phase": "pending", "version": "0.3.0", "slot": "B",
                "from_slot": "A", "from_version": "0.2.0", "tries": 2, "armed_boot": "b",
                "reason": null, "key_id": "k", "services": ["web"],
                "health": {"checks": ["etcd"]}, "channel": "stable"}"#,
        )
        .unwrap();
        let mut r = load(&p).unwrap();
        assert_eq!(r.format, 2);
        assert_eq!(at_start(&mut r, 'A', "c"), Start::Rearm);
        save(&p, &r).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw["format"], 2);
        assert_eq!(raw["tries"], 3);
        assert_eq!(raw["health"]["checks"][0], "etcd");
        assert_eq!(raw["channel"], "stable");
    }

    fn boot_file(name: &str) -> BootFile {
        BootFile {
            name: name.into(),
            sha256: format!("sha-{name}"),
            outcome: "applied".into(),
            message: format!("update/{name}: written"),
            size: None,
        }
    }

    /// An entry as the agents released before `size` read it.
    #[derive(Debug, PartialEq, Deserialize)]
    struct ReleasedBootFile {
        name: String,
        sha256: String,
        outcome: String,
        message: String,
    }

    #[test]
    fn boot_files_of_older_and_newer_agents_are_read_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("update-files.json");
        assert!(load_boot_files(&p).unwrap().is_empty());
        // Update: an older agent's list, without formats.
        std::fs::write(
            &p,
            br#"[{"name": "a.nvu", "sha256": "sha-a.nvu", "outcome": "applied",
                  "message": "update/a.nvu: written"}]"#,
        )
        .unwrap();
        let old = load_boot_files(&p).unwrap();
        assert_eq!(old, [Entry::new(1, boot_file("a.nvu"))]);
        // Rollback: a newer agent's entry, format 2 and a field this one
        // does not know, is read and written back with them.
        std::fs::write(
            &p,
            br#"[{"name": "a.nvu", "sha256": "sha-a.nvu", "outcome": "applied",
                  "message": "update/a.nvu: written"},
                 {"format": 2, "name": "b.nvu", "sha256": "sha-b.nvu", "outcome": "bad_signature",
                  "message": "update/b.nvu refused", "signer": "k2"}]"#,
        )
        .unwrap();
        let mut files = load_boot_files(&p).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            (files[1].format, files[1].value.outcome.as_str()),
            (2, "bad_signature")
        );
        files.push(Entry::new(BOOT_FILES_FORMAT, boot_file("c.nvu")));
        save_boot_files(&p, &files).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(raw[0]["format"], 1);
        assert_eq!(raw[1]["format"], 2);
        assert_eq!(raw[1]["signer"], "k2");
        assert_eq!(raw[2]["sha256"], "sha-c.nvu");
        // Still what the agents before formats read.
        let released: Vec<ReleasedBootFile> = serde_json::from_value(raw).unwrap();
        assert_eq!(released[2].sha256, "sha-c.nvu");
        assert_eq!(released[1].sha256, "sha-b.nvu");
    }

    #[test]
    fn a_file_refused_by_its_length_is_recorded_for_every_agent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("update-files.json");
        let big = BootFile {
            name: "big.nvu".into(),
            sha256: String::new(),
            outcome: "update_too_big".into(),
            message: "update/big.nvu refused: too big".into(),
            size: Some(1 << 40),
        };
        let files = [
            Entry::new(BOOT_FILES_FORMAT, boot_file("a.nvu")),
            Entry::new(BOOT_FILES_FORMAT, big.clone()),
        ];
        save_boot_files(&p, &files).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        // No `size` where the file was hashed.
        assert!(raw[0].get("size").is_none(), "{raw}");
        assert_eq!(raw[1]["size"], 1u64 << 40);
        assert_eq!(load_boot_files(&p).unwrap()[1].value, big);
        // The released agents read it (an empty hash matches no file).
        let released: Vec<ReleasedBootFile> = serde_json::from_value(raw).unwrap();
        assert_eq!(released[1].sha256, "");
        assert_eq!(released[1].outcome, "update_too_big");
    }

    #[test]
    fn unreadable_boot_files_are_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("update-files.json");
        std::fs::write(&p, b"[{\"name\": 3}]").unwrap();
        let e = load_boot_files(&p).unwrap_err().to_string();
        assert!(
            e.contains("update-files.json: cannot be read (invalid type"),
            "{e}"
        );
        assert!(load_boot_files(&p).unwrap().is_empty());
        assert_eq!(
            std::fs::read(d.path().join("update-files.json.bad")).unwrap(),
            b"[{\"name\": 3}]"
        );
    }
}
