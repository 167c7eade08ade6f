//! Atomic file replacement: temp file, fsync, rename, fsync directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::BundleError;

/// fsync a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), BundleError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(BundleError::io(dir))
}

/// Replace `path` with `data` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BundleError> {
    let dir = path
        .parent()
        .ok_or_else(|| BundleError::State(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| BundleError::State(format!("{} has no file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(BundleError::io(&tmp))?;
    f.write_all(data).map_err(BundleError::io(&tmp))?;
    f.sync_all().map_err(BundleError::io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(BundleError::io(path))?;
    fsync_dir(dir)
}

/// Create a directory (and parents) and fsync its parent.
pub fn create_dir_durable(dir: &Path) -> Result<(), BundleError> {
    fs::create_dir_all(dir).map_err(BundleError::io(dir))?;
    if let Some(p) = dir.parent() {
        fsync_dir(p)?;
    }
    Ok(())
}

/// fsync every regular file and directory under `dir` (bottom-up).
pub fn fsync_tree(dir: &Path) -> Result<(), BundleError> {
    for e in fs::read_dir(dir).map_err(BundleError::io(dir))? {
        let e = e.map_err(BundleError::io(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(BundleError::io(&p))?;
        if ft.is_dir() {
            fsync_tree(&p)?;
        } else if ft.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(BundleError::io(&p))?;
        }
    }
    fsync_dir(dir)
}
