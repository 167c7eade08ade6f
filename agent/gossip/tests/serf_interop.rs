//! Interop with the real HashiCorp Serf (Debian package `serf`, a Go
//! binary): two Go agents and two nuvol nodes on 127.0.0.1 ports.

mod common;

use common::GoSerf;
use nuvol_gossip::{Config, Event, Handle, Profile, Status};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// A Go serf agent tagged `tags`, appending the user events it sees to
/// `events.log` in its directory.
fn go_serf(
    name: &str,
    tags: &[(&str, &str)],
    key: Option<&str>,
    join: Option<SocketAddr>,
) -> GoSerf {
    let events = GoSerf::dir_for(name).join("events.log");
    let mut extra = vec![format!(
        "-event-handler=user=sh -c 'echo \"$SERF_USER_EVENT $(cat)\" >> {}'",
        events.display()
    )];
    for (k, v) in tags {
        extra.push("-tag".into());
        extra.push(format!("{k}={v}"));
    }
    if let Some(k) = key {
        extra.push(format!("-encrypt={k}"));
    }
    if let Some(j) = join {
        extra.push(format!("-join={j}"));
    }
    GoSerf::start(name, &extra)
}

fn events_log(g: &GoSerf) -> String {
    std::fs::read_to_string(g.dir().join("events.log")).unwrap_or_default()
}

/// `node`'s status and tags as Go sees them.
fn status_of(g: &GoSerf, node: &str) -> Option<(String, serde_json::Value)> {
    let m = g.member(node)?;
    Some((
        m["status"].as_str().unwrap_or("").to_string(),
        m["tags"].clone(),
    ))
}

/// Polls `f`; `None` (after printing what timed out) if it never held.
async fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut f: F) -> Option<()> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("timed out after {limit:?} waiting for {what}");
    None
}

async fn nuvol(name: &str, role: &str, key: Option<Vec<u8>>, join: SocketAddr) -> Handle {
    let mut c = Config::new(name, SocketAddr::from(([127, 0, 0, 1], 0)), Profile::Lan);
    let mut tags = BTreeMap::new();
    tags.insert("role".to_string(), role.to_string());
    tags.insert("nuvol".to_string(), "1".to_string());
    c.tags = tags;
    if let Some(k) = key {
        c.keys = vec![k];
    }
    c.join = vec![join];
    Handle::start(c).await.expect("start nuvol node")
}

