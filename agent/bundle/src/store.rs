//! Installed bundles on the data partition: atomic install, upgrade,
//! rollback and remove.
//!
//! ```text
//! <data>/bundles/
//!   keyring.json                 trusted keys + revocation list
//!   .lock                        flock serializing store changes
//!   tmp/                         staging; emptied on open
//!   installed/<name>/state.json  {"current": DIGEST, "previous": DIGEST|null}  <- commit point
//!   installed/<name>/<DIGEST>/   image, head (header+manifest+signature), meta.json
//!   volumes/<name>/<volume>/     persistent data; survives upgrade/rollback
//! ```
//! Every change is staged completely (fsynced) and committed by one atomic
//! rename of `state.json`; `open` deletes whatever no committed state refers
//! to. A power cut at any instant therefore leaves the old or the new
//! version installed, never neither.
//!
//! **Versions** (docs/boot.md, "Versions across an update and its
//! rollback"): `state.json` and `meta.json` have a `format` number, 1 when
//! absent; a missing field reads as its default. `state.json` keeps the
//! fields of a newer agent's format, and its number, through installs and
//! rollbacks; its format 1 is written as no `format` key, because the
//! agents released before formats refuse a `state.json` with a key they do
//! not know (the bundle is then broken there), so it gains no key while a
//! rollback to one of them is possible. `meta.json` is written once per
//! version and never rewritten.
//!
//! Faults stay with their bundle: one whose files cannot be read or make
//! no sense (a garbled `state.json`, a truncated head or image, a missing
//! `meta.json`) is reported by [`Store::list`] as a [`BrokenBundle`] naming
//! the file and the problem, while the others are listed as usual; it can
//! still be removed.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use nuvol_durable::json::{first_format, is_first_format, Extra};
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::format::{hex, Head, ImageType};
use crate::fsutil::{create_dir_durable, fsync_dir, fsync_tree};
use crate::keyring::{now, FileLock, Keyring};
use crate::manifest::{compare_versions, validate_name, Manifest, Policy};
use crate::verify::{verify_file, verify_head, KeyLookup};

/// Environment variable naming a step at which the process SIGKILLs itself
/// (power-cut testing). Steps: `copied`, `staged`, `mounted`, `scanned`, `moved`,
/// `volumes`, `state-temp`, `committed`, `gc`, `rollback-state-temp`,
/// `rollback-committed`, `remove-renamed`, `purge-renamed`.
pub const CRASH_ENV: &str = "NUVOL_BUNDLE_CRASH_AT";

fn crash_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var(CRASH_ENV).ok()).as_deref() == Some(step) {
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// What `list` reports per bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledBundle {
    pub name: String,
    pub version: String,
    pub publisher: String,
    /// Key id of the signing key (16 hex digits).
    pub publisher_key_id: String,
    /// SHA-256 of the image, hex.
    pub digest: String,
    /// Unix seconds when the signature and digest were checked at install.
    pub verified_at: u64,
    /// `installed`, or `key-revoked` if the signing key was revoked since.
    pub state: String,
    pub image_type: ImageType,
    pub previous: Option<PreviousVersion>,
    /// The verified manifest (for the supervisor and discovery).
    pub manifest: Manifest,
    /// Damage that does not stop the current version (an unreadable
    /// previous version, which then cannot be rolled back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// An installed bundle the store cannot read: never run, listed with what
/// is wrong, removable (and then installable again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenBundle {
    pub name: String,
    /// The file that is missing, unreadable or garbled.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// What [`Store::list`] finds, each sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The bundles that read back intact.
    pub bundles: Vec<InstalledBundle>,
    /// The ones that do not, each with its problem.
    pub broken: Vec<BrokenBundle>,
}

fn broken_at(name: &str, file: &Path, problem: impl std::fmt::Display) -> BundleError {
    BundleError::Broken(BrokenBundle {
        name: name.to_string(),
        file: file.to_path_buf(),
        problem: problem.to_string(),
    })
}

