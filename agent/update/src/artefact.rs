//! The `.nvu` update artefact: one file, read from the front.
//!
//! ```text
//! offset   size  field
//! 0        8     magic "NUVOLUPD"
//! 8        2     format version (1), little endian
//! 10       2     zero
//! 12       4     manifest length M (1..=4096), little endian
//! 16       M     manifest: UTF-8 lines "key value" (below)
//! 16+M     74    signature block (the bundles' scheme: "Ed" ‖ key id ‖
//!                ed25519 signature) over bytes 0..16+M
//! 90+M     …     the parts, in manifest order, back to back
//! ```
//!
//! The manifest, exactly these lines in this order:
//!
//! ```text
//! nuvol-update 1
//! version 0.2.0
//! arch x86_64
//! min_version 0.1.0
//! part bzImage 3793920 <sha256 hex>
//! part initrd.img 4012345 <sha256 hex>
//! ```
//!
//! Order of trust: the header's lengths are bounded, the signature is
//! checked against the trusted keys, only then is the manifest parsed;
//! architecture and versions are checked, the file's length must be what
//! the manifest says, and each part is hashed. Nothing is written anywhere
//! before all of that passed.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use nuvol_bundle::keys::{SecretKey, SignatureBlock, SIG_BLOCK_LEN};
use nuvol_bundle::verify::{hash_exact, KeyLookup};
use nuvol_bundle::BundleError;

pub const MAGIC: [u8; 8] = *b"NUVOLUPD";
pub const FORMAT: u16 = 1;
pub const HEADER_LEN: usize = 16;
/// Longest manifest.
pub const MAX_MANIFEST: usize = 4096;
/// Largest part (the image reserves 6 MiB for a kernel and 8 MiB for an
/// initramfs per slot on a 40 MiB boot partition; bigger parts need room).
pub const MAX_PART: u64 = 32 << 20;
/// Largest artefact.
pub const MAX_ARTEFACT: u64 =
    (HEADER_LEN + MAX_MANIFEST + SIG_BLOCK_LEN) as u64 + PARTS.len() as u64 * MAX_PART;
/// The parts, in the order they follow the signature.
pub const PARTS: [&str; 2] = ["bzImage", "initrd.img"];

/// Why an artefact is refused (or could not be applied). The API answers
/// with [`Refusal::code`] and [`Refusal::http_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a well-formed artefact (header, manifest, lengths, hashes).
    Malformed(String),
    /// Unsigned, signed by a key not in `[update] trusted_keys`, or a bad signature.
    Untrusted(String),
    /// Built for another architecture.
    WrongArch { got: String, want: String },
    /// Not newer than the running version (and no `allow_downgrade`).
    NotNewer { version: String, running: String },
    /// The running version is older than the artefact's `min_version`.
    TooOld { min: String, running: String },
    /// Too big for the format or for the boot partition.
    TooBig(String),
    /// A trial of another update runs, or nothing to update (no slots).
    Busy(String),
    /// No boot partition with slots here (a development host).
    Unavailable(String),
    /// Writing or reading back the slot failed.
    Failed(String),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "update_malformed",
            Refusal::Untrusted(_) => "update_untrusted",
            Refusal::WrongArch { .. } => "update_wrong_arch",
            Refusal::NotNewer { .. } => "update_not_newer",
            Refusal::TooOld { .. } => "update_too_old",
            Refusal::TooBig(_) => "update_too_big",
            Refusal::Busy(_) => "update_busy",
            Refusal::Unavailable(_) => "update_unavailable",
            Refusal::Failed(_) => "update_failed",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) => 400,
            Refusal::Untrusted(_) => 403,
            Refusal::WrongArch { .. } => 422,
            Refusal::NotNewer { .. } | Refusal::TooOld { .. } | Refusal::Busy(_) => 409,
            Refusal::TooBig(_) => 413,
            Refusal::Unavailable(_) => 501,
            Refusal::Failed(_) => 500,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(m) => write!(f, "malformed update artefact: {m}"),
            Refusal::Untrusted(m) => write!(f, "untrusted update artefact: {m}"),
            Refusal::WrongArch { got, want } => {
                write!(f, "the update is for {got}, this box is {want}")
            }
            Refusal::NotNewer { version, running } => write!(
                f,
                "version {version} is not newer than the running {running} (allow_downgrade to install it anyway)"
            ),
            Refusal::TooOld { min, running } => write!(
                f,
                "the update upgrades from {min} or later; this box runs {running}"
            ),
            Refusal::TooBig(m) | Refusal::Busy(m) | Refusal::Unavailable(m) | Refusal::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

