//! Signed A/B updates of the OS (docs/boot.md, "Update").
//!
//! - [`artefact`]: the `.nvu` file: a small manifest (OS version,
//!   architecture, oldest version it upgrades from, size and SHA-256 of
//!   `bzImage` and `initrd.img`), an ed25519 signature over header and
//!   manifest made with the bundles' scheme (by an OS publisher key trusted
//!   through `[update] trusted_keys`), then the parts. Every length is
//!   bounded before it is used; everything is checked before a byte goes
//!   to the boot partition.
//! - [`adv`]: syslinux's Auxiliary Data Vector (the last two sectors of
//!   `ldlinux.sys`), whose boot-once record makes the BIOS loader try the
//!   other slot exactly once.
//! - [`efivar`]: the same for UEFI: systemd-boot's `LoaderEntryOneShot`
//!   variable, deleted by the loader before it boots the entry.
//! - [`slots`]: the boot partition's slots: writing the inactive one,
//!   arming the try, making a slot the default (one byte rewritten in place).
//! - [`state`]: the update's record on the data partition and what the
//!   agent does with it at start (mark good, re-arm, give up).

pub mod adv;
pub mod artefact;
pub mod efivar;
pub mod slots;
pub mod state;

pub use artefact::{Manifest, Refusal, Verified};

/// The architecture this build runs on, as artefacts name it.
pub const ARCH: &str = std::env::consts::ARCH;
