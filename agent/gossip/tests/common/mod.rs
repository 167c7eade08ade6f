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

/// A Go serf agent, killed on drop.
pub struct GoSerf {
    child: Child,
    /// RPC address for the `serf` CLI
    pub rpc: String,
    /// gossip address
    pub bind: SocketAddr,
    dir: PathBuf,
}

impl Drop for GoSerf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl GoSerf {
    /// `serf agent -node=NAME` on a free 127.0.0.1 port, with extra flags.
    pub fn start(name: &str, extra: &[String]) -> GoSerf {
        let port = free_port();
        let rpc_port = free_port();
        let dir = std::env::temp_dir().join(format!("nuvol-serf-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let bind = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join("agent.log")).expect("log");
        let child = Command::new("serf")
            .arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr=127.0.0.1:{rpc_port}"))
            .arg("-log-level=debug")
            .args(extra)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serf is installed (tests/apt-packages.txt)");
        let g = GoSerf {
            child,
            rpc: format!("127.0.0.1:{rpc_port}"),
            bind,
            dir,
        };
        wait_for(Duration::from_secs(10), || g.members().is_some());
        g
    }

    /// The agent's data directory (logs, keyring file).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Run the `serf` CLI against this agent: (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("serf")
            .args(&args[..1])
            .arg(format!("-rpc-addr={}", self.rpc))
            .args(&args[1..])
            .output()
            .expect("serf cli");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `serf members -format=json`.
    pub fn members(&self) -> Option<serde_json::Value> {
        let (ok, out) = self.cli(&["members", "-format=json"]);
        if !ok {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// Status of `node` as Go sees it.
    pub fn status_of(&self, node: &str) -> Option<String> {
        let m = self.members()?;
        m["members"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == node)
            .and_then(|x| x["status"].as_str().map(str::to_string))
    }

    /// The agent's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}
