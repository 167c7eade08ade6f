//! UDP in and out, and the dispatch of every memberlist and Serf message.

use super::probe::Pending;
use super::stats::Dropped;
use super::{bytes_to_ip, ip_to_bytes, Inner, State, MAX_PENDING_ACKS, UDP_BUDGET};
use crate::msgpack::decode_value;
use crate::serf::{self, Intent, Query, QueryResponse, Relay, UserEvent};
use crate::wire::{self, ty, Accusation, Ack, Alive, IndirectPing, Ping};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::UdpSocket;

/// Ask the kernel for the TTL / hop limit of each received datagram
/// (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`). Best effort: without it the hop
/// column stays empty.
pub(super) fn enable_recv_ttl(udp: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(udp, sockopt::Ipv4RecvTtl, &true);
    if udp.local_addr().is_ok_and(|a| a.is_ipv6()) {
        let _ = setsockopt(udp, sockopt::Ipv6RecvHopLimit, &true);
    }
}

/// One non-blocking `recvmsg`: length, source, and the TTL / hop limit
/// from the control messages when the kernel sent one.
pub(super) fn recv_with_ttl(
    udp: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Option<u8>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(i32, i32);
    let msg = recvmsg::<SockaddrStorage>(
        udp.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut ttl = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
        }
    }
    let from = msg.address.and_then(|a: SockaddrStorage| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    });
    let n = msg.bytes;
    match from {
        Some(f) => Ok((n, f, ttl)),
        None => Err(std::io::Error::other("datagram without a source address")),
    }
}

pub(super) fn user_msg(serf_msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(serf_msg.len() + 1);
    m.push(ty::USER);
    m.extend_from_slice(serf_msg);
    m
}

impl Inner {
    pub(super) fn flush(&self, st: &mut State) {
        let out = std::mem::take(&mut st.outbox);
        for (to, msg, crc) in out {
            self.send_raw(to, &msg, crc);
        }
    }

