//! Who gets into the member table, and who gets our attention.
//!
//! Anyone can send an ALIVE message naming any member at any address, and
//! Serf keeps a failed member for 24 hours, so a table of bounded size
//! fills with forgeries unless:
//! - each source address (an IPv4 address or an IPv6 /64; the UDP source of
//!   the packet or the TCP peer of the push/pull) may introduce
//!   [`NEW_MEMBERS_BURST`] new members at once and one more every
//!   [`NEW_MEMBERS_EVERY`] (the seeds we join through are not limited);
//! - a full table makes room by evicting, oldest first, a dead or left
//!   member, else a suspect one, else one that never answered a probe of ours
//!   (a member that introduced itself from its own address goes last); a
//!   member that answered a direct probe ("confirmed") is never evicted;
//! - probes alternate between confirmed and unconfirmed members (unconfirmed
//!   ones that introduced themselves first), and each gossip round sends to
//!   at most one unconfirmed member while enough confirmed ones exist: the
//!   members that answer are probed and gossiped to at their normal rate
//!   however many forgeries the table holds.

use super::members::NodeRec;
use super::stats::Dropped;
use super::{source_key, Event, Inner, State};
use crate::wire::NodeState;
use rand::seq::SliceRandom;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// New members one source may introduce at once.
pub const NEW_MEMBERS_BURST: u32 = 64;
/// After the burst, one more new member per source this often.
pub const NEW_MEMBERS_EVERY: Duration = Duration::from_secs(1);
/// Sources whose rate is remembered (the idlest are forgotten first).
pub const TRACKED_SOURCES: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let every = NEW_MEMBERS_EVERY.as_nanos().max(1);
        let n = now.saturating_duration_since(self.refilled).as_nanos() / every;
        if n > 0 {
            self.tokens = self
                .tokens
                .saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
                .min(NEW_MEMBERS_BURST);
            self.refilled += NEW_MEMBERS_EVERY * u32::try_from(n).unwrap_or(u32::MAX);
            if self.tokens == NEW_MEMBERS_BURST {
                self.refilled = now;
            }
        }
    }
}

/// Per-source token buckets for introducing new members.
#[derive(Debug, Default)]
pub struct Introductions {
    sources: HashMap<IpAddr, Bucket>,
}

impl Introductions {
    /// May `source` introduce one more new member now? Takes a token.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let key = source_key(source);
        if !self.sources.contains_key(&key) && self.sources.len() >= TRACKED_SOURCES {
            // forget full buckets (they say nothing), else the idlest
            for b in self.sources.values_mut() {
                b.refill(now);
            }
            self.sources.retain(|_, b| b.tokens < NEW_MEMBERS_BURST);
            if self.sources.len() >= TRACKED_SOURCES {
                if let Some(k) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, b)| b.refilled)
                    .map(|(k, _)| *k)
                {
                    self.sources.remove(&k);
                }
            }
        }
        let b = self.sources.entry(key).or_insert(Bucket {
            tokens: NEW_MEMBERS_BURST,
            refilled: now,
        });
        b.refill(now);
        if b.tokens == 0 {
            return false;
        }
        b.tokens -= 1;
        true
    }

    /// Sources remembered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

/// The member to evict so that a new one fits, or `None` when every member
/// is confirmed (or ourselves). `newcomer_self_introduced`: the new member
/// introduced itself from its own address, so it may also replace
/// unconfirmed members that did the same.
pub fn eviction_victim<'a>(
    nodes: impl Iterator<Item = &'a NodeRec>,
    me: &str,
    newcomer_self_introduced: bool,
) -> Option<String> {
    // rank: 0 dead/left, 1 suspect, 2 unconfirmed, 3 unconfirmed that
    // introduced itself; oldest first within a rank
    nodes
        .filter(|n| n.name != me)
        .filter_map(|n| {
            let (rank, since) = match n.state {
                NodeState::Dead | NodeState::Left => (0, n.state_change),
                NodeState::Suspect => (1, n.state_change),
                NodeState::Alive if n.confirmed => return None,
                NodeState::Alive if n.self_introduced => {
                    if !newcomer_self_introduced {
                        return None;
                    }
                    (3, n.added)
                }
                NodeState::Alive => (2, n.added),
            };
            Some((rank, since, &n.name))
        })
        .min()
        .map(|(_, _, name)| name.clone())
}

