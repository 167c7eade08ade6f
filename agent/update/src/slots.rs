//! The boot partition's slots (`/A`, `/B`: `bzImage`, `initrd.img`,
//! `version`) and the two loaders' idea of the default slot.
//!
//! Nothing here reallocates a loader file: the default is switched by
//! rewriting the one slot letter of `DEFAULT nuvol-A` (syslinux) and
//! `default nuvol-A.conf` (systemd-boot) in place, a one-byte write inside
//! one sector; the try is armed in `ldlinux.sys`'s ADV, also in place.
//! Only the inactive slot's files are replaced (temp file, fsync, rename).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nuvol_bundle::verify::hash_exact;

use crate::adv;
use crate::artefact::{Refusal, Verified};

pub const SYSLINUX_CFG: &str = "syslinux/syslinux.cfg";
pub const LDLINUX_SYS: &str = "syslinux/ldlinux.sys";
pub const LOADER_CONF: &str = "loader/loader.conf";
/// The slot's OS version, written last when a slot is updated.
pub const VERSION_FILE: &str = "version";
/// The loaders' label of a slot: `nuvol-A`.
pub fn label(slot: char) -> String {
    format!("nuvol-{slot}")
}

/// The other slot.
pub fn other(slot: char) -> char {
    if slot == 'A' {
        'B'
    } else {
        'A'
    }
}

/// Parse a slot name (`A` or `B`).
pub fn parse_slot(s: &str) -> Option<char> {
    match s {
        "A" => Some('A'),
        "B" => Some('B'),
        _ => None,
    }
}

/// The running slot from a kernel command line (`nuvol.slot=A`).
pub fn slot_from_cmdline(cmdline: &str) -> Option<char> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("nuvol.slot="))
        .and_then(parse_slot)
}

/// Where `needle` + the slot letter sits in `text`, at a line start; the
/// offset of the letter.
fn letter_at(text: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
    {
        let line_start = i == 0 || text[i - 1] == b'\n';
        let at = i + needle.len();
        if line_start && at < text.len() && matches!(text[at], b'A' | b'B') {
            return Some(at);
        }
        from = i + 1;
    }
    None
}

const CFG_NEEDLE: &[u8] = b"DEFAULT nuvol-";
const LOADER_NEEDLE: &[u8] = b"default nuvol-";

/// A mounted boot partition.
#[derive(Debug, Clone)]
pub struct BootFs {
    pub root: PathBuf,
}

impl BootFs {
    pub fn new(root: &Path) -> BootFs {
        BootFs {
            root: root.to_path_buf(),
        }
    }

    /// Whether this looks like a nuvol boot partition with both slots.
    pub fn has_slots(&self) -> bool {
        self.root.join(SYSLINUX_CFG).is_file()
            && self.root.join(LDLINUX_SYS).is_file()
            && self.root.join("A").is_dir()
            && self.root.join("B").is_dir()
    }

    /// The slot syslinux boots by default.
    pub fn default_slot(&self) -> io::Result<char> {
        let text = std::fs::read(self.root.join(SYSLINUX_CFG))?;
        letter_at(&text, CFG_NEEDLE)
            .map(|at| text[at] as char)
            .ok_or_else(|| io::Error::other("syslinux.cfg: no \"DEFAULT nuvol-A/B\" line"))
    }

