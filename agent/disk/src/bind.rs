//! Which disk is this box's own.
//!
//! Any disk may carry partitions named `nuvol-boot` and `nuvol-data`: a
//! second nuvol stick, or one a stranger made to supply its own
//! `nuvol.toml` (admin password, trusted keys). So the boot partition is
//! the one the box booted from, as named by
//!
//! 1. the boot loader: systemd-boot (UEFI) sets the EFI variable
//!    `LoaderDevicePartUUID` to the PARTUUID of the partition it was read
//!    from;
//! 2. else the kernel command line: `nuvol.boot=PARTUUID=…`, written into
//!    the loader entries by `image/build.sh` (legacy BIOS has no variable);
//!
//! and the data partition is the `nuvol-data` on the same disk. Every other
//! candidate is refused with a line naming it and the one kept; when the
//! name matches several partitions (two sticks `dd`ed from one image carry
//! the same PARTUUIDs) none is used. Without any binding (an image from
//! before it), a single `nuvol-boot` is used and several are all refused.

use std::fmt;

use crate::{Partition, BOOT_PARTNAME, DATA_PARTNAME};

/// The file in efivarfs that systemd-boot sets (vendor GUID of the Boot
/// Loader Interface).
pub const LOADER_DEVICE_PARTUUID: &str =
    "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// Where the PARTUUID of the boot partition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingSource {
    /// The EFI variable `LoaderDevicePartUUID`.
    Loader,
    /// `nuvol.boot=PARTUUID=…` on the kernel command line.
    CommandLine,
}

impl fmt::Display for BindingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindingSource::Loader => "the boot loader (LoaderDevicePartUUID)",
            BindingSource::CommandLine => "the kernel command line (nuvol.boot=)",
        })
    }
}

/// The boot partition the box booted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Lowercase, hyphenated.
    pub partuuid: String,
    pub source: BindingSource,
}

impl Binding {
    /// From the kernel command line and the efivarfs file
    /// [`LOADER_DEVICE_PARTUUID`] (if there is one): the loader's word wins,
    /// since it names the partition the loader was actually read from.
    /// Also returns console lines about what was odd (a malformed value,
    /// the two disagreeing).
    pub fn from_boot(cmdline: &str, loader_var: Option<&[u8]>) -> (Option<Binding>, Vec<String>) {
        let mut notes = Vec::new();
        let cmd = match partuuid_from_cmdline(cmdline) {
            Ok(p) => p,
            Err(e) => {
                notes.push(e);
                None
            }
        };
        let loader = match loader_var {
            None => None,
            Some(bytes) => {
                let p = loader_partuuid(bytes);
                if p.is_none() {
                    notes.push(format!(
                        "the EFI variable LoaderDevicePartUUID holds no PARTUUID ({} bytes): ignored",
                        bytes.len()
                    ));
                }
                p
            }
        };
        let binding = match (loader, cmd) {
            (Some(l), Some(c)) => {
                if l != c {
                    notes.push(format!(
                        "the boot loader was read from PARTUUID {l} but the kernel command line names {c}: following the boot loader"
                    ));
                }
                Some(Binding {
                    partuuid: l,
                    source: BindingSource::Loader,
                })
            }
            (Some(l), None) => Some(Binding {
                partuuid: l,
                source: BindingSource::Loader,
            }),
            (None, Some(c)) => Some(Binding {
                partuuid: c,
                source: BindingSource::CommandLine,
            }),
            (None, None) => None,
        };
        (binding, notes)
    }
}

/// `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX` in any case → lowercase.
pub fn normalize_partuuid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) {
            *c == b'-'
        } else {
            c.is_ascii_hexdigit()
        };
        if !ok {
            return None;
        }
    }
    Some(s.to_ascii_lowercase())
}

/// The PARTUUID of `nuvol.boot=PARTUUID=…` (the last one, as the kernel's
/// own parameters go); `Err` says what is wrong with a malformed one.
pub fn partuuid_from_cmdline(cmdline: &str) -> Result<Option<String>, String> {
    let Some(v) = cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("nuvol.boot="))
    else {
        return Ok(None);
    };
    v.strip_prefix("PARTUUID=")
        .and_then(normalize_partuuid)
        .map(Some)
        .ok_or_else(|| {
            let shown: String = v.chars().take(64).collect();
            format!(
                "nuvol.boot={shown:?} on the kernel command line is not PARTUUID=<uuid>: ignored"
            )
        })
}

/// The PARTUUID in the contents of the efivarfs file
/// [`LOADER_DEVICE_PARTUUID`]: 4 bytes of attributes, then the UUID in
/// UTF-16LE (systemd-boot writes it in upper case), NUL-terminated.
pub fn loader_partuuid(efivar: &[u8]) -> Option<String> {
    let data = efivar.get(4..)?;
    if data.len() > 256 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    normalize_partuuid(String::from_utf16(&units).ok()?.trim())
}

/// What PID 1 mounts, and the console lines saying what it refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub boot: Option<Partition>,
    /// Only ever on the disk of `boot`.
    pub data: Option<Partition>,
    pub notes: Vec<String>,
}