impl State {
    /// The next member to probe: confirmed and unconfirmed members take
    /// turns, each class walking its own shuffled ring (an unconfirmed
    /// member that introduced itself and was never probed goes first);
    /// dead, left and ourselves are skipped.
    pub(super) fn next_probe(&mut self, me: &str) -> Option<String> {
        self.probe_tick = self.probe_tick.wrapping_add(1);
        let want_confirmed = self.probe_tick.is_multiple_of(2);
        let probeable = |n: &NodeRec| n.name != me && !n.dead_or_left();
        if !want_confirmed {
            if let Some(n) = self
                .nodes
                .values()
                .filter(|n| probeable(n) && !n.confirmed && n.self_introduced && n.probe_n == 0)
                .min_by_key(|n| n.added)
            {
                return Some(n.name.clone());
            }
        }
        for class in [want_confirmed, !want_confirmed] {
            if let Some(name) = self.walk_ring(class, &probeable) {
                return Some(name);
            }
        }
        None
    }

    /// The next member of one class in its ring; at the end of the ring,
    /// the ring is rebuilt from the table (members that changed class move
    /// over) and shuffled, as memberlist does after each round.
    fn walk_ring(
        &mut self,
        confirmed: bool,
        probeable: &dyn Fn(&NodeRec) -> bool,
    ) -> Option<String> {
        let mut rebuilt = false;
        loop {
            let (ring, cursor) = if confirmed {
                (&mut self.probe_order, &mut self.probe_index)
            } else {
                (
                    &mut self.probe_order_unconfirmed,
                    &mut self.probe_index_unconfirmed,
                )
            };
            if *cursor >= ring.len() {
                if rebuilt {
                    return None;
                }
                rebuilt = true;
                *cursor = 0;
                ring.clear();
                ring.extend(
                    self.nodes
                        .values()
                        .filter(|n| n.confirmed == confirmed)
                        .map(|n| n.name.clone()),
                );
                ring.shuffle(&mut rand::rng());
                continue;
            }
            let name = &ring[*cursor];
            *cursor += 1;
            if let Some(n) = self.nodes.get(name) {
                if n.confirmed == confirmed && probeable(n) {
                    return Some(name.clone());
                }
            }
        }
    }

    /// Up to `n` members to gossip to: alive, suspect or dead within
    /// `dead_window`; at most one unconfirmed member while there are
    /// `n - 1` confirmed ones.
    pub(super) fn gossip_targets(
        &self,
        me: &str,
        now: Instant,
        dead_window: Duration,
        n: usize,
    ) -> Vec<SocketAddr> {
        let mut confirmed = Vec::new();
        let mut unconfirmed = Vec::new();
        for m in self.nodes.values() {
            let eligible = m.name != me
                && match m.state {
                    NodeState::Alive | NodeState::Suspect => true,
                    NodeState::Dead => now.duration_since(m.state_change) <= dead_window,
                    NodeState::Left => false,
                };
            if eligible {
                if m.confirmed {
                    confirmed.push(m.addr());
                } else {
                    unconfirmed.push(m.addr());
                }
            }
        }
        let mut rng = rand::rng();
        confirmed.shuffle(&mut rng);
        confirmed.truncate(n.saturating_sub(1));
        unconfirmed.shuffle(&mut rng);
        unconfirmed.truncate(n - confirmed.len().min(n));
        confirmed.extend(unconfirmed);
        confirmed.truncate(n);
        confirmed
    }

