//! Read-only loop mount of a verified image (Linux, root only).
//!
//! Used by the store to scan an image's contents before install, and usable
//! by the container runtime to mount the image returned by
//! `Store::image_path`. Mounts are always `ro,nosuid,nodev`; `noexec` on request.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::BundleError;
use crate::format::ImageType;

/// A mounted image; unmounted (lazily) on drop. The loop device has
/// AUTOCLEAR set, so it is released with the mount.
#[derive(Debug)]
pub struct MountedImage {
    target: PathBuf,
}

impl MountedImage {
    /// Where the image is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.target.as_os_str().as_bytes()) {
            // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn os_err(what: &str) -> BundleError {
    BundleError::Image(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Mount `len` bytes at `offset` of `image` read-only at `target`.
pub fn mount_image(
    image: &Path,
    offset: u64,
    len: u64,
    fs: ImageType,
    target: &Path,
    noexec: bool,
) -> Result<MountedImage, BundleError> {
    let file = File::open(image).map_err(BundleError::io(image))?;
    let lo = nuvol_disk::loopdev::LoopDevice::attach(&file, offset, len, image)
        .map_err(|e| BundleError::Image(format!("loop device for {}: {e}", image.display())))?;
    let dev = lo.path().to_path_buf();
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| BundleError::Image("NUL in path".into()))
    };
    let (src, tgt) = (c(&dev)?, c(target)?);
    let fstype = CString::new(fs.fs_name()).map_err(|_| BundleError::Image("fs name".into()))?;
    let mut flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if noexec {
        flags |= libc::MS_NOEXEC;
    }
    // SAFETY: all pointers are valid NUL-terminated strings alive for the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    let err = (r != 0).then(|| os_err(&format!("mount {} on {}", dev.display(), target.display())));
    // With AUTOCLEAR the device detaches once unmounted and closed.
    drop(lo);
    drop(file);
    match err {
        Some(e) => Err(e),
        None => Ok(MountedImage {
            target: target.to_path_buf(),
        }),
    }
}
