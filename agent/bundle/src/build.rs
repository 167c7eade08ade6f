//! Building and signing bundles (workstation side).

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::BundleError;
use crate::format::{Head, Header, ImageType, HEADER_LEN};
use crate::keys::{SecretKey, SignatureBlock};
use crate::manifest::{Manifest, Policy};
use crate::scan::scan_tree;
use crate::verify::{hash_exact, read_head};

/// Make a reproducible read-only image of `rootfs` at `out`.
///
/// squashfs: `mksquashfs -noappend -all-root -mkfs-time 0 -all-time 0
/// -no-xattrs` (mksquashfs sorts directory entries itself).
/// erofs: `mkfs.erofs -T0 --all-root -U <fixed uuid>`.
pub fn make_image(rootfs: &Path, fs: ImageType, out: &Path) -> Result<(), BundleError> {
    let _ = fs::remove_file(out);
    let mut cmd = match fs {
        ImageType::Squashfs => {
            let mut c = Command::new("mksquashfs");
            c.arg(rootfs).arg(out).args([
                "-noappend",
                "-all-root",
                "-mkfs-time",
                "0",
                "-all-time",
                "0",
                "-no-xattrs",
                "-quiet",
                "-no-progress",
            ]);
            c
        }
        ImageType::Erofs => {
            let mut c = Command::new("mkfs.erofs");
            c.args([
                "-T0",
                "--all-root",
                "-U",
                "6e75766f-6c00-4000-8000-000000000000",
                "--quiet",
                "-x-1",
            ])
            .arg(out)
            .arg(rootfs);
            c
        }
    };
    let tool = match fs {
        ImageType::Squashfs => "mksquashfs",
        ImageType::Erofs => "mkfs.erofs",
    };
    let o = cmd
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .map_err(|e| BundleError::Tool {
            tool: tool.into(),
            message: e.to_string(),
        })?;
    if !o.status.success() {
        return Err(BundleError::Tool {
            tool: tool.into(),
            message: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Write a bundle from manifest bytes and an existing image file.
/// Signs it with `key` if given, else leaves the signature block zero.
pub fn assemble(
    manifest_bytes: &[u8],
    image: &Path,
    fs: ImageType,
    out: &Path,
    key: Option<&SecretKey>,
) -> Result<Head, BundleError> {
    Manifest::parse(manifest_bytes)?;
    let mut img = File::open(image).map_err(BundleError::io(image))?;
    let image_len = img.metadata().map_err(BundleError::io(image))?.len();
    let digest = hash_exact(&mut img, image_len, None)?;
    let manifest_len =
        u32::try_from(manifest_bytes.len()).map_err(|_| BundleError::ManifestTooLarge {
            size: manifest_bytes.len() as u64,
            limit: crate::format::MAX_MANIFEST_LEN.into(),
        })?;
    let header = Header {
        image_type: fs,
        manifest_len,
        image_len,
        image_digest: digest,
    };
    // Round-trip through the parser so a bundle we write is one we accept.
    Header::parse(&header.to_bytes())?;
    let mut head = Head {
        header,
        manifest_bytes: manifest_bytes.to_vec(),
        signature: Err(crate::format::SignatureState::Unsigned),
    };
    if let Some(k) = key {
        head.signature = Ok(k.sign(&head.signed_message()));
    }
    let tmp = tmp_beside(out);
    let res = (|| {
        let mut f = File::create(&tmp).map_err(BundleError::io(&tmp))?;
        f.write_all(&head.to_bytes())
            .map_err(BundleError::io(&tmp))?;
        img.seek(SeekFrom::Start(0))
            .map_err(BundleError::io(image))?;
        let copied = std::io::copy(&mut img, &mut f).map_err(BundleError::io(&tmp))?;
        if copied != image_len {
            return Err(BundleError::Image("image changed while bundling".into()));
        }
        f.sync_all().map_err(BundleError::io(&tmp))?;
        fs::rename(&tmp, out).map_err(BundleError::io(out))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|_| head)
}

fn tmp_beside(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// Build a bundle from a manifest file and a root filesystem directory.
/// The rootfs is checked against the policy its manifest declares first.
pub fn build(
    manifest_path: &Path,
    rootfs: &Path,
    fs: ImageType,
    out: &Path,
    key: Option<&SecretKey>,
) -> Result<Head, BundleError> {
    build_for(manifest_path, None, rootfs, fs, out, key)
}

/// [`build`], declaring the architecture `arch` in the signed manifest
/// (`arch = "…"` put first in the file's text, which is otherwise signed as
/// written). A manifest that already names another architecture is refused.
pub fn build_for(
    manifest_path: &Path,
    arch: Option<&str>,
    rootfs: &Path,
    fs: ImageType,
    out: &Path,
    key: Option<&SecretKey>,
) -> Result<Head, BundleError> {
    let mut bytes = read_manifest_file(manifest_path)?;
    if let Some(a) = arch {
        match Manifest::parse(&bytes)?.arch {
            Some(have) if have == a => {}
            Some(have) => {
                return Err(BundleError::ManifestInvalid {
                    field: "arch".into(),
                    message: format!("the manifest says {have:?}, the build asks for {a:?}"),
                })
            }
            None => {
                let mut b = format!("arch = {a:?}\n").into_bytes();
                b.extend_from_slice(&bytes);
                bytes = b;
            }
        }
    }
    let manifest = Manifest::parse(&bytes)?;
    let declared = Policy {
        allow_setuid: manifest.privileges.setuid,
        allow_devices: manifest.privileges.devices,
        allow_root: manifest.privileges.root,
    };
    scan_tree(rootfs, &manifest, &declared)?;
    let img = tmp_beside(&out.with_extension("img"));
    let res = make_image(rootfs, fs, &img).and_then(|_| assemble(&bytes, &img, fs, out, key));
    let _ = fs::remove_file(&img);
    res
}

/// Read a manifest file with the size limit applied before reading.
pub fn read_manifest_file(path: &Path) -> Result<Vec<u8>, BundleError> {
    let len = fs::metadata(path).map_err(BundleError::io(path))?.len();
    let limit = u64::from(crate::format::MAX_MANIFEST_LEN);
    if len > limit {
        return Err(BundleError::ManifestTooLarge { size: len, limit });
    }
    fs::read(path).map_err(BundleError::io(path))
}

/// Put `sig` into the bundle at `path` (in place: only the 74-byte
/// signature block is rewritten, then fsynced).
pub fn set_signature(path: &Path, sig: &SignatureBlock) -> Result<(), BundleError> {
    let (_, head) = read_head(path)?;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(BundleError::io(path))?;
    let at = (HEADER_LEN + head.manifest_bytes.len()) as u64;
    f.write_all_at(&sig.to_bytes(), at)
        .map_err(BundleError::io(path))?;
    f.sync_all().map_err(BundleError::io(path))
}

/// Sign the bundle at `path` with `key` (pure ed25519, signify compatible).
pub fn sign_file(path: &Path, key: &SecretKey) -> Result<SignatureBlock, BundleError> {
    let (_, head) = read_head(path)?;
    let sig = key.sign(&head.signed_message());
    set_signature(path, &sig)?;
    Ok(sig)
}
