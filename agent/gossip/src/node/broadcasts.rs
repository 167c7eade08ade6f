//! The broadcast queue piggybacked on every packet, and the gossip round
//! that sends what is left of it.

use super::stats::{Dropped, Stats};
use super::{Handle, Inner, State, UDP_BUDGET};
use crate::wire;
use std::time::Instant;

/// Most messages waiting to be gossiped (Serf's `MaxQueueDepth`).
pub const MAX_BROADCASTS: usize = 4096;
/// Most bytes waiting to be gossiped; past either budget the oldest
/// messages go first.
pub const BROADCAST_BYTES: usize = 256 * 1024;

pub(super) struct Bcast {
    pub(super) key: Option<(u8, String)>,
    pub(super) msg: Vec<u8>,
    pub(super) transmits: usize,
}

pub(super) fn retransmit_limit(mult: usize, n: usize) -> usize {
    mult * ((n as f64 + 1.0).log10().ceil() as usize).max(1)
}

impl State {
    /// Queue a message for gossip; one with a `key` replaces the queued
    /// message with the same key (newer news about one member).
    pub(super) fn queue(&mut self, key: Option<(u8, String)>, msg: Vec<u8>, stats: &Stats) {
        if msg.len() + 2 > UDP_BUDGET {
            // could never ride in a packet (memberlist would hold it
            // forever); push/pull still carries what it stands for
            return;
        }
        if let Some(k) = &key {
            let before = self.bcasts.len();
            self.bcasts.retain(|b| b.key.as_ref() != Some(k));
            if self.bcasts.len() != before {
                self.bcast_bytes = self.bcasts.iter().map(|b| b.msg.len()).sum();
            }
        }
        while !self.bcasts.is_empty()
            && (self.bcasts.len() >= MAX_BROADCASTS
                || self.bcast_bytes + msg.len() > BROADCAST_BYTES)
        {
            if let Some(old) = self.bcasts.pop_front() {
                self.bcast_bytes -= old.msg.len();
            }
            stats.drop(Dropped::BroadcastDropped);
        }
        self.bcast_bytes += msg.len();
        self.bcasts.push_back(Bcast {
            key,
            msg,
            transmits: 0,
        });
    }

    /// Take broadcasts fitting `limit` bytes (fewest transmits first).
    pub(super) fn take_broadcasts(&mut self, mult: usize, limit: usize, n: usize) -> Vec<Vec<u8>> {
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
        self.bcast_bytes = self.bcasts.iter().map(|b| b.msg.len()).sum();
        out
    }
}

impl Handle {
    pub(super) async fn gossip_loop(&self) {
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
            let targets = st.gossip_targets(
                &i.me,
                now,
                i.cfg.timing.gossip_to_the_dead,
                i.cfg.timing.gossip_nodes,
            );
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
}
