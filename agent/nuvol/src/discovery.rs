//! The agent's side of discovery: start Serf-compatible gossip and mDNS
//! from `[discovery]`, announce the services of installed bundles while
//! they run (the rules are in [`crate::announce`]), answer the
//! `nuvol-services` query, retry the seeds, leave gracefully on stop.
//!
//! Nothing here is fatal: a problem is logged and printed on the console and
//! the box runs without discovery.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nuvol_bundle::Store;
use nuvol_catalog::discovery::service_tags;
use nuvol_catalog::{DiscoveryConfig as Start, DiscoveryHandle, LocalService};
use nuvol_config::{DiscoveryConfig, GossipProfile};
use nuvol_gossip::{Event, Profile};

use crate::services::ServicesHandle;

/// Name of the query nuvol answers with its services as JSON
/// (`serf query nuvol-services`).
pub const SERVICES_QUERY: &str = "nuvol-services";
/// The gossip keyring kept by `serf keys` rotations, in the state dir.
pub const KEYRING_FILE: &str = "gossip-keyring.json";
/// Longest wait between two attempts to join the seeds.
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often seeds that are not members are tried again after the join.
pub const SEED_RECHECK: Duration = Duration::from_secs(30);
/// How long to wait for an address to announce when bound to 0.0.0.0.
const ADDRESS_WAIT: Duration = Duration::from_secs(60);

/// The agent's discovery: the handle once gossip runs, and what the
/// announcer needs.
pub struct Discovery {
    slot: OnceLock<DiscoveryHandle>,
    pub(crate) hostname: String,
    pub(crate) store: Option<Arc<Store>>,
    /// The running services, whose state decides what is announced.
    pub(crate) services: Option<ServicesHandle>,
    /// The panel port when `[bundles] share` is on (announced as
    /// `svc:nuvol.bundles`).
    pub(crate) share_port: Option<u16>,
    /// The OS update artefact this box offers, when it has one (the share
    /// is announced for it too).
    pub(crate) os_offer: Option<PathBuf>,
    /// The mDNS responder/browser while it runs (taken on leave for goodbyes).
    mdns: Mutex<Option<Arc<nuvol_mdns::Mdns>>>,
    /// Wakes the announcer (bundles changed, gossip started, leaving).
    poke: tokio::sync::Notify,
    leaving: AtomicBool,
    /// What the announcer wants announced over gossip now (gossip starts
    /// with it).
    wanted: Mutex<Vec<LocalService>>,
    /// What gossip announces (set at start and by the announcer).
    gossip_applied: Mutex<Option<Vec<LocalService>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Discovery {
    /// The running discovery, if it started.
    pub fn handle(&self) -> Option<DiscoveryHandle> {
        self.slot.get().cloned()
    }

    /// Re-read the bundle store and re-announce at once (after an install,
    /// upgrade, rollback or removal).
    pub fn bundles_changed(&self) {
        self.poke.notify_one();
    }

    pub(crate) async fn poked(&self) {
        self.poke.notified().await
    }

    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    pub(crate) fn mdns(&self) -> Option<Arc<nuvol_mdns::Mdns>> {
        lock(&self.mdns).clone()
    }

    pub(crate) fn set_wanted(&self, services: &[LocalService]) {
        *lock(&self.wanted) = services.to_vec();
    }

    /// Whether gossip already announces exactly `services`.
    pub(crate) fn gossip_has(&self, services: &[LocalService]) -> bool {
        lock(&self.gossip_applied).as_deref() == Some(services)
    }

    /// Announce `services` over gossip (tags cut to Serf's 512 bytes).
    pub(crate) fn announce_gossip(&self, services: &[LocalService]) {
        let Some(d) = self.slot.get() else {
            return;
        };
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        tracing::info!(
            "discovery: announcing {} services: {}",
            services.len(),
            names.join(", ")
        );
        if let Err(e) = set(d, services, &self.hostname) {
            tracing::warn!("discovery: announcing services: {e}");
        }
        *lock(&self.gossip_applied) = Some(services.to_vec());
    }

    /// Leave the cluster gracefully and send mDNS goodbyes (bounded: the
    /// agent must stop promptly). Nothing is announced after this.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.poke.notify_one();
        let mdns = lock(&self.mdns).take();
        if let Some(m) = mdns.and_then(|m| Arc::try_unwrap(m).ok()) {
            let _ = tokio::time::timeout(Duration::from_secs(2), m.shutdown()).await;
            tracing::info!("discovery: mDNS goodbyes sent");
        }
        if let Some(d) = self.slot.get() {
            if tokio::time::timeout(Duration::from_secs(5), d.leave())
                .await
                .is_err()
            {
                d.shutdown();
            }
            tracing::info!("discovery: left the cluster");
        }
    }
}

