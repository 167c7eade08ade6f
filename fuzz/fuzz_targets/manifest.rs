//! The manifest parser and validator on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_bundle::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        // Anything accepted re-serializes to something accepted and equal.
        let text = m.to_toml().expect("accepted manifest serializes");
        let again = Manifest::parse(text.as_bytes()).expect("round trip parses");
        assert_eq!(again, m);
    }
});
