//! The community overlay (`[overlay]`): a WireGuard mesh formed from gossip.
//!
//! Each box announces its WireGuard public key, port and an admission proof
//! in the `wg` tag (`<key>,<port>,<proof>`), and its overlay address in `ov`
//! (for people and the catalog; routing never trusts it). Every few seconds
//! the agent turns the gossip members into kernel WireGuard peers:
//!
//! - **admission**: a member is a peer only if its proof is the HMAC of its
//!   key and node name under the community secret (`[discovery]
//!   encrypt_key`), see docs/overlay.md;
//! - **addresses**: derived from the key ([`nuvol_wg::address_for`]) and
//!   pinned as the peer's only AllowedIP: a member cannot receive or send
//!   for an address that is not its own;
//! - **endpoints**: the claimed one (gossip address + port) is set when a
//!   peer is added; after that the kernel follows the address the peer is
//!   actually heard from (its observed endpoint; with keepalive a box
//!   behind NAT keeps its mapping open). Super nodes gossip the observed
//!   endpoints of peers whose claimed one differs (`nuvol-ov-seen` event),
//!   so two boxes that only a super node hears can try each other there;
//! - **relay**: a peer without a handshake for [`DIRECT_GRACE`] is routed
//!   through a super node that has one (own zone first, then lowest RTT):
//!   its address moves to the super node's AllowedIPs; a super node with
//!   `relay = true` forwards IPv6 between peers. A handshake later moves it
//!   back.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use nuvol_config::OverlayConfig;
use nuvol_gossip::{Event, Member, Status};
use nuvol_wg::genl::{PeerConfig, PeerState, Wg};
use nuvol_wg::Key;
use sha2::Digest;

mod plan;
mod probe;

use plan::*;
pub use probe::metrics;
use probe::*;

/// Gossip tag with `<public key>,<port>,<proof>`.
pub const WG_TAG: &str = "wg";
/// Gossip tag with the overlay IPv6 address (informative, checked).
pub const OV_TAG: &str = "ov";
/// Gossip tag with the overlay IPv4 address (informative, checked).
pub const OV4_TAG: &str = "ov4";
/// User event in which super nodes share observed endpoints.
pub const SEEN_EVENT: &str = "nuvol-ov-seen";
/// File under the state directory with the private key (base64).
pub const KEY_FILE: &str = "overlay.key";
/// How often the peers are reconciled (also on membership events).
const TICK: Duration = Duration::from_secs(5);
/// Most overlay peers (the rest are logged and left out).
pub const MAX_PEERS: usize = 1024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

/// What the overlay needs before gossip starts.
#[derive(Clone)]
pub struct Prepared {
    pub cfg: OverlayConfig,
    key: Key,
    pub public: Key,
    secret: Vec<u8>,
    pub prefix: [u8; 8],
    pub address: Ipv6Addr,
    pub address4: Ipv4Addr,
    pub node: String,
    pub super_node: bool,
    pub zone: String,
    /// `[debug] test_hooks`: serve and answer the throughput benchmark
    pub bench: bool,
}

impl Prepared {
    /// The tags this box announces.
    pub fn tags(&self) -> [(String, String); 3] {
        let proof = nuvol_wg::proof(&self.secret, &self.node, &self.public);
        [
            (
                WG_TAG.to_string(),
                format!(
                    "{},{},{}",
                    self.public.to_base64(),
                    self.cfg.port,
                    b64().encode(proof)
                ),
            ),
            (OV_TAG.to_string(), self.address.to_string()),
            (OV4_TAG.to_string(), self.address4.to_string()),
        ]
    }
}

/// Load (or create) the key and compute this box's overlay identity; `None`
/// when the overlay is off or cannot run (printed on the console).
pub fn prepare(cfg: &nuvol_config::Config, state_dir: &Path, node_name: &str) -> Option<Prepared> {
    let o = &cfg.overlay;
    if !o.enabled {
        return None;
    }
    if !cfg.discovery.enabled {
        problem("[discovery] is off: the overlay learns its peers from gossip");
        return None;
    }
    let Some(secret) = cfg.discovery.key_bytes() else {
        problem("no [discovery] encrypt_key: it is the overlay's admission secret");
        return None;
    };
    let key = match load_or_create_key(&state_dir.join(KEY_FILE)) {
        Ok(k) => k,
        Err(e) => {
            problem(&format!("key {}: {e}", state_dir.join(KEY_FILE).display()));
            return None;
        }
    };
    let public = key.public();
    let prefix = nuvol_wg::prefix_for(&secret);
    let address = nuvol_wg::address_for(&prefix, &public);
    Some(Prepared {
        cfg: o.clone(),
        key,
        public,
        secret,
        prefix,
        address,
        address4: nuvol_wg::address4_for(&public),
        node: node_name.to_string(),
        super_node: cfg.discovery.role == nuvol_config::Role::SuperNode,
        zone: cfg.discovery.zone.clone().unwrap_or_default(),
        bench: cfg.debug.test_hooks,
    })
}

