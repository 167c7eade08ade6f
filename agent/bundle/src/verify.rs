//! Verification: header, then signature, then image digest, then manifest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::BundleError;
use crate::format::{hex, Head};
use crate::keys::{KeyId, PublicKey};
use crate::manifest::Manifest;

/// Read size for hashing; large reads keep SHA-NI fed.
pub const HASH_CHUNK: usize = 1 << 20;

/// Where verification finds trusted keys.
pub trait KeyLookup {
    /// The trusted key with this id, or `UnknownKey` / `RevokedKey`.
    fn lookup(&self, id: &KeyId) -> Result<PublicKey, BundleError>;
}

impl KeyLookup for PublicKey {
    fn lookup(&self, id: &KeyId) -> Result<PublicKey, BundleError> {
        if *id == self.key_id {
            Ok(self.clone())
        } else {
            Err(BundleError::UnknownKey(id.to_string()))
        }
    }
}

impl KeyLookup for [PublicKey] {
    fn lookup(&self, id: &KeyId) -> Result<PublicKey, BundleError> {
        self.iter()
            .find(|k| k.key_id == *id)
            .cloned()
            .ok_or_else(|| BundleError::UnknownKey(id.to_string()))
    }
}

impl KeyLookup for Vec<PublicKey> {
    fn lookup(&self, id: &KeyId) -> Result<PublicKey, BundleError> {
        self.as_slice().lookup(id)
    }
}

/// A bundle whose signature and digest checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub head: Head,
    pub manifest: Manifest,
    pub key_id: KeyId,
    pub digest: [u8; 32],
}

impl Verified {
    /// Image digest as hex.
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }
}

/// Check the head's signature with a key from `keys`. Returns the key id.
pub fn verify_head(head: &Head, keys: &dyn KeyLookup) -> Result<KeyId, BundleError> {
    let sig = head.signature()?;
    let key = keys.lookup(&sig.key_id)?;
    key.verify(sig, &head.signed_message())?;
    Ok(sig.key_id)
}

/// SHA-256 of exactly `len` bytes from `r`, copying them to `out` if given.
pub fn hash_exact(
    r: &mut impl Read,
    len: u64,
    mut out: Option<&mut dyn Write>,
) -> Result<[u8; 32], BundleError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(HASH_CHUNK as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(BundleError::Truncated {
                    expected: len,
                    actual: len - left,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io("<image>")(e)),
        };
        h.update(&buf[..n]);
        if let Some(w) = out.as_deref_mut() {
            w.write_all(&buf[..n])
                .map_err(BundleError::io("<image copy>"))?;
        }
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

/// Open `path` and read its head (bounded; the image is not read).
pub fn read_head(path: &Path) -> Result<(File, Head), BundleError> {
    let mut f = File::open(path).map_err(BundleError::io(path))?;
    let len = f.metadata().map_err(BundleError::io(path))?.len();
    let head = Head::read_from(&mut f, len).map_err(|e| relabel(e, path))?;
    Ok((f, head))
}

fn relabel(e: BundleError, path: &Path) -> BundleError {
    match e {
        BundleError::Io { source, .. } => BundleError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// Verify a bundle file completely. If `image_out` is given the image bytes
/// are copied there while they are hashed (one pass over the file); the
/// caller must discard the copy unless this returns `Ok`.
pub fn verify_file(
    path: &Path,
    keys: &dyn KeyLookup,
    image_out: Option<&mut dyn Write>,
) -> Result<Verified, BundleError> {
    let (mut f, head) = read_head(path)?;
    let key_id = verify_head(&head, keys)?;
    f.seek(SeekFrom::Start(head.header.image_offset()))
        .map_err(BundleError::io(path))?;
    let digest =
        hash_exact(&mut f, head.header.image_len, image_out).map_err(|e| relabel(e, path))?;
    if digest != head.header.image_digest {
        return Err(BundleError::DigestMismatch {
            expected: hex(&head.header.image_digest),
            actual: hex(&digest),
        });
    }
    let manifest = Manifest::parse(&head.manifest_bytes)?;
    Ok(Verified {
        head,
        manifest,
        key_id,
        digest,
    })
}

/// Verify a whole bundle held in memory (tests, fuzzing, small uploads).
pub fn verify_bytes(file: &[u8], keys: &dyn KeyLookup) -> Result<Verified, BundleError> {
    let head = Head::parse(file)?;
    let key_id = verify_head(&head, keys)?;
    let off = head.header.image_offset() as usize;
    let image = file.get(off..).ok_or(BundleError::Truncated {
        expected: head.header.file_len(),
        actual: file.len() as u64,
    })?;
    let digest: [u8; 32] = Sha256::digest(image).into();
    if digest != head.header.image_digest {
        return Err(BundleError::DigestMismatch {
            expected: hex(&head.header.image_digest),
            actual: hex(&digest),
        });
    }
    let manifest = Manifest::parse(&head.manifest_bytes)?;
    Ok(Verified {
        head,
        manifest,
        key_id,
        digest,
    })
}
