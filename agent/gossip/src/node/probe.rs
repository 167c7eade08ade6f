//! Failure detection: direct, indirect and TCP probes, acks and RTTs.

use super::stream::read_stream;
use super::{ip_to_bytes, Handle, Inner, MAX_PENDING_ACKS};
use crate::coordinate::Coordinate;
use crate::msgpack::decode_value;
use crate::wire::{self, ty, Accusation, Ack, IndirectPing, NodeState, Ping};
use rand::seq::SliceRandom;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

pub(super) enum Pending {
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

impl Handle {
    pub(super) async fn probe_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let mut tick = tokio::time::interval(i.cfg.timing.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let target = i.st().next_probe(&i.me);
            if let Some(t) = target {
                self.probe(&t).await;
            }
        }
    }

    pub(super) async fn probe(&self, name: &str) {
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

    pub(super) async fn tcp_ping(
        &self,
        to: SocketAddr,
        name: &str,
        seq: u32,
        deadline: Instant,
    ) -> bool {
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
            let mut ticket = i.streams.outgoing();
            let (t, body) = read_stream(&i.framing, &mut s, &mut ticket).await.ok()?;
            if t != ty::ACK {
                return None;
            }
            let a = Ack::decode(&decode_value(&body).ok()?).ok()?;
            Some(a.seq_no == seq)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        matches!(tokio::time::timeout(left, fut).await, Ok(Some(true)))
    }

    pub(super) fn ack_received(&self, name: &str, payload: &[u8], rtt: Duration) {
        let i = &self.inner;
        let mut st = i.st();
        let coord = Coordinate::from_ack_payload(payload);
        if let Some(c) = &coord {
            st.vivaldi.update(name, c, rtt);
        }
        if let Some(n) = st.nodes.get_mut(name) {
            n.record_probe(true);
            // it answered at its address: a member, not a claim
            n.confirmed = true;
            n.rtt = Some(rtt);
            if coord.is_some() {
                n.coord = coord;
            }
        }
    }
}