/// Turn a failure to read or parse `file` of bundle `name` into
/// [`BundleError::Broken`] (the path is in `file`, not repeated in the text).
fn broken(name: &str, file: &Path) -> impl FnOnce(BundleError) -> BundleError {
    let (name, file) = (name.to_string(), file.to_path_buf());
    move |e| {
        let problem = match e {
            BundleError::Broken(_) | BundleError::NotInstalled(_) => return e,
            BundleError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        BundleError::Broken(BrokenBundle {
            name,
            file,
            problem,
        })
    }
}

/// The version a rollback would return to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub version: String,
    pub digest: String,
}

/// The format of `state.json` and `meta.json` this agent writes.
const STATE_FORMAT: u32 = 1;

/// Per-version record written at install.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionMeta {
    #[serde(default = "first_format")]
    format: u32,
    key_id: String,
    digest: String,
    verified_at: u64,
    image_type: ImageType,
}

/// The committed state of one bundle (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    /// Written only when not 1 (see the module's "Versions").
    #[serde(default = "first_format", skip_serializing_if = "is_first_format")]
    format: u32,
    current: String,
    previous: Option<String>,
    /// Fields of a newer agent's format, kept as they are.
    #[serde(flatten)]
    extra: Extra,
}

impl State {
    /// The next state after `old` (`None`: a first install), keeping its
    /// format and a newer agent's fields.
    fn next(old: Option<&State>, current: String, previous: Option<String>) -> State {
        State {
            format: old.map_or(STATE_FORMAT, |o| o.format),
            current,
            previous,
            extra: old.map(|o| o.extra.clone()).unwrap_or_default(),
        }
    }
}

/// Store options.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// What bundles may declare (setuid, devices, root).
    pub policy: Policy,
    /// Loop-mount each image read-only and check its contents before
    /// committing (needs root and loop devices).
    pub scan_image: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            policy: Policy::default(),
            scan_image: true,
        }
    }
}

/// An installed bundle as its signed file (see [`Store::export`]).
#[derive(Debug)]
pub struct Export {
    /// What is exported.
    pub bundle: InstalledBundle,
    /// Length of the whole file in bytes.
    pub len: u64,
    head: Vec<u8>,
    image: File,
}

impl Export {
    /// The file's bytes: head (with padding), then the image.
    pub fn into_reader(self) -> impl std::io::Read + Send {
        use std::io::Read;
        std::io::Cursor::new(self.head).chain(self.image)
    }

    /// SHA-256 of the whole file, hex (reads it all).
    pub fn file_sha256(self) -> Result<String, BundleError> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&self.head);
        let mut image = self.image;
        let mut buf = vec![0u8; crate::verify::HASH_CHUNK];
        loop {
            let n = std::io::Read::read(&mut image, &mut buf)
                .map_err(|e| BundleError::io("<export>")(e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex(&h.finalize()))
    }
}

/// What [`Store::provision`] did with one bundle file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ProvisionOutcome {
    /// Newly installed or upgraded.
    Installed(InstalledBundle),
    /// This exact bundle was already the current version.
    AlreadyInstalled(InstalledBundle),
    /// A newer version is installed; left alone.
    NewerInstalled { name: String, installed: String },
}

/// The result of [`Store::provision`].
#[derive(Debug)]
pub struct ProvisionReport {
    /// Keys from the config that could not be trusted (bad text, revoked).
    pub key_errors: Vec<BundleError>,
    /// One entry per bundle file, in order.
    pub results: Vec<(PathBuf, Result<ProvisionOutcome, BundleError>)>,
}

/// Per-install switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Allow installing a lower (or equal, different) version over the current one.
    pub allow_downgrade: bool,
    /// Allow an upgrade signed by a different key than the installed version.
    pub allow_publisher_change: bool,
}

/// The bundle store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    opts: StoreOptions,
}

const MAX_SMALL_FILE: u64 = 256 * 1024;

