//! Disks of a nuvol box.
//!
//! The image carries two GPT partitions named `nuvol-boot` (FAT: boot loaders,
//! OS slots A/B, `nuvol.toml`) and `nuvol-data` (ext4: everything mutable).
//! At boot PID 1 finds them by GPT partition name through sysfs (no udev, no
//! blkid), keeps only the boot partition the box booted from and the data
//! partition on the same disk ([`select`]: a second stick carrying its own
//! `nuvol-boot` is refused, never used), and on the first boot after `dd`
//! to a larger stick it grows
//! `nuvol-data` to fill the disk: GPT first ([`gpt::grow_partition`]), then
//! the kernel's view of the partition (BLKPG), then the mounted ext4 online
//! (EXT4_IOC_RESIZE_FS).

mod bind;
pub mod gpt;
pub mod loopdev;
mod other;

pub use bind::{
    loader_partuuid, normalize_partuuid, partuuid_from_cmdline, select, Binding, BindingSource,
    Selection, LOADER_DEVICE_PARTUUID,
};
pub use other::{other_volumes, other_volumes_seen, GptSeen, Volume, MAX_VOLUMES};

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// GPT partition name of the boot (FAT) partition.
pub const BOOT_PARTNAME: &str = "nuvol-boot";
/// GPT partition name of the data (ext4) partition.
pub const DATA_PARTNAME: &str = "nuvol-data";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid GPT: {0}")]
    BadGpt(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("not an ext4 filesystem: {0}")]
    NotExt4(String),
}

/// A partition as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `/dev/vda2`
    pub dev: PathBuf,
    /// `/dev/vda`
    pub disk: PathBuf,
    /// Partition number, 1-based.
    pub number: u32,
    /// Start and size in 512-byte sectors (sysfs units).
    pub start: u64,
    pub sectors: u64,
    /// The GPT unique partition GUID (`PARTUUID`), lowercase; `None` when
    /// the disk's partition table could not be read.
    pub partuuid: Option<String>,
}

fn uevent_field<'a>(uevent: &'a str, key: &str) -> Option<&'a str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The first (by device name) partition named `partname` under `sys_block`
/// (normally `/sys/class/block`). PID 1 does not use this: it takes the
/// boot partition the box booted from ([`select`]), never just the first.
pub fn find_partition(sys_block: &Path, dev_dir: &Path, partname: &str) -> Option<Partition> {
    find_partitions(sys_block, dev_dir, partname)
        .into_iter()
        .next()
}

/// Every partition named `partname` (GPT name) under `sys_block`, sorted
/// by device name, each with its PARTUUID read from its disk's GPT.
pub fn find_partitions(sys_block: &Path, dev_dir: &Path, partname: &str) -> Vec<Partition> {
    let mut found: Vec<Partition> = Vec::new();
    let Ok(dir) = fs::read_dir(sys_block) else {
        return found;
    };
    // One read of each disk's GPT.
    let mut tables: Vec<(PathBuf, Option<Vec<gpt::Entry>>)> = Vec::new();
    let mut table = |disk: &Path| -> Option<Vec<gpt::Entry>> {
        if let Some((_, t)) = tables.iter().find(|(d, _)| d == disk) {
            return t.clone();
        }
        let t = File::open(disk)
            .ok()
            .and_then(|f| gpt::entries(&f, sector_size(&f).ok()?).ok());
        tables.push((disk.to_path_buf(), t.clone()));
        t
    };
    for ent in dir.flatten() {
        let dir = ent.path();
        let Ok(uevent) = fs::read_to_string(dir.join("uevent")) else {
            continue;
        };
        if uevent_field(&uevent, "DEVTYPE") != Some("partition") {
            continue;
        }
        let (Some(devname), Some(number)) = (
            uevent_field(&uevent, "DEVNAME"),
            uevent_field(&uevent, "PARTN").and_then(|n| n.parse::<u32>().ok()),
        ) else {
            continue;
        };
        // The partition's sysfs directory sits inside its disk's directory.
        let Some(disk) = fs::canonicalize(&dir)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
        else {
            continue;
        };
        let disk = dev_dir.join(disk);
        let name_matches = match uevent_field(&uevent, "PARTNAME") {
            Some(n) => n == partname,
            // No PARTNAME (partition added via BLKPG): the GPT's own name.
            None => table(&disk)
                .is_some_and(|es| es.iter().any(|e| e.number == number && e.name == partname)),
        };
        if !name_matches {
            continue;
        }
        let partuuid = table(&disk)
            .and_then(|es| es.into_iter().find(|e| e.number == number))
            .map(|e| e.partuuid);
        let (Some(start), Some(sectors)) =
            (read_u64(&dir.join("start")), read_u64(&dir.join("size")))
        else {
            continue;
        };
        found.push(Partition {
            dev: dev_dir.join(devname),
            disk,
            number,
            start,
            sectors,
            partuuid,
        });
    }
    found.sort_by(|a, b| a.dev.cmp(&b.dev));
    found
}

