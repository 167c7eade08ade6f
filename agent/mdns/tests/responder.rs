//! Responder behaviour on the wire (answers, additional records,
//! known-answer suppression, legacy unicast) and nuvol-to-nuvol discovery,
//! in two network namespaces joined by veth. Needs root.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::Pair;
use nuvol_mdns::wire::{self, Message, Name, Question, RData, Record};
use nuvol_mdns::{Mdns, MdnsConfig, MdnsService};
use socket2::{Domain, Protocol, Socket, Type};

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

fn start(ns: &str, iface: &str, host: &str) -> (tokio::runtime::Runtime, Mdns) {
    let (iface, host) = (iface.to_string(), host.to_string());
    Pair::in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let m = rt
            .block_on(async {
                Mdns::start(MdnsConfig {
                    hostname: host,
                    interfaces: Some(vec![iface]),
                })
            })
            .unwrap();
        (rt, m)
    })
}

/// A plain socket in namespace `ns`: port 5353 joined to the group (a
/// peer responder), or an ephemeral port (a legacy resolver).
fn peer_socket(ns: &str, dev: &str, ip: &str, mdns_port: bool) -> UdpSocket {
    let (dev, ip) = (dev.to_string(), ip.parse::<Ipv4Addr>().unwrap());
    Pair::in_ns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind_device(Some(dev.as_bytes())).unwrap();
        let port = if mdns_port { 5353 } else { 0 };
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
            .unwrap();
        if mdns_port {
            s.join_multicast_v4(&GROUP, &ip).unwrap();
        }
        s.set_multicast_if_v4(&ip).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s.into()
    })
}

/// Responses received within `within` that satisfy `pred`.
fn recv_until(
    s: &UdpSocket,
    within: Duration,
    pred: impl Fn(&Message) -> bool,
) -> Option<(Message, SocketAddr)> {
    let t = Instant::now();
    let mut buf = [0u8; 9000];
    while t.elapsed() < within {
        if let Ok((n, src)) = s.recv_from(&mut buf) {
            if let Ok(m) = wire::decode(&buf[..n]) {
                if pred(&m) {
                    return Some((m, src));
                }
            }
        }
    }
    None
}

fn ptr_query(id: u16, known: Vec<Record>) -> Vec<u8> {
    wire::encode(&Message {
        id,
        questions: vec![Question {
            name: Name::parse("_http._tcp.local"),
            qtype: wire::TYPE_PTR,
            qclass: 1,
            unicast: false,
        }],
        answers: known,
        ..Message::default()
    })
}

fn has_ptr(m: &Message, inst: &str) -> bool {
    m.is_response()
        && m.answers.iter().any(
            |r| matches!(&r.rdata, RData::Ptr(n) if n.0.first().map(String::as_str) == Some(inst)),
        )
}

