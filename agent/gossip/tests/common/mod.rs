//! Real processes for the hostile-network tests: a `nuvol-gossip-node`
//! (the agent's gossip, driven on stdin/stdout), Go `serf agent`s (Debian
//! package `serf`) and the attacker `nuvol-gossip-attack`; plus the
//! agent's RSS and CPU time from /proc.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port free for both UDP and TCP on 127.0.0.1.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let p = u.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// Polls `f` every 200 ms for up to `limit`; the time it took, or `None`.
pub fn wait_for<F: FnMut() -> bool>(limit: Duration, mut f: F) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

pub type Lines = Arc<Mutex<Vec<String>>>;

/// Spawn `cmd` (a `nuvol-gossip-node`, directly or through `ip netns
/// exec`) with stdin piped and its stdout lines collected (bounded: user
/// events can be many).
pub fn spawn_piped(cmd: &mut Command) -> (Child, ChildStdin, Lines) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nuvol-gossip-node");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Lines = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut g) = l.lock() {
                if g.len() > 100_000 {
                    g.drain(..50_000);
                }
                g.push(line);
            }
        }
    });
    (child, stdin, lines)
}

/// A `nuvol-gossip-node` process, killed on drop.
pub struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Lines,
    /// its gossip address
    pub addr: SocketAddr,
    /// its node name
    pub name: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Start a node on a free 127.0.0.1 port with extra arguments.
    pub fn start(name: &str, extra: &[&str]) -> Node {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (child, stdin, lines) = spawn_piped(
            Command::new(env!("CARGO_BIN_EXE_nuvol-gossip-node"))
                .args(["--name", name, "--bind", &addr.to_string()])
                .args(extra),
        );
        let n = Node {
            child,
            stdin,
            lines,
            addr,
            name: name.to_string(),
        };
        wait_for(Duration::from_secs(10), || n.saw("ready")).expect("node ready");
        n
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Did the node print a line starting with `prefix`?
    pub fn saw(&self, prefix: &str) -> bool {
        self.lines
            .lock()
            .map(|g| g.iter().any(|l| l.starts_with(prefix)))
            .unwrap_or(false)
    }

    /// Lines starting with `prefix` printed so far.
    pub fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .map(|g| g.iter().filter(|l| l.starts_with(prefix)).count())
            .unwrap_or(0)
    }

    /// Send a command; the first answer line starting with `prefix`.
    pub fn ask(&mut self, cmd: &str, prefix: &str) -> Option<String> {
        let before = self.lines.lock().map(|g| g.len()).unwrap_or(0);
        writeln!(self.stdin, "{cmd}").ok()?;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            let got = self.lines.lock().ok().and_then(|g| {
                g[before.min(g.len())..]
                    .iter()
                    .find(|l| l.starts_with(prefix))
                    .cloned()
            });
            if got.is_some() {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `key=value` pairs of an answer line (after its first word).
    fn pairs(line: &str) -> BTreeMap<String, String> {
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every counter of `stats`.
    pub fn stats(&mut self) -> BTreeMap<String, u64> {
        let line = self.ask("stats", "stats").unwrap_or_default();
        Self::pairs(&line)
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect()
    }

    /// One counter of `stats` (0 when absent).
    pub fn stat(&mut self, k: &str) -> u64 {
        self.stats().get(k).copied().unwrap_or(0)
    }

    /// Members and their Serf status.
    pub fn members(&mut self) -> BTreeMap<String, String> {
        let line = self.ask("members", "members").unwrap_or_default();
        Self::pairs(&line)
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// CPU time used (user + system), seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }
}

/// VmRSS of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process from /proc/PID/stat, seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name, which is in parentheses
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15
    let tick = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ on Linux
    (tick(14) + tick(15)) as f64 / hz
}

/// Run the attacker to completion; its `done` line as key=value pairs.
pub fn attack(args: &[&str]) -> BTreeMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_nuvol-gossip-attack"))
        .args(args)
        .output()
        .expect("nuvol-gossip-attack");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "attacker failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("done"))
        .unwrap_or_default()
        .to_string();
    Node::pairs(&line)
}

/// A Go serf agent (the testkit's, started again on other ports when the
/// ones it picked were taken) at `-log-level=debug`, with a directory of
/// its own for logs and event files, removed on drop.
pub struct GoSerf {
    serf: nuvol_testkit::serf::GoSerf,
    dir: PathBuf,
}

impl std::ops::Deref for GoSerf {
    type Target = nuvol_testkit::serf::GoSerf;
    fn deref(&self) -> &Self::Target {
        &self.serf
    }
}

impl Drop for GoSerf {
    fn drop(&mut self) {
        self.serf.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl GoSerf {
    /// The directory `start(name, ..)` uses, known before it starts (for
    /// an event handler's file).
    pub fn dir_for(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nuvol-serf-{}-{name}", std::process::id()))
    }

    /// `serf agent -node=NAME` on free 127.0.0.1 ports, with extra flags;
    /// `-join=ADDR` among them is waited for.
    pub fn start(name: &str, extra: &[String]) -> GoSerf {
        let dir = Self::dir_for(name);
        let mut args = nuvol_testkit::serf::SerfArgs {
            extra: vec!["-log-level=debug".into()],
            ..Default::default()
        };
        for e in extra {
            match e.strip_prefix("-join=").map(str::parse::<SocketAddr>) {
                Some(Ok(a)) => args.join = Some(a),
                _ => args.extra.push(e.clone()),
            }
        }
        let serf = nuvol_testkit::serf::GoSerf::start(&dir, name, &args);
        GoSerf { serf, dir }
    }

    /// The agent's directory (logs, event files).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// What serf logged.
    pub fn log(&self) -> String {
        self.serf.log_text()
    }
}
