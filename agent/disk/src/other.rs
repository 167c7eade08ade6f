//! Volumes on disks that are not a nuvol disk: a USB stick a human plugs
//! in to hand the box an OS update (docs/boot.md, "Update").
//!
//! Read from sysfs only, like the rest of this crate: every whole disk
//! that is not a virtual device (loop, RAM, device-mapper, …), not empty
//! and carries no `nuvol-boot`/`nuvol-data` partition (the box's own disk,
//! or a copy of it, which PID 1 refuses to touch) yields its partitions,
//! or the disk itself when it has none (a stick formatted whole).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::{gpt, read_u64, sector_size, uevent_field, BOOT_PARTNAME, DATA_PARTNAME};

/// A volume that may hold a file system: a partition, or a whole disk
/// without a partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `/dev/sda1`
    pub dev: PathBuf,
    /// `sda1`
    pub name: String,
    /// What tells this plug-in apart from the next one of the same name:
    /// `sda1@<diskseq>` (the kernel numbers every disk it sees, 5.15+),
    /// or the size in sectors on kernels without `diskseq`.
    pub seen_as: String,
}

/// Device name prefixes that are never a stick.
const VIRTUAL: &[&str] = &[
    "loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd", "mtdblock", "nullb",
];

/// At most this many volumes are returned: a hub full of card readers is
/// looked at 16 volumes at a time.
pub const MAX_VOLUMES: usize = 16;

/// What the GPT of each disk said, by `disk@<diskseq>` (the plug-in):
/// whether it names a nuvol partition. A watcher that lists the disks
/// every few seconds keeps one, so a disk's GPT is read once per plug-in,
/// not at every look; disks that are gone are forgotten.
#[derive(Debug, Default)]
pub struct GptSeen(BTreeMap<String, bool>);

/// The volumes of every disk under `sys_block` (normally
/// `/sys/class/block`) that is not a nuvol disk, by device name.
pub fn other_volumes(sys_block: &Path, dev_dir: &Path) -> Vec<Volume> {
    other_volumes_seen(sys_block, dev_dir, &mut GptSeen::default())
}

