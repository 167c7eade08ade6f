//! Leave the initramfs's rootfs for a tmpfs root before anything else.
//!
//! `pivot_root(2)` answers `EINVAL` while the caller's root is the initial
//! rootfs (it can never be unmounted), so no container could start on a box
//! whose PID 1 stayed there. The way out is the one `switch_root` takes (and
//! LinuxKit's init): mount a tmpfs, copy the initramfs into it, free the
//! originals, move the tmpfs onto `/`, `chroot` into it and exec `/init`
//! again. The rootfs stays underneath, empty and unreachable; every later
//! root (ours, then each container's) is an ordinary mount that
//! `pivot_root` accepts.
//!
//! Every step is checked; on any failure PID 1 reports it and carries on
//! from rootfs (the box still boots and serves its panel; only containers
//! fail), never panics.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};

use crate::say;

/// Where the new root is assembled before it is moved onto `/`.
const STAGING: &str = "/.nuvol-root";

/// Whether `/` is the kernel's initial rootfs, from a mountinfo text.
pub fn root_is_rootfs(mountinfo: &str) -> bool {
    // Fields: id parent major:minor root mount-point options... - fstype source super
    mountinfo.lines().any(|l| {
        let mut f = l.split_whitespace();
        let mount_point = f.nth(4);
        let fstype = l
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next());
        mount_point == Some("/") && fstype == Some("rootfs")
    })
}

/// Called first thing as PID 1. Returns only when the switch is not needed
/// or failed (then the box goes on from rootfs); on success it execs `/init`
/// in the new root and does not return.
pub fn leave_rootfs() {
    if let Err(e) = fs::create_dir_all("/proc") {
        say!("create /proc: {e}");
    }
    let proc_mounted = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .is_ok();
    let on_rootfs = fs::read_to_string("/proc/self/mountinfo")
        .map(|m| root_is_rootfs(&m))
        .unwrap_or(false);
    if proc_mounted {
        let _ = umount2("/proc", MntFlags::MNT_DETACH);
    }
    if !on_rootfs {
        return;
    }
    if let Err(e) = switch() {
        say!("cannot leave the initramfs rootfs ({e}): containers will not start on this boot");
        let _ = umount2(STAGING, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(STAGING);
    }
}

fn step<T>(what: &str, r: Result<T, impl std::fmt::Display>) -> io::Result<T> {
    r.map_err(|e| io::Error::other(format!("{what}: {e}")))
}

fn switch() -> io::Result<()> {
    step("mkdir staging", fs::create_dir_all(STAGING))?;
    step(
        "mount tmpfs",
        mount(
            Some("rootfs-copy"),
            STAGING,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        ),
    )?;
    let staging = Path::new(STAGING);
    for entry in step("read /", fs::read_dir("/"))? {
        let entry = step("read /", entry)?;
        let name = entry.file_name();
        if Path::new("/").join(&name) == staging {
            continue;
        }
        copy_tree(&entry.path(), &staging.join(&name))?;
    }
    // Free what the copy duplicated (the binary is most of it): rootfs
    // memory is never given back otherwise.
    for entry in step("read /", fs::read_dir("/"))? {
        let path = step("read /", entry)?.path();
        if path != staging {
            remove_tree(&path);
        }
    }
    step("chdir", nix::unistd::chdir(staging))?;
    step(
        "move the new root onto /",
        mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>),
    )?;
    step("chroot", nix::unistd::chroot("."))?;
    step("chdir /", nix::unistd::chdir("/"))?;
    say!("left the initramfs rootfs for a tmpfs root");
    let init = CString::new("/init").map_err(io::Error::other)?;
    let args = [init.clone()];
    // On success this does not return; the new process image is PID 1 again
    // and finds `/` no longer on rootfs.
    let e = nix::unistd::execv(&init, &args).unwrap_err();
    Err(io::Error::other(format!("exec /init in the new root: {e}")))
}

