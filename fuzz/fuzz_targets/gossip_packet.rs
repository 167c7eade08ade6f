//! A UDP packet as the gossip node receives it: label, decryption (clear,
//! one key, or a label), CRC, compound, LZW, then every memberlist and Serf
//! message decoder, tags and Vivaldi coordinates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nuvol_gossip::coordinate::Coordinate;
use nuvol_gossip::msgpack::{decode, decode_value};
use nuvol_gossip::serf::{self, Filter, Intent, PushPull, Query, QueryResponse, Relay, UserEvent};
use nuvol_gossip::wire::{
    self, ty, Accusation, Ack, Alive, Framing, IndirectPing, Keyring, Ping, PushNodeState,
    PushPullHeader,
};

fn serf_msg(m: &[u8], depth: u32) {
    let Some((&t, body)) = m.split_first() else {
        return;
    };
    if t == serf::ty::RELAY {
        if let Ok(r) = Relay::decode(body) {
            if depth < 4 {
                serf_msg(&r.inner, depth + 1);
            }
        }
        return;
    }
    let Ok(v) = decode_value(body) else {
        return;
    };
    match t {
        serf::ty::LEAVE | serf::ty::JOIN => {
            let _ = Intent::decode(&v);
        }
        serf::ty::PUSH_PULL => {
            let _ = PushPull::decode(&v);
        }
        serf::ty::USER_EVENT => {
            let _ = UserEvent::decode(&v);
        }
        serf::ty::QUERY => {
            if let Ok(q) = Query::decode(&v) {
                for f in &q.filters {
                    let _ = Filter::decode(f);
                }
            }
        }
        serf::ty::QUERY_RESPONSE => {
            let _ = QueryResponse::decode(&v);
        }
        _ => {}
    }
}

fn message(m: &[u8], depth: u32) {
    let Some((&t, body)) = m.split_first() else {
        return;
    };
    match t {
        ty::COMPOUND if depth < 4 => {
            if let Ok(parts) = wire::split_compound(m) {
                for p in parts {
                    message(p, depth + 1);
                }
            }
        }
        ty::COMPRESS if depth < 4 => {
            if let Ok(d) = wire::decompress(body) {
                message(&d, depth + 1);
            }
        }
        ty::USER => serf_msg(body, 0),
        ty::PUSH_PULL => {
            if let Ok((_, nodes, user)) = nuvol_gossip::node::parse_push_pull(body) {
                for n in nodes {
                    let _ = serf::decode_tags(&n.meta);
                }
                serf_msg(&user, 0);
            }
        }
        _ => {
            let Ok((v, _)) = decode(body) else {
                return;
            };
            match t {
                ty::PING => {
                    let _ = Ping::decode(&v);
                }
                ty::INDIRECT_PING => {
                    let _ = IndirectPing::decode(&v);
                }
                ty::ACK => {
                    if let Ok(a) = Ack::decode(&v) {
                        if a.payload.first() == Some(&1) {
                            if let Ok(cv) = decode_value(&a.payload[1..]) {
                                let _ = Coordinate::decode(&cv);
                            }
                        }
                    }
                }
                ty::SUSPECT | ty::DEAD => {
                    let _ = Accusation::decode(&v);
                }
                ty::ALIVE => {
                    if let Ok(a) = Alive::decode(&v) {
                        let tags = serf::decode_tags(&a.meta);
                        // accepted tags re-encode to the same tags
                        let again = serf::decode_tags(&serf::encode_tags(&tags));
                        assert_eq!(again, tags);
                    }
                }
                _ => {
                    let _ = PushPullHeader::decode(&v);
                    let _ = PushNodeState::decode(&v);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, pkt)) = data.split_first() else {
        return;
    };
    let framing = match mode % 3 {
        0 => Framing::default(),
        1 => Framing {
            keyring: Keyring::new(vec![vec![7u8; 16]]).expect("key"),
            ..Framing::default()
        },
        _ => Framing {
            label: "nuvol".into(),
            ..Framing::default()
        },
    };
    if let Ok(m) = framing.open_packet(pkt) {
        message(&m, 0);
    }
});