/// The longest prefix of `services` whose tags fit Serf's 512 bytes.
fn fit(
    base: &BTreeMap<String, String>,
    zone: &str,
    hostname: &str,
    ip: &str,
    services: &[LocalService],
    cloudy: bool,
) -> Vec<LocalService> {
    let mut n = services.len();
    while n > 0 {
        let tags = service_tags(base, zone, hostname, ip, &services[..n], cloudy);
        if nuvol_gossip::serf::encode_tags(&tags).len() <= nuvol_gossip::wire::META_MAX {
            break;
        }
        n -= 1;
    }
    if n < services.len() {
        tracing::warn!(
            "discovery: only {n} of {} services fit Serf's 512-byte tags",
            services.len()
        );
    }
    services[..n].to_vec()
}

fn set(
    d: &DiscoveryHandle,
    services: &[LocalService],
    hostname: &str,
) -> Result<(), nuvol_gossip::GossipError> {
    let g = d.gossip();
    let me = g.members().into_iter().find(|m| m.name == g.name());
    let base: BTreeMap<String, String> = me
        .map(|m| {
            m.tags
                .into_iter()
                .filter(|(k, _)| !k.starts_with(nuvol_catalog::SVC_PREFIX) && k != "services")
                .collect()
        })
        .unwrap_or_default();
    let want = fit(
        &base,
        "",
        hostname,
        &g.advertise().ip().to_string(),
        services,
        true,
    );
    d.set_services(&want)
}

/// The address to announce when bound to 0.0.0.0: the source address
/// towards the first seed, else the first private (then any global) IPv4.
fn pick_address(seeds: &[SocketAddr]) -> Option<IpAddr> {
    for s in seeds {
        let any: SocketAddr = if s.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        if let Ok(u) = std::net::UdpSocket::bind(any) {
            if u.connect(s).is_ok() {
                if let Ok(a) = u.local_addr() {
                    if !a.ip().is_unspecified() {
                        return Some(a.ip());
                    }
                }
            }
        }
    }
    let v4: Vec<std::net::Ipv4Addr> = nuvol_status::interfaces()
        .into_iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| i.addresses)
        .filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
        .filter(|a: &std::net::Ipv4Addr| !a.is_loopback() && !a.is_link_local())
        .collect();
    v4.iter()
        .find(|a| a.is_private())
        .or(v4.first())
        .map(|a| IpAddr::V4(*a))
}