    /// An alive member to push/pull with: a confirmed one when there is
    /// one.
    pub(super) fn push_pull_target(&self, me: &str) -> Option<SocketAddr> {
        let alive = |c: bool| -> Vec<SocketAddr> {
            self.nodes
                .values()
                .filter(|n| n.name != me && n.state == NodeState::Alive && n.confirmed == c)
                .map(NodeRec::addr)
                .collect()
        };
        let mut pick = alive(true);
        if pick.is_empty() {
            pick = alive(false);
        }
        pick.shuffle(&mut rand::rng());
        pick.first().copied()
    }
}

impl Inner {
    /// Room for a new member `name` introduced by `source` (`None`: by
    /// ourselves or a seed we joined through): within the source's rate,
    /// and in the table, evicting another member if need be. Counts what
    /// it refuses.
    pub(super) fn admit_new_member(
        &self,
        st: &mut State,
        source: Option<IpAddr>,
        self_introduced: bool,
    ) -> bool {
        let now = Instant::now();
        if let Some(src) = source {
            if !st.intros.allow(src, now) {
                self.stats.drop(Dropped::MemberRateLimited);
                return false;
            }
        }
        if st.nodes.len() < self.cfg.max_members {
            return true;
        }
        let Some(victim) = eviction_victim(st.nodes.values(), &self.me, self_introduced) else {
            self.stats.drop(Dropped::MemberTableFull);
            return false;
        };
        self.forget_member(st, &victim);
        self.stats.drop(Dropped::MemberEvicted);
        true
    }

