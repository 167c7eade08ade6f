//! The engine: one task owning all state; one reader task per interface
//! feeding it packets through a bounded queue.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};

use crate::sys::{self, IfInfo, MDNS_PORT, MDNS_V4, MDNS_V6};
use crate::wire::{self, Message, Name, Question, RData, Record, CLASS_IN};
use crate::{Cmd, Discovered, MdnsError, MdnsEvent, MdnsService, Shared};

/// TTL of host and SRV records (RFC 6762 §10).
const TTL_HOST: u32 = 120;
/// TTL of PTR/TXT records.
const TTL_OTHER: u32 = 4500;
/// Most cached records (all interfaces).
pub const MAX_CACHE: usize = 4096;
/// Most published services.
const MAX_PUBLISHED: usize = 256;
/// Packets queued from the readers to the engine.
const PKT_QUEUE: usize = 256;
/// Longest wait between two browse queries of one type.
const MAX_BROWSE_INTERVAL: Duration = Duration::from_secs(900);
/// Payload we aim at per packet we send (Ethernet MTU minus IP/UDP).
const SEND_MTU: usize = 1460;
/// Longest TTL we believe: the DNS-SD PTR/TXT TTL (RFC 6762 §10). It also
/// bounds how long a flood of junk can keep a full cache full.
const MAX_TTL: u32 = 4500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `sent` probes so far, next one at `next`
    Probing {
        sent: u8,
    },
    /// `sent` announcements so far
    Announcing {
        sent: u8,
    },
    Announced,
}

struct Entity {
    /// the name asked for
    base: String,
    /// the name in use
    current: String,
    /// rename counter (2, 3, ...)
    n: u32,
    phase: Phase,
    next: Instant,
}

impl Entity {
    fn new(base: String, start: Instant) -> Entity {
        Entity {
            current: base.clone(),
            base,
            n: 1,
            phase: Phase::Probing { sent: 0 },
            next: start,
        }
    }
    fn live(&self) -> bool {
        !matches!(self.phase, Phase::Probing { .. })
    }
}

struct Svc {
    e: Entity,
    service_type: String,
    port: u16,
    txt: BTreeMap<String, String>,
}

struct Iface {
    info: IfInfo,
    /// 224.0.0.251 socket (None if it could not be opened)
    sock: Option<Arc<UdpSocket>>,
    /// ff02::fb socket (None without IPv6)
    sock6: Option<Arc<UdpSocket>>,
    /// one reader task per socket
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// the interface went away (its slot stays: cache keys use the index)
    gone: bool,
}

/// (interface slot, bytes, source, received IP TTL / hop limit)
type Packet = (usize, Vec<u8>, SocketAddr, Option<u8>);

/// Most interfaces served.
const MAX_IFACES: usize = 32;

struct CacheEntry {
    iface: usize,
    rec: Record,
    ttl: u32,
    inserted: Instant,
    expires: Instant,
    /// refresh queries sent (at 80% and 90% of the TTL)
    refreshes: u8,
    /// 255 − TTL of the packet that carried it last
    hops: Option<u8>,
}

struct Browse {
    next: Instant,
    interval: Duration,
}

pub(crate) struct Engine {
    ifaces: Vec<Iface>,
    /// configured interface names (`None` = every eligible one)
    filter: Option<Vec<String>>,
    ptx: mpsc::Sender<Packet>,
    prx: Option<mpsc::Receiver<Packet>>,
    host: Entity,
    services: Vec<Svc>,
    shared: Arc<Shared>,
    events: broadcast::Sender<MdnsEvent>,
    cache: HashMap<(usize, String, u16, Vec<u8>), CacheEntry>,
    /// browsed names: `_services._dns-sd._udp.local` and every type found
    browse: HashMap<String, (Name, Browse)>,
    /// resolve queries sent: name key -> (last sent, attempts)
    resolving: HashMap<String, (Instant, u8)>,
    known: BTreeMap<(usize, String), Discovered>,
    rng: u64,
    /// cache changed since the last scan
    dirty: bool,
    /// delayed multicast answers (shared records)
    pending: Vec<(Instant, usize, Message)>,
    /// next re-read of the interfaces' addresses
    next_addr_check: Instant,
    /// when each own record was last multicast in an answer, per interface
    last_mcast: HashMap<(usize, String, u16, Vec<u8>), Instant>,
    last_scan: Instant,
}

/// Cache scans (expiry, refresh, resolve, discovered set) at most this often
/// while packets arrive, and at least every second.
const SCAN_MIN: Duration = Duration::from_millis(100);
const SCAN_MAX: Duration = Duration::from_secs(1);
/// How often interface addresses are re-read (DHCP may change them).
const ADDR_CHECK: Duration = Duration::from_secs(10);
/// Most delayed answers waiting to be sent.
const MAX_PENDING: usize = 64;

fn services_name() -> Name {
    Name::parse("_services._dns-sd._udp.local")
}

fn local() -> Name {
    Name::parse("local")
}

fn type_name(t: &str) -> Name {
    Name::parse(&format!("{t}.local"))
}

fn rdata_bytes(r: &RData) -> Vec<u8> {
    // encode a one-record message and cut the record data out of it
    let m = Message {
        answers: vec![Record {
            name: Name::default(),
            rtype: 0,
            class: 0,
            cache_flush: false,
            ttl: 0,
            rdata: r.clone(),
        }],
        ..Message::default()
    };
    let b = wire::encode(&m);
    // header 12 + root name 1 + type/class/ttl 8 + rdlength 2
    b.get(23..).map(<[u8]>::to_vec).unwrap_or_default()
}