    pub(super) fn send_raw(&self, to: SocketAddr, msg: &[u8], crc: bool) {
        match self.framing.seal_packet(msg, crc) {
            Ok(p) => {
                if self.udp.try_send_to(&p, to).is_ok() {
                    self.stats.packets_out.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_out
                        .fetch_add(p.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.stats.drop(Dropped::Full);
            }
        }
    }

    pub(super) fn peer_crc(st: &State, to: SocketAddr) -> bool {
        st.nodes.values().any(|n| n.addr() == to && n.vsn[1] >= 5)
    }

    /// Queue a message to `to` with piggybacked broadcasts.
    pub(super) fn send_msg(&self, st: &mut State, to: SocketAddr, msg: Vec<u8>) {
        let mut avail = UDP_BUDGET.saturating_sub(msg.len() + 2 + self.cfg.label.len());
        if self.framing.keyring.enabled() {
            avail = avail.saturating_sub(29);
        }
        let n = st.est_num_nodes(Instant::now(), self.cfg.timing.gossip_to_the_dead);
        let extra = st.take_broadcasts(self.cfg.timing.retransmit_mult, avail, n);
        let crc = Self::peer_crc(st, to);
        if extra.is_empty() {
            st.outbox.push((to, msg, crc));
        } else {
            let mut parts = vec![msg];
            parts.extend(extra);
            st.outbox.push((to, wire::compound(&parts), crc));
        }
    }

    pub(super) fn ingest(&self, buf: &[u8], from: SocketAddr, at: Instant, ttl: Option<u8>) {
        self.stats.packets_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        let msg = match self.framing.open_packet(buf) {
            Ok(m) => m,
            Err(_) => {
                self.stats.drop(Dropped::Malformed);
                return;
            }
        };
        let mut st = self.st();
        if let Some(t) = ttl {
            // only authenticated/well-formed packets count
            let ip = from.ip().to_canonical();
            if st.ttls.len() >= 2 * self.cfg.max_members.max(16) && !st.ttls.contains_key(&ip) {
                let State { ttls, nodes, .. } = &mut *st;
                let known: HashSet<IpAddr> = nodes.values().map(|n| n.ip.to_canonical()).collect();
                ttls.retain(|k, _| known.contains(k));
            }
            if st.ttls.len() < 2 * self.cfg.max_members.max(16) || st.ttls.contains_key(&ip) {
                st.ttls.insert(ip, t);
            }
        }
        self.command(&mut st, &msg, from, at, 0);
        self.flush(&mut st);
    }

    pub(super) fn command(
        &self,
        st: &mut State,
        buf: &[u8],
        from: SocketAddr,
        at: Instant,
        depth: usize,
    ) {
        let Some((&t, body)) = buf.split_first() else {
            self.stats.drop(Dropped::Malformed);
            return;
        };
        if depth > 4 {
            self.stats.drop(Dropped::Malformed);
            return;
        }
        let r: Result<(), wire::WireError> = (|| {
            match t {
                ty::COMPOUND => {
                    for p in wire::split_compound(body)? {
                        self.command(st, p, from, at, depth + 1);
                    }
                }
                ty::COMPRESS => {
                    let d = wire::decompress(body)?;
                    self.command(st, &d, from, at, depth + 1);
                }
                ty::HAS_CRC => {
                    if body.len() < 4 {
                        return Err(wire::WireError::Crc);
                    }
                    let want = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    if crc32fast::hash(&body[4..]) != want {
                        return Err(wire::WireError::Crc);
                    }
                    self.command(st, &body[4..], from, at, depth + 1);
                }
                ty::PING => {
                    let p = Ping::decode(&decode_value(body)?)?;
                    if !p.node.is_empty() && p.node != self.me {
                        return Ok(());
                    }
                    let to = match bytes_to_ip(&p.source_addr) {
                        Some(ip) if p.source_port > 0 => SocketAddr::new(ip, p.source_port),
                        _ => from,
                    };
                    let ack = Ack {
                        seq_no: p.seq_no,
                        payload: st.vivaldi.coordinate().ack_payload(),
                    };
                    self.send_msg(st, to, ack.encode());
                }
                ty::INDIRECT_PING => {
                    let ind = IndirectPing::decode(&decode_value(body)?)?;
                    let Some(tip) = bytes_to_ip(&ind.target) else {
                        return Err(wire::WireError::Frame("bad target"));
                    };
                    let reply = match bytes_to_ip(&ind.source_addr) {
                        Some(ip) if ind.source_port > 0 => SocketAddr::new(ip, ind.source_port),
                        _ => from,
                    };
                    if st.pending.len() >= MAX_PENDING_ACKS {
                        self.stats.drop(Dropped::Full);
                        return Ok(());
                    }
                    st.seq = st.seq.wrapping_add(1);
                    let seq = st.seq;
                    let ping = Ping {
                        seq_no: seq,
                        node: ind.node.clone(),
                        source_addr: ip_to_bytes(self.adv.ip()),
                        source_port: self.adv.port(),
                        source_node: self.me.clone(),
                    };
                    st.pending.insert(
                        seq,
                        Pending::Indirect {
                            reply,
                            seq: ind.seq_no,
                            created: Instant::now(),
                        },
                    );
                    self.send_msg(st, SocketAddr::new(tip, ind.port), ping.encode());
                    if ind.nack {
                        let inner = self.clone_arc();
                        let timeout = self.cfg.timing.probe_timeout;
                        let oseq = ind.seq_no;
                        if let Some(inner) = inner {
                            tokio::spawn(async move {
                                tokio::time::sleep(timeout).await;
                                let mut st = inner.st();
                                if st.pending.contains_key(&seq) {
                                    st.pending.remove(&seq);
                                    let crc = Self::peer_crc(&st, reply);
                                    st.outbox.push((reply, wire::encode_nack(oseq), crc));
                                    inner.flush(&mut st);
                                }
                            });
                        }
                    }
                }
                ty::ACK => {
                    let a = Ack::decode(&decode_value(body)?)?;
                    match st.pending.remove(&a.seq_no) {
                        Some(Pending::Probe { tx: Some(tx), .. }) => {
                            let _ = tx.send((a.payload, at));
                        }
                        Some(Pending::Indirect { reply, seq, .. }) => {
                            let ack = Ack {
                                seq_no: seq,
                                payload: Vec::new(),
                            };
                            self.send_msg(st, reply, ack.encode());
                        }
                        _ => {}
                    }
                }
                ty::NACK => {
                    let v = decode_value(body)?;
                    let seq = v.u32_field("SeqNo")?;
                    if let Some(Pending::Probe { nacks, .. }) = st.pending.get_mut(&seq) {
                        *nacks += 1;
                    }
                }
                ty::SUSPECT => {
                    let s = Accusation::decode(&decode_value(body)?)?;
                    self.suspect_node(st, &s);
                }
                ty::ALIVE => {
                    let a = Alive::decode(&decode_value(body)?)?;
                    self.alive_node(st, &a, false, Some(from.ip()));
                }
                ty::DEAD => {
                    let d = Accusation::decode(&decode_value(body)?)?;
                    self.dead_node(st, &d);
                }
                ty::USER => self.handle_serf(st, body),
                _ => return Err(wire::WireError::Frame("unknown message type")),
            }
            Ok(())
        })();
        if r.is_err() {
            self.stats.drop(Dropped::Malformed);
        }
    }

    pub(super) fn handle_serf(&self, st: &mut State, buf: &[u8]) {
        let Some((&t, body)) = buf.split_first() else {
            return;
        };
        let bad = || {
            self.stats.drop(Dropped::Malformed);
        };
        let rebroadcast = match t {
            serf::ty::LEAVE | serf::ty::JOIN => {
                match decode_value(body).and_then(|v| Intent::decode(&v)) {
                    Ok(i) if t == serf::ty::LEAVE => self.handle_leave_intent(st, &i),
                    Ok(i) => self.handle_join_intent(st, &i),
                    Err(_) => {
                        bad();
                        false
                    }
                }
            }
            serf::ty::USER_EVENT => match decode_value(body).and_then(|v| UserEvent::decode(&v)) {
                Ok(e) => self.handle_user_event(st, &e),
                Err(_) => {
                    bad();
                    false
                }
            },
            serf::ty::QUERY => match decode_value(body).and_then(|v| Query::decode(&v)) {
                Ok(q) => self.handle_query(st, &q),
                Err(_) => {
                    bad();
                    false
                }
            },
            serf::ty::QUERY_RESPONSE => {
                match decode_value(body).and_then(|v| QueryResponse::decode(&v)) {
                    Ok(r) => self.handle_query_response(st, &r),
                    Err(_) => bad(),
                }
                false
            }
            serf::ty::RELAY => {
                match Relay::decode(body) {
                    Ok(r) => {
                        if let Some(ip) = bytes_to_ip(&r.ip) {
                            let to = SocketAddr::new(ip, r.port);
                            let crc = Self::peer_crc(st, to);
                            st.outbox.push((to, user_msg(&r.inner), crc));
                        }
                    }
                    Err(_) => bad(),
                }
                false
            }
            _ => false,
        };
        if rebroadcast {
            st.queue(None, user_msg(buf), &self.stats);
        }
    }
}
