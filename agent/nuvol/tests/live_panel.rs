//! The Community page follows the cluster live: real headless Chromium
//! (Debian `chromium`), driven over its DevTools pipe
//! (`--remote-debugging-pipe`, two FIFOs), keeps the page open while a Go
//! `serf agent` joins the nuvol agent and is then killed. The members and
//! "Recent events" sections change without a reload: `/panel.js` follows
//! `/api/v1/events` and swaps the sections in.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{free_port, Agent};
use nuvol_testkit::debug_login_url;
use nuvol_testkit::devtools::{wait_until, Browser};
use nuvol_testkit::serf::{GoSerf, SerfArgs};
use serde_json::json;

fn text(b: &mut Browser, id: &str) -> String {
    b.text_of(id).expect("devtools")
}

fn eval(b: &mut Browser, expr: &str) -> serde_json::Value {
    b.eval(expr).expect("devtools")
}

fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(limit, f), "timed out after {limit:?}: {what}");
}

fn go_serf(dir: &Path, name: &str, join: SocketAddr) -> GoSerf {
    let args = SerfArgs {
        tags: vec!["role=super-node".into(), "zone=north".into()],
        join: Some(join),
        extra: vec![],
    };
    GoSerf::start(dir, name, &args)
}

#[test]
fn chromium_community_page_follows_membership_events_live() {
    let gossip = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = Agent::start(
        "live-panel",
        &format!(
            "[debug]\ntest_hooks = true\n\n[discovery]\nbind = \"127.0.0.1\"\nport = {}\n\
             node_name = \"live-box\"\nmdns = false\n",
            gossip.port()
        ),
        false,
    );
    let mut b = Browser::start(&a.dir, 1280, 900).expect("chromium");
    b.navigate(&debug_login_url(&a.url(), &a.token(), "/community"))
        .expect("navigate");
    wait_for("the Community page", Duration::from_secs(15), || {
        text(&mut b, "members").contains("live-box")
    });
    // a reload would drop this marker: the page must change in place
    eval(&mut b, "window.nuvolMarker = 42");
    assert!(!text(&mut b, "members").contains("go-live"));

    let mut serf = go_serf(&a.dir, "go-live", gossip);
    let t0 = Instant::now();
    wait_for(
        "go-live appears without a reload",
        Duration::from_secs(20),
        || {
            let m = text(&mut b, "members");
            m.contains("go-live") && m.contains("north")
        },
    );
    eprintln!("join shown on the open page after {:?}", t0.elapsed());
    assert_eq!(
        eval(&mut b, "window.nuvolMarker"),
        json!(42),
        "the page reloaded"
    );
    assert!(text(&mut b, "events").contains("go-live"));

    serf.kill();
    let t0 = Instant::now();
    wait_for(
        "go-live failed on the open page",
        Duration::from_secs(30),
        || {
            let ev = text(&mut b, "events");
            ev.lines()
                .any(|l| l.contains("failed") && l.contains("go-live"))
                && text(&mut b, "members")
                    .lines()
                    .any(|l| l.contains("go-live") && l.contains("failed"))
        },
    );
    eprintln!("failure shown on the open page after {:?}", t0.elapsed());
    assert_eq!(
        eval(&mut b, "window.nuvolMarker"),
        json!(42),
        "the page reloaded"
    );
}
