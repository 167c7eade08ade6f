//! The running node: memberlist's SWIM state machine with Serf's member,
//! intent, event and query layer on top, on tokio tasks.

use crate::config::Config;
use crate::coordinate::{Client as Vivaldi, Coordinate};
use crate::msgpack::{self, decode_value, Value, Writer};
use crate::serf::{self, Filter, Intent, PushPull, Query, QueryResponse, Relay, UserEvent};
use crate::wire::{
    self, ty, Accusation, Ack, Alive, Framing, IndirectPing, Keyring, NodeState, Ping,
};
use rand::seq::{IndexedRandom, SliceRandom};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, oneshot, watch};

/// Versions we announce: memberlist protocol 1..=5 speaking 2, Serf
/// delegate protocol 2..=5 speaking 4 (what Serf 0.9 announces).
pub const VSN: [u8; 6] = [1, 5, 2, 2, 5, 4];
const EVENT_BUFFER: u64 = 512;
const QUERY_BUFFER: u64 = 512;
const MAX_BROADCASTS: usize = 4096;
const UDP_BUDGET: usize = 1400;
const USER_EVENT_LIMIT: usize = 512;
const QUERY_RESPONSE_LIMIT: usize = 1024;
const MAX_INTENTS: usize = 8192;
const MAX_PENDING_ACKS: usize = 4096;

/// Ask the kernel for the TTL / hop limit of each received datagram
/// (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`). Best effort: without it the hop
/// column stays empty.
fn enable_recv_ttl(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(udp, sockopt::Ipv4RecvTtl, &true);
    if udp.local_addr().is_ok_and(|a| a.is_ipv6()) {
        let _ = setsockopt(udp, sockopt::Ipv6RecvHopLimit, &true);
    }
}

/// One non-blocking `recvmsg`: length, source, and the TTL / hop limit
/// from the control messages when the kernel sent one.
fn recv_with_ttl(
    udp: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u8>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(i32, i32);
    let msg = recvmsg::<SockaddrStorage>(
        udp.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut ttl = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
        }
    }
    let from = msg.address.and_then(|a: SockaddrStorage| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    });
    let n = msg.bytes;
    match from {
        Some(f) => Ok((n, f, ttl)),
        None => Err(std::io::Error::other("datagram without a source address")),
    }
}

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

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// packets received
    pub packets_in: AtomicU64,
    /// packets sent
    pub packets_out: AtomicU64,
    /// bytes received
    pub bytes_in: AtomicU64,
    /// bytes sent
    pub bytes_out: AtomicU64,
    /// malformed/undecryptable messages dropped
    pub dropped_malformed: AtomicU64,
    /// messages dropped because a queue or table was full
    pub dropped_full: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// packets received
    pub packets_in: u64,
    /// packets sent
    pub packets_out: u64,
    /// bytes received
    pub bytes_in: u64,
    /// bytes sent
    pub bytes_out: u64,
    /// malformed/undecryptable messages dropped
    pub dropped_malformed: u64,
    /// messages dropped because a queue or table was full
    pub dropped_full: u64,
}

struct NodeRec {
    name: String,
    ip: IpAddr,
    port: u16,
    meta: Vec<u8>,
    tags: BTreeMap<String, String>,
    incarnation: u32,
    state: NodeState,
    state_change: Instant,
    vsn: [u8; 6],
    suspicion: Option<Suspicion>,
    status: Status,
    status_ltime: u64,
    leave_time: Option<Instant>,
    rtt: Option<Duration>,
    coord: Option<Coordinate>,
    /// direct probe outcomes, newest in bit 0 (1 = acked in time)
    probe_bits: u32,
    /// how many outcomes `probe_bits` holds (≤ LOSS_WINDOW)
    probe_n: u32,
}

impl NodeRec {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    fn ip_bytes(&self) -> Vec<u8> {
        ip_to_bytes(self.ip)
    }
    fn dead_or_left(&self) -> bool {
        matches!(self.state, NodeState::Dead | NodeState::Left)
    }
    fn health(&self) -> Health {
        match self.state {
            NodeState::Alive => Health::Alive,
            NodeState::Suspect => Health::Suspect,
            NodeState::Dead => Health::Dead,
            NodeState::Left => Health::Left,
        }
    }
    fn record_probe(&mut self, acked: bool) {
        self.probe_bits = (self.probe_bits << 1) | u32::from(acked);
        self.probe_n = (self.probe_n + 1).min(LOSS_WINDOW);
    }
    fn loss(&self) -> Option<f64> {
        if self.probe_n < LOSS_MIN_PROBES {
            return None;
        }
        let mask = if self.probe_n >= 32 {
            u32::MAX
        } else {
            (1u32 << self.probe_n) - 1
        };
        let acked = (self.probe_bits & mask).count_ones();
        Some(f64::from(self.probe_n - acked) / f64::from(self.probe_n))
    }
}

struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    k: u32,
    confirmations: HashSet<String>,
    incarnation: u32,
    from: String,
}

impl Suspicion {
    fn deadline(&self) -> Instant {
        let n = self.confirmations.len() as f64;
        let t = if self.k < 1 {
            self.min
        } else {
            let frac = (n + 1.0).ln() / (f64::from(self.k) + 1.0).ln();
            let raw =
                self.max.as_secs_f64() - frac * (self.max.as_secs_f64() - self.min.as_secs_f64());
            Duration::from_millis((1000.0 * raw).floor().max(0.0) as u64).max(self.min)
        };
        self.start + t
    }
}

struct Bcast {
    key: Option<(u8, String)>,
    msg: Vec<u8>,
    transmits: usize,
}

enum Pending {
    Probe {
        tx: Option<oneshot::Sender<(Vec<u8>, Instant)>>,
        nacks: usize,
    },
    Indirect {
        reply: SocketAddr,
        seq: u32,
        created: Instant,
    },
}

struct OutQuery {
    id: u32,
    deadline: Instant,
    responses: Vec<(String, Vec<u8>)>,
    acks: HashSet<String>,
}

struct State {
    nodes: HashMap<String, NodeRec>,
    probe_order: Vec<String>,
    probe_index: usize,
    incarnation: u32,
    seq: u32,
    tags: BTreeMap<String, String>,
    bcasts: VecDeque<Bcast>,
    pending: HashMap<u32, Pending>,
    clock: u64,
    event_clock: u64,
    query_clock: u64,
    event_min_time: u64,
    events: HashMap<u64, Vec<(String, Vec<u8>)>>,
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

fn retransmit_limit(mult: usize, n: usize) -> usize {
    mult * ((n as f64 + 1.0).log10().ceil() as usize).max(1)
}

fn est_num_nodes<'a>(
    nodes: impl Iterator<Item = &'a NodeRec>,
    now: Instant,
    dead_window: Duration,
) -> usize {
    nodes
        .filter(|n| {
            !n.dead_or_left() || now.saturating_duration_since(n.state_change) <= dead_window
        })
        .count()
}

fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    Duration::from_secs_f64(f64::from(mult) * scale * interval.as_secs_f64())
}

