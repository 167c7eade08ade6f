//! Counters of traffic and of what was dropped, and the rate-limited log
//! line that reports drops.

use super::Handle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why an input was dropped (each has a counter; see docs/discovery.md,
/// "Budgets").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// malformed, undecryptable or unauthenticated message
    Malformed,
    /// a bounded queue or table (pending acks, intents, responses) was full
    Full,
    /// user event over Serf's 9 KiB limit
    EventTooLarge,
    /// user event beyond the count or bytes kept per Lamport time
    EventSlotFull,
    /// buffered user event evicted (oldest first) to stay within the total
    EventEvicted,
    /// broadcast dropped from the full gossip queue (oldest first)
    BroadcastDropped,
    /// stream cut at its deadline
    StreamDeadline,
    /// stream refused: too many open, from one address or in all
    StreamRefused,
    /// stream longer than the stream limit
    StreamTooLarge,
    /// new member refused: its source introduced too many recently
    MemberRateLimited,
    /// new member refused: table full of members that answered probes
    MemberTableFull,
    /// member evicted (dead, suspect or never confirmed) for a new one
    MemberEvicted,
}

const KINDS: usize = 12;

impl Dropped {
    const ALL: [Dropped; KINDS] = [
        Dropped::Malformed,
        Dropped::Full,
        Dropped::EventTooLarge,
        Dropped::EventSlotFull,
        Dropped::EventEvicted,
        Dropped::BroadcastDropped,
        Dropped::StreamDeadline,
        Dropped::StreamRefused,
        Dropped::StreamTooLarge,
        Dropped::MemberRateLimited,
        Dropped::MemberTableFull,
        Dropped::MemberEvicted,
    ];

    /// The counter's name (`/metrics` label, test node output).
    pub fn name(self) -> &'static str {
        match self {
            Dropped::Malformed => "dropped_malformed",
            Dropped::Full => "dropped_full",
            Dropped::EventTooLarge => "events_too_large",
            Dropped::EventSlotFull => "events_slot_full",
            Dropped::EventEvicted => "events_evicted",
            Dropped::BroadcastDropped => "broadcasts_dropped",
            Dropped::StreamDeadline => "streams_deadline",
            Dropped::StreamRefused => "streams_refused",
            Dropped::StreamTooLarge => "streams_too_large",
            Dropped::MemberRateLimited => "members_rate_limited",
            Dropped::MemberTableFull => "members_table_full",
            Dropped::MemberEvicted => "members_evicted",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed messages",
            Dropped::Full => "messages for full queues",
            Dropped::EventTooLarge => "user events over 9 KiB",
            Dropped::EventSlotFull => "user events over the per-Lamport-time budget",
            Dropped::EventEvicted => "buffered user events for room",
            Dropped::BroadcastDropped => "broadcasts from the full gossip queue",
            Dropped::StreamDeadline => "streams at their deadline",
            Dropped::StreamRefused => "streams over the connection budget",
            Dropped::StreamTooLarge => "streams over the size limit",
            Dropped::MemberRateLimited => "new members over their source's rate",
            Dropped::MemberTableFull => "new members for a full table",
            Dropped::MemberEvicted => "members for room in the table",
        }
    }
}

/// Shortest time between two log lines about one kind of drop.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

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
    dropped: [AtomicU64; KINDS],
    /// per kind: when it was last logged, and drops since
    logged: Mutex<[(Option<Instant>, u64); KINDS]>,
}

impl Stats {
    /// Count one drop; at most every [`LOG_EVERY`] per kind, log how many
    /// were dropped since the last line.
    pub fn drop(&self, d: Dropped) {
        self.drop_n(d, 1);
    }

    /// Count `n` drops of one kind.
    pub fn drop_n(&self, d: Dropped, n: u64) {
        if n == 0 {
            return;
        }
        let i = d as usize;
        self.dropped[i].fetch_add(n, Ordering::Relaxed);
        if d == Dropped::Malformed {
            // random garbage is common on open ports; counted only
            return;
        }
        let now = Instant::now();
        let mut g = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let (last, since) = &mut g[i];
        *since += n;
        if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            tracing::warn!(
                dropped = *since,
                counter = d.name(),
                "gossip: dropped {} {} (budget; see /metrics nuvol_gossip_dropped_total)",
                *since,
                d.what()
            );
            *last = Some(now);
            *since = 0;
        }
    }

    /// One drop counter.
    pub fn dropped(&self, d: Dropped) -> u64 {
        self.dropped[d as usize].load(Ordering::Relaxed)
    }
}

