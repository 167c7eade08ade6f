//! etcd v3 over its HTTP/JSON gateway on a member's client port, as a
//! user's program would talk to the community's key-value store.

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// POST `body` to `path` at `at`; the answer when it is 200 and JSON.
pub fn call(at: SocketAddr, path: &str, body: &Value) -> Option<Value> {
    crate::rest::request(at, "POST", path, &[], Some(&body.to_string()))?.json()
}

/// Write `k` = `v`; whether the cluster took it.
pub fn put(at: SocketAddr, k: &str, v: &str) -> bool {
    call(
        at,
        "/v3/kv/put",
        &json!({"key": STANDARD.encode(k), "value": STANDARD.encode(v)}),
    )
    .is_some()
}

/// The value of `k` (a linearizable read: it needs the cluster's quorum).
pub fn get(at: SocketAddr, k: &str) -> Option<String> {
    let v = call(at, "/v3/kv/range", &json!({"key": STANDARD.encode(k)}))?;
    let raw = STANDARD.decode(v["kvs"][0]["value"].as_str()?).ok()?;
    String::from_utf8(raw).ok()
}

/// The members' names (an added member that has not started yet has none).
pub fn members(at: SocketAddr) -> Option<Vec<String>> {
    let v = call(at, "/v3/cluster/member/list", &json!({}))?;
    Some(
        v["members"]
            .as_array()?
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect(),
    )
}
