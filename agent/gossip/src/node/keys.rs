//! Serf's key management queries (`serf keys -install/-use/-remove/-list`),
//! answered as a Go member does, so key rotation works in a cluster with
//! nuvol nodes; and the keyring file that keeps the result across restarts.
//!
//! The keyring file is a JSON array of base64 keys, primary first (Serf's
//! `-keyring-file` format), written atomically with mode 0600. It is used
//! only when encryption is configured, and then wins over the configured
//! key: after `serf keys -use NEW` and `-remove OLD` the configured key is
//! gone from the cluster.

use super::{GossipError, IncomingQuery, Inner, State};
use crate::serf::{key_query, KeyRequest, KeyResponse};
use crate::wire::{Keyring, MAX_KEYS};
use base64::Engine;
use std::path::{Path, PathBuf};

/// Largest keyring file read (16 keys of 44 base64 characters fit in 1 KiB).
pub const KEYRING_FILE_MAX: u64 = 4096;

/// Is `name` one of Serf's key queries?
pub fn is_key_query(name: &str) -> bool {
    [
        key_query::INSTALL,
        key_query::USE,
        key_query::REMOVE,
        key_query::LIST,
    ]
    .contains(&name)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Parse a keyring file: a JSON array of 1 to [`MAX_KEYS`] base64 keys of
/// 16, 24 or 32 bytes, primary first.
pub fn parse_keyring_file(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let list: Vec<String> = serde_json::from_slice(data)
        .map_err(|e| format!("want a JSON array of base64 keys: {e}"))?;
    if list.is_empty() || list.len() > MAX_KEYS {
        return Err(format!("{} keys; want 1 to {MAX_KEYS}", list.len()));
    }
    list.iter()
        .enumerate()
        .map(|(i, k)| {
            let key = b64()
                .decode(k)
                .map_err(|e| format!("key {}: not base64: {e}", i + 1))?;
            if ![16, 24, 32].contains(&key.len()) {
                return Err(format!(
                    "key {}: {} bytes; want 16, 24 or 32",
                    i + 1,
                    key.len()
                ));
            }
            Ok(key)
        })
        .collect()
}

/// The keyring file for `keys`.
pub fn keyring_file_text(keys: &[Vec<u8>]) -> Vec<u8> {
    let list: Vec<String> = keys.iter().map(|k| b64().encode(k)).collect();
    let mut v = serde_json::to_vec_pretty(&list).unwrap_or_default();
    v.push(b'\n');
    v
}

/// The keys to start with: the keyring file's when encryption is
/// configured and the file exists, else the configured ones.
pub fn initial_keys(
    configured: &[Vec<u8>],
    file: Option<&Path>,
) -> Result<Vec<Vec<u8>>, GossipError> {
    let Some(path) = file.filter(|_| !configured.is_empty()) else {
        return Ok(configured.to_vec());
    };
    let bad = |m: String| GossipError::Keyring(format!("{}: {m}", path.display()));
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(configured.to_vec()),
        Err(e) => return Err(bad(e.to_string())),
    };
    if meta.len() > KEYRING_FILE_MAX {
        return Err(bad(format!(
            "{} bytes; at most {KEYRING_FILE_MAX}",
            meta.len()
        )));
    }
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let keys = parse_keyring_file(&data).map_err(bad)?;
    if !keys.iter().any(|k| configured.contains(k)) {
        tracing::info!(
            file = %path.display(),
            "gossip: keys from the keyring file (rotated with serf keys); the configured key is no longer in it"
        );
    }
    Ok(keys)
}

