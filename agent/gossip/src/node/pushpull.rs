//! Anti-entropy: the push/pull state exchange over TCP (member table and
//! Serf's clocks, intents and recent events), joins and the periodic sync.

use super::stats::Dropped;
use super::stream::{read_stream, StreamError, Ticket};
use super::transport::user_msg;
use super::{witness, GossipError, Handle, Inner, State, Status};
use crate::msgpack::{self, decode_value, Writer};
use crate::serf::{self, Intent, PushPull, UserEvent};
use crate::wire::{self, ty, Ack, Ping, WireError};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Decode a push/pull body (after the type byte): join flag, node states,
/// Serf user state. Public for the fuzzer.
pub fn parse_push_pull(
    body: &[u8],
) -> Result<(bool, Vec<wire::PushNodeState>, Vec<u8>), wire::WireError> {
    let (hv, mut pos) = msgpack::decode(body)?;
    let h = wire::PushPullHeader::decode(&hv)?;
    if h.nodes < 0 || h.nodes > 65_536 || h.user_state_len < 0 {
        return Err(wire::WireError::Frame("push/pull header out of range"));
    }
    let mut nodes = Vec::new();
    for _ in 0..h.nodes {
        let (v, used) = msgpack::decode(&body[pos..])?;
        pos += used;
        nodes.push(wire::PushNodeState::decode(&v)?);
    }
    // try_from, not `as`: a 32-bit usize would read 2^32 + n as n.
    let n = usize::try_from(h.user_state_len)
        .ok()
        .filter(|&n| n <= body.len() - pos)
        .ok_or(wire::WireError::Frame("short user state"))?;
    Ok((h.join, nodes, body[pos..pos + n].to_vec()))
}

impl Inner {
    pub(super) fn merge_serf_state(&self, st: &mut State, buf: &[u8], join: bool) {
        let Some((&t, body)) = buf.split_first() else {
            return;
        };
        if t != serf::ty::PUSH_PULL {
            return;
        }
        let Ok(pp) = decode_value(body).and_then(|v| PushPull::decode(&v)) else {
            self.stats.drop(Dropped::Malformed);
            return;
        };
        if pp.ltime > 0 {
            witness(&mut st.clock, pp.ltime - 1);
        }
        if pp.event_ltime > 0 {
            witness(&mut st.event_clock, pp.event_ltime - 1);
        }
        if pp.query_ltime > 0 {
            witness(&mut st.query_clock, pp.query_ltime - 1);
        }
        let left: HashSet<&String> = pp.left_members.iter().collect();
        for name in &pp.left_members {
            let lt = pp.status_ltimes.get(name).copied().unwrap_or(0) + 1;
            self.handle_leave_intent(
                st,
                &Intent {
                    ltime: lt,
                    node: name.clone(),
                    prune: false,
                },
            );
        }
        for (name, lt) in &pp.status_ltimes {
            if left.contains(name) {
                continue;
            }
            self.handle_join_intent(
                st,
                &Intent {
                    ltime: *lt,
                    node: name.clone(),
                    prune: false,
                },
            );
        }
        if join && pp.event_ltime > st.event_min_time {
            // like Serf's default for joins: do not replay old events
            st.event_min_time = pp.event_ltime;
        }
        for at in &pp.events {
            for (name, payload) in &at.events {
                let e = UserEvent {
                    ltime: at.ltime,
                    name: name.clone(),
                    payload: payload.clone(),
                    cc: false,
                };
                self.handle_user_event(st, &e);
            }
        }
    }

    pub(super) fn local_serf_state(&self, st: &State) -> Vec<u8> {
        let mut pp = PushPull {
            ltime: st.clock,
            event_ltime: st.event_clock,
            query_ltime: st.query_clock,
            ..Default::default()
        };
        for n in st.nodes.values() {
            pp.status_ltimes.insert(n.name.clone(), n.status_ltime);
            if n.status == Status::Left {
                pp.left_members.push(n.name.clone());
            }
        }
        pp.events = st.events.to_push_pull();
        pp.encode()
    }

    pub(super) fn local_push_pull(&self, st: &State, join: bool) -> Vec<u8> {
        let user = self.local_serf_state(st);
        let mut w = Writer::with_type(ty::PUSH_PULL);
        wire::PushPullHeader {
            nodes: st.nodes.len() as i64,
            user_state_len: user.len() as i64,
            join,
        }
        .encode(&mut w);
        for n in st.nodes.values() {
            wire::PushNodeState {
                name: n.name.clone(),
                addr: n.ip_bytes(),
                port: n.port,
                meta: n.meta.clone(),
                incarnation: n.incarnation,
                state: n.state,
                vsn: n.vsn.to_vec(),
            }
            .encode(&mut w);
        }
        w.extend(&user);
        w.into_bytes()
    }
}

impl Handle {
    /// Serve one inbound stream within its `ticket`; every failure is
    /// counted.
    pub(super) async fn serve_stream(i: Arc<Inner>, mut s: TcpStream, mut ticket: Ticket) {
        let r = Self::serve_stream_inner(&i, &mut s, &mut ticket).await;
        match r {
            Ok(()) => {}
            Err(StreamError::TooLarge) => i.stats.drop(Dropped::StreamTooLarge),
            Err(StreamError::Budget) => i.stats.drop(Dropped::StreamRefused),
            Err(StreamError::Wire(_)) => i.stats.drop(Dropped::Malformed),
        }
    }