impl Engine {
    pub fn new(
        hostname: String,
        filter: Option<Vec<String>>,
        ifs: Vec<IfInfo>,
        shared: Arc<Shared>,
        events: broadcast::Sender<MdnsEvent>,
    ) -> Result<Engine, MdnsError> {
        let (ptx, prx) = mpsc::channel::<Packet>(PKT_QUEUE);
        let mut ifaces = Vec::new();
        for info in ifs.into_iter().take(MAX_IFACES) {
            let idx = ifaces.len();
            ifaces.push(open_iface(info, idx, &ptx, &shared)?);
        }
        let now = Instant::now();
        let mut rng = now.elapsed().as_nanos() as u64
            ^ (u64::from(std::process::id()) << 32)
            ^ 0x9E37_79B9_7F4A_7C15;
        for b in hostname.bytes() {
            rng = rng.wrapping_mul(31).wrapping_add(u64::from(b));
        }
        let mut e = Engine {
            ifaces,
            filter,
            ptx,
            prx: Some(prx),
            host: Entity::new(hostname.clone(), now),
            services: Vec::new(),
            shared,
            events,
            cache: HashMap::new(),
            browse: HashMap::new(),
            resolving: HashMap::new(),
            known: BTreeMap::new(),
            dirty: false,
            last_mcast: HashMap::new(),
            next_addr_check: now + ADDR_CHECK,
            pending: Vec::new(),
            last_scan: now,
            rng,
        };
        // RFC 6762 §8.1: wait 0-250 ms before the first probe
        e.host.next = now + e.jitter(250);
        *e.shared.hostname.lock().unwrap_or_else(|p| p.into_inner()) = hostname;
        let sn = services_name();
        let first = now + e.jitter(100);
        e.browse.insert(
            sn.key(),
            (
                sn,
                Browse {
                    next: first,
                    interval: Duration::from_secs(1),
                },
            ),
        );
        Ok(e)
    }

    fn jitter(&mut self, max_ms: u64) -> Duration {
        // xorshift; only for timing jitter
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Duration::from_millis(self.rng % max_ms.max(1))
    }

