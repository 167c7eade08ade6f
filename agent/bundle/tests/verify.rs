//! Build -> sign -> verify with real mksquashfs/mkfs.erofs, and every way
//! a bundle must be refused.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use nuvol_bundle::build::{assemble, build, make_image, sign_file};
use nuvol_bundle::format::{Head, HEADER_LEN, MAX_MANIFEST_LEN};
use nuvol_bundle::keys::SIG_BLOCK_LEN;
use nuvol_bundle::verify::{verify_bytes, verify_file};
use nuvol_bundle::{BundleError, ImageType, Keyring, PublicKey, SecretKey};

#[test]
fn round_trip_squashfs_and_erofs() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    for fs_type in [ImageType::Squashfs, ImageType::Erofs] {
        let root = t.path().join(format!("root-{fs_type:?}"));
        make_rootfs(&root, "hello");
        let mf = t.path().join("m.toml");
        fs::write(&mf, manifest_text("web", "1.0", "")).unwrap();
        let out = t.path().join(format!("web-{fs_type:?}.nvb"));
        build(&mf, &root, fs_type, &out, None).unwrap();
        // Unsigned bundles are refused.
        assert!(matches!(
            verify_file(&out, &key.public(), None),
            Err(BundleError::Unsigned)
        ));
        sign_file(&out, &key).unwrap();
        let v = verify_file(&out, &key.public(), None).unwrap();
        assert_eq!(v.manifest.name, "web");
        assert_eq!(v.head.header.image_type, fs_type);
        assert_eq!(v.key_id, key.key_id);
        // The manifest bytes are kept verbatim (comments and all).
        assert_eq!(v.head.manifest_bytes, fs::read(&mf).unwrap());
    }
}

#[test]
fn builds_are_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let ba = make_bundle(&a, &key, "web", "1.0");
    // Different mtimes in the second tree.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let bb = make_bundle(&b, &key, "web", "1.0");
    assert_eq!(fs::read(ba).unwrap(), fs::read(bb).unwrap());
}

/// Every single-bit flip in header, manifest and signature is rejected;
/// flips in the padding and image too (the image by its digest).
/// (Exhaustive over the signed bytes; a small manifest keeps it quick in
/// debug builds, and the flips are spread over two threads.)
#[test]
fn every_bit_flip_rejected() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let root = t.path().join("root");
    make_rootfs(&root, "flip");
    let manifest = "name=\"w\"\nversion=\"1\"\npublisher=\"t\"\n[run]\ncommand=[\"/bin/serve\"]\n";
    let img = t.path().join("img");
    make_image(&root, ImageType::Squashfs, &img).unwrap();
    let path = t.path().join("w.nvb");
    assemble(
        manifest.as_bytes(),
        &img,
        ImageType::Squashfs,
        &path,
        Some(&key),
    )
    .unwrap();
    let good = fs::read(&path).unwrap();
    let pk = key.public();
    verify_bytes(&good, &pk).unwrap();
    let head = Head::parse(&good).unwrap();
    let signed_end = HEADER_LEN + head.manifest_bytes.len() + SIG_BLOCK_LEN;
    let img_off = head.header.image_offset() as usize;
    let n = good.len();
    // (byte, bit, must the image digest be what catches it?)
    let mut cases: Vec<(usize, u8, bool)> = Vec::new();
    for i in 0..signed_end {
        for bit in 0..8 {
            cases.push((i, bit, false));
        }
    }
    for i in signed_end..img_off {
        cases.push((i, (i % 8) as u8, false));
    }
    let mut idx: Vec<usize> = (img_off..img_off + 16).chain(n - 16..n).collect();
    idx.extend((img_off..n).step_by(389));
    for i in idx {
        cases.push((i, (i % 8) as u8, true));
    }
    let half = cases.len() / 2;
    std::thread::scope(|s| {
        for part in [&cases[..half], &cases[half..]] {
            let (good, pk) = (&good, &pk);
            s.spawn(move || {
                let mut flipped = good.clone();
                for &(i, bit, expect_digest) in part {
                    flipped[i] ^= 1 << bit;
                    let r = verify_bytes(&flipped, pk);
                    flipped[i] ^= 1 << bit;
                    match r {
                        Ok(_) => panic!("flip of byte {i} bit {bit} accepted"),
                        Err(BundleError::DigestMismatch { .. }) => {
                            assert!(
                                expect_digest,
                                "flip at {i} in the signed part reached the digest check"
                            )
                        }
                        Err(e) => assert!(!expect_digest, "image flip at {i}: unexpected {e}"),
                    }
                }
            });
        }
    });
}

