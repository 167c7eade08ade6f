//! Trusted publisher keys and the revocation list, persisted atomically in
//! `<data>/bundles/keyring.json`.
//!
//! **Versions** (docs/boot.md, "Versions across an update and its
//! rollback"): the file has a `format` number, 1 when absent, and keeps
//! the fields of a newer agent's format (at the top and in each key) when
//! this agent rewrites it. Format 1 is written as no `format` key: the
//! agents released before formats refuse a keyring with a top-level key
//! they do not know (and then verify no bundle), so the top level gains no
//! key while a rollback to one of them is possible; keys may gain fields.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nuvol_durable::json::{first_format, is_first_format, Extra};
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::fsutil::write_atomic;
use crate::keys::{KeyId, PublicKey};
use crate::verify::KeyLookup;

/// Largest keyring file read.
pub const MAX_KEYRING_BYTES: u64 = 1 << 20;
/// The keyring format this agent writes (see the module's "Versions").
pub const KEYRING_FORMAT: u32 = 1;

/// One trusted key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedKey {
    /// 16 hex digits, as minisign prints it.
    pub key_id: String,
    /// The base64 line of the signify/minisign public key file.
    pub public_key: String,
    pub comment: String,
    /// Unix seconds.
    pub added_at: u64,
    /// Fields of a newer agent's format, kept as they are.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One revoked key id (kept even after the key is removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevokedKey {
    pub key_id: String,
    pub reason: String,
    pub revoked_at: u64,
    /// Fields of a newer agent's format, kept as they are.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyringData {
    /// The format it was written in; 1 is written as none (see the
    /// module's "Versions").
    #[serde(default = "first_format", skip_serializing_if = "is_first_format")]
    pub format: u32,
    #[serde(default)]
    pub trusted: Vec<TrustedKey>,
    #[serde(default)]
    pub revoked: Vec<RevokedKey>,
    /// Fields of a newer agent's format, kept as they are.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for KeyringData {
    fn default() -> Self {
        KeyringData {
            format: KEYRING_FORMAT,
            trusted: Vec::new(),
            revoked: Vec::new(),
            extra: Extra::new(),
        }
    }
}

