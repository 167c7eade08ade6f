//! OS update artefacts (`.nvu`) from arbitrary bytes, as uploaded to
//! `POST /api/v1/update`: header bounds, manifest length, signature block,
//! manifest lines, versions, layout. The manifest parser is fed directly
//! too (the signature keeps mutated manifests out of the full path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_bundle::PublicKey;
use nuvol_update::artefact::{verify_head, Manifest, Policy, Version};

const KEY: &str = include_str!("../corpus-key.pub");

fuzz_target!(|data: &[u8]| {
    if let Ok(pk) = PublicKey::from_text(KEY) {
        let policy = Policy {
            arch: "x86_64".into(),
            running: Version::parse("0.1.0").unwrap(),
            allow_downgrade: false,
        };
        let mut r = std::io::Cursor::new(data);
        let _ = verify_head(&mut r, data.len() as u64, &pk, &policy);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Manifest::parse(text) {
            // What parses prints back to text that parses the same.
            assert_eq!(Manifest::parse(&m.to_text()).ok(), Some(m));
        }
    }
});
