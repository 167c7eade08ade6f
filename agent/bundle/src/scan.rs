//! Content policy for a bundle's root filesystem, checked on the directory a
//! bundle is built from and again on the mounted image before install.
//!
//! Refused unless declared in the manifest and allowed by policy: device
//! nodes, setuid/setgid files. Always refused: symlinks that climb above the
//! image root, names that are `.`/`..` or contain `/`, sockets, volume mount
//! points that pass through a symlink.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::error::BundleError;
use crate::manifest::{Manifest, Policy};

/// Most entries an image may hold.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Deepest directory nesting accepted.
pub const MAX_DEPTH: usize = 128;

/// What a scan found (for reporting).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub entries: usize,
    pub setuid: usize,
    pub devices: usize,
}

/// Does a symlink at `link` (relative to the root, e.g. `usr/bin/x`) with
/// `target` stay inside the root when resolved lexically?
pub fn symlink_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth: i64 = 0;
    if target.is_relative() {
        // Start in the link's directory.
        if let Some(parent) = link.parent() {
            for c in parent.components() {
                if let Component::Normal(_) = c {
                    depth += 1;
                }
            }
        }
    }
    for c in target.components() {
        match c {
            Component::RootDir => depth = 0,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::Prefix(_) => return false,
        }
    }
    true
}

/// Walk `root` and apply the policy for `manifest`'s declared privileges.
pub fn scan_tree(
    root: &Path,
    manifest: &Manifest,
    policy: &Policy,
) -> Result<ScanReport, BundleError> {
    manifest.check_policy(policy)?;
    let allow_setuid = manifest.privileges.setuid && policy.allow_setuid;
    let allow_devices = manifest.privileges.devices && policy.allow_devices;
    let mut report = ScanReport::default();
    let mut stack: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(BundleError::Image(format!(
                "nesting deeper than {MAX_DEPTH} at {rel:?}"
            )));
        }
        let dir = root.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(BundleError::io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(BundleError::io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            report.entries += 1;
            if report.entries > MAX_ENTRIES {
                return Err(BundleError::Image(format!(
                    "more than {MAX_ENTRIES} entries"
                )));
            }
            let name = e.file_name();
            let nb = name.as_encoded_bytes();
            if nb.is_empty() || nb == b"." || nb == b".." || nb.contains(&b'/') || nb.contains(&0) {
                return Err(BundleError::PathTraversal(
                    rel.join(&name).display().to_string(),
                ));
            }
            let relp = rel.join(&name);
            let shown = format!("/{}", relp.display());
            let md = e.metadata().map_err(BundleError::io(e.path()))?;
            let ft = md.file_type();
            if ft.is_symlink() {
                let t = fs::read_link(e.path()).map_err(BundleError::io(e.path()))?;
                if !symlink_stays_inside(&relp, &t) {
                    return Err(BundleError::SymlinkEscape {
                        path: shown,
                        target: t.display().to_string(),
                    });
                }
            } else if ft.is_dir() {
                stack.push((relp, depth + 1));
            } else if ft.is_block_device() || ft.is_char_device() {
                if !allow_devices {
                    return Err(BundleError::DeviceNode(shown));
                }
                report.devices += 1;
            } else if ft.is_socket() {
                return Err(BundleError::UnsupportedFileType(shown));
            }
            if !ft.is_symlink() && md.mode() & 0o6000 != 0 {
                if !allow_setuid {
                    return Err(BundleError::Setuid(shown));
                }
                report.setuid += 1;
            }
        }
    }
    check_mount_points(root, manifest)?;
    Ok(report)
}

/// Volume mount points must not pass through a symlink in the image (a bind
/// mount would follow it on the host) and must be directories if present.
pub fn check_mount_points(root: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    for v in &manifest.volumes {
        let mut p = root.to_path_buf();
        for part in v.path.trim_start_matches('/').split('/') {
            p.push(part);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.file_type().is_symlink() => {
                    let t = fs::read_link(&p).map_err(BundleError::io(&p))?;
                    return Err(BundleError::SymlinkEscape {
                        path: v.path.clone(),
                        target: t.display().to_string(),
                    });
                }
                Ok(md) if !md.is_dir() => {
                    return Err(BundleError::ManifestInvalid {
                        field: "volumes.path".into(),
                        message: format!("{} exists in the image and is not a directory", v.path),
                    })
                }
                Ok(_) => {}
                Err(_) => break, // created at run time
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_symlink_resolution() {
        let ok = |l: &str, t: &str| symlink_stays_inside(Path::new(l), Path::new(t));
        assert!(ok("usr/bin/x", "../lib/y"));
        assert!(ok("usr/bin/x", "/etc/passwd"));
        assert!(ok("a", "b/../c"));
        assert!(!ok("usr/bin/x", "../../../etc"));
        assert!(!ok("a", "../b"));
        assert!(!ok("x", "/../etc"));
    }
}
