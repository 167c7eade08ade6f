//! Services that know their peers by an id of their own (`[peers]` in the
//! manifest; Syncthing's device id), on a box in the overlay.
//!
//! Every [`POLL`], for each such bundle whose service is up:
//!
//! 1. its API key is read from the file the manifest names (in the bundle's
//!    volume) and its own id asked from its REST API in the container;
//! 2. the id is published as `peer_id` in this box's bundle share index;
//! 3. each other box of the overlay whose share index lists the same bundle
//!    with a well-formed id is added to the service, named by its node and
//!    reached at its overlay address, folders it shares accepted.
//!
//! What comes from peers is checked (the id's shape, the node name), every
//! answer is read within a byte and time budget. A peer is added only when
//! the service does not know its id yet (its device list is asked first), so
//! what an admin changed about a device (name, addresses) stays after an
//! agent restart; one peer that cannot be added does not hold up the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nuvol_api::peer_http::{http_send, Budget, Outgoing, Sink};
use nuvol_bundle::manifest::{Peers, PeersKind};
use nuvol_bundle::Store;

use crate::discovery::Discovery;
use crate::services::ServicesHandle;

/// How often the peers of each such service are looked at.
pub const POLL: Duration = Duration::from_secs(15);
/// Largest API key file read.
const MAX_KEY_FILE: u64 = 256 * 1024;
/// Largest answer read from the service.
const MAX_ANSWER: u64 = 256 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The ids this box's services are known by, for the share index.
#[derive(Debug, Default)]
pub struct PeerIds {
    ids: Mutex<BTreeMap<String, String>>,
    generation: AtomicU64,
}

impl PeerIds {
    pub fn get(&self) -> BTreeMap<String, String> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Moves whenever an id changes (the share index is recomputed).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn set(&self, bundle: &str, id: Option<String>) {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match id {
            Some(id) => ids.insert(bundle.to_string(), id.clone()) != Some(id),
            None => ids.remove(bundle).is_some(),
        };
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A Syncthing device id: 8 groups of 7 of `A-Z 2-7`, joined by `-`.
pub fn syncthing_id(s: &str) -> bool {
    s.len() == 63
        && s.split('-').count() == 8
        && s.split('-').all(|g| {
            g.len() == 7
                && g.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        })
}

/// The API key in a Syncthing `config.xml` (`<apikey>…</apikey>`).
pub fn syncthing_key(config: &str) -> Option<&str> {
    let start = config.find("<apikey>")? + "<apikey>".len();
    let len = config[start..].find("</apikey>")?;
    let key = &config[start..start + len];
    ((1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(key)
}

/// One REST call to the service with its key; the answer's body.
async fn call(
    at: SocketAddr,
    key: &str,
    method: hyper::Method,
    path: &str,
    json: Option<serde_json::Value>,
) -> Result<Vec<u8>, String> {
    let headers = [("X-API-Key", key)];
    let send = Outgoing {
        method,
        headers: &headers,
        json: json.map(|j| bytes::Bytes::from(j.to_string())),
    };
    let mut buf = Vec::new();
    http_send(
        at.ip(),
        at.port(),
        path,
        &send,
        Budget::small(MAX_ANSWER, TIMEOUT),
        &mut Sink::Memory(&mut buf),
    )
    .await
    .map_err(|e| format!("{path}: {e}"))?;
    Ok(buf)
}

/// The service's own id.
async fn own_id(at: SocketAddr, key: &str) -> Result<String, String> {
    let body = call(at, key, hyper::Method::GET, "/rest/system/status", None).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("status: not JSON: {e}"))?;
    let id = v["myID"].as_str().unwrap_or("");
    if syncthing_id(id) {
        Ok(id.to_string())
    } else {
        Err(format!("status: {id:?} is not a device id"))
    }
}

/// The device ids the service already has (`GET /rest/config/devices`).
async fn configured(at: SocketAddr, key: &str) -> Result<BTreeSet<String>, String> {
    let body = call(at, key, hyper::Method::GET, "/rest/config/devices", None).await?;
    device_ids(&body)
}

/// The `deviceID`s of a device list; anything but a list of objects is an
/// error (the answer is the service's, not trusted to be sane).
fn device_ids(body: &[u8]) -> Result<BTreeSet<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("devices: not JSON: {e}"))?;
    let list = v.as_array().ok_or("devices: not a list")?;
    list.iter()
        .map(|d| {
            d["deviceID"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "devices: an entry without a deviceID".to_string())
        })
        .collect()
}

/// Add one peer: named by its node, at its overlay address, its shared
/// folders accepted.
async fn add(
    at: SocketAddr,
    key: &str,
    id: &str,
    node: &str,
    peer: SocketAddr,
) -> Result<(), String> {
    let body = serde_json::json!({
        "deviceID": id,
        "name": node,
        "addresses": [format!("tcp://{peer}")],
        "autoAcceptFolders": true,
    });
    call(
        at,
        key,
        hyper::Method::PUT,
        &format!("/rest/config/devices/{id}"),
        Some(body),
    )
    .await
    .map(|_| ())
}

/// The container address the supervisor reports (`10.x.y.z/24`).
fn container_ip(address: &str) -> Option<IpAddr> {
    address.split('/').next()?.parse().ok()
}

/// Run the loop of the module docs for the life of the agent.
pub fn spawn(
    store: Arc<Store>,
    services: ServicesHandle,
    discovery: Arc<Discovery>,
    ids: Arc<PeerIds>,
) {
    tokio::spawn(async move {
        // Peers added in this run, per bundle: (id, address).
        let mut added: BTreeMap<String, BTreeSet<(String, SocketAddr)>> = BTreeMap::new();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(d) = discovery.handle() else {
                continue;
            };
            let Some((now, running)) = services.snapshot() else {
                continue;
            };
            for b in crate::cluster::installed(&store).await {
                let Some(p) = b.manifest.peers.clone() else {
                    continue;
                };
                let up = running.iter().find(|s| s.name == b.name).and_then(|s| {
                    (crate::announce::up(s, now) == crate::announce::Up::Yes)
                        .then(|| s.address.as_deref().and_then(container_ip))
                        .flatten()
                });
                let Some(ip) = up else {
                    ids.set(&b.name, None);
                    continue;
                };
                if let Err(e) = one(
                    &store,
                    &d,
                    &b.name,
                    &p,
                    ip,
                    &ids,
                    added.entry(b.name.clone()).or_default(),
                )
                .await
                {
                    tracing::info!(service = %b.name, "peers: {e}");
                }
            }
        }
    });
}

