//! Mounting the pseudo filesystems and the two partitions.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::{say, Layout};

fn mnt(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> bool {
    let _ = std::fs::create_dir_all(target);
    match mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => true,
        Err(e) => {
            say!("mount {fstype} on {target}: {e}");
            false
        }
    }
}

/// The pseudo filesystems every process expects.
pub fn early() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt("proc", "/proc", "proc", nodev, None);
    mnt("sysfs", "/sys", "sysfs", nodev, None);
    mnt(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    mnt(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=0620,ptmxmode=0666"),
    );
    mnt("tmpfs", "/dev/shm", "tmpfs", nodev, Some("mode=1777"));
    mnt(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    mnt(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mnt(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        nodev,
        Some("nsdelegate"),
    );
    // UEFI: the boot loader's variables, read-only (LoaderDevicePartUUID
    // names the partition this box booted from, see `disks`).
    if Path::new("/sys/firmware/efi").exists() {
        mnt(
            "efivarfs",
            EFIVARS,
            "efivarfs",
            nodev | MsFlags::MS_RDONLY,
            None,
        );
    }
    // Stop the kernel from rebooting on Ctrl-Alt-Del: we get SIGINT instead.
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// Where efivarfs is mounted.
const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// After the boot partition turned up on a USB disk, how long to look for a
/// second stick that was plugged in at power-on too but enumerates later.
const USB_SETTLE: Duration = Duration::from_secs(2);

/// Find, grow and mount the boot and data partitions: the boot partition
/// the box booted from (named by the boot loader or the kernel command
/// line) and the data partition on the same disk, never another disk's
/// (`nuvol_disk::select`). Returns whether data is mounted.
pub fn disks(layout: &Layout) -> bool {
    let sys = Path::new("/sys/class/block");
    let dev = Path::new("/dev");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let loader = std::fs::read(Path::new(EFIVARS).join(nuvol_disk::LOADER_DEVICE_PARTUUID)).ok();
    let (binding, notes) = nuvol_disk::Binding::from_boot(&cmdline, loader.as_deref());
    for n in notes {
        say!("{n}");
    }
    match &binding {
        Some(b) => say!(
            "boot partition: PARTUUID {}, named by {}",
            b.partuuid,
            b.source
        ),
        None => say!(
            "boot partition: not named by the boot loader or the kernel command line; only a single {} is used",
            nuvol_disk::BOOT_PARTNAME
        ),
    }
    let scan = || {
        nuvol_disk::select(
            &nuvol_disk::find_partitions(sys, dev, nuvol_disk::BOOT_PARTNAME),
            &nuvol_disk::find_partitions(sys, dev, nuvol_disk::DATA_PARTNAME),
            binding.as_ref(),
        )
    };
    let deadline = Instant::now() + layout.disk_wait;
    let mut sel = scan();
    while (sel.boot.is_none() || sel.data.is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        sel = scan();
    }
    if sel
        .boot
        .as_ref()
        .is_some_and(|b| nuvol_disk::is_usb(sys, b))
    {
        std::thread::sleep(USB_SETTLE);
        sel = scan();
    }
    for n in &sel.notes {
        say!("{n}");
    }
    let (boot, data) = (sel.boot, sel.data);
    match &boot {
        Some(p) => {
            let target = layout.boot_mount.to_string_lossy();
            if mnt(
                &p.dev.to_string_lossy(),
                &target,
                "vfat",
                MsFlags::MS_RDONLY | boot_flags(),
                Some(BOOT_OPTS),
            ) {
                say!("boot partition {} on {target}", p.dev.display());
            }
        }
        None => say!(
            "no boot partition of this box ({}): using built-in defaults",
            nuvol_disk::BOOT_PARTNAME
        ),
    }
    let Some(p) = data else {
        say!(
            "no data partition of this box ({} on the boot disk)",
            nuvol_disk::DATA_PARTNAME
        );
        return false;
    };
    match nuvol_disk::grow_data_partition(&p) {
        Ok(Some(g)) => say!(
            "grew {} from {} to {} sectors",
            p.dev.display(),
            g.old_end_lba - g.start_lba + 1,
            g.new_end_lba - g.start_lba + 1
        ),
        Ok(None) => {}
        Err(e) => say!(
            "growing {}: {e} (continuing at its current size)",
            p.dev.display()
        ),
    }
    let target = layout.data_mount.to_string_lossy().into_owned();
    if !mnt(
        &p.dev.to_string_lossy(),
        &target,
        "ext4",
        MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    ) {
        return false;
    }
    match nuvol_disk::grow_ext4(&layout.data_mount, &p.dev) {
        Ok(Some(blocks)) => say!("data filesystem grown to {blocks} blocks"),
        Ok(None) => {}
        Err(e) => say!("growing data filesystem: {e}"),
    }
    say!("data partition {} on {target}", p.dev.display());
    if let Err(e) = std::fs::create_dir_all(&layout.state_dir) {
        say!("create {}: {e}", layout.state_dir.display());
    }
    true
}

/// Mount options of the boot partition (FAT): files private to root.
const BOOT_OPTS: &str = "umask=0077,shortname=mixed";
/// Per-mount flags of the boot partition besides read-only.
fn boot_flags() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// Remount the boot partition writable (`rw`) or read-only again: the
/// factory reset removes its trigger file in between, nothing else writes
/// there. Going read-only flushes the FAT and clears its dirty flag.
pub fn remount_boot(layout: &Layout, rw: bool) -> std::io::Result<()> {
    remount_boot_at(&layout.boot_mount, rw)
}

/// [`remount_boot`] for the boot partition mounted at `target` (the agent
/// uses it to write an OS update's slot and switch the default).
pub fn remount_boot_at(target: &Path, rw: bool) -> std::io::Result<()> {
    let mut flags = MsFlags::MS_REMOUNT | boot_flags();
    if !rw {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, Some(BOOT_OPTS)).map_err(std::io::Error::from)
}

/// Remount efivarfs writable (`rw`) or read-only again: the agent arms an
/// update's one-shot try there under UEFI (docs/boot.md, "Update").
pub fn remount_efivars(rw: bool) -> std::io::Result<()> {
    let mut flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    if !rw {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, EFIVARS, None::<&str>, flags, None::<&str>).map_err(std::io::Error::from)
}

/// Unmount data and boot before power-off. Failures are reported, not fatal:
/// a remount read-only is attempted so the journal is clean.
pub fn unmount_all(layout: &Layout) {
    for target in [&layout.data_mount, &layout.boot_mount] {
        match umount2(target.as_path(), MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => {
                say!("umount {}: {e}; remounting read-only", target.display());
                let _ = mount(
                    None::<&str>,
                    target.as_path(),
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                );
            }
        }
    }
}
