//! The connection budget: how many HTTP(S) connections the agent holds at
//! once, in total and per source address, and which one goes when a new
//! one arrives at the limit.
//!
//! A super-node faces strangers' machines: idle and slow connections must
//! not use up the agent's file descriptors (which the box's own work, its
//! containers, gossip and state writes, needs too). So:
//!
//! - at most [`Limits::total`] connections at once, well below the fd
//!   limit ([`Limits::for_fd_limit`]);
//! - at most [`Limits::per_addr`] from one address;
//! - at either limit, the connection that has been *idle* longest (no
//!   request being answered: waiting for a request head, a keep-alive
//!   pause, a TLS handshake) is closed to admit the new one. A connection
//!   whose request is being answered (a download, an upload, a log follow)
//!   is never closed for this; when every connection is busy the new one
//!   is refused (closed at once).
//!
//! Counters (`/metrics`): connections open, admitted, closed to admit
//! another (evicted), refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most connections at once (lowered when the fd limit is low).
pub const MAX_CONNECTIONS: usize = 256;
/// Most connections from one address (a household behind one NAT, a
/// script asking 50 things at once).
pub const MAX_PER_ADDRESS: usize = 64;
/// File descriptors kept for the box's own work: the total is at most a
/// quarter of the fd limit.
pub const FD_SHARE: u64 = 4;

/// The budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_addr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: MAX_CONNECTIONS,
            per_addr: MAX_PER_ADDRESS,
        }
    }
}

impl Limits {
    /// The default budget, cut to a quarter of `fd_limit` (the process's
    /// soft `RLIMIT_NOFILE`) so three quarters stay for everything else.
    pub fn for_fd_limit(fd_limit: u64) -> Limits {
        let total = (fd_limit / FD_SHARE).clamp(8, MAX_CONNECTIONS as u64) as usize;
        Limits {
            total,
            per_addr: MAX_PER_ADDRESS.min(total),
        }
    }
}

struct Entry {
    ip: IpAddr,
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
    per_addr: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.conns.remove(&id)?;
        if let Some(n) = self.per_addr.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&e.ip);
            }
        }
        Some(e)
    }

    /// Close the connection idle longest (among those from `ip`, if given).
    fn evict(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, e)| e.busy == 0 && ip.is_none_or(|ip| e.ip == ip))
            .min_by_key(|(id, e)| (e.idle_since, **id))
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.remove(id)) {
            Some(e) => {
                e.kill.notify_one();
                true
            }
            None => false,
        }
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

    /// Make room for a new connection from `ip` and take a slot, or `None`
    /// (refused: close it) when every connection in its way is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut t = self.lock();
        if t.per_addr.get(&ip).copied().unwrap_or(0) >= self.limits.per_addr {
            if !t.evict(Some(ip)) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        if t.conns.len() >= self.limits.total {
            if !t.evict(None) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = t.next_id;
        t.next_id += 1;
        let kill = Arc::new(tokio::sync::Notify::new());
        t.conns.insert(
            id,
            Entry {
                ip,
                busy: 0,
                idle_since: Instant::now(),
                kill: kill.clone(),
            },
        );
        *t.per_addr.entry(ip).or_default() += 1;
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            table: self.clone(),
            id,
            kill,
        })
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        Counts {
            open: self.lock().conns.len(),
            admitted: self.admitted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
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

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_idle_longest_goes_and_busy_ones_stay() {
        let t = Table::new(Limits {
            total: 3,
            per_addr: 2,
        });
        let a = t.admit(ip(1)).unwrap();
        let b = t.admit(ip(2)).unwrap();
        let c = t.admit(ip(3)).unwrap();
        let _busy = a.busy();
        // Full: b (idle longest, a is busy) makes room.
        let d = t.admit(ip(4)).unwrap();
        let counts = t.counts();
        assert_eq!((counts.open, counts.evicted), (3, 1));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        {
            let mut f = std::pin::pin!(b.evicted());
            assert!(f.as_mut().poll(&mut cx).is_ready(), "b was told to close");
            let mut f = std::pin::pin!(c.evicted());
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        drop((c, d));
        // Per address: the third from 10.0.0.1 replaces its idle sibling.
        let e = t.admit(ip(1)).unwrap();
        let f2 = t.admit(ip(1));
        assert!(f2.is_some(), "e was idle: it made room");
        let _e_busy = e.busy();
        let _f_busy = f2.as_ref().unwrap().busy();
        // Both of 10.0.0.1's connections busy: refused.
        assert!(t.admit(ip(1)).is_none());
        assert_eq!(t.counts().refused, 1);
    }

    #[test]
    fn a_quarter_of_the_fds_at_most() {
        assert_eq!(Limits::for_fd_limit(1024).total, 256);
        assert_eq!(Limits::for_fd_limit(400).total, 100);
        assert_eq!(Limits::for_fd_limit(65536), Limits::default());
        assert_eq!(Limits::for_fd_limit(0).total, 8);
    }

    use std::future::Future;
}