impl State {
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
    fn queue(&mut self, key: Option<(u8, String)>, msg: Vec<u8>, stats: &Stats) {
        if let Some(k) = &key {
            self.bcasts.retain(|b| b.key.as_ref() != Some(k));
        }
        if self.bcasts.len() >= MAX_BROADCASTS {
            self.bcasts.pop_front();
            stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
        self.bcasts.push_back(Bcast {
            key,
            msg,
            transmits: 0,
        });
    }
    /// Take broadcasts fitting `limit` bytes (fewest transmits first).
    fn take_broadcasts(&mut self, mult: usize, limit: usize, n: usize) -> Vec<Vec<u8>> {
        let max_tx = retransmit_limit(mult, n);
        let mut idx: Vec<usize> = (0..self.bcasts.len()).collect();
        idx.sort_by_key(|&i| self.bcasts[i].transmits);
        let mut used = 0;
        let mut out = Vec::new();
        for i in idx {
            let l = self.bcasts[i].msg.len() + 2;
            if used + l > limit {
                continue;
            }
            used += l;
            out.push(self.bcasts[i].msg.clone());
            self.bcasts[i].transmits += 1;
        }
        self.bcasts.retain(|b| b.transmits < max_tx);
        out
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

    fn flush(&self, st: &mut State) {
        let out = std::mem::take(&mut st.outbox);
        for (to, msg, crc) in out {
            self.send_raw(to, &msg, crc);
        }
    }

    fn send_raw(&self, to: SocketAddr, msg: &[u8], crc: bool) {
        match self.framing.seal_packet(msg, crc) {
            Ok(p) => {
                if self.udp.try_send_to(&p, to).is_ok() {
                    self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_out
                        .fetch_add(p.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn peer_crc(st: &State, to: SocketAddr) -> bool {
        st.nodes.values().any(|n| n.addr() == to && n.vsn[1] >= 5)
    }

    /// Queue a message to `to` with piggybacked broadcasts.
    fn send_msg(&self, st: &mut State, to: SocketAddr, msg: Vec<u8>) {
        let mut avail = UDP_BUDGET.saturating_sub(msg.len() + 2 + self.cfg.label.len());
        if self.framing.keyring.enabled() {
            avail = avail.saturating_sub(29);
        }
        let n = st.est_num_nodes(Instant::now(), self.cfg.timing.gossip_to_the_dead);
        let extra = st.take_broadcasts(self.cfg.timing.retransmit_mult, avail, n);
        let crc = Self::peer_crc(st, to);
        if extra.is_empty() {
            st.outbox.push((to, msg, crc));
        } else {
            let mut parts = vec![msg];
            parts.extend(extra);
            st.outbox.push((to, wire::compound(&parts), crc));
        }
    }

    fn local_alive(&self, st: &State) -> Alive {
        Alive {
            incarnation: st.incarnation,
            node: self.me.clone(),
            addr: ip_to_bytes(self.adv.ip()),
            port: self.adv.port(),
            meta: serf::encode_tags(&st.tags),
            vsn: VSN.to_vec(),
        }
    }

    fn refute(&self, st: &mut State, accused: u32) {
        st.incarnation = st.incarnation.wrapping_add(1);
        if accused >= st.incarnation {
            st.incarnation = accused.wrapping_add(1);
        }
        let a = self.local_alive(st);
        if let Some(n) = st.nodes.get_mut(&self.me) {
            n.incarnation = a.incarnation;
        }
        st.queue(Some((ty::ALIVE, self.me.clone())), a.encode(), &self.stats);
    }

    // ---- memberlist state machine ----

    fn alive_node(&self, st: &mut State, a: &Alive, bootstrap: bool) {
        if st.left && a.node == self.me {
            return;
        }
        let Some(ip) = bytes_to_ip(&a.addr) else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if a.vsn.len() >= 3 && (a.vsn[0] == 0 || a.vsn[1] == 0 || a.vsn[0] > a.vsn[1]) {
            return;
        }
        if a.meta.len() > wire::META_MAX || a.node.is_empty() || a.node.len() > 512 {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut vsn = [0u8; 6];
        if a.vsn.len() >= 6 {
            vsn.copy_from_slice(&a.vsn[..6]);
        }
        let mut updates_node = false;
        let is_new = !st.nodes.contains_key(&a.node);
        if is_new {
            if st.nodes.len() >= self.cfg.max_members {
                self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let tags = serf::decode_tags(&a.meta);
            st.nodes.insert(
                a.node.clone(),
                NodeRec {
                    name: a.node.clone(),
                    ip,
                    port: a.port,
                    meta: a.meta.clone(),
                    tags,
                    incarnation: 0,
                    state: NodeState::Dead,
                    state_change: Instant::now(),
                    vsn,
                    suspicion: None,
                    status: Status::Failed,
                    status_ltime: 0,
                    leave_time: None,
                    rtt: None,
                    coord: None,
                    probe_bits: 0,
                    probe_n: 0,
                },
            );
            let pos = if st.probe_order.is_empty() {
                0
            } else {
                rand::random_range(0..=st.probe_order.len())
            };
            st.probe_order.insert(pos, a.node.clone());
        } else if let Some(n) = st.nodes.get(&a.node) {
            if n.ip != ip || n.port != a.port {
                if n.state == NodeState::Left || n.state == NodeState::Dead {
                    updates_node = true;
                } else {
                    return; // conflict: keep the existing one
                }
            }
        }
        let is_local = a.node == self.me;
        let Some(n) = st.nodes.get(&a.node) else {
            return;
        };
        if !is_new && a.incarnation <= n.incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < n.incarnation && is_local {
            return;
        }
        if !bootstrap && is_local {
            if a.incarnation == n.incarnation && a.meta == n.meta && vsn == n.vsn {
                return;
            }
            self.refute(st, a.incarnation);
            return;
        }
        st.queue(Some((ty::ALIVE, a.node.clone())), a.encode(), &self.stats);
        let Some(n) = st.nodes.get_mut(&a.node) else {
            return;
        };
        let old_state = n.state;
        let old_meta = std::mem::replace(&mut n.meta, a.meta.clone());
        n.suspicion = None;
        n.vsn = vsn;
        n.incarnation = a.incarnation;
        n.ip = ip;
        n.port = a.port;
        if n.state != NodeState::Alive {
            n.state = NodeState::Alive;
            n.state_change = Instant::now();
        }
        if is_new || matches!(old_state, NodeState::Dead | NodeState::Left) {
            self.serf_node_join(st, &a.node, is_new);
        } else if old_meta != a.meta {
            let n = st.nodes.get_mut(&a.node);
            if let Some(n) = n {
                n.tags = serf::decode_tags(&n.meta);
            }
            if let Some(n) = st.nodes.get(&a.node) {
                let m = self.member_of(st, n);
                self.emit(Event::Update(m));
            }
        }
    }

    fn suspect_node(&self, st: &mut State, s: &Accusation) {
        // memberlist counts every node it still holds, recently dead ones
        // included, when sizing suspicion; so must we, or we would send no
        // confirmations where Go peers expect them
        let n_alive = st.est_num_nodes(Instant::now(), self.cfg.timing.gossip_to_the_dead);
        let Some(n) = st.nodes.get_mut(&s.node) else {
            return;
        };
        if s.incarnation < n.incarnation {
            return;
        }
        if let Some(sp) = n.suspicion.as_mut() {
            if s.from != sp.from
                && sp.confirmations.len() < sp.k as usize
                && sp.confirmations.insert(s.from.clone())
            {
                st.queue(
                    Some((ty::SUSPECT, s.node.clone())),
                    s.encode(ty::SUSPECT),
                    &self.stats,
                );
            }
            return;
        }
        if n.state != NodeState::Alive {
            return;
        }
        if s.node == self.me {
            self.refute(st, s.incarnation);
            return;
        }
        let t = &self.cfg.timing;
        let mut k = t.suspicion_mult.saturating_sub(2);
        if (n_alive as i64 - 2) < i64::from(k) {
            k = 0;
        }
        let min = suspicion_timeout(t.suspicion_mult, n_alive, t.probe_interval);
        let max = min * t.suspicion_max_mult;
        n.incarnation = s.incarnation;
        n.state = NodeState::Suspect;
        n.state_change = Instant::now();
        n.suspicion = Some(Suspicion {
            start: Instant::now(),
            min,
            max,
            k,
            confirmations: HashSet::new(),
            incarnation: s.incarnation,
            from: s.from.clone(),
        });
        st.queue(
            Some((ty::SUSPECT, s.node.clone())),
            s.encode(ty::SUSPECT),
            &self.stats,
        );
    }

    fn dead_node(&self, st: &mut State, d: &Accusation) {
        let Some(n) = st.nodes.get_mut(&d.node) else {
            return;
        };
        if d.incarnation < n.incarnation {
            return;
        }
        n.suspicion = None;
        if n.dead_or_left() {
            return;
        }
        if d.node == self.me && !st.left {
            self.refute(st, d.incarnation);
            return;
        }
        n.incarnation = d.incarnation;
        n.state = if d.node == d.from {
            NodeState::Left
        } else {
            NodeState::Dead
        };
        n.state_change = Instant::now();
        st.queue(
            Some((ty::ALIVE, d.node.clone())),
            d.encode(ty::DEAD),
            &self.stats,
        );
        if d.node != self.me {
            self.serf_node_leave(st, &d.node);
        }
    }

    fn merge_state(&self, st: &mut State, remote: &[wire::PushNodeState]) {
        for r in remote {
            match r.state {
                NodeState::Alive => {
                    let a = Alive {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        addr: r.addr.clone(),
                        port: r.port,
                        meta: r.meta.clone(),
                        vsn: r.vsn.clone(),
                    };
                    self.alive_node(st, &a, false);
                }
                NodeState::Left => {
                    let d = Accusation {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: r.name.clone(),
                    };
                    self.dead_node(st, &d);
                }
                NodeState::Dead | NodeState::Suspect => {
                    let s = Accusation {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: self.me.clone(),
                    };
                    self.suspect_node(st, &s);
                }
            }
        }
    }

    // ---- Serf member layer ----

    fn serf_node_join(&self, st: &mut State, name: &str, is_new: bool) {
        let intent_join = st
            .intents
            .get(name)
            .filter(|i| i.0 == serf::ty::JOIN)
            .map(|i| i.1);
        let intent_leave = st
            .intents
            .get(name)
            .filter(|i| i.0 == serf::ty::LEAVE)
            .map(|i| i.1);
        let Some(n) = st.nodes.get_mut(name) else {
            return;
        };
        n.tags = serf::decode_tags(&n.meta);
        n.status = Status::Alive;
        n.leave_time = None;
        if is_new {
            if let Some(t) = intent_join {
                n.status_ltime = t;
            }
            if let Some(t) = intent_leave {
                n.status = Status::Leaving;
                n.status_ltime = t;
            }
        }
        if let Some(n) = st.nodes.get(name) {
            let m = self.member_of(st, n);
            self.emit(Event::Join(m));
        }
    }

    fn serf_node_leave(&self, st: &mut State, name: &str) {
        let Some(n) = st.nodes.get_mut(name) else {
            return;
        };
        let ev = match n.status {
            Status::Leaving => {
                n.status = Status::Left;
                true
            }
            Status::Alive => {
                n.status = Status::Failed;
                false
            }
            _ => return,
        };
        n.leave_time = Some(Instant::now());
        if let Some(n) = st.nodes.get(name) {
            let m = self.member_of(st, n);
            self.emit(if ev {
                Event::Leave(m)
            } else {
                Event::Failed(m)
            });
        }
    }

    fn upsert_intent(st: &mut State, name: &str, t: u8, ltime: u64) -> bool {
        if let Some(e) = st.intents.get(name) {
            if ltime <= e.1 {
                return false;
            }
        } else if st.intents.len() >= MAX_INTENTS {
            return false;
        }
        st.intents
            .insert(name.to_string(), (t, ltime, Instant::now()));
        true
    }

    fn handle_leave_intent(&self, st: &mut State, l: &Intent) -> bool {
        witness(&mut st.clock, l.ltime);
        let Some(n) = st.nodes.get_mut(&l.node) else {
            return Self::upsert_intent(st, &l.node, serf::ty::LEAVE, l.ltime);
        };
        if l.ltime <= n.status_ltime {
            return false;
        }
        if l.node == self.me && !st.leaving {
            // someone says we are leaving: refute with a join intent
            let lt = st.clock;
            let msg = Intent {
                ltime: lt,
                node: self.me.clone(),
                prune: false,
            }
            .encode_join();
            st.queue(None, user_msg(&msg), &self.stats);
            return false;
        }
        n.status_ltime = l.ltime;
        match n.status {
            Status::Alive => {
                n.status = Status::Leaving;
                true
            }
            Status::Failed => {
                n.status = Status::Left;
                if let Some(n) = st.nodes.get(&l.node) {
                    let m = self.member_of(st, n);
                    self.emit(Event::Leave(m));
                }
                true
            }
            Status::Leaving | Status::Left => true,
        }
    }

    fn handle_join_intent(&self, st: &mut State, j: &Intent) -> bool {
        witness(&mut st.clock, j.ltime);
        let Some(n) = st.nodes.get_mut(&j.node) else {
            return Self::upsert_intent(st, &j.node, serf::ty::JOIN, j.ltime);
        };
        if j.ltime <= n.status_ltime {
            return false;
        }
        n.status_ltime = j.ltime;
        if n.status == Status::Leaving {
            n.status = Status::Alive;
        }
        true
    }

    fn handle_user_event(&self, st: &mut State, e: &UserEvent) -> bool {
        witness(&mut st.event_clock, e.ltime);
        if e.ltime < st.event_min_time {
            return false;
        }
        let cur = st.event_clock;
        if cur > EVENT_BUFFER && e.ltime < cur - EVENT_BUFFER {
            return false;
        }
        let slot = st.events.entry(e.ltime).or_default();
        if slot.iter().any(|(n, p)| *n == e.name && *p == e.payload) {
            return false;
        }
        slot.push((e.name.clone(), e.payload.clone()));
        let floor = cur.saturating_sub(EVENT_BUFFER);
        st.events.retain(|&t, _| t >= floor);
        self.emit(Event::User {
            ltime: e.ltime,
            name: e.name.clone(),
            payload: e.payload.clone(),
            coalesce: e.cc,
        });
        true
    }

    fn should_process(&self, st: &State, filters: &[Vec<u8>]) -> bool {
        for f in filters {
            match Filter::decode(f) {
                Ok(Filter::Nodes(n)) => {
                    if !n.contains(&self.me) {
                        return false;
                    }
                }
                Ok(Filter::Tag { tag, expr }) => {
                    let v = st.tags.get(&tag).map(String::as_str).unwrap_or("");
                    if !crate::regex::is_match(&expr, v) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn handle_query(&self, st: &mut State, q: &Query) -> bool {
        witness(&mut st.query_clock, q.ltime);
        let cur = st.query_clock;
        if cur > QUERY_BUFFER && q.ltime < cur - QUERY_BUFFER {
            return false;
        }
        let seen = st.queries_seen.entry(q.ltime).or_default();
        if seen.contains(&q.id) {
            return false;
        }
        if seen.len() >= 64 {
            return false;
        }
        seen.push(q.id);
        let floor = cur.saturating_sub(QUERY_BUFFER);
        st.queries_seen.retain(|&t, _| t >= floor);
        let rebroadcast = q.flags & serf::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.should_process(st, &q.filters) {
            return rebroadcast;
        }
        let Some(ip) = bytes_to_ip(&q.addr) else {
            return rebroadcast;
        };
        let reply_to = SocketAddr::new(ip, q.port);
        if q.flags & serf::QUERY_FLAG_ACK != 0 {
            let ack = QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.me.clone(),
                flags: serf::QUERY_FLAG_ACK,
                payload: Vec::new(),
            };
            let m = user_msg(&ack.encode());
            let crc = Self::peer_crc(st, reply_to);
            st.outbox.push((reply_to, m, crc));
        }
        let iq = IncomingQuery {
            ltime: q.ltime,
            id: q.id,
            name: q.name.clone(),
            payload: q.payload.clone(),
            reply_to,
            source_node: q.source_node.clone(),
            deadline: Instant::now() + Duration::from_nanos(q.timeout_ns.max(0) as u64),
            relay_factor: q.relay_factor,
        };
        if q.name == "_serf_ping" {
            // Serf's internal reachability query: answer with nothing
            let r = QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.me.clone(),
                flags: 0,
                payload: Vec::new(),
            };
            let crc = Self::peer_crc(st, reply_to);
            st.outbox.push((reply_to, user_msg(&r.encode()), crc));
        } else if !q.name.starts_with("_serf_") {
            self.emit(Event::Query(iq));
        }
        rebroadcast
    }

    fn handle_query_response(&self, st: &mut State, r: &QueryResponse) {
        let Some(q) = st.out_queries.get_mut(&r.ltime) else {
            return;
        };
        if q.id != r.id || Instant::now() > q.deadline {
            return;
        }
        if r.flags & serf::QUERY_FLAG_ACK != 0 {
            q.acks.insert(r.from.clone());
        } else if !q.responses.iter().any(|(f, _)| *f == r.from) && q.responses.len() < 4096 {
            q.responses.push((r.from.clone(), r.payload.clone()));
        }
    }

    fn handle_serf(&self, st: &mut State, buf: &[u8]) {
        let Some((&t, body)) = buf.split_first() else {
            return;
        };
        let bad = || {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        };
        let rebroadcast = match t {
            serf::ty::LEAVE | serf::ty::JOIN => {
                match decode_value(body).and_then(|v| Intent::decode(&v)) {
                    Ok(i) if t == serf::ty::LEAVE => self.handle_leave_intent(st, &i),
                    Ok(i) => self.handle_join_intent(st, &i),
                    Err(_) => {
                        bad();
                        false
                    }
                }
            }
            serf::ty::USER_EVENT => match decode_value(body).and_then(|v| UserEvent::decode(&v)) {
                Ok(e) => self.handle_user_event(st, &e),
                Err(_) => {
                    bad();
                    false
                }
            },
            serf::ty::QUERY => match decode_value(body).and_then(|v| Query::decode(&v)) {
                Ok(q) => self.handle_query(st, &q),
                Err(_) => {
                    bad();
                    false
                }
            },
            serf::ty::QUERY_RESPONSE => {
                match decode_value(body).and_then(|v| QueryResponse::decode(&v)) {
                    Ok(r) => self.handle_query_response(st, &r),
                    Err(_) => bad(),
                }
                false
            }
            serf::ty::RELAY => {
                match Relay::decode(body) {
                    Ok(r) => {
                        if let Some(ip) = bytes_to_ip(&r.ip) {
                            let to = SocketAddr::new(ip, r.port);
                            let crc = Self::peer_crc(st, to);
                            st.outbox.push((to, user_msg(&r.inner), crc));
                        }
                    }
                    Err(_) => bad(),
                }
                false
            }
            _ => false,
        };
        if rebroadcast {
            st.queue(None, user_msg(buf), &self.stats);
        }
    }

    fn merge_serf_state(&self, st: &mut State, buf: &[u8], join: bool) {
        let Some((&t, body)) = buf.split_first() else {
            return;
        };
        if t != serf::ty::PUSH_PULL {
            return;
        }
        let Ok(pp) = decode_value(body).and_then(|v| PushPull::decode(&v)) else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if pp.ltime > 0 {
            witness(&mut st.clock, pp.ltime - 1);
        }
        if pp.event_ltime > 0 {
            witness(&mut st.event_clock, pp.event_ltime - 1);
        }
        if pp.query_ltime > 0 {
            witness(&mut st.query_clock, pp.query_ltime - 1);
        }
        let left: HashSet<&String> = pp.left_members.iter().collect();
        for name in &pp.left_members {
            let lt = pp.status_ltimes.get(name).copied().unwrap_or(0) + 1;
            self.handle_leave_intent(
                st,
                &Intent {
                    ltime: lt,
                    node: name.clone(),
                    prune: false,
                },
            );
        }
        for (name, lt) in &pp.status_ltimes {
            if left.contains(name) {
                continue;
            }
            self.handle_join_intent(
                st,
                &Intent {
                    ltime: *lt,
                    node: name.clone(),
                    prune: false,
                },
            );
        }
        if join && pp.event_ltime > st.event_min_time {
            // like Serf's default for joins: do not replay old events
            st.event_min_time = pp.event_ltime;
        }
        for at in &pp.events {
            for (name, payload) in &at.events {
                let e = UserEvent {
                    ltime: at.ltime,
                    name: name.clone(),
                    payload: payload.clone(),
                    cc: false,
                };
                self.handle_user_event(st, &e);
            }
        }
    }

    fn local_serf_state(&self, st: &State) -> Vec<u8> {
        let mut pp = PushPull {
            ltime: st.clock,
            event_ltime: st.event_clock,
            query_ltime: st.query_clock,
            ..Default::default()
        };
        for n in st.nodes.values() {
            pp.status_ltimes.insert(n.name.clone(), n.status_ltime);
            if n.status == Status::Left {
                pp.left_members.push(n.name.clone());
            }
        }
        let mut times: Vec<&u64> = st.events.keys().collect();
        times.sort();
        for t in times {
            if let Some(ev) = st.events.get(t) {
                pp.events.push(serf::EventsAt {
                    ltime: *t,
                    events: ev.clone(),
                });
            }
        }
        pp.encode()
    }

    fn local_push_pull(&self, st: &State, join: bool) -> Vec<u8> {
        let user = self.local_serf_state(st);
        let mut w = Writer::with_type(ty::PUSH_PULL);
        wire::PushPullHeader {
            nodes: st.nodes.len() as i64,
            user_state_len: user.len() as i64,
            join,
        }
        .encode(&mut w);
        for n in st.nodes.values() {
            wire::PushNodeState {
                name: n.name.clone(),
                addr: n.ip_bytes(),
                port: n.port,
                meta: n.meta.clone(),
                incarnation: n.incarnation,
                state: n.state,
                vsn: n.vsn.to_vec(),
            }
            .encode(&mut w);
        }
        w.extend(&user);
        w.into_bytes()
    }

    // ---- packet handling ----

    fn ingest(&self, buf: &[u8], from: SocketAddr, at: Instant, ttl: Option<u8>) {
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let msg = match self.framing.open_packet(buf) {
            Ok(m) => m,
            Err(_) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let mut st = self.st();
        if let Some(t) = ttl {
            // only authenticated/well-formed packets count
            let ip = from.ip().to_canonical();
            if st.ttls.len() >= 2 * self.cfg.max_members.max(16) && !st.ttls.contains_key(&ip) {
                let State { ttls, nodes, .. } = &mut *st;
                let known: HashSet<IpAddr> = nodes.values().map(|n| n.ip.to_canonical()).collect();
                ttls.retain(|k, _| known.contains(k));
            }
            if st.ttls.len() < 2 * self.cfg.max_members.max(16) || st.ttls.contains_key(&ip) {
                st.ttls.insert(ip, t);
            }
        }
        self.command(&mut st, &msg, from, at, 0);
        self.flush(&mut st);
    }

    fn command(&self, st: &mut State, buf: &[u8], from: SocketAddr, at: Instant, depth: usize) {
        let Some((&t, body)) = buf.split_first() else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if depth > 4 {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let r: Result<(), wire::WireError> = (|| {
            match t {
                ty::COMPOUND => {
                    for p in wire::split_compound(body)? {
                        self.command(st, p, from, at, depth + 1);
                    }
                }
                ty::COMPRESS => {
                    let d = wire::decompress(body)?;
                    self.command(st, &d, from, at, depth + 1);
                }
                ty::HAS_CRC => {
                    if body.len() < 4 {
                        return Err(wire::WireError::Crc);
                    }
                    let want = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    if crc32fast::hash(&body[4..]) != want {
                        return Err(wire::WireError::Crc);
                    }
                    self.command(st, &body[4..], from, at, depth + 1);
                }
                ty::PING => {
                    let p = Ping::decode(&decode_value(body)?)?;
                    if !p.node.is_empty() && p.node != self.me {
                        return Ok(());
                    }
                    let to = match bytes_to_ip(&p.source_addr) {
                        Some(ip) if p.source_port > 0 => SocketAddr::new(ip, p.source_port),
                        _ => from,
                    };
                    let ack = Ack {
                        seq_no: p.seq_no,
                        payload: st.vivaldi.coordinate().ack_payload(),
                    };
                    self.send_msg(st, to, ack.encode());
                }
                ty::INDIRECT_PING => {
                    let ind = IndirectPing::decode(&decode_value(body)?)?;
                    let Some(tip) = bytes_to_ip(&ind.target) else {
                        return Err(wire::WireError::Frame("bad target"));
                    };
                    let reply = match bytes_to_ip(&ind.source_addr) {
                        Some(ip) if ind.source_port > 0 => SocketAddr::new(ip, ind.source_port),
                        _ => from,
                    };
                    if st.pending.len() >= MAX_PENDING_ACKS {
                        self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    st.seq = st.seq.wrapping_add(1);
                    let seq = st.seq;
                    let ping = Ping {
                        seq_no: seq,
                        node: ind.node.clone(),
                        source_addr: ip_to_bytes(self.adv.ip()),
                        source_port: self.adv.port(),
                        source_node: self.me.clone(),
                    };
                    st.pending.insert(
                        seq,
                        Pending::Indirect {
                            reply,
                            seq: ind.seq_no,
                            created: Instant::now(),
                        },
                    );
                    self.send_msg(st, SocketAddr::new(tip, ind.port), ping.encode());
                    if ind.nack {
                        let inner = self.clone_arc();
                        let timeout = self.cfg.timing.probe_timeout;
                        let oseq = ind.seq_no;
                        if let Some(inner) = inner {
                            tokio::spawn(async move {
                                tokio::time::sleep(timeout).await;
                                let mut st = inner.st();
                                if st.pending.contains_key(&seq) {
                                    st.pending.remove(&seq);
                                    let crc = Self::peer_crc(&st, reply);
                                    st.outbox.push((reply, wire::encode_nack(oseq), crc));
                                    inner.flush(&mut st);
                                }
                            });
                        }
                    }
                }
                ty::ACK => {
                    let a = Ack::decode(&decode_value(body)?)?;
                    match st.pending.remove(&a.seq_no) {
                        Some(Pending::Probe { tx: Some(tx), .. }) => {
                            let _ = tx.send((a.payload, at));
                        }
                        Some(Pending::Indirect { reply, seq, .. }) => {
                            let ack = Ack {
                                seq_no: seq,
                                payload: Vec::new(),
                            };
                            self.send_msg(st, reply, ack.encode());
                        }
                        _ => {}
                    }
                }
                ty::NACK => {
                    let v = decode_value(body)?;
                    let seq = v.u32_field("SeqNo")?;
                    if let Some(Pending::Probe { nacks, .. }) = st.pending.get_mut(&seq) {
                        *nacks += 1;
                    }
                }
                ty::SUSPECT => {
                    let s = Accusation::decode(&decode_value(body)?)?;
                    self.suspect_node(st, &s);
                }
                ty::ALIVE => {
                    let a = Alive::decode(&decode_value(body)?)?;
                    self.alive_node(st, &a, false);
                }
                ty::DEAD => {
                    let d = Accusation::decode(&decode_value(body)?)?;
                    self.dead_node(st, &d);
                }
                ty::USER => self.handle_serf(st, body),
                _ => return Err(wire::WireError::Frame("unknown message type")),
            }
            Ok(())
        })();
        if r.is_err() {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn clone_arc(&self) -> Option<Arc<Inner>> {
        self.weak.upgrade()
    }
}

fn user_msg(serf_msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(serf_msg.len() + 1);
    m.push(ty::USER);
    m.extend_from_slice(serf_msg);
    m
}

// ---- streams ----

struct StreamBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl StreamBuf {
    async fn fill(&mut self, s: &mut TcpStream, need: usize) -> Result<(), wire::WireError> {
        while self.buf.len() - self.pos < need {
            if self.buf.len() > wire::MAX_STREAM {
                return Err(wire::WireError::Frame("stream too large"));
            }
            let mut chunk = [0u8; 8192];
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|_| wire::WireError::Frame("read"))?;
            if n == 0 {
                return Err(wire::WireError::Frame("eof"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }
    async fn bytes(&mut self, s: &mut TcpStream, n: usize) -> Result<Vec<u8>, wire::WireError> {
        self.fill(s, n).await?;
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }
    async fn value(&mut self, s: &mut TcpStream) -> Result<Value, wire::WireError> {
        loop {
            match msgpack::decode(&self.buf[self.pos..]) {
                Ok((v, used)) => {
                    self.pos += used;
                    return Ok(v);
                }
                Err(msgpack::DecodeError::Incomplete) => {
                    let have = self.buf.len() - self.pos;
                    self.fill(s, have + 1).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A decoded stream message: its type and the remaining plain bytes
/// (or a live stream buffer for clear, uncompressed messages).
async fn read_stream(
    framing: &Framing,
    s: &mut TcpStream,
) -> Result<(u8, Vec<u8>), wire::WireError> {
    let mut sb = StreamBuf {
        buf: Vec::new(),
        pos: 0,
    };
    let mut t = sb.bytes(s, 1).await?[0];
    let mut label = Vec::new();
    if t == ty::HAS_LABEL {
        let n = usize::from(sb.bytes(s, 1).await?[0]);
        label = sb.bytes(s, n).await?;
        t = sb.bytes(s, 1).await?[0];
    }
    if label != framing.label.as_bytes() {
        return Err(wire::WireError::Label);
    }
    let mut plain: Vec<u8>;
    if t == ty::ENCRYPT {
        if !framing.keyring.enabled() {
            return Err(wire::WireError::Decrypt);
        }
        let lenb = sb.bytes(s, 4).await?;
        let len = u32::from_be_bytes([lenb[0], lenb[1], lenb[2], lenb[3]]) as usize;
        if len > wire::MAX_STREAM {
            return Err(wire::WireError::Frame("encrypted stream too large"));
        }
        let ct = sb.bytes(s, len).await?;
        let mut aad = vec![ty::ENCRYPT];
        aad.extend_from_slice(&lenb);
        aad.extend_from_slice(&label);
        plain = framing.keyring.decrypt(&ct, &aad)?;
    } else if framing.keyring.enabled() {
        return Err(wire::WireError::NotEncrypted);
    } else {
        // clear text: the message is self-delimiting msgpack; read values
        // as the caller needs them. Collect the whole message here.
        plain = vec![t];
        if t == ty::COMPRESS {
            let v = sb.value(s).await?;
            plain = wire::decompress_value(&v)?;
        } else if t == ty::PUSH_PULL {
            let hv = sb.value(s).await?;
            let h = wire::PushPullHeader::decode(&hv)?;
            if h.nodes < 0
                || h.nodes > 65_536
                || h.user_state_len < 0
                || h.user_state_len as usize > wire::MAX_STREAM
            {
                return Err(wire::WireError::Frame("push/pull header out of range"));
            }
            let start = sb.pos;
            for _ in 0..h.nodes {
                sb.value(s).await?;
            }
            sb.fill(s, h.user_state_len as usize).await?;
            let end = sb.pos + h.user_state_len as usize;
            let mut w = Writer::with_type(ty::PUSH_PULL);
            h.encode(&mut w);
            w.extend(&sb.buf[start..end]);
            return Ok((ty::PUSH_PULL, w.into_bytes()[1..].to_vec()));
        } else if t == ty::USER {
            let hv = sb.value(s).await?;
            let n = hv.i64_field("UserMsgLen")?;
            if !(0..=wire::MAX_STREAM as i64).contains(&n) {
                return Err(wire::WireError::Frame("user msg too large"));
            }
            let b = sb.bytes(s, n as usize).await?;
            return Ok((ty::USER, b));
        } else {
            let v_start = sb.pos;
            sb.value(s).await?;
            plain.extend_from_slice(&sb.buf[v_start..sb.pos]);
        }
    }
    if plain.first() == Some(&ty::COMPRESS) {
        plain = wire::decompress(&plain[1..])?;
    }
    let (&t, rest) = plain
        .split_first()
        .ok_or(wire::WireError::Frame("empty stream"))?;
    if t == ty::USER {
        let (hv, used) = msgpack::decode(rest)?;
        let n = hv.i64_field("UserMsgLen")?;
        let body = &rest[used..];
        if n < 0 || n as usize > body.len() {
            return Err(wire::WireError::Frame("user msg length"));
        }
        return Ok((ty::USER, body[..n as usize].to_vec()));
    }
    Ok((t, rest.to_vec()))
}

/// Decode a push/pull body (after the type byte): join flag, node states,
/// Serf user state. Public for the fuzzer.
pub fn parse_push_pull(
    body: &[u8],
) -> Result<(bool, Vec<wire::PushNodeState>, Vec<u8>), wire::WireError> {
    let (hv, mut pos) = msgpack::decode(body)?;
    let h = wire::PushPullHeader::decode(&hv)?;
    if h.nodes < 0 || h.nodes > 65_536 || h.user_state_len < 0 {
        return Err(wire::WireError::Frame("push/pull header out of range"));
    }
    let mut nodes = Vec::new();
    for _ in 0..h.nodes {
        let (v, used) = msgpack::decode(&body[pos..])?;
        pos += used;
        nodes.push(wire::PushNodeState::decode(&v)?);
    }
    let n = h.user_state_len as usize;
    if body.len() - pos < n {
        return Err(wire::WireError::Frame("short user state"));
    }
    Ok((h.join, nodes, body[pos..pos + n].to_vec()))
}

impl Handle {
    /// Bind, start the protocol tasks and join the configured seeds
    /// (failure to join is not fatal: the node waits to be joined).
    pub async fn start(cfg: Config) -> Result<Handle, GossipError> {
        let framing = Framing {
            keyring: Keyring::new(cfg.keys.clone())?,
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
        let st = State {
            nodes: HashMap::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            // memberlist starts at 1: a peer ignores alive messages whose
            // incarnation is not above what it holds (0 for a new node)
            incarnation: 1,
            seq: rand::random(),
            tags: cfg.tags.clone(),
            bcasts: VecDeque::new(),
            pending: HashMap::new(),
            clock: 1,
            event_clock: 1,
            query_clock: 1,
            event_min_time: 0,
            events: HashMap::new(),
            queries_seen: HashMap::new(),
            intents: HashMap::new(),
            out_queries: HashMap::new(),
            vivaldi: Vivaldi::default(),
            leaving: false,
            left: false,
            outbox: Vec::new(),
            ttls: HashMap::new(),
        };
        let inner = Arc::new_cyclic(|weak| Inner {
            cfg: cfg.clone(),
            me: me.clone(),
            adv,
            framing,
            udp,
            st: Mutex::new(st),
            events,
            stats: Stats::default(),
            shutdown,
            weak: weak.clone(),
        });
        {
            let mut st = inner.st();
            let a = inner.local_alive(&st);
            inner.alive_node(&mut st, &a, true);
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
            let sem = Arc::new(tokio::sync::Semaphore::new(128));
            loop {
                tokio::select! {
                    r = tcp.accept() => {
                        if let Ok((s, _)) = r {
                            let Ok(permit) = sem.clone().try_acquire_owned() else { continue };
                            let i = i.clone();
                            tokio::spawn(async move {
                                let t = i.cfg.timing.tcp_timeout;
                                let _ = tokio::time::timeout(t, Handle::serve_stream(i, s)).await;
                                drop(permit);
                            });
                        }
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

    async fn serve_stream(i: Arc<Inner>, mut s: TcpStream) -> Result<(), wire::WireError> {
        let (t, body) = match read_stream(&i.framing, &mut s).await {
            Ok(x) => x,
            Err(e) => {
                i.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        match t {
            ty::PUSH_PULL => {
                let (join, nodes, user) = parse_push_pull(&body)?;
                let out = {
                    let st = i.st();
                    i.local_push_pull(&st, join)
                };
                let framed = i.framing.seal_stream(&out)?;
                s.write_all(&framed)
                    .await
                    .map_err(|_| wire::WireError::Frame("write"))?;
                let mut st = i.st();
                i.merge_state(&mut st, &nodes);
                if !user.is_empty() {
                    i.merge_serf_state(&mut st, &user, join);
                }
                i.flush(&mut st);
            }
            ty::PING => {
                let p = Ping::decode(&decode_value(&body)?)?;
                if p.node.is_empty() || p.node == i.me {
                    let ack = Ack {
                        seq_no: p.seq_no,
                        payload: Vec::new(),
                    }
                    .encode();
                    let framed = i.framing.seal_stream(&ack)?;
                    s.write_all(&framed)
                        .await
                        .map_err(|_| wire::WireError::Frame("write"))?;
                }
            }
            ty::USER => {
                let mut st = i.st();
                i.handle_serf(&mut st, &body);
                i.flush(&mut st);
            }
            _ => {
                i.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn push_pull_with(&self, to: SocketAddr, join: bool) -> Result<(), GossipError> {
        let i = &self.inner;
        let t = i.cfg.timing.tcp_timeout;
        let fut = async {
            let mut s = TcpStream::connect(to).await?;
            let out = {
                let st = i.st();
                i.local_push_pull(&st, join)
            };
            let framed = i.framing.seal_stream(&out)?;
            s.write_all(&framed).await?;
            let (ty_, body) = read_stream(&i.framing, &mut s).await?;
            if ty_ != ty::PUSH_PULL {
                return Err(GossipError::Wire(wire::WireError::Frame(
                    "unexpected stream reply",
                )));
            }
            let (_, nodes, user) = parse_push_pull(&body)?;
            let mut st = i.st();
            i.merge_state(&mut st, &nodes);
            if !user.is_empty() {
                i.merge_serf_state(&mut st, &user, join);
            }
            i.flush(&mut st);
            Ok::<(), GossipError>(())
        };
        match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(GossipError::Io(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
        }
    }

    /// Join through any of `seeds`; returns how many answered.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<usize, GossipError> {
        let mut ok = 0;
        for s in seeds {
            if self.push_pull_with(*s, true).await.is_ok() {
                ok += 1;
            }
        }
        if ok == 0 {
            return Err(GossipError::JoinFailed(seeds.len()));
        }
        let i = &self.inner;
        let mut st = i.st();
        let lt = st.clock;
        witness(&mut st.clock, lt);
        let j = Intent {
            ltime: lt,
            node: i.me.clone(),
            prune: false,
        };
        i.handle_join_intent(&mut st, &j);
        st.queue(None, user_msg(&j.encode_join()), &i.stats);
        Ok(ok)
    }

    async fn probe_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let mut tick = tokio::time::interval(i.cfg.timing.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let target = {
                let mut st = i.st();
                let mut found = None;
                for _ in 0..st.probe_order.len().max(1) * 2 {
                    if st.probe_index >= st.probe_order.len() {
                        st.probe_index = 0;
                        let State {
                            probe_order, nodes, ..
                        } = &mut *st;
                        probe_order.retain(|n| nodes.contains_key(n));
                        probe_order.shuffle(&mut rand::rng());
                        if st.probe_order.is_empty() {
                            break;
                        }
                    }
                    let name = st.probe_order[st.probe_index].clone();
                    st.probe_index += 1;
                    if let Some(n) = st.nodes.get(&name) {
                        if name != i.me && !n.dead_or_left() {
                            found = Some(name);
                            break;
                        }
                    }
                }
                found
            };
            if let Some(t) = target {
                self.probe(&t).await;
            }
        }
    }

    async fn probe(&self, name: &str) {
        let i = &self.inner;
        let timing = &i.cfg.timing;
        let (tx, rx) = oneshot::channel();
        let (seq, addr, inc, suspect, peers, sent) = {
            let mut st = i.st();
            let Some(n) = st.nodes.get(name) else { return };
            let (addr, inc, suspect) = (n.addr(), n.incarnation, n.state == NodeState::Suspect);
            st.seq = st.seq.wrapping_add(1);
            let seq = st.seq;
            let ping = Ping {
                seq_no: seq,
                node: name.to_string(),
                source_addr: ip_to_bytes(i.adv.ip()),
                source_port: i.adv.port(),
                source_node: i.me.clone(),
            };
            if st.pending.len() < MAX_PENDING_ACKS {
                st.pending.insert(
                    seq,
                    Pending::Probe {
                        tx: Some(tx),
                        nacks: 0,
                    },
                );
            }
            if suspect {
                let s = Accusation {
                    incarnation: inc,
                    node: name.to_string(),
                    from: i.me.clone(),
                };
                let c = wire::compound(&[ping.encode(), s.encode(ty::SUSPECT)]);
                let crc = Inner::peer_crc(&st, addr);
                st.outbox.push((addr, c, crc));
            } else {
                i.send_msg(&mut st, addr, ping.encode());
            }
            let mut peers: Vec<(SocketAddr, bool)> = st
                .nodes
                .values()
                .filter(|n| n.name != i.me && n.name != name && n.state == NodeState::Alive)
                .map(|n| (n.addr(), n.vsn[1] >= 4))
                .collect();
            peers.shuffle(&mut rand::rng());
            peers.truncate(timing.indirect_checks);
            let sent = Instant::now();
            i.flush(&mut st);
            (seq, addr, inc, suspect, peers, sent)
        };
        let _ = suspect;
        let mut rx = rx;
        let deadline = sent + timing.probe_interval;
        match tokio::time::timeout(timing.probe_timeout, &mut rx).await {
            Ok(Ok((payload, at))) => {
                self.ack_received(name, &payload, at.saturating_duration_since(sent));
                return;
            }
            Ok(Err(_)) => {}
            Err(_) => {}
        }
        if let Some(n) = i.st().nodes.get_mut(name) {
            n.record_probe(false);
        }
        // indirect probes
        let expected_nacks = {
            let mut st = i.st();
            let mut n = 0;
            for (p, nack) in &peers {
                let ind = IndirectPing {
                    seq_no: seq,
                    target: ip_to_bytes(addr.ip()),
                    port: addr.port(),
                    node: name.to_string(),
                    nack: *nack,
                    source_addr: ip_to_bytes(i.adv.ip()),
                    source_port: i.adv.port(),
                    source_node: i.me.clone(),
                };
                n += usize::from(*nack);
                i.send_msg(&mut st, *p, ind.encode());
            }
            i.flush(&mut st);
            n
        };
        let _ = expected_nacks;
        // TCP fallback ping in parallel (memberlist does this for pmax >= 3)
        let tcp_ok = {
            let h = self.clone();
            let nm = name.to_string();
            let tcp = tokio::spawn(async move { h.tcp_ping(addr, &nm, seq, deadline).await });
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, &mut rx).await {
                Ok(Ok(_)) => {
                    tcp.abort();
                    true
                }
                _ => tcp.await.unwrap_or(false),
            }
        };
        i.st().pending.remove(&seq);
        if tcp_ok {
            return;
        }
        let mut st = i.st();
        let s = Accusation {
            incarnation: inc,
            node: name.to_string(),
            from: i.me.clone(),
        };
        i.suspect_node(&mut st, &s);
        i.flush(&mut st);
    }

    async fn tcp_ping(&self, to: SocketAddr, name: &str, seq: u32, deadline: Instant) -> bool {
        let i = &self.inner;
        let fut = async {
            let mut s = TcpStream::connect(to).await.ok()?;
            let ping = Ping {
                seq_no: seq,
                node: name.to_string(),
                source_addr: ip_to_bytes(i.adv.ip()),
                source_port: i.adv.port(),
                source_node: i.me.clone(),
            };
            let framed = i.framing.seal_stream(&ping.encode()).ok()?;
            s.write_all(&framed).await.ok()?;
            let (t, body) = read_stream(&i.framing, &mut s).await.ok()?;
            if t != ty::ACK {
                return None;
            }
            let a = Ack::decode(&decode_value(&body).ok()?).ok()?;
            Some(a.seq_no == seq)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        matches!(tokio::time::timeout(left, fut).await, Ok(Some(true)))
    }

    fn ack_received(&self, name: &str, payload: &[u8], rtt: Duration) {
        let i = &self.inner;
        let mut st = i.st();
        let coord = Coordinate::from_ack_payload(payload);
        if let Some(c) = &coord {
            st.vivaldi.update(name, c, rtt);
        }
        if let Some(n) = st.nodes.get_mut(name) {
            n.record_probe(true);
            n.rtt = Some(rtt);
            if coord.is_some() {
                n.coord = coord;
            }
        }
    }

    async fn gossip_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let mut tick = tokio::time::interval(i.cfg.timing.gossip_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let mut st = i.st();
            let now = Instant::now();
            let mut targets: Vec<SocketAddr> = st
                .nodes
                .values()
                .filter(|n| {
                    n.name != i.me
                        && match n.state {
                            NodeState::Alive | NodeState::Suspect => true,
                            NodeState::Dead => {
                                now.duration_since(n.state_change)
                                    <= i.cfg.timing.gossip_to_the_dead
                            }
                            NodeState::Left => false,
                        }
                })
                .map(NodeRec::addr)
                .collect();
            targets.shuffle(&mut rand::rng());
            targets.truncate(i.cfg.timing.gossip_nodes);
            let mut avail = UDP_BUDGET - 2;
            if i.framing.keyring.enabled() {
                avail -= 29;
            }
            for t in targets {
                let n = st.est_num_nodes(now, i.cfg.timing.gossip_to_the_dead);
                let msgs = st.take_broadcasts(i.cfg.timing.retransmit_mult, avail, n);
                if msgs.is_empty() {
                    break;
                }
                let m = if msgs.len() == 1 {
                    msgs.into_iter().next().unwrap_or_default()
                } else {
                    wire::compound(&msgs)
                };
                let crc = Inner::peer_crc(&st, t);
                st.outbox.push((t, m, crc));
            }
            i.flush(&mut st);
        }
    }

    async fn push_pull_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let base = i.cfg.timing.push_pull_interval;
        let mut wait = Duration::from_millis(rand::random_range(0..base.as_millis().max(1) as u64));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let (target, n) = {
                let st = i.st();
                let alive: Vec<SocketAddr> = st
                    .nodes
                    .values()
                    .filter(|n| n.name != i.me && n.state == NodeState::Alive)
                    .map(NodeRec::addr)
                    .collect();
                let n = st.est_num_nodes(Instant::now(), i.cfg.timing.gossip_to_the_dead);
                (alive.choose(&mut rand::rng()).copied(), n)
            };
            if let Some(t) = target {
                let _ = self.push_pull_with(t, false).await;
            }
            wait = if n <= 32 {
                base
            } else {
                base * (((n as f64).log2() - 5.0).ceil() as u32 + 1)
            };
        }
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
                    if let Some(n) = st.nodes.remove(&name) {
                        st.vivaldi.forget(&name);
                        let m = i.member_of(&st, &n);
                        i.emit(Event::Reap(m));
                    }
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
                    let _ = h.push_pull_with(addr, true).await;
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

    /// Our Vivaldi coordinate.
    pub fn coordinate(&self) -> Coordinate {
        self.inner.st().vivaldi.coordinate().clone()
    }

    /// Subscribe to events (a slow subscriber loses the oldest ones).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        StatsSnapshot {
            packets_in: s.packets_in.load(Ordering::Relaxed),
            packets_out: s.packets_out.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            dropped_malformed: s.dropped_malformed.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
        }
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

    /// Send a user event to the cluster.
    pub fn user_event(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), GossipError> {
        let size = name.len() + payload.len();
        if size > USER_EVENT_LIMIT {
            return Err(GossipError::EventTooLarge(size));
        }
        let i = &self.inner;
        let mut st = i.st();
        let e = UserEvent {
            ltime: st.event_clock,
            name: name.to_string(),
            payload: payload.to_vec(),
            cc: coalesce,
        };
        st.event_clock += 1;
        i.handle_user_event(&mut st, &e);
        st.queue(None, user_msg(&e.encode()), &i.stats);
        Ok(())
    }

    /// Answer a query received as [`Event::Query`].
    pub fn respond(&self, q: &IncomingQuery, payload: &[u8]) -> Result<(), GossipError> {
        if Instant::now() > q.deadline {
            return Err(GossipError::Query("query deadline passed"));
        }
        let r = QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.inner.me.clone(),
            flags: 0,
            payload: payload.to_vec(),
        };
        let raw = r.encode();
        if raw.len() > QUERY_RESPONSE_LIMIT {
            return Err(GossipError::Query("response too large"));
        }
        let i = &self.inner;
        let mut st = i.st();
        let crc = Inner::peer_crc(&st, q.reply_to);
        st.outbox.push((q.reply_to, user_msg(&raw), crc));
        if q.relay_factor > 0 {
            let mut relays: Vec<SocketAddr> = st
                .nodes
                .values()
                .filter(|n| n.name != i.me && n.status == Status::Alive && n.vsn[1] >= 5)
                .map(NodeRec::addr)
                .collect();
            relays.shuffle(&mut rand::rng());
            relays.truncate(usize::from(q.relay_factor));
            let relay = Relay {
                ip: ip_to_bytes(q.reply_to.ip()),
                port: q.reply_to.port(),
                name: q.source_node.clone(),
                inner: raw,
            }
            .encode();
            for to in relays {
                let crc = Inner::peer_crc(&st, to);
                st.outbox.push((to, user_msg(&relay), crc));
            }
        }
        i.flush(&mut st);
        Ok(())
    }

    /// Ask the cluster a question; collects (node, payload) responses
    /// until `timeout`.
    pub async fn query(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Vec<(String, Vec<u8>)> {
        let i = &self.inner;
        let ltime = {
            let mut st = i.st();
            let ltime = st.query_clock;
            st.query_clock += 1;
            let q = Query {
                ltime,
                id: rand::random(),
                addr: ip_to_bytes(i.adv.ip()),
                port: i.adv.port(),
                source_node: i.me.clone(),
                filters: Vec::new(),
                flags: 0,
                relay_factor: 0,
                timeout_ns: timeout.as_nanos().min(i64::MAX as u128) as i64,
                name: name.to_string(),
                payload: payload.to_vec(),
            };
            st.out_queries.insert(
                ltime,
                OutQuery {
                    id: q.id,
                    deadline: Instant::now() + timeout,
                    responses: Vec::new(),
                    acks: HashSet::new(),
                },
            );
            // we see our own query too, as Serf does
            i.handle_query(&mut st, &q);
            st.queue(None, user_msg(&q.encode()), &i.stats);
            i.flush(&mut st);
            ltime
        };
        tokio::time::sleep(timeout).await;
        let mut st = i.st();
        st.out_queries
            .remove(&ltime)
            .map(|q| q.responses)
            .unwrap_or_default()
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
mod column_tests {
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

    fn rec() -> NodeRec {
        NodeRec {
            name: "n".into(),
            ip: IpAddr::from([10, 0, 0, 1]),
            port: 7946,
            meta: Vec::new(),
            tags: BTreeMap::new(),
            incarnation: 1,
            state: NodeState::Suspect,
            state_change: Instant::now(),
            vsn: VSN,
            suspicion: None,
            status: Status::Alive,
            status_ltime: 0,
            leave_time: None,
            rtt: None,
            coord: None,
            probe_bits: 0,
            probe_n: 0,
        }
    }

    #[test]
    fn loss_window_needs_four_probes_and_keeps_the_last_32() {
        let mut n = rec();
        assert_eq!(n.health(), Health::Suspect);
        for _ in 0..3 {
            n.record_probe(false);
        }
        assert_eq!(n.loss(), None);
        n.record_probe(true);
        assert_eq!(n.loss(), Some(0.75));
        for _ in 0..32 {
            n.record_probe(true);
        }
        assert_eq!(n.loss(), Some(0.0));
        for i in 0..32 {
            n.record_probe(i % 4 != 0);
        }
        assert_eq!(n.loss(), Some(0.25));
    }

    #[test]
    fn node_count_forgets_the_dead_after_gossip_to_the_dead() {
        let now = Instant::now();
        let window = Duration::from_secs(30);
        let mut nodes = Vec::new();
        for (i, (state, age)) in [
            (NodeState::Alive, 100),
            (NodeState::Suspect, 100),
            (NodeState::Dead, 10),
            (NodeState::Dead, 31),
            (NodeState::Left, 29),
            (NodeState::Left, 3600),
        ]
        .into_iter()
        .enumerate()
        {
            let mut n = rec();
            n.name = format!("n{i}");
            n.state = state;
            n.state_change = now.checked_sub(Duration::from_secs(age)).unwrap_or(now);
            nodes.push(n);
        }
        // alive, suspect, dead 10 s ago, left 29 s ago
        assert_eq!(est_num_nodes(nodes.iter(), now, window), 4);
        assert_eq!(
            est_num_nodes(nodes.iter(), now, Duration::from_secs(4000)),
            6
        );
        assert_eq!(
            suspicion_timeout(4, 10, Duration::from_secs(1)),
            Duration::from_secs(4)
        );
        assert_eq!(
            suspicion_timeout(4, 100, Duration::from_secs(1)),
            Duration::from_secs(8)
        );
    }

    #[test]
    fn suspicion_deadline_follows_memberlist() {
        let start = Instant::now();
        let mut s = Suspicion {
            start,
            min: Duration::from_secs(4),
            max: Duration::from_secs(24),
            k: 2,
            confirmations: HashSet::new(),
            incarnation: 1,
            from: "a".into(),
        };
        // remainingSuspicionTime: max − ln(n+1)/ln(k+1)·(max − min), floored to ms
        assert_eq!(s.deadline() - start, Duration::from_secs(24));
        s.confirmations.insert("b".into());
        assert_eq!(s.deadline() - start, Duration::from_millis(11381));
        s.confirmations.insert("c".into());
        assert_eq!(s.deadline() - start, Duration::from_secs(4));
        s.k = 0;
        s.confirmations.clear();
        assert_eq!(s.deadline() - start, Duration::from_secs(4));
    }
}
