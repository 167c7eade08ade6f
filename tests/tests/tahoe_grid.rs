//! A Tahoe-LAFS grid over two boxes of the community testbed
//! (`qemu/community.sh --one-zone`, the overlay on, 384 MiB each), driven
//! through each box's API as a user would:
//!
//! 1. `tahoe.nvb` installed on both boxes at once: the agents decide the
//!    bundle's cluster (docs/community-services.md): box1, first by name,
//!    forms the grid and runs its introducer; box2 waits until box1's grid
//!    runs, then follows it: its tahoe-grid fetches the introducer's fURL
//!    from box1 over the overlay and starts a storage node.
//! 2. The fURL (a secret) is not served on the LAN: box1's port 3459 at its
//!    testbed address refuses the host; the gateway (3456) answers there.
//! 3. A file PUT through box2's gateway is stored as 3 shares on both boxes
//!    (shares.happy = 2), and box1's gateway reads the same bytes.
//! 4. box1 powered off hard: box2 still reads the file (1 share needed).
//!
//! Boots two boxes at once: run alone by tests/e2e-lanes.sh.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nuvol_e2e::community::Community;
use nuvol_e2e::tahoe::{connected_servers, get, payload, put};
use serde_json::Value;

/// Both boxes' Pythons start under TCG on 2 cores, the follower after the
/// grid runs.
const SERVE: Duration = Duration::from_secs(600);
const WEB: u16 = 3456;
const GRID: u16 = 3459;

fn gateway(c: &Community, n: usize) -> SocketAddr {
    SocketAddr::new(c.ip(n).parse().expect("box address"), WEB)
}

fn tahoe(c: &Community, n: usize) -> Value {
    c.get(n, "/api/v1/services/tahoe")
}

fn healthy(c: &Community, n: usize) -> Option<Value> {
    let s = tahoe(c, n);
    (s["state"] == "running" && s["health"] == "healthy").then_some(s)
}

fn logs(c: &Community, n: usize) -> String {
    c.http(n, "GET", "/api/v1/services/tahoe/logs?lines=200", b"")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[test]
fn tahoe_grid_spans_two_boxes_of_the_overlay() {
    let t_all = Instant::now();
    let recipes = nuvol_e2e::recipes();
    let bundle = recipes.join("tahoe.nvb");
    assert!(
        bundle.exists(),
        "no {} — run `make bundles`",
        bundle.display()
    );
    let nvb = std::fs::read(&bundle).unwrap();
    let c = Community::up(
        "tahoe-grid",
        2,
        76,
        &[
            "--one-zone",
            "--mem",
            "384",
            "--bundles",
            recipes.to_str().unwrap(),
        ],
    );
    eprintln!("bench: two boxes ready in {:.1} s", c.boot_s);
    c.wait_for("the overlay between box1 and box2", SERVE, || {
        let v = c.get(2, "/api/v1/network");
        v["overlay"]["peers"]
            .as_array()?
            .iter()
            .any(|p| p["node"] == "box1" && p["handshake_age_s"].is_u64())
            .then_some(())
    });

    // --- 1. installed on both at once ---------------------------------------
    let t_install = Instant::now();
    std::thread::scope(|s| {
        for n in [1, 2] {
            let (c, nvb) = (&c, &nvb);
            s.spawn(move || {
                let (code, body) = c
                    .http(n, "POST", "/api/v1/bundles", nvb)
                    .expect("upload to box");
                assert_eq!(code, 201, "box{n}: {body}");
            });
        }
    });
    c.wait_for("box1's tahoe healthy (the grid)", SERVE, || healthy(&c, 1));
    let grid_s = t_install.elapsed().as_secs_f64();
    c.wait_for("box2's tahoe healthy (following box1)", SERVE, || {
        healthy(&c, 2)
    });
    let follow_s = t_install.elapsed().as_secs_f64();
    let (l1, l2) = (logs(&c, 1), logs(&c, 2));
    assert!(
        l1.contains("runs the introducer"),
        "box1 formed the grid:\n{l1}"
    );
    assert!(
        l2.contains("follows "),
        "box2 follows a box of the grid:\n{l2}"
    );
    assert!(
        l2.contains("the grid's fURL came from"),
        "box2 got the fURL over the overlay:\n{l2}"
    );
    c.wait_for("both gateways see both storage servers", SERVE, || {
        (connected_servers(gateway(&c, 1)) == 2 && connected_servers(gateway(&c, 2)) == 2)
            .then_some(())
    });

    // --- 2. the fURL is not on the LAN --------------------------------------
    let lan_grid = SocketAddr::new(gateway(&c, 1).ip(), GRID);
    assert!(
        TcpStream::connect_timeout(&lan_grid, Duration::from_secs(5)).is_err(),
        "the introducer's fURL must not be served at box1's LAN address {lan_grid}"
    );
    assert!(TcpStream::connect_timeout(&gateway(&c, 1), Duration::from_secs(5)).is_ok());

    // --- 3. a file across the grid ------------------------------------------
    let data = payload(300_000, 0x2545_f491_4f6c_dd1d);
    let cap = c.wait_for("a PUT through box2's gateway", SERVE, || {
        put(gateway(&c, 2), &data)
    });
    assert!(cap.starts_with("URI:CHK:"), "stored as shares: {cap}");
    let check = nuvol_e2e::rest::request(
        gateway(&c, 2),
        "POST",
        &format!("/uri/{cap}?t=check&output=JSON"),
        &[],
        Some(""),
    )
    .and_then(|a| a.json())
    .unwrap_or(Value::Null);
    assert_eq!(
        check["results"]["count-good-share-hosts"], 2,
        "shares on both boxes: {check}"
    );
    let back = get(gateway(&c, 1), &cap).expect("box1's gateway reads box2's upload");
    assert!(back == data, "the same bytes through the other box");

    // --- 4. one box down, the file still reads ------------------------------
    c.kill(1);
    let again = c.wait_for("box2 reads the file with box1 down", SERVE, || {
        get(gateway(&c, 2), &cap)
    });
    assert!(again == data, "the same bytes from box2's own shares");
    eprintln!(
        "bench: tahoe grid: box1 healthy {grid_s:.1} s after the install, box2 following {follow_s:.1} s; \
         whole test {:.1} s",
        t_all.elapsed().as_secs_f64()
    );
}
