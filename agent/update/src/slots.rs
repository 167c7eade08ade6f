//! The boot partition's slots (`/A`, `/B`: `bzImage`, `initrd.img`,
//! `version`) and the two loaders' idea of the default slot.
//!
//! Nothing here reallocates a loader file: the default is switched by
//! rewriting the one slot letter of `DEFAULT nuvol-A` (syslinux) and
//! `default nuvol-A.conf` (systemd-boot) in place, a one-byte write inside
//! one sector; the try is armed in `ldlinux.sys`'s ADV, also in place
//! (BIOS), or in the EFI variable `LoaderEntryOneShot` (UEFI), never on FAT.
//! Only the inactive slot's files are replaced (temp file, fsync, rename).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nuvol_bundle::verify::hash_exact;

use crate::artefact::{Part, Refusal, Verified};
use crate::{adv, efivar};

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

/// systemd-boot's id of a slot's entry: `nuvol-A.conf`.
pub fn entry(slot: char) -> String {
    format!("nuvol-{slot}.conf")
}

/// A mounted boot partition.
#[derive(Debug, Clone)]
pub struct BootFs {
    pub root: PathBuf,
    /// Under UEFI, the efivarfs directory: the try is armed there
    /// (systemd-boot's one-shot entry) rather than in syslinux's ADV.
    pub efivars: Option<PathBuf>,
    /// Test hook: a pause after each durable write, so a power-cut test's
    /// random cut lands between writes (zero on a real box).
    pub pause: std::time::Duration,
}

impl BootFs {
    /// A boot partition booted by BIOS (syslinux).
    pub fn new(root: &Path) -> BootFs {
        BootFs {
            root: root.to_path_buf(),
            efivars: None,
            pause: std::time::Duration::ZERO,
        }
    }

    /// A boot partition booted by UEFI (systemd-boot), its variables in
    /// `efivars`.
    pub fn uefi(root: &Path, efivars: &Path) -> BootFs {
        BootFs {
            root: root.to_path_buf(),
            efivars: Some(efivars.to_path_buf()),
            pause: std::time::Duration::ZERO,
        }
    }

    /// After a durable write: the test hook's pause, if any.
    pub fn step(&self) {
        if !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
    }

    /// Whether the partition boots through syslinux too (the x86 images);
    /// the arm64 images have systemd-boot alone.
    pub fn has_syslinux(&self) -> bool {
        self.root.join(SYSLINUX_CFG).is_file()
    }

    /// Whether this looks like a nuvol boot partition with both slots.
    pub fn has_slots(&self) -> bool {
        let loaders = if self.has_syslinux() {
            self.root.join(LDLINUX_SYS).is_file()
        } else {
            self.root.join(LOADER_CONF).is_file()
        };
        loaders && self.root.join("A").is_dir() && self.root.join("B").is_dir()
    }

    /// The slot booted by default: syslinux's default where the image has
    /// syslinux (BIOS boxes follow it, and it is written first), else
    /// systemd-boot's.
    pub fn default_slot(&self) -> io::Result<char> {
        let (file, needle) = if self.has_syslinux() {
            (SYSLINUX_CFG, CFG_NEEDLE)
        } else {
            (LOADER_CONF, LOADER_NEEDLE)
        };
        let text = std::fs::read(self.root.join(file))?;
        letter_at(&text, needle)
            .map(|at| text[at] as char)
            .ok_or_else(|| io::Error::other(format!("{file}: no default nuvol-A/B line")))
    }