/// Apply one key query to `ring`; the answer, and whether the ring changed.
pub fn apply_key_query(ring: &Keyring, name: &str, payload: &[u8]) -> (KeyResponse, bool) {
    let mut r = KeyResponse::default();
    if !ring.enabled() {
        r.message = if name == key_query::LIST {
            "Keyring is empty (encryption not enabled)"
        } else {
            "No keyring to modify (encryption not enabled)"
        }
        .to_string();
        return (r, false);
    }
    if name == key_query::LIST {
        let keys = ring.keys();
        r.keys = keys.iter().map(|k| b64().encode(k)).collect();
        r.primary_key = keys.first().map(|k| b64().encode(k)).unwrap_or_default();
        r.result = true;
        return (r, false);
    }
    let req = match KeyRequest::decode(payload) {
        Ok(q) => q,
        Err(e) => {
            r.message = format!("Failed to decode key request: {e}");
            return (r, false);
        }
    };
    let before = ring.keys();
    let done = match name {
        key_query::INSTALL => ring.install(&req.key),
        key_query::USE => ring.use_key(&req.key),
        _ => ring.remove(&req.key),
    };
    match done {
        Ok(()) => r.result = true,
        Err(e) => r.message = e.to_string(),
    }
    (r, ring.keys() != before)
}

/// A listing that fits a query response: drop keys from the end (saying
/// so) until it does, as Serf does.
fn fit_listing(mut r: KeyResponse, fits: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let all = r.keys.len();
    loop {
        let enc = r.encode();
        if fits(&enc) || r.keys.is_empty() {
            return enc;
        }
        r.keys.pop();
        r.message = format!(
            "truncated key list response, showing first {} of {all} keys",
            r.keys.len()
        );
    }
}

impl Inner {
    /// Answer a Serf key query; when the ring changed and a keyring file
    /// is configured, write it first (off the runtime thread) and answer
    /// with the outcome.
    pub(super) fn handle_key_query(&self, st: &mut State, q: IncomingQuery) {
        let (mut resp, changed) = apply_key_query(&self.framing.keyring, &q.name, &q.payload);
        tracing::info!(query = %q.name, from = %q.source_node, ok = resp.result, "gossip: serf key query");
        let file = self.cfg.keyring_file.clone().filter(|_| changed);
        let (Some(path), Some(inner)) = (file, self.clone_arc()) else {
            let payload = fit_listing(resp, |enc| self.response_fits(&q, enc));
            let _ = self.send_response(st, &q, payload);
            return;
        };
        let text = keyring_file_text(&self.framing.keyring.keys());
        tokio::spawn(async move {
            let written = write_keyring(path.clone(), text).await;
            if let Err(e) = written {
                tracing::error!(file = %path.display(), "gossip: writing the keyring file: {e}");
                resp.result = false;
                resp.message = format!("Failed to write keyring file: {e}");
            }
            let mut st = inner.st();
            let _ = inner.send_response(&mut st, &q, resp.encode());
            inner.flush(&mut st);
        });
    }

    fn response_fits(&self, q: &IncomingQuery, payload: &[u8]) -> bool {
        let r = crate::serf::QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.me.clone(),
            flags: 0,
            payload: payload.to_vec(),
        };
        r.encode().len() <= super::QUERY_RESPONSE_LIMIT
    }
}

