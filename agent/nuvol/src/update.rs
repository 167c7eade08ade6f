//! The agent's side of an OS update (docs/boot.md, "Update"): apply an
//! uploaded artefact to the inactive slot and arm a one-shot try; at
//! start, run the brown-out policy (`nuvol_update::state`) and, in a tried
//! slot, mark it good once it ran healthy for the settling time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nuvol_bundle::PublicKey;
use nuvol_durable::json::Entry;
use nuvol_update::artefact::{self, Policy, Version};
use nuvol_update::slots::{self, BootFs};
use nuvol_update::state::{self, BootFile, Phase, Record, Start, MAX_TRIES};
use nuvol_update::Refusal;
use serde_json::json;

/// Where a human drops an update from a laptop: `update/*.nvu` on the
/// boot partition.
pub const BOOT_DIR: &str = "update";
/// The boot partition's update files already handled (by SHA-256).
const BOOT_FILES_STATE: &str = "update-files.json";
/// Files looked at per boot, and outcomes remembered.
const MAX_BOOT_FILES: usize = 8;
/// Directory entries read from such a folder at most (a stranger's stick
/// may hold a folder of a million names).
const MAX_DIR_ENTRIES: usize = 1024;
const MAX_REMEMBERED: usize = 32;

pub struct Updater {
    boot: BootFs,
    state_path: PathBuf,
    keys: Vec<PublicKey>,
    running: Option<char>,
    under_init: bool,
    pub settle: Duration,
    /// How long a trial may stay unhealthy after settling before the agent
    /// reboots the box (the loader then boots the default slot: a
    /// rollback). 10 minutes; a test hook shortens it.
    pub unhealthy: Duration,
    lock: Mutex<()>,
    pub upload_dir: PathBuf,
    /// SHA-256 of the offered artefact, by (length, mtime).
    offer_sha: Mutex<Option<(u64, std::time::SystemTime, String)>>,
    /// `[update] policy` and what its last look found.
    pub policy: crate::update_policy::Settings,
    look: Mutex<Option<crate::update_policy::Look>>,
}

/// The artefact this box offers its peers: the one it runs, kept on the
/// data partition once its slot was marked good (docs/boot.md, "Update").
const OFFER_FILE: &str = "offer.nvu";
/// The applied artefact while its slot is on trial.
const PENDING_FILE: &str = "pending.nvu";

