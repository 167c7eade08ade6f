//! Read-only loop devices through `/dev/loop-control` (no losetup): how
//! bundle images (squashfs/erofs files) become mountable block devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`
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

/// `struct loop_config`
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}
// Fixed-width fields only: the same layout on 32- and 64-bit.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// A loop device attached read-only with autoclear: the kernel detaches it
/// once this handle is dropped and the last mount of it is gone.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _file: File,
}

impl LoopDevice {
    /// Attach `len` bytes (0: up to the end) at `offset` of `backing` to a
    /// free loop device. `name` is recorded as the backing file's name.
    pub fn attach(backing: &File, offset: u64, len: u64, name: &Path) -> io::Result<LoopDevice> {
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let mut file_name = [0u8; 64];
        let src = name.as_os_str().as_encoded_bytes();
        let n = src.len().min(63);
        file_name[..n].copy_from_slice(&src[..n]);
        // Another process may take the free device between GET_FREE and
        // CONFIGURE: retry a few times.
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = OpenOptions::new().read(true).open(&path)?;
            let cfg = LoopConfig {
                fd: backing.as_raw_fd() as u32,
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
                    lo_file_name: file_name,
                    lo_crypt_name: [0; 64],
                    lo_encrypt_key: [0; 32],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `cfg`
            // is laid out as; it lives across the call.
            let r =
                unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
            if r == 0 {
                return Ok(LoopDevice { path, _file: dev });
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("LOOP_CONFIGURE {}: {e}", path.display()),
                ));
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "no free loop device after 16 tries",
        ))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
