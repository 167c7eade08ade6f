//! The running node: memberlist's SWIM state machine with Serf's member,
//! intent, event and query layer on top, on tokio tasks.

use crate::config::Config;
use crate::coordinate::{Client as Vivaldi, Coordinate};
use crate::serf::{self, Intent};
use crate::wire::{self, ty, Accusation, Framing, Keyring, NodeState};
use rand::seq::IndexedRandom;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, watch};

mod admission;
mod broadcasts;
mod events;
mod keys;
mod members;
mod probe;
mod pushpull;
mod query;
mod stats;
mod stream;
mod transport;

use admission::Introductions;
use broadcasts::Bcast;
use events::EventBuffer;
pub use keys::{apply_key_query, keyring_file_text, parse_keyring_file};
use members::{est_num_nodes, NodeRec};
use probe::Pending;
pub use pushpull::parse_push_pull;
use query::OutQuery;
pub use stats::{Dropped, Stats, StatsSnapshot};
pub use stream::read_stream_message;
use stream::Streams;
use transport::{enable_recv_ttl, recv_with_ttl, user_msg};

/// Versions we announce: memberlist protocol 1..=5 speaking 2, Serf
/// delegate protocol 2..=5 speaking 4 (what Serf 0.9 announces).
pub const VSN: [u8; 6] = [1, 5, 2, 2, 5, 4];
const EVENT_BUFFER: u64 = 512;
const QUERY_BUFFER: u64 = 512;
const UDP_BUDGET: usize = 1400;
const USER_EVENT_LIMIT: usize = 512;
const QUERY_RESPONSE_LIMIT: usize = 1024;
/// Intents kept for members not (yet) in the table, 5 minutes each.
const MAX_INTENTS: usize = 1024;
/// Longest member name (in ALIVEs and intents).
const MAX_NAME: usize = 512;
const MAX_PENDING_ACKS: usize = 4096;

/// Errors from starting or using a node.
#[derive(Debug, Error)]
pub enum GossipError {
    /// socket problem
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// framing/key problem
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    /// tags encode to more than 512 bytes
    #[error("tags encode to {0} bytes, more than 512")]
    TagsTooLarge(usize),
    /// user event too large
    #[error("user event is {0} bytes, more than {USER_EVENT_LIMIT}")]
    EventTooLarge(usize),
    /// no seed answered
    #[error("could not join any of {0} nodes")]
    JoinFailed(usize),
    /// response too large or query unknown
    #[error("{0}")]
    Query(&'static str),
    /// the keyring file is unreadable or malformed
    #[error("keyring file {0}")]
    Keyring(String),
}

/// Serf member status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// alive
    Alive,
    /// leaving
    Leaving,
    /// left
    Left,
    /// failed
    Failed,
}

impl Status {
    /// As `serf members` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }
}

/// memberlist's own view of a node (SWIM), finer than Serf's [`Status`]:
/// a node that stopped answering probes is `Suspect` for the suspicion
/// timeout before it becomes `Dead` (Serf's `failed`); Serf itself keeps
/// showing such a node as `alive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// answering probes (or not yet suspected)
    Alive,
    /// missed a probe round; confirmed dead after the suspicion timeout
    /// unless it refutes
    Suspect,
    /// declared dead (Serf `failed`)
    Dead,
    /// left gracefully
    Left,
}

impl Health {
    /// `alive`, `suspect`, `dead`, `left` (memberlist's names).
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Dead => "dead",
            Health::Left => "left",
        }
    }
}

/// Hop count from a received IP TTL / IPv6 hop limit: the sender's initial
/// TTL is guessed as the smallest of 64 (Linux, Go, BSD), 128 (Windows)
/// and 255 (mDNS, some routers) not below the received value, and the
/// hops are the difference. Wrong only for senders with an unusual
/// initial TTL (e.g. 32) or paths of more than 63 hops.
pub fn hops_from_ttl(ttl: u8) -> u8 {
    let initial = match ttl {
        0..=64 => 64,
        65..=128 => 128,
        _ => 255,
    };
    initial - ttl
}

