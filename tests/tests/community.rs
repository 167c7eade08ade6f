//! The community testbed end to end (`qemu/community.sh`): four boxes in two
//! zones, zone-b behind NAT, the router dropping WireGuard between box2
//! (zone-a) and box4 (zone-b) so that pair must relay through a super node.
//!
//! One boot of the community proves, in order: the overlay forms a full mesh
//! (direct, through NAT, and relayed); a bundle installed on boxes in both
//! zones is listed nearest-first on each side and its page is fetched over
//! the overlay, also from zone-a into the NATed zone-b; a gossip member that
//! claims another box's overlay address is refused everywhere and the
//! address stays pinned to its owner; a box killed hard is seen failed
//! everywhere, and rejoins gossip and the overlay when it boots again;
//! etcd installed on three boxes forms one cluster by itself, stays
//! writable without the killed box, which catches up when back, and a
//! fourth box that installs etcd joins the running cluster; Syncthing on
//! the relayed pair finds the other's device through the catalog and a
//! folder shared on one appears on the other.
//! Timings are printed as benchmark lines (`bench: ...`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use nuvol_e2e::community::Community;
use nuvol_e2e::{etcd, syncthing};
use serde_json::Value;

const N: usize = 4;

fn overlay(c: &Community, n: usize) -> Value {
    c.get(n, "/api/v1/network")["overlay"].clone()
}

fn peer<'a>(ov: &'a Value, node: &str) -> Option<&'a Value> {
    ov["peers"].as_array()?.iter().find(|p| p["node"] == node)
}

/// Whether box `n` reaches every other box: a fresh handshake, or a relay
/// it has a fresh handshake with.
fn meshed(ov: &Value) -> bool {
    let Some(peers) = ov["peers"].as_array() else {
        return false;
    };
    let fresh = |p: &Value| p["handshake_age_s"].as_u64().is_some_and(|a| a < 180);
    peers.len() == N - 1
        && peers.iter().all(|p| {
            let via = p["via"].as_str().unwrap_or("");
            if via == p["node"].as_str().unwrap_or("") {
                fresh(p)
            } else {
                peers.iter().any(|r| r["node"] == via && fresh(r))
            }
        })
}