    /// Make `slot` the default of the loaders: one byte rewritten in
    /// place in each file, then fsynced (syslinux first: BIOS boxes are
    /// the ones tested; a cut between the two leaves UEFI on the old slot).
    /// An image without syslinux has only `loader.conf`, which must be there.
    pub fn set_default(&self, slot: char) -> io::Result<()> {
        let syslinux = self.has_syslinux();
        for (file, needle, must) in [
            (SYSLINUX_CFG, CFG_NEEDLE, syslinux),
            (LOADER_CONF, LOADER_NEEDLE, !syslinux),
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
                self.step();
            }
        }
        Ok(())
    }

    pub fn ldlinux(&self) -> PathBuf {
        self.root.join(LDLINUX_SYS)
    }

    /// Arm a one-shot try of `slot` with the loader that booted this box
    /// (BIOS: the ADV's boot-once record; UEFI: `LoaderEntryOneShot`);
    /// `None` disarms.
    pub fn arm_try(&self, slot: Option<char>) -> io::Result<()> {
        match &self.efivars {
            Some(dir) => efivar::set(dir, efivar::ONESHOT, slot.map(entry).as_deref()),
            None => adv::set_bootonce_file(&self.ldlinux(), slot.map(label).as_deref()),
        }?;
        self.step();
        Ok(())
    }

    /// The armed one-shot (`nuvol-B` for syslinux, `nuvol-B.conf` for
    /// systemd-boot), if any.
    pub fn armed(&self) -> Option<String> {
        match &self.efivars {
            Some(dir) => efivar::get(dir, efivar::ONESHOT).ok().flatten(),
            None => adv::read_bootonce_file(&self.ldlinux()).ok().flatten(),
        }
    }

    /// Which loader's mechanism arms the try.
    pub fn loader(&self) -> &'static str {
        if self.efivars.is_some() {
            "uefi"
        } else {
            "bios"
        }
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

    /// Whether `v` fits slot `slot` as the image laid it out: every part
    /// no bigger than its slot file, the version shorter than its padded
    /// file. An update never allocates on the boot partition (a power cut
    /// while FAT allocates or frees can leave a chain that the kernel
    /// later finds broken and sets the whole partition read-only), so one
    /// that does not fit is refused before anything is written:
    /// `update_too_big`, and the box needs a newer image flashed.
    pub fn fits(&self, slot: char, v: &Verified) -> Result<(), Refusal> {
        let dir = self.root.join(slot.to_string());
        let room = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        for p in &v.manifest.parts {
            if room(&p.name) < p.size {
                return Err(Refusal::TooBig(format!(
                    "{} is {} bytes; slot {slot} holds {} for it, and an update never allocates on the boot partition: flash a newer image",
                    p.name,
                    p.size,
                    room(&p.name)
                )));
            }
        }
        let vlen = room(VERSION_FILE);
        if vlen <= v.manifest.version.to_string().len() as u64 || vlen > 4096 {
            return Err(Refusal::TooBig(format!(
                "version {:?} does not fit slot {slot}'s {vlen}-byte version file: flash a newer image",
                v.manifest.version
            )));
        }
        Ok(())
    }

    /// Write a verified artefact's parts into `slot` (never the running
    /// one: the caller's business), then its version, then read every part
    /// back from the disk and compare its SHA-256.
    ///
    /// Each slot file is at least as big as its part ([`BootFs::fits`],
    /// checked again here): it is **overwritten in place**, the part, then
    /// zeros to the file's end, fsynced; the version likewise, padded with
    /// newlines. Nothing is allocated or freed on FAT, so a power cut
    /// leaves a torn file in a slot nothing boots, never a broken file
    /// system.
    pub fn write_slot(&self, slot: char, artefact: &Path, v: &Verified) -> Result<(), Refusal> {
        self.fits(slot, v)?;
        let dir = self.root.join(slot.to_string());
        let fail = |what: &str, e: io::Error| Refusal::Failed(format!("{what}: {e}"));
        let room = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        let mut src = File::open(artefact).map_err(|e| fail("artefact", e))?;
        let mut off = v.parts_offset;
        for p in &v.manifest.parts {
            use std::io::{Seek, SeekFrom};
            src.seek(SeekFrom::Start(off))
                .map_err(|e| fail("artefact", e))?;
            self.overwrite(&dir.join(&p.name), &mut src, p)?;
            off += p.size;
        }
        let version = format!("{}\n", v.manifest.version);
        let vpath = dir.join(VERSION_FILE);
        // Newline-padded to the file's fixed size, in place.
        let mut b = version.into_bytes();
        b.resize(room(VERSION_FILE) as usize, b'\n');
        let f = OpenOptions::new()
            .write(true)
            .open(&vpath)
            .map_err(|e| fail("version", e))?;
        f.write_all_at(&b, 0).map_err(|e| fail("version", e))?;
        f.sync_all().map_err(|e| fail("version", e))?;
        self.step();
        // Read back what the disk holds, not the page cache: the part, and
        // zeros after it.
        for p in &v.manifest.parts {
            let path = dir.join(&p.name);
            let mut f = File::open(&path).map_err(|e| fail(&p.name, e))?;
            drop_cache(&f);
            let len = f.metadata().map_err(|e| fail(&p.name, e))?.len();
            let got = (len >= p.size)
                .then(|| hash_exact(&mut f, p.size, None).ok())
                .flatten();
            let mut tail_zero = || -> io::Result<bool> {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(true);
                    }
                    if buf[..n].iter().any(|b| *b != 0) {
                        return Ok(false);
                    }
                }
            };
            if got != Some(p.sha256) || !tail_zero().map_err(|e| fail(&p.name, e))? {
                return Err(Refusal::Failed(format!(
                    "{}: read back from slot {slot}, it does not match the artefact",
                    p.name
                )));
            }
        }
        Ok(())
    }

    /// Overwrite `dest` (at least `p.size` bytes) in place with the part
    /// from `src`, zeros to its end, fsync.
    fn overwrite(&self, dest: &Path, src: &mut File, p: &Part) -> Result<(), Refusal> {
        let fail = |e: io::Error| Refusal::Failed(format!("{}: {e}", p.name));
        let mut out = OpenOptions::new().write(true).open(dest).map_err(fail)?;
        let len = out.metadata().map_err(fail)?.len();
        copy_part(src, p, &mut out)?;
        let zeros = vec![0u8; 64 * 1024];
        let mut at = p.size;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..n]).map_err(fail)?;
            at += n as u64;
        }
        out.flush().map_err(fail)?;
        out.sync_all().map_err(fail)?;
        self.step();
        Ok(())
    }
}

