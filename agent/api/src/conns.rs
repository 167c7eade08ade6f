//! The connection budget: how many HTTP(S) connections the agent holds at
//! once, per source and in total, and which one goes when a new one
//! arrives at a limit.
//!
//! A super-node faces strangers' machines: idle and slow connections must
//! not use up the agent's file descriptors (which the box's own work, its
//! containers, gossip and state writes, needs too), nor its memory, nor its
//! time. Connections are counted in two tiers:
//!
//! - **waiting:** accepted, nothing received yet. Such a connection costs
//!   a socket and a small task (no TLS or HTTP state: `crate::accept`), so
//!   many are held ([`Limits::waiting`], up to [`MAX_WAITING`]): a flood of
//!   silent connections then sits out its 10 s head deadline instead of
//!   being closed and reopened as fast as the attacker can, which is what
//!   costs the box CPU. At the limit the oldest waiting one goes.
//! - **talking:** it sent a byte, so it gets buffers and a parser; at most
//!   [`Limits::total`] ([`MAX_CONNECTIONS`]). When one more starts
//!   talking, the talking connection *idle* longest (no request being
//!   answered: waiting for the rest of a head, a keep-alive pause, a TLS
//!   handshake) is closed to make room. One whose request is being
//!   answered (a download, an upload, a log follow) is never closed for
//!   this; when every talking connection is busy the new one is closed.
//!
//! Per source ([`Limits::per_addr`], both tiers together): an IPv4 address
//! or an IPv6 /64 (one household's prefix: an attacker has 2^64 addresses
//! in it). At the limit the source's own oldest idle connection makes room,
//! else the new one is refused.
//!
//! Counters (`/metrics`): connections open and waiting, admitted, closed to
//! admit another (evicted), refused.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most talking connections at once (lowered when the fd limit is low).
pub const MAX_CONNECTIONS: usize = 256;
/// Most waiting (silent) connections at once (lowered likewise).
pub const MAX_WAITING: usize = 4096;
/// Most connections from one source (a household behind one NAT, a
/// script asking 50 things at once).
pub const MAX_PER_ADDRESS: usize = 64;
/// File descriptors kept for the box's own work: both tiers together take
/// at most a quarter of the fd limit.
pub const FD_SHARE: u64 = 4;

/// The budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Talking connections.
    pub total: usize,
    /// Waiting connections.
    pub waiting: usize,
    /// Connections from one source, both tiers.
    pub per_addr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: MAX_CONNECTIONS,
            waiting: MAX_WAITING,
            per_addr: MAX_PER_ADDRESS,
        }
    }
}

impl Limits {
    /// The default budget, cut to a quarter of `fd_limit` (the process's
    /// soft `RLIMIT_NOFILE`) so three quarters stay for everything else:
    /// half of the quarter (at most [`MAX_CONNECTIONS`]) for talking
    /// connections, the rest (at most [`MAX_WAITING`]) for waiting ones.
    pub fn for_fd_limit(fd_limit: u64) -> Limits {
        // Saturating: a 32-bit usize cannot hold every u64 limit.
        let budget = usize::try_from(fd_limit / FD_SHARE)
            .unwrap_or(usize::MAX)
            .max(16);
        let total = (budget / 2).clamp(8, MAX_CONNECTIONS);
        let waiting = (budget - total).clamp(8, MAX_WAITING);
        Limits {
            total,
            waiting,
            per_addr: MAX_PER_ADDRESS.min(total),
        }
    }
}

/// Where a connection comes from, as the budget counts it: the IPv4
/// address, or the /64 of an IPv6 one.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