fn read_small(path: &Path) -> Result<Vec<u8>, BundleError> {
    let len = fs::metadata(path).map_err(BundleError::io(path))?.len();
    if len > MAX_SMALL_FILE {
        return Err(BundleError::io(path)(std::io::Error::other(format!(
            "{len} bytes, more than a store record can be ({MAX_SMALL_FILE})"
        ))));
    }
    fs::read(path).map_err(BundleError::io(path))
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Store {
    /// Open (creating if needed) the store under `data_dir/bundles` and
    /// finish or undo whatever a power cut interrupted.
    pub fn open(data_dir: &Path) -> Result<Store, BundleError> {
        Store::open_with(data_dir, StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(data_dir: &Path, opts: StoreOptions) -> Result<Store, BundleError> {
        let root = data_dir.join("bundles");
        for d in ["tmp", "installed", "volumes"] {
            create_dir_durable(&root.join(d))?;
        }
        let s = Store { root, opts };
        let _l = s.lock()?;
        s.recover()?;
        Ok(s)
    }

    fn lock(&self) -> Result<FileLock, BundleError> {
        FileLock::acquire(&self.root.join(".lock"))
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join("installed").join(name)
    }

    /// The keyring of trusted publisher keys.
    pub fn keyring(&self) -> Keyring {
        Keyring::at(&self.root.join("keyring.json"))
    }

    /// Where `name`'s volume `volume` lives on the data partition.
    pub fn volume_path(&self, name: &str, volume: &str) -> PathBuf {
        self.root.join("volumes").join(name).join(volume)
    }

    fn recover(&self) -> Result<(), BundleError> {
        let tmp = self.tmp();
        for e in fs::read_dir(&tmp).map_err(BundleError::io(&tmp))? {
            let p = e.map_err(BundleError::io(&tmp))?.path();
            let mnt = p.join("mnt");
            if let Ok(c) =
                std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(mnt.as_os_str()))
            {
                // SAFETY: valid C string; failure (not mounted) is fine.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            remove_any(&p)?;
        }
        fsync_dir(&tmp)?;
        let inst = self.root.join("installed");
        for e in fs::read_dir(&inst).map_err(BundleError::io(&inst))? {
            let e = e.map_err(BundleError::io(&inst))?;
            let name = e.file_name().to_string_lossy().to_string();
            if validate_name(&name).is_err() {
                continue;
            }
            // A bundle that cannot be cleaned up (a disk error) is left
            // alone so the rest of the store still opens; `list` reports it.
            let _ = self.recover_bundle(&name);
        }
        Ok(())
    }

    /// Remove a first install that never committed, or whatever version
    /// directory the committed state of `name` does not name.
    fn recover_bundle(&self, name: &str) -> Result<(), BundleError> {
        let inst = self.root.join("installed");
        let dir = self.dir(name);
        let state = match self.read_state(name) {
            Ok(s) => s,
            Err(BundleError::NotInstalled(_)) => {
                remove_any(&dir)?;
                return fsync_dir(&inst);
            }
            Err(e) => return Err(e),
        };
        for v in fs::read_dir(&dir).map_err(BundleError::io(&dir))? {
            let v = v.map_err(BundleError::io(&dir))?;
            let f = v.file_name().to_string_lossy().to_string();
            let keep = f == "state.json"
                || f == state.current
                || state.previous.as_deref() == Some(f.as_str());
            if !keep {
                remove_any(&v.path())?;
            }
        }
        fsync_dir(&dir)
    }

    /// The committed state of `name`: `NotInstalled` without one, `Broken`
    /// if it cannot be read or makes no sense.
    fn read_state(&self, name: &str) -> Result<State, BundleError> {
        let p = self.dir(name).join("state.json");
        match fs::symlink_metadata(&p) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(BundleError::NotInstalled(name.to_string()))
            }
            Err(e) => return Err(broken(name, &p)(BundleError::io(&p)(e))),
        }
        let bytes = read_small(&p).map_err(broken(name, &p))?;
        let s: State = serde_json::from_slice(&bytes)
            .map_err(|e| broken_at(name, &p, format!("not a state record: {e}")))?;
        if !is_digest(&s.current) || s.previous.as_deref().is_some_and(|p| !is_digest(p)) {
            return Err(broken_at(name, &p, "names a version that is not a digest"));
        }
        Ok(s)
    }

    /// Commit a new state: temp file, fsync, rename, fsync dir.
    fn write_state(&self, name: &str, st: &State, step: &str) -> Result<(), BundleError> {
        let dir = self.dir(name);
        let tmp = dir.join(format!(".state.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(st).map_err(|e| BundleError::State(e.to_string()))?;
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(BundleError::io(&tmp)(e));
        }
        crash_point(&format!("{step}state-temp"));
        let target = dir.join("state.json");
        fs::rename(&tmp, &target).map_err(BundleError::io(&target))?;
        fsync_dir(&dir)?;
        crash_point(&format!("{step}committed"));
        Ok(())
    }

    fn describe(
        &self,
        name: &str,
        digest: &str,
        previous: Option<&str>,
    ) -> Result<InstalledBundle, BundleError> {
        let vdir = self.dir(name).join(digest);
        let meta_file = vdir.join("meta.json");
        let meta: VersionMeta =
            serde_json::from_slice(&read_small(&meta_file).map_err(broken(name, &meta_file))?)
                .map_err(|e| broken_at(name, &meta_file, format!("not a version record: {e}")))?;
        if meta.digest != digest {
            return Err(broken_at(
                name,
                &meta_file,
                format!("records image {} for version {digest}", meta.digest),
            ));
        }
        let (head, manifest) = self.read_head(name, digest)?;
        self.image_of(name, digest, &head)?;
        let revoked = crate::keys::KeyId::parse_hex(&meta.key_id)
            .and_then(|id| self.keyring().is_revoked(&id))
            .unwrap_or(true);
        let (previous, problem) = match previous.map(|p| (p, self.read_head(name, p))) {
            Some((p, Ok((_, pm)))) => (
                Some(PreviousVersion {
                    version: pm.version,
                    digest: p.to_string(),
                }),
                None,
            ),
            Some((_, Err(BundleError::Broken(b)))) => (
                None,
                Some(format!(
                    "previous version: {}: {}",
                    b.file.display(),
                    b.problem
                )),
            ),
            Some((_, Err(e))) => (None, Some(format!("previous version: {e}"))),
            None => (None, None),
        };
        Ok(InstalledBundle {
            name: name.to_string(),
            version: manifest.version.clone(),
            publisher: manifest.publisher.clone(),
            publisher_key_id: meta.key_id,
            digest: meta.digest,
            verified_at: meta.verified_at,
            state: if revoked { "key-revoked" } else { "installed" }.into(),
            image_type: meta.image_type,
            previous,
            manifest,
            problem,
        })
    }

    /// The stored head of a version and its manifest, or `Broken`.
    fn read_head(&self, name: &str, digest: &str) -> Result<(Head, Manifest), BundleError> {
        let file = self.dir(name).join(digest).join("head");
        let head = read_small(&file)
            .and_then(|b| Head::parse_head_only(&b))
            .map_err(broken(name, &file))?;
        let manifest = Manifest::parse(&head.manifest_bytes).map_err(broken(name, &file))?;
        Ok((head, manifest))
    }

    /// A version's image, present and as long as its signed header says, or `Broken`.
    fn image_of(&self, name: &str, digest: &str, head: &Head) -> Result<PathBuf, BundleError> {
        let img = self.dir(name).join(digest).join("image");
        let len = fs::metadata(&img)
            .map_err(BundleError::io(&img))
            .map_err(broken(name, &img))?
            .len();
        if len != head.header.image_len {
            return Err(broken_at(
                name,
                &img,
                format!(
                    "{len} bytes, the signed header says {}",
                    head.header.image_len
                ),
            ));
        }
        Ok(img)
    }

    /// Verify `bundle_file` and install it, or upgrade the installed version
    /// (which is kept for rollback). Installing the current version again is a no-op.
    pub fn install(&self, bundle_file: &Path) -> Result<InstalledBundle, BundleError> {
        self.install_with(bundle_file, InstallOptions::default())
    }

    /// [`Store::install`] with options.
    pub fn install_with(
        &self,
        bundle_file: &Path,
        io: InstallOptions,
    ) -> Result<InstalledBundle, BundleError> {
        let _l = self.lock()?;
        // The image is copied into the store: refuse at once (naming both
        // numbers) when it cannot fit. Installs are serialized by the lock,
        // so only a writer outside the store can take the space meanwhile.
        let (_, head) = crate::verify::read_head(bundle_file)?;
        let needed = crate::space::needed_to_install(head.header.image_len);
        crate::space::ensure(&self.root, needed)?;
        let stage = self
            .tmp()
            .join(format!("stage-{}-{}", std::process::id(), now_nanos()));
        let res = fs::create_dir(&stage)
            .map_err(BundleError::io(&stage))
            .and_then(|()| self.install_locked(bundle_file, &stage, io));
        if stage.exists() {
            let _ = remove_any(&stage);
        }
        match res {
            // Filled up anyway: the stage is gone, say how much was needed.
            Err(e) if e.is_no_space() => Err(BundleError::NoSpace {
                path: self.root.clone(),
                needed,
                free: crate::space::space(&self.root).map_or(0, |s| s.free_bytes),
            }),
            r => r,
        }
    }

    /// Free and total space of the filesystem holding the store (uploads
    /// and volumes live there too).
    pub fn space(&self) -> Result<crate::space::Space, BundleError> {
        crate::space::space(&self.root)
    }

    fn install_locked(
        &self,
        bundle_file: &Path,
        stage: &Path,
        io: InstallOptions,
    ) -> Result<InstalledBundle, BundleError> {
        let keyring = self.keyring();
        // 1. Verify while copying the image: header, signature, digest, manifest.
        let img_path = stage.join("image");
        let verified = {
            let f = File::create(&img_path).map_err(BundleError::io(&img_path))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            let v = verify_file(bundle_file, &keyring, Some(&mut w))?;
            let f = w
                .into_inner()
                .map_err(|e| BundleError::io(&img_path)(e.into_error()))?;
            f.sync_all().map_err(BundleError::io(&img_path))?;
            v
        };
        crash_point("copied");
        let m = &verified.manifest;
        m.check_arch(std::env::consts::ARCH)?;
        m.check_policy(&self.opts.policy)?;
        let name = m.name.clone();
        let digest = verified.digest_hex();
        let old = match self.read_state(&name) {
            Ok(s) => Some(s),
            Err(BundleError::NotInstalled(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(old) = &old {
            if old.current == digest {
                let cur = self.describe(&name, &old.current, old.previous.as_deref())?;
                if self.current_manifest_is(&cur, &verified.head.manifest_bytes)? {
                    return Ok(cur); // the very same bundle again
                }
                // Versions are kept by image digest: a new manifest over the
                // same image would replace nothing. Say so instead of
                // reporting the old version as the new one.
                return Err(BundleError::SameImage {
                    name,
                    installed: cur.version,
                    offered: m.version.clone(),
                });
            }
            let cur = self.describe(&name, &old.current, None)?;
            let ord = compare_versions(&m.version, &cur.version);
            if ord != std::cmp::Ordering::Greater && !io.allow_downgrade {
                return Err(BundleError::Downgrade {
                    name,
                    installed: cur.version,
                    offered: m.version.clone(),
                });
            }
            let key = verified.key_id.to_string();
            if cur.publisher_key_id != key && !io.allow_publisher_change {
                return Err(BundleError::PublisherChanged {
                    name,
                    installed: cur.publisher_key_id,
                    offered: key,
                });
            }
        }
        // 2. Stage head + meta.
        fs::write(stage.join("head"), verified.head.to_bytes()).map_err(BundleError::io(stage))?;
        let meta = VersionMeta {
            format: STATE_FORMAT,
            key_id: verified.key_id.to_string(),
            digest: digest.clone(),
            verified_at: now(),
            image_type: verified.head.header.image_type,
        };
        let mb = serde_json::to_vec_pretty(&meta).map_err(|e| BundleError::State(e.to_string()))?;
        fs::write(stage.join("meta.json"), mb).map_err(BundleError::io(stage))?;
        fsync_tree(stage)?;
        crash_point("staged");
        // 3. Check the image's contents through the kernel's own parser.
        if self.opts.scan_image {
            let mnt = stage.join("mnt");
            fs::create_dir(&mnt).map_err(BundleError::io(&mnt))?;
            let len = verified.head.header.image_len;
            let mounted =
                crate::mount::mount_image(&img_path, 0, len, meta.image_type, &mnt, true)?;
            crash_point("mounted");
            let r = crate::scan::scan_tree(mounted.path(), m, &self.opts.policy);
            drop(mounted);
            r?;
            fs::remove_dir(&mnt).map_err(BundleError::io(&mnt))?;
        }
        crash_point("scanned");
        // 4. Move the staged version into place (not yet referenced).
        let ndir = self.dir(&name);
        create_dir_durable(&ndir)?;
        let vdir = ndir.join(&digest);
        let reuse = vdir.exists(); // the previous version coming back
        if !reuse {
            fs::rename(stage, &vdir).map_err(BundleError::io(&vdir))?;
            fsync_dir(&ndir)?;
            fsync_dir(&self.tmp())?;
        }
        crash_point("moved");
        let st = State::next(
            old.as_ref(),
            digest.clone(),
            old.as_ref().map(|o| o.current.clone()),
        );
        let committed = (|| {
            // 5. Volumes exist before the version that needs them is current.
            for v in &m.volumes {
                create_dir_durable(&self.volume_path(&name, &v.name))?;
            }
            crash_point("volumes");
            // 6. Commit.
            self.write_state(&name, &st, "")
        })();
        if let Err(e) = committed {
            // Not committed (a full disk, say): take the moved version back
            // out now rather than at the next open, unless the state on
            // disk refers to it after all.
            let referenced = self.read_state(&name).is_ok_and(|s| {
                s.current == digest || s.previous.as_deref() == Some(digest.as_str())
            });
            if !referenced {
                if old.is_none() {
                    let _ = remove_any(&ndir);
                } else if !reuse {
                    let _ = remove_any(&vdir);
                }
                let _ = fsync_dir(ndir.parent().unwrap_or(&ndir));
            }
            return Err(e);
        }
        // 7. Drop the version that is neither current nor previous.
        if let Some(gone) = old.and_then(|o| o.previous) {
            if gone != st.current {
                remove_any(&ndir.join(gone))?;
                fsync_dir(&ndir)?;
            }
        }
        crash_point("gc");
        self.describe(&name, &st.current, st.previous.as_deref())
    }

    /// Make the previous version current again (the current one becomes
    /// previous, so a rollback can itself be undone).
    pub fn rollback(&self, name: &str) -> Result<InstalledBundle, BundleError> {
        validate_name(name)?;
        let _l = self.lock()?;
        let st = self.read_state(name)?;
        let prev = st
            .previous
            .clone()
            .ok_or_else(|| BundleError::NoPrevious(name.to_string()))?;
        // The previous version must still verify before it runs again.
        self.check_version(name, &prev).map_err(|e| match e {
            BundleError::Broken(b) => BundleError::State(format!(
                "the previous version of {name:?} is damaged and cannot be rolled back to: {}: {}",
                b.file.display(),
                b.problem
            )),
            e => e,
        })?;
        let new = State::next(Some(&st), prev, Some(st.current.clone()));
        self.write_state(name, &new, "rollback-")?;
        self.describe(name, &new.current, new.previous.as_deref())
    }

    /// Remove `name`; its volumes too if `purge_volumes`. A broken bundle
    /// goes the same way: nothing of it needs to be readable. Each directory
    /// leaves by one rename into `tmp/` (emptied on open), so a power cut
    /// leaves it whole or gone.
    pub fn remove(&self, name: &str, purge_volumes: bool) -> Result<(), BundleError> {
        validate_name(name)?;
        let _l = self.lock()?;
        let dir = self.dir(name);
        match fs::symlink_metadata(&dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BundleError::NotInstalled(name.to_string()))
            }
            Err(e) => return Err(BundleError::io(&dir)(e)),
        }
        let grave = self.tmp().join(format!("removed-{name}-{}", now_nanos()));
        fs::rename(&dir, &grave).map_err(BundleError::io(&dir))?;
        fsync_dir(&self.root.join("installed"))?;
        fsync_dir(&self.tmp())?;
        crash_point("remove-renamed");
        remove_any(&grave)?;
        if purge_volumes {
            let v = self.root.join("volumes").join(name);
            if v.exists() {
                let grave = self.tmp().join(format!("purged-{name}-{}", now_nanos()));
                fs::rename(&v, &grave).map_err(BundleError::io(&v))?;
                fsync_dir(&self.root.join("volumes"))?;
                fsync_dir(&self.tmp())?;
                crash_point("purge-renamed");
                remove_any(&grave)?;
            }
        }
        Ok(())
    }

    /// All installed bundles, sorted by name: the ones that read back
    /// intact, and the broken ones with their problem. Fails only if the
    /// store's own `installed/` directory cannot be read.
    pub fn list(&self) -> Result<Listing, BundleError> {
        let inst = self.root.join("installed");
        let mut names: Vec<String> = fs::read_dir(&inst)
            .map_err(BundleError::io(&inst))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        let mut out = Listing::default();
        for n in names {
            match self.get(&n) {
                Ok(b) => out.bundles.push(b),
                Err(BundleError::NotInstalled(_)) => {}
                Err(BundleError::Broken(b)) => out.broken.push(b),
                Err(e) => out.broken.push(BrokenBundle {
                    name: n.clone(),
                    file: self.dir(&n),
                    problem: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// One installed bundle; [`BundleError::Broken`] if it cannot be read.
    pub fn get(&self, name: &str) -> Result<InstalledBundle, BundleError> {
        validate_name(name)?;
        let st = self.read_state(name)?;
        self.describe(name, &st.current, st.previous.as_deref())
    }

    /// Re-check a stored version's signature against the keyring now (so a
    /// revoked key stops its bundles) and its image size.
    fn check_version(&self, name: &str, digest: &str) -> Result<PathBuf, BundleError> {
        let (head, _) = self.read_head(name, digest)?;
        verify_head(&head, &self.keyring() as &dyn KeyLookup)?;
        if hex(&head.header.image_digest) != digest {
            return Err(broken_at(
                name,
                &self.dir(name).join(digest).join("head"),
                "signed for another image than the one stored with it",
            ));
        }
        self.image_of(name, digest, &head)
    }

    /// The verified image of the current version of `name`, for the
    /// container runtime to mount (read-only, nosuid, nodev). Fails if the
    /// signing key has been revoked since install.
    pub fn image_path(&self, name: &str) -> Result<PathBuf, BundleError> {
        // A broken bundle (any of its current files) never runs.
        let b = self.get(name)?;
        self.check_version(name, &b.digest)
    }

    /// Unattended provisioning (nuvol.toml `[bundles]`): trust `trusted_keys`
    /// (base64 public key lines; revoked ones are skipped with an error in
    /// the report), then install each bundle file unless the same or a newer
    /// version is already installed. One result per file, in order; a bad
    /// file never stops the others.
    pub fn provision(&self, trusted_keys: &[String], files: &[PathBuf]) -> ProvisionReport {
        let mut key_errors = Vec::new();
        let kr = self.keyring();
        for k in trusted_keys {
            let r = crate::keys::PublicKey::from_base64(k).and_then(|pk| {
                if kr.list()?.iter().any(|t| t.key_id == pk.key_id.to_string()) {
                    Ok(())
                } else {
                    kr.add(&pk, "from nuvol.toml")
                }
            });
            if let Err(e) = r {
                key_errors.push(e);
            }
        }
        let mut out = Vec::new();
        for f in files {
            let r = (|| {
                let (_, head) = crate::verify::read_head(f)?;
                // Already installed means this very bundle is current: the
                // same image *and* the same manifest. Bundles built from one
                // rootfs share an image digest but are services of their own.
                let digest = hex(&head.header.image_digest);
                for b in self.list()?.bundles {
                    if b.digest == digest && self.current_manifest_is(&b, &head.manifest_bytes)? {
                        return Ok(ProvisionOutcome::AlreadyInstalled(b));
                    }
                }
                match self.install(f) {
                    Ok(b) => Ok(ProvisionOutcome::Installed(b)),
                    Err(BundleError::Downgrade {
                        name, installed, ..
                    }) => Ok(ProvisionOutcome::NewerInstalled { name, installed }),
                    Err(e) => Err(e),
                }
            })();
            out.push((f.clone(), r));
        }
        ProvisionReport {
            key_errors,
            results: out,
        }
    }

    /// Whether the stored head of `b`'s current version carries exactly
    /// `manifest_bytes` (compared as bytes: an unverified manifest is never
    /// parsed).
    fn current_manifest_is(
        &self,
        b: &InstalledBundle,
        manifest_bytes: &[u8],
    ) -> Result<bool, BundleError> {
        let stored = self.dir(&b.name).join(&b.digest).join("head");
        let head = Head::parse_head_only(&read_small(&stored)?)?;
        Ok(head.manifest_bytes == manifest_bytes)
    }

    /// The current version of `name` as the exact signed file it was
    /// installed from (the stored head, which keeps the zero padding, then
    /// the image), byte for byte, so its signature verifies on another box.
    /// The signature is checked against the keyring first: a bundle whose
    /// key was revoked is not handed out. The image is opened here, so a
    /// later upgrade cannot change what the returned [`Export`] reads.
    pub fn export(&self, name: &str) -> Result<Export, BundleError> {
        validate_name(name)?;
        let st = self.read_state(name)?;
        let img = self.check_version(name, &st.current)?;
        let vdir = self.dir(name).join(&st.current);
        let head = read_small(&vdir.join("head"))?;
        let image = File::open(&img).map_err(BundleError::io(&img))?;
        let parsed = Head::parse_head_only(&head)?;
        let len = parsed.header.file_len();
        let b = self.describe(name, &st.current, None)?;
        Ok(Export {
            bundle: b,
            len,
            head,
            image,
        })
    }

    /// Re-hash the current image of `name` and compare with its signed digest.
    pub fn verify_installed(&self, name: &str) -> Result<(), BundleError> {
        let img = self.image_path(name)?;
        let mut f = File::open(&img).map_err(BundleError::io(&img))?;
        let len = f.metadata().map_err(BundleError::io(&img))?.len();
        let d = hex(&crate::verify::hash_exact(&mut f, len, None)?);
        let st = self.read_state(name)?;
        if d != st.current {
            return Err(BundleError::DigestMismatch {
                expected: st.current,
                actual: d,
            });
        }
        Ok(())
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn remove_any(p: &Path) -> Result<(), BundleError> {
    let md = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BundleError::io(p)(e)),
    };
    if md.is_dir() {
        fs::remove_dir_all(p).map_err(BundleError::io(p))
    } else {
        fs::remove_file(p).map_err(BundleError::io(p))
    }
}
