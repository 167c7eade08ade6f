//! Durable file replacement, the one way nuvol writes state.
//!
//! [`write_atomic`] writes a temp file beside the target, fsyncs it, renames
//! it over the target and fsyncs the directory, so after a power cut the
//! path holds the old bytes or the new ones, never a mix or nothing. On
//! error the temp file is removed and the target is untouched.
//!
//! [`json`] reads and writes the JSON state files that older and newer
//! agents share across an OS update and its rollback.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub mod json;

/// Who may read the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0644 (less the umask): configuration, leases, state anyone may read.
    Public,
    /// 0600: secrets (tokens, keys, password hashes).
    Private,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Mode::Public => 0o644,
            Mode::Private => 0o600,
        }
    }
}

/// Replace `path` with `data` durably; creates missing parent directories.
pub fn write_atomic(path: &Path, data: &[u8], mode: Mode) -> io::Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.bits())
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)
}

/// fsync a directory, so a rename or create inside it survives a power cut.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.<name>.<pid>.<n>.tmp` beside `path`: unique per process and call, so two
/// writers of one file never share a temp file.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: no file name", path.display()),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(parent(path).join(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nuvol-durable-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn replaces_creates_parents_and_leaves_no_temp() {
        let d = scratch("replace");
        let p = d.join("a/b/state.json");
        write_atomic(&p, b"one", Mode::Public).unwrap();
        write_atomic(&p, b"two", Mode::Public).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn private_files_are_0600_even_when_replacing_a_public_one() {
        let d = scratch("mode");
        let p = d.join("token");
        write_atomic(&p, b"x", Mode::Public).unwrap();
        write_atomic(&p, b"secret", Mode::Private).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_cleans_up() {
        let d = scratch("fail");
        let p = d.join("keep");
        write_atomic(&p, b"old", Mode::Public).unwrap();
        // The target is a non-empty directory now: the rename must fail.
        let q = d.join("dir");
        fs::create_dir_all(q.join("inside")).unwrap();
        assert!(write_atomic(&q, b"new", Mode::Public).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(write_atomic(Path::new("/"), b"x", Mode::Public).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn concurrent_writers_of_one_file_never_mix() {
        let d = scratch("race");
        let p = d.join("f");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&p, &[i; 4096], Mode::Public).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let b = fs::read(&p).unwrap();
        assert_eq!(b.len(), 4096);
        assert!(b.iter().all(|&x| x == b[0]));
        fs::remove_dir_all(&d).unwrap();
    }
}
