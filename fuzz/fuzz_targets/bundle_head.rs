//! Whole-bundle parsing and verification from arbitrary bytes: header
//! bounds, manifest length, padding, signature block, digest, manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_bundle::format::Head;
use nuvol_bundle::verify::verify_bytes;
use nuvol_bundle::PublicKey;

// The public key the seed corpus bundles are signed with (fuzz/README.md).
const KEY: &str = include_str!("../corpus-key.pub");

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = Head::parse(data) {
        // What parses must serialize back to the same head bytes.
        let off = head.header.image_offset() as usize;
        assert_eq!(&head.to_bytes()[..], &data[..off]);
    }
    if let Ok(pk) = PublicKey::from_text(KEY) {
        let _ = verify_bytes(data, &pk);
    }
});
