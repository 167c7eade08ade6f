//! Serf user events: the Lamport-time event buffer and sending events.
//!
//! Serf keeps the events of the last 512 Lamport times to recognise
//! repeats and to hand them to joining nodes in push/pull; a time slot
//! holds any number of events and events from the network have no size
//! limit there. Here every event, slot and the whole buffer has a budget:
//! an event over [`EVENT_MAX`] is dropped (Serf never sends one), a slot
//! keeps [`SLOT_EVENTS`] events and [`SLOT_BYTES`] bytes and drops the rest,
//! and the buffer keeps [`TOTAL_EVENTS`] events and [`TOTAL_BYTES`] bytes by
//! evicting its oldest slots; times at or below an evicted slot then count
//! as too old, as if the window were shorter.

use super::stats::Dropped;
use super::transport::user_msg;
use super::{witness, Event, GossipError, Handle, Inner, State, EVENT_BUFFER, USER_EVENT_LIMIT};
use crate::serf::{EventsAt, UserEvent};
use std::collections::BTreeMap;

/// Largest user event accepted from the network, name + payload and the
/// encoded message alike: Serf's hard `UserEventSizeLimit` (9 KiB; its
/// configurable limit defaults to 512 and may not exceed this).
pub const EVENT_MAX: usize = 9 * 1024;
/// Most events kept at one Lamport time.
pub const SLOT_EVENTS: usize = 16;
/// Most name + payload bytes kept at one Lamport time.
pub const SLOT_BYTES: usize = 16 * 1024;
/// Most events kept in all.
pub const TOTAL_EVENTS: usize = 512;
/// Most name + payload bytes kept in all.
pub const TOTAL_BYTES: usize = 128 * 1024;

/// What the buffer did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// new: keep, deliver, rebroadcast
    New,
    /// seen before
    Duplicate,
    /// before the window (or an evicted slot)
    TooOld,
    /// over [`EVENT_MAX`]
    TooLarge,
    /// its slot holds [`SLOT_EVENTS`] events or [`SLOT_BYTES`] bytes
    SlotFull,
}

/// The recent user events by Lamport time, within the budgets above.
#[derive(Debug, Default)]
pub struct EventBuffer {
    slots: BTreeMap<u64, Vec<(String, Vec<u8>)>>,
    count: usize,
    bytes: usize,
    /// times below this were evicted for room
    floor: u64,
}

fn size(name: &str, payload: &[u8]) -> usize {
    name.len() + payload.len()
}

impl EventBuffer {
    /// Events held.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Name + payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Take an event at `ltime` if new and within budget; `window_floor` is
    /// the oldest time still in the window. Returns what happened and how
    /// many old events were evicted for room.
    pub fn admit(
        &mut self,
        ltime: u64,
        name: &str,
        payload: &[u8],
        window_floor: u64,
    ) -> (Admit, usize) {
        let sz = size(name, payload);
        if sz > EVENT_MAX {
            return (Admit::TooLarge, 0);
        }
        self.forget_before(window_floor);
        if ltime < self.floor.max(window_floor) {
            return (Admit::TooOld, 0);
        }
        if let Some(slot) = self.slots.get(&ltime) {
            if slot.iter().any(|(n, p)| n == name && p == payload) {
                return (Admit::Duplicate, 0);
            }
            let slot_bytes: usize = slot.iter().map(|(n, p)| size(n, p)).sum();
            if slot.len() >= SLOT_EVENTS || slot_bytes + sz > SLOT_BYTES {
                return (Admit::SlotFull, 0);
            }
        }
        // room in all: evict the oldest slots (never the event's own)
        let mut evicted = 0;
        while self.count + 1 > TOTAL_EVENTS || self.bytes + sz > TOTAL_BYTES {
            let Some((&oldest, _)) = self.slots.iter().next() else {
                break;
            };
            if oldest >= ltime {
                // only its own and newer times left: it is the one to go
                return (Admit::TooOld, evicted);
            }
            if let Some(slot) = self.slots.remove(&oldest) {
                evicted += slot.len();
                self.count -= slot.len();
                self.bytes -= slot.iter().map(|(n, p)| size(n, p)).sum::<usize>();
            }
            self.floor = oldest + 1;
        }
        self.slots
            .entry(ltime)
            .or_default()
            .push((name.to_string(), payload.to_vec()));
        self.count += 1;
        self.bytes += sz;
        (Admit::New, evicted)
    }

    /// Drop slots that left the window (not counted as evictions: Serf
    /// forgets them too).
    fn forget_before(&mut self, window_floor: u64) {
        while let Some((&t, _)) = self.slots.iter().next() {
            if t >= window_floor {
                break;
            }
            if let Some(slot) = self.slots.remove(&t) {
                self.count -= slot.len();
                self.bytes -= slot.iter().map(|(n, p)| size(n, p)).sum::<usize>();
            }
        }
    }

