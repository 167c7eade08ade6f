//! One error type for the whole crate.

use std::path::PathBuf;

/// Everything that can go wrong with a bundle, a key or the store.
///
/// Each rejection reason has its own variant so callers (API, CLI, tests) can
/// tell a wrong key from a revoked key from a truncated file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a nuvol bundle (bad magic)")]
    BadMagic,
    #[error("unsupported bundle format version {0}")]
    UnsupportedVersion(u16),
    #[error("unknown image type {0} (1 = squashfs, 2 = erofs)")]
    UnknownImageType(u8),
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("bundle is truncated: expected {expected} bytes, file has {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error("bundle has {extra} bytes of trailing data after the image")]
    TrailingData { extra: u64 },
    #[error("manifest is {size} bytes; the limit is {limit}")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("manifest is empty")]
    ManifestEmpty,
    #[error("image is {size} bytes; the limit is {limit}")]
    ImageTooLarge { size: u64, limit: u64 },
    #[error("image is empty")]
    ImageEmpty,
    #[error("header says the image starts at {found}, the format requires {expected}")]
    BadImageOffset { expected: u64, found: u64 },
    #[error("padding between signature and image is not zero")]
    PaddingNotZero,
    #[error("bundle is not signed")]
    Unsigned,
    #[error("unsupported signature algorithm {0:?} (want \"Ed\" or \"ED\")")]
    UnsupportedSignatureAlgorithm([u8; 2]),
    #[error("signing key {0} is not in the keyring")]
    UnknownKey(String),
    #[error("signing key {0} is revoked")]
    RevokedKey(String),
    #[error("signature does not verify with key {0}")]
    BadSignature(String),
    #[error("image digest mismatch: header says {expected}, image hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("bundle {name:?} is built for {bundle}; this box is {host}")]
    WrongArch {
        name: String,
        bundle: String,
        host: String,
    },
    #[error("manifest field `{field}`: {message}")]
    ManifestInvalid { field: String, message: String },
    #[error("path traversal: {0:?}")]
    PathTraversal(String),
    #[error("symlink {path:?} -> {target:?} escapes the image root")]
    SymlinkEscape { path: String, target: String },
    #[error(
        "device node {0:?} not allowed (manifest does not declare devices or policy forbids them)"
    )]
    DeviceNode(String),
    #[error(
        "setuid/setgid file {0:?} not allowed (manifest does not declare it or policy forbids it)"
    )]
    Setuid(String),
    #[error("unsupported file type at {0:?}")]
    UnsupportedFileType(String),
    #[error("image: {0}")]
    Image(String),
    #[error("key file: {0}")]
    KeyFormat(String),
    #[error("signature file: {0}")]
    SignatureFormat(String),
    #[error("key {0} is revoked and cannot be trusted again")]
    KeyIsRevoked(String),
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("bundle {0:?} is not installed")]
    NotInstalled(String),
    #[error("bundle {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("refusing downgrade of {name:?} from {installed} to {offered} (use rollback)")]
    Downgrade {
        name: String,
        installed: String,
        offered: String,
    },
    #[error(
        "bundle {name:?} is published by key {installed}; refusing an upgrade signed by {offered}"
    )]
    PublisherChanged {
        name: String,
        installed: String,
        offered: String,
    },
    #[error(
        "bundle {name:?} {installed} is installed with this same image; {offered} changes only \
the manifest, which the store cannot tell apart yet (rebuild the image with a changed file)"
    )]
    SameImage {
        name: String,
        installed: String,
        offered: String,
    },
    #[error(
        "not enough free space on {}: {needed} bytes ({}) needed, {free} bytes ({}) free",
        path.display(),
        nuvol_human::bytes(*needed),
        nuvol_human::bytes(*free)
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("store state: {0}")]
    State(String),
    #[error("bundle {:?} is broken: {}: {} (remove it; its volumes are kept unless purged)", .0.name, .0.file.display(), .0.problem)]
    Broken(crate::store::BrokenBundle),
    #[error("external tool {tool}: {message}")]
    Tool { tool: String, message: String },
}

impl BundleError {
    /// A stable machine-readable code for APIs and scripts (the message
    /// may change; the code does not).
    pub fn code(&self) -> &'static str {
        use BundleError::*;
        match self {
            Io { .. } => "io_error",
            BadMagic
            | UnsupportedVersion(_)
            | UnknownImageType(_)
            | ReservedNotZero
            | Truncated { .. }
            | TrailingData { .. }
            | ManifestTooLarge { .. }
            | ManifestEmpty
            | ImageTooLarge { .. }
            | ImageEmpty
            | BadImageOffset { .. }
            | PaddingNotZero => "malformed_bundle",
            Unsigned | UnsupportedSignatureAlgorithm(_) => "unsigned",
            UnknownKey(_) => "unknown_key",
            RevokedKey(_) => "revoked_key",
            BadSignature(_) => "bad_signature",
            DigestMismatch { .. } => "digest_mismatch",
            Manifest(_) | ManifestInvalid { .. } => "bad_manifest",
            WrongArch { .. } => "wrong_arch",
            PathTraversal(_)
            | SymlinkEscape { .. }
            | DeviceNode(_)
            | Setuid(_)
            | UnsupportedFileType(_) => "unsafe_content",
            Image(_) => "bad_image",
            KeyFormat(_) | SignatureFormat(_) => "bad_key",
            KeyIsRevoked(_) => "key_revoked",
            Keyring(_) => "keyring_error",
            NotInstalled(_) => "not_installed",
            NoPrevious(_) => "no_previous_version",
            Downgrade { .. } => "downgrade",
            PublisherChanged { .. } => "publisher_changed",
            SameImage { .. } => "same_image",
            NoSpace { .. } => "insufficient_storage",
            State(_) => "store_state",
            Broken(_) => "broken_bundle",
            Tool { .. } => "tool_error",
        }
    }

    /// Whether the filesystem (or a quota) was full.
    pub fn is_no_space(&self) -> bool {
        match self {
            BundleError::NoSpace { .. } => true,
            BundleError::Io { source, .. } => crate::space::is_full(source),
            _ => false,
        }
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { path, source }
    }
}
