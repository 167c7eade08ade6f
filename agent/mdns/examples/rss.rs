//! RSS of the responder with 20 published services and 200 discovered
//! ones (needs root: two network namespaces joined by veth; a plain socket
//! in the other namespace announces 200 `_http._tcp` services).
//!
//!   cargo run --release -p nuvol-mdns --example rss            # nuvol-mdns
//!   cargo run --release -p nuvol-mdns --example rss -- CMD...  # CMD in the
//!       nuvol namespace instead (a peer implementation to compare with,
//!       e.g. a mdns-sd program that prints its own RSS)

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nuvol_mdns::wire::{self, Message, Name, RData, Record};
use nuvol_mdns::{Mdns, MdnsConfig, MdnsService};

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn announcement(i: usize, ttl: u32) -> Vec<u8> {
    let inst = Name::prepend(
        &format!("Remote service {i}"),
        &Name::parse("_http._tcp.local"),
    );
    let host = Name::parse(&format!("remote{i}.local"));
    let r = |name: &Name, rtype, flush, rdata| Record {
        name: name.clone(),
        rtype,
        class: 1,
        cache_flush: flush,
        ttl,
        rdata,
    };
    wire::encode(&Message {
        flags: 0x8400,
        answers: vec![
            r(
                &Name::parse("_services._dns-sd._udp.local"),
                wire::TYPE_PTR,
                false,
                RData::Ptr(Name::parse("_http._tcp.local")),
            ),
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
                RData::Txt(vec![b"path=/".to_vec(), format!("n={i}").into_bytes()]),
            ),
            r(
                &host,
                wire::TYPE_A,
                true,
                RData::A(Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250) as u8 + 1)),
            ),
        ],
        ..Message::default()
    })
}

fn main() {
    let peer_cmd: Vec<String> = std::env::args().skip(1).collect();
    let p = common::Pair::new();
    // announcer: a raw mDNS "responder" in namespace a sending 200 services, every 2 s
    let (va, ip) = (
        p.va.clone(),
        p.ip_a.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::LOCALHOST),
    );
    let sock: std::net::UdpSocket = common::Pair::in_ns(&p.a, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        s.set_reuse_address(true).expect("reuse");
        s.bind_device(Some(va.as_bytes())).expect("bind device");
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5353)).into())
            .expect("bind");
        s.set_multicast_if_v4(&ip).expect("mcast if");
        s.into()
    });
    std::thread::spawn(move || loop {
        for i in 0..200 {
            let _ = sock.send_to(
                &announcement(i, 4500),
                (Ipv4Addr::new(224, 0, 0, 251), 5353),
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    if !peer_cmd.is_empty() {
        let st = std::process::Command::new("ip")
            .args(["netns", "exec", &p.b])
            .args(&peer_cmd)
            .status();
        println!("peer exited: {st:?}");
        return;
    }
    let (iface, host) = (p.vb.clone(), format!("rss-{}", std::process::id()));
    let (rt, m) = common::Pair::in_ns(&p.b, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        println!("before start: {}", rss());
        let m = rt
            .block_on(async {
                Mdns::start(MdnsConfig {
                    hostname: host,
                    interfaces: Some(vec![iface]),
                })
            })
            .expect("start");
        (rt, m)
    });
    for i in 0..20 {
        let _ = m.publish(MdnsService {
            instance: format!("Local service {i}"),
            service_type: format!("_t{i}._tcp"),
            port: 8000 + i,
            txt: BTreeMap::from([("i".into(), i.to_string())]),
        });
    }
    let t = Instant::now();
    let mut last = 0;
    while m.services().len() < 200 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let n = m.services().len();
        if n != last && std::env::var_os("RSS_TRACE").is_some() {
            println!("{:?}: {n}", t.elapsed());
            last = n;
        }
    }
    let (n, took) = (m.services().len(), t.elapsed());
    std::thread::sleep(Duration::from_secs(5));
    println!(
        "published 20, discovered {n} in {took:?}; 5 s later: {}; stats {:?}",
        rss(),
        m.stats()
    );
    rt.block_on(m.shutdown());
}