/// Direct probes remembered per member for the loss column.
pub const LOSS_WINDOW: u32 = 32;
/// Direct probes needed before a loss is reported.
pub const LOSS_MIN_PROBES: u32 = 4;

/// A member as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// node name
    pub name: String,
    /// gossip address
    pub addr: SocketAddr,
    /// tags
    pub tags: BTreeMap<String, String>,
    /// Serf status
    pub status: Status,
    /// memberlist health (shows `Suspect`, which Serf's status hides)
    pub health: Health,
    /// hops from the TTL of its last gossip packet ([`hops_from_ttl`]);
    /// `Some(0)` for ourselves, `None` before a packet was received
    pub hops: Option<u8>,
    /// share of the last [`LOSS_WINDOW`] direct probes (ping → ack within
    /// the probe timeout) left unanswered, 0.0–1.0; `None` until
    /// [`LOSS_MIN_PROBES`] were sent, and for ourselves
    pub loss: Option<f64>,
    /// last measured probe RTT
    pub rtt: Option<Duration>,
    /// Vivaldi estimate of the RTT from us
    pub rtt_estimate: Option<Duration>,
    /// its Vivaldi coordinate
    pub coordinate: Option<Coordinate>,
    /// protocol versions
    pub vsn: [u8; 6],
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// member joined (or came back)
    Join(Member),
    /// member left gracefully
    Leave(Member),
    /// member failed
    Failed(Member),
    /// tags or address changed
    Update(Member),
    /// member forgotten
    Reap(Member),
    /// user event
    User {
        /// Lamport time
        ltime: u64,
        /// name
        name: String,
        /// payload
        payload: Vec<u8>,
        /// may coalesce
        coalesce: bool,
    },
    /// query to answer with [`Handle::respond`]
    Query(IncomingQuery),
}

/// A query received from the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingQuery {
    /// Lamport time
    pub ltime: u64,
    /// id
    pub id: u32,
    /// name
    pub name: String,
    /// payload
    pub payload: Vec<u8>,
    /// where responses go
    pub reply_to: SocketAddr,
    /// source node
    pub source_node: String,
    /// respond before this
    pub deadline: Instant,
    relay_factor: u8,
}

struct State {
    nodes: HashMap<String, NodeRec>,
    /// probe ring of confirmed members, and its cursor
    probe_order: Vec<String>,
    probe_index: usize,
    /// probe ring of unconfirmed members, and its cursor
    probe_order_unconfirmed: Vec<String>,
    probe_index_unconfirmed: usize,
    /// probes so far (confirmed and unconfirmed members take turns)
    probe_tick: u64,
    /// new members introduced per source
    intros: Introductions,
    incarnation: u32,
    seq: u32,
    tags: BTreeMap<String, String>,
    bcasts: VecDeque<Bcast>,
    /// bytes of the messages in `bcasts`
    bcast_bytes: usize,
    pending: HashMap<u32, Pending>,
    clock: u64,
    event_clock: u64,
    query_clock: u64,
    event_min_time: u64,
    events: EventBuffer,
    queries_seen: HashMap<u64, Vec<u32>>,
    intents: HashMap<String, (u8, u64, Instant)>,
    out_queries: HashMap<u64, OutQuery>,
    vivaldi: Vivaldi,
    leaving: bool,
    left: bool,
    outbox: Vec<(SocketAddr, Vec<u8>, bool)>,
    /// last received TTL / hop limit per source IP (bounded)
    ttls: HashMap<IpAddr, u8>,
}

struct Inner {
    cfg: Config,
    me: String,
    adv: SocketAddr,
    framing: Framing,
    udp: UdpSocket,
    st: Mutex<State>,
    events: broadcast::Sender<Event>,
    stats: Stats,
    streams: Arc<Streams>,
    shutdown: watch::Sender<bool>,
    weak: std::sync::Weak<Inner>,
}

/// A handle on a running node. Cloning shares the node.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gossip::Handle({})", self.inner.me)
    }
}

fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// The source address budgets are counted against: an IPv4 address, or
/// the /64 of an IPv6 address (what one host usually holds).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

fn bytes_to_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?);
            Some(
                v6.to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
            )
        }
        _ => None,
    }
}

