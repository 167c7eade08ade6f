//! signify/minisign key and signature file parsers on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_bundle::keys::{PublicKey, SecretKey, SignatureBlock};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(k) = PublicKey::from_text(text) {
            assert_eq!(PublicKey::from_text(&k.to_text("x")).ok(), Some(k));
        }
        let _ = SecretKey::from_text(text);
        if let Ok(s) = SignatureBlock::from_text(text) {
            assert_eq!(SignatureBlock::from_text(&s.to_text("x")).ok(), Some(s));
        }
    }
});