/// `node via handshake-age` for each peer, for a failing mesh's log.
fn peers_line(ov: &Value) -> String {
    match ov["peers"].as_array() {
        None => format!("no peers: {ov}"),
        Some(ps) => ps
            .iter()
            .map(|p| format!("{}>{}@{}", p["node"], p["via"], p["handshake_age_s"]))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn member_status(c: &Community, n: usize, name: &str) -> Option<String> {
    let v = c.get(n, "/api/v1/members");
    v.as_array()
        .or_else(|| v["members"].as_array())?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["status"].as_str().map(str::to_string))
}

#[test]
fn community_overlay_across_zones_nat_and_relay() {
    let recipes = nuvol_e2e::recipes();
    let bundles = recipes.to_string_lossy().into_owned();
    let c = Community::up(
        "community",
        N,
        73,
        &["--block", "2:4", "--bundles", &bundles],
    );
    eprintln!(
        "bench: community of {N} boxes ready (panels up) in {:.1} s from cold boots",
        c.boot_s
    );

    // --- the mesh ----------------------------------------------------------
    let mut polls = 0u32;
    let t = c.wait_for("full overlay mesh", Duration::from_secs(480), || {
        let ovs: Vec<Value> = (1..=N).map(|n| overlay(&c, n)).collect();
        polls += 1;
        if polls.is_multiple_of(30) {
            // A mesh that does not form says which pair is missing.
            for (i, ov) in ovs.iter().enumerate() {
                eprintln!("mesh poll {polls}: box{} {}", i + 1, peers_line(ov));
            }
        }
        ovs.iter().all(meshed).then(|| c.started.elapsed())
    });
    eprintln!(
        "bench: seconds from cold boots to a full mesh: {:.1}",
        t.as_secs_f64()
    );
    let ovs: Vec<Value> = (1..=N).map(|n| overlay(&c, n)).collect();
    for (i, ov) in ovs.iter().enumerate() {
        eprintln!(
            "box{}: {}",
            i + 1,
            serde_json::to_string(ov).unwrap_or_default()
        );
    }
    // box2 and box4 cannot meet: both ends relay through the same super node.
    let via24 = peer(&ovs[1], "box4").expect("box4 on box2")["via"].clone();
    let via42 = peer(&ovs[3], "box2").expect("box2 on box4")["via"].clone();
    assert!(
        via24 == "box1" || via24 == "box3",
        "box2 -> box4 via {via24}"
    );
    assert_eq!(via24, via42, "both ends relay through one super node");
    // box1 (zone-a) and box4 (NATed zone-b) meet directly: box4 reached out,
    // box1 knows it at the address the router's NAT gave it (observed).
    let p = peer(&ovs[0], "box4").expect("box4 on box1");
    assert_eq!(p["via"], "box4");
    let seen = p["endpoint"].as_str().unwrap_or("");
    assert!(
        seen.starts_with(&format!("10.{}.1.1:", c.net)),
        "box1 sees box4 at its NAT address, not {seen} (claimed {})",
        p["claimed_endpoint"]
    );
    // Addresses are the ones derived from keys, the same on every box.
    for n in 1..=N {
        let own = ovs[n - 1]["address"].as_str().unwrap_or("").to_string();
        assert!(own.starts_with("fd"), "{own}");
        for (m, ov) in ovs.iter().enumerate() {
            if m + 1 != n {
                let p = peer(ov, &format!("box{n}")).expect("peer");
                assert_eq!(p["address"], own.as_str());
            }
        }
    }

    // --- a service in each zone: nearest first, fetched over the overlay ---
    let web = std::fs::read(recipes.join("web.nvb")).expect("web.nvb");
    for n in [1, 4] {
        let (code, body) = c.http(n, "POST", "/api/v1/bundles", &web).expect("upload");
        assert!(
            (200..300).contains(&code),
            "install web on box{n}: {code} {body}"
        );
    }
    // etcd on three boxes in both zones: one cluster over the overlay.
    let etcd_nvb = std::fs::read(recipes.join("etcd.nvb")).expect("etcd.nvb");
    let t_etcd = Instant::now();
    for n in [1, 2, 3] {
        let (code, body) = c
            .http(n, "POST", "/api/v1/bundles", &etcd_nvb)
            .expect("upload");
        assert!(
            (200..300).contains(&code),
            "install etcd on box{n}: {code} {body}"
        );
        if n == 1 {
            // Alone, box1's member waits, and says so (not as trouble).
            let waiting = c.wait_for(
                "box1's etcd waiting for its cluster",
                Duration::from_secs(60),
                || {
                    let v = c.get(1, "/api/v1/local-services");
                    let l = v.as_array().or_else(|| v["services"].as_array())?.clone();
                    let e = l.into_iter().find(|s| s["name"] == "etcd")?;
                    e["waiting"].as_str().map(str::to_string)
                },
            );
            assert!(waiting.starts_with("cluster: "), "{waiting}");
        }
    }
    let t0 = Instant::now();
    for (n, near) in [(2, "box1"), (3, "box4")] {
        let list = c.wait_for(
            &format!("web twice in box{n}'s catalog"),
            Duration::from_secs(240),
            || {
                let v = c.get(n, "/api/v1/services?near=1&type=_http._tcp");
                let l: Vec<Value> = v
                    .as_array()
                    .cloned()
                    .or_else(|| v["services"].as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| s["name"].as_str().is_some_and(|x| x.starts_with("web")))
                    .collect();
                (l.len() >= 2).then_some(l)
            },
        );
        assert_eq!(list[0]["node"], near, "box{n}: nearest first: {list:?}");
    }
    // box2 fetches box4's page over the overlay (through the relay, into the
    // NATed zone); box1 fetches it directly through the NAT.
    for (n, from_node) in [(2, "box4"), (1, "box4"), (3, "box1")] {
        let got = c.wait_for(
            &format!("box{n} fetches {from_node}'s web page over the overlay"),
            Duration::from_secs(180),
            || {
                let ov = overlay(&c, n);
                let p = peer(&ov, from_node)?.clone();
                p["services"]
                    .as_array()?
                    .iter()
                    .find(|s| {
                        s["service"].as_str().is_some_and(|x| x.starts_with("web"))
                            && s["status"] == 200
                    })
                    .cloned()
            },
        );
        eprintln!("box{n} -> {from_node} web over the overlay: {got}");
        assert!(
            got["url"].as_str().unwrap_or("").starts_with("http://100."),
            "{got}"
        );
    }
    eprintln!(
        "bench: install to reachable over the overlay in both zones: {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // mDNS seen on one LAN is community-wide: box1 (zone-a) cannot hear
    // zone-b's multicast, yet box4's web has an mDNS source there (from
    // box3's or box4's answer), and the other way round on box3.
    for (n, node) in [(1, "box4"), (3, "box1")] {
        c.wait_for(
            &format!("box{n} lists {node}'s web with an mDNS source from the other LAN"),
            Duration::from_secs(120),
            || {
                let v = c.get(n, "/api/v1/services?type=_http._tcp");
                let l = v
                    .as_array()
                    .cloned()
                    .or_else(|| v["services"].as_array().cloned())?;
                l.iter()
                    .find(|s| {
                        s["node"] == node
                            && s["sources"]
                                .as_array()
                                .is_some_and(|x| x.iter().any(|y| y == "mdns"))
                    })
                    .cloned()
            },
        );
    }
    // The catalog lists the service with its node's overlay address.
    let v = c.get(1, "/api/v1/services?type=_http._tcp");
    let l = v
        .as_array()
        .cloned()
        .or_else(|| v["services"].as_array().cloned())
        .unwrap_or_default();
    let w4 = l
        .iter()
        .find(|s| s["node"] == "box4")
        .expect("box4's web on box1");
    assert_eq!(w4["overlay_addr"], ovs[3]["address4"], "{w4}");

    // `nuvol ctl members --by-zone` from the host, as the admin would.
    let out = std::process::Command::new(nuvol_e2e::nuvol_bin())
        .args(["ctl", "members", "--by-zone"])
        .env("NUVOL_HOST", format!("http://{}", c.ip(1)))
        .env("NUVOL_TOKEN", &c.token)
        .output()
        .expect("nuvol ctl");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("$ nuvol ctl members --by-zone\n{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (za, zb) = (
        text.find("zone zone-a:").expect("zone-a"),
        text.find("zone zone-b:").expect("zone-b"),
    );
    assert!(
        za < zb && text[za..zb].contains("super-node*") && text[zb..].contains("super-node*"),
        "{text}"
    );
    assert!(
        text.contains(ovs[3]["address4"].as_str().unwrap_or("?"))
            || text.contains(ovs[3]["address"].as_str().unwrap_or("?")),
        "{text}"
    );

    // --- etcd: one cluster of box1, box2 and box3 ---------------------------
    c.wait_for(
        "a value written on box1 read on box3",
        Duration::from_secs(300),
        || {
            (etcd::put(etcd_at(&c, 1), "community", "one")
                && etcd::get(etcd_at(&c, 3), "community").as_deref() == Some("one"))
            .then_some(())
        },
    );
    eprintln!(
        "bench: etcd installed on 3 boxes to one cluster serving: {:.1} s",
        t_etcd.elapsed().as_secs_f64()
    );
    // Two members make a quorum: box2's may still be starting.
    c.wait_for(
        "box2 a started member, listing all three",
        Duration::from_secs(240),
        || {
            let mut names = etcd::members(etcd_at(&c, 2))?;
            names.sort();
            (names == ["box1", "box2", "box3"]).then_some(())
        },
    );
    // Write latency through box1 (consensus with box2 and box3 over the
    // overlay), beside a plain HTTP round trip to box1's panel.
    let timed = |f: &dyn Fn() -> bool| -> Vec<f64> {
        let mut ms: Vec<f64> = (0..15)
            .filter_map(|_| {
                let t = Instant::now();
                f().then(|| t.elapsed().as_secs_f64() * 1000.0)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let writes = timed(&|| etcd::put(etcd_at(&c, 1), "latency", "x"));
    let pings = timed(&|| {
        c.http(1, "GET", "/api/v1/status", b"")
            .is_ok_and(|(code, _)| code == 200)
    });
    if let (Some(w), Some(p)) = (writes.get(writes.len() / 2), pings.get(pings.len() / 2)) {
        eprintln!(
            "bench: etcd write across 3 boxes: median {w:.0} ms = {:.1}x a panel round trip ({p:.0} ms), {} of 15 writes took",
            w / p,
            writes.len()
        );
    }
    let local = c.get(1, "/api/v1/local-services");
    let member = local
        .as_array()
        .or_else(|| local["services"].as_array())
        .and_then(|l| l.iter().find(|s| s["name"] == "etcd").cloned())
        .unwrap_or_default();
    eprintln!(
        "bench: memory of one etcd member of three (box1, 192 MiB box): {:.1} MiB",
        member["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    // box4 has no etcd: it is not a member.
    assert!(etcd::get(etcd_at(&c, 4), "community").is_none());

    // --- a member claiming box1's overlay address -------------------------
    let secret = base64::engine::general_purpose::STANDARD
        .decode(&c.key)
        .expect("key");
    let rogue_pub = nuvol_wg::Key::generate().unwrap().public();
    let proof = nuvol_wg::proof(&secret, "rogue", &rogue_pub);
    let wg_tag = format!(
        "wg={},51820,{}",
        rogue_pub.to_base64(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(proof)
    );
    let box1_addr = ovs[0]["address"].as_str().unwrap_or("").to_string();
    let rogue_ip = format!("10.{}.1.6", c.net);
    assert!(c
        .run_in(
            "a",
            &["ip", "addr", "add", &format!("{rogue_ip}/24"), "dev", "br0"]
        )
        .status()
        .unwrap()
        .success());
    let mut rogue = c
        .run_in(
            "a",
            &[
                "serf",
                "agent",
                "-node=rogue",
                &format!("-bind={rogue_ip}:7946"),
                "-rpc-addr=127.0.0.1:7374",
                &format!("-encrypt={}", c.key),
                &format!("-join={}", c.ip(1)),
                "-tag",
                &wg_tag,
                "-tag",
                &format!("ov={box1_addr}"),
                "-tag",
                "zone=zone-a",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serf agent");
    c.wait_for(
        "the rogue refused on every box",
        Duration::from_secs(120),
        || {
            (1..=N)
                .all(|n| {
                    let ov = overlay(&c, n);
                    ov["refused"].as_array().is_some_and(|r| {
                        r.iter().any(|x| {
                            x["node"] == "rogue"
                                && x["why"]
                                    .as_str()
                                    .unwrap_or("")
                                    .contains("ClaimsOtherAddress")
                        })
                    })
                })
                .then_some(())
        },
    );
    for n in 2..=N {
        let ov = overlay(&c, n);
        assert!(peer(&ov, "rogue").is_none(), "box{n} peers with the rogue");
        assert_eq!(
            peer(&ov, "box1").expect("box1")["address"],
            box1_addr.as_str()
        );
    }
    let _ = rogue.kill();
    let _ = rogue.wait();

    // --- box2 killed: failed everywhere; back: rejoins ---------------------
    c.kill(2);
    let t_kill = Instant::now();
    c.wait_for(
        "box2 failed on every other box",
        Duration::from_secs(120),
        || {
            [1, 3, 4]
                .iter()
                .all(|&n| member_status(&c, n, "box2").as_deref() == Some("failed"))
                .then_some(())
        },
    );
    eprintln!(
        "bench: box2 seen failed everywhere {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // etcd keeps its quorum without box2: still writable.
    c.wait_for(
        "etcd writable without box2",
        Duration::from_secs(120),
        || {
            (etcd::put(etcd_at(&c, 1), "without-box2", "two")
                && etcd::get(etcd_at(&c, 3), "without-box2").as_deref() == Some("two"))
            .then_some(())
        },
    );
    c.start(2);
    let t_back = Instant::now();
    c.wait_for(
        "box2 alive again everywhere, meshed",
        Duration::from_secs(300),
        || {
            ([1, 3, 4]
                .iter()
                .all(|&n| member_status(&c, n, "box2").as_deref() == Some("alive"))
                && meshed(&overlay(&c, 2))
                && peer(&overlay(&c, 1), "box2")
                    .is_some_and(|p| p["handshake_age_s"].as_u64().is_some_and(|a| a < 60)))
            .then_some(())
        },
    );
    eprintln!(
        "bench: box2 back in gossip and the overlay {:.1} s after its boot",
        t_back.elapsed().as_secs_f64()
    );
    // Same key, same address after the reboot.
    assert_eq!(overlay(&c, 2)["address"], ovs[1]["address"]);
    // box2's etcd member is back and has caught up.
    c.wait_for("box2's etcd caught up", Duration::from_secs(240), || {
        (etcd::get(etcd_at(&c, 2), "without-box2").as_deref() == Some("two")).then_some(())
    });

    // --- a fourth box installs etcd: it joins the running cluster ----------
    let t_join = Instant::now();
    let (code, body) = c
        .http(4, "POST", "/api/v1/bundles", &etcd_nvb)
        .expect("upload");
    assert!(
        (200..300).contains(&code),
        "install etcd on box4: {code} {body}"
    );
    c.wait_for(
        "box4 a member, serving the cluster's data",
        Duration::from_secs(300),
        || (etcd::get(etcd_at(&c, 4), "community").as_deref() == Some("one")).then_some(()),
    );
    let mut names = etcd::members(etcd_at(&c, 1)).expect("member list");
    names.sort();
    assert_eq!(names, ["box1", "box2", "box3", "box4"]);
    eprintln!(
        "bench: etcd on a fourth box joined the running cluster in {:.1} s",
        t_join.elapsed().as_secs_f64()
    );

    // --- Syncthing on box2 and box4 (the pair that meets only through a
    // relay): each box's agent adds the other's device, no id typed --------
    let st_nvb = std::fs::read(recipes.join("syncthing.nvb")).expect("syncthing.nvb");
    let t_st = Instant::now();
    for n in [2, 4] {
        let (code, body) = c
            .http(n, "POST", "/api/v1/bundles", &st_nvb)
            .expect("upload");
        assert!(
            (200..300).contains(&code),
            "install syncthing on box{n}: {code} {body}"
        );
    }
    let gui = |n: usize| {
        syncthing::Gui::open(std::net::SocketAddr::new(
            c.ip(n).parse().expect("box address"),
            8384,
        ))
    };
    // The device each box's agent added for the other: named by its node,
    // at its overlay address.
    let device_of = |n: usize, node: &str| -> Option<Value> {
        let devices = gui(n)?.get("/rest/config/devices")?;
        devices
            .as_array()?
            .iter()
            .find(|d| d["name"] == node)
            .cloned()
    };
    let (d24, _d42) = c.wait_for(
        "box2 and box4 each have the other's Syncthing as a device",
        Duration::from_secs(300),
        || Some((device_of(2, "box4")?, device_of(4, "box2")?)),
    );
    let want = format!("tcp://{}:22000", ovs[3]["address4"].as_str().unwrap_or("?"));
    assert_eq!(d24["addresses"][0], want.as_str(), "{d24}");
    let id4 = d24["deviceID"].as_str().expect("device id").to_string();
    c.wait_for(
        "box2's Syncthing connected to box4's",
        Duration::from_secs(240),
        || {
            let conns = gui(2)?.get("/rest/system/connections")?;
            (conns["connections"][&id4]["connected"] == true).then_some(())
        },
    );
    // A folder shared from box2 with box4 appears on box4 by itself.
    let folder = serde_json::json!({
        "id": "community-docs",
        "label": "community docs",
        "path": "/var/lib/syncthing/community-docs",
        "devices": [{"deviceID": id4}],
    });
    gui(2)
        .and_then(|g| g.call("POST", "/rest/config/folders", Some(&folder)))
        .expect("add a folder on box2");
    c.wait_for(
        "the folder on box4, accepted",
        Duration::from_secs(180),
        || {
            let folders = gui(4)?.get("/rest/config/folders")?;
            folders
                .as_array()?
                .iter()
                .any(|f| f["id"] == "community-docs")
                .then_some(())
        },
    );
    eprintln!(
        "bench: Syncthing on two boxes to a shared folder, no id typed: {:.1} s",
        t_st.elapsed().as_secs_f64()
    );
}

fn etcd_at(c: &Community, n: usize) -> std::net::SocketAddr {
    std::net::SocketAddr::new(c.ip(n).parse().expect("box address"), 2379)
}
