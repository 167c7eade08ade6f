//! NAT table benchmarks (root only; builds namespaces like the tests):
//! - `publish` latency (kernel snapshot, table dump and compare, one
//!   atomic nf_tables batch), median of 20, against the named peer: the
//!   Debian `nft -f` applying the same table the same atomic way
//!   (`table; delete table; table {…}` in one file), measured in this run;
//! - a reconcile with the table in place and nothing changed: its time and
//!   its writes (must be 0).
//!
//! `cargo bench -p nuvol-net --bench nat`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Netns, TempDir};
use nuvol_config::NetworkConfig;
use nuvol_net::{NetOptions, Netns as Ns, Proto, PublishedPort};

const ROUNDS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches`: stay quick
    }
    let host = Netns::new();
    let ctr = Netns::new();
    let up = common::unique("vb");
    let peer = common::unique("vp");
    host.ip(&["link", "add", &up, "type", "veth", "peer", "name", &peer]);
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", &up]);
    host.ip(&["link", "set", &up, "up"]);
    let dir = TempDir::new();
    let ctr_p = ctr.path();
    let host_name = host.name.clone();
    let base = dir.0.clone();
    let (ours, nft, idle, writes) = host.run_in(move || async move {
        let mut cfg = NetworkConfig::default();
        cfg.containers.subnet = "10.67.0.0/24".parse().expect("subnet");
        let h = nuvol_net::start(
            cfg,
            NetOptions::new(base.join("resolv.conf"), base.join("state"), "b"),
        )
        .await
        .expect("start");
        h.attach_container("web", Ns::File(std::fs::File::open(&ctr_p).expect("ns")))
            .await
            .expect("attach");
        let mut ours = Vec::new();
        for i in 0..ROUNDS as u16 {
            let ports: Vec<PublishedPort> = (0..4)
                .map(|k| PublishedPort {
                    proto: if k % 2 == 0 { Proto::Tcp } else { Proto::Udp },
                    host_port: 10_000 + i * 10 + k,
                    container_port: 80 + k,
                    only_via: None,
                })
                .collect();
            let t0 = Instant::now();
            h.publish("web", &ports).await.expect("publish");
            ours.push(t0.elapsed());
        }
        // The same table through `nft -f`.
        let listing = common::run(&[
            "ip", "netns", "exec", &host_name, "nft", "list", "table", "ip", "nuvol",
        ]);
        let file = base.join("table.nft");
        std::fs::write(
            &file,
            format!("table ip nuvol\ndelete table ip nuvol\n{listing}"),
        )
        .expect("write");
        let f = file.to_string_lossy().into_owned();
        let mut nft = Vec::new();
        for _ in 0..ROUNDS {
            let t0 = Instant::now();
            common::run(&["nft", "-f", &f]);
            nft.push(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = h.reconcile().await;
        let mut idle = Vec::new();
        let mut writes = 0;
        for _ in 0..ROUNDS {
            let t0 = Instant::now();
            writes += h.reconcile().await.expect("reconcile");
            idle.push(t0.elapsed());
        }
        h.shutdown().await;
        (median(ours), median(nft), median(idle), writes)
    });
    println!(
        "publish (4 ports, 1 host address), median of {ROUNDS}: nuvol {:.2} ms, nft -f {:.2} ms (ratio nuvol/nft {:.2})",
        ours.as_secs_f64() * 1e3,
        nft.as_secs_f64() * 1e3,
        ours.as_secs_f64() / nft.as_secs_f64()
    );
    println!(
        "no-change reconcile with the NAT table: median {:.2} ms, netlink writes over {ROUNDS}: {writes}",
        idle.as_secs_f64() * 1e3
    );
    assert_eq!(
        writes, 0,
        "a reconcile with nothing to change must not write"
    );
}
