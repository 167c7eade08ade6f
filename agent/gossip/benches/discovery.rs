//! Gossip at scale: N nuvol gossip nodes (`nuvol-gossip-node`) against N Go
//! `serf agent`s (Debian's serf), same LAN timing, same run, each node its
//! own process on its own 127.x address, all inside a fresh network
//! namespace (so the byte counters are ours alone).
//!
//! For N in `NUVOL_BENCH_N` (default `10,50,200`), per implementation:
//! - startup: N nodes joining one seed, until every node lists all N;
//! - join-to-all: one more node joins; time until all N logged its join;
//! - failure detection: it is killed with SIGKILL; time until all N logged
//!   it failed;
//! - bytes/s/node: bytes sent (UDP + TCP, counted by nftables per source
//!   address) over a 10 s steady-state window;
//! - RSS per node (VmRSS, mean).
//!
//! Each N runs `NUVOL_BENCH_TRIALS` trials per implementation (default 3,
//! 1 at N >= 200), alternating nuvol and Go; prints every trial, the
//! per-column medians (`nuvol~`, `go~`) and their nuvol/Go ratios (< 1 is
//! better for nuvol on every column). Run: `cargo bench -p nuvol-gossip
//! --bench discovery` (as root).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Nuvol,
    Go,
}

impl Imp {
    fn label(self) -> &'static str {
        match self {
            Imp::Nuvol => "nuvol",
            Imp::Go => "go-serf",
        }
    }
    fn ip(self, i: usize) -> String {
        let net = if self == Imp::Nuvol { 1 } else { 2 };
        format!("127.{net}.{}.{}", i / 200, i % 200 + 1)
    }
}

/// Per node: (when, "join X" / "failed X").
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

struct Node {
    name: String,
    ip: String,
    child: Child,
    log: Log,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(ns: &str, imp: Imp, i: usize, seed: Option<&str>) -> Node {
    let name = format!("{}-{i}", imp.label());
    let ip = imp.ip(i);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    match imp {
        Imp::Nuvol => {
            cmd.arg(env!("CARGO_BIN_EXE_nuvol-gossip-node")).args([
                "--name",
                &name,
                "--bind",
                &format!("{ip}:7946"),
            ]);
            if let Some(s) = seed {
                cmd.args(["--join", &format!("{s}:7946")]);
            }
            cmd.stdin(Stdio::piped());
        }
        Imp::Go => {
            cmd.args(["serf", "agent"])
                .arg(format!("-node={name}"))
                .arg(format!("-bind={ip}:7946"))
                .arg(format!("-rpc-addr={ip}:7373"));
            if let Some(s) = seed {
                cmd.arg(format!("-join={s}:7946"));
            }
            cmd.stdin(Stdio::null());
        }
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let out = child.stdout.take().expect("stdout");
    let log: Log = Arc::default();
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // nuvol: "event join X"; Go: "... serf: EventMemberJoin: X 127..."
            let ev = if let Some(r) = line.strip_prefix("event ") {
                Some(r.to_string())
            } else if let Some(at) = line.find("EventMemberJoin: ") {
                line[at + 17..]
                    .split_whitespace()
                    .next()
                    .map(|n| format!("join {n}"))
            } else if let Some(at) = line.find("EventMemberFailed: ") {
                line[at + 19..]
                    .split_whitespace()
                    .next()
                    .map(|n| format!("failed {n}"))
            } else {
                None
            };
            if let Some(e) = ev {
                if let Ok(mut g) = l.lock() {
                    g.push((Instant::now(), e));
                }
            }
        }
    });
    Node {
        name,
        ip,
        child,
        log,
    }
}

fn seen(n: &Node, what: &str) -> Option<Instant> {
    n.log
        .lock()
        .ok()?
        .iter()
        .find(|(_, e)| e == what)
        .map(|(t, _)| *t)
}