/// Copy part `p` from `src` to `out`, checking its SHA-256 on the way.
fn copy_part(src: &mut File, p: &Part, out: &mut File) -> Result<(), Refusal> {
    let got = hash_exact(src, p.size, Some(out))
        .map_err(|e| Refusal::Failed(format!("{}: {e}", p.name)))?;
    if got != p.sha256 {
        return Err(Refusal::Malformed(format!(
            "{}: changed while it was copied",
            p.name
        )));
    }
    Ok(())
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
    fn a_partition_without_syslinux_keeps_its_default_in_loader_conf() {
        // The arm64 images: systemd-boot alone.
        let (d, _) = boot();
        std::fs::remove_dir_all(d.path().join("syslinux")).unwrap();
        let b = BootFs::uefi(d.path(), d.path());
        assert!(!b.has_syslinux());
        assert!(b.has_slots());
        assert_eq!(b.default_slot().unwrap(), 'A');
        b.set_default('B').unwrap();
        assert_eq!(b.default_slot().unwrap(), 'B');
        assert_eq!(
            std::fs::read_to_string(d.path().join(LOADER_CONF)).unwrap(),
            "default nuvol-B.conf\ntimeout 0\n"
        );
        assert!(!d.path().join(SYSLINUX_CFG).exists(), "nothing made up");
        std::fs::remove_file(d.path().join(LOADER_CONF)).unwrap();
        assert!(!b.has_slots());
        assert!(b.set_default('A').is_err(), "no loader.conf: an error");
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

    /// A slot's padded files are overwritten in place (same inode, same
    /// length, zeros after the part); a part bigger than its file is
    /// refused before anything is written.
    #[test]
    fn padded_slot_files_are_overwritten_in_place() {
        use std::os::unix::fs::MetadataExt;
        let (d, b) = boot();
        let slot = d.path().join("B");
        std::fs::write(slot.join("bzImage"), vec![0x11u8; 4096]).unwrap();
        std::fs::write(slot.join("initrd.img"), vec![0x22u8; 8]).unwrap();
        let initrd_before = std::fs::read(slot.join("initrd.img")).unwrap();
        std::fs::write(
            slot.join(VERSION_FILE),
            "0.1.0\n".to_string() + &"\n".repeat(58),
        )
        .unwrap();
        let ino = |n: &str| std::fs::metadata(slot.join(n)).unwrap().ino();
        let (k_ino, v_ino) = (ino("bzImage"), ino(VERSION_FILE));
        let key = nuvol_bundle::keys::SecretKey::generate().unwrap();
        let a = crate::artefact::build(
            b"kernel",
            b"a bigger initrd",
            "0.2.0",
            "0",
            "x86_64",
            Some(&key),
        )
        .unwrap();
        let file = d.path().join("u.nvu");
        std::fs::write(&file, a).unwrap();
        let policy = crate::artefact::Policy {
            arch: "x86_64".into(),
            running: crate::artefact::Version::parse("0.1.0").unwrap(),
            allow_downgrade: false,
        };
        let v = crate::artefact::verify_file(&file, &vec![key.public()], &policy).unwrap();
        // The initrd (15 bytes) outgrows its 8-byte file: refused, nothing
        // written, not even the kernel that would fit.
        let e = b.write_slot('B', &file, &v).unwrap_err();
        assert_eq!(e.code(), "update_too_big", "{e}");
        assert!(e.to_string().contains("initrd.img is 15 bytes"), "{e}");
        assert_eq!(
            std::fs::read(slot.join("bzImage")).unwrap(),
            vec![0x11u8; 4096]
        );
        assert_eq!(
            std::fs::read(slot.join("initrd.img")).unwrap(),
            initrd_before
        );
        std::fs::write(slot.join("initrd.img"), vec![0x22u8; 32]).unwrap();
        b.write_slot('B', &file, &v).unwrap();
        let k = std::fs::read(slot.join("bzImage")).unwrap();
        assert_eq!(k.len(), 4096);
        assert_eq!(&k[..6], b"kernel");
        assert!(k[6..].iter().all(|b| *b == 0));
        assert_eq!(ino("bzImage"), k_ino, "in place");
        let i = std::fs::read(slot.join("initrd.img")).unwrap();
        assert_eq!(i.len(), 32);
        assert_eq!(&i[..15], b"a bigger initrd");
        assert!(i[15..].iter().all(|b| *b == 0));
        assert_eq!(
            std::fs::metadata(slot.join(VERSION_FILE)).unwrap().len(),
            64
        );
        assert_eq!(ino(VERSION_FILE), v_ino, "in place");
        assert_eq!(b.slot_version('B').as_deref(), Some("0.2.0"));
    }

    #[test]
    fn slot_from_the_command_line() {
        assert_eq!(slot_from_cmdline("a=b nuvol.slot=B panic=10"), Some('B'));
        assert_eq!(slot_from_cmdline("nuvol.slot=C"), None);
        assert_eq!(slot_from_cmdline(""), None);
    }
}