    pub async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let Some(mut prx) = self.prx.take() else {
            return;
        };
        let done = loop {
            let wake = self.next_wake();
            tokio::select! {
                p = prx.recv() => {
                    if let Some((idx, b, src, ttl)) = p {
                        self.on_packet(idx, &b, src, ttl).await;
                    }
                }
                c = cmds.recv() => match c {
                    Some(Cmd::Publish(s)) => self.publish(s).await,
                    Some(Cmd::Unpublish { instance, service_type }) => self.unpublish(&instance, &service_type).await,
                    Some(Cmd::Shutdown(tx)) => break Some(tx),
                    None => break None,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            self.tick().await;
        };
        self.goodbye_all().await;
        for i in &self.ifaces {
            i.stop();
        }
        if let Some(tx) = done {
            let _ = tx.send(());
        }
    }

    fn next_wake(&self) -> Instant {
        let mut w = Instant::now() + Duration::from_secs(1);
        let mut consider = |e: &Entity| {
            if e.phase != Phase::Announced {
                w = w.min(e.next);
            }
        };
        consider(&self.host);
        for s in &self.services {
            consider(&s.e);
        }
        for (_, b) in self.browse.values() {
            w = w.min(b.next);
        }
        for (at, _, _) in &self.pending {
            w = w.min(*at);
        }
        let scan = if self.dirty { SCAN_MIN } else { SCAN_MAX };
        w.min(self.last_scan + scan)
    }

    // ---------- own records ----------

    fn host_name(&self) -> Name {
        Name::from_labels([self.host.current.as_str(), "local"])
    }

    fn svc_name(s: &Svc) -> Name {
        Name::prepend(&s.e.current, &type_name(&s.service_type))
    }

    fn host_records(&self, iface: usize, ttl: Option<u32>) -> Vec<Record> {
        let name = self.host_name();
        let i = &self.ifaces[iface].info;
        let t = ttl.unwrap_or(TTL_HOST);
        let mut v: Vec<Record> =
            i.v4.iter()
                .map(|a| Record {
                    name: name.clone(),
                    rtype: wire::TYPE_A,
                    class: CLASS_IN,
                    cache_flush: true,
                    ttl: t,
                    rdata: RData::A(*a),
                })
                .collect();
        v.extend(i.v6.iter().map(|a| Record {
            name: name.clone(),
            rtype: wire::TYPE_AAAA,
            class: CLASS_IN,
            cache_flush: true,
            ttl: t,
            rdata: RData::Aaaa(*a),
        }));
        v
    }

    /// SRV and TXT (the unique records of a service).
    fn svc_unique(&self, s: &Svc, ttl: Option<u32>) -> Vec<Record> {
        let name = Self::svc_name(s);
        vec![
            Record {
                name: name.clone(),
                rtype: wire::TYPE_SRV,
                class: CLASS_IN,
                cache_flush: true,
                ttl: ttl.unwrap_or(TTL_HOST),
                rdata: RData::Srv {
                    priority: 0,
                    weight: 0,
                    port: s.port,
                    target: self.host_name(),
                },
            },
            Record {
                name,
                rtype: wire::TYPE_TXT,
                class: CLASS_IN,
                cache_flush: true,
                ttl: ttl.unwrap_or(TTL_OTHER),
                rdata: RData::Txt(wire::txt_strings(&s.txt)),
            },
        ]
    }

    /// PTR records of a service (type -> instance, enumeration -> type).
    fn svc_shared(&self, s: &Svc, ttl: Option<u32>) -> Vec<Record> {
        let t = type_name(&s.service_type);
        let ttl = ttl.unwrap_or(TTL_OTHER);
        vec![
            Record {
                name: t.clone(),
                rtype: wire::TYPE_PTR,
                class: CLASS_IN,
                cache_flush: false,
                ttl,
                rdata: RData::Ptr(Self::svc_name(s)),
            },
            Record {
                name: services_name(),
                rtype: wire::TYPE_PTR,
                class: CLASS_IN,
                cache_flush: false,
                ttl,
                rdata: RData::Ptr(t),
            },
        ]
    }

    /// Every record we answer with on `iface` (live names only).
    fn all_records(&self, iface: usize) -> Vec<Record> {
        let mut v = Vec::new();
        if !self.host.live() {
            return v;
        }
        v.extend(self.host_records(iface, None));
        for s in self.services.iter().filter(|s| s.e.live()) {
            v.extend(self.svc_shared(s, None));
            v.extend(self.svc_unique(s, None));
        }
        // one enumeration PTR per type
        let mut seen = Vec::new();
        v.retain(|r| {
            if r.name == services_name() {
                let k = rdata_bytes(&r.rdata);
                if seen.contains(&k) {
                    return false;
                }
                seen.push(k);
            }
            true
        });
        v
    }

    // ---------- sending ----------

    async fn send(&self, iface: usize, m: &Message, to: Option<SocketAddr>) {
        if self.ifaces[iface].gone {
            return;
        }
        let i = &self.ifaces[iface];
        // unicast: back over the family it came in on; multicast: on both
        // 224.0.0.251 and ff02::fb where the link has addresses of that family
        let mut dsts: Vec<(&Arc<UdpSocket>, SocketAddr)> = Vec::with_capacity(2);
        match to {
            Some(d @ SocketAddr::V4(_)) => dsts.extend(i.sock.as_ref().map(|s| (s, d))),
            Some(d @ SocketAddr::V6(_)) => dsts.extend(i.sock6.as_ref().map(|s| (s, d))),
            None => {
                if !i.info.v4.is_empty() {
                    dsts.extend(
                        i.sock
                            .as_ref()
                            .map(|s| (s, SocketAddr::V4(SocketAddrV4::new(MDNS_V4, MDNS_PORT)))),
                    );
                }
                if !i.info.v6.is_empty() {
                    dsts.extend(i.sock6.as_ref().map(|s| {
                        let a = SocketAddrV6::new(MDNS_V6, MDNS_PORT, 0, i.info.index);
                        (s, SocketAddr::V6(a))
                    }));
                }
            }
        }
        if dsts.is_empty() {
            return;
        }
        let parts = if m.is_response() {
            split(m)
        } else {
            split_query(m)
        };
        for b in parts {
            for (sock, dst) in &dsts {
                if sock.send_to(&b, *dst).await.is_ok() {
                    self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn send_all(&self, f: impl Fn(usize) -> Message) {
        for i in 0..self.ifaces.len() {
            let m = f(i);
            if !m.answers.is_empty() || !m.questions.is_empty() {
                self.send(i, &m, None).await;
            }
        }
    }

    // ---------- timers ----------

    async fn tick(&mut self) {
        let now = Instant::now();
        self.send_pending(now).await;
        if now >= self.next_addr_check {
            self.next_addr_check = now + ADDR_CHECK;
            self.check_addresses(now);
        }
        // host name
        if self.host.phase != Phase::Announced && self.host.next <= now {
            match self.host.phase {
                Phase::Probing { sent } if sent < 3 => {
                    let q = self.host_name();
                    self.send_all(|i| probe(&q, self.host_records(i, None)))
                        .await;
                    self.host.phase = Phase::Probing { sent: sent + 1 };
                    self.host.next = now + Duration::from_millis(250);
                }
                Phase::Probing { .. } => {
                    self.host.phase = Phase::Announcing { sent: 0 };
                    self.host.next = now;
                }
                Phase::Announcing { sent } if sent < 2 => {
                    self.send_all(|i| announce(self.host_records(i, None)))
                        .await;
                    self.host.phase = Phase::Announcing { sent: sent + 1 };
                    self.host.next = now + Duration::from_secs(1);
                }
                _ => self.host.phase = Phase::Announced,
            }
        }
        // services, once the host name is ours
        if self.host.live() {
            for k in 0..self.services.len() {
                let s = &self.services[k];
                if s.e.phase == Phase::Announced || s.e.next > now {
                    continue;
                }
                match s.e.phase {
                    Phase::Probing { sent } if sent < 3 => {
                        let q = Self::svc_name(s);
                        let recs = self.svc_unique(s, None);
                        self.send_all(|_| probe(&q, recs.clone())).await;
                        let s = &mut self.services[k];
                        s.e.phase = Phase::Probing { sent: sent + 1 };
                        s.e.next = now + Duration::from_millis(250);
                    }
                    Phase::Probing { .. } => {
                        let s = &mut self.services[k];
                        s.e.phase = Phase::Announcing { sent: 0 };
                        s.e.next = now;
                        self.publish_names();
                    }
                    Phase::Announcing { sent } if sent < 2 => {
                        let mut recs = self.svc_shared(s, None);
                        recs.extend(self.svc_unique(s, None));
                        self.send_all(|i| {
                            let mut m = announce(recs.clone());
                            m.additional = self.host_records(i, None);
                            m
                        })
                        .await;
                        let s = &mut self.services[k];
                        s.e.phase = Phase::Announcing { sent: sent + 1 };
                        s.e.next = now + Duration::from_secs(1);
                    }
                    _ => self.services[k].e.phase = Phase::Announced,
                }
            }
        }
        self.browse_queries(now).await;
        let scan = if self.dirty { SCAN_MIN } else { SCAN_MAX };
        if now.saturating_duration_since(self.last_scan) >= scan {
            self.last_scan = now;
            self.dirty = false;
            self.expire(now);
            self.cache_scan(now).await;
            self.refresh_discovered();
        }
    }

    /// Re-read addresses; on a change, announce the host records again
    /// (their cache-flush bit replaces the old addresses at the peers).
    fn check_addresses(&mut self, now: Instant) {
        let Ok(all) = sys::interfaces() else { return };
        let mut changed = false;
        for n in all
            .iter()
            .filter(|n| sys::eligible(n, self.filter.as_deref()))
        {
            match self.ifaces.iter().position(|i| i.info.name == n.name) {
                Some(k) if self.ifaces[k].gone || self.ifaces[k].info.index != n.index => {
                    // back (or re-created): a fresh socket in the same slot
                    if let Ok(i) = open_iface(n.clone(), k, &self.ptx, &self.shared) {
                        self.ifaces[k].stop();
                        self.ifaces[k] = i;
                        changed = true;
                    }
                }
                Some(k) => {
                    let i = &mut self.ifaces[k];
                    if n.v4 != i.info.v4 || n.v6 != i.info.v6 {
                        i.info.v4 = n.v4.clone();
                        i.info.v6 = n.v6.clone();
                        changed = true;
                    }
                }
                None if self.ifaces.len() < MAX_IFACES => {
                    let k = self.ifaces.len();
                    if let Ok(i) = open_iface(n.clone(), k, &self.ptx, &self.shared) {
                        self.ifaces.push(i);
                        changed = true;
                    }
                }
                None => {}
            }
        }
        for i in &mut self.ifaces {
            if !i.gone
                && !all
                    .iter()
                    .any(|n| n.name == i.info.name && sys::eligible(n, self.filter.as_deref()))
            {
                i.gone = true;
                i.stop();
            }
        }
        if changed {
            // announce everything again (new link, or new addresses whose
            // cache-flush bit replaces the old ones at the peers), and
            // browse afresh
            if self.host.phase == Phase::Announced {
                self.host.phase = Phase::Announcing { sent: 0 };
                self.host.next = now;
            }
            for s in &mut self.services {
                if s.e.phase == Phase::Announced {
                    s.e.phase = Phase::Announcing { sent: 0 };
                    s.e.next = now;
                }
            }
            for (_, b) in self.browse.values_mut() {
                b.next = now;
                b.interval = Duration::from_secs(1);
            }
        }
    }

    async fn browse_queries(&mut self, now: Instant) {
        // periodic browse queries with known answers
        let due: Vec<String> = self
            .browse
            .iter()
            .filter(|(_, (_, b))| b.next <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let Some((name, b)) = self.browse.get_mut(&k) else {
                continue;
            };
            b.next = now + b.interval;
            b.interval = (b.interval * 2).min(MAX_BROWSE_INTERVAL);
            let name = name.clone();
            for i in 0..self.ifaces.len() {
                let m = self.query(i, &[(name.clone(), wire::TYPE_PTR)], now);
                self.send(i, &m, None).await;
            }
        }
    }

    /// Refresh queries for ageing records, resolve queries for incomplete
    /// services.
    async fn cache_scan(&mut self, now: Instant) {
        // cache refresh at 80% and 90% of the TTL (RFC 6762 §5.2)
        let mut refresh: Vec<(usize, Name, u16)> = Vec::new();
        for e in self.cache.values_mut() {
            if e.ttl == 0 || e.expires <= now {
                continue;
            }
            let total = Duration::from_secs(u64::from(e.ttl));
            let elapsed = now.saturating_duration_since(e.inserted);
            let stage = if elapsed >= total * 9 / 10 {
                2
            } else if elapsed >= total * 8 / 10 {
                1
            } else {
                0
            };
            if stage > e.refreshes {
                e.refreshes = stage;
                if !refresh
                    .iter()
                    .any(|(i, n, t)| *i == e.iface && *n == e.rec.name && *t == e.rec.rtype)
                {
                    refresh.push((e.iface, e.rec.name.clone(), e.rec.rtype));
                }
            }
        }
        for (i, n, t) in refresh {
            let m = self.query(i, &[(n, t)], now);
            self.send(i, &m, None).await;
        }
        // resolve instances lacking SRV/TXT and hosts lacking addresses
        let present: std::collections::HashSet<(usize, String, u16)> = self
            .cache
            .values()
            .map(|e| (e.iface, e.rec.name.key(), e.rec.rtype))
            .collect();
        let has = |i: usize, n: &Name, t: u16| present.contains(&(i, n.key(), t));
        let mut want: Vec<(usize, Name, u16)> = Vec::new();
        for e in self.cache.values() {
            if let RData::Ptr(target) = &e.rec.rdata {
                if e.rec.name == services_name() || e.expires <= now {
                    continue;
                }
                if !has(e.iface, target, wire::TYPE_SRV) {
                    want.push((e.iface, target.clone(), wire::TYPE_SRV));
                }
                if !has(e.iface, target, wire::TYPE_TXT) {
                    want.push((e.iface, target.clone(), wire::TYPE_TXT));
                }
            }
            if let RData::Srv { target, .. } = &e.rec.rdata {
                if !has(e.iface, target, wire::TYPE_A) && !has(e.iface, target, wire::TYPE_AAAA) {
                    want.push((e.iface, target.clone(), wire::TYPE_A));
                }
            }
        }
        want.sort_by_key(|a| (a.0, a.1.key(), a.2));
        want.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
        for (i, n, t) in want {
            let key = format!("{i}/{}/{t}", n.key());
            if let Some((last, tries)) = self.resolving.get(&key) {
                if *tries >= 3 || now.saturating_duration_since(*last) < Duration::from_secs(1) {
                    continue;
                }
            }
            let tries = self.resolving.get(&key).map_or(0, |(_, t)| *t);
            self.resolving.insert(key, (now, tries + 1));
            let m = self.query(i, &[(n, t)], now);
            self.send(i, &m, None).await;
        }
        if self.resolving.len() > MAX_CACHE {
            self.resolving.clear();
        }
    }

    /// A query for `qs` with the cached answers still above half their TTL.
    fn query(&self, iface: usize, qs: &[(Name, u16)], now: Instant) -> Message {
        let mut m = Message::default();
        for (n, t) in qs {
            m.questions.push(Question {
                name: n.clone(),
                qtype: *t,
                qclass: CLASS_IN,
                unicast: false,
            });
            for e in self.cache.values() {
                if e.iface != iface || e.rec.rtype != *t || e.rec.name != *n {
                    continue;
                }
                let left = e.expires.saturating_duration_since(now).as_secs() as u32;
                if left > e.ttl / 2 {
                    m.answers.push(Record {
                        ttl: left,
                        ..e.rec.clone()
                    });
                }
            }
        }
        m
    }

    fn expire(&mut self, now: Instant) {
        self.cache.retain(|_, e| e.expires > now);
    }

    // ---------- commands ----------

    async fn publish(&mut self, s: MdnsService) {
        let now = Instant::now();
        if let Some(k) = self
            .services
            .iter()
            .position(|x| x.e.base == s.instance && x.service_type == s.service_type)
        {
            let x = &mut self.services[k];
            x.port = s.port;
            x.txt = s.txt;
            if x.e.live() {
                x.e.phase = Phase::Announcing { sent: 0 };
                x.e.next = now;
            }
        } else if self.services.len() < MAX_PUBLISHED {
            let mut e = Entity::new(s.instance, now);
            e.next = now + self.jitter(250);
            self.services.push(Svc {
                e,
                service_type: s.service_type,
                port: s.port,
                txt: s.txt,
            });
        }
        self.publish_names();
    }

    async fn unpublish(&mut self, instance: &str, service_type: &str) {
        let Some(k) = self
            .services
            .iter()
            .position(|x| x.e.base == instance && x.service_type == service_type)
        else {
            return;
        };
        let s = self.services.remove(k);
        if s.e.live() {
            let mut recs = self.svc_shared(&s, Some(0));
            recs.extend(self.svc_unique(&s, Some(0)));
            // the enumeration PTR stays while another service has the type
            if self
                .services
                .iter()
                .any(|o| o.service_type == s.service_type)
            {
                recs.retain(|r| r.name != services_name());
            }
            self.send_all(|_| announce(recs.clone())).await;
        }
        self.publish_names();
    }

    async fn goodbye_all(&mut self) {
        if !self.host.live() {
            return;
        }
        let mut m_by_iface = Vec::new();
        for i in 0..self.ifaces.len() {
            let mut recs: Vec<Record> = self.all_records(i);
            for r in &mut recs {
                r.ttl = 0;
            }
            m_by_iface.push(announce(recs));
        }
        for (i, m) in m_by_iface.iter().enumerate() {
            self.send(i, m, None).await;
        }
    }

    fn publish_names(&self) {
        let v = self
            .services
            .iter()
            .map(|s| MdnsService {
                instance: s.e.current.clone(),
                service_type: s.service_type.clone(),
                port: s.port,
                txt: s.txt.clone(),
            })
            .collect();
        *self
            .shared
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = v;
    }

    // ---------- receiving ----------

    async fn on_packet(&mut self, iface: usize, b: &[u8], src: SocketAddr, ttl: Option<u8>) {
        if sys::is_own(&self.ifaces[iface].info, src.ip()) {
            return;
        }
        let m = match wire::decode(b) {
            Ok(m) => m,
            Err(_) => {
                self.shared
                    .counters
                    .malformed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if m.is_response() {
            // RFC 6762 §11: responses must come from port 5353
            if src.port() != MDNS_PORT {
                return;
            }
            self.check_conflicts(
                &m.answers
                    .iter()
                    .chain(&m.additional)
                    .cloned()
                    .collect::<Vec<_>>(),
                false,
            );
            // RFC 6762 §11: sent with TTL / hop limit 255
            self.cache_records(iface, &m, ttl.map(|t| 255 - t));
        } else {
            if !m.authority.is_empty() {
                self.probe_tiebreak(iface, &m);
            }
            self.answer(iface, &m, src).await;
        }
    }

    /// Names we hold, with the records we would give for them.
    fn conflict_check_one(
        e: &Entity,
        name: &Name,
        ours: &[Record],
        theirs: &[Record],
        _probe: bool,
    ) -> bool {
        theirs.iter().any(|t| {
            t.name == *name
                && t.ttl > 0
                && (matches!(e.phase, Phase::Probing { .. }) || t.cache_flush)
                && !ours.iter().any(|o| o.same_data(t))
                // for A/AAAA: another host's address for our host name
                && (t.rtype != wire::TYPE_PTR)
        })
    }

    fn check_conflicts(&mut self, theirs: &[Record], probe: bool) {
        let now = Instant::now();
        let mut ours_host = Vec::new();
        for i in 0..self.ifaces.len() {
            ours_host.extend(self.host_records(i, None));
        }
        if Self::conflict_check_one(&self.host, &self.host_name(), &ours_host, theirs, probe) {
            self.shared
                .counters
                .conflicts
                .fetch_add(1, Ordering::Relaxed);
            self.host.n += 1;
            self.host.current = format!("{}-{}", self.host.base, self.host.n);
            self.host.phase = Phase::Probing { sent: 0 };
            self.host.next = now;
            *self
                .shared
                .hostname
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = self.host.current.clone();
            // services name the host in SRV: announce them again afterwards
            for s in &mut self.services {
                if s.e.live() {
                    s.e.phase = Phase::Announcing { sent: 0 };
                }
            }
        }
        let mut renamed = false;
        for k in 0..self.services.len() {
            let s = &self.services[k];
            let ours = self.svc_unique(s, None);
            if Self::conflict_check_one(&s.e, &Self::svc_name(s), &ours, theirs, probe) {
                self.shared
                    .counters
                    .conflicts
                    .fetch_add(1, Ordering::Relaxed);
                let s = &mut self.services[k];
                s.e.n += 1;
                s.e.current = format!("{} ({})", s.e.base, s.e.n);
                s.e.phase = Phase::Probing { sent: 0 };
                s.e.next = now;
                renamed = true;
            }
        }
        if renamed {
            self.publish_names();
        }
    }

    /// RFC 6762 §8.2: two hosts probing the same name; the one with the
    /// lexicographically later data wins, the loser waits 1 s and probes again.
    fn probe_tiebreak(&mut self, iface: usize, m: &Message) {
        let now = Instant::now();
        let cmp_key = |v: &[Record]| {
            let mut k: Vec<(u16, u16, Vec<u8>)> = v
                .iter()
                .map(|r| (r.class, r.rtype, rdata_bytes(&r.rdata)))
                .collect();
            k.sort();
            k
        };
        let host_name = self.host_name();
        if matches!(self.host.phase, Phase::Probing { .. }) {
            let theirs: Vec<Record> = m
                .authority
                .iter()
                .filter(|r| r.name == host_name)
                .cloned()
                .collect();
            if !theirs.is_empty() && cmp_key(&self.host_records(iface, None)) < cmp_key(&theirs) {
                self.host.phase = Phase::Probing { sent: 0 };
                self.host.next = now + Duration::from_secs(1);
            }
        }
        for k in 0..self.services.len() {
            let s = &self.services[k];
            if !matches!(s.e.phase, Phase::Probing { .. }) {
                continue;
            }
            let n = Self::svc_name(s);
            let theirs: Vec<Record> = m
                .authority
                .iter()
                .filter(|r| r.name == n)
                .cloned()
                .collect();
            if !theirs.is_empty() && cmp_key(&self.svc_unique(s, None)) < cmp_key(&theirs) {
                let s = &mut self.services[k];
                s.e.phase = Phase::Probing { sent: 0 };
                s.e.next = now + Duration::from_secs(1);
            }
        }
    }

    async fn answer(&mut self, iface: usize, q: &Message, src: SocketAddr) {
        let legacy = src.port() != MDNS_PORT;
        // more known answers of a truncated query (RFC 6762 §7.2): they
        // suppress answers still waiting to be sent on this interface
        if q.questions.is_empty() && !q.answers.is_empty() {
            for (_, i, m) in &mut self.pending {
                if *i == iface {
                    m.answers.retain(|a| {
                        !q.answers
                            .iter()
                            .any(|k| k.same_data(a) && k.ttl >= a.ttl / 2)
                    });
                }
            }
            self.pending.retain(|(_, _, m)| !m.answers.is_empty());
            return;
        }
        let own = self.all_records(iface);
        if own.is_empty() {
            return;
        }
        let mut answers: Vec<Record> = Vec::new();
        for question in &q.questions {
            for r in &own {
                if r.name == question.name
                    && (question.qtype == wire::TYPE_ANY || question.qtype == r.rtype)
                    && !answers.iter().any(|a| a.same_data(r))
                {
                    answers.push(r.clone());
                }
            }
        }
        // known-answer suppression (RFC 6762 §7.1)
        answers.retain(|a| {
            !q.answers
                .iter()
                .any(|k| k.same_data(a) && k.ttl >= a.ttl / 2)
        });
        // RFC 6762 §6: a record is multicast at most once a second per
        // interface (every 250 ms when defending against a probe)
        let now = Instant::now();
        if !legacy {
            let gap = if q.authority.is_empty() {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(250)
            };
            answers.retain(|a| {
                let k = (iface, a.name.key(), a.rtype, rdata_key(&a.rdata));
                self.last_mcast
                    .get(&k)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= gap)
            });
        }
        if answers.is_empty() {
            return;
        }
        if !legacy {
            if self.last_mcast.len() > 4 * MAX_PUBLISHED {
                self.last_mcast
                    .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(2));
            }
            for a in &answers {
                self.last_mcast
                    .insert((iface, a.name.key(), a.rtype, rdata_key(&a.rdata)), now);
            }
        }
        // additional records (RFC 6763 §12)
        let mut extra: Vec<Record> = Vec::new();
        let add = |r: &Record, answers: &[Record], extra: &mut Vec<Record>| {
            if !answers.iter().any(|a| a.same_data(r)) && !extra.iter().any(|a| a.same_data(r)) {
                extra.push(r.clone());
            }
        };
        for a in &answers {
            let target = match &a.rdata {
                RData::Ptr(t) if a.name != services_name() => Some(t.clone()),
                RData::Srv { .. } => Some(a.name.clone()),
                _ => None,
            };
            if let Some(t) = target {
                for r in own.iter().filter(|r| {
                    r.name == t && (r.rtype == wire::TYPE_SRV || r.rtype == wire::TYPE_TXT)
                }) {
                    add(r, &answers, &mut extra);
                }
                for r in own
                    .iter()
                    .filter(|r| r.rtype == wire::TYPE_A || r.rtype == wire::TYPE_AAAA)
                {
                    add(r, &answers, &mut extra);
                }
            }
        }
        let mut m = Message {
            id: 0,
            flags: 0x8400,
            answers,
            additional: extra,
            ..Message::default()
        };
        if legacy {
            // RFC 6762 §6.7: legacy unicast: echo id and question, no
            // cache-flush bit, TTL at most 10 s
            m.id = q.id;
            m.questions = q.questions.clone();
            for r in m.answers.iter_mut().chain(m.additional.iter_mut()) {
                r.cache_flush = false;
                r.ttl = r.ttl.min(10);
            }
            self.send(iface, &m, Some(src)).await;
        } else if m.answers.iter().all(|a| !a.cache_flush) && q.authority.is_empty() {
            // RFC 6762 §6: shared answers (PTR) wait 20-120 ms so that
            // several responders do not collide
            if self.pending.len() < MAX_PENDING {
                // a truncated query's known answers follow: wait 400-500 ms
                let at = if q.flags & FLAG_TC != 0 {
                    now + Duration::from_millis(400) + self.jitter(100)
                } else {
                    now + Duration::from_millis(20) + self.jitter(100)
                };
                self.pending.push((at, iface, m));
            } else {
                self.send(iface, &m, None).await;
            }
        } else {
            self.send(iface, &m, None).await;
        }
    }

    async fn send_pending(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.pending.retain(|(at, i, m)| {
            if *at <= now {
                due.push((*i, m.clone()));
                false
            } else {
                true
            }
        });
        for (i, m) in due {
            self.send(i, &m, None).await;
        }
    }

    fn cache_records(&mut self, iface: usize, m: &Message, hops: Option<u8>) {
        let now = Instant::now();
        for r in m.answers.iter().chain(&m.additional) {
            if r.class != CLASS_IN
                || !matches!(
                    r.rtype,
                    wire::TYPE_PTR
                        | wire::TYPE_SRV
                        | wire::TYPE_TXT
                        | wire::TYPE_A
                        | wire::TYPE_AAAA
                )
            {
                continue;
            }
            // only DNS-SD and .local names
            if !r.name.ends_with(&local()) {
                continue;
            }
            let ttl = r.ttl.min(MAX_TTL);
            if r.cache_flush && ttl > 0 {
                // RFC 6762 §10.2: older records of this name/type expire in 1 s
                for e in self.cache.values_mut() {
                    if e.iface == iface
                        && e.rec.rtype == r.rtype
                        && e.rec.name == r.name
                        && now.saturating_duration_since(e.inserted) > Duration::from_secs(1)
                        && !wire::rdata_eq(&e.rec.rdata, &r.rdata)
                    {
                        e.expires = e.expires.min(now + Duration::from_secs(1));
                    }
                }
            }
            let key = (iface, r.name.key(), r.rtype, rdata_key(&r.rdata));
            if ttl == 0 {
                // goodbye (RFC 6762 §10.1): gone in 1 s
                if let Some(e) = self.cache.get_mut(&key) {
                    e.expires = now + Duration::from_secs(1);
                    e.ttl = 0;
                    self.dirty = true;
                }
                continue;
            }
            if !self.cache.contains_key(&key) && self.cache.len() >= MAX_CACHE {
                self.shared
                    .counters
                    .cache_full
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // a service type seen in the enumeration is browsed too
            if r.rtype == wire::TYPE_PTR && r.name == services_name() {
                if let RData::Ptr(t) = &r.rdata {
                    if t.0.len() == 3
                        && self.browse.len() < 256
                        && !self.browse.contains_key(&t.key())
                    {
                        self.browse.insert(
                            t.key(),
                            (
                                t.clone(),
                                Browse {
                                    next: now,
                                    interval: Duration::from_secs(1),
                                },
                            ),
                        );
                    }
                }
            }
            self.dirty = true;
            self.cache.insert(
                key,
                CacheEntry {
                    iface,
                    rec: r.clone(),
                    ttl,
                    inserted: now,
                    expires: now + Duration::from_secs(u64::from(ttl)),
                    refreshes: 0,
                    hops,
                },
            );
        }
    }

    /// Rebuild the discovered set from the cache and emit the differences.
    fn refresh_discovered(&mut self) {
        let mut srv: HashMap<(usize, String), (&Record, Instant, Option<u8>)> = HashMap::new();
        let mut txt: HashMap<(usize, String), &Record> = HashMap::new();
        let mut addrs: HashMap<(usize, String), Vec<IpAddr>> = HashMap::new();
        for e in self.cache.values() {
            let k = (e.iface, e.rec.name.key());
            match &e.rec.rdata {
                RData::Srv { .. } if srv.get(&k).is_none_or(|(_, t, _)| e.inserted > *t) => {
                    srv.insert(k, (&e.rec, e.inserted, e.hops));
                }
                RData::Txt(_) => {
                    txt.insert(k, &e.rec);
                }
                RData::A(a) => addrs.entry(k).or_default().push(IpAddr::V4(*a)),
                RData::Aaaa(a) => addrs.entry(k).or_default().push(IpAddr::V6(*a)),
                _ => {}
            }
        }
        let mut now_set: BTreeMap<(usize, String), (Discovered, Instant)> = BTreeMap::new();
        for e in self.cache.values() {
            let RData::Ptr(inst) = &e.rec.rdata else {
                continue;
            };
            if e.rec.name == services_name()
                || e.rec.name.0.len() != 3
                || inst.parent() != e.rec.name
            {
                continue;
            }
            let k = (e.iface, inst.key());
            let Some((s, _, hops)) = srv.get(&k) else {
                continue;
            };
            let RData::Srv { port, target, .. } = &s.rdata else {
                continue;
            };
            let mut addresses = addrs
                .get(&(e.iface, target.key()))
                .cloned()
                .unwrap_or_default();
            addresses.sort();
            addresses.dedup();
            let txt = match txt.get(&k).map(|r| &r.rdata) {
                Some(RData::Txt(t)) => wire::txt_map(t),
                _ => BTreeMap::new(),
            };
            let d = Discovered {
                instance: inst.0.first().cloned().unwrap_or_default(),
                service_type: format!("{}.{}", e.rec.name.0[0], e.rec.name.0[1]),
                host: target.to_string().trim_end_matches('.').to_string(),
                addresses,
                port: *port,
                txt,
                interface: self.ifaces[e.iface].info.name.clone(),
                ttl_left: Duration::ZERO,
                hops: *hops,
            };
            now_set.insert(k, (d, e.expires));
        }
        let mut changed = false;
        for (k, (d, _)) in &now_set {
            match self.known.get(k) {
                None => {
                    let _ = self.events.send(MdnsEvent::Added(d.clone()));
                    changed = true;
                }
                Some(old) if old != d => {
                    let _ = self.events.send(MdnsEvent::Updated(d.clone()));
                    changed = true;
                }
                _ => {}
            }
        }
        for (k, d) in &self.known {
            if !now_set.contains_key(k) {
                let _ = self.events.send(MdnsEvent::Removed(d.clone()));
                changed = true;
            }
        }
        // the snapshot carries expiry instants; refresh it every time
        let snapshot: Vec<(Discovered, Instant)> = now_set.values().cloned().collect();
        *self
            .shared
            .discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = snapshot;
        if changed {
            self.known = now_set.into_iter().map(|(k, (d, _))| (k, d)).collect();
        }
    }
}

/// Open the socket of interface slot `idx` and start its reader.
fn open_iface(
    info: IfInfo,
    idx: usize,
    ptx: &mpsc::Sender<Packet>,
    shared: &Arc<Shared>,
) -> Result<Iface, MdnsError> {
    let err = |source| MdnsError::Socket {
        iface: info.name.clone(),
        source,
    };
    // IPv4 and IPv6 each where possible; at least one must open
    let v4 = sys::mdns_socket(&info).and_then(UdpSocket::from_std);
    let v6 = sys::mdns_socket_v6(&info).and_then(UdpSocket::from_std);
    let (sock, sock6) = match (v4, v6) {
        (Err(e), Err(_)) => return Err(err(e)),
        (a, b) => (a.ok().map(Arc::new), b.ok().map(Arc::new)),
    };
    let readers = sock
        .iter()
        .chain(sock6.iter())
        .map(|s| spawn_reader(s.clone(), idx, ptx.clone(), shared.clone()))
        .collect();
    Ok(Iface {
        info,
        sock,
        sock6,
        readers,
        gone: false,
    })
}

/// Read datagrams (with their TTL) from `sock` into the engine's queue.
fn spawn_reader(
    sock: Arc<UdpSocket>,
    idx: usize,
    tx: mpsc::Sender<Packet>,
    shared: Arc<Shared>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // one byte more than the limit, to see oversized datagrams
        let mut buf = vec![0u8; wire::MAX_MESSAGE + 1];
        loop {
            let r = sock
                .async_io(tokio::io::Interest::READABLE, || {
                    sys::recv_with_ttl(&sock, &mut buf)
                })
                .await;
            let Ok((n, src, ttl)) = r else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let n = n.min(buf.len());
            shared.counters.received.fetch_add(1, Ordering::Relaxed);
            if tx.try_send((idx, buf[..n].to_vec(), src, ttl)).is_err() {
                shared
                    .counters
                    .queue_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

impl Iface {
    fn stop(&self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// RDATA as a cache key: names lower-cased, everything else as on the wire.
fn rdata_key(r: &RData) -> Vec<u8> {
    match r {
        RData::Ptr(n) => n.key().into_bytes(),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            let mut v = [
                priority.to_be_bytes(),
                weight.to_be_bytes(),
                port.to_be_bytes(),
            ]
            .concat();
            v.extend_from_slice(target.key().as_bytes());
            v
        }
        _ => rdata_bytes(r),
    }
}

fn probe(name: &Name, proposed: Vec<Record>) -> Message {
    Message {
        questions: vec![Question {
            name: name.clone(),
            qtype: wire::TYPE_ANY,
            qclass: CLASS_IN,
            unicast: true,
        }],
        authority: proposed,
        ..Message::default()
    }
}

fn announce(recs: Vec<Record>) -> Message {
    Message {
        flags: 0x8400,
        answers: recs,
        ..Message::default()
    }
}

/// Split a message whose encoding exceeds [`SEND_MTU`] into several, by
/// halving its answer (or question) list; additional records go with
/// every part while they fit.
/// TC bit of the header.
const FLAG_TC: u16 = 0x0200;

/// Split a query whose known answers do not fit one packet the RFC 6762
/// §7.2 way: the questions and the first known answers in the first packet,
/// the rest in packets without questions, all but the last with TC set.
pub(crate) fn split_query(m: &Message) -> Vec<Vec<u8>> {
    let b = wire::encode(m);
    if b.len() <= SEND_MTU || m.answers.is_empty() {
        return vec![b];
    }
    let mut parts: Vec<Message> = Vec::new();
    let q_size: usize = 12
        + m.questions
            .iter()
            .map(|q| q.name.0.iter().map(|l| l.len() + 1).sum::<usize>() + 5)
            .sum::<usize>();
    let mut cur = Message {
        questions: m.questions.clone(),
        ..Message::default()
    };
    let mut size = q_size;
    for a in &m.answers {
        let n = wire::record_size_hint(a);
        if size + n > SEND_MTU && !cur.answers.is_empty() {
            parts.push(std::mem::take(&mut cur));
            size = 12;
        }
        size += n;
        cur.answers.push(a.clone());
    }
    parts.push(cur);
    let last = parts.len() - 1;
    parts
        .iter_mut()
        .enumerate()
        .map(|(k, p)| {
            if k != last {
                p.flags |= FLAG_TC;
            }
            wire::encode(p)
        })
        .filter(|b| b.len() <= wire::MAX_MESSAGE)
        .collect()
}

pub(crate) fn split(m: &Message) -> Vec<Vec<u8>> {
    let b = wire::encode(m);
    if b.len() <= SEND_MTU {
        return vec![b];
    }
    if !m.additional.is_empty() {
        return split(&Message {
            additional: Vec::new(),
            ..m.clone()
        });
    }
    if m.answers.len() > 1 && m.questions.len() <= 1 {
        let (a, c) = m.answers.split_at(m.answers.len() / 2);
        let mut out = split(&Message {
            answers: a.to_vec(),
            ..m.clone()
        });
        out.extend(split(&Message {
            answers: c.to_vec(),
            ..m.clone()
        }));
        return out;
    }
    if m.questions.len() > 1 {
        let (a, c) = m.questions.split_at(m.questions.len() / 2);
        let mut out = split(&Message {
            questions: a.to_vec(),
            answers: Vec::new(),
            ..m.clone()
        });
        out.extend(split(&Message {
            questions: c.to_vec(),
            answers: Vec::new(),
            ..m.clone()
        }));
        return out;
    }
    if b.len() <= wire::MAX_MESSAGE {
        vec![b]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_every_answer_under_mtu() {
        let recs: Vec<Record> = (0..200)
            .map(|i| Record {
                name: Name::parse("_http._tcp.local"),
                rtype: wire::TYPE_PTR,
                class: CLASS_IN,
                cache_flush: false,
                ttl: 10,
                rdata: RData::Ptr(Name::prepend(
                    &format!("service number {i}"),
                    &Name::parse("_http._tcp.local"),
                )),
            })
            .collect();
        let parts = split(&announce(recs));
        assert!(parts.len() > 1);
        let mut n = 0;
        for p in &parts {
            assert!(p.len() <= SEND_MTU);
            n += wire::decode(p).unwrap().answers.len();
        }
        assert_eq!(n, 200);
    }

    #[test]
    fn long_known_answer_lists_go_in_tc_packets() {
        let t = Name::parse("_http._tcp.local");
        let q = Message {
            questions: vec![Question {
                name: t.clone(),
                qtype: wire::TYPE_PTR,
                qclass: 1,
                unicast: false,
            }],
            answers: (0..200)
                .map(|i| Record {
                    name: t.clone(),
                    rtype: wire::TYPE_PTR,
                    class: CLASS_IN,
                    cache_flush: false,
                    ttl: 4000,
                    rdata: RData::Ptr(Name::prepend(&format!("known instance {i}"), &t)),
                })
                .collect(),
            ..Message::default()
        };
        let parts: Vec<Message> = split_query(&q)
            .iter()
            .map(|b| {
                assert!(b.len() <= SEND_MTU);
                wire::decode(b).unwrap()
            })
            .collect();
        assert!(parts.len() > 1);
        assert_eq!(parts[0].questions.len(), 1);
        assert!(parts[1..].iter().all(|p| p.questions.is_empty()));
        let last = parts.len() - 1;
        for (k, p) in parts.iter().enumerate() {
            assert_eq!(p.flags & FLAG_TC != 0, k != last);
        }
        assert_eq!(parts.iter().map(|p| p.answers.len()).sum::<usize>(), 200);
    }

    #[test]
    fn rdata_bytes_is_the_wire_rdata() {
        assert_eq!(
            rdata_bytes(&RData::A([10, 0, 0, 1].into())),
            vec![10, 0, 0, 1]
        );
        assert_eq!(
            rdata_bytes(&RData::Txt(vec![b"a=1".to_vec()])),
            b"\x03a=1".to_vec()
        );
    }
}
