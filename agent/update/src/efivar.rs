//! systemd-boot's one-shot entry: the EFI variable `LoaderEntryOneShot`
//! (vendor GUID `4a67b082-…`, the Boot Loader Interface), written through
//! efivarfs. systemd-boot reads it, **deletes it**, and only then boots the
//! entry it names, exactly what syslinux's ADV boot-once record does for
//! BIOS: any reset of that boot finds no variable and boots the default.
//!
//! An efivarfs file is the variable's 4-byte attributes (little-endian)
//! followed by its data, written with one `write(2)`; the value here is a
//! NUL-terminated UTF-16LE entry id (`nuvol-B.conf`). Variables outside
//! the kernel's short list of known ones are created immutable
//! (`chattr +i`), so changing or deleting one first clears that flag, as
//! systemd's own tools do. The firmware stores the variable with its own
//! fault-tolerant write; nothing is written to the FAT boot partition.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the kernel shows EFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// The Boot Loader Interface's vendor GUID (systemd-boot's variables).
pub const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// The entry to boot next time only.
pub const ONESHOT: &str = "LoaderEntryOneShot";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS: u32 = 0x7;
/// Longer values are not ours (an entry id is a short file name).
const MAX_VALUE: usize = 512;
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

/// The efivarfs file of `name` under systemd-boot's GUID.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{LOADER_GUID}"))
}

/// An efivarfs file's bytes for a string variable.
pub fn encode(value: &str) -> Vec<u8> {
    let mut b = ATTRS.to_le_bytes().to_vec();
    for u in value.encode_utf16().chain(std::iter::once(0)) {
        b.extend_from_slice(&u.to_le_bytes());
    }
    b
}

/// A string variable's value from its efivarfs bytes (attributes first;
/// the terminating NUL is optional, as the firmware may store it or not).
pub fn decode(b: &[u8]) -> Option<String> {
    let data = b.get(4..)?;
    if data.len() % 2 != 0 || data.len() > MAX_VALUE * 2 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    String::from_utf16(&units).ok()
}

/// Clear the immutable flag efivarfs puts on variables it does not know.
fn make_mutable(f: &std::fs::File) -> io::Result<()> {
    let fd = f.as_raw_fd();
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one int at the
    // pointer, which lives across the calls.
    unsafe {
        if libc::ioctl(fd, libc::FS_IOC_GETFLAGS as _, &mut flags) != 0 {
            let e = io::Error::last_os_error();
            // A file system without inode flags has no immutable flag.
            return match e.raw_os_error() {
                Some(libc::ENOTTY | libc::EOPNOTSUPP) => Ok(()),
                _ => Err(e),
            };
        }
        if flags & FS_IMMUTABLE_FL != 0 {
            flags &= !FS_IMMUTABLE_FL;
            if libc::ioctl(fd, libc::FS_IOC_SETFLAGS as _, &flags) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Set `name` to `value`, or delete it with `None` (absent already is
/// fine). `dir` must be a writable efivarfs.
pub fn set(dir: &Path, name: &str, value: Option<&str>) -> io::Result<()> {
    let p = path(dir, name);
    match std::fs::File::open(&p) {
        Ok(f) => make_mutable(&f)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match value {
        None => match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Some(v) => {
            let bytes = encode(v);
            // No O_TRUNC: efivarfs replaces the value with the one write.
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)?;
            // One write: efivarfs takes a variable whole or not at all.
            let n = f.write(&bytes)?;
            if n != bytes.len() {
                return Err(io::Error::other(format!(
                    "{}: {n} of {} bytes written",
                    p.display(),
                    bytes.len()
                )));
            }
            Ok(())
        }
    }
}

/// The value of `name`, `None` when it is not set.
pub fn get(dir: &Path, name: &str) -> io::Result<Option<String>> {
    let mut b = Vec::new();
    match std::fs::File::open(path(dir, name)) {
        Ok(f) => f.take(4 + 2 * MAX_VALUE as u64 + 2).read_to_end(&mut b)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    decode(&b)
        .map(Some)
        .ok_or_else(|| io::Error::other(format!("{name}: not a UTF-16 string")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_systemd_does() {
        // bootctl set-oneshot nuvol-B.conf writes exactly these bytes.
        let b = encode("nuvol-B.conf");
        assert_eq!(&b[..4], &[7, 0, 0, 0]);
        assert_eq!(&b[4..8], &[b'n', 0, b'u', 0]);
        assert_eq!(&b[b.len() - 2..], &[0, 0]);
        assert_eq!(b.len(), 4 + 2 * 13);
        assert_eq!(decode(&b).as_deref(), Some("nuvol-B.conf"));
        // Without the NUL too.
        assert_eq!(decode(&b[..b.len() - 2]).as_deref(), Some("nuvol-B.conf"));
    }

    #[test]
    fn refuses_what_is_not_a_string() {
        assert_eq!(decode(&[7, 0, 0]), None);
        assert_eq!(decode(&[7, 0, 0, 0, b'a']), None);
        let mut lone_surrogate = vec![7, 0, 0, 0];
        lone_surrogate.extend_from_slice(&0xd800u16.to_le_bytes());
        assert_eq!(decode(&lone_surrogate), None);
        assert_eq!(decode(&vec![b'a'; 4 + 2 * MAX_VALUE + 2]), None);
    }

    #[test]
    fn set_get_delete_on_a_directory() {
        // A plain directory stands in for efivarfs here; the booted image
        // tests the real one (tests/tests/update.rs, UEFI).
        let d = tempfile::tempdir().unwrap();
        assert_eq!(get(d.path(), ONESHOT).unwrap(), None);
        set(d.path(), ONESHOT, Some("nuvol-B.conf")).unwrap();
        assert_eq!(
            std::fs::read(path(d.path(), ONESHOT)).unwrap(),
            encode("nuvol-B.conf")
        );
        assert_eq!(
            get(d.path(), ONESHOT).unwrap().as_deref(),
            Some("nuvol-B.conf")
        );
        set(d.path(), ONESHOT, None).unwrap();
        assert_eq!(get(d.path(), ONESHOT).unwrap(), None);
        set(d.path(), ONESHOT, None).unwrap();
    }
}
