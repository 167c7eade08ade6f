//! Loss and partitions with `tc netem` (or, on kernels without netem, the
//! same random drop with nftables): three nuvol gossip nodes
//! (`nuvol-gossip-node`) and two Go `serf agent`s, each in its own network
//! namespace on one bridge, LAN timing (Serf's default).
//!
//! - 10% loss on every node's link for 20 s: no member is declared failed
//!   by anyone (Go's member-failed handler and nuvol's events stay quiet).
//! - 30% loss for 20 s: afterwards, within 30 s, everyone sees all five alive.
//! - partition {go-0, nuvol-1, nuvol-2} | {nuvol-3, go-4} for 60 s
//!   (nftables in nuvol-3's and go-4's namespaces drops all traffic to and
//!   from the other side). Checked while it lasts: on the majority side a
//!   nuvol and a Go node see nuvol-3 and go-4 failed, and on the minority
//!   side nuvol-3 and go-4 each see the three others failed (LAN
//!   detection: probe 1 s + suspicion 4-24 s at n = 5, shorter with
//!   confirmations from the own side); at the end of the 60 s they all
//!   still do (no flapping) and the minority pair still sees each other
//!   alive. Then healed: within 60 s everyone sees all five alive again
//!   (Serf/nuvol reconnect to failed members every 30 s and push/pull with
//!   them). The whole test takes about 2 minutes.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces, bridge and veths; removed on drop.
struct Net {
    hub: String,
    nodes: Vec<String>,
}

impl Net {
    fn new(n: usize) -> Net {
        let pid = std::process::id();
        let hub = format!("nvh{pid}");
        let net = Net {
            hub: hub.clone(),
            nodes: (0..n).map(|i| format!("nvn{pid}-{i}")).collect(),
        };
        must(&["ip", "netns", "add", &hub]);
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        for (i, ns) in net.nodes.iter().enumerate() {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            let port = format!("p{i}");
            must(&[
                "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ]);
            must(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            must(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", Net::ip(i)),
                "dev",
                "eth0",
            ]);
            must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        net
    }
    fn ip(i: usize) -> String {
        format!("10.77.0.{}", i + 1)
    }
    /// Loss on what node `i` sends (its eth0 egress): every packet crosses
    /// exactly one shaped link, so `pct` is the loss per packet. `tc netem`
    /// where the kernel has it (CONFIG_NET_SCH_NETEM), else the same random
    /// drop with nftables (`numgen random mod 100 < pct drop` on output).
    fn loss(&self, i: usize, pct: u32) {
        let ns = &self.nodes[i];
        let l = format!("{pct}%");
        sh(&[
            "ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root",
        ]);
        sh(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "nvloss",
        ]);
        if pct == 0 {
            return;
        }
        if sh(&[
            "ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem",
            "loss", &l,
        ]) {
            return;
        }
        let rules = format!(
            "table inet nvloss {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
             oifname \"eth0\" numgen random mod 100 < {pct} counter drop\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&file, rules).expect("nft file");
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&file);
    }
    /// Packets the nftables fallback dropped on node `i` (None with netem).
    fn nft_dropped(&self, i: usize) -> Option<u64> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[i],
                "nft",
                "list",
                "table",
                "inet",
                "nvloss",
            ])
            .output()
            .ok()?;
        let t = String::from_utf8_lossy(&out.stdout).into_owned();
        let at = t.find("packets ")?;
        t[at + 8..].split_whitespace().next()?.parse().ok()
    }
    /// Cut node `i` off from `others` (or restore it): nftables in its
    /// namespace drops everything to and from their addresses, so the
    /// nodes on one side still reach each other.
    fn cut(&self, i: usize, others: &[usize], on: bool) {
        let ns = &self.nodes[i];
        sh(&[
            "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "nvcut",
        ]);
        if !on {
            return;
        }
        let set = others
            .iter()
            .map(|&o| Net::ip(o))
            .collect::<Vec<_>>()
            .join(", ");
        let rules = format!(
            "table inet nvcut {{\n chain in {{\n  type filter hook input priority -10; policy accept;\n  \
             ip saddr {{ {set} }} drop\n }}\n chain out {{\n  type filter hook output priority -10; policy accept;\n  \
             ip daddr {{ {set} }} drop\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{ns}-cut.nft"));
        std::fs::write(&file, rules).expect("nft file");
        must(&[
            "ip",
            "netns",
            "exec",
            ns,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(&file);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.nodes {
            sh(&["ip", "netns", "del", ns]);
        }
        sh(&["ip", "netns", "del", &self.hub]);
    }
}

