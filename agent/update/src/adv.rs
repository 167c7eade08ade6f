//! syslinux's Auxiliary Data Vector: how the BIOS loader is told to boot
//! the other slot exactly once.
//!
//! The ADV is the last two 512-byte sectors of `ldlinux.sys`, two copies of
//! one block (the second is the fallback when the first does not check
//! out). A block: head magic, a checksum, 500 bytes of records, tail magic
//! (little-endian 32-bit words). The checksum makes the sum of the 126
//! words from the checksum to the last data word equal [`MAGIC_SUM`].
//! Records are `tag ‖ len ‖ len bytes`, ended by tag 0. Tag 1
//! ([`TAG_BOOTONCE`]) holds a command line: `ldlinux.c32` copies it,
//! clears the record, writes the ADV back and only then boots it, so a
//! panic or reset during that boot falls back to the configured default.
//!
//! The file's bytes are rewritten where they are (pwrite at the same
//! offsets, no truncation or reallocation): the loader knows the two
//! sectors by their disk address, patched in at install time.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const ADV_SIZE: usize = 512;
pub const MAGIC_HEAD: u32 = 0x5a2d_2fa5;
pub const MAGIC_SUM: u32 = 0xa304_1767;
pub const MAGIC_TAIL: u32 = 0xdd28_bf64;
pub const TAG_END: u8 = 0;
pub const TAG_BOOTONCE: u8 = 1;
/// Bytes for records in one block.
pub const DATA_LEN: usize = ADV_SIZE - 12;

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One ADV record.
pub type Record = (u8, Vec<u8>);

/// Encode records into one block with its magics and checksum.
pub fn encode(records: &[Record]) -> Result<[u8; ADV_SIZE], String> {
    let mut b = [0u8; ADV_SIZE];
    let mut p = 8;
    for (tag, data) in records {
        if *tag == TAG_END || data.len() > 255 {
            return Err(format!("ADV record tag {tag} of {} bytes", data.len()));
        }
        if p + 2 + data.len() > 8 + DATA_LEN {
            return Err("the ADV is full".into());
        }
        b[p] = *tag;
        b[p + 1] = data.len() as u8;
        b[p + 2..p + 2 + data.len()].copy_from_slice(data);
        p += 2 + data.len();
    }
    b[..4].copy_from_slice(&MAGIC_HEAD.to_le_bytes());
    b[ADV_SIZE - 4..].copy_from_slice(&MAGIC_TAIL.to_le_bytes());
    let sum = (8..ADV_SIZE - 4)
        .step_by(4)
        .fold(0u32, |s, at| s.wrapping_add(word(&b, at)));
    b[4..8].copy_from_slice(&MAGIC_SUM.wrapping_sub(sum).to_le_bytes());
    Ok(b)
}

/// The records of a block, `None` when its magics or checksum are wrong.
pub fn decode(b: &[u8]) -> Option<Vec<Record>> {
    if b.len() != ADV_SIZE || word(b, 0) != MAGIC_HEAD || word(b, ADV_SIZE - 4) != MAGIC_TAIL {
        return None;
    }
    let sum = (4..ADV_SIZE - 4)
        .step_by(4)
        .fold(0u32, |s, at| s.wrapping_add(word(b, at)));
    if sum != MAGIC_SUM {
        return None;
    }
    let data = &b[8..ADV_SIZE - 4];
    let mut out = Vec::new();
    let mut p = 0;
    while p + 2 <= data.len() && data[p] != TAG_END {
        let len = data[p + 1] as usize;
        let end = p + 2 + len;
        if end > data.len() {
            break;
        }
        out.push((data[p], data[p + 2..end].to_vec()));
        p = end;
    }
    Some(out)
}

/// The records of an ADV (both copies, 1024 bytes): the first copy that
/// checks out, as the loader reads it; empty when neither does.
pub fn read_pair(pair: &[u8]) -> Vec<Record> {
    pair.chunks(ADV_SIZE)
        .take(2)
        .find_map(decode)
        .unwrap_or_default()
}

/// `records` with the boot-once command replaced (`None`: removed).
pub fn with_bootonce(mut records: Vec<Record>, cmd: Option<&str>) -> Vec<Record> {
    records.retain(|(t, _)| *t != TAG_BOOTONCE);
    if let Some(c) = cmd {
        records.push((TAG_BOOTONCE, c.as_bytes().to_vec()));
    }
    records
}

/// The boot-once command of an ADV pair, if one is set.
pub fn bootonce(pair: &[u8]) -> Option<String> {
    read_pair(pair)
        .into_iter()
        .find(|(t, d)| *t == TAG_BOOTONCE && !d.is_empty())
        .map(|(_, d)| String::from_utf8_lossy(&d).into_owned())
}