fn b64(k: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in k.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

async fn scenario(key: Option<Vec<u8>>) {
    let pid = std::process::id();
    let kb64 = key.as_ref().map(|k| b64(k));
    let sfx = if key.is_some() { "enc" } else { "clr" };
    let go1 = go_serf(
        &format!("go1-{sfx}-{pid}"),
        &[("role", "gorole")],
        kb64.as_deref(),
        None,
    );
    let go2 = go_serf(
        &format!("go2-{sfx}-{pid}"),
        &[("role", "gorole2")],
        kb64.as_deref(),
        Some(go1.bind),
    );
    let n1name = format!("nuvol1-{sfx}-{pid}");
    let n2name = format!("nuvol2-{sfx}-{pid}");
    let n1 = nuvol(&n1name, "web", key.clone(), go1.bind).await;
    let mut ev1 = n1.events();
    let n2 = nuvol(&n2name, "db", key.clone(), go2.bind).await;

    // Go lists both nuvol nodes alive with their tags
    wait_for("go1 to see nuvol nodes alive", Duration::from_secs(20), || {
        matches!(status_of(&go1, &n1name), Some((s, t)) if s == "alive" && t["role"] == "web")
            && matches!(status_of(&go1, &n2name), Some((s, t)) if s == "alive" && t["role"] == "db")
    })
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}\nmembers {:?}", go1.log(), go1.members()));
    // nuvol lists both Go nodes with theirs
    let go1name = format!("go1-{sfx}-{pid}");
    let go2name = format!("go2-{sfx}-{pid}");
    wait_for(
        "nuvol1 to see both go nodes",
        Duration::from_secs(20),
        || {
            let m = n1.members();
            m.iter().any(|x| {
                x.name == go1name && x.status == Status::Alive && x.tags["role"] == "gorole"
            }) && m.iter().any(|x| {
                x.name == go2name && x.status == Status::Alive && x.tags["role"] == "gorole2"
            }) && m
                .iter()
                .any(|x| x.name == n2name && x.status == Status::Alive)
        },
    )
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));

    // a user event from Go reaches nuvol
    let out = Command::new("serf")
        .args(["event", &format!("-rpc-addr={}", go2.rpc), "deploy", "v42"])
        .output()
        .expect("serf event");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    let mut got = false;
    while t0.elapsed() < Duration::from_secs(10) && !got {
        if let Ok(Ok(Event::User { name, payload, .. })) =
            tokio::time::timeout(Duration::from_millis(500), ev1.recv()).await
        {
            got = name == "deploy" && payload == b"v42";
        }
    }
    assert!(got, "nuvol did not receive the Go user event");

    // a user event from nuvol reaches Go's event handler
    n2.user_event("hello", b"from-nuvol", false)
        .expect("user event");
    wait_for("go1 event handler to run", Duration::from_secs(10), || {
        events_log(&go1).contains("hello from-nuvol")
    })
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));

    // a `serf query` is answered by nuvol
    let responder = n1.clone();
    let mut qev = n1.events();
    let task = tokio::spawn(async move {
        loop {
            match qev.recv().await {
                Ok(Event::Query(q)) if q.name == "whoami" => {
                    let _ = responder.respond(
                        &q,
                        format!("nuvol:{}", String::from_utf8_lossy(&q.payload)).as_bytes(),
                    );
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let rpc = go1.rpc.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("serf")
            .args([
                "query",
                &format!("-rpc-addr={rpc}"),
                "-format=json",
                "-timeout=3s",
                "whoami",
                "q1",
            ])
            .output()
    })
    .await
    .expect("join")
    .expect("serf query");
    task.abort();
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("query json");
    assert_eq!(q["Responses"][&n1name], "nuvol:q1", "query output: {q}");
    assert!(
        q["Acks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == n1name.as_str())),
        "{q}"
    );

    // nuvol asks a query; Go nodes answer with nothing (no handler) but ack:
    // check that our own query loop works with Go in the cluster
    let r = n1
        .query("_nuvol_probe", b"", Duration::from_millis(500))
        .await;
    assert!(r.len() <= 4);

    // graceful leave: Go sees nuvol2 "left"
    n2.leave().await;
    wait_for(
        "go1 to see nuvol2 left",
        Duration::from_secs(15),
        || matches!(status_of(&go1, &n2name), Some((s, _)) if s == "left"),
    )
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));

    // failure: kill go2; nuvol1 and go1 declare it failed
    let t_kill = Instant::now();
    drop(go2);
    wait_for(
        "nuvol1 and go1 to see go2 failed",
        Duration::from_secs(30),
        || {
            n1.members()
                .iter()
                .any(|x| x.name == go2name && x.status == Status::Failed)
                && matches!(status_of(&go1, &go2name), Some((s, _)) if s == "failed")
        },
    )
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));
    let detect = t_kill.elapsed();
    eprintln!("[{sfx}] failure of a Go node detected by nuvol and Go in {detect:?}");

    // failure of a nuvol node: Go sees it failed
    let n3name = format!("nuvol3-{sfx}-{pid}");
    let n3 = nuvol(&n3name, "cache", key.clone(), go1.bind).await;
    wait_for(
        "go1 to see nuvol3",
        Duration::from_secs(15),
        || matches!(status_of(&go1, &n3name), Some((s, _)) if s == "alive"),
    )
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));
    n3.shutdown();
    let t_kill = Instant::now();
    wait_for(
        "go1 to see nuvol3 failed",
        Duration::from_secs(30),
        || matches!(status_of(&go1, &n3name), Some((s, _)) if s == "failed"),
    )
    .await
    .unwrap_or_else(|| panic!("go1 log:\n{}", go1.log()));
    eprintln!(
        "[{sfx}] failure of a nuvol node detected by Go in {:?}",
        t_kill.elapsed()
    );

    // Vivaldi: nuvol learned a coordinate for go1 from ack payloads
    let m = n1.members();
    let g = m.iter().find(|x| x.name == go1name).expect("go1 member");
    assert!(g.coordinate.is_some(), "no coordinate for go1");
    assert!(g.rtt.is_some(), "no rtt for go1");
    assert_eq!(n1.stats().dropped_malformed, 0, "go1 log:\n{}", go1.log());
    n1.shutdown();
}

#[tokio::test(flavor = "current_thread")]
async fn interop_with_go_serf_clear() {
    scenario(None).await;
}

#[tokio::test(flavor = "current_thread")]
async fn interop_with_go_serf_encrypted() {
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    scenario(Some(key)).await;
}