use common::Lines;

enum Kind {
    Nuvol { stdin: ChildStdin, lines: Lines },
    Go { rpc: String, failed_log: PathBuf },
}

struct Node {
    name: String,
    ns: String,
    child: Child,
    kind: Kind,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn nuvol(ns: &str, name: &str, ip: &str, join: Option<&str>) -> Node {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_nuvol-gossip-node")])
            .args(["--name", name, "--bind", &format!("{ip}:7946")]);
        if let Some(j) = join {
            cmd.args(["--join", &format!("{j}:7946")]);
        }
        let (child, stdin, lines) = common::spawn_piped(&mut cmd);
        Node {
            name: name.into(),
            ns: ns.into(),
            child,
            kind: Kind::Nuvol { stdin, lines },
        }
    }

    fn go(ns: &str, name: &str, ip: &str, join: Option<&str>, dir: &std::path::Path) -> Node {
        let failed_log = dir.join(format!("{name}.failed"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "serf", "agent"])
            .arg(format!("-node={name}"))
            .arg(format!("-bind={ip}:7946"))
            .arg("-rpc-addr=127.0.0.1:7373")
            .arg(format!(
                "-event-handler=member-failed=cat >> {}",
                failed_log.display()
            ));
        if let Some(j) = join {
            cmd.arg(format!("-join={j}:7946"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serf");
        Node {
            name: name.into(),
            ns: ns.into(),
            child,
            kind: Kind::Go {
                rpc: "127.0.0.1:7373".into(),
                failed_log,
            },
        }
    }

    /// name → status as this node sees it.
    fn members(&mut self) -> Vec<(String, String)> {
        match &mut self.kind {
            Kind::Nuvol { stdin, lines } => {
                let before = lines.lock().map(|g| g.len()).unwrap_or(0);
                if writeln!(stdin, "members").is_err() {
                    return Vec::new();
                }
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_secs(2) {
                    if let Some(l) = lines.lock().ok().and_then(|g| {
                        g[before.min(g.len())..]
                            .iter()
                            .find(|l| l.starts_with("members"))
                            .cloned()
                    }) {
                        return l
                            .split_whitespace()
                            .skip(1)
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Vec::new()
            }
            Kind::Go { rpc, .. } => {
                let out = Command::new("ip")
                    .args(["netns", "exec", &self.ns, "serf", "members"])
                    .arg(format!("-rpc-addr={rpc}"))
                    .output();
                let Ok(out) = out else { return Vec::new() };
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        Some((f.first()?.to_string(), f.get(2)?.to_string()))
                    })
                    .collect()
            }
        }
    }

    /// Nodes this node declared failed so far.
    fn failures(&self) -> Vec<String> {
        match &self.kind {
            Kind::Nuvol { lines, .. } => lines
                .lock()
                .map(|g| {
                    g.iter()
                        .filter_map(|l| l.strip_prefix("event failed "))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            Kind::Go { failed_log, .. } => std::fs::read_to_string(failed_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect(),
        }
    }
}

fn all_alive(nodes: &mut [Node]) -> bool {
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    nodes.iter_mut().all(|n| {
        let m = n.members();
        names
            .iter()
            .all(|x| m.iter().any(|(k, v)| k == x && v == "alive"))
    })
}

fn wait_all_alive(nodes: &mut [Node], limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if all_alive(nodes) {
            eprintln!("{what}: all alive after {:?}", t0.elapsed());
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let views: Vec<String> = nodes
        .iter_mut()
        .map(|n| format!("{}: {:?}", n.name.clone(), n.members()))
        .collect();
    panic!("{what}: not converged after {limit:?}: {views:#?}");
}

/// How long the partition is held (issue: "a 60 s partition then heal").
const PARTITION: Duration = Duration::from_secs(60);

#[test]
fn loss_and_partition_with_netem() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("nuvol-netem-{pid}"));
    std::fs::create_dir_all(&dir).expect("dir");
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let net = Net::new(5);
    let seed = Net::ip(0);
    // 0: Go seed, 1-3: nuvol, 4: Go
    let mut nodes = vec![Node::go(&net.nodes[0], "go-0", &seed, None, &dir)];
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..4 {
        nodes.push(Node::nuvol(
            &net.nodes[i],
            &format!("nuvol-{i}"),
            &Net::ip(i),
            Some(&seed),
        ));
    }
    nodes.push(Node::go(
        &net.nodes[4],
        "go-4",
        &Net::ip(4),
        Some(&seed),
        &dir,
    ));
    wait_all_alive(&mut nodes, Duration::from_secs(20), "start");

    // 10% loss: nobody is declared failed
    for i in 0..5 {
        net.loss(i, 10);
    }
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let f: Vec<(String, Vec<String>)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.failures()))
            .filter(|(_, f)| !f.is_empty())
            .collect();
        assert!(f.is_empty(), "falsely declared failed at 10% loss: {f:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(all_alive(&mut nodes), "all alive at the end of 10% loss");
    if let Some(d) = net.nft_dropped(1) {
        eprintln!("10% loss: nuvol-1 dropped {d} packets");
        assert!(d > 0, "the loss rule dropped nothing");
    }

    // 30% loss: converges (flaps allowed, all alive within 30 s of the end)
    for i in 0..5 {
        net.loss(i, 30);
    }
    std::thread::sleep(Duration::from_secs(20));
    for i in 0..5 {
        net.loss(i, 0);
    }
    wait_all_alive(&mut nodes, Duration::from_secs(30), "after 30% loss");

    // partition {0,1,2} | {3,4} for 60 s, then healed
    for i in [3, 4] {
        net.cut(i, &[0, 1, 2], true);
    }
    let sides: [(usize, &[&str]); 4] = [
        (1, &["nuvol-3", "go-4"]),
        (0, &["nuvol-3", "go-4"]),
        (3, &["go-0", "nuvol-1", "nuvol-2"]),
        (4, &["go-0", "nuvol-1", "nuvol-2"]),
    ];
    let split = |nodes: &mut [Node], who: usize, others: &[&str]| {
        let m = nodes[who].members();
        others
            .iter()
            .all(|x| m.iter().any(|(k, v)| k == x && v == "failed"))
    };
    let t0 = Instant::now();
    let mut seen: Vec<Option<Duration>> = vec![None; sides.len()];
    while t0.elapsed() < PARTITION {
        for (i, (who, others)) in sides.iter().enumerate() {
            if seen[i].is_none() && split(&mut nodes, *who, others) {
                seen[i] = Some(t0.elapsed());
                eprintln!(
                    "partition: {} saw {others:?} failed after {:?}",
                    nodes[*who].name,
                    t0.elapsed()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (i, (who, others)) in sides.iter().enumerate() {
        assert!(
            seen[i].is_some(),
            "{} never saw {others:?} failed during the partition",
            nodes[*who].name
        );
        // still failed at the end: nothing flapped back across the cut
        assert!(
            split(&mut nodes, *who, others),
            "{} no longer sees {others:?} failed after {PARTITION:?}",
            nodes[*who].name
        );
    }
    // the minority side kept each other
    for (who, other) in [(3, "go-4"), (4, "nuvol-3")] {
        let m = nodes[who].members();
        assert!(
            m.iter().any(|(k, v)| k == other && v == "alive"),
            "{} lost {other} on its own side: {m:?}",
            nodes[who].name
        );
    }
    for i in [3, 4] {
        net.cut(i, &[0, 1, 2], false);
    }
    wait_all_alive(&mut nodes, Duration::from_secs(60), "after heal");
}