/// Set (or with `None` clear) the boot-once command in `ldlinux.sys`,
/// keeping its other records: both copies rewritten in place, the first
/// then the second, each fsynced, so a cut leaves one good copy.
pub fn set_bootonce_file(ldlinux: &Path, cmd: Option<&str>) -> io::Result<()> {
    let f = OpenOptions::new().read(true).write(true).open(ldlinux)?;
    let len = f.metadata()?.len();
    if len < 4 * ADV_SIZE as u64 || len % ADV_SIZE as u64 != 0 {
        return Err(io::Error::other(format!(
            "{}: {len} bytes is not an ldlinux.sys with an ADV",
            ldlinux.display()
        )));
    }
    let at = len - 2 * ADV_SIZE as u64;
    let mut pair = [0u8; 2 * ADV_SIZE];
    f.read_exact_at(&mut pair, at)?;
    if decode(&pair[..ADV_SIZE]).is_none() && decode(&pair[ADV_SIZE..]).is_none() {
        // Neither copy is an ADV: this is not the file's ADV area, and
        // writing there could break the loader.
        let zero = pair.iter().all(|b| *b == 0);
        if !zero {
            return Err(io::Error::other(format!(
                "{}: no ADV in its last two sectors",
                ldlinux.display()
            )));
        }
    }
    let block = encode(&with_bootonce(read_pair(&pair), cmd)).map_err(io::Error::other)?;
    for copy in 0..2u64 {
        f.write_all_at(&block, at + copy * ADV_SIZE as u64)?;
        f.sync_data()?;
    }
    Ok(())
}

/// The boot-once command set in `ldlinux.sys`, if any.
pub fn read_bootonce_file(ldlinux: &Path) -> io::Result<Option<String>> {
    let f = std::fs::File::open(ldlinux)?;
    let len = f.metadata()?.len();
    if len < 2 * ADV_SIZE as u64 {
        return Ok(None);
    }
    let mut pair = [0u8; 2 * ADV_SIZE];
    f.read_exact_at(&mut pair, len - 2 * ADV_SIZE as u64)?;
    Ok(bootonce(&pair))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The empty ADV Debian's `syslinux --install` writes (checked against
    /// syslinux 6.04's ldlinux.sys): head, checksum = MAGIC_SUM, zeros, tail.
    #[test]
    fn empty_block_matches_the_installers() {
        let b = encode(&[]).unwrap();
        assert_eq!(&b[..8], &[0xa5, 0x2f, 0x2d, 0x5a, 0x67, 0x17, 0x04, 0xa3]);
        assert_eq!(&b[508..], &[0x64, 0xbf, 0x28, 0xdd]);
        assert!(b[8..508].iter().all(|x| *x == 0));
    }

    #[test]
    fn round_trip_and_checksum() {
        let recs = vec![(2u8, b"menu".to_vec()), (TAG_BOOTONCE, b"nuvol-B".to_vec())];
        let b = encode(&recs).unwrap();
        assert_eq!(decode(&b).unwrap(), recs);
        let sum = (4..508)
            .step_by(4)
            .fold(0u32, |s, at| s.wrapping_add(word(&b, at)));
        assert_eq!(sum, MAGIC_SUM);
        // Any flipped bit is caught.
        for at in [0, 5, 9, 300, 511] {
            let mut c = b;
            c[at] ^= 0x10;
            assert!(decode(&c).is_none(), "flip at {at}");
        }
    }

    #[test]
    fn full_adv_is_refused() {
        let big = vec![(3u8, vec![b'x'; 255]), (4u8, vec![b'y'; 255])];
        assert!(encode(&big).is_err());
    }

    #[test]
    fn file_both_copies_written_in_place_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ldlinux.sys");
        let mut bytes = vec![0x90u8; 8 * 512];
        let other = encode(&[(2, b"keep".to_vec())]).unwrap();
        bytes[6 * 512..7 * 512].copy_from_slice(&other);
        bytes[7 * 512..].copy_from_slice(&other);
        std::fs::write(&p, &bytes).unwrap();
        set_bootonce_file(&p, Some("nuvol-B")).unwrap();
        let after = std::fs::read(&p).unwrap();
        assert_eq!(after.len(), bytes.len());
        assert_eq!(&after[..6 * 512], &bytes[..6 * 512], "code untouched");
        assert_eq!(&after[6 * 512..7 * 512], &after[7 * 512..], "both copies");
        assert_eq!(
            decode(&after[6 * 512..7 * 512]).unwrap(),
            vec![(2, b"keep".to_vec()), (TAG_BOOTONCE, b"nuvol-B".to_vec())]
        );
        assert_eq!(read_bootonce_file(&p).unwrap().as_deref(), Some("nuvol-B"));
        // The loader's own clear (the record removed) reads as none; so
        // does ours.
        set_bootonce_file(&p, None).unwrap();
        assert_eq!(read_bootonce_file(&p).unwrap(), None);
        // A broken first copy: the second one is read.
        let mut b = std::fs::read(&p).unwrap();
        set_bootonce_file(&p, Some("nuvol-A")).unwrap();
        b = {
            let mut n = std::fs::read(&p).unwrap();
            n[6 * 512 + 100] ^= 1;
            let _ = b;
            n
        };
        assert_eq!(bootonce(&b[6 * 512..]).as_deref(), Some("nuvol-A"));
    }

    #[test]
    fn a_file_without_adv_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ldlinux.sys");
        std::fs::write(&p, vec![0x55u8; 4096]).unwrap();
        assert!(set_bootonce_file(&p, Some("nuvol-B")).is_err());
        assert_eq!(std::fs::read(&p).unwrap(), vec![0x55u8; 4096]);
    }
}
