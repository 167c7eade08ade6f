//! Hints from the hypervisor in SMBIOS OEM strings (type 11), read from
//! `/sys/firmware/dmi/tables/DMI`. `qemu/run.sh --https-port 8443` passes
//! `-smbios type=11,value=nuvol:panel.public_https_port=8443` so that the
//! plain-HTTP redirect names the port the host forwards to the guest's 443.
//! nuvol.toml wins over a hint; real boards carry no such string.

/// Prefix of nuvol's OEM strings.
pub const PREFIX: &str = "nuvol:";
/// Largest table read.
const MAX_TABLE: u64 = 1 << 20;

/// The OEM strings (type 11) in a raw SMBIOS structure table.
pub fn oem_strings(table: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= table.len() {
        let ty = table[i];
        let len = table[i + 1] as usize;
        if len < 4 || i + len > table.len() {
            break;
        }
        // The strings follow the formatted part and end with a double NUL.
        let mut strings = Vec::new();
        let mut j = i + len;
        loop {
            let Some(rest) = table.get(j..) else {
                return out;
            };
            let Some(n) = rest.iter().position(|&b| b == 0) else {
                return out;
            };
            if n == 0 {
                j += 1;
                break;
            }
            strings.push(String::from_utf8_lossy(&rest[..n]).into_owned());
            j += n + 1;
        }
        if strings.is_empty() {
            j += 1; // an empty string-set is two NULs
        }
        if ty == 11 {
            out.extend(strings);
        }
        if ty == 127 {
            break;
        }
        i = j;
    }
    out
}

/// The value of `nuvol:KEY=VALUE` in the machine's OEM strings.
pub fn hint(key: &str) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open("/sys/firmware/dmi/tables/DMI").ok()?;
    let mut table = Vec::new();
    f.take(MAX_TABLE).read_to_end(&mut table).ok()?;
    oem_strings(&table).into_iter().find_map(|s| {
        let (k, v) = s.strip_prefix(PREFIX)?.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// `[panel] public_https_port` from a hint (only when nuvol.toml names
/// none).
pub fn public_https_port() -> Option<u16> {
    hint("panel.public_https_port")?
        .parse()
        .ok()
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_oem_strings_among_other_structures() {
        let mut t = Vec::new();
        // Type 1 with two strings.
        t.extend_from_slice(&[1, 8, 0, 1, 1, 2, 0, 0]);
        t.extend_from_slice(b"QEMU\0Standard PC\0\0");
        // Type 0 with no strings.
        t.extend_from_slice(&[0, 4, 1, 0, 0, 0]);
        // Type 11 with two OEM strings.
        t.extend_from_slice(&[11, 5, 2, 0, 2]);
        t.extend_from_slice(b"other\0nuvol:panel.public_https_port=8443\0\0");
        t.extend_from_slice(&[127, 4, 3, 0, 0, 0]);
        assert_eq!(
            oem_strings(&t),
            vec!["other", "nuvol:panel.public_https_port=8443"]
        );
        // Truncated or garbage tables end the walk without panicking.
        for n in 0..t.len() {
            let _ = oem_strings(&t[..n]);
        }
        assert!(oem_strings(&[11, 2, 0]).is_empty());
    }
}