/// Start discovery in the background; the handle lands in the returned
/// [`Discovery`] once gossip runs. Never fails: problems are logged and
/// printed.
pub fn spawn(
    cfg: DiscoveryConfig,
    hostname: String,
    node_id: String,
    store: Option<Arc<Store>>,
    share: Option<(u16, PathBuf)>,
    services: Option<ServicesHandle>,
    keyring_file: Option<PathBuf>,
) -> Arc<Discovery> {
    let (share_port, os_offer) = share.map_or((None, None), |(p, f)| (Some(p), Some(f)));
    let disc = Arc::new(Discovery {
        slot: OnceLock::new(),
        hostname: hostname.clone(),
        store,
        services,
        share_port,
        os_offer,
        mdns: Mutex::new(None),
        poke: tokio::sync::Notify::new(),
        leaving: AtomicBool::new(false),
        wanted: Mutex::new(Vec::new()),
        gossip_applied: Mutex::new(None),
    });
    if !cfg.enabled {
        tracing::info!("discovery: off ([discovery] enabled = false)");
        return disc;
    }
    tokio::spawn(crate::announce::run(disc.clone()));
    let s = disc.clone();
    let run = async move {
        if cfg.mdns {
            start_mdns(&s, &hostname);
        }
        let services = lock(&s.wanted).clone();
        if let Some((d, announced)) = start(&cfg, &hostname, &node_id, services, keyring_file).await
        {
            *lock(&s.gossip_applied) = Some(announced);
            let _ = s.slot.set(d.clone());
            // Anything that changed while gossip was starting goes out now.
            s.poke.notify_one();
            background(d, cfg).await;
        }
        // Gossip is off or failed to start: mDNS (if on) still runs here.
        std::future::pending::<()>().await;
    };
    if let Err(e) = on_own_thread(run) {
        problem(&format!("discovery thread: {e}"));
    }
    disc
}

/// Stack of the discovery thread (gossip and mDNS: packet decoding,
/// bzip2 of Cloudy tags; the futures themselves live on the heap). Only
/// the pages touched count in RSS; debug builds need far more than release.
pub const DISCOVERY_STACK: usize = 1024 * 1024;

/// Run `fut` on a thread of its own with its own current-thread runtime,
/// at nice -5 ([`nuvol_api::bulk::DISCOVERY_NICE`]): gossip's acks and
/// probes and mDNS answers never wait behind HTTP, uploads or logs on the
/// agent's main runtime, nor behind them for a core. Everything gossip and
/// mDNS spawn runs there; their handles are used from the main runtime
/// (tokio's sockets, channels and timers work across runtimes).
fn on_own_thread(
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("nuvol-discovery".into())
        .stack_size(DISCOVERY_STACK)
        // On the heap: gossip's futures are large, debug builds' more so.
        .spawn(move || {
            // Ahead of the API, bulk work and services for the CPU (it
            // forks nothing, so no service inherits it).
            if !nuvol_api::bulk::set_this_thread(nuvol_api::bulk::DISCOVERY_NICE) {
                tracing::debug!("discovery thread: niceness unchanged (no CAP_SYS_NICE)");
            }
            rt.block_on(Box::pin(fut))
        })
        .map(|_| ())
}

/// Start the mDNS responder/browser: the announcer publishes this box's
/// services on every LAN; this merges what others publish into the catalog
/// (source `mdns`), on every change and every 10 s (expiry).
fn start_mdns(disc: &Arc<Discovery>, hostname: &str) {
    let cfg = nuvol_mdns::MdnsConfig {
        hostname: hostname.to_string(),
        interfaces: None,
    };
    let m = match nuvol_mdns::Mdns::start(cfg) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            problem(&format!("mDNS: {e}"));
            return;
        }
    };
    let mut events = m.events();
    let weak = Arc::downgrade(&m);
    *disc.mdns.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
    let disc = Arc::downgrade(disc);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                ev = events.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = ev {
                    return;
                },
            }
            let (Some(m), Some(disc)) = (weak.upgrade(), disc.upgrade()) else {
                return;
            };
            if let Some(d) = disc.slot.get() {
                let found = m.services().iter().map(nuvol_mdns::to_catalog).collect();
                d.set_external_services("mdns", found);
            }
        }
    });
}

