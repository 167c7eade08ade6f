//! Settings through a real agent: `/api/v1/settings` (values, sources,
//! validation, persistence across a restart, live effects on the password,
//! the plain-HTTP redirect and the gossip tags), `nuvol ctl settings`, and
//! streams that outlive the connection idle timer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Agent;
use serde_json::Value;

fn put(a: &Agent, body: &str) -> common::Reply {
    a.bearer("PUT", "/api/v1/settings", body.as_bytes())
}

fn ctl(a: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .arg("ctl")
        .args(["--host", &a.url(), "--token", &a.token()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NO_GOSSIP: &str = "[discovery]\nenabled = false\nrole = \"ordinary-node\"\n";

#[test]
fn settings_get_put_validate_and_persist() {
    let a = Agent::start("settings", NO_GOSSIP, false);
    let v = a.bearer("GET", "/api/v1/settings", b"").json();
    let s = &v["settings"];
    assert_eq!(s["discovery.zone"]["source"], "default", "{v}");
    assert_eq!(s["discovery.zone"]["value"], Value::Null);
    assert_eq!(s["discovery.role"]["source"], "nuvol.toml");
    assert_eq!(s["admin.password"]["password_set"], false);
    assert!(s["admin.password"].get("value").is_none(), "no secrets");
    assert_eq!(s["hostname"]["applies"], "restart");

    let r = put(
        &a,
        r#"{"discovery.zone": "north", "discovery.role": "super-node"}"#,
    );
    assert_eq!(r.code, 200, "{r:?}");
    let s = &r.json()["settings"];
    assert_eq!(s["discovery.zone"]["value"], "north");
    assert_eq!(s["discovery.zone"]["source"], "settings");
    assert_eq!(s["discovery.role"]["value"], "super-node");

    // Bad values name the key; nothing of a refused change is kept.
    let r = put(
        &a,
        r#"{"discovery.role": "ordinary-node", "discovery.zone": "a b"}"#,
    );
    assert_eq!(r.code, 400, "{r:?}");
    assert_eq!(r.json()["error"]["key"], "discovery.zone");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("discovery.zone"));
    let r = put(&a, r#"{"panel.allow_plain_http": "maybe"}"#);
    assert_eq!(
        (r.code, r.json()["error"]["code"].as_str()),
        (400, Some("invalid_setting"))
    );
    let r = put(&a, r#"{"panel.port": 81}"#);
    assert_eq!(r.code, 400);
    assert_eq!(r.json()["error"]["code"], "unknown_setting");
    assert_eq!(r.json()["error"]["key"], "panel.port");
    assert_eq!(put(&a, "not json").code, 400);
    let v = a.bearer("GET", "/api/v1/settings", b"").json();
    assert_eq!(v["settings"]["discovery.role"]["value"], "super-node");

    // Unauthenticated: 401.
    assert_eq!(a.req("GET", "/api/v1/settings").0, 401);
    assert_eq!(a.req("PUT", "/api/v1/settings").0, 401);

    // The overlay file: 0600, TOML.
    use std::os::unix::fs::PermissionsExt;
    let f = a.dir.join("state/settings.toml");
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&f)
        .unwrap()
        .contains("zone = \"north\""));

    // nuvol ctl settings: print, set, errors and exit codes.
    let (code, out, err) = ctl(&a, &["settings"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("discovery.zone") && out.contains("north") && out.contains("settings"),
        "{out}"
    );
    let (code, out, err) = ctl(&a, &["--json", "settings", "set", "hostname=box-2"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["settings"]["hostname"]["value"], "box-2");
    assert_eq!(v["restart_needed"][0], "hostname");
    let (code, _, err) = ctl(&a, &["settings", "set", "bogus=1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown_setting"), "{err}");
    let (code, _, _) = ctl(&a, &["settings", "set", "no-equals-sign"]);
    assert_eq!(code, 2);
    let (code, _, err) = ctl(&a, &["settings", "reset", "hostname"]);
    assert_eq!(code, 0, "{err}");

    // A restart keeps the settings (and the role from the overlay wins).
    let dir = a.stop_keep();
    let a = Agent::start_in(dir, NO_GOSSIP, false);
    let v = a.bearer("GET", "/api/v1/settings", b"").json();
    let s = &v["settings"];
    assert_eq!(s["discovery.zone"]["value"], "north", "{v}");
    assert_eq!(s["discovery.role"]["value"], "super-node");
    assert_eq!(s["discovery.role"]["source"], "settings");
    assert_eq!(s["hostname"]["source"], "default");
    // null drops a key from the overlay: nuvol.toml is in force again.
    let r = put(&a, r#"{"discovery.role": null}"#);
    assert_eq!(
        r.json()["settings"]["discovery.role"]["source"],
        "nuvol.toml"
    );
    assert_eq!(
        r.json()["settings"]["discovery.role"]["value"],
        "ordinary-node"
    );

    // After a rollback: a newer agent wrote a role this one does not know.
    // It costs that key only; the zone stays in force, the console names
    // the key, and the next save writes the role back as it was.
    let dir = a.stop_keep();
    let f = dir.join("state/settings.toml");
    let text = std::fs::read_to_string(&f).unwrap();
    std::fs::write(
        &f,
        text.replace("[discovery]", "[discovery]\nrole = \"relay-node\""),
    )
    .unwrap();
    let a = Agent::start_in(dir, NO_GOSSIP, false);
    let v = a.bearer("GET", "/api/v1/settings", b"").json();
    assert_eq!(v["settings"]["discovery.zone"]["value"], "north", "{v}");
    assert_eq!(v["settings"]["discovery.role"]["source"], "nuvol.toml");
    let console = a.console();
    assert!(
        console.contains("SETTINGS PROBLEM") && console.contains("discovery.role"),
        "{console}"
    );
    assert_eq!(put(&a, r#"{"discovery.zone": "south"}"#).code, 200);
    let text = std::fs::read_to_string(a.dir.join("state/settings.toml")).unwrap();
    assert!(
        text.contains("role = \"relay-node\"") && text.contains("zone = \"south\""),
        "{text}"
    );
}

#[test]
fn password_change_needs_the_current_credential_and_replaces_the_token() {
    let a = Agent::start("settings-pw", NO_GOSSIP, false);
    let token = a.token();
    let (cookie, csrf) = a.login();
    let session = |extra: &[String], body: &str| {
        let mut h = vec![format!("Cookie: {cookie}")];
        h.extend_from_slice(extra);
        a.raw("PUT", "/api/v1/settings", &h, body.as_bytes())
    };
    let with_csrf = [format!("X-CSRF-Token: {csrf}")];
    // A session needs its CSRF token for a change.
    let r = session(&[], r#"{"discovery.zone": "x"}"#);
    assert_eq!(
        (r.code, r.json()["error"]["code"].as_str()),
        (403, Some("csrf"))
    );
    // Rules and the current credential.
    let r = session(&with_csrf, r#"{"admin.password": "short", "current": "x"}"#);
    assert_eq!(
        (r.code, r.json()["error"]["key"].as_str()),
        (400, Some("admin.password")),
        "{r:?}"
    );
    let r = session(&with_csrf, r#"{"admin.password": "a long new password"}"#);
    assert_eq!(
        (r.code, r.json()["error"]["code"].as_str()),
        (400, Some("current_required"))
    );
    let r = session(
        &with_csrf,
        r#"{"admin.password": "a long new password", "current": "wrong"}"#,
    );
    assert_eq!(
        (r.code, r.json()["error"]["code"].as_str()),
        (403, Some("wrong_credential"))
    );
    let body = format!(r#"{{"admin.password": "a long new password", "current": "{token}"}}"#);
    let r = session(&with_csrf, &body);
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["settings"]["admin.password"]["password_set"], true);
    assert_eq!(r.json()["settings"]["admin.password"]["source"], "settings");
    assert!(!r.body.contains("argon2"), "the hash is not shown");

    // The console token no longer logs in nor works as a bearer; the new
    // password does; the session that changed it lives on.
    let login = |secret: &str| {
        a.raw(
            "POST",
            "/login",
            &["Content-Type: application/x-www-form-urlencoded".into()],
            format!("secret={secret}&next=%2Fsettings").as_bytes(),
        )
        .code
    };
    assert_eq!(login(&token), 401);
    assert_eq!(login("a+long+new+password"), 303);
    assert_eq!(a.bearer("GET", "/api/v1/settings", b"").code, 401);
    let r = a.raw(
        "GET",
        "/api/v1/session",
        &[format!("Cookie: {cookie}")],
        b"",
    );
    assert_eq!(r.code, 200);

    // The page shows sources and forms; a form post (no JS) comes back.
    let r = a.raw("GET", "/settings", &[format!("Cookie: {cookie}")], b"");
    assert!(
        r.body.contains("id=set-zone") && r.body.contains("id=set-password"),
        "{}",
        r.body
    );
    assert!(r.body.contains("A password is set"));
    let r = a.raw(
        "POST",
        &format!("/api/v1/settings?csrf={csrf}&back=/settings"),
        &[
            format!("Cookie: {cookie}"),
            "Accept: text/html".into(),
            "Content-Type: application/x-www-form-urlencoded".into(),
        ],
        b"discovery.zone=west",
    );
    assert_eq!(r.code, 303, "{r:?}");
    assert_eq!(r.header("location").as_deref(), Some("/settings"));
    let r = a.raw("GET", "/settings", &[format!("Cookie: {cookie}")], b"");
    assert!(r.body.contains("value=\"west\""), "{}", r.body);

    // The hash persists: after a restart the password still logs in and
    // the console token is not offered.
    let dir = a.stop_keep();
    let a = Agent::start_in(dir, NO_GOSSIP, false);
    let r = a.raw(
        "POST",
        "/login",
        &["Content-Type: application/x-www-form-urlencoded".into()],
        b"secret=a+long+new+password&next=%2F",
    );
    assert_eq!(r.code, 303);
    assert_eq!(a.bearer("GET", "/api/v1/settings", b"").code, 401);
}

#[test]
fn plain_http_flip_changes_the_redirect_live() {
    let a = Agent::start(
        "settings-plain",
        "[panel]\nallow_plain_http = true\npublic_https_port = 8443\n[discovery]\nenabled = false\n",
        true,
    );
    // Allowed: the panel answers on plain HTTP.
    assert_eq!(a.req("GET", "/dashboard").0, 401);
    let r = put(&a, r#"{"panel.allow_plain_http": false}"#);
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(
        r.json()["settings"]["panel.allow_plain_http"]["value"],
        false
    );
    // Now plain HTTP redirects, to the public HTTPS port, Host's name kept.
    let r = a.get("/dashboard?x=1");
    assert_eq!(r.code, 308, "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://127.0.0.1:8443/dashboard?x=1")
    );
    // And the settings API itself is now HTTPS-only.
    assert_eq!(put(&a, r#"{"panel.allow_plain_http": true}"#).code, 308);
}

fn gossip_config(port: u16) -> String {
    format!(
        "[debug]\ntest_hooks = true\n[discovery]\nbind = \"127.0.0.1\"\nport = {port}\nmdns = false\nzone = \"south\"\n"
    )
}

#[test]
fn zone_and_role_change_the_gossip_tags_live() {
    let port = common::free_port();
    let a = Agent::start("settings-gossip", &gossip_config(port), false);
    let me = |a: &Agent| -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = a.bearer("GET", "/api/v1/members", b"");
            if r.code == 200 {
                let v = r.json();
                let list = v.as_array().cloned().or_else(|| {
                    v.as_object()
                        .and_then(|o| o.values().find_map(|x| x.as_array().cloned()))
                });
                if let Some(m) = list.and_then(|l| l.into_iter().next()) {
                    return m;
                }
            }
            assert!(Instant::now() < deadline, "no members: {r:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!(me(&a)["zone"], "south");
    let r = put(
        &a,
        r#"{"discovery.zone": "north", "discovery.role": "super-node"}"#,
    );
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["warnings"], serde_json::json!([]));
    let m = me(&a);
    assert_eq!(
        (m["zone"].as_str(), m["role"].as_str()),
        (Some("north"), Some("super-node")),
        "{m}"
    );
    // "" clears the zone.
    assert_eq!(put(&a, r#"{"discovery.zone": ""}"#).code, 200);
    assert_eq!(me(&a)["zone"], "");
}

/// Read until EOF or `limit`; `Some(elapsed)` when the server closed.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        s.set_read_timeout(Some(
            limit
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(10)),
        ))
        .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t.elapsed()),
        }
    }
    None
}

#[test]
fn quiet_stream_outlives_the_idle_timer_but_idle_connections_do_not() {
    let port = common::free_port();
    let dir = Agent::fresh_dir("settings-idle");
    let a = Agent::start_in_env(
        dir,
        &gossip_config(port),
        false,
        &[("NUVOL_TEST_IDLE_SECS", "2")],
    );
    let token = a.token();
    // A quiet stream: the events stream sends a keepalive only every 15 s.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(
        s,
        "GET /api/v1/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // An idle keep-alive connection, for comparison.
    let mut k = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(k, "GET /api/v1/status HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let closed = closed_within(&mut k, Duration::from_secs(8));
    let closed = closed.expect("an idle keep-alive connection is closed");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");
    // By now the stream has been quiet for well over the idle time.
    assert_eq!(
        closed_within(&mut s, Duration::from_secs(2)),
        None,
        "the stream is still open"
    );
    // A slow request head is still cut (the header timeout is 10 s, the
    // idle timer 2 s here).
    let mut slow = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(slow, "GET /api/v1/status HTTP/1.1\r\n").unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(6)).is_some());
}
