//! The recent-events log: every gossip event gets an increasing id and a
//! time, the last [`RECENT_EVENTS`] are kept, and subscribers receive them
//! as they happen. The panel shows the recent ones and, through
//! `GET /api/v1/events?since=ID` (or the SSE `Last-Event-ID` header), a
//! client that reconnects gets what it missed instead of a gap.

use nuvol_gossip::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events kept for the panel and for clients that reconnect.
pub const RECENT_EVENTS: usize = 50;
/// Events a slow subscriber may fall behind before it is told it lagged.
const SUBSCRIBER_QUEUE: usize = 256;

/// One event with its place in the log.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// 1, 2, 3 … in the order the events happened (restarts from 1 when the
    /// agent restarts)
    pub id: u64,
    /// when it was logged, milliseconds since the Unix epoch
    pub at_unix_ms: u64,
    /// the event
    pub event: Event,
}

/// The log (cheap to clone: all clones share one ring).
#[derive(Debug, Clone)]
pub struct EventLog {
    ring: Arc<Mutex<Ring>>,
    tx: broadcast::Sender<Arc<LoggedEvent>>,
}

#[derive(Debug, Default)]
struct Ring {
    next_id: u64,
    events: VecDeque<Arc<LoggedEvent>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        let (tx, _) = broadcast::channel(SUBSCRIBER_QUEUE);
        EventLog {
            ring: Arc::new(Mutex::new(Ring {
                next_id: 1,
                events: VecDeque::with_capacity(RECENT_EVENTS),
            })),
            tx,
        }
    }

    /// Log one event (the oldest falls out past [`RECENT_EVENTS`]) and hand
    /// it to the subscribers. Returns its id.
    pub fn push(&self, event: Event) -> u64 {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // id assignment and send under one lock, so subscribers see ids in order
        let mut ring = self.ring();
        let logged = Arc::new(LoggedEvent {
            id: ring.next_id,
            at_unix_ms,
            event,
        });
        ring.next_id += 1;
        if ring.events.len() == RECENT_EVENTS {
            ring.events.pop_front();
        }
        ring.events.push_back(logged.clone());
        let _ = self.tx.send(logged.clone()); // no subscribers is fine
        logged.id
    }

    /// The kept events with an id above `since` (all kept when `None`),
    /// oldest first.
    pub fn since(&self, since: Option<u64>) -> Vec<Arc<LoggedEvent>> {
        let after = since.unwrap_or(0);
        self.ring()
            .events
            .iter()
            .filter(|e| e.id > after)
            .cloned()
            .collect()
    }

    /// Events from now on. Subscribe first, then read [`EventLog::since`],
    /// and skip ids already seen: nothing falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.tx.subscribe()
    }

    /// Keep logging what `rx` delivers until it closes (the gossip node
    /// stopped). A lag on `rx` means events were lost before they reached the
    /// log; it is not papered over, the log simply continues.
    pub async fn follow(self, mut rx: broadcast::Receiver<Event>) {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    self.push(e);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u64) -> Event {
        Event::User {
            ltime: n,
            name: format!("e{n}"),
            payload: Vec::new(),
            coalesce: false,
        }
    }

    #[test]
    fn ids_increase_and_the_ring_keeps_the_last() {
        let log = EventLog::new();
        for n in 0..(RECENT_EVENTS as u64 + 7) {
            assert_eq!(log.push(user(n)), n + 1);
        }
        let all = log.since(None);
        assert_eq!(all.len(), RECENT_EVENTS);
        assert_eq!(all[0].id, 8, "the 7 oldest fell out");
        assert_eq!(all.last().map(|e| e.id), Some(RECENT_EVENTS as u64 + 7));
        assert!(all.windows(2).all(|w| w[0].id + 1 == w[1].id));
        let tail = log.since(Some(RECENT_EVENTS as u64 + 5));
        assert_eq!(tail.iter().map(|e| e.id).collect::<Vec<_>>(), vec![56, 57]);
        assert!(log.since(Some(1000)).is_empty());
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_follow_stops_on_close() {
        let log = EventLog::new();
        let mut sub = log.subscribe();
        let (tx, rx) = broadcast::channel(8);
        let task = tokio::spawn(log.clone().follow(rx));
        tx.send(user(1)).unwrap();
        tx.send(user(2)).unwrap();
        let a = sub.recv().await.unwrap();
        let b = sub.recv().await.unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert!(matches!(&b.event, Event::User { name, .. } if name == "e2"));
        assert!(a.at_unix_ms > 1_600_000_000_000, "a real clock time");
        drop(tx);
        task.await.unwrap();
        assert_eq!(log.since(None).len(), 2);
    }
}
