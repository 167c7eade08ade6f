//! A hostile community network on loopback, for the "under attack" tests:
//! many idle and slow HTTP connections from many source addresses
//! (127.1.x.y), honest clients from others (127.2.x.y), a gossip prober
//! that times the agent's acks, and the agent's fd count and RSS.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Raise this process's soft fd limit to its hard limit (the attacker
/// holds thousands of sockets).
pub fn raise_own_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Open fds of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft fd limit of `pid`.
pub fn fd_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Write syscalls made by `pid` so far (all its threads).
pub fn write_syscalls(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The p-th percentile (0..=100) of `v`.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The i-th attacker source address: 127.1.x.y, `per_addr` connections each.
fn attacker_addr(i: usize, per_addr: usize) -> IpAddr {
    let a = i / per_addr;
    IpAddr::V4(Ipv4Addr::new(127, 1, (a / 250) as u8, (a % 250 + 1) as u8))
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src, 0))?;
    tokio::time::timeout(Duration::from_secs(3), s.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// An attacker holding `idle` silent connections and `slow` ones that send
/// a request head one byte every 5 s, reconnecting whatever the agent
/// closes, until dropped.
pub struct Attack {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Connections open now.
    pub open: Arc<AtomicU64>,
    /// Connections made so far.
    pub made: Arc<AtomicU64>,
}

impl Attack {
    pub fn start(to: SocketAddr, idle: usize, slow: usize, per_addr: usize) -> Attack {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let open = Arc::new(AtomicU64::new(0));
        let made = Arc::new(AtomicU64::new(0));
        let (o, m) = (open.clone(), made.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for i in 0..idle + slow {
                    let src = attacker_addr(i, per_addr);
                    let (o, m, mut stopped) = (o.clone(), m.clone(), stopped.clone());
                    let is_slow = i >= idle;
                    tasks.push(tokio::spawn(async move {
                        while !*stopped.borrow() {
                            let Ok(mut s) = connect_from(src, to).await else {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            };
                            m.fetch_add(1, Ordering::Relaxed);
                            o.fetch_add(1, Ordering::Relaxed);
                            let head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n";
                            let mut at = 0;
                            let mut buf = [0u8; 512];
                            let mut tick = tokio::time::interval(Duration::from_secs(5));
                            loop {
                                tokio::select! {
                                    _ = stopped.changed() => break,
                                    r = s.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { break },
                                    _ = tick.tick(), if is_slow => {
                                        if s.write_all(&head[at % head.len()..at % head.len() + 1]).await.is_err() {
                                            break;
                                        }
                                        at += 1;
                                    }
                                }
                            }
                            o.fetch_sub(1, Ordering::Relaxed);
                            drop(s);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Attack {
            stop: Some(stop),
            thread: Some(thread),
            open,
            made,
        }
    }

    /// Wait until `n` connections were made (at most `within`).
    pub fn wait_made(&self, n: u64, within: Duration) {
        let t0 = Instant::now();
        while self.made.load(Ordering::Relaxed) < n && t0.elapsed() < within {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` honest clients at once, each from its own address (127.2.0.x), each
/// asking `GET path` once: how long each took to a complete 200 answer,
/// `None` for those that got none within `deadline`.
pub fn honest_clients(
    to: SocketAddr,
    path: &str,
    n: usize,
    deadline: Duration,
) -> Vec<Option<Duration>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let src = IpAddr::V4(Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8));
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let one = async {
                    let mut s = connect_from(src, to).await.ok()?;
                    s.write_all(req.as_bytes()).await.ok()?;
                    let mut out = Vec::new();
                    s.read_to_end(&mut out).await.ok()?;
                    out.starts_with(b"HTTP/1.1 200").then_some(())
                };
                match tokio::time::timeout(deadline, one).await {
                    Ok(Some(())) => Some(t0.elapsed()),
                    _ => None,
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or(None));
        }
        out
    })
}

/// `GET path` from 127.0.0.1, one request after another for `run`, every
/// `every`: the latency of each (a request with no 200 answer within 10 s
/// counts as 10 s).
pub fn latencies(port: u16, path: &str, run: Duration, every: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < run {
        out.push(one_get(port, path).unwrap_or(Duration::from_secs(10)));
        std::thread::sleep(every);
    }
    out
}

/// One `GET path` from 127.0.0.1: how long to a whole 200 answer.
pub fn one_get(port: u16, path: &str) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    out.starts_with(b"HTTP/1.1 200").then(|| t0.elapsed())
}

/// Sends memberlist pings to a gossip node and times its acks.
pub struct Pinger {
    sock: UdpSocket,
    to: SocketAddr,
    node: String,
    seq: u32,
}

impl Pinger {
    pub fn new(to: SocketAddr, node: &str) -> Pinger {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Pinger {
            sock,
            to,
            node: node.to_string(),
            seq: 1000,
        }
    }

    /// One ping: the time to its ack, `None` without one within 2 s.
    pub fn ping(&mut self) -> Option<Duration> {
        self.seq += 1;
        let p = nuvol_gossip::wire::Ping {
            seq_no: self.seq,
            node: self.node.clone(),
            ..Default::default()
        };
        let mut buf = [0u8; 2048];
        while self.sock.recv(&mut buf).is_ok() {} // stale acks
        let t0 = Instant::now();
        self.sock.send_to(&p.encode(), self.to).ok()?;
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(n) = self.sock.recv(&mut buf) {
                if n > 0 {
                    return Some(t0.elapsed());
                }
            }
        }
        None
    }

    /// Ping every `every` for `run`: each RTT (a lost ack counts as 2 s).
    pub fn rtts(&mut self, run: Duration, every: Duration) -> Vec<Duration> {
        let mut out = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < run {
            out.push(self.ping().unwrap_or(Duration::from_secs(2)));
            std::thread::sleep(every);
        }
        out
    }
}

/// Run `f` on a thread while the caller does something else.
pub fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(f)
}

/// The milliseconds of `d`, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