/// What [`Updater::apply_dir`] did with a folder of update files.
#[derive(Debug, Default)]
pub struct DirOutcome {
    /// The version written to the inactive slot.
    pub applied: Option<String>,
    /// A file was put off because this boot is on trial.
    pub busy: bool,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Updater {
    pub fn new(
        cfg: &nuvol_config::Config,
        config_path: &Path,
        state_dir: &Path,
        under_init: bool,
    ) -> Updater {
        let boot_root = config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("/boot"));
        let mut keys = Vec::new();
        for k in &cfg.update.trusted_keys {
            match PublicKey::from_base64(k) {
                Ok(p) => keys.push(p),
                Err(e) => {
                    tracing::error!("[update] trusted_keys: {e}");
                    eprintln!("nuvol: [update] trusted_keys: {k:?}: {e}");
                }
            }
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        // Booted by UEFI: systemd-boot's one-shot variable arms the try.
        let mut boot = if under_init && Path::new("/sys/firmware/efi").is_dir() {
            BootFs::uefi(boot_root, Path::new(nuvol_update::efivar::EFIVARS))
        } else {
            BootFs::new(boot_root)
        };
        boot.pause = cfg.debug.update_step_pause();
        Updater {
            boot,
            state_path: state_dir.join(state::STATE_FILE),
            keys,
            running: slots::slot_from_cmdline(&cmdline),
            under_init,
            settle: Duration::from_secs(u64::from(cfg.debug.update_settle_secs())),
            unhealthy: cfg.debug.update_unhealthy(),
            lock: Mutex::new(()),
            upload_dir: state_dir.join("update-uploads"),
            offer_sha: Mutex::new(None),
            policy: crate::update_policy::Settings::from_config(cfg),
            look: Mutex::new(None),
        }
    }

    /// Whether this box can update itself (booted from a slot under init).
    pub fn can_update(&self) -> bool {
        self.available().is_some()
    }

    /// The update record's file.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// Record the policy's last look.
    pub fn set_look(&self, look: crate::update_policy::Look) {
        *self.look.lock().unwrap_or_else(|p| p.into_inner()) = Some(look);
    }

    fn look(&self) -> Option<crate::update_policy::Look> {
        self.look.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The running slot, when this box booted from one and can write its
    /// boot partition.
    pub(crate) fn available(&self) -> Option<char> {
        self.running
            .filter(|_| self.under_init && self.boot.has_slots())
    }

    /// Whether the running slot is an update on trial (no other update is
    /// taken meanwhile: `update_busy`).
    pub(crate) fn on_trial(&self) -> bool {
        let Some(running) = self.running else {
            return false;
        };
        state::load(&self.state_path)
            .is_some_and(|r| r.phase == Phase::Pending && r.slot.starts_with(running))
    }

    fn running_version(&self) -> String {
        self.running
            .and_then(|s| self.boot.slot_version(s))
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
    }

    /// Run `f` with the boot partition (and under UEFI efivarfs)
    /// writable, read-only again after.
    fn boot_rw<T>(&self, f: impl FnOnce() -> Result<T, Refusal>) -> Result<T, Refusal> {
        nuvol_init::remount_boot_at(&self.boot.root, true)
            .map_err(|e| Refusal::Failed(format!("remounting the boot partition writable: {e}")))?;
        let efi = self.boot.efivars.is_some();
        let r = if efi {
            nuvol_init::remount_efivars(true)
                .map_err(|e| Refusal::Failed(format!("remounting efivarfs writable: {e}")))
                .and_then(|()| f())
        } else {
            f()
        };
        if efi {
            if let Err(e) = nuvol_init::remount_efivars(false) {
                tracing::error!("remounting efivarfs read-only: {e}");
            }
        }
        if let Err(e) = nuvol_init::remount_boot_at(&self.boot.root, false) {
            tracing::error!("remounting the boot partition read-only: {e}");
        }
        r
    }

    pub fn status(&self) -> serde_json::Value {
        let rec = state::load(&self.state_path);
        let mut slots_json = serde_json::Map::new();
        for s in ['A', 'B'] {
            slots_json.insert(
                s.to_string(),
                json!({
                    "version": self.boot.slot_version(s)
                        .or_else(|| (Some(s) == self.running).then(|| self.running_version())),
                    "running": Some(s) == self.running,
                }),
            );
        }
        let available = self.available().is_some();
        json!({
            "available": available,
            "message": if available {
                "upload a signed update (nuvol ctl update FILE, or POST /api/v1/update)"
            } else {
                "updating needs a box booted from a nuvol slot (nuvol init, slots A and B on the boot partition)"
            },
            "running_slot": self.running.map(|c| c.to_string()),
            "running_version": self.running_version(),
            "default_slot": self.boot.default_slot().ok().map(|c| c.to_string()),
            "armed_try": self.boot.armed(),
            "loader": self.boot.loader(),
            "slots": slots_json,
            "update": rec,
            "max_tries": MAX_TRIES,
            "settle_s": self.settle.as_secs(),
            "trusted_keys": self.keys.len(),
            "boot_files": self.boot_files().into_iter().map(|f| f.value).collect::<Vec<_>>(),
            "policy": {
                "policy": self.policy.policy.as_str(),
                "window": self.policy.window_text,
                "url": self.policy.url,
                "every_s": self.policy.every.as_secs(),
                "last": self.look(),
            },
        })
    }

    /// Where the offered and pending artefacts live (`/data/nuvol/os`).
    fn os_dir(&self) -> PathBuf {
        self.state_path.with_file_name("os")
    }

    /// Keep an applied artefact (linked from the upload when it is on the
    /// data partition, else copied), to offer it once its slot is good.
    fn keep(&self, file: &Path) -> std::io::Result<()> {
        let dir = self.os_dir();
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("pending.tmp");
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(file, &tmp).is_err() {
            std::fs::copy(file, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(PENDING_FILE))?;
        nuvol_durable::fsync_dir(&dir)
    }

    /// The kept artefact of a slot marked good becomes the offer.
    fn promote(&self) -> std::io::Result<()> {
        let dir = self.os_dir();
        match std::fs::rename(dir.join(PENDING_FILE), dir.join(OFFER_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => nuvol_durable::fsync_dir(&dir),
        }
    }

    /// Where the offered artefact is kept.
    pub fn offer_file(&self) -> PathBuf {
        self.os_dir().join(OFFER_FILE)
    }

    /// The artefact this box offers: the one of the version it runs, after
    /// its slot was marked good. (path, its description for peers.)
    pub fn offer(&self) -> Option<(PathBuf, serde_json::Value)> {
        let rec = state::load(&self.state_path)?;
        if rec.phase != Phase::Good || rec.version != self.running_version() {
            return None;
        }
        let path = self.os_dir().join(OFFER_FILE);
        let meta = std::fs::metadata(&path).ok()?;
        let (len, mtime) = (meta.len(), meta.modified().ok()?);
        let mut cache = self.offer_sha.lock().unwrap_or_else(|p| p.into_inner());
        let sha = match cache.as_ref() {
            Some((l, m, s)) if *l == len && *m == mtime => s.clone(),
            _ => {
                let s = sha256_file(&path).ok()?;
                *cache = Some((len, mtime, s.clone()));
                s
            }
        };
        Some((
            path,
            json!({
                "version": rec.version,
                "arch": nuvol_update::ARCH,
                "size": len,
                "sha256": sha,
                "key_id": rec.key_id,
            }),
        ))
    }

    fn boot_files_path(&self) -> PathBuf {
        self.state_path.with_file_name(BOOT_FILES_STATE)
    }

    /// The outcomes of update files found on the boot partition.
    fn boot_files(&self) -> Vec<Entry<BootFile>> {
        state::load_boot_files(&self.boot_files_path()).unwrap_or_else(|e| {
            tracing::error!("update files of the boot partition: {e}; starting a new list");
            Vec::new()
        })
    }

    /// Apply an update file a human put in `update/` on the boot
    /// partition (see [`Updater::apply_dir`]); returns the version written.
    pub fn apply_boot_dir(&self, services: Vec<String>) -> Option<String> {
        self.available()?;
        self.apply_dir(&self.boot.root.join(BOOT_DIR), None, services)
            .applied
    }

    /// Apply an update file from `dir`: `update/` on the boot partition
    /// (`stick` is `None`) or on a USB stick's volume (`Some("sda1")`).
    /// Each file once (known by its SHA-256, remembered on the data
    /// partition; the file itself is never changed, nothing is written
    /// where it lies). A file longer than an artefact can be is refused
    /// (`update_too_big`) without being read, and known by its name and
    /// length instead. The first acceptable one in name order is written
    /// to the inactive slot, and its version returned so the caller
    /// reboots to try it. Refusals are printed and shown with the update
    /// state. `busy` when a file was put off because this boot is itself
    /// on trial: the caller looks again later.
    pub fn apply_dir(&self, dir: &Path, stick: Option<&str>, services: Vec<String>) -> DirOutcome {
        let mut out = DirOutcome::default();
        if self.available().is_none() {
            return out;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        let mut files: Vec<PathBuf> = entries
            .take(MAX_DIR_ENTRIES)
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("nvu")) && p.is_file())
            .collect();
        files.sort();
        files.truncate(MAX_BOOT_FILES);
        let mut known = self.boot_files();
        for f in files {
            let file = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Remembered as the file's name on the boot partition, as
            // `sda1:update/NAME` from a stick; shown with its folder.
            let (name, shown) = match stick {
                None => (file.clone(), format!("{BOOT_DIR}/{file}")),
                Some(v) => {
                    let n = format!("{v}:{BOOT_DIR}/{file}");
                    (n.clone(), n)
                }
            };
            // The length and the hash are of the one file opened here.
            let Ok(mut opened) = std::fs::File::open(&f) else {
                continue;
            };
            let Ok(len) = opened.metadata().map(|m| m.len()) else {
                continue;
            };
            let (sha, size, outcome, message) = if len > artefact::MAX_ARTEFACT {
                // Refused by its length alone, never read: hashing a
                // multi-GB file at every plug-in only to refuse it costs
                // minutes of a stick's bandwidth. Without a hash it is
                // known by its name and length: the refusal depends on
                // nothing else, so another file of that name and length
                // would be refused the same way, and one of another
                // length is looked at again.
                if known.iter().any(|k| {
                    k.value.sha256.is_empty() && k.value.name == name && k.value.size == Some(len)
                }) {
                    continue;
                }
                let e = Refusal::TooBig(format!(
                    "the file is {len} bytes; update artefacts are at most {}",
                    artefact::MAX_ARTEFACT
                ));
                let message = format!("{shown} refused: {e}");
                (String::new(), Some(len), e.code().to_string(), message)
            } else {
                let Ok(sha) = sha256_of(&mut opened) else {
                    continue;
                };
                drop(opened);
                if known.iter().any(|k| k.value.sha256 == sha) {
                    continue;
                }
                match self.apply(&f, false, services.clone()) {
                    Ok(v) => {
                        out.applied = v["version"].as_str().map(str::to_string);
                        let message =
                            format!("{shown}: {}", v["message"].as_str().unwrap_or("written"));
                        (sha, None, "applied".to_string(), message)
                    }
                    // On trial now: looked at again at a later start.
                    Err(Refusal::Busy(_)) => {
                        out.busy = true;
                        continue;
                    }
                    Err(e) => (
                        sha,
                        None,
                        e.code().to_string(),
                        format!("{shown} refused: {e}"),
                    ),
                }
            };
            eprintln!("nuvol: {message}");
            known.push(Entry::new(
                state::BOOT_FILES_FORMAT,
                BootFile {
                    name,
                    sha256: sha,
                    outcome,
                    message,
                    size,
                },
            ));
            if known.len() > MAX_REMEMBERED {
                known.remove(0);
            }
            if let Err(e) = state::save_boot_files(&self.boot_files_path(), &known) {
                tracing::error!("recording the update files seen: {e}");
            }
            if out.applied.is_some() {
                break;
            }
        }
        out
    }

    /// Dashboard alerts: an update given up; a newer one found by the
    /// policy and not applied (yet).
    pub fn alerts(&self) -> Vec<String> {
        let given_up = state::load(&self.state_path)
            .filter(|r| r.phase == Phase::Failed)
            .and_then(|r| r.reason);
        let found = self
            .look()
            .filter(|l| l.found.is_some())
            .map(|l| format!("OS {}", l.action));
        given_up.into_iter().chain(found).collect()
    }

    /// What this box checks an artefact against besides the keys.
    fn policy(&self, allow_downgrade: bool) -> Result<Policy, Refusal> {
        Ok(Policy {
            arch: nuvol_update::ARCH.to_string(),
            running: Version::parse(&self.running_version())
                .or_else(|_| Version::parse("0"))
                .map_err(Refusal::Failed)?,
            allow_downgrade,
        })
    }

    /// Judge a download by its head: (version, the file's length).
    pub fn check_head(&self, head: &[u8], allow_downgrade: bool) -> Result<(String, u64), Refusal> {
        if self.keys.is_empty() {
            return Err(no_keys());
        }
        let (v, len) = artefact::verify_prefix(head, &self.keys, &self.policy(allow_downgrade)?)?;
        Ok((v.manifest.version.to_string(), len))
    }

    /// Check `file` completely, write it to the inactive slot, read it
    /// back, record the update and arm the one-shot try.
    pub fn apply(
        &self,
        file: &Path,
        allow_downgrade: bool,
        services: Vec<String>,
    ) -> Result<serde_json::Value, Refusal> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(running) = self.available() else {
            return Err(Refusal::Unavailable(
                "this box was not booted from a nuvol slot: nothing to update".into(),
            ));
        };
        if let Some(r) = state::load(&self.state_path) {
            if r.phase == Phase::Pending && r.slot.starts_with(running) {
                return Err(Refusal::Busy(format!(
                    "update {} is on trial in this slot ({running}); wait until it is marked good",
                    r.version
                )));
            }
        }
        if self.keys.is_empty() {
            return Err(no_keys());
        }
        let running_version = self.running_version();
        let v = artefact::verify_file(file, &self.keys, &self.policy(allow_downgrade)?)?;
        let target = slots::other(running);
        let rec = Record {
            format: state::RECORD_FORMAT,
            extra: Default::default(),
            phase: Phase::Pending,
            version: v.manifest.version.to_string(),
            slot: target.to_string(),
            from_slot: running.to_string(),
            from_version: running_version,
            tries: 1,
            armed_boot: boot_id(),
            reason: None,
            key_id: v.key_id.clone(),
            services,
        };
        // Refused before the boot partition is touched.
        self.boot.fits(target, &v)?;
        if let Err(e) = self.keep(file) {
            // Only sharing with peers is lost.
            tracing::warn!("keeping the artefact to offer it to peers: {e}");
        }
        self.boot_rw(|| {
            // No try of a half-written slot: disarm first.
            self.boot
                .arm_try(None)
                .map_err(|e| Refusal::Failed(format!("disarming the try: {e}")))?;
            self.boot.write_slot(target, file, &v)?;
            state::save(&self.state_path, &rec)
                .map_err(|e| Refusal::Failed(format!("recording the update: {e}")))?;
            self.boot.step();
            self.boot
                .arm_try(Some(target))
                .map_err(|e| Refusal::Failed(format!("arming the try: {e}")))
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(self.os_dir().join(PENDING_FILE));
        })?;
        eprintln!(
            "nuvol: update {} written to slot {target}; the next boot tries it once",
            rec.version
        );
        Ok(json!({
            "applied": true,
            "version": rec.version,
            "slot": rec.slot,
            "key_id": rec.key_id,
            "message": format!(
                "update {} written to slot {target} and verified; reboot to try it once: it becomes the default after {} s healthy, otherwise the box goes back to slot {running}",
                rec.version, self.settle.as_secs()
            ),
        }))
    }

    /// The brown-out policy at start. Returns whether this boot is a trial.
    pub fn at_start(&self) -> bool {
        let Some(running) = self.available() else {
            return false;
        };
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut rec) = state::load(&self.state_path) else {
            return false;
        };
        let start = state::at_start(&mut rec, running, &boot_id());
        // Why PID 1 ended the last trial, when it did.
        let note = self
            .state_path
            .parent()
            .and_then(nuvol_init::trial::take_note);
        if let (Some(n), Start::Rearm | Start::GaveUp) = (&note, &start) {
            rec.reason = rec.reason.take().map(|r| format!("{r}; {n}"));
        }
        match start {
            Start::Idle | Start::Waiting => false,
            Start::Trial => {
                eprintln!(
                    "nuvol: update {}: trying slot {running}; it becomes the default after {} s healthy",
                    rec.version,
                    self.settle.as_secs()
                );
                true
            }
            Start::Rearm => {
                let r = state::save(&self.state_path, &rec)
                    .map_err(|e| Refusal::Failed(e.to_string()))
                    .and_then(|()| {
                        self.boot_rw(|| {
                            let slot = slots::parse_slot(&rec.slot)
                                .ok_or_else(|| Refusal::Failed("bad slot".into()))?;
                            self.boot
                                .arm_try(Some(slot))
                                .map_err(|e| Refusal::Failed(e.to_string()))
                        })
                    });
                eprintln!(
                    "nuvol: update {}: {}; armed again (try {} of {MAX_TRIES}){}",
                    rec.version,
                    rec.reason.as_deref().unwrap_or(""),
                    rec.tries,
                    r.err()
                        .map(|e| format!(": FAILED: {e}"))
                        .unwrap_or_default()
                );
                false
            }
            Start::GaveUp => {
                let _ = state::save(&self.state_path, &rec);
                let _ = std::fs::remove_file(self.os_dir().join(PENDING_FILE));
                let _ = self.boot_rw(|| {
                    self.boot
                        .arm_try(None)
                        .map_err(|e| Refusal::Failed(e.to_string()))
                });
                eprintln!(
                    "nuvol: {}",
                    rec.reason.as_deref().unwrap_or("update given up")
                );
                false
            }
        }
    }

    /// Rescue shell: make `slot` the default, no try left armed. An
    /// update pending in that slot is marked good; one pending elsewhere,
    /// or a good one in the other slot, is recorded as given up by hand
    /// (so the policy does not take that version again). Returns what was
    /// done, for people.
    pub fn rescue_default(&self, slot: char) -> Result<String, Refusal> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.boot_rw(|| {
            self.boot
                .arm_try(None)
                .map_err(|e| Refusal::Failed(format!("disarming the try: {e}")))?;
            self.boot
                .set_default(slot)
                .map_err(|e| Refusal::Failed(format!("making slot {slot} the default: {e}")))
        })?;
        let mut said = format!("slot {slot} is the default; no try is armed");
        if let Some(mut rec) = state::load(&self.state_path) {
            let here = rec.slot.starts_with(slot);
            let change = match rec.phase {
                Phase::Pending if here => {
                    if let Err(e) = self.promote() {
                        tracing::warn!("offering the artefact to peers: {e}");
                    }
                    rec.phase = Phase::Good;
                    rec.reason = Some("marked good by hand in the rescue shell".into());
                    true
                }
                Phase::Pending | Phase::Good if !here => {
                    let _ = std::fs::remove_file(self.os_dir().join(PENDING_FILE));
                    rec.phase = Phase::Failed;
                    rec.reason = Some(format!(
                        "update {} given up by hand in the rescue shell: slot {slot} made the default",
                        rec.version
                    ));
                    true
                }
                _ => false,
            };
            if change {
                state::save(&self.state_path, &rec)
                    .map_err(|e| Refusal::Failed(format!("recording the update: {e}")))?;
                said.push_str(&format!(
                    "; update {}: {}",
                    rec.version,
                    rec.reason.as_deref().unwrap_or("")
                ));
            }
        }
        Ok(said)
    }