    async fn serve_stream_inner(
        i: &Arc<Inner>,
        s: &mut TcpStream,
        ticket: &mut Ticket,
    ) -> Result<(), StreamError> {
        let peer = s.peer_addr().map_err(|_| WireError::Frame("peer"))?.ip();
        let (t, body) = read_stream(&i.framing, s, ticket).await?;
        match t {
            ty::PUSH_PULL => {
                let (join, nodes, user) = parse_push_pull(&body)?;
                drop(body);
                let out = {
                    let st = i.st();
                    i.local_push_pull(&st, join)
                };
                let framed = i.framing.seal_stream(&out)?;
                drop(out);
                ticket.reserve(framed.len())?;
                s.write_all(&framed)
                    .await
                    .map_err(|_| wire::WireError::Frame("write"))?;
                let mut st = i.st();
                i.merge_state(&mut st, &nodes, Some(peer));
                if !user.is_empty() {
                    i.merge_serf_state(&mut st, &user, join);
                }
                i.flush(&mut st);
            }
            ty::PING => {
                let p = Ping::decode(&decode_value(&body)?)?;
                if p.node.is_empty() || p.node == i.me {
                    let ack = Ack {
                        seq_no: p.seq_no,
                        payload: Vec::new(),
                    }
                    .encode();
                    let framed = i.framing.seal_stream(&ack)?;
                    s.write_all(&framed)
                        .await
                        .map_err(|_| wire::WireError::Frame("write"))?;
                }
            }
            ty::USER => {
                let mut st = i.st();
                i.handle_serf(&mut st, &body);
                i.flush(&mut st);
            }
            _ => {
                i.stats.drop(Dropped::Malformed);
            }
        }
        Ok(())
    }

    /// Exchange state with `to`; `trusted`: a seed we were told to join
    /// through, whose members are taken without a per-source limit.
    pub(super) async fn push_pull_with(
        &self,
        to: SocketAddr,
        join: bool,
        trusted: bool,
    ) -> Result<(), GossipError> {
        let i = &self.inner;
        let t = i.cfg.timing.tcp_timeout;
        let fut = async {
            let mut s = TcpStream::connect(to).await?;
            let mut ticket = i.streams.outgoing();
            let out = {
                let st = i.st();
                i.local_push_pull(&st, join)
            };
            let framed = i.framing.seal_stream(&out)?;
            drop(out);
            ticket.reserve(framed.len())?;
            s.write_all(&framed).await?;
            drop(framed);
            let (ty_, body) = read_stream(&i.framing, &mut s, &mut ticket).await?;
            if ty_ != ty::PUSH_PULL {
                return Err(GossipError::Wire(wire::WireError::Frame(
                    "unexpected stream reply",
                )));
            }
            let (_, nodes, user) = parse_push_pull(&body)?;
            let mut st = i.st();
            i.merge_state(&mut st, &nodes, (!trusted).then_some(to.ip()));
            if !user.is_empty() {
                i.merge_serf_state(&mut st, &user, join);
            }
            i.flush(&mut st);
            Ok::<(), GossipError>(())
        };
        match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => {
                i.stats.drop(Dropped::StreamDeadline);
                Err(GossipError::Io(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            }
        }
    }

    /// Join through any of `seeds`; returns how many answered.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<usize, GossipError> {
        let mut ok = 0;
        for s in seeds {
            if self.push_pull_with(*s, true, true).await.is_ok() {
                ok += 1;
            }
        }
        if ok == 0 {
            return Err(GossipError::JoinFailed(seeds.len()));
        }
        let i = &self.inner;
        let mut st = i.st();
        let lt = st.clock;
        witness(&mut st.clock, lt);
        let j = Intent {
            ltime: lt,
            node: i.me.clone(),
            prune: false,
        };
        i.handle_join_intent(&mut st, &j);
        st.queue(None, user_msg(&j.encode_join()), &i.stats);
        Ok(ok)
    }

    pub(super) async fn push_pull_loop(&self) {
        let i = &self.inner;
        let mut stop = i.shutdown.subscribe();
        let base = i.cfg.timing.push_pull_interval;
        let mut wait = Duration::from_millis(rand::random_range(0..base.as_millis().max(1) as u64));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            let (target, n) = {
                let st = i.st();
                let n = st.est_num_nodes(Instant::now(), i.cfg.timing.gossip_to_the_dead);
                (st.push_pull_target(&i.me), n)
            };
            if let Some(t) = target {
                let _ = self.push_pull_with(t, false, false).await;
            }
            wait = if n <= 32 {
                base
            } else {
                base * (((n as f64).log2() - 5.0).ceil() as u32 + 1)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(user_state_len: i64, state: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        wire::PushPullHeader {
            nodes: 0,
            user_state_len,
            join: false,
        }
        .encode(&mut w);
        w.extend(state);
        w.into_bytes()
    }

    #[test]
    fn user_state_length_is_taken_whole() {
        let (_, nodes, user) = parse_push_pull(&body(3, b"abc")).unwrap();
        assert!(nodes.is_empty());
        assert_eq!(user, b"abc");
        // 2^32 + 3 is not 3, whatever the width of usize.
        assert!(parse_push_pull(&body((1 << 32) + 3, b"abc")).is_err());
        assert!(parse_push_pull(&body(-1, b"abc")).is_err());
        assert!(parse_push_pull(&body(4, b"abc")).is_err());
    }
}
