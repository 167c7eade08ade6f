//! Interop with Debian's real `signify-openbsd` and `minisign`.
//!
//! Compatible: public key files both ways; unencrypted secret keys from
//! `signify -G -n` and `minisign -G -W`; signatures over the exported signed
//! part made by either tool attach to a bundle and verify; signatures nuvol
//! makes verify with `signify -V` (pure) and `minisign -V` (prehashed, with
//! trusted comment). Not compatible: minisign cannot verify signify-format
//! signatures (no trusted comment); passphrase-protected keys are refused.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use nuvol_bundle::build::{set_signature, sign_file};
use nuvol_bundle::keys::SignatureBlock;
use nuvol_bundle::verify::{read_head, verify_file};
use nuvol_bundle::{PublicKey, SecretKey};

fn run(cmd: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (apt-get install signify-openbsd minisign)"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn export_message(bundle: &Path, out: &Path) {
    let (_, head) = read_head(bundle).unwrap();
    fs::write(out, head.signed_message()).unwrap();
}

#[test]
fn signify_keys_and_signatures() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    run(
        "signify-openbsd",
        &["-G", "-n", "-p", "s.pub", "-s", "s.sec", "-c", "test"],
        d,
    );
    let sk = SecretKey::from_text(&fs::read_to_string(d.join("s.sec")).unwrap()).unwrap();
    let pk = PublicKey::from_text(&fs::read_to_string(d.join("s.pub")).unwrap()).unwrap();
    assert_eq!(sk.public(), pk);
    // nuvol signs with signify's key; signify verifies nuvol's signature.
    let b = make_bundle(d, &sk, "web", "1.0");
    verify_file(&b, &pk, None).unwrap();
    export_message(&b, &d.join("msg"));
    let (_, head) = read_head(&b).unwrap();
    fs::write(
        d.join("nuvol.sig"),
        head.signature().unwrap().to_text("from nuvol"),
    )
    .unwrap();
    run(
        "signify-openbsd",
        &["-V", "-p", "s.pub", "-m", "msg", "-x", "nuvol.sig"],
        d,
    );
    // signify signs with nuvol's key; the signature attaches and verifies.
    let nk = SecretKey::generate().unwrap();
    fs::write(d.join("n.sec"), nk.to_text("nuvol secret key")).unwrap();
    fs::write(d.join("n.pub"), nk.public().to_text("nuvol public key")).unwrap();
    run(
        "signify-openbsd",
        &["-S", "-s", "n.sec", "-m", "msg", "-x", "msg.sig"],
        d,
    );
    let sig = SignatureBlock::from_text(&fs::read_to_string(d.join("msg.sig")).unwrap()).unwrap();
    set_signature(&b, &sig).unwrap();
    verify_file(&b, &nk.public(), None).unwrap();
    // A signature over anything else does not.
    fs::write(d.join("other"), b"other").unwrap();
    run(
        "signify-openbsd",
        &["-S", "-s", "n.sec", "-m", "other", "-x", "other.sig"],
        d,
    );
    let bad = SignatureBlock::from_text(&fs::read_to_string(d.join("other.sig")).unwrap()).unwrap();
    set_signature(&b, &bad).unwrap();
    assert!(verify_file(&b, &nk.public(), None).is_err());
    // Passphrase-protected signify keys are refused with a clear message.
    let enc = "untrusted comment: x\nRWRCSwAAACpQ6yE4Nr5Ge5qcyyQj+ihdnVT5tTtEXtujbnTHEWm7XM66cQuNLgOjJd/qLdhOc5bYgnXAjdyxBOl+gQZ7MBlNcZOPP9jdhBOHF8m/1nCRhGE3SkG3uD1n/vEoo3MR/9Y=\n";
    let e = SecretKey::from_text(enc)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("passphrase"), "{e}");
}

#[test]
fn minisign_keys_and_signatures() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    run("minisign", &["-G", "-W", "-p", "m.pub", "-s", "m.sec"], d);
    let sk = SecretKey::from_text(&fs::read_to_string(d.join("m.sec")).unwrap()).unwrap();
    let pk = PublicKey::from_text(&fs::read_to_string(d.join("m.pub")).unwrap()).unwrap();
    assert_eq!(sk.public(), pk);
    let b = make_bundle(d, &sk, "web", "1.0");
    verify_file(&b, &pk, None).unwrap();
    export_message(&b, &d.join("msg"));
    // nuvol's minisign signature (prehashed + trusted comment) verifies with minisign.
    let (_, head) = read_head(&b).unwrap();
    fs::write(
        d.join("n.minisig"),
        sk.minisign_signature(&head.signed_message(), "nuvol test"),
    )
    .unwrap();
    let o = run(
        "minisign",
        &["-V", "-p", "m.pub", "-m", "msg", "-x", "n.minisig"],
        d,
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("nuvol test"));
    // minisign's default (prehashed "ED") and legacy ("Ed") signatures attach and verify.
    for (flags, alg) in [(&[][..], *b"ED"), (&["-l"][..], *b"Ed")] {
        let mut args = vec!["-S", "-s", "m.sec", "-m", "msg", "-x", "x.minisig"];
        args.extend_from_slice(flags);
        run("minisign", &args, d);
        let sig =
            SignatureBlock::from_text(&fs::read_to_string(d.join("x.minisig")).unwrap()).unwrap();
        assert_eq!(sig.algorithm, alg);
        sign_file(&b, &SecretKey::generate().unwrap()).unwrap(); // clobber first
        assert!(verify_file(&b, &pk, None).is_err());
        set_signature(&b, &sig).unwrap();
        verify_file(&b, &pk, None).unwrap();
    }
    // minisign verifies with a nuvol-written public key file.
    let nk = SecretKey::generate().unwrap();
    fs::write(d.join("n.pub"), nk.public().to_text("nuvol public key")).unwrap();
    fs::write(d.join("n2.minisig"), nk.minisign_signature(b"hello", "t")).unwrap();
    fs::write(d.join("hello"), b"hello").unwrap();
    run(
        "minisign",
        &["-V", "-p", "n.pub", "-m", "hello", "-x", "n2.minisig"],
        d,
    );
    // Not compatible: minisign refuses signify-format signatures (no trusted comment).
    fs::write(d.join("s.sig"), nk.sign(b"hello").to_text("pure")).unwrap();
    let o = Command::new("minisign")
        .args(["-V", "-p", "n.pub", "-m", "hello", "-x", "s.sig"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!o.status.success());
}