    /// Rescue shell: arm a one-shot try of `slot` (`None`: disarm).
    pub fn rescue_try(&self, slot: Option<char>) -> Result<String, Refusal> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.boot_rw(|| {
            self.boot
                .arm_try(slot)
                .map_err(|e| Refusal::Failed(format!("arming the try: {e}")))
        })?;
        Ok(match slot {
            Some(s) => {
                format!("the next boot tries slot {s} once; the one after boots the default again")
            }
            None => "no try is armed".into(),
        })
    }

    /// Make the running (tried) slot the default and record it.
    fn mark_good(&self) -> Result<String, Refusal> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let running = self
            .available()
            .ok_or_else(|| Refusal::Unavailable("no slot".into()))?;
        let mut rec = state::load(&self.state_path)
            .filter(|r| r.phase == Phase::Pending && r.slot.starts_with(running))
            .ok_or_else(|| Refusal::Failed("no update on trial".into()))?;
        self.boot_rw(|| {
            self.boot
                .set_default(running)
                .map_err(|e| Refusal::Failed(format!("making slot {running} the default: {e}")))
        })?;
        if let Err(e) = self.promote() {
            tracing::warn!("offering the artefact to peers: {e}");
        }
        rec.phase = Phase::Good;
        rec.reason = None;
        state::save(&self.state_path, &rec)
            .map_err(|e| Refusal::Failed(format!("recording the update: {e}")))?;
        Ok(rec.version)
    }
}

