//! The bundle file layout (see docs/bundles.md for the normative text).
//!
//! ```text
//! offset        size  field
//! 0             8     magic "NUVOLBDL"
//! 8             2     format version (u16 LE) = 1
//! 10            1     image type: 1 squashfs, 2 erofs
//! 11            1     reserved, 0
//! 12            4     manifest length M (u32 LE), 1..=MAX_MANIFEST_LEN
//! 16            8     image length N (u64 LE), 1..=MAX_IMAGE_LEN
//! 24            8     image offset (u64 LE) = align_up(64 + M + 74, 4096)
//! 32            32    SHA-256 of the image
//! 64            M     manifest (UTF-8 TOML)
//! 64+M          74    signature block "Ed"|"ED" ‖ key id ‖ ed25519 signature
//! 64+M+74       ..    zero padding up to the image offset
//! image offset  N     image; the file ends exactly here
//! ```
//! The signature covers bytes `0 .. 64+M`: the header (with the image
//! digest) and the manifest.

use std::io::Read;

use crate::error::BundleError;
use crate::keys::{SignatureBlock, SIG_BLOCK_LEN};

/// First 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"NUVOLBDL";
/// The only format version this code reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Fixed header length.
pub const HEADER_LEN: usize = 64;
/// Largest manifest accepted.
pub const MAX_MANIFEST_LEN: u32 = 64 * 1024;
/// Largest image accepted (64 GiB: bigger than any stick nuvol runs from).
pub const MAX_IMAGE_LEN: u64 = 64 << 30;
/// The image starts on a multiple of this, so it can be loop-mounted in place.
pub const IMAGE_ALIGN: u64 = 4096;

/// What kind of filesystem the image is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageType {
    Squashfs,
    Erofs,
}

impl ImageType {
    fn code(self) -> u8 {
        match self {
            ImageType::Squashfs => 1,
            ImageType::Erofs => 2,
        }
    }
    fn from_code(c: u8) -> Result<ImageType, BundleError> {
        match c {
            1 => Ok(ImageType::Squashfs),
            2 => Ok(ImageType::Erofs),
            other => Err(BundleError::UnknownImageType(other)),
        }
    }
    /// The name `mount -t` wants.
    pub fn fs_name(self) -> &'static str {
        match self {
            ImageType::Squashfs => "squashfs",
            ImageType::Erofs => "erofs",
        }
    }
}

/// The fixed 64-byte header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub image_type: ImageType,
    pub manifest_len: u32,
    pub image_len: u64,
    pub image_digest: [u8; 32],
}

/// Where the image starts for a manifest of `manifest_len` bytes.
pub fn image_offset(manifest_len: u32) -> u64 {
    let end = HEADER_LEN as u64 + u64::from(manifest_len) + SIG_BLOCK_LEN as u64;
    end.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN
}

impl Header {
    /// Offset of the image in the file.
    pub fn image_offset(&self) -> u64 {
        image_offset(self.manifest_len)
    }

    /// Total file length this header implies.
    pub fn file_len(&self) -> u64 {
        self.image_offset() + self.image_len
    }

    /// Serialize.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10] = self.image_type.code();
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.image_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.image_offset().to_le_bytes());
        b[32..64].copy_from_slice(&self.image_digest);
        b
    }

    /// Parse and bounds-check the fixed header. Touches nothing else.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, BundleError> {
        if b[0..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let image_type = ImageType::from_code(b[10])?;
        if b[11] != 0 {
            return Err(BundleError::ReservedNotZero);
        }
        let manifest_len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if manifest_len == 0 {
            return Err(BundleError::ManifestEmpty);
        }
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::ManifestTooLarge {
                size: manifest_len.into(),
                limit: MAX_MANIFEST_LEN.into(),
            });
        }
        let mut u = [0u8; 8];
        u.copy_from_slice(&b[16..24]);
        let image_len = u64::from_le_bytes(u);
        if image_len == 0 {
            return Err(BundleError::ImageEmpty);
        }
        if image_len > MAX_IMAGE_LEN {
            return Err(BundleError::ImageTooLarge {
                size: image_len,
                limit: MAX_IMAGE_LEN,
            });
        }
        u.copy_from_slice(&b[24..32]);
        let found = u64::from_le_bytes(u);
        let expected = image_offset(manifest_len);
        if found != expected {
            return Err(BundleError::BadImageOffset { expected, found });
        }
        let mut image_digest = [0u8; 32];
        image_digest.copy_from_slice(&b[32..64]);
        Ok(Header {
            image_type,
            manifest_len,
            image_len,
            image_digest,
        })
    }
}

/// Everything in front of the image: header, manifest bytes, signature.
#[derive(Clone, Debug)]
pub struct Head {
    pub header: Header,
    /// The raw manifest: NOT to be parsed before the signature verifies.
    pub manifest_bytes: Vec<u8>,
    pub signature: Result<SignatureBlock, SignatureState>,
}

/// Why a head carries no usable signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureState {
    Unsigned,
    /// The algorithm tag, and the raw block (kept so the head re-serializes exactly).
    UnsupportedAlgorithm([u8; 2], Vec<u8>),
}

