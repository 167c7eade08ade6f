//! `nuvol ctl members` and `nuvol ctl services`: the community.

use super::client::{Client, Payload};
use super::output::{list, pretty, table};
use super::Fail;

pub(super) async fn members(c: &Client, json: bool, by_zone: bool) -> Result<(), Fail> {
    let v = c
        .json("GET", "/api/v1/members", Payload::Empty, None)
        .await?;
    if by_zone {
        let zones = zones(&list(&v));
        if json {
            pretty(&serde_json::Value::Object(zones.into_iter().collect()));
        } else {
            for (zone, rows) in zones {
                println!("zone {zone}:");
                table(
                    rows.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "name", "role", "status", "health", "rtt_ms", "loss", "hops", "address",
                        "overlay",
                    ],
                );
                println!();
            }
        }
        return Ok(());
    }
    if json {
        pretty(&v)
    } else {
        table(
            &list(&v),
            &[
                "name", "role", "zone", "state", "status", "health", "hops", "loss", "rtt_ms",
                "addr", "address",
            ],
        )
    }
    Ok(())
}

/// Members grouped by zone (`(none)` for members without one): super nodes
/// first, marked `super-node*`, each with its overlay address (`ov4` tag).
fn zones(members: &[serde_json::Value]) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut out: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for m in members {
        let mut m = m.clone();
        let zone = m["zone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .unwrap_or("(none)")
            .to_string();
        // The IPv4 overlay address: the one the panel and services answer on.
        let ov = m["tags"]["ov4"].as_str().unwrap_or("").to_string();
        if let Some(o) = m.as_object_mut() {
            if o.get("role").and_then(|r| r.as_str()) == Some("super-node") {
                o.insert("role".into(), "super-node*".into());
            }
            o.insert("overlay".into(), ov.into());
        }
        out.entry(zone).or_default().push(m);
    }
    out.into_iter()
        .map(|(z, mut v)| {
            v.sort_by_key(|m| {
                (
                    m["role"] != "super-node*",
                    m["name"].as_str().unwrap_or("").to_string(),
                )
            });
            (z, serde_json::Value::Array(v))
        })
        .collect()
}

pub(super) async fn services(
    c: &Client,
    json: bool,
    kind: Option<String>,
    near: bool,
    zone: Option<String>,
) -> Result<(), Fail> {
    let mut q = Vec::new();
    if let Some(k) = kind {
        q.push(format!("type={}", nuvol_api::parse::percent_encode(&k)));
    }
    if near {
        q.push("near=1".into());
    }
    if let Some(z) = zone {
        q.push(format!("zone={}", nuvol_api::parse::percent_encode(&z)));
    }
    let path = if q.is_empty() {
        "/api/v1/services".to_string()
    } else {
        format!("/api/v1/services?{}", q.join("&"))
    };
    let v = c.json("GET", &path, Payload::Empty, None).await?;
    if json {
        pretty(&v)
    } else {
        table(
            &list(&v),
            &[
                "name",
                "type",
                "service_type",
                "node",
                "zone",
                "address",
                "addr",
                "port",
                "url",
                "health",
                "hops",
                "loss",
                "rtt_ms",
            ],
        )
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn members_by_zone_put_super_nodes_first() {
        let m = vec![
            json!({"name": "b2", "zone": "zone-b", "role": "ordinary-node", "tags": {}}),
            json!({"name": "b1", "zone": "zone-b", "role": "super-node", "tags": {"ov4": "100.64.0.1"}}),
            json!({"name": "a1", "zone": "zone-a", "role": "super-node", "tags": {}}),
            json!({"name": "x", "zone": "", "tags": {}}),
        ];
        let z = super::zones(&m);
        let keys: Vec<&str> = z.keys().map(String::as_str).collect();
        assert_eq!(keys, ["(none)", "zone-a", "zone-b"]);
        assert_eq!(z["zone-b"][0]["name"], "b1");
        assert_eq!(z["zone-b"][0]["role"], "super-node*");
        assert_eq!(z["zone-b"][0]["overlay"], "100.64.0.1");
        assert_eq!(z["zone-b"][1]["name"], "b2");
    }
}