async fn write_keyring(path: PathBuf, text: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        nuvol_durable::write_atomic(&path, &text, nuvol_durable::Mode::Private)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &[u8]) -> Vec<u8> {
        KeyRequest { key: key.to_vec() }.encode()
    }

    #[test]
    fn key_queries_change_the_ring_as_serf_does() {
        let (k1, k2) = (vec![1u8; 32], vec![2u8; 16]);
        let ring = Keyring::new(vec![k1.clone()]).unwrap();
        let (r, changed) = apply_key_query(&ring, key_query::INSTALL, &req(&k2));
        assert!(r.result && changed, "{r:?}");
        let (r, changed) = apply_key_query(&ring, key_query::INSTALL, &req(&k2));
        assert!(r.result && !changed);
        let (r, _) = apply_key_query(&ring, key_query::LIST, &KeyRequest::default().encode());
        assert_eq!(r.keys, vec![b64().encode(&k1), b64().encode(&k2)]);
        assert_eq!(r.primary_key, b64().encode(&k1));
        let (r, _) = apply_key_query(&ring, key_query::REMOVE, &req(&k1));
        assert_eq!(
            (r.result, r.message.as_str()),
            (false, "removing the primary key is not allowed")
        );
        assert!(apply_key_query(&ring, key_query::USE, &req(&k2)).0.result);
        assert!(
            apply_key_query(&ring, key_query::REMOVE, &req(&k1))
                .0
                .result
        );
        assert_eq!(ring.keys(), vec![k2.clone()]);
        let (r, _) = apply_key_query(&ring, key_query::USE, &req(&k1));
        assert_eq!(r.message, "requested key is not in the keyring");
        let (r, _) = apply_key_query(&ring, key_query::INSTALL, &req(&[0; 7]));
        assert_eq!(r.message, "key size must be 16, 24 or 32 bytes");
        let (r, _) = apply_key_query(&ring, key_query::INSTALL, &[7, 0xc1]);
        assert!(!r.result && r.message.starts_with("Failed to decode key request"));
        // without encryption nothing changes, and Serf's words say why
        let clear = Keyring::new(Vec::new()).unwrap();
        let (r, changed) = apply_key_query(&clear, key_query::INSTALL, &req(&k2));
        assert!(!r.result && !changed);
        assert_eq!(r.message, "No keyring to modify (encryption not enabled)");
        assert!(clear.keys().is_empty());
        assert_eq!(
            apply_key_query(&clear, key_query::LIST, &[]).0.message,
            "Keyring is empty (encryption not enabled)"
        );
    }

    #[test]
    fn a_long_listing_is_truncated_to_fit() {
        let r = KeyResponse {
            result: true,
            keys: (0..16).map(|i| b64().encode([i as u8; 32])).collect(),
            primary_key: b64().encode([0u8; 32]),
            ..Default::default()
        };
        let enc = fit_listing(r.clone(), |e| e.len() <= 500);
        assert!(enc.len() <= 500);
        let back = KeyResponse::decode(&enc).unwrap();
        assert!(back.keys.len() < 16 && !back.keys.is_empty());
        assert_eq!(
            back.message,
            format!(
                "truncated key list response, showing first {} of 16 keys",
                back.keys.len()
            )
        );
        assert_eq!(
            KeyResponse::decode(&fit_listing(r.clone(), |_| true)).unwrap(),
            r
        );
    }

    #[test]
    fn keyring_files_round_trip_and_bad_ones_are_named() {
        let keys = vec![vec![9u8; 32], vec![8u8; 16]];
        let text = keyring_file_text(&keys);
        assert_eq!(parse_keyring_file(&text).unwrap(), keys);
        for (bad, why) in [
            (&b"[]"[..], "0 keys"),
            (b"{\"a\":1}", "JSON array"),
            (b"[\"!!\"]", "key 1: not base64"),
            (b"[\"AAAA\"]", "key 1: 3 bytes"),
        ] {
            let e = parse_keyring_file(bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("nuvol-keyring-{}", std::process::id()));
        let path = dir.join("gossip-keyring.json");
        let conf = vec![vec![1u8; 16]];
        // no file: the configured key; no configured key: clear, file or not
        assert_eq!(initial_keys(&conf, Some(&path)).unwrap(), conf);
        nuvol_durable::write_atomic(&path, &text, nuvol_durable::Mode::Private).unwrap();
        assert_eq!(initial_keys(&conf, Some(&path)).unwrap(), keys);
        assert!(initial_keys(&[], Some(&path)).unwrap().is_empty());
        std::fs::write(&path, b"[1]").unwrap();
        let e = initial_keys(&conf, Some(&path)).unwrap_err().to_string();
        assert!(
            e.contains("gossip-keyring.json") && e.contains("JSON array"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