#[test]
fn answers_suppresses_known_answers_and_serves_legacy_unicast() {
    let p = Pair::new();
    let host = format!("resp-{}", std::process::id());
    let (rt, m) = start(&p.b, &p.vb, &host);
    let peer = peer_socket(&p.a, &p.va, &p.ip_a, true);
    m.publish(MdnsService {
        instance: "ka test".into(),
        service_type: "_http._tcp".into(),
        port: 8088,
        txt: BTreeMap::from([("x".into(), "y".into())]),
    })
    .unwrap();
    // the announcement comes after probing
    let (ann, _) = recv_until(&peer, Duration::from_secs(5), |m| has_ptr(m, "ka test"))
        .expect("no announcement");
    let ptr = ann
        .answers
        .iter()
        .find(|r| r.rtype == wire::TYPE_PTR && r.name == Name::parse("_http._tcp.local"))
        .unwrap()
        .clone();
    assert!(!ptr.cache_flush, "PTR is a shared record");
    assert!(ann
        .answers
        .iter()
        .any(|r| r.rtype == wire::TYPE_SRV && r.cache_flush));
    // wait for the second announcement to pass
    std::thread::sleep(Duration::from_millis(1300));
    while recv_until(&peer, Duration::from_millis(200), |_| true).is_some() {}

    // plain query: PTR answer with SRV, TXT and A as additional records
    let t = Instant::now();
    peer.send_to(&ptr_query(0, vec![]), (GROUP, 5353)).unwrap();
    let (r, _) =
        recv_until(&peer, Duration::from_secs(2), |m| has_ptr(m, "ka test")).expect("no answer");
    eprintln!("answer latency over veth: {:?}", t.elapsed());
    let extra: Vec<u16> = r.additional.iter().map(|x| x.rtype).collect();
    assert!(
        extra.contains(&wire::TYPE_SRV)
            && extra.contains(&wire::TYPE_TXT)
            && extra.contains(&wire::TYPE_A),
        "{extra:?}"
    );

    // known answer with a fresh TTL: no answer
    peer.send_to(&ptr_query(0, vec![ptr.clone()]), (GROUP, 5353))
        .unwrap();
    assert!(
        recv_until(&peer, Duration::from_secs(1), |m| has_ptr(m, "ka test")).is_none(),
        "known answer not suppressed"
    );
    // known answer under half its TTL: answered again
    peer.send_to(
        &ptr_query(
            0,
            vec![Record {
                ttl: 100,
                ..ptr.clone()
            }],
        ),
        (GROUP, 5353),
    )
    .unwrap();
    assert!(
        recv_until(&peer, Duration::from_secs(2), |m| has_ptr(m, "ka test")).is_some(),
        "stale known answer suppressed"
    );

    // legacy unicast (source port != 5353): unicast reply, id and question echoed, TTL <= 10
    let legacy = peer_socket(&p.a, &p.va, &p.ip_a, false);
    legacy
        .send_to(&ptr_query(0x1234, vec![]), (GROUP, 5353))
        .unwrap();
    let (r, src) = recv_until(&legacy, Duration::from_secs(2), |m| has_ptr(m, "ka test"))
        .expect("no legacy reply");
    assert_eq!(r.id, 0x1234);
    assert_eq!(r.questions.len(), 1);
    assert!(r
        .answers
        .iter()
        .chain(&r.additional)
        .all(|x| x.ttl <= 10 && !x.cache_flush));
    assert_eq!(src.ip().to_string(), p.ip_b);

    // truncated query (TC) whose known answers follow in a second packet
    std::thread::sleep(Duration::from_millis(1100));
    let mut tc = wire::decode(&ptr_query(0, vec![])).unwrap();
    tc.flags |= 0x0200;
    peer.send_to(&wire::encode(&tc), (GROUP, 5353)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let more = Message {
        answers: vec![ptr.clone()],
        ..Message::default()
    };
    peer.send_to(&wire::encode(&more), (GROUP, 5353)).unwrap();
    assert!(
        recv_until(&peer, Duration::from_millis(1500), |m| has_ptr(
            m, "ka test"
        ))
        .is_none(),
        "known answer in a follow-up packet not honoured"
    );

    // unpublish: goodbye PTR with TTL 0
    m.unpublish("ka test", "_http._tcp").unwrap();
    let (g, _) =
        recv_until(&peer, Duration::from_secs(2), |m| has_ptr(m, "ka test")).expect("no goodbye");
    assert!(g.answers.iter().all(|r| r.ttl == 0));
    rt.block_on(m.shutdown());
}

#[test]
fn two_nuvols_discover_each_other_and_see_goodbyes() {
    let p = Pair::new();
    let pid = std::process::id();
    let (rt_a, a) = start(&p.a, &p.va, &format!("na-{pid}"));
    let (rt_b, b) = start(&p.b, &p.vb, &format!("nb-{pid}"));
    for (m, name) in [(&a, "alpha"), (&b, "beta")] {
        m.publish(MdnsService {
            instance: name.into(),
            service_type: "_ssh._tcp".into(),
            port: 22,
            txt: BTreeMap::new(),
        })
        .unwrap();
    }
    let seen = |m: &Mdns, name: &str| {
        m.services()
            .iter()
            .any(|d| d.instance == name && d.port == 22)
    };
    let t = Instant::now();
    while !(seen(&a, "beta") && seen(&b, "alpha")) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("mutual discovery in {:?}", t.elapsed());
    assert!(seen(&a, "beta") && seen(&b, "alpha"));
    let mut ev = b.events();
    rt_a.block_on(a.shutdown());
    let t = Instant::now();
    while seen(&b, "alpha") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!seen(&b, "alpha"), "goodbye not honoured");
    let removed = rt_b.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match ev.recv().await {
                    Ok(nuvol_mdns::MdnsEvent::Removed(d)) if d.instance == "alpha" => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false)
    });
    assert!(removed, "no Removed event");
    rt_b.block_on(b.shutdown());
}

#[test]
fn cache_is_bounded_under_a_flood_of_services() {
    let p = Pair::new();
    let (rt, m) = start(&p.b, &p.vb, &format!("flood-{}", std::process::id()));
    m.publish(MdnsService {
        instance: "still here".into(),
        service_type: "_http._tcp".into(),
        port: 1,
        txt: BTreeMap::new(),
    })
    .unwrap();
    let peer = peer_socket(&p.a, &p.va, &p.ip_a, true);
    // probed and announced before the flood
    recv_until(&peer, Duration::from_secs(5), |m| has_ptr(m, "still here"))
        .expect("no announcement");
    let t_name = Name::parse("_flood._tcp.local");
    let t = Instant::now();
    let mut i = 0u32;
    // 4 records a service: past 4096 records after ~1024 services
    while m.stats().cache_full == 0 && t.elapsed() < Duration::from_secs(30) {
        let inst = Name::prepend(&format!("flood {i}"), &t_name);
        let host = Name::parse(&format!("f{i}.local"));
        let r = |name: &Name, rtype, rdata| Record {
            name: name.clone(),
            rtype,
            class: 1,
            cache_flush: false,
            ttl: 600,
            rdata,
        };
        let msg = Message {
            flags: 0x8400,
            answers: vec![
                r(&t_name, wire::TYPE_PTR, RData::Ptr(inst.clone())),
                r(
                    &inst,
                    wire::TYPE_SRV,
                    RData::Srv {
                        priority: 0,
                        weight: 0,
                        port: 9,
                        target: host.clone(),
                    },
                ),
                r(&inst, wire::TYPE_TXT, RData::Txt(vec![])),
                r(
                    &host,
                    wire::TYPE_A,
                    RData::A(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
                ),
            ],
            ..Message::default()
        };
        peer.send_to(&wire::encode(&msg), (GROUP, 5353)).unwrap();
        i += 1;
        if i.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let st = m.stats();
    eprintln!("sent {i} services in {:?}; stats {st:?}", t.elapsed());
    assert!(st.cache_full > 0, "cache never filled: {st:?}");
    std::thread::sleep(Duration::from_millis(300));
    let n = m.services().len();
    assert!((900..=4096 / 3).contains(&n), "{n} services listed");
    // still answering
    let legacy = peer_socket(&p.a, &p.va, &p.ip_a, false);
    legacy
        .send_to(&ptr_query(7, vec![]), (GROUP, 5353))
        .unwrap();
    assert!(recv_until(&legacy, Duration::from_secs(3), |m| m.id == 7
        && has_ptr(m, "still here"))
    .is_some());
    rt.block_on(m.shutdown());
}
