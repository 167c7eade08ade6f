//! Read-only loop mount of a verified image (Linux, root only).
//!
//! Used by the store to scan an image's contents before install, and usable
//! by the container runtime to mount the image returned by
//! `Store::image_path`. Mounts are always `ro,nosuid,nodev`; `noexec` on request.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::BundleError;
use crate::format::ImageType;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

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

/// Attach `len` bytes of `file` at `offset` to a free read-only loop device.
fn attach_loop(file: &File, offset: u64, len: u64) -> Result<(File, PathBuf), BundleError> {
    let ctl = File::open("/dev/loop-control").map_err(BundleError::io("/dev/loop-control"))?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(os_err("LOOP_CTL_GET_FREE"));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let lo = match OpenOptions::new().read(true).open(&dev) {
            Ok(f) => f,
            Err(_) => continue,
        };
        let cfg = LoopConfig {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: len,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: `cfg` is a properly laid out `struct loop_config` that
        // lives across the call; the kernel only reads it.
        let r = unsafe { libc::ioctl(lo.as_raw_fd(), LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            return Ok((lo, dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(BundleError::Image(format!(
                "LOOP_CONFIGURE {}: {e}",
                dev.display()
            )));
        }
        // Someone else took it between GET_FREE and CONFIGURE: try again.
    }
    Err(BundleError::Image("no free loop device".into()))
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
    let (lo, dev) = attach_loop(&file, offset, len)?;
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
