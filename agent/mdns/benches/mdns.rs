//! Decoder throughput (packets/s) and responder answer latency over a
//! veth pair between two network namespaces (needs root for the latter).
//!
//! `cargo bench -p nuvol-mdns`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nuvol_mdns::wire::{self, Message, Name, Question, RData, Record};
use nuvol_mdns::{Mdns, MdnsConfig, MdnsService};

/// An announcement like Avahi sends for one service (PTR, SRV, TXT, A).
fn announcement(i: usize) -> Vec<u8> {
    let inst = Name::prepend(
        &format!("Service number {i}"),
        &Name::parse("_http._tcp.local"),
    );
    let host = Name::parse(&format!("host{i}.local"));
    let r = |name: &Name, rtype, flush, rdata| Record {
        name: name.clone(),
        rtype,
        class: 1,
        cache_flush: flush,
        ttl: 120,
        rdata,
    };
    wire::encode(&Message {
        flags: 0x8400,
        answers: vec![
            r(
                &Name::parse("_http._tcp.local"),
                wire::TYPE_PTR,
                false,
                RData::Ptr(inst.clone()),
            ),
            r(
                &inst,
                wire::TYPE_SRV,
                true,
                RData::Srv {
                    priority: 0,
                    weight: 0,
                    port: 80,
                    target: host.clone(),
                },
            ),
            r(
                &inst,
                wire::TYPE_TXT,
                true,
                RData::Txt(vec![b"path=/".to_vec(), b"version=1.2.3".to_vec()]),
            ),
            r(
                &host,
                wire::TYPE_A,
                true,
                RData::A(Ipv4Addr::new(10, 0, 0, 1)),
            ),
        ],
        ..Message::default()
    })
}

fn decode(c: &mut Criterion) {
    let one = announcement(1);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("announcement_4_records", |b| {
        b.iter(|| wire::decode(std::hint::black_box(&one)).is_ok())
    });
    let query = wire::encode(&Message {
        questions: vec![Question {
            name: Name::parse("_services._dns-sd._udp.local"),
            qtype: 12,
            qclass: 1,
            unicast: false,
        }],
        ..Message::default()
    });
    g.bench_function("query_1_question", |b| {
        b.iter(|| wire::decode(std::hint::black_box(&query)).is_ok())
    });
    let junk = vec![0xC0u8; 1500];
    g.bench_function("garbage_1500_bytes", |b| {
        b.iter(|| wire::decode(std::hint::black_box(&junk)).is_err())
    });
    g.finish();
}

fn answer_latency(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("answer_latency: needs root (network namespaces), skipped");
        return;
    }
    let p = common::Pair::new();
    let (iface, host) = (p.vb.clone(), format!("bench-{}", std::process::id()));
    let (rt, m) = common::Pair::in_ns(&p.b, move || {
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
    });
    for i in 0..20 {
        m.publish(MdnsService {
            instance: format!("svc {i}"),
            service_type: if i == 0 {
                "_http._tcp".into()
            } else {
                format!("_t{i}._tcp")
            },
            port: 8000 + i,
            txt: BTreeMap::from([("i".into(), i.to_string())]),
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(4));
    let (va, ip) = (p.va.clone(), p.ip_a.parse::<Ipv4Addr>().unwrap());
    let peer: UdpSocket = common::Pair::in_ns(&p.a, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.bind_device(Some(va.as_bytes())).unwrap();
        s.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
        s.set_multicast_if_v4(&ip).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.into()
    });
    let group = SocketAddr::from((Ipv4Addr::new(224, 0, 0, 251), 5353));
    let mut g = c.benchmark_group("responder");
    g.sample_size(50).measurement_time(Duration::from_secs(5));
    g.bench_function("ptr_query_to_answer_legacy_unicast_20_services", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            let mut buf = [0u8; 9000];
            for k in 0..n {
                let q = wire::encode(&Message {
                    id: k as u16,
                    questions: vec![Question {
                        name: Name::parse("_http._tcp.local"),
                        qtype: 12,
                        qclass: 1,
                        unicast: false,
                    }],
                    ..Message::default()
                });
                let t = Instant::now();
                peer.send_to(&q, group).unwrap();
                while let Ok((len, _)) = peer.recv_from(&mut buf) {
                    if wire::decode(&buf[..len])
                        .map(|m| m.id == k as u16 && m.is_response())
                        .unwrap_or(false)
                    {
                        break;
                    }
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
    rt.block_on(m.shutdown());
}

criterion_group!(benches, decode, answer_latency);
criterion_main!(benches);
