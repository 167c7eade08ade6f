//! OS updates between boxes (docs/boot.md, "Update"): two boxes of the
//! community testbed (`qemu/community.sh --one-zone --no-overlay`: one
//! LAN, gossip only), both trusting one OS publisher key, both with
//! `[update] policy = "auto"` (looking every 10 s, a test hook).
//!
//! 1. box1 gets the image's own OS as 99.0.0 through the API, reboots into
//!    it and marks it good; it then offers the artefact on its share.
//! 2. box2's policy finds that offer, fetches and applies it by itself
//!    (checked against box2's own keys), reboots into it and marks it
//!    good, with no human; now box2 offers it too, and box1 sees that
//!    offer as not newer (and so does not take it).
//! 3. Asking box2 by hand for box1's update (`POST /api/v1/update/fetch`)
//!    downloads it and refuses it as not newer; a node that is no share
//!    provider is refused.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nuvol_e2e::community::Community;
use nuvol_e2e::{image, key_line, os_part, update_artefact, Scratch, TestKey};
use serde_json::Value;

fn offer<'a>(v: &'a Value, node: &str) -> Option<&'a Value> {
    v["offers"].as_array()?.iter().find(|o| o["node"] == node)
}

/// Reboot box `n` through its API and wait until its update is good in
/// version `version`.
fn reboot_until_good(c: &Community, n: usize, version: &str) -> f64 {
    let t = Instant::now();
    let (st, body) = c.http(n, "POST", "/api/v1/system/reboot", b"").unwrap();
    assert_eq!(st, 202, "{body}");
    // Its API goes away first: wait for the new boot's answer.
    std::thread::sleep(Duration::from_secs(5));
    c.wait_for(
        &format!("box{n} runs {version}, marked good"),
        Duration::from_secs(300),
        || {
            let v = c.get(n, "/api/v1/update");
            (v["update"]["phase"] == "good" && v["running_version"] == version).then_some(())
        },
    );
    t.elapsed().as_secs_f64()
}

#[test]
fn a_box_updates_from_its_peer() {
    let keys = Scratch::new("update-peer-keys");
    let key = TestKey::new(&keys.0);
    let d = |n: &str| -> PathBuf { keys.0.join(n) };
    os_part(&image(), "bzImage", &d("bzImage"));
    os_part(&image(), "initrd.img", &d("initrd.img"));
    let art = d("nuvol-x86_64-99.0.0.nvu");
    update_artefact(
        &key.secret,
        &d("bzImage"),
        &d("initrd.img"),
        "99.0.0",
        "x86_64",
        &art,
    );
    let pubfile = d("update.pub");
    std::fs::write(&pubfile, format!("{}\n", key_line(&key.public))).unwrap();
    let c = Community::up(
        "update-peer",
        2,
        74,
        &[
            "--one-zone",
            "--no-overlay",
            "--update-key",
            pubfile.to_str().unwrap(),
            "--update-policy",
            "auto",
        ],
    );

    // box1 offers nothing yet (and, with no bundle either, does not even
    // announce a share).
    c.wait_for("box2 up", Duration::from_secs(120), || {
        c.get(2, "/api/v1/update/offers")["offers"]
            .as_array()
            .map(|_| ())
    });
    let v = c.get(2, "/api/v1/update/offers");
    assert!(offer(&v, "box1").is_none(), "nothing offered yet: {v}");
    let (st, body) = c.http(1, "GET", "/share/v1/os", b"").unwrap();
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("no_os_offer"), "{body}");

    // --- 1. box1 updates from an upload -------------------------------------
    let (st, body) = c
        .http(1, "POST", "/api/v1/update", &std::fs::read(&art).unwrap())
        .unwrap();
    assert_eq!(st, 200, "{body}");
    let s = reboot_until_good(&c, 1, "99.0.0");
    eprintln!("bench: box1 reboot to 99.0.0 marked good {s:.1} s");
    let (st, body) = c.http(1, "GET", "/share/v1/os", b"").unwrap();
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("99.0.0"), "{body}");

    // --- 2. box2's policy takes it from box1 by itself ----------------------
    let t = Instant::now();
    let v = c.wait_for(
        "box2 runs 99.0.0 from box1, marked good",
        Duration::from_secs(300),
        || {
            let v = c.get(2, "/api/v1/update");
            (v["update"]["phase"] == "good" && v["running_version"] == "99.0.0").then_some(v)
        },
    );
    eprintln!(
        "bench: box2 updated itself from box1 in {:.1} s (policy auto, a look every 10 s)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(v["policy"]["policy"], "auto", "{v}");
    let log = c.console(2);
    assert!(
        log.contains("update 99.0.0 from box box1 applied: rebooting to try it"),
        "{}",
        nuvol_e2e::tail(&log)
    );
    c.wait_for(
        "box2's offer seen by box1, not newer",
        Duration::from_secs(120),
        || {
            let v = c.get(1, "/api/v1/update/offers");
            offer(&v, "box2")
                .filter(|o| o["version"] == "99.0.0" && o["newer"] == false)
                .map(|_| ())
        },
    );

    // box1 looked at box2's offer and left it: nothing newer.
    c.wait_for(
        "box1's policy found nothing newer",
        Duration::from_secs(60),
        || {
            let v = c.get(1, "/api/v1/update");
            (v["policy"]["last"]["action"] == "no newer update").then_some(())
        },
    );
    let v = c.get(1, "/api/v1/update");
    assert_eq!(v["running_slot"], "B", "box1 stays on its update: {v}");

    // --- 3. by hand, and refusals -------------------------------------------
    let (st, body) = c
        .http(2, "POST", "/api/v1/update/fetch", br#"{"node": "box1"}"#)
        .unwrap();
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("update_not_newer"), "{body}");
    let (st, body) = c
        .http(2, "POST", "/api/v1/update/fetch", br#"{"node": "nobody"}"#)
        .unwrap();
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("unknown_provider"), "{body}");
    let (st, body) = c.http(2, "POST", "/api/v1/update/fetch", b"{}").unwrap();
    assert_eq!(st, 400, "{body}");
}
