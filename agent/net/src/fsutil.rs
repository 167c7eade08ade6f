//! Bounded reads (atomic writes: `nuvol_durable`).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Read a UTF-8 file of at most `max` bytes.
pub(crate) fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let f = File::open(path)?;
    let mut s = String::new();
    f.take(max + 1).read_to_string(&mut s)?;
    if s.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn bounded_read_refuses_large() {
        let dir = std::env::temp_dir().join(format!("nuvol-net-fs-{}", std::process::id()));
        let p = dir.join("f");
        nuvol_durable::write_atomic(&p, b"two", nuvol_durable::Mode::Public).unwrap();
        assert_eq!(read_bounded(&p, 10).unwrap(), "two");
        assert!(read_bounded(&p, 2).is_err());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