/// Handle on the keyring file. Cheap to clone; every call re-reads the file
/// under a lock, so several handles (and processes) stay consistent.
#[derive(Debug, Clone)]
pub struct Keyring {
    path: PathBuf,
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An exclusive `flock` held until drop.
pub(crate) struct FileLock(File);

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<FileLock, BundleError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(BundleError::io(path))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(FileLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(BundleError::io(path)(e));
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own descriptor; closing would release it anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Keyring {
    /// The keyring stored at `path` (created on first change).
    pub fn at(path: &Path) -> Keyring {
        Keyring {
            path: path.to_path_buf(),
        }
    }

    fn lock(&self) -> Result<FileLock, BundleError> {
        let mut l = self.path.as_os_str().to_owned();
        l.push(".lock");
        FileLock::acquire(Path::new(&l))
    }

    /// Read the file (empty keyring if absent).
    pub fn load(&self) -> Result<KeyringData, BundleError> {
        let len = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyringData::default()),
            Err(e) => return Err(BundleError::io(&self.path)(e)),
        };
        if len > MAX_KEYRING_BYTES {
            return Err(BundleError::Keyring(format!(
                "{} is {len} bytes: too large",
                self.path.display()
            )));
        }
        let bytes = std::fs::read(&self.path).map_err(BundleError::io(&self.path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BundleError::Keyring(format!("{}: {e}", self.path.display())))
    }

    fn save(&self, d: &KeyringData) -> Result<(), BundleError> {
        let bytes =
            serde_json::to_vec_pretty(d).map_err(|e| BundleError::Keyring(e.to_string()))?;
        write_atomic(&self.path, &bytes)
    }

    /// Trust `key`. Refused if its id is revoked; replaces a key with the same id.
    pub fn add(&self, key: &PublicKey, comment: &str) -> Result<(), BundleError> {
        let _l = self.lock()?;
        let mut d = self.load()?;
        let id = key.key_id.to_string();
        if d.revoked.iter().any(|r| r.key_id == id) {
            return Err(BundleError::KeyIsRevoked(id));
        }
        // A key added again keeps what a newer agent noted about it.
        let extra = d
            .trusted
            .iter()
            .find(|t| t.key_id == id)
            .map(|t| t.extra.clone())
            .unwrap_or_default();
        d.trusted.retain(|t| t.key_id != id);
        d.trusted.push(TrustedKey {
            key_id: id,
            public_key: key.to_base64(),
            comment: comment.chars().take(256).collect(),
            added_at: now(),
            extra,
        });
        self.save(&d)
    }

    /// Trust the key in a signify/minisign public key file's text.
    /// The key file's own comment (`untrusted comment: …`, as `nuvol bundle
    /// keygen`, signify and minisign write it) is kept, so `keys list` says
    /// whose key it is; `fallback` names a bare base64 line. Control
    /// characters are dropped and the comment is cut at 256 characters.
    pub fn add_text(&self, text: &str, fallback: &str) -> Result<KeyId, BundleError> {
        let k = PublicKey::from_text(text).or_else(|_| PublicKey::from_base64(text))?;
        self.add(&k, &comment_of(text, fallback))?;
        Ok(k.key_id)
    }

    /// Stop trusting `id`. Returns whether it was trusted.
    pub fn remove(&self, id: &KeyId) -> Result<bool, BundleError> {
        let _l = self.lock()?;
        let mut d = self.load()?;
        let s = id.to_string();
        let before = d.trusted.len();
        d.trusted.retain(|t| t.key_id != s);
        let removed = d.trusted.len() != before;
        if removed {
            self.save(&d)?;
        }
        Ok(removed)
    }

    /// Revoke `id` for good: it is removed from the trusted list, bundles
    /// signed by it are refused, and it cannot be added again.
    pub fn revoke(&self, id: &KeyId, reason: &str) -> Result<(), BundleError> {
        let _l = self.lock()?;
        let mut d = self.load()?;
        let s = id.to_string();
        d.trusted.retain(|t| t.key_id != s);
        if !d.revoked.iter().any(|r| r.key_id == s) {
            d.revoked.push(RevokedKey {
                key_id: s,
                reason: reason.chars().take(256).collect(),
                revoked_at: now(),
                extra: Extra::new(),
            });
        }
        self.save(&d)
    }

    /// The trusted keys.
    pub fn list(&self) -> Result<Vec<TrustedKey>, BundleError> {
        Ok(self.load()?.trusted)
    }

    /// The revocation list.
    pub fn revoked(&self) -> Result<Vec<RevokedKey>, BundleError> {
        Ok(self.load()?.revoked)
    }

    /// Is `id` revoked?
    pub fn is_revoked(&self, id: &KeyId) -> Result<bool, BundleError> {
        let s = id.to_string();
        Ok(self.load()?.revoked.iter().any(|r| r.key_id == s))
    }
}

impl KeyLookup for Keyring {
    fn lookup(&self, id: &KeyId) -> Result<PublicKey, BundleError> {
        let d = self.load()?;
        let s = id.to_string();
        if d.revoked.iter().any(|r| r.key_id == s) {
            return Err(BundleError::RevokedKey(s));
        }
        let t = d
            .trusted
            .iter()
            .find(|t| t.key_id == s)
            .ok_or(BundleError::UnknownKey(s))?;
        let k = PublicKey::from_base64(&t.public_key)?;
        if k.key_id != *id {
            return Err(BundleError::Keyring(format!(
                "entry {} holds key {}",
                t.key_id, k.key_id
            )));
        }
        Ok(k)
    }
}

/// The comment to keep for a key added from `text`.
fn comment_of(text: &str, fallback: &str) -> String {
    let own = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("untrusted comment:"))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    own.unwrap_or(fallback)
        .chars()
        .filter(|c| !c.is_control())
        .take(256)
        .collect()
}

#[cfg(test)]
mod comment_tests {
    use super::comment_of;