fn witness(clock: &mut u64, v: u64) {
    if v >= *clock {
        *clock = v.saturating_add(1);
    }
}

impl State {
    fn new(tags: BTreeMap<String, String>) -> State {
        State {
            nodes: HashMap::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            probe_order_unconfirmed: Vec::new(),
            probe_index_unconfirmed: 0,
            probe_tick: 0,
            intros: Introductions::default(),
            // memberlist starts at 1: a peer ignores alive messages whose
            // incarnation is not above what it holds (0 for a new node)
            incarnation: 1,
            seq: rand::random(),
            tags,
            bcasts: VecDeque::new(),
            bcast_bytes: 0,
            pending: HashMap::new(),
            clock: 1,
            event_clock: 1,
            query_clock: 1,
            event_min_time: 0,
            events: EventBuffer::default(),
            queries_seen: HashMap::new(),
            intents: HashMap::new(),
            out_queries: HashMap::new(),
            vivaldi: Vivaldi::default(),
            leaving: false,
            left: false,
            outbox: Vec::new(),
            ttls: HashMap::new(),
        }
    }

    #[cfg(test)]
    fn new_for_tests() -> State {
        State::new(BTreeMap::new())
    }

    fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn alive_count(&self) -> usize {
        self.nodes.values().filter(|n| !n.dead_or_left()).count()
    }
    /// memberlist's `estNumNodes`: the length of its node list, which holds
    /// alive and suspect nodes and dead/left ones until `resetNodes` drops
    /// them `gossip_to_the_dead` after their change. It sizes suspicion
    /// timeouts and the expected confirmations, retransmits and push/pull
    /// scaling. Our table keeps failed members for Serf's 24 h reconnect
    /// timeout, so counting all of it would stretch every suspicion (and
    /// expect confirmations from nodes long gone) after a few failures.
    fn est_num_nodes(&self, now: Instant, dead_window: Duration) -> usize {
        est_num_nodes(self.nodes.values(), now, dead_window)
    }
}

impl Inner {
    fn st(&self) -> MutexGuard<'_, State> {
        State::lock(&self.st)
    }

    fn member_of(&self, st: &State, n: &NodeRec) -> Member {
        let me = st.vivaldi.coordinate();
        Member {
            name: n.name.clone(),
            addr: n.addr(),
            tags: n.tags.clone(),
            status: n.status,
            health: n.health(),
            hops: if n.name == self.me {
                Some(0)
            } else {
                st.ttls.get(&n.ip.to_canonical()).map(|t| hops_from_ttl(*t))
            },
            loss: if n.name == self.me { None } else { n.loss() },
            rtt: n.rtt,
            rtt_estimate: if n.name == self.me {
                Some(Duration::ZERO)
            } else {
                n.coord.as_ref().and_then(|c| me.distance(c))
            },
            coordinate: if n.name == self.me {
                Some(me.clone())
            } else {
                n.coord.clone()
            },
            vsn: n.vsn,
        }
    }

    fn emit(&self, e: Event) {
        // a lagging receiver loses old events; never block the protocol
        let _ = self.events.send(e);
    }

    fn clone_arc(&self) -> Option<Arc<Inner>> {
        self.weak.upgrade()
    }
}

impl Handle {
    /// Bind, start the protocol tasks and join the configured seeds
    /// (failure to join is not fatal: the node waits to be joined).
    pub async fn start(cfg: Config) -> Result<Handle, GossipError> {
        let framing = Framing {
            keyring: Keyring::new(keys::initial_keys(&cfg.keys, cfg.keyring_file.as_deref())?)?,
            label: cfg.label.clone(),
            compress: true,
        };
        let udp = UdpSocket::bind(cfg.bind).await?;
        enable_recv_ttl(&udp);
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        let bound = udp.local_addr()?;
        let adv = cfg.advertise.unwrap_or(bound);
        let meta = serf::encode_tags(&cfg.tags);
        if meta.len() > wire::META_MAX {
            return Err(GossipError::TagsTooLarge(meta.len()));
        }
        let (events, _) = broadcast::channel(cfg.event_queue.max(16));
        let (shutdown, _) = watch::channel(false);
        let me = cfg.node_name.clone();
        let st = State::new(cfg.tags.clone());
        let inner = Arc::new_cyclic(|weak| Inner {
            cfg: cfg.clone(),
            me: me.clone(),
            adv,
            framing,
            udp,
            st: Mutex::new(st),
            events,
            stats: Stats::default(),
            streams: Arc::default(),
            shutdown,
            weak: weak.clone(),
        });
        {
            let mut st = inner.st();
            let a = inner.local_alive(&st);
            inner.alive_node(&mut st, &a, true, None);
            // our own Serf join intent
            st.clock += 1;
            let lt = st.clock;
            if let Some(n) = st.nodes.get_mut(&me) {
                n.status_ltime = lt;
            }
        }
        let h = Handle { inner };
        h.spawn_tasks(tcp);
        if !cfg.join.is_empty() {
            let _ = h.join(&cfg.join).await;
        }
        Ok(h)
    }

