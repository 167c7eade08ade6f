//! Benchmarks (root only; builds namespaces like the tests):
//! - carrier up → usable DHCP address with a real dnsmasq, median of 20
//!   (each round a full DISCOVER/OFFER/REQUEST/ACK: fresh state, address
//!   flushed, lease released);
//! - netlink writes per reconcile when nothing changed (must be 0).
//!
//! `cargo bench -p nuvol-net --bench network`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Dnsmasq, Pair, TempDir};
use nuvol_config::{InterfaceConfig, NetworkConfig};
use nuvol_net::{DhcpState, NetOptions};

const ROUNDS: usize = 20;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs this in test mode: stay quick.
        return;
    }
    let pair = Pair::new();
    let dir = TempDir::new();
    let _server = Dnsmasq::start(&pair, &dir, 600, 900);
    let cif = pair.cif.clone();
    let sif = pair.sif.clone();
    let server_ns = pair.server.name.clone();
    let base = dir.0.clone();
    let (times, writes) = pair.client.run_in(move || async move {
        let cfg = NetworkConfig {
            interfaces: vec![InterfaceConfig {
                name: Some(cif.clone()),
                dhcp: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut writes = Vec::new();
        for round in 0..ROUNDS {
            common::run(&["ip", "-n", &server_ns, "link", "set", &sif, "down"]);
            common::run(&["ip", "addr", "flush", "dev", &cif]);
            let state = base.join(format!("state{round}"));
            let h = nuvol_net::start(
                cfg.clone(),
                NetOptions::new(base.join("resolv.conf"), &state, "bench"),
            )
            .await
            .expect("start");
            let _ = h.reconcile().await;
            let t0 = Instant::now();
            common::run(&["ip", "-n", &server_ns, "link", "set", &sif, "up"]);
            let ok = wait_for(Duration::from_secs(20), || {
                let s = h.status();
                s.interfaces.iter().any(|i| {
                    i.name == cif
                        && i.dhcp.as_ref().is_some_and(|d| {
                            d.state == DhcpState::Bound
                                && d.lease
                                    .as_ref()
                                    .is_some_and(|l| i.addresses.contains(&l.address.to_string()))
                        })
                }) && s.routes.iter().any(|r| r.destination == "0.0.0.0/0")
            })
            .await;
            assert!(ok, "round {round}: no address: {:#?}", h.status());
            times.push(t0.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
            for _ in 0..5 {
                writes.push(h.reconcile().await.expect("reconcile"));
            }
            h.shutdown().await;
        }
        (times, writes)
    });
    let mut sorted = times.clone();
    sorted.sort();
    let median = (sorted[ROUNDS / 2 - 1] + sorted[ROUNDS / 2]) / 2;
    println!(
        "carrier up -> usable DHCP address (dnsmasq, veth, {ROUNDS} rounds): median {:.1} ms, min {:.1} ms, max {:.1} ms",
        median.as_secs_f64() * 1e3,
        sorted[0].as_secs_f64() * 1e3,
        sorted[ROUNDS - 1].as_secs_f64() * 1e3
    );
    let total: u64 = writes.iter().sum();
    println!(
        "netlink writes per no-change reconcile: {:.2} (over {} reconciles)",
        total as f64 / writes.len() as f64,
        writes.len()
    );
    assert_eq!(total, 0, "a no-change reconcile wrote to netlink");
}