fn describe(p: &Partition) -> String {
    match &p.partuuid {
        Some(u) => format!("{} (PARTUUID {u})", p.dev.display()),
        None => format!("{} (PARTUUID unreadable)", p.dev.display()),
    }
}

fn list(ps: &[&Partition]) -> String {
    let names: Vec<String> = ps.iter().map(|p| describe(p)).collect();
    match names.len() {
        0 => String::new(),
        1 => names[0].clone(),
        n => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// Choose the boot partition among `boots` (every `nuvol-boot`) by
/// `binding`, and the data partition among `datas` (every `nuvol-data`) on
/// its disk. Never picks one of several candidates it cannot tell apart.
pub fn select(boots: &[Partition], datas: &[Partition], binding: Option<&Binding>) -> Selection {
    let mut notes = Vec::new();
    let matching: Vec<&Partition> = match binding {
        Some(b) => boots
            .iter()
            .filter(|p| p.partuuid.as_deref() == Some(b.partuuid.as_str()))
            .collect(),
        None => boots.iter().collect(),
    };
    let boot = match (matching.len(), binding) {
        (1, b) => {
            let m = matching[0];
            let others: Vec<&Partition> = boots.iter().filter(|p| p.dev != m.dev).collect();
            if !others.is_empty() {
                let why = match b {
                    Some(b) => format!("named by {}", b.source),
                    None => "the only one".to_string(),
                };
                notes.push(format!(
                    "refusing {BOOT_PARTNAME} {}: not the partition this box booted from, {} ({why})",
                    list(&others),
                    describe(m)
                ));
            }
            Some(m.clone())
        }
        (0, Some(b)) => {
            if !boots.is_empty() {
                let all: Vec<&Partition> = boots.iter().collect();
                notes.push(format!(
                    "refusing {BOOT_PARTNAME} {}: none is PARTUUID {}, the partition named by {}",
                    list(&all),
                    b.partuuid,
                    b.source
                ));
            }
            None
        }
        (0, None) => None,
        (_, Some(b)) => {
            notes.push(format!(
                "refusing {BOOT_PARTNAME} {}: all carry PARTUUID {}, named by {} (copies of one image): this box cannot tell which one it booted from; unplug the others and reboot",
                list(&matching),
                b.partuuid,
                b.source
            ));
            None
        }
        (_, None) => {
            notes.push(format!(
                "refusing {BOOT_PARTNAME} {}: several, and neither the boot loader nor the kernel command line (nuvol.boot=) names the one this box booted from",
                list(&matching)
            ));
            None
        }
    };
    let mut data = None;
    match &boot {
        Some(b) => {
            let same: Vec<&Partition> = datas.iter().filter(|d| d.disk == b.disk).collect();
            let elsewhere: Vec<&Partition> = datas.iter().filter(|d| d.disk != b.disk).collect();
            if !elsewhere.is_empty() {
                notes.push(format!(
                    "refusing {DATA_PARTNAME} {}: not on {}, the disk this box booted from",
                    list(&elsewhere),
                    b.disk.display()
                ));
            }
            match same.len() {
                1 => data = Some(same[0].clone()),
                0 => {}
                _ => notes.push(format!(
                    "refusing {DATA_PARTNAME} {}: several on {}",
                    list(&same),
                    b.disk.display()
                )),
            }
        }
        None => {
            if !datas.is_empty() && !boots.is_empty() {
                let all: Vec<&Partition> = datas.iter().collect();
                notes.push(format!(
                    "refusing {DATA_PARTNAME} {}: no boot partition of this box to pair it with",
                    list(&all)
                ));
            }
        }
    }
    Selection { boot, data, notes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const OWN: &str = "0a3e9c6e-5b1d-4e2a-8c3f-1d2e3f4a5b6c";
    const OTHER: &str = "11111111-2222-4333-8444-555555555555";

    fn part(disk: &str, n: u32, uuid: &str) -> Partition {
        Partition {
            dev: PathBuf::from(format!("/dev/{disk}{n}")),
            disk: PathBuf::from(format!("/dev/{disk}")),
            number: n,
            start: 2048,
            sectors: 4096,
            partuuid: Some(uuid.into()),
        }
    }

    fn cmdline_binding(u: &str) -> Binding {
        Binding {
            partuuid: u.into(),
            source: BindingSource::CommandLine,
        }
    }

    #[test]
    fn cmdline_and_loader_variable_are_parsed_strictly() {
        let line = format!(
            "console=ttyS0 nuvol.boot=PARTUUID={} nuvol.slot=A",
            OWN.to_uppercase()
        );
        assert_eq!(partuuid_from_cmdline(&line), Ok(Some(OWN.to_string())));
        assert_eq!(
            partuuid_from_cmdline("console=ttyS0 nuvol.slot=B"),
            Ok(None)
        );
        for bad in [
            "nuvol.boot=LABEL=x",
            "nuvol.boot=PARTUUID=0a3e9c6e",
            "nuvol.boot=PARTUUID=0a3e9c6e-5b1d-4e2a-8c3f-1d2e3f4a5b6g",
            "nuvol.boot=PARTUUID=0a3e9c6e_5b1d-4e2a-8c3f-1d2e3f4a5b6c",
        ] {
            let e = partuuid_from_cmdline(bad).unwrap_err();
            assert!(e.contains("not PARTUUID=<uuid>"), "{bad}: {e}");
        }
        // As systemd-boot writes it: attributes, then upper-case UTF-16LE, NUL.
        let mut var = vec![0x06, 0, 0, 0];
        for u in OWN.to_uppercase().encode_utf16().chain([0]) {
            var.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(loader_partuuid(&var), Some(OWN.to_string()));
        assert_eq!(loader_partuuid(&var[..3]), None);
        assert_eq!(loader_partuuid(&[6, 0, 0, 0, b'x', 0]), None);
        assert_eq!(loader_partuuid(&vec![0x41; 4096]), None);
    }

    #[test]
    fn the_loader_wins_over_the_command_line() {
        let mut var = vec![0x06, 0, 0, 0];
        for u in OTHER.encode_utf16().chain([0]) {
            var.extend_from_slice(&u.to_le_bytes());
        }
        let line = format!("nuvol.boot=PARTUUID={OWN}");
        let (b, notes) = Binding::from_boot(&line, Some(&var));
        let b = b.unwrap();
        assert_eq!(
            (b.partuuid.as_str(), b.source),
            (OTHER, BindingSource::Loader)
        );
        assert!(notes[0].contains("following the boot loader"), "{notes:?}");
        let (b, notes) = Binding::from_boot(&line, None);
        assert_eq!(b.unwrap().source, BindingSource::CommandLine);
        assert!(notes.is_empty());
        let (b, notes) = Binding::from_boot("nuvol.boot=garbage", None);
        assert_eq!(b, None);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn a_foreign_boot_partition_is_refused_and_named() {
        // The stranger's stick enumerates first (vda), the box's own is vdb.
        let boots = [part("vda", 1, OTHER), part("vdb", 1, OWN)];
        let datas = [
            part("vda", 2, "a0000000-0000-4000-8000-000000000000"),
            part("vdb", 2, "b0000000-0000-4000-8000-000000000000"),
        ];
        let s = select(&boots, &datas, Some(&cmdline_binding(OWN)));
        assert_eq!(s.boot.unwrap().dev, PathBuf::from("/dev/vdb1"));
        assert_eq!(s.data.unwrap().dev, PathBuf::from("/dev/vdb2"));
        let text = s.notes.join("\n");
        assert!(
            text.contains("refusing nuvol-boot /dev/vda1 (PARTUUID 11111111-")
                && text.contains("/dev/vdb1 (PARTUUID 0a3e9c6e-")
                && text.contains("kernel command line"),
            "{text}"
        );
        assert!(text.contains("refusing nuvol-data /dev/vda2"), "{text}");
    }

    #[test]
    fn identical_copies_are_all_refused() {
        let boots = [part("sda", 1, OWN), part("sdb", 1, OWN)];
        let datas = [part("sda", 2, OTHER), part("sdb", 2, OTHER)];
        let s = select(&boots, &datas, Some(&cmdline_binding(OWN)));
        assert_eq!((s.boot, s.data), (None, None));
        let text = s.notes.join("\n");
        assert!(
            text.contains("/dev/sda1") && text.contains("/dev/sdb1"),
            "{text}"
        );
        assert!(text.contains("cannot tell which one"), "{text}");
        assert!(text.contains("refusing nuvol-data"), "{text}");
    }

    #[test]
    fn without_a_binding_only_a_single_candidate_is_used() {
        let one = [part("vda", 1, OWN)];
        let data = [part("vda", 2, OTHER)];
        let s = select(&one, &data, None);
        assert_eq!(s.boot.unwrap().dev, PathBuf::from("/dev/vda1"));
        assert_eq!(s.data.unwrap().dev, PathBuf::from("/dev/vda2"));
        assert!(s.notes.is_empty());
        let two = [part("vda", 1, OWN), part("vdb", 1, OTHER)];
        let s = select(&two, &data, None);
        assert_eq!((s.boot, s.data), (None, None));
        assert!(s.notes[0].contains("several"), "{:?}", s.notes);
    }

    #[test]
    fn a_missing_own_partition_uses_no_other() {
        let boots = [part("vda", 1, OTHER)];
        let s = select(
            &boots,
            &[part("vda", 2, OTHER)],
            Some(&cmdline_binding(OWN)),
        );
        assert_eq!((s.boot, s.data), (None, None));
        assert!(
            s.notes[0].contains("none is PARTUUID 0a3e9c6e"),
            "{:?}",
            s.notes
        );
        // Data only on the boot disk, never from another.
        let s = select(
            &[part("vda", 1, OWN)],
            &[part("vdb", 2, OTHER)],
            Some(&cmdline_binding(OWN)),
        );
        assert!(s.boot.is_some());
        assert_eq!(s.data, None);
        assert!(s.notes[0].contains("not on /dev/vda"), "{:?}", s.notes);
    }
}
