//! Atomic file replacement: temp file, fsync, rename, fsync directory.

use std::fs::{self, File};

use std::path::Path;

use crate::error::BundleError;

/// fsync a directory so a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), BundleError> {
    nuvol_durable::fsync_dir(dir).map_err(BundleError::io(dir))
}

/// Replace `path` with `data` atomically and durably.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), BundleError> {
    nuvol_durable::write_atomic(path, data, nuvol_durable::Mode::Public)
        .map_err(BundleError::io(path))
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
