//! Signed service bundles for nuvol.
//!
//! A bundle is one file: a fixed header carrying the SHA-256 of a read-only
//! filesystem image, a TOML manifest, an ed25519 signature over header and
//! manifest, then the image. See `docs/bundles.md`.
//!
//! Order of trust: the header is bounds-checked, the signature is verified
//! against the keyring, the image is hashed and compared, and only then is
//! the manifest parsed or the image inspected.

pub mod build;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod keyring;
pub mod keys;
pub mod manifest;
pub mod mount;
pub mod scan;
pub mod space;
pub mod store;
pub mod verify;

pub use error::BundleError;
pub use format::{Head, Header, ImageType};
pub use keyring::Keyring;
pub use keys::{KeyId, PublicKey, SecretKey, SignatureBlock};
pub use manifest::{Manifest, Policy};
pub use space::Space;
pub use store::{
    BrokenBundle, Export, InstallOptions, InstalledBundle, Listing, ProvisionOutcome,
    ProvisionReport, Store, StoreOptions,
};
