//! Loop devices for read-only filesystem images, through the
//! `/dev/loop-control` ioctls (no losetup).

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{ContainerError, Result};

/// A read-only, autoclear loop device for a container's image (the
/// primitive lives in `nuvol_disk::loopdev`, shared with the bundle store).
#[derive(Debug)]
pub struct LoopDevice(nuvol_disk::loopdev::LoopDevice);

impl LoopDevice {
    /// Attach `image` to a free loop device.
    pub fn attach(image: &Path) -> Result<Self> {
        let err = |source: io::Error| ContainerError::Loop {
            path: image.to_path_buf(),
            source,
        };
        let backing = File::open(image).map_err(err)?;
        nuvol_disk::loopdev::LoopDevice::attach(&backing, 0, 0, image)
            .map(LoopDevice)
            .map_err(err)
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}