#[test]
fn distinct_errors_for_each_rejection() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let path = make_bundle(t.path(), &key, "web", "1.0");
    let good = fs::read(&path).unwrap();

    // Wrong key (different id): unknown key.
    let other = SecretKey::generate().unwrap();
    assert!(matches!(
        verify_bytes(&good, &other.public()),
        Err(BundleError::UnknownKey(_))
    ));
    // A key claiming the signer's id but a different public key: bad signature.
    let impostor = PublicKey {
        key_id: key.key_id,
        key: other.public().key,
    };
    assert!(matches!(
        verify_bytes(&good, &impostor),
        Err(BundleError::BadSignature(_))
    ));
    // Revoked key (through a real keyring file).
    let kr = Keyring::at(&t.path().join("keyring.json"));
    kr.add(&key.public(), "tests").unwrap();
    verify_bytes(&good, &kr).unwrap();
    kr.revoke(&key.key_id, "leaked").unwrap();
    assert!(matches!(
        verify_bytes(&good, &kr),
        Err(BundleError::RevokedKey(_))
    ));
    assert!(matches!(
        kr.add(&key.public(), "again"),
        Err(BundleError::KeyIsRevoked(_))
    ));
    // Truncated file, at every interesting length.
    for cut in [0, 10, 63, 64, 200, good.len() - 1] {
        let r = verify_bytes(&good[..cut], &key.public());
        assert!(
            matches!(r, Err(BundleError::Truncated { .. })),
            "cut {cut}: {r:?}"
        );
    }
    // Trailing data.
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        verify_bytes(&long, &key.public()),
        Err(BundleError::TrailingData { extra: 1 })
    ));
    // Oversized manifest: refused by the builder and, in a crafted header, by the parser.
    let big = format!(
        "{}\n# {}\n",
        manifest_text("web", "1.0", ""),
        "x".repeat(MAX_MANIFEST_LEN as usize)
    );
    let img = t.path().join("img");
    make_image(&t.path().join("rootfs-web-1.0"), ImageType::Squashfs, &img).unwrap();
    let r = assemble(
        big.as_bytes(),
        &img,
        ImageType::Squashfs,
        &t.path().join("big.nvb"),
        Some(&key),
    );
    assert!(
        matches!(r, Err(BundleError::ManifestTooLarge { .. })),
        "{r:?}"
    );
    let mut crafted = good.clone();
    crafted[12..16].copy_from_slice(&(MAX_MANIFEST_LEN + 1).to_le_bytes());
    assert!(matches!(
        verify_bytes(&crafted, &key.public()),
        Err(BundleError::ManifestTooLarge { .. })
    ));
    // Not a bundle at all.
    assert!(matches!(
        verify_bytes(&[0u8; 4096], &key.public()),
        Err(BundleError::BadMagic)
    ));
    // Traversal in a manifest path: a correctly signed bundle still refused.
    let evil = manifest_text("web", "1.0", "").replace("/var/lib/data", "/var/../../etc");
    let r = assemble(
        evil.as_bytes(),
        &img,
        ImageType::Squashfs,
        &t.path().join("e.nvb"),
        Some(&key),
    );
    assert!(matches!(r, Err(BundleError::PathTraversal(_))), "{r:?}");
}

#[test]
fn builder_refuses_dangerous_trees() {
    let t = tempfile::tempdir().unwrap();
    let mf = t.path().join("m.toml");
    fs::write(&mf, manifest_text("web", "1.0", "")).unwrap();
    let out = t.path().join("o.nvb");
    let fresh = |n: &str| {
        let r = t.path().join(n);
        make_rootfs(&r, n);
        r
    };
    let r = fresh("esc");
    std::os::unix::fs::symlink("../../../../etc/shadow", r.join("bin/shadow")).unwrap();
    assert!(matches!(
        build(&mf, &r, ImageType::Squashfs, &out, None),
        Err(BundleError::SymlinkEscape { .. })
    ));
    let r = fresh("suid");
    fs::set_permissions(r.join("bin/serve"), fs::Permissions::from_mode(0o4755)).unwrap();
    assert!(matches!(
        build(&mf, &r, ImageType::Squashfs, &out, None),
        Err(BundleError::Setuid(_))
    ));
    // Declared setuid is accepted by the builder.
    let mf2 = t.path().join("m2.toml");
    fs::write(
        &mf2,
        manifest_text("web", "1.0", "[privileges]\nsetuid = true\n"),
    )
    .unwrap();
    build(&mf2, &r, ImageType::Squashfs, &out, None).unwrap();
    // A volume mounted through a symlink.
    let r = fresh("vol");
    fs::create_dir_all(r.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", r.join("var/lib/data")).unwrap();
    assert!(matches!(
        build(&mf, &r, ImageType::Squashfs, &out, None),
        Err(BundleError::SymlinkEscape { .. })
    ));
    if is_root() {
        let r = fresh("dev");
        let c = std::ffi::CString::new(r.join("null").to_str().unwrap()).unwrap();
        // SAFETY: valid path; creates a char device (1,3) like /dev/null.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(rc, 0);
        assert!(matches!(
            build(&mf, &r, ImageType::Squashfs, &out, None),
            Err(BundleError::DeviceNode(_))
        ));
    }
}