/// Copy `src` to `dst`: directories, regular files, symlinks and device
/// nodes, keeping mode and ownership. Other file types are skipped.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::other(format!("{what} {}: {e}", p.display()))
    };
    let md = fs::symlink_metadata(src).map_err(|e| ctx("stat", src, e))?;
    let ft = md.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(|e| ctx("mkdir", dst, e))?;
        for entry in fs::read_dir(src).map_err(|e| ctx("read", src, e))? {
            let entry = entry.map_err(|e| ctx("read", src, e))?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(|e| ctx("copy", src, e))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(|e| ctx("readlink", src, e))?;
        std::os::unix::fs::symlink(target, dst).map_err(|e| ctx("symlink", dst, e))?;
        return chown(dst, &md, true);
    } else if ft.is_char_device() || ft.is_block_device() {
        let kind = if ft.is_char_device() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        // st_rdev is already the kernel's dev_t encoding mknod takes.
        mknod(
            dst,
            kind,
            Mode::from_bits_truncate(md.mode() & 0o7777),
            md.rdev(),
        )
        .map_err(|e| ctx("mknod", dst, e.into()))?;
    } else {
        return Ok(());
    }
    chown(dst, &md, false)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| ctx("chmod", dst, e))
}

fn chown(p: &Path, md: &fs::Metadata, symlink: bool) -> io::Result<()> {
    let r = if symlink {
        std::os::unix::fs::lchown(p, Some(md.uid()), Some(md.gid()))
    } else {
        std::os::unix::fs::chown(p, Some(md.uid()), Some(md.gid()))
    };
    r.map_err(|e| io::Error::other(format!("chown {}: {e}", p.display())))
}

/// Remove a tree on rootfs, staying on that one filesystem (nothing is
/// mounted yet apart from the staging tmpfs, which the caller skips).
fn remove_tree(p: &Path) {
    let Ok(md) = fs::symlink_metadata(p) else {
        return;
    };
    if md.is_dir() {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                remove_tree(&e.path());
            }
        }
        // `/` itself is the parent of everything here; the directories stay
        // (rmdir of a busy mount point would fail anyway) but emptied.
        let _ = fs::remove_dir(p);
    } else {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;

    #[test]
    fn rootfs_is_recognised_from_mountinfo() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n\
                         20 1 0:20 / /proc rw,nosuid - proc proc rw\n";
        assert!(root_is_rootfs(initramfs));
        let switched = "25 1 0:23 / / rw - tmpfs rootfs-copy rw,mode=755\n\
                        26 25 0:20 / /proc rw - proc proc rw\n";
        assert!(!root_is_rootfs(switched));
        // A development host: ext4 root; a mount point named rootfs elsewhere.
        let host = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 22 0:40 / /mnt/rootfs rw - rootfs rootfs rw\n";
        assert!(!root_is_rootfs(host));
        assert!(!root_is_rootfs(""));
        assert!(!root_is_rootfs("garbage without fields\n - \n"));
    }

    #[test]
    fn copy_tree_keeps_files_links_modes_and_devices() {
        let base = std::env::temp_dir().join(format!("nuvol-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let src = base.join("src");
        fs::create_dir_all(src.join("dev")).unwrap();
        fs::create_dir_all(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(src.join("init"), b"binary").unwrap();
        fs::set_permissions(src.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("init", src.join("link")).unwrap();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            mknod(
                &src.join("dev/null"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(1, 3),
            )
            .unwrap();
        }
        copy_tree(&src, &base.join("dst")).unwrap();
        let dst = base.join("dst");
        assert_eq!(fs::read(dst.join("init")).unwrap(), b"binary");
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dst.join("init")), 0o755);
        assert_eq!(mode(&dst.join("tmp")), 0o1777);
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("init"));
        if root {
            let md = fs::symlink_metadata(dst.join("dev/null")).unwrap();
            assert!(md.file_type().is_char_device());
            assert_eq!(md.rdev(), makedev(1, 3));
        }
        remove_tree(&src);
        assert!(!src.exists());
        fs::remove_dir_all(&base).unwrap();
    }
}
