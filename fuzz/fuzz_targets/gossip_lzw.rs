//! Go compress/lzw decoder (bounded) and the encoder's round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_gossip::lzw;

fuzz_target!(|data: &[u8]| {
    let _ = lzw::decompress(data, 1 << 20);
    let c = lzw::compress(data);
    let d = lzw::decompress(&c, data.len() + 16).expect("own output decodes");
    assert_eq!(d, data);
});