/// Steps 1-3 of the module docs for one bundle.
async fn one(
    store: &Store,
    d: &nuvol_catalog::DiscoveryHandle,
    bundle: &str,
    p: &Peers,
    ip: IpAddr,
    ids: &PeerIds,
    added: &mut BTreeSet<(String, SocketAddr)>,
) -> Result<(), String> {
    let PeersKind::Syncthing = p.kind;
    let (vol, rel) = p.key_file().ok_or("no key file")?;
    let file: PathBuf = store.volume_path(bundle, vol).join(rel);
    let text = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = String::new();
        std::fs::File::open(&file)
            .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut s))
            .map(|_| s)
            .map_err(|e| format!("{}: {e}", file.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let key = syncthing_key(&text).ok_or("no API key in its configuration yet")?;
    let at = SocketAddr::new(ip, p.api_port);
    let mine = own_id(at, key).await?;
    ids.set(bundle, Some(mine.clone()));
    let mut new = Vec::new();
    for (peer, entry) in crate::cluster::boxes_with(d, bundle).await {
        let Some(id) = entry.peer_id.filter(|i| syncthing_id(i) && *i != mine) else {
            continue;
        };
        if !crate::cluster::plain_name(&peer.node) {
            continue;
        }
        let reach = SocketAddr::new(peer.addr, p.peer_port);
        if !added.contains(&(id.clone(), reach)) {
            new.push((id, peer.node, reach));
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let known = configured(at, key).await?;
    let mut failed = Vec::new();
    for (id, node, reach) in new {
        if known.contains(&id) {
            // Kept as the service has it: an admin may have edited it.
            tracing::debug!(service = %bundle, peer = %node, "peers: {id} already configured");
        } else {
            match add(at, key, &id, &node, reach).await {
                Ok(()) => {
                    tracing::info!(service = %bundle, peer = %node, "peers: added {id} at {reach}")
                }
                Err(e) => {
                    failed.push(format!("{node}: {e}"));
                    continue;
                }
            }
        }
        added.insert((id, reach));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("adding {}", failed.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_are_checked() {
        let id = "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD";
        assert!(syncthing_id(id));
        assert!(!syncthing_id(&id.to_lowercase()));
        assert!(!syncthing_id(&id.replace('-', "")));
        assert!(!syncthing_id(&id.replacen('M', "1", 1)), "1 is not base32");
        assert!(!syncthing_id(&format!("{id}-AAAAAAA")));
        let cfg =
            "<configuration><gui enabled=\"true\"><apikey>aB3-x_9</apikey></gui></configuration>";
        assert_eq!(syncthing_key(cfg), Some("aB3-x_9"));
        assert_eq!(syncthing_key("<apikey></apikey>"), None);
        assert_eq!(syncthing_key("<apikey>a\"b</apikey>"), None);
        assert_eq!(syncthing_key("<apikey>abc"), None);
        assert_eq!(
            container_ip("10.88.0.5/24"),
            Some(IpAddr::from([10, 88, 0, 5]))
        );
    }

    #[test]
    fn device_lists_are_checked() {
        let ids = device_ids(br#"[{"deviceID":"A","name":"x"},{"deviceID":"B"}]"#).unwrap();
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["A", "B"]);
        assert!(device_ids(b"[]").unwrap().is_empty());
        for bad in [&b"{}"[..], b"[1]", b"[{\"name\":\"x\"}]", b"<html>", b""] {
            let e = device_ids(bad).unwrap_err();
            assert!(e.starts_with("devices: "), "{e}");
        }
    }

    #[test]
    fn a_changed_id_moves_the_generation() {
        let ids = PeerIds::default();
        ids.set("syncthing", Some("A".into()));
        let g = ids.generation();
        ids.set("syncthing", Some("A".into()));
        assert_eq!(ids.generation(), g);
        ids.set("syncthing", None);
        assert!(ids.generation() > g);
        assert!(ids.get().is_empty());
    }
}
