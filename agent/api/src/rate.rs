//! The request budget per source: how fast one address may ask.
//!
//! The connection budget (`crate::conns`) bounds how many connections a
//! source holds; it does not bound how fast a source opens and closes them,
//! or how many requests it sends on one. A stranger looping on a cheap
//! public page (`/share/v1/bundles`, `/api/v1/status`) from one machine
//! would otherwise take the agent's whole runtime thread, and everyone
//! else's requests would queue behind theirs.
//!
//! Each source (`crate::conns::source`: an IPv4 address or an IPv6 /64)
//! has a token bucket of [`Budget::burst`] requests refilled at
//! [`Budget::per_sec`]. A request takes one token; without one it is held
//! for [`TARPIT`] and then answered 429 `rate_limited` with `Retry-After`,
//! its connection closed. The hold is what keeps a flood cheap: a client
//! looping as fast as it can waits on each refused request instead of
//! asking again at once (a reset at the door was tried first: the
//! attacker reconnected some 30,000 times a second and the accept queue,
//! which honest clients share, was never empty). A held request is a
//! sleeping task on a connection the connection budget already counts,
//! so a source holds at most its per-source connections that way. The
//! table holds at most [`MAX_SOURCES`]; when it is full, full buckets
//! (sources that went quiet) go first, then the stalest.
//!
//! Not limited: the box itself, `127.0.0.1` and `::1` (`nuvol ctl` on the
//! box, scripts an owner runs there). Nothing from the network has them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a request over the budget waits before its 429.
pub const TARPIT: Duration = Duration::from_secs(1);

/// Sources tracked at once.
pub const MAX_SOURCES: usize = 4096;

/// The box's own address: not limited.
fn own(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// Requests per source: sustained rate and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_sec: f64,
    pub burst: f64,
}

impl Default for Budget {
    /// 100 requests a second, 300 at once: far above a panel in a browser
    /// (a page is a handful of requests), a script polling the API, or a
    /// whole household behind one NAT; far below what one looping client
    /// sends (thousands a second).
    fn default() -> Self {
        Budget {
            per_sec: 100.0,
            burst: 300.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The per-source request budget.
pub struct Rate {
    budget: Budget,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    limited: AtomicU64,
}

impl Rate {
    pub fn new(budget: Budget) -> Rate {
        Rate {
            budget,
            buckets: Mutex::new(HashMap::new()),
            limited: AtomicU64::new(0),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * self.budget.per_sec).min(self.budget.burst);
        b.at = now;
    }

    /// One request from `ip`: `Ok` with a token taken, or `Err` with how
    /// long until the source has one again.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        if own(ip) {
            return Ok(());
        }
        self.take_at(crate::conns::source(ip), Instant::now())
    }

    fn take_at(&self, src: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(&src) && m.len() >= MAX_SOURCES {
            self.make_room(&mut m, now);
        }
        let b = m.entry(src).or_insert(Bucket {
            tokens: self.budget.burst,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        self.limited.fetch_add(1, Ordering::Relaxed);
        let wait = (1.0 - b.tokens) / self.budget.per_sec;
        Err(Duration::from_secs_f64(wait.max(0.001)))
    }

    fn make_room(&self, m: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = self.budget.burst;
        let per_sec = self.budget.per_sec;
        m.retain(|_, b| {
            let dt = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + dt * per_sec < burst
        });
        if m.len() >= MAX_SOURCES {
            if let Some(stalest) = m.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                m.remove(&stalest);
            }
        }
    }

    /// Requests answered 429 so far.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Sources in the table.
    pub fn sources(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_burst_then_the_rate() {
        let r = Rate::new(Budget {
            per_sec: 10.0,
            burst: 5.0,
        });
        let t = Instant::now();
        for _ in 0..5 {
            assert!(r.take_at(ip(1), t).is_ok());
        }
        let wait = r.take_at(ip(1), t).unwrap_err();
        assert!(wait <= Duration::from_millis(101), "{wait:?}");
        // Another source is not touched.
        assert!(r.take_at(ip(2), t).is_ok());
        // 100 ms later one token is back.
        let later = t + Duration::from_millis(100);
        assert!(r.take_at(ip(1), later).is_ok());
        assert!(r.take_at(ip(1), later).is_err());
        assert_eq!(r.limited(), 2);
    }

    #[test]
    fn the_table_stays_bounded_and_quiet_sources_go_first() {
        let r = Rate::new(Budget {
            per_sec: 1.0,
            burst: 2.0,
        });
        let t = Instant::now();
        // One busy source with an empty bucket.
        assert!(r.take_at(ip(0), t).is_ok());
        assert!(r.take_at(ip(0), t).is_ok());
        for n in 1..(MAX_SOURCES as u32 + 100) {
            let _ = r.take_at(ip(n), t + Duration::from_secs(10));
        }
        assert!(r.sources() <= MAX_SOURCES);
        // The busy one was refilled meanwhile (10 s), so it may have gone;
        // either way it starts with a full bucket, never a debt.
        assert!(r.take_at(ip(0), t + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn the_box_itself_is_not_limited() {
        let r = Rate::new(Budget {
            per_sec: 1.0,
            burst: 1.0,
        });
        for _ in 0..10 {
            assert!(r.take("127.0.0.1".parse().unwrap()).is_ok());
            assert!(r.take("::1".parse().unwrap()).is_ok());
        }
        // Other loopback addresses are counted (the attack bench's
        // attackers use them).
        assert!(r.take("127.2.0.1".parse().unwrap()).is_ok());
        assert!(r.take("127.2.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let r = Rate::new(Budget {
            per_sec: 1.0,
            burst: 1.0,
        });
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert!(r.take(a).is_ok());
        assert!(r.take(b).is_err());
    }
}