    fn spawn_tasks(&self, tcp: TcpListener) {
        let i = self.inner.clone();
        let mut stop = i.shutdown.subscribe();
        tokio::spawn(async move {
            let mut buf = vec![0u8; wire::MAX_PACKET];
            loop {
                tokio::select! {
                    r = i.udp.async_io(tokio::io::Interest::READABLE, || recv_with_ttl(&i.udp, &mut buf)) => {
                        if let Ok((n, from, ttl)) = r {
                            i.ingest(&buf[..n], from, Instant::now(), ttl);
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        });
        let i = self.inner.clone();
        let mut stop = i.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = tcp.accept() => {
                        let Ok((s, peer)) = r else { continue };
                        let Some(ticket) = i.streams.accept(peer.ip()) else {
                            i.stats.drop(Dropped::StreamRefused);
                            continue;
                        };
                        let i = i.clone();
                        tokio::spawn(async move {
                            // the deadline covers the whole exchange
                            let t = i.cfg.timing.tcp_timeout;
                            let stats = i.clone();
                            if tokio::time::timeout(t, Handle::serve_stream(i, s, ticket))
                                .await
                                .is_err()
                            {
                                stats.stats.drop(Dropped::StreamDeadline);
                            }
                        });
                    }
                    _ = stop.changed() => break,
                }
            }
        });
        let h = self.clone();
        tokio::spawn(async move { h.probe_loop().await });
        let h = self.clone();
        tokio::spawn(async move { h.gossip_loop().await });
        let h = self.clone();
        tokio::spawn(async move { h.push_pull_loop().await });
        let h = self.clone();
        tokio::spawn(async move { h.timer_loop().await });
    }