    /// The buffer as push/pull carries it, oldest time first.
    pub fn to_push_pull(&self) -> Vec<EventsAt> {
        self.slots
            .iter()
            .map(|(t, ev)| EventsAt {
                ltime: *t,
                events: ev.clone(),
            })
            .collect()
    }
}

impl Inner {
    /// A user event from the network, push/pull or ourselves; returns
    /// whether to rebroadcast it.
    pub(super) fn handle_user_event(&self, st: &mut State, e: &UserEvent) -> bool {
        if size(&e.name, &e.payload) > EVENT_MAX {
            // dropped before it can move our clock
            self.stats.drop(Dropped::EventTooLarge);
            return false;
        }
        witness(&mut st.event_clock, e.ltime);
        if e.ltime < st.event_min_time {
            return false;
        }
        let floor = st.event_clock.saturating_sub(EVENT_BUFFER);
        let (admit, evicted) = st.events.admit(e.ltime, &e.name, &e.payload, floor);
        self.stats.drop_n(Dropped::EventEvicted, evicted as u64);
        match admit {
            Admit::New => {}
            Admit::TooLarge => {
                self.stats.drop(Dropped::EventTooLarge);
                return false;
            }
            Admit::SlotFull => {
                self.stats.drop(Dropped::EventSlotFull);
                return false;
            }
            Admit::Duplicate | Admit::TooOld => return false,
        }
        self.emit(Event::User {
            ltime: e.ltime,
            name: e.name.clone(),
            payload: e.payload.clone(),
            coalesce: e.cc,
        });
        true
    }
}

impl Handle {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_keeps_its_budget_and_no_repeats() {
        let mut b = EventBuffer::default();
        assert_eq!(b.admit(10, "a", b"x", 0), (Admit::New, 0));
        assert_eq!(b.admit(10, "a", b"x", 0), (Admit::Duplicate, 0));
        for i in 1..SLOT_EVENTS {
            assert_eq!(b.admit(10, "a", format!("{i}").as_bytes(), 0).0, Admit::New);
        }
        assert_eq!(b.admit(10, "a", b"one more", 0).0, Admit::SlotFull);
        // bytes: one 9 KiB event and one 8 KiB event do not fit one slot
        assert_eq!(b.admit(11, "big", &[0; EVENT_MAX - 3], 0).0, Admit::New);
        assert_eq!(b.admit(11, "big", &[1; 8 * 1024], 0).0, Admit::SlotFull);
        assert_eq!(
            b.admit(12, "big", &[0; EVENT_MAX - 2], 0).0,
            Admit::TooLarge
        );
        assert_eq!(b.count(), SLOT_EVENTS + 1);
    }

    #[test]
    fn the_whole_buffer_evicts_its_oldest_times() {
        let mut b = EventBuffer::default();
        let payload = vec![7u8; 1023];
        // 1 KiB events, 8 per time: the bytes budget holds 128 of them
        let mut evicted = 0;
        for t in 0..64u64 {
            for i in 0..8u8 {
                let mut p = payload.clone();
                p[0] = i;
                let (a, e) = b.admit(t, "e", &p, 0);
                assert_eq!(a, Admit::New, "t {t} i {i}");
                evicted += e;
            }
        }
        assert!(b.bytes() <= TOTAL_BYTES && b.count() <= TOTAL_EVENTS);
        assert_eq!(b.count() + evicted, 64 * 8);
        assert_eq!(b.count(), 128);
        // evicted times are too old now; newer ones still come in
        assert_eq!(b.admit(3, "e", b"late", 0).0, Admit::TooOld);
        assert_eq!(b.admit(64, "e", b"new", 0).0, Admit::New);
        // an event older than everything kept does not evict newer ones
        let kept = b.count();
        let oldest_kept = b.to_push_pull()[0].ltime;
        assert_eq!(b.admit(oldest_kept, "e", &[9; 1023], 0).0, Admit::New);
        assert!(b.count() <= kept + 1);
    }

    #[test]
    fn the_window_forgets_old_times() {
        let mut b = EventBuffer::default();
        b.admit(5, "a", b"", 0);
        b.admit(600, "a", b"", 0);
        assert_eq!(b.admit(700, "a", b"", 600 - 1).0, Admit::New);
        assert_eq!(b.count(), 2);
        assert_eq!(b.to_push_pull().len(), 2);
        assert_eq!(b.admit(5, "b", b"", 188).0, Admit::TooOld);
    }
}
