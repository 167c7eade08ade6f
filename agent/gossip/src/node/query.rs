//! Serf queries: filters, acks, answering and asking.

use super::keys::is_key_query;
use super::members::NodeRec;
use super::stats::Dropped;
use super::transport::user_msg;
use super::{
    bytes_to_ip, ip_to_bytes, witness, Event, GossipError, Handle, IncomingQuery, Inner, State,
    Status, QUERY_BUFFER, QUERY_RESPONSE_LIMIT,
};
use crate::serf::{self, Filter, Query, QueryResponse, Relay};
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(super) struct OutQuery {
    pub(super) id: u32,
    pub(super) deadline: Instant,
    pub(super) responses: Vec<(String, Vec<u8>)>,
    pub(super) acks: HashSet<String>,
}

impl Inner {
    pub(super) fn should_process(&self, st: &State, filters: &[Vec<u8>]) -> bool {
        for f in filters {
            match Filter::decode(f) {
                Ok(Filter::Nodes(n)) => {
                    if !n.contains(&self.me) {
                        return false;
                    }
                }
                Ok(Filter::Tag { tag, expr }) => {
                    let v = st.tags.get(&tag).map(String::as_str).unwrap_or("");
                    if !crate::regex::is_match(&expr, v) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    pub(super) fn handle_query(&self, st: &mut State, q: &Query) -> bool {
        witness(&mut st.query_clock, q.ltime);
        let cur = st.query_clock;
        if cur > QUERY_BUFFER && q.ltime < cur - QUERY_BUFFER {
            return false;
        }
        let seen = st.queries_seen.entry(q.ltime).or_default();
        if seen.contains(&q.id) {
            return false;
        }
        if seen.len() >= 64 {
            return false;
        }
        seen.push(q.id);
        let floor = cur.saturating_sub(QUERY_BUFFER);
        st.queries_seen.retain(|&t, _| t >= floor);
        let rebroadcast = q.flags & serf::QUERY_FLAG_NO_BROADCAST == 0;
        if !self.should_process(st, &q.filters) {
            return rebroadcast;
        }
        let Some(ip) = bytes_to_ip(&q.addr) else {
            return rebroadcast;
        };
        let reply_to = SocketAddr::new(ip, q.port);
        if q.flags & serf::QUERY_FLAG_ACK != 0 {
            let ack = QueryResponse {
                ltime: q.ltime,
                id: q.id,
                from: self.me.clone(),
                flags: serf::QUERY_FLAG_ACK,
                payload: Vec::new(),
            };
            let m = user_msg(&ack.encode());
            let crc = Self::peer_crc(st, reply_to);
            st.outbox.push((reply_to, m, crc));
        }
        let iq = IncomingQuery {
            ltime: q.ltime,
            id: q.id,
            name: q.name.clone(),
            payload: q.payload.clone(),
            reply_to,
            source_node: q.source_node.clone(),
            deadline: Instant::now() + Duration::from_nanos(q.timeout_ns.max(0) as u64),
            relay_factor: q.relay_factor,
        };
        if q.name == "_serf_ping" {
            // Serf's internal reachability query: answer with nothing
            let _ = self.send_response(st, &iq, Vec::new());
        } else if is_key_query(&q.name) {
            self.handle_key_query(st, iq);
        } else if !q.name.starts_with("_serf_") {
            self.emit(Event::Query(iq));
        }
        rebroadcast
    }

    /// Send our response to `q` (and through relays if it asks for them).
    pub(super) fn send_response(
        &self,
        st: &mut State,
        q: &IncomingQuery,
        payload: Vec<u8>,
    ) -> Result<(), GossipError> {
        let r = QueryResponse {
            ltime: q.ltime,
            id: q.id,
            from: self.me.clone(),
            flags: 0,
            payload,
        };
        let raw = r.encode();
        if raw.len() > QUERY_RESPONSE_LIMIT {
            return Err(GossipError::Query("response too large"));
        }
        let crc = Self::peer_crc(st, q.reply_to);
        st.outbox.push((q.reply_to, user_msg(&raw), crc));
        if q.relay_factor > 0 {
            let mut relays: Vec<SocketAddr> = st
                .nodes
                .values()
                .filter(|n| n.name != self.me && n.status == Status::Alive && n.vsn[1] >= 5)
                .map(NodeRec::addr)
                .collect();
            relays.shuffle(&mut rand::rng());
            relays.truncate(usize::from(q.relay_factor));
            let relay = Relay {
                ip: ip_to_bytes(q.reply_to.ip()),
                port: q.reply_to.port(),
                name: q.source_node.clone(),
                inner: raw,
            }
            .encode();
            for to in relays {
                let crc = Self::peer_crc(st, to);
                st.outbox.push((to, user_msg(&relay), crc));
            }
        }
        Ok(())
    }

    pub(super) fn handle_query_response(&self, st: &mut State, r: &QueryResponse) {
        let Some(q) = st.out_queries.get_mut(&r.ltime) else {
            return;
        };
        if q.id != r.id || Instant::now() > q.deadline {
            return;
        }
        if r.flags & serf::QUERY_FLAG_ACK != 0 {
            q.acks.insert(r.from.clone());
        } else if !q.responses.iter().any(|(f, _)| *f == r.from) {
            if q.responses.len() < 4096 {
                q.responses.push((r.from.clone(), r.payload.clone()));
            } else {
                self.stats.drop(Dropped::Full);
            }
        }
    }
}

impl Handle {
    /// Answer a query received as [`Event::Query`].
    pub fn respond(&self, q: &IncomingQuery, payload: &[u8]) -> Result<(), GossipError> {
        if Instant::now() > q.deadline {
            return Err(GossipError::Query("query deadline passed"));
        }
        let i = &self.inner;
        let mut st = i.st();
        i.send_response(&mut st, q, payload.to_vec())?;
        i.flush(&mut st);
        Ok(())
    }

    /// Ask the cluster a question; collects (node, payload) responses
    /// until `timeout`.
    pub async fn query(
        &self,
        name: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Vec<(String, Vec<u8>)> {
        let i = &self.inner;
        let ltime = {
            let mut st = i.st();
            let ltime = st.query_clock;
            st.query_clock += 1;
            let q = Query {
                ltime,
                id: rand::random(),
                addr: ip_to_bytes(i.adv.ip()),
                port: i.adv.port(),
                source_node: i.me.clone(),
                filters: Vec::new(),
                flags: 0,
                relay_factor: 0,
                timeout_ns: timeout.as_nanos().min(i64::MAX as u128) as i64,
                name: name.to_string(),
                payload: payload.to_vec(),
            };
            st.out_queries.insert(
                ltime,
                OutQuery {
                    id: q.id,
                    deadline: Instant::now() + timeout,
                    responses: Vec::new(),
                    acks: HashSet::new(),
                },
            );
            // we see our own query too, as Serf does
            i.handle_query(&mut st, &q);
            st.queue(None, user_msg(&q.encode()), &i.stats);
            i.flush(&mut st);
            ltime
        };
        tokio::time::sleep(timeout).await;
        let mut st = i.st();
        st.out_queries
            .remove(&ltime)
            .map(|q| q.responses)
            .unwrap_or_default()
    }
}
