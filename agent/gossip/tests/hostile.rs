//! A hostile peer against a real node: the attacker process
//! (`nuvol-gossip-attack`) floods user events, trickles push/pull streams and
//! forges ALIVE messages at `nuvol-gossip-node` processes; the node's memory
//! and CPU (from /proc) stay within budget, the excess is counted, and real
//! nodes (nuvol and Go `serf`) keep working with it.

mod common;

use common::{attack, wait_for, GoSerf, Node};
use nuvol_gossip::msgpack::decode_value;
use nuvol_gossip::wire::{self, ty, Ack, Framing, Ping};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Distinct user events at one Lamport time, oversized payloads and events
/// over many Lamport times: the buffers stay small on the attacked node and
/// on the node it gossips with, the excess is counted, a new node can still
/// join (push/pull state stays small) and a real event still gets through.
#[test]
fn user_event_flood_stays_within_budget() {
    let pid = std::process::id();
    let mut a = Node::start(&format!("ev-a-{pid}"), &["--profile", "local"]);
    let join = a.addr.to_string();
    let mut b = Node::start(
        &format!("ev-b-{pid}"),
        &["--profile", "local", "--join", &join],
    );
    let (an, bn) = (a.name.clone(), b.name.clone());
    wait_for(Duration::from_secs(20), || {
        a.members().contains_key(&bn) && b.members().contains_key(&an)
    })
    .expect("a and b see each other");
    let (a0, b0) = (a.rss_kib(), b.rss_kib());
    let target = a.addr.to_string();
    let t = target.as_str();
    // oversized payloads (Serf refuses to send more than 9 KiB)
    attack(&[
        "events",
        "--target",
        t,
        "--count",
        "2000",
        "--ltime",
        "100",
        "--payload",
        "16000",
        "--rate",
        "2000",
    ]);
    // many distinct small events at one Lamport time
    attack(&[
        "events",
        "--target",
        t,
        "--count",
        "3000",
        "--ltime",
        "101",
        "--payload",
        "400",
        "--rate",
        "3000",
    ]);
    // and spread over 400 Lamport times
    attack(&[
        "events",
        "--target",
        t,
        "--count",
        "4000",
        "--ltime",
        "110",
        "--ltimes",
        "400",
        "--payload",
        "1000",
        "--rate",
        "3000",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let (a1, b1) = (a.rss_kib(), b.rss_kib());
    eprintln!(
        "user-event flood: attacked node RSS {:.1} -> {:.1} MiB, its peer {:.1} -> {:.1} MiB",
        mib(a0),
        mib(a1),
        mib(b0),
        mib(b1)
    );
    // a new node joins the attacked one: the push/pull state must fit
    let mut c = Node::start(
        &format!("ev-c-{pid}"),
        &["--profile", "local", "--join", &join],
    );
    let cn = c.name.clone();
    let joined = wait_for(Duration::from_secs(15), || {
        c.members().get(&an).is_some_and(|s| s == "alive")
    });
    // a real event after the flood still reaches the attacked node
    assert_eq!(b.ask("event legit hello", "sent").as_deref(), Some("sent"));
    let delivered = wait_for(Duration::from_secs(10), || a.saw("event user legit "));
    let stats = a.stats();
    eprintln!("attacked node counters: {stats:?}");
    assert!(joined.is_some(), "{cn} could not join the flooded node");
    assert!(delivered.is_some(), "a real event was lost after the flood");
    assert!(
        a1.saturating_sub(a0) < 3 * 1024,
        "attacked node grew {:.1} MiB",
        mib(a1.saturating_sub(a0))
    );
    assert!(
        b1.saturating_sub(b0) < 3 * 1024,
        "its peer grew {:.1} MiB",
        mib(b1.saturating_sub(b0))
    );
    let too_large = stats.get("events_too_large").copied().unwrap_or(0);
    let slot_full = stats.get("events_slot_full").copied().unwrap_or(0);
    let evicted = stats.get("events_evicted").copied().unwrap_or(0);
    assert!(too_large >= 1900, "{stats:?}");
    assert!(slot_full >= 2900, "{stats:?}");
    assert!(evicted > 0, "{stats:?}");
    assert!(stats.get("event_buffer_bytes").copied().unwrap_or(u64::MAX) <= 128 * 1024);
}

/// Sends pings to `to` every 100 ms until `stop`; the slowest ack and the
/// number of pings left unanswered for a second.
fn ping_watch(to: SocketAddr, name: String, stop: Arc<AtomicBool>) -> (Duration, u32) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let framing = Framing::default();
    let mut worst = Duration::ZERO;
    let mut lost = 0;
    let mut seq = 0u32;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let ping = Ping {
            seq_no: seq,
            node: name.clone(),
            ..Default::default()
        };
        let sent = Instant::now();
        let _ = sock.send_to(&ping.encode(), to);
        let mut got = false;
        while sent.elapsed() < Duration::from_secs(1) && !got {
            let mut buf = [0u8; 65536];
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(mut m) = framing.open_packet(&buf[..n]) else {
                continue;
            };
            if m.first() == Some(&ty::COMPRESS) {
                m = wire::decompress(&m[1..]).unwrap_or_default();
            }
            let parts: Vec<Vec<u8>> = if m.first() == Some(&ty::COMPOUND) {
                wire::split_compound(&m[1..])
                    .map(|p| p.iter().map(|x| x.to_vec()).collect())
                    .unwrap_or_default()
            } else {
                vec![m]
            };
            for p in parts {
                if p.first() == Some(&ty::ACK) {
                    let a = decode_value(&p[1..])
                        .ok()
                        .and_then(|v| Ack::decode(&v).ok());
                    if a.is_some_and(|a| a.seq_no == seq) {
                        got = true;
                    }
                }
            }
        }
        if got {
            worst = worst.max(sent.elapsed());
        } else {
            lost += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (worst, lost)
}

fn secs(done: &std::collections::BTreeMap<String, String>, k: &str) -> f64 {
    done.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::MAX)
}

/// Push/pull streams fed 1 KiB at a time: a header value of nested arrays
/// of `nil` (which the node used to re-parse from its start after every
/// read) is refused once past the msgpack value limit; a long string is cut
/// at the stream deadline (10 s on the LAN profile); one source gets at most
/// 4 streams at once. Meanwhile the node spends little CPU, answers every
/// ping at once and buffers no more than the stream budget.
#[test]
fn trickled_push_pull_is_cheap_and_cut_at_the_deadline() {
    let pid = std::process::id();
    let mut node = Node::start(&format!("trickle-{pid}"), &["--profile", "lan"]);
    let cpu0 = node.cpu_secs();
    let rss0 = node.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let (to, name, stop) = (node.addr, node.name.clone(), stop.clone());
        std::thread::spawn(move || ping_watch(to, name, stop))
    };
    let t0 = Instant::now();
    let target = node.addr.to_string();
    let run = |shape: &str, conns: &str, every_ms: &str, sources: &str| {
        let args: Vec<String> = [
            "trickle",
            "--target",
            &target,
            "--conns",
            conns,
            "--chunk",
            "1024",
            "--every-ms",
            every_ms,
            "--max-bytes",
            "4000000",
            "--shape",
            shape,
            "--sources",
            sources,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        std::thread::spawn(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            attack(&a)
        })
    };
    // 64 KiB/s per string stream: 8 of them stay within the byte budget
    // until the deadline
    let nils = run(
        "nils",
        "4",
        "4",
        "127.0.0.21,127.0.0.22,127.0.0.23,127.0.0.24",
    );
    let string = run(
        "string",
        "4",
        "16",
        "127.0.0.31,127.0.0.32,127.0.0.33,127.0.0.34",
    );
    let one_source = run("string", "6", "16", "127.0.0.41");
    let rss_mid = {
        std::thread::sleep(Duration::from_secs(9));
        node.rss_kib()
    };
    let (nils, string, one_source) = (
        nils.join().expect("nils"),
        string.join().expect("string"),
        one_source.join().expect("one source"),
    );
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (worst_ack, lost) = watch.join().expect("ping watch");
    let cpu = node.cpu_secs() - cpu0;
    let stats = node.stats();
    eprintln!(
        "trickle: node CPU {cpu:.2} s over {:.1} s; RSS {:.1} -> {:.1} MiB mid-attack; slowest ack {worst_ack:?}, {lost} pings lost",
        wall.as_secs_f64(),
        mib(rss0),
        mib(rss_mid)
    );
    eprintln!("  nils: {nils:?}\n  string: {string:?}\n  one source: {one_source:?}");
    eprintln!("node counters: {stats:?}");
    assert!(
        cpu < 1.0,
        "node spent {cpu:.2} s of CPU on 14 trickled streams"
    );
    assert!(
        worst_ack < Duration::from_millis(250),
        "slowest ack {worst_ack:?}"
    );
    assert_eq!(lost, 0);
    for d in [&nils, &string, &one_source] {
        assert_eq!(d.get("cut"), d.get("conns"), "every stream is cut: {d:?}");
    }
    assert!(secs(&nils, "longest_secs") < 3.0, "{nils:?}");
    assert!(
        (9.0..12.5).contains(&secs(&string, "shortest_secs")),
        "{string:?}"
    );
    assert!(secs(&string, "longest_secs") < 12.5, "{string:?}");
    let each: Vec<f64> = one_source
        .get("secs_each")
        .map(|l| l.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(
        each.iter().filter(|s| **s < 1.0).count(),
        2,
        "{one_source:?}"
    );
    assert_eq!(
        each.iter().filter(|s| (9.0..12.5).contains(*s)).count(),
        4,
        "{one_source:?}"
    );
    assert!(
        stats.get("streams_deadline").copied().unwrap_or(0) >= 8,
        "{stats:?}"
    );
    assert!(
        stats.get("streams_refused").copied().unwrap_or(0) >= 2,
        "{stats:?}"
    );
    assert!(
        stats.get("dropped_malformed").copied().unwrap_or(0) >= 4,
        "{stats:?}"
    );
    assert_eq!(stats.get("streams_open").copied(), Some(0), "{stats:?}");
}

/// 6,000 forged ALIVE messages at 1,000/s from one source: the member
/// table stays small, a real Go node that joins afterwards is seen at once,
/// and the refused members are counted.
#[test]
fn forged_alive_flood_from_one_source() {
    let pid = std::process::id();
    let mut node = Node::start(&format!("flood-{pid}"), &["--profile", "lan"]);
    let target = node.addr.to_string();
    let rss0 = node.rss_kib();
    attack(&[
        "alives",
        "--target",
        &target,
        "--count",
        "6000",
        "--rate",
        "1000",
        "--sources",
        "127.0.0.77",
        "--prefix",
        &format!("fake{pid}"),
    ]);
    let members_after_flood = node.members().len();
    let go_name = format!("go-flood-{pid}");
    let t_join = Instant::now();
    let go = GoSerf::start(&go_name, &[format!("-join={}", node.addr)]);
    let seen = wait_for(Duration::from_secs(15), || {
        node.members().get(&go_name).is_some_and(|s| s == "alive")
    });
    let rss1 = node.rss_kib();
    let stats = node.stats();
    eprintln!(
        "alive flood (one source): {members_after_flood} members after the flood; Go node seen after {:?} (since its start {:?}); RSS {:.1} -> {:.1} MiB; {stats:?}",
        seen,
        t_join.elapsed(),
        mib(rss0),
        mib(rss1)
    );
    assert!(
        seen.is_some(),
        "the Go node was never seen; go log:\n{}",
        go.log()
    );
    assert!(
        members_after_flood <= 100,
        "{members_after_flood} members after the flood"
    );
    assert!(
        stats.get("members_rate_limited").copied().unwrap_or(0) >= 5800,
        "{stats:?}"
    );
}

/// The same flood from 64 source addresses, each within its rate, against
/// a table of 512: the table fills with members nobody confirmed, a real Go
/// node still gets in (the oldest unconfirmed one is evicted) and is seen
/// alive, and the evictions are counted.
#[test]
fn forged_alive_flood_from_many_sources_fills_no_room_for_real_nodes() {
    let pid = std::process::id();
    let mut node = Node::start(
        &format!("flood64-{pid}"),
        &["--profile", "lan", "--max-members", "512"],
    );
    let target = node.addr.to_string();
    let sources: Vec<String> = (0..64).map(|i| format!("127.0.1.{}", i + 10)).collect();
    attack(&[
        "alives",
        "--target",
        &target,
        "--count",
        "2000",
        "--rate",
        "1000",
        "--sources",
        &sources.join(","),
        "--prefix",
        &format!("fake{pid}"),
    ]);
    let members_after_flood = node.members().len();
    let go_name = format!("go-flood64-{pid}");
    let go = GoSerf::start(&go_name, &[format!("-join={}", node.addr)]);
    let seen = wait_for(Duration::from_secs(15), || {
        node.members().get(&go_name).is_some_and(|s| s == "alive")
    });
    let stats = node.stats();
    eprintln!(
        "alive flood (64 sources): {members_after_flood} members after the flood; Go node seen after {seen:?}; {stats:?}"
    );
    assert!(
        seen.is_some(),
        "the Go node was never seen; go log:\n{}",
        go.log()
    );
    assert!(members_after_flood <= 512);
    assert!(
        stats.get("members_evicted").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    // the Go node stays: confirmed by its acks, it is never evicted
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        node.members().get(&go_name).map(String::as_str),
        Some("alive")
    );
}
