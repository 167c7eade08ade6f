//! mDNS services seen on one LAN, community-wide: every box answers the
//! `nuvol-mdns-seen` Serf query with what its mDNS browser sees on its
//! LANs, and asks the query every [`EVERY`]; the answers of the other boxes
//! land in the catalog as the external source `mdns-community`, each
//! service with `seen_by` (the box that saw it) in its TXT and that box's
//! zone. The catalog's merge folds them into the gossip entries of the same
//! service (a box's own bundles) or lists them on their own (a printer on
//! zone-b's LAN, listed in zone-a).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nuvol_catalog::{Service, Source};
use nuvol_gossip::Event;

/// The query's name.
pub const QUERY: &str = "nuvol-mdns-seen";
/// How often a box asks.
pub const EVERY: Duration = Duration::from_secs(30);
/// How long a box waits for answers.
const WAIT: Duration = Duration::from_secs(5);
/// Budget of one answer (a Serf response must fit a UDP packet).
const ANSWER_MAX: usize = 900;
/// Most services kept from one box's answer.
const MAX_PER_BOX: usize = 32;
/// The external source name in the catalog.
pub const SOURCE: &str = "mdns-community";

/// One service in an answer: instance, type, host, address, port.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub name: String,
    pub service_type: String,
    pub host: String,
    pub addr: Option<IpAddr>,
    pub port: u16,
}

/// The answer: a JSON array of `[name, type, host, addr, port]`, trimmed
/// from the end to [`ANSWER_MAX`] bytes.
pub fn encode(seen: &[Seen]) -> String {
    let mut list: Vec<serde_json::Value> = seen
        .iter()
        .map(|s| {
            serde_json::json!([
                s.name,
                s.service_type,
                s.host,
                s.addr.map(|a| a.to_string()).unwrap_or_default(),
                s.port
            ])
        })
        .collect();
    loop {
        let s = serde_json::Value::Array(list.clone()).to_string();
        if s.len() <= ANSWER_MAX || list.is_empty() {
            return s;
        }
        list.pop();
    }
}

/// Parse an answer; malformed entries are skipped, at most
/// [`MAX_PER_BOX`] kept.
pub fn decode(payload: &[u8]) -> Vec<Seen> {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_slice(payload) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|v| {
            let a = v.as_array()?;
            let text = |i: usize| a.get(i).and_then(|x| x.as_str()).map(str::to_string);
            let name = text(0)?;
            let service_type = text(1)?;
            if name.is_empty()
                || name.len() > 255
                || !service_type.starts_with('_')
                || service_type.len() > 64
            {
                return None;
            }
            Some(Seen {
                name,
                service_type,
                host: text(2).unwrap_or_default().chars().take(255).collect(),
                addr: text(3).and_then(|s| s.parse().ok()),
                port: u16::try_from(a.get(4)?.as_u64()?).ok()?,
            })
        })
        .take(MAX_PER_BOX)
        .collect()
}

/// What a box's answer becomes in our catalog.
fn to_service(s: Seen, seen_by: &str, zone: &str) -> Service {
    let node = s.host.strip_suffix(".local").unwrap_or(&s.host).to_string();
    Service {
        name: s.name,
        service_type: s.service_type,
        node,
        zone: zone.to_string(),
        addr: s.addr,
        overlay_addr: None,
        port: s.port,
        txt: BTreeMap::from([("seen_by".to_string(), seen_by.to_string())]),
        source: Source::Mdns,
        healthy: true,
        health: "alive",
        rtt_estimate_ms: None,
        rtt_ms: None,
        hops: None,
        loss: None,
    }
}

/// Answer the query and ask it, for as long as the agent runs.
pub fn spawn(disc: Arc<crate::discovery::Discovery>) {
    tokio::spawn(async move {
        let d = loop {
            if let Some(d) = disc.handle() {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // Answers.
        let answer_disc = disc.clone();
        let ad = d.clone();
        tokio::spawn(async move {
            let mut events = ad.events();
            loop {
                match events.recv().await {
                    Ok(Event::Query(q)) if q.name == QUERY => {
                        let seen: Vec<Seen> = answer_disc
                            .mdns()
                            .map(|m| {
                                m.services()
                                    .into_iter()
                                    .map(|x| Seen {
                                        name: x.instance,
                                        service_type: x.service_type,
                                        host: x.host,
                                        addr: x
                                            .addresses
                                            .iter()
                                            .find(|a| a.is_ipv4())
                                            .or(x.addresses.first())
                                            .copied(),
                                        port: x.port,
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let Err(e) = ad.gossip().respond(&q, encode(&seen).as_bytes()) {
                            tracing::debug!("{QUERY}: {e}");
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        // Questions.
        loop {
            tokio::time::sleep(EVERY).await;
            let me = d.gossip().name().to_string();
            let zones: BTreeMap<String, String> =
                d.members().into_iter().map(|m| (m.name, m.zone)).collect();
            let mut all = Vec::new();
            for (node, payload) in d.gossip().query(QUERY, b"", WAIT).await {
                if node == me {
                    continue;
                }
                let zone = zones.get(&node).cloned().unwrap_or_default();
                all.extend(
                    decode(&payload)
                        .into_iter()
                        .map(|s| to_service(s, &node, &zone)),
                );
            }
            d.set_external_services(SOURCE, all);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(i: usize) -> Seen {
        Seen {
            name: format!("printer {i}"),
            service_type: "_ipp._tcp".into(),
            host: format!("printer{i}.local"),
            addr: Some("10.2.0.9".parse().unwrap()),
            port: 631,
        }
    }

    #[test]
    fn answers_round_trip_within_budget() {
        let few: Vec<Seen> = (0..3).map(seen).collect();
        assert_eq!(decode(encode(&few).as_bytes()), few);
        let many: Vec<Seen> = (0..100).map(seen).collect();
        let e = encode(&many);
        assert!(e.len() <= ANSWER_MAX, "{}", e.len());
        let back = decode(e.as_bytes());
        assert!(!back.is_empty() && back.len() < 100);
        assert_eq!(back[0], many[0]);
    }

    #[test]
    fn bad_answers_are_skipped() {
        assert!(decode(b"not json").is_empty());
        assert!(decode(b"{}").is_empty());
        let got = decode(br#"[["a","_x._tcp","h.local","1.2.3.4",70000],["","_x._tcp","h","",1],["b","x","h","",1],["c","_y._udp","h","nope",5],7]"#);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].name.as_str(), got[0].addr, got[0].port),
            ("c", None, 5)
        );
    }

    #[test]
    fn catalog_entries_name_who_saw_them() {
        let s = to_service(seen(1), "box3", "zone-b");
        assert_eq!(s.node, "printer1");
        assert_eq!(s.zone, "zone-b");
        assert_eq!(s.txt["seen_by"], "box3");
        assert_eq!(s.source, Source::Mdns);
    }
}