    /// Make `slot` the default of both loaders: one byte rewritten in
    /// place in each file, then fsynced (syslinux first: BIOS boxes are
    /// the ones tested; a cut between the two leaves UEFI on the old slot).
    pub fn set_default(&self, slot: char) -> io::Result<()> {
        for (file, needle, must) in [
            (SYSLINUX_CFG, CFG_NEEDLE, true),
            (LOADER_CONF, LOADER_NEEDLE, false),
        ] {
            let p = self.root.join(file);
            let f = match OpenOptions::new().read(true).write(true).open(&p) {
                Ok(f) => f,
                Err(e) if !must && e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut text = Vec::new();
            (&f).take(64 * 1024).read_to_end(&mut text)?;
            let at = letter_at(&text, needle)
                .ok_or_else(|| io::Error::other(format!("{file}: no default nuvol-A/B line")))?;
            if text[at] != slot as u8 {
                f.write_all_at(&[slot as u8], at as u64)?;
                f.sync_all()?;
            }
        }
        Ok(())
    }

    pub fn ldlinux(&self) -> PathBuf {
        self.root.join(LDLINUX_SYS)
    }

    /// Arm a one-shot try of `slot` (BIOS: the ADV's boot-once record);
    /// `None` disarms.
    pub fn arm_try(&self, slot: Option<char>) -> io::Result<()> {
        adv::set_bootonce_file(&self.ldlinux(), slot.map(label).as_deref())
    }

    /// The armed boot-once command, if any.
    pub fn armed(&self) -> Option<String> {
        adv::read_bootonce_file(&self.ldlinux()).ok().flatten()
    }

    /// The OS version in a slot (its `version` file), if known.
    pub fn slot_version(&self, slot: char) -> Option<String> {
        let mut s = String::new();
        File::open(self.root.join(slot.to_string()).join(VERSION_FILE))
            .ok()?
            .take(64)
            .read_to_string(&mut s)
            .ok()?;
        let s = s.trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Write a verified artefact's parts into `slot` (never the running
    /// one: the caller's business), then its version, then read every part
    /// back from the disk and compare its SHA-256.
    pub fn write_slot(&self, slot: char, artefact: &Path, v: &Verified) -> Result<(), Refusal> {
        let dir = self.root.join(slot.to_string());
        let fail = |what: &str, e: io::Error| Refusal::Failed(format!("{what}: {e}"));
        let need: u64 = v.manifest.parts.iter().map(|p| p.size).sum::<u64>() + 64 * 1024;
        let free = free_bytes(&self.root).map_err(|e| fail("boot partition", e))?;
        if free < need {
            // Not room for the new parts beside the old ones: the old ones
            // of this (inactive, not default) slot go first.
            let old: u64 = v
                .manifest
                .parts
                .iter()
                .filter_map(|p| std::fs::metadata(dir.join(&p.name)).ok())
                .map(|m| m.len())
                .sum();
            if free + old < need {
                return Err(Refusal::TooBig(format!(
                    "the update needs {need} bytes on the boot partition; {} are free with slot {slot}'s old files removed",
                    free + old
                )));
            }
            for p in &v.manifest.parts {
                let _ = std::fs::remove_file(dir.join(&p.name));
            }
            let _ = std::fs::remove_file(dir.join(VERSION_FILE));
            nuvol_durable::fsync_dir(&dir).map_err(|e| fail("slot directory", e))?;
        }
        let mut src = File::open(artefact).map_err(|e| fail("artefact", e))?;
        let mut off = v.parts_offset;
        for p in &v.manifest.parts {
            use std::io::{Seek, SeekFrom};
            src.seek(SeekFrom::Start(off))
                .map_err(|e| fail("artefact", e))?;
            let tmp = dir.join(format!("{}.new", p.name));
            let dest = dir.join(&p.name);
            let mut write = || -> Result<(), Refusal> {
                let mut out = File::create(&tmp).map_err(|e| fail(&p.name, e))?;
                let got = hash_exact(&mut src, p.size, Some(&mut out))
                    .map_err(|e| Refusal::Failed(format!("{}: {e}", p.name)))?;
                if got != p.sha256 {
                    return Err(Refusal::Malformed(format!(
                        "{}: changed while it was copied",
                        p.name
                    )));
                }
                out.flush().map_err(|e| fail(&p.name, e))?;
                out.sync_all().map_err(|e| fail(&p.name, e))?;
                std::fs::rename(&tmp, &dest).map_err(|e| fail(&p.name, e))?;
                nuvol_durable::fsync_dir(&dir).map_err(|e| fail("slot directory", e))
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            off += p.size;
        }
        let version = format!("{}\n", v.manifest.version);
        nuvol_durable::write_atomic(
            &dir.join(VERSION_FILE),
            version.as_bytes(),
            nuvol_durable::Mode::Private,
        )
        .map_err(|e| fail("version", e))?;
        // Read back what the disk holds, not the page cache.
        for p in &v.manifest.parts {
            let path = dir.join(&p.name);
            let mut f = File::open(&path).map_err(|e| fail(&p.name, e))?;
            drop_cache(&f);
            let len = f.metadata().map_err(|e| fail(&p.name, e))?.len();
            let got = (len == p.size)
                .then(|| hash_exact(&mut f, p.size, None).ok())
                .flatten();
            if got != Some(p.sha256) {
                return Err(Refusal::Failed(format!(
                    "{}: read back from slot {slot}, it does not match the artefact",
                    p.name
                )));
            }
        }
        Ok(())
    }
}

/// Ask the kernel to forget a file's cached pages (clean after fsync), so
/// the next read comes from the disk.
fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advisory call on a descriptor we own.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn free_bytes(p: &Path) -> io::Result<u64> {
    nuvol_bundle::space::space(p)
        .map(|s| s.free_bytes)
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> (tempfile::TempDir, BootFs) {
        let d = tempfile::tempdir().unwrap();
        for s in ["A", "B", "syslinux", "loader"] {
            std::fs::create_dir_all(d.path().join(s)).unwrap();
        }
        std::fs::write(
            d.path().join(SYSLINUX_CFG),
            "SERIAL 0 115200\nDEFAULT nuvol-A\nTIMEOUT 0\nLABEL nuvol-A\n  APPEND x nuvol.slot=A\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join(LOADER_CONF),
            "default nuvol-A.conf\ntimeout 0\n",
        )
        .unwrap();
        let mut ld = vec![0x90u8; 4096];
        ld.extend_from_slice(&adv::encode(&[]).unwrap());
        ld.extend_from_slice(&adv::encode(&[]).unwrap());
        std::fs::write(d.path().join(LDLINUX_SYS), ld).unwrap();
        let b = BootFs::new(d.path());
        (d, b)
    }

    #[test]
    fn default_switches_one_byte_in_place() {
        let (d, b) = boot();
        assert!(b.has_slots());
        assert_eq!(b.default_slot().unwrap(), 'A');
        let before = std::fs::read(d.path().join(SYSLINUX_CFG)).unwrap();
        b.set_default('B').unwrap();
        assert_eq!(b.default_slot().unwrap(), 'B');
        let after = std::fs::read(d.path().join(SYSLINUX_CFG)).unwrap();
        assert_eq!(before.len(), after.len());
        let diff: Vec<usize> = (0..before.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        assert_eq!(diff, vec![30]);
        assert_eq!(
            std::fs::read_to_string(d.path().join(LOADER_CONF)).unwrap(),
            "default nuvol-B.conf\ntimeout 0\n"
        );
        b.set_default('A').unwrap();
        assert_eq!(std::fs::read(d.path().join(SYSLINUX_CFG)).unwrap(), before);
    }

    #[test]
    fn label_lines_are_not_mistaken_for_the_default() {
        assert_eq!(
            letter_at(b"LABEL nuvol-B\nDEFAULT nuvol-A\n", CFG_NEEDLE),
            Some(28)
        );
        assert_eq!(letter_at(b"# DEFAULT nuvol-B\n", CFG_NEEDLE), None);
        assert_eq!(letter_at(b"DEFAULT nuvol-", CFG_NEEDLE), None);
    }

    #[test]
    fn try_is_armed_and_cleared() {
        let (_d, b) = boot();
        assert_eq!(b.armed(), None);
        b.arm_try(Some('B')).unwrap();
        assert_eq!(b.armed().as_deref(), Some("nuvol-B"));
        b.arm_try(None).unwrap();
        assert_eq!(b.armed(), None);
    }

    #[test]
    fn slot_from_the_command_line() {
        assert_eq!(slot_from_cmdline("a=b nuvol.slot=B panic=10"), Some('B'));
        assert_eq!(slot_from_cmdline("nuvol.slot=C"), None);
        assert_eq!(slot_from_cmdline(""), None);
    }
}
