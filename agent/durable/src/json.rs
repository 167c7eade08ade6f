//! JSON state files that outlive the agent that wrote them (docs/boot.md,
//! "Versions across an update and its rollback"): after an OS update the
//! newer agent reads what the older one left, after a rollback the older
//! agent reads what the newer one wrote.
//!
//! So a file (or, where the file is a bare array, each entry) carries a
//! `format` number, 1 when it has none; fields missing read as their
//! default; fields this agent does not know are kept in an `extra` map and
//! written back as they were, and the `format` read is written back, never
//! lowered. [`Entry`] does that for one array entry.
//!
//! A file that cannot be read is never replaced unseen: [`read`] moves it
//! aside to `NAME.bad` and says so, so a human can still look at it.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Mode;

/// The format of a file written before files carried a number.
pub const FIRST_FORMAT: u32 = 1;

/// Serde default of a `format` field: a file without one is format 1.
pub fn first_format() -> u32 {
    FIRST_FORMAT
}

/// For `skip_serializing_if` where an older agent refuses unknown keys:
/// format 1 is then written as no `format` key at all.
pub fn is_first_format(format: &u32) -> bool {
    *format == FIRST_FORMAT
}

/// Fields of a newer agent's format, kept as they are.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// One entry of a state file that is a bare JSON array (whose readers
/// expect an array, so the number cannot sit at the top): `value`'s fields,
/// the entry's `format` and the fields of a newer format, side by side in
/// one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<T> {
    #[serde(default = "first_format")]
    pub format: u32,
    #[serde(flatten)]
    pub value: T,
    #[serde(flatten)]
    pub extra: Extra,
}

impl<T> Entry<T> {
    /// A new entry in this agent's format, `format`.
    pub fn new(format: u32, value: T) -> Entry<T> {
        Entry {
            format,
            value,
            extra: Extra::new(),
        }
    }
}

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It is kept at `bad`; nothing is at `path` any more.
    #[error("{}: cannot be read ({why}); kept as {}", path.display(), bad.display())]
    SetAside {
        path: PathBuf,
        bad: PathBuf,
        why: String,
    },
    /// It could not even be moved aside.
    #[error("{}: cannot be read ({why}) nor moved aside: {source}", path.display())]
    Stuck {
        path: PathBuf,
        why: String,
        source: io::Error,
    },
}

/// Where [`read`] keeps a file it cannot read: `NAME.bad` beside it.
pub fn bad_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".bad");
    PathBuf::from(p)
}

/// Read the JSON state file at `path`: `Ok(None)` when there is none. One
/// that cannot be read, is larger than `max` bytes or does not parse as a
/// `T` is renamed to [`bad_path`] (replacing an older one), so the caller
/// may start afresh without destroying it; the error names both files and
/// the reason, for the caller to log.
pub fn read<T: DeserializeOwned>(path: &Path, max: u64) -> Result<Option<T>, ReadError> {
    let why = match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => e.to_string(),
        Ok(m) if m.len() > max => format!("{} bytes, more than {max}", m.len()),
        Ok(_) => match std::fs::read(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => e.to_string(),
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => e.to_string(),
            },
        },
    };
    let bad = bad_path(path);
    match std::fs::rename(path, &bad) {
        Ok(()) => {
            let _ = crate::fsync_dir(crate::parent(path));
            Err(ReadError::SetAside {
                path: path.to_path_buf(),
                bad,
                why,
            })
        }
        Err(source) => Err(ReadError::Stuck {
            path: path.to_path_buf(),
            why,
            source,
        }),
    }
}

/// Replace `path` with `value` as indented JSON, durably
/// ([`crate::write_atomic`]).
pub fn write<T: Serialize + ?Sized>(path: &Path, value: &T, mode: Mode) -> io::Result<()> {
    let mut b = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    b.push(b'\n');
    crate::write_atomic(path, &b, mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        id: String,
        #[serde(default)]
        note: String,
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nuvol-json-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn entries_of_older_and_newer_agents_are_read_and_kept() {
        // Older: no format, no note.
        let old: Entry<Item> = serde_json::from_value(json!({"id": "a"})).unwrap();
        assert_eq!(old.format, 1);
        assert_eq!(old.value.id, "a");
        assert!(old.value.note.is_empty() && old.extra.is_empty());
        // Newer: format 2 and a field this agent does not know; the known
        // fields land in `value`, only the unknown one in `extra`.
        let new: Entry<Item> =
            serde_json::from_value(json!({"format": 2, "id": "b", "note": "n", "scope": ["read"]}))
                .unwrap();
        assert_eq!((new.format, new.value.id.as_str()), (2, "b"));
        assert_eq!(new.value.note, "n");
        assert_eq!(new.extra.keys().collect::<Vec<_>>(), ["scope"]);
        assert_eq!(
            serde_json::to_value(&new).unwrap(),
            json!({"format": 2, "id": "b", "note": "n", "scope": ["read"]})
        );
        assert_eq!(
            serde_json::to_value(Entry::new(1, old.value)).unwrap(),
            json!({"format": 1, "id": "a", "note": ""})
        );
    }

    #[test]
    fn read_and_write_a_state_file() {
        let d = scratch("rw");
        let p = d.join("list.json");
        assert!(read::<Vec<Item>>(&p, 1024).unwrap().is_none());
        let items = vec![Item {
            id: "x".into(),
            note: "y".into(),
        }];
        write(&p, &items, Mode::Private).unwrap();
        assert!(std::fs::read(&p).unwrap().ends_with(b"]\n"));
        assert_eq!(read::<Vec<Item>>(&p, 1024).unwrap().unwrap(), items);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_cannot_be_read_is_kept_aside_not_lost() {
        let d = scratch("bad");
        let p = d.join("tokens.json");
        std::fs::write(&p, b"[{\"id\": ").unwrap();
        let e = read::<Vec<Item>>(&p, 1024).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ReadError::SetAside { .. }), "{msg}");
        assert!(
            msg.contains("tokens.json: cannot be read (EOF while parsing")
                && msg.ends_with("tokens.json.bad"),
            "{msg}"
        );
        assert!(!p.exists());
        assert_eq!(std::fs::read(bad_path(&p)).unwrap(), b"[{\"id\": ");
        // Now the caller starts afresh.
        assert!(read::<Vec<Item>>(&p, 1024).unwrap().is_none());
        // Too large, or JSON of another shape: the same.
        std::fs::write(&p, vec![b' '; 2000]).unwrap();
        let msg = read::<Vec<Item>>(&p, 1024).unwrap_err().to_string();
        assert!(msg.contains("2000 bytes, more than 1024"), "{msg}");
        std::fs::write(&p, br#"{"id": "x"}"#).unwrap();
        let msg = read::<Vec<Item>>(&p, 1024).unwrap_err().to_string();
        assert!(
            msg.contains("invalid type: map, expected a sequence"),
            "{msg}"
        );
        assert_eq!(std::fs::read(bad_path(&p)).unwrap(), br#"{"id": "x"}"#);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
