//! The member table: memberlist's alive/suspect/dead transitions, the
//! push/pull node merge, and Serf's member status and join/leave intents.

use super::stats::Dropped;
use super::transport::user_msg;
use super::{
    bytes_to_ip, ip_to_bytes, witness, Event, Health, Inner, State, Status, LOSS_MIN_PROBES,
    LOSS_WINDOW, MAX_INTENTS, MAX_NAME, VSN,
};
use crate::coordinate::Coordinate;
use crate::serf::{self, Intent};
use crate::wire::{self, ty, Accusation, Alive, NodeState};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub(super) struct NodeRec {
    pub(super) name: String,
    pub(super) ip: IpAddr,
    pub(super) port: u16,
    pub(super) meta: Vec<u8>,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) incarnation: u32,
    pub(super) state: NodeState,
    pub(super) state_change: Instant,
    pub(super) vsn: [u8; 6],
    pub(super) suspicion: Option<Suspicion>,
    pub(super) status: Status,
    pub(super) status_ltime: u64,
    pub(super) leave_time: Option<Instant>,
    pub(super) rtt: Option<Duration>,
    pub(super) coord: Option<Coordinate>,
    /// direct probe outcomes, newest in bit 0 (1 = acked in time)
    pub(super) probe_bits: u32,
    /// how many outcomes `probe_bits` holds (≤ LOSS_WINDOW)
    pub(super) probe_n: u32,
    /// answered a direct probe of ours at its address (since it was last
    /// declared dead or moved)
    pub(super) confirmed: bool,
    /// its first ALIVE came from its own address
    pub(super) self_introduced: bool,
    /// when it entered the table
    pub(super) added: Instant,
}

impl NodeRec {
    pub(super) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    pub(super) fn ip_bytes(&self) -> Vec<u8> {
        ip_to_bytes(self.ip)
    }
    pub(super) fn dead_or_left(&self) -> bool {
        matches!(self.state, NodeState::Dead | NodeState::Left)
    }
    pub(super) fn health(&self) -> Health {
        match self.state {
            NodeState::Alive => Health::Alive,
            NodeState::Suspect => Health::Suspect,
            NodeState::Dead => Health::Dead,
            NodeState::Left => Health::Left,
        }
    }
    pub(super) fn record_probe(&mut self, acked: bool) {
        self.probe_bits = (self.probe_bits << 1) | u32::from(acked);
        self.probe_n = (self.probe_n + 1).min(LOSS_WINDOW);
    }
    pub(super) fn loss(&self) -> Option<f64> {
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

pub(super) struct Suspicion {
    pub(super) start: Instant,
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) k: u32,
    pub(super) confirmations: HashSet<String>,
    pub(super) incarnation: u32,
    pub(super) from: String,
}

impl Suspicion {
    pub(super) fn deadline(&self) -> Instant {
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

pub(super) fn est_num_nodes<'a>(
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

pub(super) fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    Duration::from_secs_f64(f64::from(mult) * scale * interval.as_secs_f64())
}

impl Inner {
    pub(super) fn local_alive(&self, st: &State) -> Alive {
        Alive {
            incarnation: st.incarnation,
            node: self.me.clone(),
            addr: ip_to_bytes(self.adv.ip()),
            port: self.adv.port(),
            meta: serf::encode_tags(&st.tags),
            vsn: VSN.to_vec(),
        }
    }

    pub(super) fn refute(&self, st: &mut State, accused: u32) {
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

    /// An ALIVE for `a.node`, received from `source` (`None`: ourselves, or
    /// a seed we joined through).
    pub(super) fn alive_node(
        &self,
        st: &mut State,
        a: &Alive,
        bootstrap: bool,
        source: Option<IpAddr>,
    ) {
        if st.left && a.node == self.me {
            return;
        }
        let Some(ip) = bytes_to_ip(&a.addr) else {
            self.stats.drop(Dropped::Malformed);
            return;
        };
        if a.vsn.len() >= 3 && (a.vsn[0] == 0 || a.vsn[1] == 0 || a.vsn[0] > a.vsn[1]) {
            return;
        }
        if a.meta.len() > wire::META_MAX || a.node.is_empty() || a.node.len() > MAX_NAME {
            self.stats.drop(Dropped::Malformed);
            return;
        }
        let mut vsn = [0u8; 6];
        if a.vsn.len() >= 6 {
            vsn.copy_from_slice(&a.vsn[..6]);
        }
        let mut updates_node = false;
        let is_new = !st.nodes.contains_key(&a.node);
        if is_new {
            let self_introduced = source.is_some_and(|s| s.to_canonical() == ip.to_canonical());
            if !self.admit_new_member(st, source, self_introduced) {
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
                    confirmed: false,
                    self_introduced,
                    added: Instant::now(),
                },
            );
            let ring = &mut st.probe_order_unconfirmed;
            let pos = rand::random_range(0..=ring.len());
            ring.insert(pos, a.node.clone());
            if pos < st.probe_index_unconfirmed {
                st.probe_index_unconfirmed += 1;
            }
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
        if n.ip != ip || n.port != a.port {
            // a new address has to answer before it counts as confirmed
            n.confirmed = false;
        }
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

    pub(super) fn suspect_node(&self, st: &mut State, s: &Accusation) {
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

    pub(super) fn dead_node(&self, st: &mut State, d: &Accusation) {
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
        n.confirmed = false;
        st.queue(
            Some((ty::ALIVE, d.node.clone())),
            d.encode(ty::DEAD),
            &self.stats,
        );
        if d.node != self.me {
            self.serf_node_leave(st, &d.node);
        }
    }

    /// Merge a push/pull node list received from `source` (`None`: a seed
    /// we joined through).
    pub(super) fn merge_state(
        &self,
        st: &mut State,
        remote: &[wire::PushNodeState],
        source: Option<IpAddr>,
    ) {
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
                    self.alive_node(st, &a, false, source);
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

    pub(super) fn serf_node_join(&self, st: &mut State, name: &str, is_new: bool) {
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

    pub(super) fn serf_node_leave(&self, st: &mut State, name: &str) {
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

    /// Remember an intent for a member we do not know yet (it may arrive
    /// before the member's ALIVE); names as long as members' at most.
    pub(super) fn upsert_intent(&self, st: &mut State, name: &str, t: u8, ltime: u64) -> bool {
        if name.is_empty() || name.len() > MAX_NAME {
            self.stats.drop(Dropped::Malformed);
            return false;
        }
        if let Some(e) = st.intents.get(name) {
            if ltime <= e.1 {
                return false;
            }
        } else if st.intents.len() >= MAX_INTENTS {
            self.stats.drop(Dropped::Full);
            return false;
        }
        st.intents
            .insert(name.to_string(), (t, ltime, Instant::now()));
        true
    }

    pub(super) fn handle_leave_intent(&self, st: &mut State, l: &Intent) -> bool {
        witness(&mut st.clock, l.ltime);
        let Some(n) = st.nodes.get_mut(&l.node) else {
            return self.upsert_intent(st, &l.node, serf::ty::LEAVE, l.ltime);
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

    pub(super) fn handle_join_intent(&self, st: &mut State, j: &Intent) -> bool {
        witness(&mut st.clock, j.ltime);
        let Some(n) = st.nodes.get_mut(&j.node) else {
            return self.upsert_intent(st, &j.node, serf::ty::JOIN, j.ltime);
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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A member record for unit tests.
    pub(in crate::node) fn rec() -> NodeRec {
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
            confirmed: false,
            self_introduced: false,
            added: Instant::now(),
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