fn bad(m: impl Into<String>) -> Refusal {
    Refusal::Malformed(m.into())
}

/// An OS version: 1 to 4 dot-separated numbers (`0.2.0`); compared with
/// missing components as zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    text: String,
    key: [u32; 4],
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, String> {
        let mut key = [0u32; 4];
        let n = s.split('.').count();
        let ok = (1..=4).contains(&n)
            && s.split('.').zip(key.iter_mut()).all(|(c, k)| {
                !c.is_empty()
                    && c.len() <= 9
                    && c.bytes().all(|b| b.is_ascii_digit())
                    && c.parse().map(|v| *k = v).is_ok()
            });
        if ok {
            Ok(Version {
                text: s.to_string(),
                key,
            })
        } else {
            Err(format!(
                "{:?} is not a version (1 to 4 dot-separated numbers)",
                s.chars().take(40).collect::<String>()
            ))
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Version {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One part: its file name in the slot, size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// What the signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: Version,
    pub arch: String,
    pub min_version: Version,
    pub parts: Vec<Part>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Manifest {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "nuvol-update {FORMAT}\nversion {}\narch {}\nmin_version {}\n",
            self.version, self.arch, self.min_version
        );
        for p in &self.parts {
            s.push_str(&format!("part {} {} {}\n", p.name, p.size, hex(&p.sha256)));
        }
        s
    }

    /// Parse the manifest's text: exactly the lines above, in order.
    pub fn parse(text: &str) -> Result<Manifest, Refusal> {
        let mut lines = text.lines();
        let mut field = |key: &str| -> Result<&str, Refusal> {
            let line = lines
                .next()
                .ok_or_else(|| bad(format!("manifest: missing the {key:?} line")))?;
            line.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or_else(|| {
                    bad(format!(
                        "manifest: expected a {key:?} line, found {:?}",
                        line.chars().take(60).collect::<String>()
                    ))
                })
        };
        let fmt = field("nuvol-update")?;
        if fmt != FORMAT.to_string() {
            return Err(bad(format!(
                "manifest format {fmt:?}: this box reads format {FORMAT}"
            )));
        }
        let version = Version::parse(field("version")?)
            .map_err(|e| bad(format!("manifest: version: {e}")))?;
        let arch = field("arch")?.to_string();
        if arch.is_empty() || arch.len() > 32 || !arch.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("manifest: arch is not an architecture name"));
        }
        let min_version = Version::parse(field("min_version")?)
            .map_err(|e| bad(format!("manifest: min_version: {e}")))?;
        let mut parts = Vec::new();
        for want in PARTS {
            let rest = field("part")?;
            let w: Vec<&str> = rest.split(' ').collect();
            let [name, size, sum] = w[..] else {
                return Err(bad(format!(
                    "manifest: part {want}: want \"part NAME SIZE SHA256\""
                )));
            };
            if name != want {
                return Err(bad(format!(
                    "manifest: part {name:?} where {want:?} belongs"
                )));
            }
            let size: u64 = size
                .parse()
                .ok()
                .filter(|_| size.len() <= 12)
                .ok_or_else(|| bad(format!("manifest: part {name}: size {size:?}")))?;
            if size == 0 {
                return Err(bad(format!("manifest: part {name} is empty")));
            }
            if size > MAX_PART {
                return Err(Refusal::TooBig(format!(
                    "part {name} is {size} bytes; at most {MAX_PART}"
                )));
            }
            let sha256 = unhex32(sum)
                .ok_or_else(|| bad(format!("manifest: part {name}: not a SHA-256 in hex")))?;
            parts.push(Part {
                name: name.to_string(),
                size,
                sha256,
            });
        }
        if let Some(extra) = lines.next() {
            return Err(bad(format!(
                "manifest: unexpected line {:?}",
                extra.chars().take(60).collect::<String>()
            )));
        }
        Ok(Manifest {
            version,
            arch,
            min_version,
            parts,
        })
    }

    /// Where the parts start in the file, and the whole file's length.
    pub fn layout(manifest_len: usize, parts: &[Part]) -> (u64, u64) {
        let start = (HEADER_LEN + manifest_len + SIG_BLOCK_LEN) as u64;
        (start, start + parts.iter().map(|p| p.size).sum::<u64>())
    }
}

