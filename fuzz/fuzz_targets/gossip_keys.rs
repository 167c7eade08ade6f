//! Serf's key queries as a nuvol node answers them (`_serf_install-key`,
//! `_serf_use-key`, `_serf_remove-key`, `_serf_list-keys` payloads), key
//! responses as `serf keys` reads them, and keyring files.
//!
//! Checks beyond "no panic, no OOM, no hang": whatever the queries, the
//! ring stays valid (1 to 16 keys of 16, 24 or 32 bytes, no repeats) and
//! keeps its primary unless a use-key changed it; answers and accepted
//! responses re-encode to themselves; an accepted keyring file rewrites to
//! the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_gossip::node::{apply_key_query, keyring_file_text, parse_keyring_file};
use nuvol_gossip::serf::{key_query, KeyRequest, KeyResponse};
use nuvol_gossip::wire::{Keyring, MAX_KEYS};

const NAMES: [&str; 5] = [
    key_query::INSTALL,
    key_query::USE,
    key_query::REMOVE,
    key_query::LIST,
    "_serf_other",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            // a sequence of queries: [name][len][payload]...
            let ring = Keyring::new(vec![vec![1u8; 16], vec![2u8; 32]]).expect("ring");
            let mut it = rest;
            while let [n, len, tail @ ..] = it {
                let len = usize::from(*len).min(tail.len());
                let (payload, next) = tail.split_at(len);
                it = next;
                let name = NAMES[usize::from(*n) % NAMES.len()];
                let before = ring.keys();
                let (resp, changed) = apply_key_query(&ring, name, payload);
                let keys = ring.keys();
                assert_eq!(changed, keys != before);
                assert!(!keys.is_empty() && keys.len() <= MAX_KEYS);
                assert!(keys.iter().all(|k| [16, 24, 32].contains(&k.len())));
                for (i, k) in keys.iter().enumerate() {
                    assert!(!keys[..i].contains(k), "repeated key");
                }
                if name != key_query::USE {
                    assert_eq!(keys[0], before[0], "{name} changed the primary");
                }
                if resp.result && name == key_query::USE {
                    if let Ok(req) = KeyRequest::decode(payload) {
                        assert_eq!(keys[0], req.key);
                    }
                }
                assert_eq!(KeyResponse::decode(&resp.encode()).expect("own answer"), resp);
            }
        }
        1 => {
            if let Ok(r) = KeyResponse::decode(rest) {
                assert_eq!(KeyResponse::decode(&r.encode()).expect("again"), r);
            }
            if let Ok(q) = KeyRequest::decode(rest) {
                assert_eq!(KeyRequest::decode(&q.encode()).expect("again"), q);
            }
        }
        _ => {
            if let Ok(keys) = parse_keyring_file(rest) {
                assert!(!keys.is_empty() && keys.len() <= MAX_KEYS);
                assert_eq!(parse_keyring_file(&keyring_file_text(&keys)), Ok(keys));
            }
        }
    }
});