    /// Remove a member from the table (reaped or evicted) and tell the
    /// application.
    pub(super) fn forget_member(&self, st: &mut State, name: &str) {
        if let Some(n) = st.nodes.remove(name) {
            st.vivaldi.forget(name);
            for (ring, cursor) in [
                (&mut st.probe_order, &mut st.probe_index),
                (
                    &mut st.probe_order_unconfirmed,
                    &mut st.probe_index_unconfirmed,
                ),
            ] {
                if let Some(pos) = ring.iter().position(|x| x == name) {
                    ring.remove(pos);
                    if pos < *cursor {
                        *cursor -= 1;
                    }
                }
            }
            let m = self.member_of(st, &n);
            self.emit(Event::Reap(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::members::tests::rec;

    #[test]
    fn a_source_introduces_a_burst_then_one_a_second() {
        let mut i = Introductions::default();
        let t0 = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..NEW_MEMBERS_BURST {
            assert!(i.allow(a, t0));
        }
        assert!(!i.allow(a, t0));
        // another source has its own budget; an IPv6 /64 is one source
        assert!(i.allow(IpAddr::from([10, 0, 0, 2]), t0));
        let v6 = |x: u16| IpAddr::from([0x2001, 0xdb8, 0, 7, x, x, x, x]);
        for x in 0..NEW_MEMBERS_BURST as u16 {
            assert!(i.allow(v6(x), t0));
        }
        assert!(!i.allow(v6(999), t0));
        let t1 = t0 + NEW_MEMBERS_EVERY * 3 + Duration::from_millis(10);
        for _ in 0..3 {
            assert!(i.allow(a, t1));
        }
        assert!(!i.allow(a, t1));
        // an hour later the burst is back, and no more
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..NEW_MEMBERS_BURST {
            assert!(i.allow(a, t2));
        }
        assert!(!i.allow(a, t2));
    }

    #[test]
    fn remembered_sources_stay_bounded() {
        let mut i = Introductions::default();
        let t0 = Instant::now();
        for s in 0..(3 * TRACKED_SOURCES as u32) {
            let ip = IpAddr::from((0x0a00_0000 + s).to_be_bytes());
            i.allow(ip, t0);
            assert!(i.len() <= TRACKED_SOURCES);
        }
    }

    #[test]
    fn eviction_takes_the_dead_then_suspects_then_the_unconfirmed() {
        let t0 = Instant::now();
        let mk = |name: &str, state, age: u64, confirmed, selfi| {
            let mut n = rec();
            n.name = name.into();
            n.state = state;
            n.state_change = t0 - Duration::from_secs(age);
            n.added = t0 - Duration::from_secs(age);
            n.confirmed = confirmed;
            n.self_introduced = selfi;
            n
        };
        let mut nodes = vec![
            mk("me", NodeState::Alive, 900, false, false),
            mk("real", NodeState::Alive, 10, true, true),
            mk("fresh-real", NodeState::Alive, 1, false, true),
            mk("fake-old", NodeState::Alive, 50, false, false),
            mk("fake-new", NodeState::Alive, 5, false, false),
            mk("sus-new", NodeState::Suspect, 3, true, false),
            mk("sus-old", NodeState::Suspect, 30, false, false),
            mk("dead", NodeState::Dead, 2, true, true),
        ];
        let victim = |nodes: &Vec<NodeRec>, selfi| eviction_victim(nodes.iter(), "me", selfi);
        let mut order = Vec::new();
        while let Some(v) = victim(&nodes, false) {
            nodes.retain(|n| n.name != v);
            order.push(v);
        }
        assert_eq!(
            order,
            ["dead", "sus-old", "sus-new", "fake-old", "fake-new"]
        );
        // only a member that introduced itself may replace another such
        assert_eq!(victim(&nodes, true).as_deref(), Some("fresh-real"));
        nodes.retain(|n| n.name != "fresh-real");
        assert_eq!(victim(&nodes, true), None);
    }

    fn table(confirmed: usize, unconfirmed: usize) -> State {
        let mut st = State::new_for_tests();
        for i in 0..confirmed + unconfirmed {
            let mut n = rec();
            n.name = format!("n{i}");
            n.state = NodeState::Alive;
            n.confirmed = i < confirmed;
            n.port = i as u16;
            st.nodes.insert(n.name.clone(), n);
        }
        st
    }

    #[test]
    fn confirmed_members_keep_half_the_probes_among_thousands_of_forgeries() {
        let mut st = table(3, 4000);
        let mut hits = HashMap::<String, usize>::new();
        for _ in 0..600 {
            if let Some(t) = st.next_probe("me") {
                *hits.entry(t).or_default() += 1;
            }
        }
        // 300 probes for 3 confirmed members: 100 each (memberlist would
        // give each about one in 4000)
        for c in ["n0", "n1", "n2"] {
            assert_eq!(hits.get(c).copied(), Some(100), "{c}: {hits:?}");
        }
        assert_eq!(hits.values().sum::<usize>(), 600);
        // without confirmed members, every probe goes to the others
        let mut st = table(0, 10);
        assert!((0..30).all(|_| st.next_probe("me").is_some()));
    }

    #[test]
    fn a_member_that_introduced_itself_is_probed_first() {
        let mut st = table(2, 3000);
        if let Some(n) = st.nodes.get_mut("n2999") {
            n.self_introduced = true;
        }
        let first_two = [st.next_probe("me"), st.next_probe("me")];
        assert!(
            first_two.contains(&Some("n2999".to_string())),
            "{first_two:?}"
        );
    }

    #[test]
    fn gossip_sends_at_most_one_message_to_the_unconfirmed() {
        let st = table(5, 4000);
        let now = Instant::now();
        for _ in 0..50 {
            let t = st.gossip_targets("me", now, Duration::from_secs(30), 3);
            assert_eq!(t.len(), 3);
            let unconfirmed = t.iter().filter(|a| a.port() >= 5).count();
            assert_eq!(unconfirmed, 1, "{t:?}");
        }
        let st = table(0, 10);
        assert_eq!(
            st.gossip_targets("me", now, Duration::from_secs(30), 3)
                .len(),
            3
        );
        let st = table(1, 10);
        let t = st.gossip_targets("me", now, Duration::from_secs(30), 3);
        assert_eq!((t.len(), t.iter().filter(|a| a.port() < 1).count()), (3, 1));
        assert!(st.push_pull_target("me").is_some_and(|a| a.port() == 0));
    }
}