/// Whether `part`'s disk hangs off USB (its sysfs device path passes
/// through a USB device), where disks appear late and one by one.
pub fn is_usb(sys_block: &Path, part: &Partition) -> bool {
    let Some(name) = part.disk.file_name() else {
        return false;
    };
    fs::canonicalize(sys_block.join(name))
        .map(|p| {
            p.components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with("usb"))
        })
        .unwrap_or(false)
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DiskError {
    let what = what.into();
    move |source| DiskError::Sys { what, source }
}

/// Size in bytes of a block device or regular file.
pub fn device_bytes(f: &File) -> Result<u64, DiskError> {
    let meta = f.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into `size`, which outlives the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size) };
    if rc < 0 {
        return Err(sys("BLKGETSIZE64")(std::io::Error::last_os_error()));
    }
    Ok(size)
}

/// Logical sector size of a block device (512 for regular files).
pub fn sector_size(f: &File) -> Result<u64, DiskError> {
    if f.metadata()?.is_file() {
        return Ok(512);
    }
    let mut ss: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `ss`, which outlives the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET, &mut ss) };
    if rc < 0 {
        return Err(sys("BLKSSZGET")(std::io::Error::last_os_error()));
    }
    Ok(ss as u64)
}

/// `_IOR(0x12, 114, size_t)`: the size in the number is `size_t`'s (the
/// kernel header's mistake, kept for ABI), so it is 0x80041272 on 32-bit
/// ARM and 0x80081272 on 64-bit; the kernel writes a u64 either way.
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);
const BLKSSZGET: libc::Ioctl = 0x1268;
const BLKPG: libc::Ioctl = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `_IOW('f', 16, __u64)`
const EXT4_IOC_RESIZE_FS: libc::Ioctl = libc::_IOW::<u64>(b'f' as u32, 16);

// What the kernel headers give, checked on every target this builds for.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(BLKGETSIZE64 == 0x8008_1272u32 as libc::Ioctl);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(BLKGETSIZE64 == 0x8004_1272u32 as libc::Ioctl);
const _: () = assert!(EXT4_IOC_RESIZE_FS == 0x4008_6610u32 as libc::Ioctl);

#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}
// `long long` is 8-aligned on 32-bit ARM too: the same 152 bytes.
const _: () = assert!(std::mem::size_of::<BlkpgPartition>() == 152);

/// Tell the kernel that partition `pno` of `disk` now spans the given bytes.
pub fn kernel_resize_partition(
    disk: &File,
    pno: u32,
    start_bytes: u64,
    length_bytes: u64,
) -> Result<(), DiskError> {
    let mut part = BlkpgPartition {
        start: start_bytes as i64,
        length: length_bytes as i64,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at `part`; both live until the ioctl returns.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &mut arg) };
    if rc < 0 {
        return Err(sys("BLKPG resize partition")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Block count and block size from an ext4 superblock read from `dev`.
pub fn ext4_geometry(dev: &File) -> Result<(u64, u64), DiskError> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    dev.read_exact_at(&mut sb, 1024)?;
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(DiskError::NotExt4("bad superblock magic".into()));
    }
    let log = le32(0x18);
    if log > 6 {
        return Err(DiskError::NotExt4(format!("block size 2^(10+{log})")));
    }
    let block = 1024u64 << log;
    let incompat = le32(0x60);
    let hi = if incompat & 0x80 != 0 {
        le32(0x150) as u64
    } else {
        0
    };
    Ok(((hi << 32) | le32(0x04) as u64, block))
}

/// Grow the ext4 filesystem mounted at `mountpoint` (on block device `dev`)
/// to `dev`'s full size. Returns the new block count if it grew.
pub fn grow_ext4(mountpoint: &Path, dev: &Path) -> Result<Option<u64>, DiskError> {
    let devf = File::open(dev).map_err(sys(format!("open {}", dev.display())))?;
    let (blocks, block) = ext4_geometry(&devf)?;
    let want = device_bytes(&devf)? / block;
    if want <= blocks {
        return Ok(None);
    }
    let dir = File::open(mountpoint).map_err(sys(format!("open {}", mountpoint.display())))?;
    let mut n: u64 = want;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 from `n`, which outlives the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS, &mut n) };
    if rc < 0 {
        return Err(sys("EXT4_IOC_RESIZE_FS")(std::io::Error::last_os_error()));
    }
    Ok(Some(want))
}

/// First-boot growth of the data partition: GPT then kernel view. The
/// filesystem is grown after mounting with [`grow_ext4`].
pub fn grow_data_partition(part: &Partition) -> Result<Option<gpt::Grown>, DiskError> {
    let disk = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&part.disk)
        .map_err(sys(format!("open {}", part.disk.display())))?;
    let bytes = device_bytes(&disk)?;
    let ss = sector_size(&disk)?;
    let grown = gpt::grow_partition(&disk, bytes, ss, part.number)?;
    if let Some(g) = grown {
        if !disk.metadata()?.is_file() {
            kernel_resize_partition(
                &disk,
                part.number,
                g.start_lba * ss,
                (g.new_end_lba - g.start_lba + 1) * ss,
            )?;
        }
    }
    Ok(grown)
}