fn no_keys() -> Refusal {
    Refusal::Untrusted(
        "no OS publisher key is trusted: add one to [update] trusted_keys in nuvol.toml".into(),
    )
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    sha256_of(&mut std::fs::File::open(p)?)
}

fn sha256_of(f: &mut impl Read) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    std::io::copy(f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// At start (not on trial): after the services had time to start, apply
/// an update file from the boot partition and reboot to try it.
pub async fn boot_dir_watch(u: Arc<Updater>, svc: Option<crate::services::ServicesHandle>) {
    if !u.boot.root.join(BOOT_DIR).is_dir() {
        return;
    }
    // The services recorded with the update are the ones that run again
    // after the trial boot: let them start first.
    tokio::time::sleep(BOOT_DIR_DELAY).await;
    let services = running_services(svc.as_ref());
    let u2 = u.clone();
    if let Ok(Some(v)) = tokio::task::spawn_blocking(move || u2.apply_boot_dir(services)).await {
        eprintln!("nuvol: update {v} from the boot partition: rebooting to try it");
        if let Err(e) = nuvol_api::ask_init_to_reboot() {
            eprintln!("nuvol: update {v}: {e}; it is tried at the next boot");
        }
    }
}

/// How long after start the boot partition's `update/` is looked at.
pub const BOOT_DIR_DELAY: Duration = Duration::from_secs(10);

/// The services running now (condition "running").
pub fn running_services(svc: Option<&crate::services::ServicesHandle>) -> Vec<String> {
    use nuvol_api::services::{Condition, Services};
    svc.map(|h| {
        h.list()
            .into_iter()
            .filter(|s| s.condition().0 == Condition::Running)
            .map(|s| s.status.name)
            .collect()
    })
    .unwrap_or_default()
}

/// The health checks of a trial: the panel answers on `port`, when the
/// agent manages the network an interface other than `lo` has an
/// address, and the services that ran when the update was applied run
/// (and, checked by the caller, discovery started when configured).
fn healthy(
    port: u16,
    network: bool,
    wanted: &[String],
    svc: Option<&crate::services::ServicesHandle>,
) -> Result<(), String> {
    let missing = state::missing_services(wanted, &running_services(svc));
    if !missing.is_empty() {
        return Err(format!("services not running yet: {}", missing.join(", ")));
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("panel: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("panel: {e}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| format!("panel: {e}"))?;
    if !head.starts_with(b"HTTP/1.") {
        return Err("panel: not an HTTP answer".into());
    }
    if network
        && !nuvol_status::interfaces()
            .iter()
            .any(|i| i.name != "lo" && !i.addresses.is_empty())
    {
        return Err("network: no interface has an address".into());
    }
    Ok(())
}

/// Watch a trial: after the settling time, once healthy, mark it good;
/// unhealthy for [`Updater::unhealthy`] after that, reboot (back to the
/// default slot).
pub async fn watch_trial(
    u: Arc<Updater>,
    port: u16,
    network: bool,
    svc: Option<crate::services::ServicesHandle>,
    discovery: Option<Arc<crate::discovery::Discovery>>,
) {
    tokio::time::sleep(u.settle).await;
    let start = tokio::time::Instant::now();
    let wanted = state::load(&u.state_path)
        .map(|r| r.services)
        .unwrap_or_default();
    loop {
        let (w, s) = (wanted.clone(), svc.clone());
        let r = if discovery.as_ref().is_some_and(|d| d.handle().is_none()) {
            Err("discovery: gossip has not started".to_string())
        } else {
            tokio::task::spawn_blocking(move || healthy(port, network, &w, s.as_ref()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        };
        match r {
            Ok(()) => {
                let u2 = u.clone();
                match tokio::task::spawn_blocking(move || u2.mark_good()).await {
                    Ok(Ok(v)) => {
                        eprintln!(
                            "nuvol: update {v}: marked good: slot {} is now the default",
                            u.running.map(String::from).unwrap_or_default()
                        );
                    }
                    Ok(Err(e)) => eprintln!("nuvol: update: marking good failed: {e}"),
                    Err(e) => eprintln!("nuvol: update: marking good failed: {e}"),
                }
                return;
            }
            Err(e) if start.elapsed() >= u.unhealthy => {
                let why = format!(
                    "slot {} was on trial and stayed unhealthy for {} s after settling: {e}",
                    u.running.map(String::from).unwrap_or_default(),
                    u.unhealthy.as_secs()
                );
                eprintln!("nuvol: update: {why}: rebooting into the default slot");
                if let Some(dir) = u.state_path.parent() {
                    nuvol_init::trial::leave_note(dir, &why);
                }
                let _ = nuvol_api::ask_init_to_reboot();
                return;
            }
            Err(e) => tracing::warn!("update trial not healthy yet: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An updater of a box booted from slot A of a BIOS boot partition in
    /// `d/boot`, its state in `d/data`, trusting no key.
    fn updater(d: &Path) -> Updater {
        let boot = d.join("boot");
        for sub in ["A", "B", "syslinux", BOOT_DIR] {
            std::fs::create_dir_all(boot.join(sub)).unwrap();
        }
        std::fs::write(boot.join(slots::SYSLINUX_CFG), b"").unwrap();
        std::fs::write(boot.join(slots::LDLINUX_SYS), b"").unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
        let cfg = nuvol_config::Config::default();
        let mut u = Updater::new(&cfg, &boot.join("nuvol.toml"), &d.join("data"), false);
        u.boot = BootFs::new(&boot);
        u.running = Some('A');
        u.under_init = true;
        assert!(u.available().is_some());
        u
    }

    #[test]
    fn a_file_too_long_for_an_artefact_is_refused_unread_and_remembered() {
        let d = tempfile::tempdir().unwrap();
        let u = updater(d.path());
        let dir = d.path().join("boot").join(BOOT_DIR);
        // Sparse: no disk space, and reading it would find zeros.
        let big = std::fs::File::create(dir.join("big.nvu")).unwrap();
        big.set_len(artefact::MAX_ARTEFACT + 1).unwrap();
        // At the limit it is read (and refused for another reason).
        let edge = std::fs::File::create(dir.join("edge.nvu")).unwrap();
        edge.set_len(artefact::MAX_ARTEFACT).unwrap();

        let out = u.apply_dir(&dir, Some("sda1"), Vec::new());
        assert!(out.applied.is_none() && !out.busy);
        let files = u.boot_files();
        assert_eq!(files.len(), 2, "{files:?}");
        let f = &files[0].value;
        assert_eq!(
            (
                f.name.as_str(),
                f.outcome.as_str(),
                f.sha256.as_str(),
                f.size
            ),
            (
                "sda1:update/big.nvu",
                "update_too_big",
                "",
                Some(artefact::MAX_ARTEFACT + 1)
            )
        );
        assert_eq!(
            f.message,
            format!(
                "sda1:update/big.nvu refused: the file is {} bytes; update artefacts are at most {}",
                artefact::MAX_ARTEFACT + 1,
                artefact::MAX_ARTEFACT
            )
        );
        let e = &files[1].value;
        assert_eq!(e.name, "sda1:update/edge.nvu");
        assert_ne!(e.outcome, "update_too_big");
        assert_eq!((e.sha256.len(), e.size), (64, None));

        // The next plug-in: known, nothing recorded again.
        std::fs::remove_file(dir.join("edge.nvu")).unwrap();
        u.apply_dir(&dir, Some("sda1"), Vec::new());
        assert_eq!(u.boot_files(), files);

        // Another length under that name: looked at again.
        big.set_len(artefact::MAX_ARTEFACT + 2).unwrap();
        u.apply_dir(&dir, Some("sda1"), Vec::new());
        let again = u.boot_files();
        assert_eq!(again.len(), 3, "{again:?}");
        assert_eq!(again[2].value.size, Some(artefact::MAX_ARTEFACT + 2));
        assert_eq!(again[2].value.outcome, "update_too_big");
    }
}
