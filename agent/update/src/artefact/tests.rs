use super::*;
use nuvol_bundle::keys::PublicKey;

fn key() -> SecretKey {
    SecretKey::generate().unwrap()
}

fn policy() -> Policy {
    Policy {
        arch: "x86_64".into(),
        running: Version::parse("0.1.0").unwrap(),
        allow_downgrade: false,
    }
}

fn check(bytes: &[u8], keys: &[PublicKey], p: &Policy) -> Result<Verified, Refusal> {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("a.nvu");
    std::fs::write(&path, bytes).unwrap();
    verify_file(&path, &keys.to_vec(), p)
}

#[test]
fn a_signed_artefact_verifies_and_round_trips() {
    let k = key();
    let a = build(b"kernel", b"initrd!", "0.2.0", "0.1", "x86_64", Some(&k)).unwrap();
    let v = check(&a, &[k.public()], &policy()).unwrap();
    assert_eq!(v.manifest.version.to_string(), "0.2.0");
    assert_eq!(v.manifest.parts[1].size, 7);
    assert_eq!(&a[v.parts_offset as usize..], b"kernelinitrd!");
    let m = Manifest::parse(&v.manifest.to_text()).unwrap();
    assert_eq!(m, v.manifest);
}

#[test]
fn refusals_carry_their_codes() {
    let k = key();
    let other = key();
    let good = build(b"k", b"i", "0.2.0", "0.1.0", "x86_64", Some(&k)).unwrap();
    let keys = [k.public()];
    let code = |b: &[u8], p: &Policy| check(b, &keys, p).unwrap_err().code();
    // Signatures.
    let unsigned = build(b"k", b"i", "0.2.0", "0.1.0", "x86_64", None).unwrap();
    assert_eq!(code(&unsigned, &policy()), "update_untrusted");
    let foreign = build(b"k", b"i", "0.2.0", "0.1.0", "x86_64", Some(&other)).unwrap();
    let e = check(&foreign, &keys, &policy()).unwrap_err();
    assert!(e.to_string().contains("trusted_keys"), "{e}");
    let mut tampered = good.clone();
    let at = tampered.windows(5).position(|w| w == b"0.2.0").unwrap();
    tampered[at + 2] = b'9';
    assert_eq!(code(&tampered, &policy()), "update_untrusted");
    // Policy.
    let arm = build(b"k", b"i", "0.2.0", "0.1.0", "aarch64", Some(&k)).unwrap();
    assert_eq!(code(&arm, &policy()), "update_wrong_arch");
    let same = build(b"k", b"i", "0.1.0", "0.1.0", "x86_64", Some(&k)).unwrap();
    assert_eq!(code(&same, &policy()), "update_not_newer");
    let mut down = policy();
    down.allow_downgrade = true;
    assert!(check(&same, &keys, &down).is_ok());
    let too_new = build(b"k", b"i", "0.3.0", "0.2.0", "x86_64", Some(&k)).unwrap();
    assert_eq!(code(&too_new, &policy()), "update_too_old");
    // Shape.
    assert_eq!(code(b"", &policy()), "update_malformed");
    assert_eq!(code(b"NUVOLBDL0123456789", &policy()), "update_malformed");
    assert_eq!(code(&good[..good.len() - 1], &policy()), "update_malformed");
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(code(&longer, &policy()), "update_malformed");
    let mut part_flip = good.clone();
    *part_flip.last_mut().unwrap() ^= 1;
    let e = check(&part_flip, &keys, &policy()).unwrap_err();
    assert_eq!(e.code(), "update_malformed");
    assert!(e.to_string().contains("initrd.img"), "{e}");
    // Hostile lengths: a huge manifest length is refused before reading it.
    let mut huge = good.clone();
    huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = check(&huge, &keys, &policy()).unwrap_err();
    assert!(e.to_string().contains("manifest length"), "{e}");
    let mut zero = good.clone();
    zero[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(code(&zero, &policy()), "update_malformed");
    let mut fmt = good;
    fmt[8] = 2;
    assert!(check(&fmt, &keys, &policy())
        .unwrap_err()
        .to_string()
        .contains("format version 2"));
}

#[test]
fn too_big_is_refused_by_length_alone() {
    let k = key();
    let mut r = std::io::Cursor::new(vec![0u8; 16]);
    let e = verify_head(&mut r, MAX_ARTEFACT + 1, &k.public(), &policy()).unwrap_err();
    assert_eq!(e.code(), "update_too_big");
}

#[test]
fn manifest_parser_is_strict() {
    let sum = "0".repeat(64);
    let ok = format!(
        "nuvol-update 1\nversion 1.2\narch x86_64\nmin_version 0\npart bzImage 5 {sum}\npart initrd.img 6 {sum}\n"
    );
    assert!(Manifest::parse(&ok).is_ok());
    for (from, to) in [
        ("nuvol-update 1", "nuvol-update 2"),
        ("version 1.2", "version 1.2.x"),
        ("version 1.2", "version 1.2.3.4.5"),
        ("version 1.2", "version "),
        ("part bzImage 5", "part vmlinuz 5"),
        ("part bzImage 5", "part bzImage -5"),
        ("part bzImage 5", "part bzImage 0"),
        ("part bzImage 5", "part bzImage 99999999999999999999"),
        ("arch x86_64", "arch "),
    ] {
        let bad = ok.replacen(from, to, 1);
        assert!(Manifest::parse(&bad).is_err(), "{to}");
    }
    assert!(Manifest::parse(&format!("{ok}extra 1\n")).is_err());
    assert!(Manifest::parse(&ok.replace(&format!(" {sum}"), " 00")).is_err());
    let big = ok.replacen(
        "part bzImage 5",
        &format!("part bzImage {}", MAX_PART + 1),
        1,
    );
    assert_eq!(Manifest::parse(&big).unwrap_err().code(), "update_too_big");
}

#[test]
fn versions_compare_numerically() {
    let v = |s| Version::parse(s).unwrap();
    assert!(v("0.10.0") > v("0.9.9"));
    assert_eq!(v("1.0").cmp(&v("1.0.0")), std::cmp::Ordering::Equal);
    assert!(v("1.0.1") > v("1"));
    assert!(Version::parse("1..2").is_err());
    assert!(Version::parse("1234567890").is_err());
}

#[test]
fn a_download_is_judged_by_its_head_before_the_parts_come() {
    let k = key();
    let keys = vec![k.public()];
    let a = build(b"kernel", b"initrd!", "0.2.0", "0.1.0", "x86_64", Some(&k)).unwrap();
    let head_len = super::head_len(&a[..16]);
    assert_eq!(super::head_len(&a[..3]), 16);
    assert_eq!(super::head_len(&a[..head_len]), head_len);
    assert_eq!(head_len, a.len() - 13);
    // The head alone (what a download reads first) is enough, and says how
    // long the whole file is.
    let (v, len) = verify_prefix(&a[..head_len], &keys, &policy()).unwrap();
    assert_eq!(len, a.len() as u64);
    assert_eq!(v.manifest.version.to_string(), "0.2.0");
    // Everything the head decides is decided there.
    let other = key();
    let foreign = build(b"k", b"i", "0.2.0", "0.1.0", "x86_64", Some(&other)).unwrap();
    let code = |b: &[u8]| verify_prefix(b, &keys, &policy()).unwrap_err().code();
    assert_eq!(code(&foreign), "update_untrusted");
    let old = build(b"k", b"i", "0.1.0", "0.1.0", "x86_64", Some(&k)).unwrap();
    assert_eq!(code(&old), "update_not_newer");
    assert_eq!(code(b"<html>not found</html>"), "update_malformed");
    assert_eq!(code(&a[..20]), "update_malformed");
    assert_eq!(code(b""), "update_malformed");
}
