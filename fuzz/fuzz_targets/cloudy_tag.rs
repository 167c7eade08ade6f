//! Cloudy's `services` tag: base64(bzip2(JSON)), bounded; accepted lists
//! re-encode (when they fit) to a tag that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_catalog::cloudy;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = cloudy::decode(s) {
        if let Ok(tag) = cloudy::encode(&list) {
            assert_eq!(cloudy::decode(&tag).expect("own tag decodes"), list);
        }
    }
});