    #[test]
    fn a_key_files_own_comment_is_kept() {
        let f = "untrusted comment: DEVELOPMENT ONLY recipes key\nRWQ...\n";
        assert_eq!(comment_of(f, "api"), "DEVELOPMENT ONLY recipes key");
        assert_eq!(comment_of("RWQ...", "api"), "api", "a bare line");
        assert_eq!(
            comment_of("untrusted comment:   \nRWQ", "api"),
            "api",
            "empty"
        );
        assert_eq!(
            comment_of("untrusted comment: a\u{1b}[31mb\nRWQ", "api"),
            "a[31mb"
        );
        assert_eq!(
            comment_of(&format!("untrusted comment: {}\n", "x".repeat(999)), "").len(),
            256
        );
    }
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use crate::keys::SecretKey;
    use serde_json::json;

    /// What the agents released before formats read: an unknown top-level
    /// key is refused there.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct ReleasedKeyring {
        #[serde(default)]
        trusted: Vec<serde_json::Value>,
        #[serde(default)]
        revoked: Vec<serde_json::Value>,
    }

    fn key() -> PublicKey {
        SecretKey::generate().unwrap().public()
    }

    fn raw(p: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn keyrings_of_older_and_newer_agents_are_read_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keyring.json");
        let (a, b, c) = (key(), key(), key());
        // Update: an older agent's keyring, no format.
        let old = json!({
            "trusted": [{"key_id": a.key_id.to_string(), "public_key": a.to_base64(),
                         "comment": "a", "added_at": 1}],
            "revoked": []
        });
        std::fs::write(&p, old.to_string()).unwrap();
        let kr = Keyring::at(&p);
        let data = kr.load().unwrap();
        assert_eq!((data.format, data.trusted.len()), (1, 1));
        assert!(data.extra.is_empty() && data.trusted[0].extra.is_empty());
        assert_eq!(kr.lookup(&a.key_id).unwrap(), a);
        kr.add(&b, "b").unwrap();
        // Format 1 is written as none: a released agent still reads it.
        let written = raw(&p);
        assert!(written.get("format").is_none(), "{written}");
        let released: ReleasedKeyring = serde_json::from_value(written).unwrap();
        assert_eq!(released.trusted.len(), 2);
        // Rollback: a newer agent's keyring, with fields at the top and in
        // the keys, is read, changed and written back with them intact.
        let new = json!({
            "format": 2,
            "trusted": [{"key_id": a.key_id.to_string(), "public_key": a.to_base64(),
                         "comment": "a", "added_at": 1, "scope": ["web"]}],
            "revoked": [{"key_id": "0123456789ABCDEF", "reason": "leaked",
                         "revoked_at": 2, "by": "admin"}],
            "pins": {"web": "3f"}
        });
        std::fs::write(&p, new.to_string()).unwrap();
        assert_eq!(kr.lookup(&a.key_id).unwrap(), a);
        assert!(kr
            .is_revoked(&KeyId::parse_hex("0123456789ABCDEF").unwrap())
            .unwrap());
        kr.add(&b, "b").unwrap();
        kr.add(&a, "a again").unwrap();
        kr.revoke(&c.key_id, "lost").unwrap();
        let written = raw(&p);
        assert_eq!(written["format"], 2);
        assert_eq!(written["pins"], json!({"web": "3f"}));
        let trusted = written["trusted"].as_array().unwrap();
        assert_eq!(trusted.len(), 2);
        assert_eq!(trusted[1]["comment"], "a again");
        assert_eq!(trusted[1]["scope"], json!(["web"]));
        assert!(trusted[0].get("scope").is_none());
        assert_eq!(written["revoked"][0]["by"], "admin");
        assert_eq!(written["revoked"][1]["reason"], "lost");
        assert_eq!(kr.lookup(&b.key_id).unwrap(), b);
    }

    #[test]
    fn an_unreadable_keyring_is_an_error_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keyring.json");
        std::fs::write(&p, b"{\"trusted\": [").unwrap();
        let kr = Keyring::at(&p);
        let e = kr.add(&key(), "x").unwrap_err().to_string();
        assert!(e.contains("keyring.json") && e.contains("EOF"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"trusted\": [");
    }
}
