//! A running node survives random and mutated packets and streams: they are
//! dropped and counted, and the node keeps answering pings.

use nuvol_gossip::wire::{self, Ping};
use nuvol_gossip::{Config, Handle, Profile};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[tokio::test(flavor = "current_thread")]
async fn garbage_is_dropped_and_counted() {
    let cfg = Config::new(
        format!("garbage-{}", std::process::id()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Profile::Local,
    );
    let h = Handle::start(cfg).await.expect("start");
    let target = h.advertise();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let valid = wire::compound(&[
        Ping {
            seq_no: 1,
            node: String::new(),
            ..Default::default()
        }
        .encode(),
        wire::Alive {
            incarnation: 3,
            node: "x".into(),
            addr: vec![127, 0, 0, 1],
            port: 1,
            meta: vec![],
            vsn: vec![1, 5, 2, 2, 5, 4],
        }
        .encode(),
    ]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let mut p = valid.clone();
        if i % 3 == 0 {
            p = (0..(next() % 300)).map(|_| next() as u8).collect();
        } else {
            for _ in 0..(1 + next() % 4) {
                let idx = (next() as usize) % p.len();
                p[idx] = next() as u8;
            }
            p.truncate(1 + (next() as usize) % p.len());
        }
        let _ = sock.send_to(&p, target);
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // hostile streams: huge lengths, truncated values
    for body in [
        vec![10u8, 0xff, 0xff, 0xff, 0xff],
        vec![6u8, 0xdf, 0xff, 0xff, 0xff, 0xff],
        vec![9u8, 0x82, 0xa4],
    ] {
        if let Ok(mut s) = std::net::TcpStream::connect(target) {
            let _ = s.write_all(&body);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.stats().dropped_malformed > 100, "{:?}", h.stats());
    // still alive: a ping gets an ack
    let ping = Ping {
        seq_no: 77,
        node: h.name().to_string(),
        ..Default::default()
    }
    .encode();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut got = false;
    for _ in 0..20 {
        sock.send_to(&ping, target).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n > 0
                && (buf[0] == wire::ty::ACK
                    || buf[0] == wire::ty::COMPOUND
                    || buf[0] == wire::ty::COMPRESS)
            {
                got = true;
            }
        }
        if got {
            break;
        }
    }
    assert!(got, "no ack after garbage");
    h.shutdown();
}

/// Join intents for members nobody knows (kept in case the member's ALIVE
/// comes later) stay within their budget: 1024 names of at most 512 bytes.
#[tokio::test(flavor = "current_thread")]
async fn intents_for_unknown_members_are_bounded() {
    let cfg = Config::new(
        format!("intents-{}", std::process::id()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Profile::Local,
    );
    let h = Handle::start(cfg).await.expect("start");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let intent = |name: &str| {
        let mut m = vec![wire::ty::USER];
        m.extend(
            nuvol_gossip::serf::Intent {
                ltime: 5,
                node: name.to_string(),
                prune: false,
            }
            .encode_join(),
        );
        m
    };
    for i in 0..2000 {
        sock.send_to(&intent(&format!("ghost-{i}")), h.advertise())
            .expect("send");
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    sock.send_to(&intent(&"x".repeat(600)), h.advertise())
        .expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = h.stats();
    assert_eq!(s.packets_in, 2001, "{s:?}");
    assert_eq!(s.dropped_full, 2000 - 1024, "{s:?}");
    assert_eq!(s.dropped_malformed, 1, "{s:?}");
    h.shutdown();
}
