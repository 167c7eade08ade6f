//! Free space for bundles: how much there is on the store's filesystem and
//! how much an install needs, so a bundle that cannot fit is refused before
//! anything is written, with both numbers in the answer.
//!
//! What an install occupies at its peak, next to what is installed already:
//!
//! - an upload (API `POST /api/v1/bundles`, `…/verify`, a fetch from a peer,
//!   a `[bundles] install` URL) is first kept whole as a file in the store's
//!   `tmp/` (a `multipart/form-data` upload briefly twice: the form, then the
//!   file cut out of it, after which the form is deleted);
//! - the install then copies the image out of that file into a staging
//!   directory while hashing it (the store keeps only the image, not the
//!   file), and the file is deleted after the install.
//!
//! So receiving and installing a bundle file of `len` bytes needs
//! [`needed_to_receive`] = 2 × `len` + [`SLACK`] free bytes, and installing
//! a file that is already there (a pending upload, a file on the boot
//! partition) needs [`needed_to_install`] = image length + [`SLACK`].
//! [`SLACK`] covers the small files of a version (head, meta, state) and
//! the filesystem's own metadata for the new files.
//!
//! An upgrade keeps the previous version for rollback and drops the one
//! before it only after the new one is committed, so during an upgrade the
//! old versions still count as used: the free space reported is what is
//! available now.

use std::path::{Path, PathBuf};

use crate::error::BundleError;

/// Bytes added to every need: version files and filesystem metadata.
pub const SLACK: u64 = 1 << 20;

/// Free and total bytes of the filesystem holding `path`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    /// The directory asked about.
    pub path: PathBuf,
    /// Bytes an unprivileged writer may still use (`f_bavail × f_frsize`):
    /// root could use the reserved blocks too, but they are left alone.
    pub free_bytes: u64,
    /// Size of the filesystem (`f_blocks × f_frsize`).
    pub total_bytes: u64,
}

/// `statvfs(2)` of the filesystem holding `path`.
pub fn space(path: &Path) -> Result<Space, BundleError> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| BundleError::State(format!("{}: NUL in path", path.display())))?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a properly sized, writable struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(BundleError::io(path)(std::io::Error::last_os_error()));
    }
    let frsize = st.f_frsize as u64;
    Ok(Space {
        path: path.to_path_buf(),
        free_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
    })
}

/// Free bytes needed to receive a bundle file of `len` bytes onto the
/// store's filesystem and then install it.
pub fn needed_to_receive(len: u64) -> u64 {
    len.saturating_mul(2).saturating_add(SLACK)
}

/// Free bytes needed to install a bundle whose image is `image_len` bytes
/// from a file that is already stored (or on another filesystem).
pub fn needed_to_install(image_len: u64) -> u64 {
    image_len.saturating_add(SLACK)
}

/// The largest bundle file that [`needed_to_receive`] lets in with `free`
/// bytes free.
pub fn largest_receivable(free: u64) -> u64 {
    free.saturating_sub(SLACK) / 2
}

/// `Err(NoSpace)` unless `needed` bytes are free on `path`'s filesystem.
pub fn ensure(path: &Path, needed: u64) -> Result<Space, BundleError> {
    let s = space(path)?;
    if s.free_bytes < needed {
        return Err(BundleError::NoSpace {
            path: path.to_path_buf(),
            needed,
            free: s.free_bytes,
        });
    }
    Ok(s)
}

/// Whether an I/O error means the filesystem (or a quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_and_room() {
        assert_eq!(needed_to_receive(10), 20 + SLACK);
        assert_eq!(needed_to_install(10), 10 + SLACK);
        assert_eq!(needed_to_receive(u64::MAX), u64::MAX);
        for free in [0, SLACK, SLACK + 1, 3 * SLACK + 7, 1 << 40] {
            let l = largest_receivable(free);
            assert!(needed_to_receive(l) <= free.max(SLACK), "{free}");
            assert!(free < SLACK || needed_to_receive(l + 1) > free, "{free}");
        }
    }

    #[test]
    fn statvfs_of_a_real_directory() {
        let s = space(Path::new("/")).unwrap();
        assert!(s.total_bytes > 0 && s.free_bytes <= s.total_bytes, "{s:?}");
        assert!(space(Path::new("/nonexistent/x")).is_err());
        assert!(matches!(
            ensure(Path::new("/"), u64::MAX),
            Err(BundleError::NoSpace {
                needed: u64::MAX,
                ..
            })
        ));
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_full(&full) && !is_full(&std::io::Error::other("x")));
    }
}