/// [`other_volumes`], reading a disk's GPT only if `seen` has no answer
/// for this plug-in of it yet.
pub fn other_volumes_seen(sys_block: &Path, dev_dir: &Path, seen: &mut GptSeen) -> Vec<Volume> {
    let Ok(dir) = fs::read_dir(sys_block) else {
        seen.0.clear();
        return Vec::new();
    };
    let mut disks: Vec<(String, PathBuf)> = Vec::new();
    for ent in dir.flatten() {
        let path = ent.path();
        let Ok(uevent) = fs::read_to_string(path.join("uevent")) else {
            continue;
        };
        if uevent_field(&uevent, "DEVTYPE") != Some("disk") {
            continue;
        }
        let Some(name) = uevent_field(&uevent, "DEVNAME") else {
            continue;
        };
        if VIRTUAL.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if read_u64(&path.join("size")).unwrap_or(0) == 0 {
            continue; // a card reader with no card
        }
        let real = fs::canonicalize(&path).unwrap_or(path);
        disks.push((name.to_string(), real));
    }
    disks.sort();
    let mut present = BTreeSet::new();
    let mut out = Vec::new();
    for (disk, sysdir) in disks {
        let seq = fs::read_to_string(sysdir.join("diskseq"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| read_u64(&sysdir.join("size")).map(|n| format!("{n}s")))
            .unwrap_or_default();
        let mut parts: Vec<(String, Option<String>)> = Vec::new();
        if let Ok(children) = fs::read_dir(&sysdir) {
            for c in children.flatten() {
                let Ok(uevent) = fs::read_to_string(c.path().join("uevent")) else {
                    continue;
                };
                if uevent_field(&uevent, "DEVTYPE") != Some("partition") {
                    continue;
                }
                if let Some(n) = uevent_field(&uevent, "DEVNAME") {
                    let label = uevent_field(&uevent, "PARTNAME").map(str::to_string);
                    parts.push((n.to_string(), label));
                }
            }
        }
        parts.sort();
        let nuvol_name = |n: &str| n == BOOT_PARTNAME || n == DATA_PARTNAME;
        if parts
            .iter()
            .any(|(_, l)| l.as_deref().is_some_and(nuvol_name))
        {
            continue;
        }
        // Partitions added without a name in the uevent (BLKPG): the
        // disk's own GPT says.
        let plug = format!("{disk}@{seq}");
        let is_nuvol = *seen.0.entry(plug.clone()).or_insert_with(|| {
            File::open(dev_dir.join(&disk))
                .ok()
                .and_then(|f| gpt::partition_names(&f, sector_size(&f).ok()?).ok())
                .unwrap_or_default()
                .iter()
                .any(|(_, n)| nuvol_name(n))
        });
        present.insert(plug);
        if is_nuvol {
            continue;
        }
        let vols: Vec<String> = if parts.is_empty() {
            vec![disk.clone()]
        } else {
            parts.into_iter().map(|(n, _)| n).collect()
        };
        for name in vols {
            out.push(Volume {
                dev: dev_dir.join(&name),
                seen_as: format!("{name}@{seq}"),
                name,
            });
        }
    }
    seen.0.retain(|k, _| present.contains(k));
    out.truncate(MAX_VOLUMES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A sysfs-like tree: `disk` directories holding their partitions.
    fn disk(root: &Path, name: &str, size: u64, seq: Option<u64>, parts: &[(&str, Option<&str>)]) {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("uevent"), format!("DEVTYPE=disk\nDEVNAME={name}\n")).unwrap();
        fs::write(d.join("size"), format!("{size}\n")).unwrap();
        if let Some(s) = seq {
            fs::write(d.join("diskseq"), format!("{s}\n")).unwrap();
        }
        for (p, label) in parts {
            let pd = d.join(p);
            fs::create_dir_all(&pd).unwrap();
            let mut u = format!("DEVTYPE=partition\nDEVNAME={p}\nPARTN=1\n");
            if let Some(l) = label {
                u.push_str(&format!("PARTNAME={l}\n"));
            }
            fs::write(pd.join("uevent"), u).unwrap();
        }
    }

    #[test]
    fn sticks_yes_nuvol_disks_and_virtual_devices_no() {
        let root = std::env::temp_dir().join(format!("nuvol-other-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let _t = Tree(root.clone());
        let dev = root.join("dev");
        let sys = root.join("sys");
        fs::create_dir_all(&dev).unwrap();
        // The box's own disk: never.
        disk(
            &sys,
            "vda",
            2_000_000,
            Some(1),
            &[("vda1", Some("nuvol-boot")), ("vda2", Some("nuvol-data"))],
        );
        // A copy of a nuvol stick: never.
        disk(
            &sys,
            "sdc",
            1_000_000,
            Some(4),
            &[("sdc1", Some("nuvol-boot"))],
        );
        // A laptop's stick with two partitions, and one formatted whole.
        disk(
            &sys,
            "sda",
            60_000,
            Some(7),
            &[("sda2", None), ("sda1", Some("stick"))],
        );
        disk(&sys, "sdb", 30_000, None, &[]);
        // An empty card reader, a loop device, a RAM disk: never.
        disk(&sys, "sdd", 0, Some(9), &[]);
        disk(&sys, "loop0", 4096, Some(2), &[]);
        disk(&sys, "zram0", 4096, Some(3), &[]);
        let got = other_volumes(&sys, &dev);
        let names: Vec<(&str, &str)> = got
            .iter()
            .map(|v| (v.name.as_str(), v.seen_as.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("sda1", "sda1@7"),
                ("sda2", "sda2@7"),
                ("sdb", "sdb@30000s")
            ]
        );
        assert_eq!(got[0].dev, dev.join("sda1"));
    }

    #[test]
    fn a_disks_gpt_is_read_once_per_plug_in() {
        let root = std::env::temp_dir().join(format!("nuvol-other-seen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let _t = Tree(root.clone());
        let (sys, dev) = (root.join("sys"), root.join("dev"));
        fs::create_dir_all(&dev).unwrap();
        disk(&sys, "sda", 60_000, Some(7), &[("sda1", None)]);
        disk(&sys, "sdb", 30_000, Some(8), &[]);
        // What an earlier look found in sda's GPT (this plug-in, seq 7):
        // a nuvol disk. It is not read again (/dev/sda does not even
        // exist here), so it stays skipped.
        let mut seen = GptSeen::default();
        seen.0.insert("sda@7".into(), true);
        seen.0.insert("sdz@1".into(), false);
        let names = |v: Vec<Volume>| v.into_iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(names(other_volumes_seen(&sys, &dev, &mut seen)), ["sdb"]);
        // sdb's answer is kept; a disk that is gone is forgotten.
        assert_eq!(seen.0.get("sdb@8"), Some(&false));
        assert!(!seen.0.contains_key("sdz@1"));
        // Plugged in again (a new diskseq): its GPT is read afresh.
        fs::write(sys.join("sda/diskseq"), "9\n").unwrap();
        assert_eq!(
            names(other_volumes_seen(&sys, &dev, &mut seen)),
            ["sda1", "sdb"]
        );
        assert!(!seen.0.contains_key("sda@7"));
    }

    #[test]
    fn a_hub_full_of_disks_is_capped() {
        let root = std::env::temp_dir().join(format!("nuvol-other-cap-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let _t = Tree(root.clone());
        for i in 0..40 {
            disk(&root, &format!("sd{i:02}"), 100, Some(i), &[]);
        }
        assert_eq!(
            other_volumes(&root, Path::new("/nonexistent")).len(),
            MAX_VOLUMES
        );
        assert!(other_volumes(&root.join("missing"), Path::new("/dev")).is_empty());
    }
}
