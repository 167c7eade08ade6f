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

/// The name the build gives an architecture in file names (`make ARCH=`,
/// `nuvol-ARCH-VERSION.nvu`, `nuvol-ARCH.img`) for Rust's name of it (what
/// artefacts and bundles record): arm64 for aarch64, armv7 for arm.
pub fn file_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "aarch64" => "arm64",
        "arm" => "armv7",
        other => other,
    }
}

#[cfg(test)]
mod arch_tests {
    use super::file_arch;

    #[test]
    fn file_names_use_the_make_arch() {
        assert_eq!(file_arch("x86_64"), "x86_64");
        assert_eq!(file_arch("aarch64"), "arm64");
        assert_eq!(file_arch("arm"), "armv7");
        assert_eq!(file_arch("riscv64"), "riscv64");
    }
}