impl Head {
    /// The bytes the signature covers: header ‖ manifest.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(HEADER_LEN + self.manifest_bytes.len());
        m.extend_from_slice(&self.header.to_bytes());
        m.extend_from_slice(&self.manifest_bytes);
        m
    }

    /// The signature, or the error saying why there is none.
    pub fn signature(&self) -> Result<&SignatureBlock, BundleError> {
        match &self.signature {
            Ok(s) => Ok(s),
            Err(SignatureState::Unsigned) => Err(BundleError::Unsigned),
            Err(SignatureState::UnsupportedAlgorithm(a, _)) => {
                Err(BundleError::UnsupportedSignatureAlgorithm(*a))
            }
        }
    }

    /// Serialize everything up to the image offset (with `sig`, or zeros).
    pub fn to_bytes(&self) -> Vec<u8> {
        let off = self.header.image_offset() as usize;
        let mut out = Vec::with_capacity(off);
        out.extend_from_slice(&self.header.to_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        match &self.signature {
            Ok(s) => out.extend_from_slice(&s.to_bytes()),
            Err(SignatureState::UnsupportedAlgorithm(_, raw)) => out.extend_from_slice(raw),
            Err(SignatureState::Unsigned) => out.extend_from_slice(&[0u8; SIG_BLOCK_LEN]),
        }
        out.resize(off, 0);
        out
    }

    /// Read and check the head from `r`, for a file of `file_len` bytes.
    ///
    /// Reads at most `64 + MAX_MANIFEST_LEN + 74 + 4095` bytes; the image is
    /// not read. Sizes are checked against `file_len` before anything is
    /// allocated, so a truncated or padded file is refused up front.
    pub fn read_from(r: &mut impl Read, file_len: u64) -> Result<Head, BundleError> {
        let io = |e: std::io::Error| BundleError::Io {
            path: "<bundle>".into(),
            source: e,
        };
        if file_len < HEADER_LEN as u64 {
            return Err(BundleError::Truncated {
                expected: HEADER_LEN as u64,
                actual: file_len,
            });
        }
        let mut hb = [0u8; HEADER_LEN];
        r.read_exact(&mut hb).map_err(io)?;
        let header = Header::parse(&hb)?;
        let expected = header.file_len();
        if file_len < expected {
            return Err(BundleError::Truncated {
                expected,
                actual: file_len,
            });
        }
        if file_len > expected {
            return Err(BundleError::TrailingData {
                extra: file_len - expected,
            });
        }
        let rest_len = (header.image_offset() - HEADER_LEN as u64) as usize;
        let mut rest = vec![0u8; rest_len];
        r.read_exact(&mut rest).map_err(io)?;
        let m = header.manifest_len as usize;
        let manifest_bytes = rest[..m].to_vec();
        let mut sb = [0u8; SIG_BLOCK_LEN];
        sb.copy_from_slice(&rest[m..m + SIG_BLOCK_LEN]);
        if rest[m + SIG_BLOCK_LEN..].iter().any(|b| *b != 0) {
            return Err(BundleError::PaddingNotZero);
        }
        let signature = match SignatureBlock::from_bytes(&sb) {
            Ok(s) => Ok(s),
            Err(BundleError::UnsupportedSignatureAlgorithm(a)) => {
                Err(SignatureState::UnsupportedAlgorithm(a, sb.to_vec()))
            }
            Err(_) => Err(SignatureState::Unsigned),
        };
        Ok(Head {
            header,
            manifest_bytes,
            signature,
        })
    }

    /// Parse a stored head (everything before the image, without the image).
    pub fn parse_head_only(b: &[u8]) -> Result<Head, BundleError> {
        let hb: &[u8; HEADER_LEN] =
            b.get(..HEADER_LEN)
                .and_then(|s| s.try_into().ok())
                .ok_or(BundleError::Truncated {
                    expected: HEADER_LEN as u64,
                    actual: b.len() as u64,
                })?;
        let header = Header::parse(hb)?;
        if b.len() as u64 != header.image_offset() {
            return Err(BundleError::Truncated {
                expected: header.image_offset(),
                actual: b.len() as u64,
            });
        }
        Head::read_from(&mut std::io::Cursor::new(b), header.file_len())
    }

    /// Parse a head from an in-memory file (the fuzz entry point).
    pub fn parse(file: &[u8]) -> Result<Head, BundleError> {
        let mut c = std::io::Cursor::new(file);
        Head::read_from(&mut c, file.len() as u64)
    }
}

/// Hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            image_type: ImageType::Erofs,
            manifest_len: 100,
            image_len: 5000,
            image_digest: [7; 32],
        };
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
        assert_eq!(h.image_offset(), 4096);
        assert_eq!(image_offset(4096 - 64 - 74), 4096);
        assert_eq!(image_offset(4096 - 64 - 73), 8192);
    }

    /// Found by fuzzing: an unknown signature algorithm must survive a
    /// parse/serialize round trip byte for byte.
    #[test]
    fn unknown_signature_algorithm_round_trips() {
        let file = include_bytes!("../../../fuzz/corpus/bundle_head/regress-unsupported-sig-alg");
        let head = Head::parse(file).unwrap();
        assert!(matches!(
            head.signature(),
            Err(BundleError::UnsupportedSignatureAlgorithm(_))
        ));
        let off = head.header.image_offset() as usize;
        assert_eq!(&head.to_bytes()[..], &file[..off]);
    }

    #[test]
    fn oversized_manifest_rejected_before_reading() {
        let mut b = Header {
            image_type: ImageType::Squashfs,
            manifest_len: 1,
            image_len: 1,
            image_digest: [0; 32],
        }
        .to_bytes();
        b[12..16].copy_from_slice(&(MAX_MANIFEST_LEN + 1).to_le_bytes());
        assert!(matches!(
            Header::parse(&b),
            Err(BundleError::ManifestTooLarge { .. })
        ));
    }
}
