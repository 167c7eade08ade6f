//! The mDNS packet decoder (nuvol-mdns `wire::decode`) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_mdns::wire::{self, Message, RData};

/// Labels survive a round trip byte for byte only when they are ASCII (the
/// decoder keeps labels as UTF-8, lossily); an empty TXT is written as one
/// empty string (RFC 6763 §6.1).
fn exact(m: &Message) -> bool {
    let names = m
        .questions
        .iter()
        .map(|q| &q.name)
        .chain(m.answers.iter().chain(&m.authority).chain(&m.additional).flat_map(|r| {
            let extra = match &r.rdata {
                RData::Ptr(n) | RData::Srv { target: n, .. } => Some(n),
                _ => None,
            };
            std::iter::once(&r.name).chain(extra)
        }));
    let ascii = names.into_iter().all(|n| n.0.iter().all(|l| l.is_ascii()));
    let no_empty_txt = m
        .answers
        .iter()
        .chain(&m.authority)
        .chain(&m.additional)
        .all(|r| !matches!(&r.rdata, RData::Txt(v) if v.is_empty()));
    ascii && no_empty_txt
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::decode(data) {
        // Anything accepted encodes, and the encoding decodes to the same
        // message (exactly, when labels are ASCII).
        let b = wire::encode(&m);
        let again = wire::decode(&b);
        if exact(&m) {
            assert_eq!(again.as_ref().ok(), Some(&m));
        } else if let Ok(again) = again {
            assert_eq!(again.questions.len(), m.questions.len());
            assert_eq!(again.answers.len(), m.answers.len());
        }
    }
});