/// `cfg` with this box's overlay tags added (unchanged without overlay).
pub fn with_tags(
    mut cfg: nuvol_config::DiscoveryConfig,
    p: Option<&Prepared>,
) -> nuvol_config::DiscoveryConfig {
    if let Some(p) = p {
        cfg.tags.extend(p.tags());
    }
    cfg
}

/// The network status with the overlay's under `overlay` (a status of its
/// own when the agent does not manage the network).
pub fn with_status(
    net: Option<serde_json::Value>,
    slot: Option<&StatusSlot>,
) -> Option<serde_json::Value> {
    let Some(ov) = slot.and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()) else {
        return net;
    };
    let mut v = net.unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("overlay".into(), ov);
    }
    Some(v)
}

fn load_or_create_key(path: &Path) -> Result<Key, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Key::from_base64(&s).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = Key::generate().map_err(|e| e.to_string())?;
            nuvol_durable::write_atomic(
                path,
                format!("{}\n", k.to_base64()).as_bytes(),
                nuvol_durable::Mode::Private,
            )
            .map_err(|e| e.to_string())?;
            Ok(k)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn problem(msg: &str) {
    tracing::error!("overlay: {msg}");
    eprintln!("nuvol: OVERLAY PROBLEM: {msg}; running without the overlay");
}

/// Shared view of the overlay for the rest of the agent (the `overlay`
/// object of `GET /api/v1/network`): interface, address, public_key,
/// peers (with endpoints, handshakes, relay, probed services), refused.
pub type StatusSlot = Arc<Mutex<Option<serde_json::Value>>>;