/// Start gossip with the configured seeds and `services`; returns the
/// handle and the services it announces (those that fit the tags).
pub async fn start(
    cfg: &DiscoveryConfig,
    hostname: &str,
    node_id: &str,
    services: Vec<LocalService>,
    keyring_file: Option<PathBuf>,
) -> Option<(DiscoveryHandle, Vec<LocalService>)> {
    let node_name = cfg.node_name_for(hostname, node_id);
    let seeds = cfg.join_addrs();
    let mut advertise = cfg.advertise.map(|ip| SocketAddr::new(ip, cfg.port));
    if advertise.is_none() && cfg.bind.is_unspecified() {
        let t0 = tokio::time::Instant::now();
        loop {
            if let Some(ip) = pick_address(&seeds) {
                advertise = Some(SocketAddr::new(ip, cfg.port));
                break;
            }
            if t0.elapsed() > ADDRESS_WAIT {
                problem("no address to announce (set [discovery] advertise)");
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut tags = cfg.tags.clone();
    tags.insert(
        nuvol_catalog::ROLE_TAG.to_string(),
        cfg.role.as_str().to_string(),
    );
    let zone = cfg.zone.clone().unwrap_or_default();
    let ip = advertise.map(|a| a.ip()).unwrap_or(cfg.bind).to_string();
    let fitting = fit(&tags, &zone, hostname, &ip, &services, cfg.cloudy_compat);
    let start = Start {
        node_name: node_name.clone(),
        hostname: hostname.to_string(),
        bind: cfg.bind_addr(),
        advertise,
        join: Vec::new(), // joined below, with retries
        tags,
        zone,
        encrypt_key: cfg.key_bytes(),
        keyring_file,
        profile: match cfg.profile {
            GossipProfile::Lan => Profile::Lan,
            GossipProfile::Wan => Profile::Wan,
        },
        services: fitting,
        cloudy_compat: cfg.cloudy_compat,
    };
    match DiscoveryHandle::start(start).await {
        Ok(d) => {
            let line = format!(
                "nuvol: discovery: gossip as {node_name} on {} ({} seeds)",
                d.gossip().advertise(),
                seeds.len()
            );
            tracing::info!("{line}");
            eprintln!("{line}");
            Some((d, services))
        }
        Err(e) => {
            problem(&format!("cannot start gossip on {}: {e}", cfg.bind_addr()));
            None
        }
    }
}

fn problem(msg: &str) {
    tracing::error!("discovery: {msg}");
    eprintln!("nuvol: DISCOVERY PROBLEM: {msg}; running without discovery");
}

/// Seeds with backoff, the services query, membership log lines.
async fn background(d: DiscoveryHandle, cfg: DiscoveryConfig) {
    let seeds = cfg.join_addrs();
    if !seeds.is_empty() {
        let d = d.clone();
        tokio::spawn(async move {
            join_with_backoff(&d, &seeds).await;
            rejoin_missing_seeds(&d, &seeds).await;
        });
    }
    let mut events = d.events();
    loop {
        match events.recv().await {
            Ok(Event::Query(q)) if q.name == SERVICES_QUERY => {
                let mine = own_services(&d);
                if let Err(e) = d.gossip().respond(&q, mine.as_bytes()) {
                    tracing::debug!("discovery: answering {}: {e}", q.name);
                }
            }
            Ok(Event::Join(m)) => tracing::info!(node = %m.name, addr = %m.addr, "discovery: join"),
            Ok(Event::Leave(m)) => tracing::info!(node = %m.name, "discovery: left"),
            Ok(Event::Failed(m)) => tracing::warn!(node = %m.name, "discovery: failed"),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Our announced services as the `nuvol-services` answer:
/// `[{"name","type","port"}]`, the bundle share last, trimmed from the end
/// to fit a Serf response.
fn own_services(d: &DiscoveryHandle) -> String {
    let g = d.gossip();
    let me = g.members().into_iter().find(|m| m.name == g.name());
    let mut list: Vec<serde_json::Value> = Vec::new();
    if let Some(m) = me {
        for (k, v) in &m.tags {
            if let Some(name) = k.strip_prefix(nuvol_catalog::SVC_PREFIX) {
                if let Some((ty, port)) = v.rsplit_once(':') {
                    list.push(serde_json::json!({"name": name, "type": ty, "port": port.parse::<u16>().unwrap_or(0)}));
                }
            }
        }
    }
    // The bundle share last, like in the tags: trimmed before any service.
    list.sort_by_key(|v| v["name"] == nuvol_api::share::SERVICE_NAME);
    loop {
        let s = serde_json::Value::Array(list.clone()).to_string();
        if s.len() <= 900 || list.is_empty() {
            return s;
        }
        list.pop();
    }
}

/// Try the seeds until one answers: 1 s, 2 s, 4 s ... up to a minute.
async fn join_with_backoff(d: &DiscoveryHandle, seeds: &[SocketAddr]) {
    let mut wait = Duration::from_secs(1);
    loop {
        match d.gossip().join(seeds).await {
            Ok(n) => {
                tracing::info!("discovery: joined through {n} of {} seeds", seeds.len());
                return;
            }
            Err(e) => tracing::info!("discovery: {e}; retrying in {wait:?}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(JOIN_BACKOFF_MAX);
    }
}

/// Seeds that are not alive members are tried again every [`SEED_RECHECK`]:
/// two halves of a community that formed apart (a NATed zone whose super
/// node came up before the other zone's, so each joined only itself) find
/// each other without a restart, as do boxes cut off by a long outage.
async fn rejoin_missing_seeds(d: &DiscoveryHandle, seeds: &[SocketAddr]) {
    loop {
        tokio::time::sleep(SEED_RECHECK).await;
        let missing = missing_seeds(&d.gossip().members(), d.gossip().name(), seeds);
        if missing.is_empty() {
            continue;
        }
        match d.gossip().join(&missing).await {
            Ok(n) => tracing::info!("discovery: rejoined {n} seeds that were not members"),
            Err(e) => tracing::debug!("discovery: seeds still away: {e}"),
        }
    }
}

/// The seeds that are neither ourselves nor an alive member.
fn missing_seeds(
    members: &[nuvol_gossip::Member],
    me: &str,
    seeds: &[SocketAddr],
) -> Vec<SocketAddr> {
    let present: Vec<SocketAddr> = members
        .iter()
        .filter(|m| m.name == me || m.status == nuvol_gossip::Status::Alive)
        .map(|m| m.addr)
        .collect();
    seeds
        .iter()
        .filter(|s| !present.contains(s))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, port: u16) -> LocalService {
        LocalService {
            name: name.into(),
            service_type: "_http._tcp".into(),
            port,
            description: format!("{name} on box"),
        }
    }

    #[test]
    fn seeds_that_are_not_alive_members_are_tried_again() {
        let m = |name: &str, addr: &str, status| nuvol_gossip::Member {
            name: name.into(),
            addr: addr.parse().expect("addr"),
            tags: BTreeMap::new(),
            status,
            health: nuvol_gossip::Health::Alive,
            hops: None,
            loss: None,
            rtt: None,
            rtt_estimate: None,
            coordinate: None,
            vsn: [0; 6],
        };
        let seeds: Vec<SocketAddr> = ["10.0.1.11:7946", "10.0.2.13:7946", "10.0.2.14:7946"]
            .iter()
            .map(|s| s.parse().expect("seed"))
            .collect();
        // box3 is us, box4 our zone's member; box1 (the other zone) is missing.
        let members = vec![
            m("box3", "10.0.2.13:7946", nuvol_gossip::Status::Alive),
            m("box4", "10.0.2.14:7946", nuvol_gossip::Status::Alive),
        ];
        assert_eq!(missing_seeds(&members, "box3", &seeds), vec![seeds[0]]);
        // A failed member is tried again; once every seed is alive, nothing.
        let mut all = members.clone();
        all.push(m("box1", "10.0.1.11:7946", nuvol_gossip::Status::Failed));
        assert_eq!(missing_seeds(&all, "box3", &seeds), vec![seeds[0]]);
        all[2].status = nuvol_gossip::Status::Alive;
        assert!(missing_seeds(&all, "box3", &seeds).is_empty());
    }

    #[test]
    fn fit_drops_services_past_serf_limit() {
        let many: Vec<LocalService> = (0..60)
            .map(|i| svc(&format!("service{i}"), 8000 + i))
            .collect();
        let base = BTreeMap::new();
        let kept = fit(&base, "z", "box", "10.0.0.1", &many, true);
        assert!(
            !kept.is_empty() && kept.len() < many.len(),
            "{}",
            kept.len()
        );
        let tags = service_tags(&base, "z", "box", "10.0.0.1", &kept, true);
        assert!(nuvol_gossip::serf::encode_tags(&tags).len() <= nuvol_gossip::wire::META_MAX);
        let few = vec![svc("web", 8080)];
        assert_eq!(fit(&base, "z", "box", "10.0.0.1", &few, true), few);
    }

    #[test]
    fn cloudy_tag_keeps_what_fits_and_reads_back() {
        // descriptions bzip2 cannot shrink much: 60 pseudo-random letters
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut word = || {
            (0..60)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect::<String>()
        };
        let six: Vec<LocalService> = (0..6)
            .map(|i| LocalService {
                description: word(),
                ..svc(&format!("s{i}"), 8000 + i)
            })
            .collect();
        let base = BTreeMap::new();
        let kept = fit(&base, "", "box", "10.0.0.1", &six, true);
        assert_eq!(kept, six, "six short svc: tags fit");
        let tags = service_tags(&base, "", "box", "10.0.0.1", &kept, true);
        assert!(nuvol_gossip::serf::encode_tags(&tags).len() <= nuvol_gossip::wire::META_MAX);
        let list = nuvol_catalog::cloudy::decode(&tags["services"]).expect("cloudy tag");
        assert!(!list.is_empty() && list.len() < 6, "{}", list.len());
        // a prefix: services are dropped from the end
        assert_eq!(list[0].description, six[0].description);
        assert_eq!(list[0].service_type, "http");
        assert_eq!(list[0].host, "box.guifi.local");
        assert_eq!((list[0].port, list[0].microcloud.as_str()), (8000, "demo"));
        let one = service_tags(&base, "", "box", "10.0.0.1", &[svc("web", 80)], true);
        let list = nuvol_catalog::cloudy::decode(&one["services"]).expect("one");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].description, "web_on_box");
    }

    #[test]
    fn bundle_share_is_dropped_before_any_service() {
        let share = LocalService {
            name: nuvol_api::share::SERVICE_NAME.into(),
            service_type: nuvol_api::share::SERVICE_TYPE.into(),
            port: 80,
            description: "bundles on box".into(),
        };
        let base = BTreeMap::new();
        // Fill the budget: as many services as fit, then the share last.
        let mut n = 1;
        loop {
            let v: Vec<LocalService> = (0..n).map(|i| svc(&format!("s{i}"), 8000)).collect();
            if fit(&base, "z", "box", "10.0.0.1", &v, false).len() < n {
                break;
            }
            n += 1;
        }
        let mut v: Vec<LocalService> = (0..n - 1).map(|i| svc(&format!("s{i}"), 8000)).collect();
        v.push(share.clone());
        let kept = fit(&base, "z", "box", "10.0.0.1", &v, false);
        assert_eq!(kept.len(), n - 1, "the share goes first");
        assert!(!kept.contains(&share));
        // With room, it is announced.
        let few = vec![svc("web", 8080), share.clone()];
        assert_eq!(fit(&base, "z", "box", "10.0.0.1", &few, false), few);
        let tags = service_tags(&base, "", "box", "10.0.0.1", &few, false);
        assert_eq!(tags["svc:nuvol.bundles"], "_nuvol-bundles._tcp:80");
    }

    #[test]
    fn address_towards_a_seed() {
        let ip = pick_address(&["127.0.0.9:7946".parse().unwrap()]);
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
    }
}