fn header(manifest_len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&(manifest_len as u32).to_le_bytes());
    h
}

/// Build a signed artefact from the two parts' bytes (`key`: `None` leaves
/// the signature block zero, "unsigned", for tests of the refusal).
pub fn build(
    kernel: &[u8],
    initrd: &[u8],
    version: &str,
    min_version: &str,
    arch: &str,
    key: Option<&SecretKey>,
) -> Result<Vec<u8>, Refusal> {
    use sha2::{Digest, Sha256};
    let part = |name: &str, b: &[u8]| Part {
        name: name.to_string(),
        size: b.len() as u64,
        sha256: Sha256::digest(b).into(),
    };
    let m = Manifest {
        version: Version::parse(version).map_err(bad)?,
        arch: arch.to_string(),
        min_version: Version::parse(min_version).map_err(bad)?,
        parts: vec![part(PARTS[0], kernel), part(PARTS[1], initrd)],
    };
    let text = m.to_text();
    // What the box will accept, checked here too.
    Manifest::parse(&text)?;
    if text.len() > MAX_MANIFEST {
        return Err(bad("manifest too long"));
    }
    let mut out = header(text.len()).to_vec();
    out.extend_from_slice(text.as_bytes());
    let sig = match key {
        Some(k) => k.sign(&out).to_bytes(),
        None => [0u8; SIG_BLOCK_LEN],
    };
    out.extend_from_slice(&sig);
    out.extend_from_slice(kernel);
    out.extend_from_slice(initrd);
    Ok(out)
}

/// What the box checks besides the signature.
#[derive(Debug, Clone)]
pub struct Policy {
    pub arch: String,
    pub running: Version,
    pub allow_downgrade: bool,
}

/// A fully checked artefact.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The signer's key id (hex).
    pub key_id: String,
    /// Offset of the first part in the file.
    pub parts_offset: u64,
}

fn untrusted(e: BundleError) -> Refusal {
    Refusal::Untrusted(match e {
        BundleError::Unsigned => "it is not signed".into(),
        BundleError::UnknownKey(id) => {
            format!("signed by key {id}, which is not in [update] trusted_keys")
        }
        BundleError::BadSignature(id) => format!(
            "the signature does not match (key {id}): the file was changed or signed otherwise"
        ),
        other => other.to_string(),
    })
}

/// Read and check the head (header, manifest, signature) of an artefact
/// `len` bytes long, then the policy. Returns the verified manifest; the
/// parts are not read yet.
pub fn verify_head(
    r: &mut impl Read,
    len: u64,
    keys: &dyn KeyLookup,
    policy: &Policy,
) -> Result<Verified, Refusal> {
    check_head(r, Some(len), keys, policy).map(|(v, _)| v)
}

/// The first bytes of an artefact being downloaded (at least
/// [`MAX_HEAD`] of them, or the whole file when it is shorter): check the
/// head and the policy before the rest is fetched. Returns the verified
/// manifest and the file's length it describes.
pub fn verify_prefix(
    head: &[u8],
    keys: &dyn KeyLookup,
    policy: &Policy,
) -> Result<(Verified, u64), Refusal> {
    check_head(&mut &head[..], None, keys, policy)
}

/// The longest head (header, manifest, signature block).
pub const MAX_HEAD: usize = HEADER_LEN + MAX_MANIFEST + SIG_BLOCK_LEN;

/// How many bytes the head takes, judged from the first ones (`prefix`):
/// the header first, then the manifest length it gives (bounded by
/// [`MAX_HEAD`]).
pub fn head_len(prefix: &[u8]) -> usize {
    if prefix.len() < HEADER_LEN {
        return HEADER_LEN;
    }
    let mlen = u32::from_le_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]) as usize;
    (HEADER_LEN + mlen.min(MAX_MANIFEST) + SIG_BLOCK_LEN).max(HEADER_LEN + 1)
}

