//! Just enough GPT to grow the last partition after the image was written to
//! a larger disk: move the backup header to the disk's end and extend one
//! partition entry to the last usable sector. Everything read is validated
//! (signature, sizes, CRCs) before anything is written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::DiskError;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: usize = 92;

/// One parsed GPT header (only the fields this module needs).
#[derive(Debug, Clone)]
struct Header {
    raw: Vec<u8>,
    current_lba: u64,
    backup_lba: u64,
    first_usable: u64,
    last_usable: u64,
    entries_lba: u64,
    n_entries: u32,
    entry_size: u32,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn read_at(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

fn parse_header(sector: &[u8]) -> Result<Header, DiskError> {
    let bad = |m: &str| DiskError::BadGpt(m.to_string());
    if &sector[..8] != SIGNATURE {
        return Err(bad("no GPT signature at LBA 1"));
    }
    let hsize = u32_at(sector, 12) as usize;
    if !(HEADER_SIZE..=sector.len()).contains(&hsize) {
        return Err(bad("header size out of range"));
    }
    let mut raw = sector[..hsize].to_vec();
    let crc = u32_at(&raw, 16);
    raw[16..20].copy_from_slice(&[0; 4]);
    if crc32fast::hash(&raw) != crc {
        return Err(bad("header CRC mismatch"));
    }
    raw[16..20].copy_from_slice(&crc.to_le_bytes());
    let h = Header {
        current_lba: u64_at(&raw, 24),
        backup_lba: u64_at(&raw, 32),
        first_usable: u64_at(&raw, 40),
        last_usable: u64_at(&raw, 48),
        entries_lba: u64_at(&raw, 72),
        n_entries: u32_at(&raw, 80),
        entry_size: u32_at(&raw, 84),
        raw,
    };
    if h.entry_size < 128 || h.entry_size > 4096 || h.n_entries == 0 || h.n_entries > 1024 {
        return Err(bad("partition entry array size out of range"));
    }
    Ok(h)
}

fn seal(raw: &mut [u8]) {
    raw[16..20].copy_from_slice(&[0; 4]);
    let crc = crc32fast::hash(raw);
    raw[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// What [`grow_partition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    /// First sector of the partition (unchanged).
    pub start_lba: u64,
    /// Last sector before and after.
    pub old_end_lba: u64,
    pub new_end_lba: u64,
}

/// Extend partition number `partn` (1-based) to the end of the disk behind
/// `f`, whose size is `disk_bytes`. Returns `None` when there is nothing to do
/// (already at the end, or another partition follows it).
pub fn grow_partition(
    f: &File,
    disk_bytes: u64,
    sector: u64,
    partn: u32,
) -> Result<Option<Grown>, DiskError> {
    let bad = |m: String| DiskError::BadGpt(m);
    if !(512..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(bad(format!("unsupported sector size {sector}")));
    }
    let total = disk_bytes / sector;
    let mut hdr = parse_header(&read_at(f, sector, sector as usize)?)?;
    if hdr.current_lba != 1 {
        return Err(bad("primary header does not point at itself".into()));
    }
    let array_bytes = hdr.n_entries as usize * hdr.entry_size as usize;
    let array_sectors = (array_bytes as u64).div_ceil(sector);
    let mut entries = read_at(f, hdr.entries_lba * sector, array_bytes)?;
    if crc32fast::hash(&entries) != u32_at(&hdr.raw, 88) {
        return Err(bad("partition entry array CRC mismatch".into()));
    }
    if partn == 0 || partn > hdr.n_entries {
        return Err(bad(format!("no partition {partn}")));
    }
    let new_last_usable = total
        .checked_sub(1 + array_sectors + 1)
        .ok_or_else(|| bad("disk too small".into()))?;
    if new_last_usable < hdr.last_usable {
        return Err(bad(format!(
            "disk ({total} sectors) is smaller than the GPT says ({} usable)",
            hdr.last_usable
        )));
    }
    let es = hdr.entry_size as usize;
    // The partition's entry: its index in the array, and where its bytes
    // start.
    let own = (partn - 1) as usize;
    let idx = own * es;
    let entry = &entries[idx..idx + es];
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(bad(format!("partition {partn} is unused")));
    }
    let start = u64_at(entry, 32);
    let end = u64_at(entry, 40);
    // Refuse if any other partition lies after this one.
    for i in 0..hdr.n_entries as usize {
        let e = &entries[i * es..(i + 1) * es];
        if i != own && !e[..16].iter().all(|&b| b == 0) && u64_at(e, 32) > end {
            return Ok(None);
        }
    }
    if end >= new_last_usable && hdr.backup_lba == total - 1 {
        return Ok(None);
    }
    let new_end = new_last_usable.max(end);
    entries[idx + 40..idx + 48].copy_from_slice(&new_end.to_le_bytes());
    let entries_crc = crc32fast::hash(&entries);

    // Backup first (entries, then header), then primary: a cut in between
    // leaves a valid primary describing the old, still consistent layout.
    let backup_entries_lba = total - 1 - array_sectors;
    let mut backup = hdr.raw.clone();
    backup[24..32].copy_from_slice(&(total - 1).to_le_bytes());
    backup[32..40].copy_from_slice(&1u64.to_le_bytes());
    backup[48..56].copy_from_slice(&new_last_usable.to_le_bytes());
    backup[72..80].copy_from_slice(&backup_entries_lba.to_le_bytes());
    backup[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    seal(&mut backup);
    f.write_all_at(&entries, backup_entries_lba * sector)?;
    f.write_all_at(&backup, (total - 1) * sector)?;
    f.sync_all()?;

    hdr.raw[32..40].copy_from_slice(&(total - 1).to_le_bytes());
    hdr.raw[48..56].copy_from_slice(&new_last_usable.to_le_bytes());
    hdr.raw[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    seal(&mut hdr.raw);
    f.write_all_at(&entries, hdr.entries_lba * sector)?;
    f.write_all_at(&hdr.raw, sector)?;
    f.sync_all()?;
    let _ = hdr.first_usable;
    Ok(Some(Grown {
        start_lba: start,
        old_end_lba: end,
        new_end_lba: new_end,
    }))
}

/// One used entry of a GPT partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Partition number, 1-based.
    pub number: u32,
    /// The partition name (UTF-16 in the table).
    pub name: String,
    /// The unique partition GUID, as `/dev/disk/by-partuuid` and the
    /// kernel's `root=PARTUUID=` spell it: lowercase, hyphenated.
    pub partuuid: String,
}

/// Format a GUID as stored on disk (first three fields little-endian).
pub fn guid_string(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The used partitions of the GPT disk behind `f` (primary table; header
/// and entry array CRCs checked).
pub fn entries(f: &File, sector: u64) -> Result<Vec<Entry>, DiskError> {
    let hdr = parse_header(&read_at(f, sector, sector as usize)?)?;
    let array_bytes = hdr.n_entries as usize * hdr.entry_size as usize;
    let entries = read_at(f, hdr.entries_lba * sector, array_bytes)?;
    if crc32fast::hash(&entries) != u32_at(&hdr.raw, 88) {
        return Err(DiskError::BadGpt(
            "partition entry array CRC mismatch".into(),
        ));
    }
    let es = hdr.entry_size as usize;
    let mut out = Vec::new();
    for (i, e) in entries.chunks_exact(es).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&e[16..32]);
        out.push(Entry {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&units),
            partuuid: guid_string(&guid),
        });
    }
    Ok(out)
}

/// Names of the used partitions of the GPT disk behind `f`, as
/// `(number, name)`. Used when the kernel's uevent carries no PARTNAME
/// (partitions added through BLKPG rather than found by the kernel's scan).
pub fn partition_names(f: &File, sector: u64) -> Result<Vec<(u32, String)>, DiskError> {
    Ok(entries(f, sector)?
        .into_iter()
        .map(|e| (e.number, e.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SECTOR: u64 = 512;

    struct TempFile(PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A disk of `total` sectors with a primary GPT of 256 entries of 128
    /// bytes (64 sectors from LBA 2), the used ones `parts`: (number,
    /// first LBA, last LBA). Grown afterwards to `grown` sectors.
    fn disk(tag: &str, total: u64, grown: u64, parts: &[(u32, u64, u64)]) -> (TempFile, File) {
        let (n, es) = (256u32, 128usize);
        let array_sectors = (n as u64 * es as u64).div_ceil(SECTOR);
        let mut entries = vec![0u8; n as usize * es];
        for &(num, first, last) in parts {
            let e = &mut entries[(num as usize - 1) * es..num as usize * es];
            e[..16].copy_from_slice(&[0x11; 16]);
            e[16..32].copy_from_slice(&[num as u8; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let mut h = vec![0u8; HEADER_SIZE];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(total - 1).to_le_bytes());
        h[40..48].copy_from_slice(&(2 + array_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(total - 2 - array_sectors).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&n.to_le_bytes());
        h[84..88].copy_from_slice(&(es as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        seal(&mut h);
        let path = std::env::temp_dir().join(format!("nuvol-gpt-{tag}-{}.img", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(grown * SECTOR).unwrap();
        f.write_all_at(&h, SECTOR).unwrap();
        f.write_all_at(&entries, 2 * SECTOR).unwrap();
        (TempFile(path), f)
    }

    /// Partition 2 is followed on the disk by partition 129, whose entry
    /// is the 129th (index 128: 128 bytes is also partition 2's offset in
    /// the array). Growing partition 2 would overlap it.
    #[test]
    fn a_partition_is_never_grown_over_the_one_after_it() {
        let parts = [(1, 66, 99), (2, 100, 199), (129, 300, 399)];
        let (t, f) = disk("follows", 1000, 2000, &parts);
        let before = std::fs::read(&t.0).unwrap();
        assert_eq!(grow_partition(&f, 2000 * SECTOR, SECTOR, 2).unwrap(), None);
        assert_eq!(std::fs::read(&t.0).unwrap(), before, "nothing written");
        // The last one grows to the new end (the table is sound).
        let g = grow_partition(&f, 2000 * SECTOR, SECTOR, 129)
            .unwrap()
            .expect("grew");
        assert_eq!((g.start_lba, g.old_end_lba), (300, 399));
        assert_eq!(g.new_end_lba, 2000 - 2 - 64);
    }
}
