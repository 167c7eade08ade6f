//! The mDNS packet decoder (nuvol-mdns `wire::decode`) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_mdns::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::decode(data) {
        // Anything accepted encodes, and the encoding decodes without panic;
        // records with only ASCII names and known-type data survive intact.
        let b = wire::encode(&m);
        if let Ok(again) = wire::decode(&b) {
            assert_eq!(again.questions.len(), m.questions.len());
            assert_eq!(again.answers.len(), m.answers.len());
        }
    }
});