fn joined_count(n: &Node) -> usize {
    n.log
        .lock()
        .map(|g| {
            let mut names: Vec<&str> = g
                .iter()
                .filter_map(|(_, e)| e.strip_prefix("join "))
                .filter(|name| *name != n.name)
                .collect();
            names.sort_unstable();
            names.dedup();
            names.len()
        })
        .unwrap_or(0)
}

/// Wait until `f(node)` gives a time for every node; the latest of them.
fn all_seen(nodes: &[Node], what: &str, limit: Duration) -> Option<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let ts: Vec<Option<Instant>> = nodes.iter().map(|n| seen(n, what)).collect();
        if ts.iter().all(Option::is_some) {
            return ts.into_iter().flatten().max();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Bytes sent per source address, from the nftables counters.
fn counters(ns: &str) -> HashMap<String, u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "nvbench"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ip = f.get(f.iter().position(|w| *w == "saddr")? + 1)?;
            let b = f.get(f.iter().position(|w| *w == "bytes")? + 1)?;
            Some((ip.to_string(), b.parse().ok()?))
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Result1 {
    startup: f64,
    join: f64,
    detect: f64,
    bps: f64,
    rss_kib: f64,
}

fn run(ns: &str, imp: Imp, n: usize) -> Option<Result1> {
    // counters for every address this run uses
    let mut rules = String::from(
        "table ip nvbench {\n chain o {\n  type filter hook output priority 0; policy accept;\n",
    );
    for i in 0..=n {
        rules.push_str(&format!("  ip saddr {} counter\n", imp.ip(i)));
    }
    rules.push_str(" }\n}\n");
    let f = std::env::temp_dir().join(format!("nvbench-{}.nft", std::process::id()));
    std::fs::write(&f, rules).ok()?;
    sh(&[
        "ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "nvbench",
    ]);
    let ok = sh(&["ip", "netns", "exec", ns, "nft", "-f", &f.to_string_lossy()]);
    let _ = std::fs::remove_file(&f);
    if !ok {
        eprintln!("nftables table failed");
        return None;
    }

    let t0 = Instant::now();
    let mut nodes = vec![spawn(ns, imp, 0, None)];
    std::thread::sleep(Duration::from_millis(300));
    let seed = nodes[0].ip.clone();
    for i in 1..n {
        nodes.push(spawn(ns, imp, i, Some(&seed)));
        std::thread::sleep(Duration::from_millis(10));
    }
    let limit = Duration::from_secs(60 + n as u64);
    // every node lists the other n - 1 (Go also logs its own join; nuvol not)
    while nodes.iter().any(|x| joined_count(x) < n - 1) {
        if t0.elapsed() > limit {
            let c: Vec<usize> = nodes.iter().map(joined_count).collect();
            eprintln!(
                "{} N={n}: startup did not converge in {limit:?}: min {:?}",
                imp.label(),
                c.iter().min()
            );
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let startup = t0.elapsed().as_secs_f64();

    // steady state: bytes over 10 s, RSS
    std::thread::sleep(Duration::from_secs(3));
    let c0 = counters(ns);
    std::thread::sleep(Duration::from_secs(10));
    let c1 = counters(ns);
    let sent: u64 = nodes
        .iter()
        .map(|x| {
            let (a, b) = (c0.get(&x.ip).copied(), c1.get(&x.ip).copied());
            b.unwrap_or(0).saturating_sub(a.unwrap_or(0))
        })
        .sum();
    let bps = sent as f64 / 10.0 / n as f64;
    let rss_kib = nodes
        .iter()
        .map(|x| rss_kib(x.child.id()) as f64)
        .sum::<f64>()
        / n as f64;

    // one more node joins
    let t_join = Instant::now();
    let newcomer = spawn(ns, imp, n, Some(&seed));
    let what = format!("join {}", newcomer.name);
    let Some(t) = all_seen(&nodes, &what, Duration::from_secs(60)) else {
        eprintln!("{} N={n}: join never reached all", imp.label());
        return None;
    };
    let join = (t - t_join).as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));

    // and is killed
    let name = newcomer.name.clone();
    let t_kill = Instant::now();
    drop(newcomer); // SIGKILL
    let what = format!("failed {name}");
    let Some(t) = all_seen(&nodes, &what, Duration::from_secs(90)) else {
        eprintln!("{} N={n}: failure never detected by all", imp.label());
        return None;
    };
    let detect = (t - t_kill).as_secs_f64();
    drop(nodes);
    std::thread::sleep(Duration::from_secs(1));
    Some(Result1 {
        startup,
        join,
        detect,
        bps,
        rss_kib,
    })
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored
    let sizes: Vec<usize> = std::env::var("NUVOL_BENCH_N")
        .unwrap_or_else(|_| "10,50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| (2..=1000).contains(&n))
        .collect();
    if !Command::new("serf")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("discovery bench: Debian's `serf` is not installed; skipped");
        return;
    }
    let ns = format!("nvbench{}", std::process::id());
    if !sh(&["ip", "netns", "add", &ns]) {
        eprintln!("discovery bench: cannot create a network namespace (root needed); skipped");
        return;
    }
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            sh(&["ip", "netns", "del", &self.0]);
        }
    }
    let _guard = Ns(ns.clone());
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    println!("discovery bench: LAN timing, one process per node, 127.x addresses in a netns");
    println!(
        "{:>5} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "N", "impl", "startup_s", "join_s", "detect_s", "bytes/s/node", "rss_KiB"
    );
    let trials_for = |n: usize| -> usize {
        let default = if n >= 200 { 1 } else { 3 };
        std::env::var("NUVOL_BENCH_TRIALS")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .filter(|&t| (1..=20).contains(&t))
            .unwrap_or(default)
    };
    let row = |n: usize, label: &str, r: &Result1| {
        println!(
            "{:>5} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>12.0} {:>10.0}",
            n, label, r.startup, r.join, r.detect, r.bps, r.rss_kib
        );
    };
    for &n in &sizes {
        let trials = trials_for(n);
        // trials alternate nuvol and Go so drift in the machine's load hits
        // both alike
        let mut res: [Vec<Result1>; 2] = [Vec::new(), Vec::new()];
        for t in 0..trials {
            for (k, imp) in [Imp::Nuvol, Imp::Go].into_iter().enumerate() {
                match run(&ns, imp, n) {
                    Some(r) => {
                        row(n, &format!("{}#{}", imp.label(), t + 1), &r);
                        res[k].push(r);
                    }
                    None => println!("{n:>5} {:>8} did not complete", imp.label()),
                }
            }
        }
        let [a, b] = [median(&res[0]), median(&res[1])];
        if let Some(a) = &a {
            row(n, "nuvol~", a);
        }
        if let Some(b) = &b {
            row(n, "go~", b);
        }
        if let (Some(a), Some(b)) = (a, b) {
            let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
            println!(
                "{:>5} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>10.2}   (medians of {}/{} trials, nuvol/go; targets: join, detect <= 1; rss <= 0.33)",
                n,
                "ratio",
                ratio(a.startup, b.startup),
                ratio(a.join, b.join),
                ratio(a.detect, b.detect),
                ratio(a.bps, b.bps),
                ratio(a.rss_kib, b.rss_kib),
                res[0].len(),
                res[1].len(),
            );
        }
    }
}

/// The median of each column on its own (the middle value; the mean of the
/// two middle ones for an even count).
fn median(rs: &[Result1]) -> Option<Result1> {
    if rs.is_empty() {
        return None;
    }
    let col = |f: fn(&Result1) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    };
    Some(Result1 {
        startup: col(|r| r.startup),
        join: col(|r| r.join),
        detect: col(|r| r.detect),
        bps: col(|r| r.bps),
        rss_kib: col(|r| r.rss_kib),
    })
}
