//! `nuvol agent` as a real process on this host (not PID 1): the API, the
//! panel, a bad provisioning file, and a prompt exit on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Agent;

#[test]
fn status_api_and_panel() {
    let a = Agent::start("ok", "hostname = \"ignored-off-box\"\n", false);
    let (code, head, body) = a.req("GET", "/api/v1/status");
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["node_id"].as_str().unwrap().len(), 32);
    assert_eq!(v["boot_count"], 1);
    assert!(v["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "lo"));
    assert_eq!(v["config"]["problem"], serde_json::Value::Null);
    let (code, head, page) = a.req("GET", "/");
    assert_eq!(code, 200);
    assert!(head.contains("text/html"));
    assert!(
        page.contains("<h1 id=hostname>") && page.contains("Interfaces"),
        "{page}"
    );
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let a = Agent::start("err", "", false);
    // Without the token nothing but the public pages answer.
    for (m, p) in [
        ("GET", "/nope"),
        ("DELETE", "/api/v1/status"),
        ("POST", "/api/v1/debug/kill"),
        ("GET", "/api/v1/bundles"),
    ] {
        let (code, head, body) = a.req(m, p);
        assert_eq!(code, 401, "{m} {p}: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        assert!(body.contains("\"unauthorized\""), "{body}");
    }
    let (code, _, _) = a.send("GET", "/api/v1/bundles", Some("0123"), b"");
    assert_eq!(code, 401, "a wrong token is refused");
    let (code, _, body) = a.areq("GET", "/nope", b"");
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let (code, _, body) = a.areq("DELETE", "/api/v1/status", b"");
    assert_eq!(code, 405);
    assert!(body.contains("method_not_allowed"));
    // Test hooks are off unless nuvol.toml turns them on.
    let (code, _, _) = a.areq("POST", "/api/v1/debug/kill", b"");
    assert_eq!(code, 404);
    // Network is not managed on a development host.
    let (code, _, body) = a.req("GET", "/api/v1/network");
    assert_eq!(code, 503, "{body}");
}

#[test]
fn bad_config_is_reported_with_line_and_defaults_apply() {
    let a = Agent::start(
        "bad",
        &format!(
            "[panel]\nallow_plain_http = \"blue\"\n{}",
            gossip_as("gone")
        ),
        false,
    );
    let (_, _, body) = a.req("GET", "/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = v["config"]["problem"].as_str().unwrap_or_default();
    assert!(p.contains("nuvol.toml:2:") && p.contains("blue"), "{v}");
    // Defaults in force: never the file's gossip name.
    wait_console(&a, "nuvol: ready");
    std::thread::sleep(Duration::from_secs(2));
    let c = a.console();
    assert!(!c.contains("gossip as gone"), "{c}");
    let (_, _, page) = a.req("GET", "/");
    assert!(page.contains("id=config-problem") && page.contains("blue"));
}

#[test]
fn an_unknown_key_is_skipped_and_shown_and_the_rest_applies() {
    let a = Agent::start(
        "skip",
        &format!("{}[panel]\ncolour = \"blue\"\n", gossip_as("kept")),
        false,
    );
    let (_, _, body) = a.req("GET", "/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["config"]["problem"].is_null(), "{v}");
    let s = v["config"]["skipped"][0].as_str().unwrap_or_default();
    assert!(
        s.contains("nuvol.toml:6") && s.contains("`panel.colour`"),
        "{v}"
    );
    // The rest of the file applies.
    let c = wait_console(&a, "gossip as ");
    assert!(c.contains("gossip as kept"), "{c}");
    let (_, _, page) = a.req("GET", "/");
    assert!(page.contains("id=config-skipped") && page.contains("panel.colour"));
    assert!(a.console().contains("nuvol: CONFIG: "), "{}", a.console());
}

/// `[discovery]` lines gossiping as `name` on a port of its own (the
/// tests run side by side), 4 lines.
fn gossip_as(name: &str) -> String {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0);
    format!("[discovery]\nbind = \"127.0.0.1\"\nport = {port}\nnode_name = \"{name}\"\n")
}

/// The agent's console once it holds `what` (10 s at most).
fn wait_console(a: &Agent, what: &str) -> String {
    let t = Instant::now();
    loop {
        let c = a.console();
        if c.contains(what) || t.elapsed() > Duration::from_secs(10) {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_stops_the_agent_promptly() {
    let mut a = Agent::start("term", "", false);
    let t = Instant::now();
    nix_kill(a.child.id());
    let st = a.child.wait().unwrap();
    assert!(st.success(), "clean exit on SIGTERM: {st}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = a.console();
    assert!(
        err.contains("nuvol: ready: panel at http://127.0.0.1:"),
        "{err}"
    );
}

fn nix_kill(pid: u32) {
    assert!(Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
}

/// The `nuvol-agent-<pid>` service cgroup of agent `pid`, if it has one.
fn agent_cgroup(pid: u32) -> Option<std::path::PathBuf> {
    let want = format!("nuvol-agent-{pid}");
    let mut dirs = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((d, depth)) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_str() == Some(want.as_str()) {
                return Some(e.path());
            }
            if depth < 6 {
                dirs.push((e.path(), depth + 1));
            }
        }
    }
    None
}

#[test]
fn a_killed_agents_cgroup_is_removed_by_the_next_agent() {
    let a = Agent::start("stale-cg-a", "", false);
    let pid = a.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let cg = loop {
        if let Some(cg) = agent_cgroup(pid) {
            break cg;
        }
        if Instant::now() > deadline {
            eprintln!("no service cgroup on this host (cgroups not delegated): nothing to check");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SIGKILL: the agent gets no chance to remove its cgroup
    drop(a);
    assert!(cg.exists(), "{} should outlive a SIGKILL", cg.display());
    let b = Agent::start("stale-cg-b", "", false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was left behind by the next agent",
            cg.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent_cgroup(b.child.id()).is_some(), "b made its own");
}