    async fn timer_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_reconnect = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let now = Instant::now();
            let mut reconnect = None;
            {
                let mut st = i.st();
                let expired: Vec<(String, u32)> = st
                    .nodes
                    .values()
                    .filter_map(|n| {
                        let s = n.suspicion.as_ref()?;
                        (n.state == NodeState::Suspect && now >= s.deadline())
                            .then(|| (n.name.clone(), s.incarnation))
                    })
                    .collect();
                for (name, inc) in expired {
                    let d = Accusation {
                        incarnation: inc,
                        node: name,
                        from: i.me.clone(),
                    };
                    i.dead_node(&mut st, &d);
                }
                // reap failed/left members, forget stale intents and acks
                let t = &i.cfg.timing;
                let mut reaped = Vec::new();
                for n in st.nodes.values() {
                    if let Some(lt) = n.leave_time {
                        let limit = if n.status == Status::Left {
                            t.tombstone_timeout
                        } else {
                            t.reconnect_timeout
                        };
                        if now.duration_since(lt) > limit {
                            reaped.push(n.name.clone());
                        }
                    }
                }
                for name in reaped {
                    i.forget_member(&mut st, &name);
                }
                st.intents
                    .retain(|_, v| now.duration_since(v.2) < Duration::from_secs(300));
                st.pending.retain(|_, p| match p {
                    Pending::Indirect { created, .. } => {
                        now.duration_since(*created) < Duration::from_secs(10)
                    }
                    Pending::Probe { .. } => true,
                });
                st.out_queries
                    .retain(|_, q| now < q.deadline + Duration::from_secs(5));
                if now.duration_since(last_reconnect) >= t.reconnect_interval {
                    last_reconnect = now;
                    let failed: Vec<SocketAddr> = st
                        .nodes
                        .values()
                        .filter(|n| n.status == Status::Failed)
                        .map(NodeRec::addr)
                        .collect();
                    reconnect = failed.choose(&mut rand::rng()).copied();
                }
                i.flush(&mut st);
            }
            if let Some(addr) = reconnect {
                let h = self.clone();
                tokio::spawn(async move {
                    // a failed member's address is only a claim: what it
                    // sends back is limited like any peer's
                    let _ = h.push_pull_with(addr, true, false).await;
                });
            }
        }
    }

    // ---- public API ----

    /// Our node name.
    pub fn name(&self) -> &str {
        &self.inner.me
    }

    /// The address others reach us at.
    pub fn advertise(&self) -> SocketAddr {
        self.inner.adv
    }

    /// All known members (including ourselves), sorted by name.
    pub fn members(&self) -> Vec<Member> {
        let i = &self.inner;
        let st = i.st();
        let mut v: Vec<Member> = st.nodes.values().map(|n| i.member_of(&st, n)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The encryption keys in use, primary first (empty: clear text).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.inner.framing.keyring.keys()
    }

    /// Our Vivaldi coordinate.
    pub fn coordinate(&self) -> Coordinate {
        self.inner.st().vivaldi.coordinate().clone()
    }

    /// Subscribe to events (a slow subscriber loses the oldest ones).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Replace our tags and gossip them (new incarnation).
    pub fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), GossipError> {
        let meta = serf::encode_tags(&tags);
        if meta.len() > wire::META_MAX {
            return Err(GossipError::TagsTooLarge(meta.len()));
        }
        let i = &self.inner;
        let mut st = i.st();
        st.tags = tags.clone();
        st.incarnation = st.incarnation.wrapping_add(1);
        let a = i.local_alive(&st);
        if let Some(n) = st.nodes.get_mut(&i.me) {
            n.meta = meta;
            n.tags = tags;
            n.incarnation = a.incarnation;
        }
        st.queue(Some((ty::ALIVE, i.me.clone())), a.encode(), &i.stats);
        Ok(())
    }

    /// Leave gracefully: broadcast the leave intent and our own death,
    /// give them time to spread, then stop.
    pub async fn leave(&self) {
        let i = &self.inner;
        {
            let mut st = i.st();
            st.leaving = true;
            let lt = st.clock;
            st.clock += 1;
            let l = Intent {
                ltime: lt,
                node: i.me.clone(),
                prune: false,
            };
            if let Some(n) = st.nodes.get_mut(&i.me) {
                n.status = Status::Leaving;
                n.status_ltime = lt;
            }
            st.queue(None, user_msg(&l.encode_leave()), &i.stats);
        }
        let any_peer = i.st().alive_count() > 1;
        if any_peer {
            tokio::time::sleep(i.cfg.timing.gossip_interval * 5).await;
        }
        {
            let mut st = i.st();
            st.left = true;
            st.incarnation = st.incarnation.wrapping_add(1);
            let d = Accusation {
                incarnation: st.incarnation,
                node: i.me.clone(),
                from: i.me.clone(),
            };
            i.dead_node(&mut st, &d);
            if let Some(n) = st.nodes.get_mut(&i.me) {
                n.status = Status::Left;
            }
        }
        if any_peer {
            tokio::time::sleep(i.cfg.timing.gossip_interval * 5).await;
        }
        self.shutdown();
    }

    /// Stop all tasks without telling anyone (others will see us fail).
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_from_ttl_guesses_the_initial_ttl() {
        assert_eq!(hops_from_ttl(64), 0);
        assert_eq!(hops_from_ttl(63), 1);
        assert_eq!(hops_from_ttl(1), 63);
        assert_eq!(hops_from_ttl(128), 0);
        assert_eq!(hops_from_ttl(120), 8);
        assert_eq!(hops_from_ttl(255), 0);
        assert_eq!(hops_from_ttl(250), 5);
        assert_eq!(hops_from_ttl(129), 126);
        assert_eq!(hops_from_ttl(0), 64);
    }
}