/// Bring the link up and keep the peers in step with gossip. Never fails:
/// problems are printed and retried.
pub fn spawn(p: Prepared, discovery: Arc<crate::discovery::Discovery>) -> StatusSlot {
    let slot: StatusSlot = Arc::new(Mutex::new(None));
    let out = slot.clone();
    tokio::spawn(async move {
        let d = loop {
            if let Some(d) = discovery.handle() {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let mut wg = loop {
            match up(&p) {
                Ok(wg) => break wg,
                Err(e) => {
                    problem(&e);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        };
        let line = format!(
            "nuvol: overlay: {} is {} and {} (key {})",
            p.cfg.interface,
            p.address,
            p.address4,
            p.public.to_base64()
        );
        tracing::info!("{line}");
        eprintln!("{line}");
        if p.bench {
            tokio::spawn(bench_source());
        }
        run(&p, &d, &mut wg, &slot).await;
    });
    out
}

fn up(p: &Prepared) -> Result<Wg, String> {
    let addrs = [
        (IpAddr::V6(p.address), 64),
        (IpAddr::V4(p.address4), nuvol_wg::V4_NET.1),
    ];
    nuvol_wg::genl::ensure_link(&p.cfg.interface, 1420, &addrs).map_err(|e| e.to_string())?;
    let mut wg = Wg::open().map_err(|e| e.to_string())?;
    wg.set_device(&p.cfg.interface, &p.key, p.cfg.port)
        .map_err(|e| e.to_string())?;
    if p.super_node && p.cfg.relay {
        // Forward between peers (IPv6 forwarding is global in Linux).
        for f in [
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "/proc/sys/net/ipv4/ip_forward",
        ] {
            if let Err(e) = std::fs::write(f, "1") {
                tracing::warn!("overlay: cannot enable forwarding for relaying ({f}): {e}");
            }
        }
    }
    Ok(wg)
}

async fn run(p: &Prepared, d: &nuvol_catalog::DiscoveryHandle, wg: &mut Wg, slot: &StatusSlot) {
    let mut events = d.events();
    let mut memory: HashMap<Key, PeerMemory> = HashMap::new();
    let mut seen: HashMap<[u8; SEEN_KEY_PREFIX], SocketAddr> = HashMap::new();
    let mut refused_logged: HashMap<String, Refused> = HashMap::new();
    let mut last_seen_sent = String::new();
    let mut last_seen_at = Instant::now() - Duration::from_secs(3600);
    let probes: Probes = Arc::new(Mutex::new(HashMap::new()));
    // Underlay addresses routed through the overlay (peers behind NAT).
    let mut routed: std::collections::BTreeSet<IpAddr> = Default::default();
    // Members that joined again since the last pass (their peers are reset).
    let mut rejoined: std::collections::BTreeSet<String> = Default::default();
    let mut last_probe = Instant::now() - PROBE_EVERY;
    loop {
        // Wait for a tick or a membership change.
        let wait = tokio::time::sleep(TICK);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                ev = events.recv() => match ev {
                    Ok(Event::User { name, payload, .. }) if name == SEEN_EVENT => {
                        read_seen(&payload, &mut seen);
                    }
                    Ok(Event::Query(q)) if q.name == BENCH_QUERY && p.bench => {
                        let d = d.clone();
                        tokio::spawn(async move {
                            let answer = match bench_args(&q.payload) {
                                Some((ip, mib)) => bench_from(ip, mib).await,
                                None => "error: want <ip> <MiB>".to_string(),
                            };
                            if let Err(e) = d.gossip().respond(&q, answer.as_bytes()) {
                                tracing::debug!("overlay: {BENCH_QUERY}: {e}");
                            }
                        });
                    }
                    Ok(Event::Join(m)) => {
                        // Back from failed (a reboot): its old session is
                        // gone on its side; ours would keep sending under it
                        // until our rekey timer (2 min). Start over now.
                        rejoined.insert(m.name);
                        break;
                    }
                    Ok(Event::Update(_) | Event::Leave(_)) => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
        let me = d.gossip().name().to_string();
        let mut admitted = Vec::new();
        let mut refused = Vec::new();
        for m in d.gossip().members() {
            if m.name == me || matches!(m.status, Status::Left) {
                continue;
            }
            match admit(&m, &p.secret, &p.prefix) {
                Ok(a) => admitted.push(a),
                Err(Refused::NotInOverlay) => {}
                Err(r) => {
                    if refused_logged.get(&m.name) != Some(&r) {
                        tracing::warn!(node = %m.name, "overlay: not admitted: {r:?}");
                        eprintln!("nuvol: overlay: {} not admitted: {r:?}", m.name);
                        refused_logged.insert(m.name.clone(), r.clone());
                    }
                    refused.push(serde_json::json!({"node": m.name, "why": format!("{r:?}")}));
                }
            }
        }
        // Budgets: what is remembered follows the current members.
        refused.truncate(MAX_PEERS);
        refused_logged.retain(|n, _| refused.iter().any(|r| r["node"] == n.as_str()));
        probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _), _| admitted.iter().any(|a| a.node == *n));
        // Two members with one key: the first by name wins.
        admitted.sort_by(|a, b| a.node.cmp(&b.node));
        admitted.dedup_by(|a, b| a.public == b.public);
        admitted.retain(|a| a.public != p.public);
        admitted.truncate(MAX_PEERS);
        let dev = match wg.device(&p.cfg.interface) {
            Ok(dev) => dev,
            Err(e) => {
                tracing::warn!("overlay: reading {}: {e}", p.cfg.interface);
                // The link may have been removed: bring it back.
                if let Ok(w) = up(p) {
                    *wg = w;
                }
                continue;
            }
        };
        let kernel: HashMap<Key, PeerState> =
            dev.peers.iter().map(|s| (s.public, s.clone())).collect();
        let now = Instant::now();
        for a in &admitted {
            if rejoined.contains(&a.node) && kernel.contains_key(&a.public) {
                tracing::info!(node = %a.node, "overlay: member rejoined; new WireGuard session");
                memory.remove(&a.public);
                if let Err(e) = wg.remove_peer(&p.cfg.interface, &a.public) {
                    tracing::warn!("overlay: resetting peer {}: {e}", a.node);
                }
            }
        }
        let kernel: HashMap<Key, PeerState> = kernel
            .into_iter()
            .filter(|(k, _)| {
                !admitted
                    .iter()
                    .any(|a| a.public == *k && rejoined.contains(&a.node))
            })
            .collect();
        rejoined.clear();
        let want = plan(p, &admitted, &kernel, &memory, &seen, now);
        for w in &want {
            if differs(w, kernel.get(&w.public)) {
                match wg.set_peer(&p.cfg.interface, w) {
                    Ok(()) => {
                        let m = memory.entry(w.public).or_default();
                        m.added.get_or_insert(now);
                        if kernel.contains_key(&w.public) && w.endpoint.is_some() {
                            m.tried_seen = w.endpoint;
                        }
                    }
                    Err(e) => tracing::warn!("overlay: peer {:?}: {e}", w.public),
                }
            }
        }
        for k in kernel.keys() {
            if !want.iter().any(|w| w.public == *k) {
                if let Err(e) = wg.remove_peer(&p.cfg.interface, k) {
                    tracing::warn!("overlay: removing peer {k:?}: {e}");
                }
                memory.remove(k);
            }
        }
        let want_routes: std::collections::BTreeSet<IpAddr> = want
            .iter()
            .flat_map(|w| w.allowed.iter().map(|(ip, _)| *ip))
            .filter(|ip| !is_overlay(p, ip))
            .collect();
        for ip in want_routes.difference(&routed.clone()) {
            match nuvol_wg::genl::host_route(&p.cfg.interface, *ip, true) {
                Ok(()) => {
                    tracing::info!("overlay: {ip} (behind NAT) reached through the overlay");
                    routed.insert(*ip);
                }
                Err(e) => tracing::warn!("overlay: route {ip}: {e}"),
            }
        }
        for ip in routed.clone().difference(&want_routes) {
            match nuvol_wg::genl::host_route(&p.cfg.interface, *ip, false) {
                Ok(()) => {
                    routed.remove(ip);
                }
                Err(e) => tracing::warn!("overlay: route {ip}: {e}"),
            }
        }
        // Super nodes tell what they observe, when it changed (or each
        // minute so that late joiners hear it).
        if p.super_node {
            let s = seen_payload(&admitted, &kernel);
            if !s.is_empty()
                && (s != last_seen_sent || last_seen_at.elapsed() > Duration::from_secs(60))
            {
                if let Err(e) = d.user_event(SEEN_EVENT, s.as_bytes(), true) {
                    tracing::debug!("overlay: {SEEN_EVENT}: {e}");
                }
                last_seen_sent = s;
                last_seen_at = Instant::now();
            }
        }
        if last_probe.elapsed() >= PROBE_EVERY {
            last_probe = Instant::now();
            probe_all(&admitted, &probes);
        }
        let probed = probes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let peers: Vec<serde_json::Value> = admitted
            .iter()
            .map(|a| {
                let k = kernel.get(&a.public);
                let via = want
                    .iter()
                    .find(|w| w.allowed.contains(&(IpAddr::V6(a.address), 128)))
                    .and_then(|w| admitted.iter().find(|x| x.public == w.public))
                    .map(|x| x.node.clone());
                serde_json::json!({
                    "node": a.node,
                    "address": a.address.to_string(),
                    "address4": a.address4.to_string(),
                    "zone": a.zone,
                    "super_node": a.super_node,
                    "claimed_endpoint": a.claimed.to_string(),
                    "endpoint": k.and_then(|k| k.endpoint).map(|e| e.to_string()),
                    "handshake_age_s": k.and_then(PeerState::handshake_age).map(|a| a.as_secs()),
                    "rx_bytes": k.map(|k| k.rx_bytes),
                    "tx_bytes": k.map(|k| k.tx_bytes),
                    "via": via,
                    "services": probed
                        .iter()
                        .filter(|((n, _), _)| *n == a.node)
                        .map(|(_, v)| v.clone())
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let status = serde_json::json!({
            "interface": p.cfg.interface,
            "address": p.address.to_string(),
            "address4": p.address4.to_string(),
            "public_key": p.public.to_base64(),
            "zone": p.zone,
            "super_node": p.super_node,
            "routed": routed.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
            "peers": peers,
            "refused": refused,
        });
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("nuvol-ov-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(KEY_FILE);
        let a = load_or_create_key(&p).unwrap();
        assert_eq!(load_or_create_key(&p).unwrap(), a);
        std::fs::write(&p, "not a key").unwrap();
        assert!(load_or_create_key(&p).unwrap_err().contains("44 base64"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