/// A snapshot of [`Stats`] and of how full the budgets are.
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
    /// see [`Dropped::EventTooLarge`]
    pub events_too_large: u64,
    /// see [`Dropped::EventSlotFull`]
    pub events_slot_full: u64,
    /// see [`Dropped::EventEvicted`]
    pub events_evicted: u64,
    /// see [`Dropped::BroadcastDropped`]
    pub broadcasts_dropped: u64,
    /// see [`Dropped::StreamDeadline`]
    pub streams_deadline: u64,
    /// see [`Dropped::StreamRefused`]
    pub streams_refused: u64,
    /// see [`Dropped::StreamTooLarge`]
    pub streams_too_large: u64,
    /// see [`Dropped::MemberRateLimited`]
    pub members_rate_limited: u64,
    /// see [`Dropped::MemberTableFull`]
    pub members_table_full: u64,
    /// see [`Dropped::MemberEvicted`]
    pub members_evicted: u64,
    /// gauge: members in the table (ourselves included)
    pub members: u64,
    /// gauge: members that answered one of our direct probes
    pub members_confirmed: u64,
    /// gauge: user events held for de-duplication and push/pull
    pub event_buffer_events: u64,
    /// gauge: their name and payload bytes
    pub event_buffer_bytes: u64,
    /// gauge: messages waiting in the gossip queue
    pub broadcast_queue: u64,
    /// gauge: their bytes
    pub broadcast_queue_bytes: u64,
    /// gauge: stream connections being served
    pub streams_open: u64,
    /// gauge: bytes buffered by them
    pub stream_bytes: u64,
}

impl StatsSnapshot {
    /// Every counter with its name, for `/metrics` and the test node.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("packets_in", self.packets_in),
            ("packets_out", self.packets_out),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
        ]
    }

    /// Every drop counter: its [`Dropped::name`] and value.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        let v = [
            self.dropped_malformed,
            self.dropped_full,
            self.events_too_large,
            self.events_slot_full,
            self.events_evicted,
            self.broadcasts_dropped,
            self.streams_deadline,
            self.streams_refused,
            self.streams_too_large,
            self.members_rate_limited,
            self.members_table_full,
            self.members_evicted,
        ];
        Dropped::ALL.iter().map(|d| d.name()).zip(v).collect()
    }

    /// Every gauge with its name.
    pub fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("members", self.members),
            ("members_confirmed", self.members_confirmed),
            ("event_buffer_events", self.event_buffer_events),
            ("event_buffer_bytes", self.event_buffer_bytes),
            ("broadcast_queue", self.broadcast_queue),
            ("broadcast_queue_bytes", self.broadcast_queue_bytes),
            ("streams_open", self.streams_open),
            ("stream_bytes", self.stream_bytes),
        ]
    }

    /// Counters, drops and gauges, in that order.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.counters();
        v.extend(self.drops());
        v.extend(self.gauges());
        v
    }
}

impl Handle {
    /// Counters, and how full the budgets are now.
    pub fn stats(&self) -> StatsSnapshot {
        let i = &self.inner;
        let s = &i.stats;
        let d = |k| s.dropped(k);
        let st = i.st();
        StatsSnapshot {
            packets_in: s.packets_in.load(Ordering::Relaxed),
            packets_out: s.packets_out.load(Ordering::Relaxed),
            bytes_in: s.bytes_in.load(Ordering::Relaxed),
            bytes_out: s.bytes_out.load(Ordering::Relaxed),
            dropped_malformed: d(Dropped::Malformed),
            dropped_full: d(Dropped::Full),
            events_too_large: d(Dropped::EventTooLarge),
            events_slot_full: d(Dropped::EventSlotFull),
            events_evicted: d(Dropped::EventEvicted),
            broadcasts_dropped: d(Dropped::BroadcastDropped),
            streams_deadline: d(Dropped::StreamDeadline),
            streams_refused: d(Dropped::StreamRefused),
            streams_too_large: d(Dropped::StreamTooLarge),
            members_rate_limited: d(Dropped::MemberRateLimited),
            members_table_full: d(Dropped::MemberTableFull),
            members_evicted: d(Dropped::MemberEvicted),
            members: st.nodes.len() as u64,
            members_confirmed: st.nodes.values().filter(|n| n.confirmed).count() as u64,
            event_buffer_events: st.events.count() as u64,
            event_buffer_bytes: st.events.bytes() as u64,
            broadcast_queue: st.bcasts.len() as u64,
            broadcast_queue_bytes: st.bcast_bytes as u64,
            streams_open: i.streams.open() as u64,
            stream_bytes: i.streams.bytes() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_kind_has_its_own_counter_and_name() {
        let s = Stats::default();
        for (n, d) in Dropped::ALL.iter().enumerate() {
            s.drop_n(*d, n as u64 + 1);
        }
        let names: std::collections::HashSet<_> = Dropped::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), KINDS);
        for (n, d) in Dropped::ALL.iter().enumerate() {
            assert_eq!(s.dropped(*d), n as u64 + 1, "{}", d.name());
        }
    }
}