fn check_head(
    r: &mut impl Read,
    len: Option<u64>,
    keys: &dyn KeyLookup,
    policy: &Policy,
) -> Result<(Verified, u64), Refusal> {
    if let Some(len) = len {
        if len > MAX_ARTEFACT {
            return Err(Refusal::TooBig(format!(
                "the file is {len} bytes; update artefacts are at most {MAX_ARTEFACT}"
            )));
        }
        if len < HEADER_LEN as u64 {
            return Err(bad(format!(
                "{len} bytes: shorter than the {HEADER_LEN}-byte header"
            )));
        }
    }
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)
        .map_err(|e| bad(format!("header: {e}")))?;
    if h[..8] != MAGIC {
        return Err(bad("not an update artefact (no NUVOLUPD magic)"));
    }
    let format = u16::from_le_bytes([h[8], h[9]]);
    if format != FORMAT {
        return Err(bad(format!(
            "format version {format}; this box reads {FORMAT}"
        )));
    }
    if h[10..12] != [0, 0] {
        return Err(bad("reserved header bytes are not zero"));
    }
    let mlen = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if mlen == 0 || mlen > MAX_MANIFEST {
        return Err(bad(format!(
            "manifest length {mlen} is out of bounds (1..={MAX_MANIFEST})"
        )));
    }
    if len.is_some_and(|len| (HEADER_LEN + mlen + SIG_BLOCK_LEN) as u64 > len) {
        return Err(bad(format!(
            "truncated: {} bytes cannot hold the {mlen}-byte manifest and the signature",
            len.unwrap_or(0)
        )));
    }
    let mut signed = h.to_vec();
    signed.resize(HEADER_LEN + mlen, 0);
    r.read_exact(&mut signed[HEADER_LEN..])
        .map_err(|e| bad(format!("manifest: {e}")))?;
    let mut sig = [0u8; SIG_BLOCK_LEN];
    r.read_exact(&mut sig)
        .map_err(|e| bad(format!("signature: {e}")))?;
    let sig = SignatureBlock::from_bytes(&sig).map_err(untrusted)?;
    let key = keys.lookup(&sig.key_id).map_err(untrusted)?;
    key.verify(&sig, &signed).map_err(untrusted)?;
    let text =
        std::str::from_utf8(&signed[HEADER_LEN..]).map_err(|_| bad("manifest is not UTF-8"))?;
    let manifest = Manifest::parse(text)?;
    if manifest.arch != policy.arch {
        return Err(Refusal::WrongArch {
            got: manifest.arch,
            want: policy.arch.clone(),
        });
    }
    if policy.running < manifest.min_version {
        return Err(Refusal::TooOld {
            min: manifest.min_version.to_string(),
            running: policy.running.to_string(),
        });
    }
    if manifest.version <= policy.running && !policy.allow_downgrade {
        return Err(Refusal::NotNewer {
            version: manifest.version.to_string(),
            running: policy.running.to_string(),
        });
    }
    let (parts_offset, want) = Manifest::layout(mlen, &manifest.parts);
    if len.is_some_and(|len| want != len) {
        return Err(bad(format!(
            "the file is {} bytes; its manifest describes {want}",
            len.unwrap_or(0)
        )));
    }
    if want > MAX_ARTEFACT {
        return Err(Refusal::TooBig(format!(
            "its manifest describes {want} bytes; update artefacts are at most {MAX_ARTEFACT}"
        )));
    }
    Ok((
        Verified {
            manifest,
            key_id: sig.key_id.to_string(),
            parts_offset,
        },
        want,
    ))
}

/// Check an artefact file completely: head, policy, and every part's
/// SHA-256. Reads the file twice at most; writes nothing.
pub fn verify_file(
    path: &Path,
    keys: &dyn KeyLookup,
    policy: &Policy,
) -> Result<Verified, Refusal> {
    let io = |e: std::io::Error| Refusal::Failed(format!("{}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let v = verify_head(&mut f, len, keys, policy)?;
    f.seek(SeekFrom::Start(v.parts_offset)).map_err(io)?;
    for p in &v.manifest.parts {
        let got = hash_exact(&mut f, p.size, None).map_err(|e| bad(format!("{}: {e}", p.name)))?;
        if got != p.sha256 {
            return Err(bad(format!(
                "{}: its SHA-256 does not match the manifest",
                p.name
            )));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests;