struct Entry {
    src: IpAddr,
    /// Sent at least a byte (the talking tier).
    talking: bool,
    /// Requests being answered (head read, body not yet sent).
    busy: usize,
    /// Since when the connection has had nothing being answered.
    idle_since: Instant,
    kill: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Waiting connections, oldest (lowest id) first.
    waiting: BTreeSet<u64>,
    /// Talking connections (at most [`Limits::total`]: the eviction scan
    /// walks these, never the waiting thousands).
    talking: HashSet<u64>,
    /// Each source's connections.
    per_src: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if e.talking {
            self.talking.remove(&id);
        } else {
            self.waiting.remove(&id);
        }
        if let Some(ids) = self.per_src.get_mut(&e.src) {
            ids.remove(&id);
            if ids.is_empty() {
                self.per_src.remove(&e.src);
            }
        }
        Some(e)
    }

    fn close(&mut self, id: u64) -> bool {
        match self.remove(id) {
            Some(e) => {
                e.kill.notify_one();
                true
            }
            None => false,
        }
    }

    /// Make room among `src`'s connections: its oldest waiting one, else
    /// its talking one idle longest.
    fn evict_from(&mut self, src: IpAddr) -> bool {
        let Some(ids) = self.per_src.get(&src) else {
            return false;
        };
        let conns = &self.conns;
        let waiting = ids
            .iter()
            .copied()
            .find(|id| conns.get(id).is_some_and(|e| !e.talking));
        let victim = waiting.or_else(|| {
            ids.iter()
                .filter_map(|id| conns.get(id).map(|e| (*id, e)))
                .filter(|(_, e)| e.busy == 0)
                .min_by_key(|(id, e)| (e.idle_since, *id))
                .map(|(id, _)| id)
        });
        victim.is_some_and(|id| self.close(id))
    }

    /// Make room among talking connections (not `except`): the one idle
    /// longest.
    fn evict_talking(&mut self, except: u64) -> bool {
        let victim = self
            .talking
            .iter()
            .filter(|id| **id != except)
            .filter_map(|id| self.conns.get(id).map(|e| (*id, e)))
            .filter(|(_, e)| e.busy == 0)
            .min_by_key(|(id, e)| (e.idle_since, *id))
            .map(|(id, _)| id);
        victim.is_some_and(|id| self.close(id))
    }
}

/// The open connections.
pub struct Table {
    limits: Limits,
    inner: Mutex<Inner>,
    admitted: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub open: usize,
    pub waiting: usize,
    pub admitted: u64,
    pub evicted: u64,
    pub refused: u64,
}

