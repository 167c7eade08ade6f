//! A real Go `serf agent` (Debian package `serf`) as a test peer.
//!
//! Its ports are picked free a moment before it starts, so a test running
//! beside it (or an outgoing connection's ephemeral port) can take one in
//! between; serf then exits at once. [`GoSerf::start`] starts it again on
//! other ports, up to three times, and returns only once the agent answers
//! on RPC and, when it was told to join, has a second member alive.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A 127.0.0.1 port free for both UDP and TCP (serf gossips on both).
pub fn free_gossip_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let p = u.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// How to start one serf agent.
#[derive(Clone, Debug, Default)]
pub struct SerfArgs {
    /// `-tag k=v` each.
    pub tags: Vec<String>,
    /// `-join` this address, and wait until the join is seen.
    pub join: Option<SocketAddr>,
    /// Further flags, as given (`-encrypt=…`, `-event-handler=…`).
    pub extra: Vec<String>,
}

/// A Go serf agent, killed on drop.
pub struct GoSerf {
    child: Child,
    /// Its RPC address, for the `serf` CLI.
    pub rpc: String,
    /// Its gossip address.
    pub bind: SocketAddr,
    /// The log of the attempt that started.
    pub log: PathBuf,
}

impl Drop for GoSerf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoSerf {
    /// `serf agent -node=NAME` on free 127.0.0.1 ports, logging to
    /// `DIR/serf-NAME-ATTEMPT.log`. Panics, with the log, if it cannot be
    /// started in three attempts or does not come up in 20 s.
    pub fn start(dir: &Path, name: &str, args: &SerfArgs) -> GoSerf {
        std::fs::create_dir_all(dir).expect("serf log dir");
        let mut last_log = String::new();
        for attempt in 1..=3 {
            let bind = SocketAddr::from(([127, 0, 0, 1], free_gossip_port()));
            let rpc = format!("127.0.0.1:{}", free_gossip_port());
            let mut cmd = Command::new("serf");
            cmd.arg("agent")
                .arg(format!("-node={name}"))
                .arg(format!("-bind={bind}"))
                .arg(format!("-rpc-addr={rpc}"));
            for t in &args.tags {
                cmd.args(["-tag", t]);
            }
            if let Some(j) = args.join {
                cmd.arg(format!("-join={j}"));
            }
            cmd.args(&args.extra);
            let log = dir.join(format!("serf-{name}-{attempt}.log"));
            let file = std::fs::File::create(&log).expect("serf log");
            let child = cmd
                .stdout(Stdio::from(file.try_clone().expect("serf log")))
                .stderr(Stdio::from(file))
                .spawn()
                .expect("serf is installed (tests/apt-packages.txt)");
            let mut g = GoSerf {
                child,
                rpc,
                bind,
                log,
            };
            let want = if args.join.is_some() { 2 } else { 1 };
            let t0 = Instant::now();
            loop {
                if g.alive_members().is_some_and(|n| n >= want) {
                    return g;
                }
                if g.child.try_wait().ok().flatten().is_some() {
                    break; // exited: a port was taken, try others
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "serf {name} did not come up in 20 s: {}",
                    g.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            last_log = g.log_text();
            eprintln!("serf {name} exited at start (attempt {attempt}): {last_log}");
        }
        panic!("serf {name} did not start in 3 attempts: {last_log}");
    }

    /// A serf the caller started itself, for flags [`SerfArgs`] cannot
    /// express (a node name that embeds its port): killed on drop like the
    /// others, no restart.
    pub fn adopt(child: Child, rpc: String, bind: SocketAddr, log: PathBuf) -> GoSerf {
        GoSerf {
            child,
            rpc,
            bind,
            log,
        }
    }

    /// What the agent has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the `serf` CLI against this agent: (success, stdout + stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let Some((verb, rest)) = args.split_first() else {
            return (false, "no serf verb".into());
        };
        match Command::new("serf")
            .arg(verb)
            .arg(format!("-rpc-addr={}", self.rpc))
            .args(rest)
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("serf {verb}: {e}")),
        }
    }

    /// `serf members -format=json`, parsed.
    pub fn members(&self) -> Option<serde_json::Value> {
        let (ok, out) = self.cli(&["members", "-format=json"]);
        if !ok {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// The member named `node`, as Go sees it.
    pub fn member(&self, node: &str) -> Option<serde_json::Value> {
        self.members()?["members"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == node)
            .cloned()
    }

    /// Status of `node` as Go sees it (`alive`, `failed`, `left`).
    pub fn status_of(&self, node: &str) -> Option<String> {
        self.member(node)
            .and_then(|m| m["status"].as_str().map(str::to_string))
    }

    fn alive_members(&self) -> Option<usize> {
        let m = self.members()?;
        Some(
            m["members"]
                .as_array()?
                .iter()
                .filter(|x| x["status"] == "alive")
                .count(),
        )
    }

    /// Kill the agent now (it is not asked to leave), and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
