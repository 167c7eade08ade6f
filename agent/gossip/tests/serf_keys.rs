//! Key rotation with Go's `serf keys` in a mixed encrypted cluster (two Go
//! `serf agent`s, two nuvol nodes): every node answers the key queries, the
//! cluster keeps talking after `-use NEW` and `-remove OLD`, the nuvol
//! keyring file (0600) keeps the new key across a restart.

mod common;

use common::GoSerf;
use nuvol_gossip::{Config, Event, Handle, Profile, Status};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

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

async fn nuvol(name: &str, key: &[u8], file: &Path, join: SocketAddr) -> Handle {
    let mut c = Config::new(name, SocketAddr::from(([127, 0, 0, 1], 0)), Profile::Lan);
    c.keys = vec![key.to_vec()];
    c.keyring_file = Some(file.to_path_buf());
    c.join = vec![join];
    Handle::start(c).await.expect("start nuvol node")
}

/// Polls `f` every 200 ms (yielding to the nodes' tasks) for up to
/// `limit`.
async fn wait_for<F: FnMut() -> bool>(limit: Duration, mut f: F) -> Option<()> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Does the `serf keys -list` output list `key` on `n` of `n` nodes?
fn listed(out: &str, key: &str, n: usize) -> bool {
    let want = format!("[{n}/{n}]");
    out.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [key, want.as_str()])
}

fn alive_in(h: &Handle, names: &[&str]) -> bool {
    let m = h.members();
    names
        .iter()
        .all(|n| m.iter().any(|x| x.name == *n && x.status == Status::Alive))
}

/// `serf keys ARGS` through `go`, off the runtime thread.
async fn keys(go: &GoSerf, args: &[&str]) -> (bool, String) {
    let rpc = go.rpc.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("serf")
            .arg("keys")
            .arg(format!("-rpc-addr={rpc}"))
            .args(&args)
            .output()
            .expect("serf keys");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serf_keys_rotate_a_mixed_cluster() {
    let pid = std::process::id();
    let old: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(11).wrapping_add(5))
        .collect();
    let new: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(29).wrapping_add(1))
        .collect();
    let (old64, new64) = (b64(&old), b64(&new));
    let dir = std::env::temp_dir().join(format!("nuvol-keys-{pid}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (f1, f2) = (dir.join("n1-keyring.json"), dir.join("n2-keyring.json"));

    let (g1n, g2n) = (format!("kgo1-{pid}"), format!("kgo2-{pid}"));
    let (n1n, n2n) = (format!("knuvol1-{pid}"), format!("knuvol2-{pid}"));
    let g1 = GoSerf::start(&g1n, &[format!("-encrypt={old64}")]);
    let g2 = GoSerf::start(
        &g2n,
        &[format!("-encrypt={old64}"), format!("-join={}", g1.bind)],
    );
    let n1 = nuvol(&n1n, &old, &f1, g1.bind).await;
    let n2 = nuvol(&n2n, &old, &f2, g2.bind).await;
    let everyone = [g1n.as_str(), g2n.as_str(), n1n.as_str(), n2n.as_str()];
    let seen = |go: &GoSerf| {
        everyone
            .iter()
            .all(|n| go.status_of(n).as_deref() == Some("alive"))
    };
    wait_for(Duration::from_secs(20), || {
        seen(&g1) && alive_in(&n1, &everyone)
    })
    .await
    .unwrap_or_else(|| panic!("cluster did not form; go log:\n{}", g1.log()));

    // every node answers the listing
    let (ok, out) = keys(&g1, &["-list"]).await;
    assert!(ok, "serf keys -list: {out}");
    assert!(listed(&out, &old64, 4), "{out}");

    // rotate: install, use, remove
    let (ok, out) = keys(&g1, &["-install", &new64]).await;
    assert!(ok, "serf keys -install: {out}");
    assert_eq!(n1.keys(), vec![old.clone(), new.clone()]);
    let (ok, out) = keys(&g1, &["-use", &new64]).await;
    assert!(ok, "serf keys -use: {out}");
    assert_eq!(n2.keys()[0], new);
    let (ok, out) = keys(&g1, &["-remove", &old64]).await;
    assert!(ok, "serf keys -remove: {out}");
    assert_eq!(n1.keys(), vec![new.clone()]);
    assert_eq!(n2.keys(), vec![new.clone()]);
    let (ok, out) = keys(&g2, &["-list"]).await;
    assert!(ok, "serf keys -list after rotation: {out}");
    assert!(listed(&out, &new64, 4) && !out.contains(&old64), "{out}");
    // removing the primary is refused everywhere, with memberlist's words
    let (ok, out) = keys(&g1, &["-remove", &new64]).await;
    assert!(!ok, "{out}");

    // the keyring files hold the new key only, readable by the agent only
    for f in [&f1, &f2] {
        let text = std::fs::read_to_string(f).expect("keyring file");
        assert!(text.contains(&new64) && !text.contains(&old64), "{text}");
        let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }

    // the cluster still talks, on the new key only: a Go event reaches
    // nuvol, and a Go node that knows only the new key joins through nuvol
    let mut ev = n2.events();
    let (ok, out) = g1.cli(&["event", "rotated", "yes"]);
    assert!(ok, "{out}");
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ev.recv().await {
                Ok(Event::User { name, .. }) if name == "rotated" => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert_eq!(got, Ok(true), "event after rotation");
    let g3n = format!("kgo3-{pid}");
    let g3 = GoSerf::start(
        &g3n,
        &[
            format!("-encrypt={new64}"),
            format!("-join={}", n1.advertise()),
        ],
    );
    wait_for(Duration::from_secs(20), || {
        seen(&g3) && alive_in(&n1, &[g3n.as_str()]) && alive_in(&n2, &[g3n.as_str()])
    })
    .await
    .unwrap_or_else(|| panic!("new-key node not in the cluster; go log:\n{}", g3.log()));

    // a nuvol node restarted with the old configured key uses its file
    n1.shutdown();
    let n1b = nuvol(&format!("knuvol1b-{pid}"), &old, &f1, g2.bind).await;
    assert_eq!(n1b.keys(), vec![new.clone()]);
    wait_for(Duration::from_secs(20), || {
        alive_in(&n1b, &[g1n.as_str(), g3n.as_str()])
    })
    .await
    .unwrap_or_else(|| panic!("restarted node did not rejoin; go log:\n{}", g2.log()));
    n1b.shutdown();
    n2.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