impl Table {
    pub fn new(limits: Limits) -> Arc<Table> {
        Arc::new(Table {
            limits,
            inner: Mutex::new(Inner::default()),
            admitted: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make room for a new (waiting) connection from `ip` and take a slot,
    /// or `None` (refused: close it) when every connection of its source
    /// is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let src = source(ip);
        let mut t = self.lock();
        if t.per_src.get(&src).map_or(0, BTreeSet::len) >= self.limits.per_addr {
            if !t.evict_from(src) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        if t.waiting.len() >= self.limits.waiting {
            if let Some(oldest) = t.waiting.first().copied() {
                t.close(oldest);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let kill = Arc::new(tokio::sync::Notify::new());
        t.conns.insert(
            id,
            Entry {
                src,
                talking: false,
                busy: 0,
                idle_since: Instant::now(),
                kill: kill.clone(),
            },
        );
        t.waiting.insert(id);
        t.per_src.entry(src).or_default().insert(id);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            table: self.clone(),
            id,
            kill,
        })
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        let t = self.lock();
        Counts {
            open: t.conns.len(),
            waiting: t.waiting.len(),
            admitted: self.admitted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// What [`Slot::talking`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Talking {
    /// There was room.
    Admitted,
    /// Another talking connection was told to close to make room: let it
    /// go (yield to it) before taking buffers, or a burst of new talkers
    /// holds the buffers of both at once.
    MadeRoom,
    /// Close it (counted as refused): every talking connection is busy,
    /// or it was itself closed to make room for another.
    Refused,
}

/// One admitted connection; dropping it frees the slot.
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    kill: Arc<tokio::sync::Notify>,
}

impl Slot {
    /// Resolves when the connection was chosen to make room for another.
    pub async fn evicted(&self) {
        self.kill.notified().await
    }

    /// The connection sent its first byte: move it to the talking tier,
    /// making room there (see [`Talking`]).
    pub fn talking(&self) -> Talking {
        let table = &self.table;
        let mut t = table.lock();
        match t.conns.get(&self.id) {
            Some(e) if !e.talking => {}
            Some(_) => return Talking::Admitted,
            None => return Talking::Refused,
        }
        let mut made_room = false;
        if t.talking.len() >= table.limits.total {
            if !t.evict_talking(self.id) {
                table.refused.fetch_add(1, Ordering::Relaxed);
                return Talking::Refused;
            }
            table.evicted.fetch_add(1, Ordering::Relaxed);
            made_room = true;
        }
        t.waiting.remove(&self.id);
        t.talking.insert(self.id);
        if let Some(e) = t.conns.get_mut(&self.id) {
            e.talking = true;
            e.idle_since = Instant::now();
        }
        if made_room {
            Talking::MadeRoom
        } else {
            Talking::Admitted
        }
    }

    /// Mark a request being answered until the guard drops.
    pub fn busy(&self) -> Busy {
        if let Some(e) = self.table.lock().conns.get_mut(&self.id) {
            e.busy += 1;
        }
        Busy {
            table: self.table.clone(),
            id: self.id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// A request being answered on a connection (see [`Slot::busy`]).
pub struct Busy {
    table: Arc<Table>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(e) = self.table.lock().conns.get_mut(&self.id) {
            e.busy = e.busy.saturating_sub(1);
            if e.busy == 0 {
                e.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn told_to_close(s: &Slot) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut f = std::pin::pin!(s.evicted());
        f.as_mut().poll(&mut cx).is_ready()
    }

    fn limits(total: usize, waiting: usize, per_addr: usize) -> Limits {
        Limits {
            total,
            waiting,
            per_addr,
        }
    }

    #[test]
    fn among_talking_ones_the_idle_longest_goes_and_busy_ones_stay() {
        let t = Table::new(limits(3, 10, 2));
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        let c = t.admit(ip(3)).unwrap();
        for s in [&a, &b, &c] {
            assert_eq!(s.talking(), Talking::Admitted);
        }
        let _busy = a.busy();
        // Full of talking ones: b (idle longest, a is busy) makes room.
        let d = t.admit(ip(4)).unwrap();
        assert!(!told_to_close(&b), "waiting costs the talking no room");
        assert_eq!(d.talking(), Talking::MadeRoom);
        assert!(told_to_close(&b), "b was told to close");
        assert!(!told_to_close(&c));
        let counts = t.counts();
        assert_eq!((counts.open, counts.waiting, counts.evicted), (3, 0, 1));
        // Every talking one busy: one more starting to talk is refused.
        let _c = c.busy();
        let _d = d.busy();
        let e = t.admit(ip(5)).unwrap();
        assert_eq!(e.talking(), Talking::Refused);
        assert_eq!(t.counts().refused, 1);
    }

    #[test]
    fn silent_ones_wait_in_their_own_tier_oldest_out_first() {
        let t = Table::new(limits(2, 3, 10));
        let talker = t.admit(ip(9)).unwrap();
        assert_eq!(talker.talking(), Talking::Admitted);
        let w: Vec<Slot> = (1..=3).map(|n| t.admit(ip(n)).unwrap()).collect();
        assert_eq!(t.counts().waiting, 3);
        let _x = t.admit(ip(4)).unwrap();
        assert!(told_to_close(&w[0]), "the oldest waiting one went");
        assert!(!told_to_close(&w[1]) && !told_to_close(&talker));
        let c = t.counts();
        assert_eq!((c.open, c.waiting, c.evicted), (4, 3, 1));
        // A connection closed to make room cannot start talking.
        assert_eq!(w[0].talking(), Talking::Refused);
    }

    #[test]
    fn a_source_at_its_limit_makes_room_from_its_own() {
        let t = Table::new(limits(10, 10, 2));
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(1)).unwrap();
        assert_eq!(
            (a.talking(), b.talking()),
            (Talking::Admitted, Talking::Admitted)
        );
        let _a = a.busy();
        // b is idle: it goes for the third.
        let c = t.admit(ip(1)).unwrap();
        assert!(told_to_close(&b));
        drop(b);
        // A waiting one goes before a talking idle one.
        let _other = t.admit(ip(2)).unwrap();
        let _c_busy = c.busy();
        assert_eq!(c.talking(), Talking::Admitted);
        // Both of 10.0.0.1's connections busy: refused.
        assert!(t.admit(ip(1)).is_none());
        assert_eq!(t.counts().refused, 1);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source(mapped), ip(1));
        let t = Table::new(limits(10, 10, 2));
        let _x = t.admit(a).unwrap();
        let y = t.admit(b).unwrap();
        let _z = t.admit(c).unwrap();
        // A third from the same /64 pushes the oldest of the two out.
        let _w = t.admit("2001:db8:1:2::77".parse().unwrap()).unwrap();
        assert!(!told_to_close(&y));
        assert_eq!(t.counts().open, 3);
    }

    #[test]
    fn a_quarter_of_the_fds_at_most() {
        let l = Limits::for_fd_limit(1024);
        assert_eq!((l.total, l.waiting), (128, 128));
        let l = Limits::for_fd_limit(4096);
        assert_eq!((l.total, l.waiting), (256, 768));
        assert_eq!(Limits::for_fd_limit(65536), Limits::default());
        // A limit a 32-bit usize cannot hold saturates, it does not wrap.
        assert_eq!(Limits::for_fd_limit(1 << 34), Limits::default());
        assert_eq!(Limits::for_fd_limit(u64::MAX), Limits::default());
        let l = Limits::for_fd_limit(0);
        assert_eq!((l.total, l.waiting, l.per_addr), (8, 8, 8));
    }
}
