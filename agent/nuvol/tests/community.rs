//! Bundles shared in the community, through real `nuvol agent` processes
//! gossiping on 127.0.0.1: box A installs signed bundles and offers them
//! (`/share/v1/bundles`, tag `svc:nuvol.bundles`); box B joins A's gossip,
//! lists what A offers, fetches, reviews and installs; the bundle is then
//! B's with the same digest. Also: a box with `share = false` offers
//! nothing; a lying peer (a Go `serf agent` announcing a fake share whose
//! index does not match its file) is caught with `index_mismatch`; an
//! untrusted publisher is refused before install; CSRF on the panel's form;
//! the panel section; `nuvol ctl bundles available / install --from`.
//! Three Go serf nodes whose shares lie about the OS update they offer (a
//! description past 4 KiB, one dripped slower than its budget, one that
//! describes nothing sane) are each listed with their error by
//! `GET /api/v1/update/offers`, never as an offer, asked at once.
//! Needs root (the store loop-mounts images) and mksquashfs, serf.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{keygen, signed_bundle as bundle, Agent};
use nuvol_testkit::serf::{free_gossip_port as free_port, GoSerf, SerfArgs};
use serde_json::Value;
use sha2::Digest;

fn sha256_hex(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An agent gossiping as `name` on its own port, with extra `[bundles]`
/// and `[discovery]` lines.
fn start(
    tag: &str,
    name: &str,
    gossip: u16,
    keys: &[&str],
    bundles: &str,
    discovery: &str,
) -> Agent {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    let cfg = format!(
        "[bundles]\ntrusted_keys = [{}]\n{bundles}\n[discovery]\nbind = \"127.0.0.1\"\nport = {gossip}\nnode_name = \"{name}\"\nmdns = false\n{discovery}",
        keys.join(", ")
    );
    Agent::start(tag, &cfg, false)
}

fn code(r: &common::Reply) -> String {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Poll B's community list until `pred` holds (gossip takes a moment).
fn wait_list(b: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let r = b.bearer("GET", "/api/v1/community/bundles?refresh=1", b"");
        assert_eq!(r.code, 200, "{r:?}");
        let v = r.json();
        if pred(&v) {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}: {v:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn offered<'a>(v: &'a Value, node: &str, name: &str) -> Option<&'a Value> {
    v["bundles"]
        .as_array()?
        .iter()
        .find(|e| e["node"] == node && e["name"] == name)
}

/// A peer that lies: serves `index` at /share/v1/bundles and `file` for any
/// .nvb path, one connection at a time, until the process ends.
fn lying_peer(index: String, file: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let line = nuvol_testkit::read_request_head(&mut s).unwrap_or_default();
            let body: &[u8] = if line.starts_with("GET /share/v1/bundles ") {
                index.as_bytes()
            } else {
                &file
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    port
}

/// A peer that lies about the OS update it offers (`/share/v1/os`):
/// `big` sends a description past the 4 KiB budget, `drip` sends a good
/// one a byte every 300 ms, `bad` a well-formed JSON that describes
/// nothing sane.
fn os_liar(kind: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                if nuvol_testkit::read_request_head(&mut s).is_none() {
                    return;
                }
                let good = format!(
                    "{{\"version\": \"99.0.0\", \"arch\": \"x86_64\", \"size\": 1000, \"sha256\": \"{}\"}}",
                    "ab".repeat(32)
                );
                let body = match kind {
                    "big" => format!("{{\"pad\": \"{}\"}}", "x".repeat(8192)),
                    "bad" => {
                        r#"{"version": "99.0.0", "arch": "x86_64", "size": 0, "sha256": "zz"}"#
                            .to_string()
                    }
                    _ => good,
                };
                let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                if kind == "drip" {
                    for x in body.bytes() {
                        if s.write_all(&[x]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                } else {
                    let _ = s.write_all(body.as_bytes());
                }
            });
        }
    });
    port
}

/// A Go `serf agent` named `name` announcing a share on `port` (the
/// service tag a nuvol box would send) and joining gossip at `join`.
/// A Go serf agent that joins `join` and announces a bundle share on `port`.
fn serf_sharing(name: &str, port: u16, join: u16, dir: &std::path::Path) -> GoSerf {
    let args = SerfArgs {
        tags: vec![format!("svc:nuvol.bundles=_nuvol-bundles._tcp:{port}")],
        join: Some(SocketAddr::from(([127, 0, 0, 1], join))),
        extra: vec![],
    };
    GoSerf::start(dir, name, &args)
}

#[test]
fn community_bundles_offer_fetch_review_install() {
    let t_all = Instant::now();
    let work = Agent::fresh_dir("community-work");
    let good = keygen(&work, "good");
    let other = keygen(&work, "other");
    let web = bundle(&work, "good", "web", "1.0");
    let app = bundle(&work, "good", "app", "2.1");
    let evil = bundle(&work, "other", "evil", "0.1");
    let web_bytes = std::fs::read(&web).unwrap();

    // A trusts both publishers and installs all three.
    let ga = free_port();
    let a = start("community-a", "a", ga, &[&good, &other], "", "");
    for f in [&web, &app, &evil] {
        let r = a.bearer("POST", "/api/v1/bundles", &std::fs::read(f).unwrap());
        assert_eq!(r.code, 201, "{r:?}");
    }

    // A's public index and file, without credentials.
    let idx = a.get("/share/v1/bundles");
    assert_eq!(idx.code, 200, "{idx:?}");
    let idx = idx.json();
    let e = idx
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "web")
        .cloned()
        .unwrap_or_else(|| panic!("{idx:#}"));
    assert_eq!(e["version"], "1.0");
    assert_eq!(e["sha256"], sha256_hex(&web_bytes), "{e}");
    assert_eq!(e["size"], web_bytes.len() as u64);
    assert_eq!(e["publisher"], "Publisher good");
    let file = a.get("/share/v1/bundles/web.nvb");
    assert_eq!(file.code, 200);
    // The body is binary: compare through the raw socket's bytes.
    let raw = {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        write!(
            s,
            "GET /share/v1/bundles/web.nvb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        out[at..].to_vec()
    };
    assert!(
        raw == web_bytes,
        "the shared file differs from the installed one"
    );
    let r = a.get("/share/v1/bundles/nope.nvb");
    assert_eq!((r.code, code(&r).as_str()), (404, "unknown_bundle"));
    let r = a.get("/share/v1/bundles/web");
    assert_eq!((r.code, code(&r).as_str()), (404, "unknown_bundle"));
    // Changing anything there needs a credential.
    assert_eq!(a.raw("POST", "/share/v1/bundles", &[], b"").code, 401);
    let members = a.bearer("GET", "/api/v1/members", b"").json();
    let tags = &members[0]["tags"];
    assert_eq!(
        tags["svc:nuvol.bundles"],
        format!("_nuvol-bundles._tcp:{}", a.port),
        "{tags}"
    );

    // C shares nothing.
    let gc = free_port();
    let c = start("community-c", "c", gc, &[&good], "share = false\n", "");
    assert_eq!(
        c.bearer("POST", "/api/v1/bundles", &web_bytes).code,
        201,
        "C installs web"
    );
    let r = c.get("/share/v1/bundles");
    assert_eq!((r.code, code(&r).as_str()), (404, "sharing_off"));
    let r = c.get("/share/v1/bundles/web.nvb");
    assert_eq!((r.code, code(&r).as_str()), (404, "sharing_off"));

    // B trusts only "good" and joins A and C.
    let gb = free_port();
    let b = start(
        "community-b",
        "b",
        gb,
        &[&good],
        "",
        &format!("join = [\"127.0.0.1:{ga}\", \"127.0.0.1:{gc}\"]\n[debug]\ntest_hooks = true\n"),
    );
    let t_list = Instant::now();
    let v = wait_list(&b, "B lists A's bundles", |v| {
        offered(v, "a", "web").is_some() && offered(v, "a", "evil").is_some()
    });
    let list_secs = t_list.elapsed().as_secs_f64();
    let w = offered(&v, "a", "web").unwrap();
    assert_eq!(w["version"], "1.0");
    assert_eq!(w["sha256"], sha256_hex(&web_bytes));
    assert_eq!(w["trusted"], true, "{w}");
    assert_eq!(w["installed_version"], Value::Null, "{w}");
    assert_eq!(w["addr"], "127.0.0.1");
    assert_eq!(w["port"], a.port);
    assert_eq!(offered(&v, "a", "evil").unwrap()["trusted"], false);
    // C is a member but offers nothing.
    let t0 = Instant::now();
    while !b
        .bearer("GET", "/api/v1/members", b"")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "c" && m["status"] == "alive")
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "C never joined");
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = b
        .bearer("GET", "/api/v1/community/bundles?refresh=1", b"")
        .json();
    assert!(
        v["bundles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["node"] != "c"),
        "share = false still offered: {v:#}"
    );
    let r = b.bearer(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "c", "name": "web"}"#,
    );
    assert_eq!(
        (r.code, code(&r).as_str()),
        (404, "unknown_provider"),
        "{r:?}"
    );

    // Fetch web from A: verified, pending, signature and publisher shown.
    let r = b.bearer(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "a", "name": "web"}"#,
    );
    assert_eq!(r.code, 200, "{r:?}");
    let p = r.json();
    assert_eq!(p["signature"], "valid");
    assert_eq!(p["publisher"], "Publisher good");
    assert_eq!(p["source"], "a");
    assert_eq!(p["version"], "1.0");
    let id = p["pending"].as_str().unwrap();
    // Nothing installed until confirmed.
    assert!(b.bearer("GET", "/api/v1/bundles/web", b"").code == 404);
    let r = b.bearer(
        "POST",
        &format!("/api/v1/bundles/pending/{id}/install"),
        b"",
    );
    assert_eq!(r.code, 201, "{r:?}");
    let mine = b.bearer("GET", "/api/v1/bundles/web", b"").json();
    assert_eq!(mine["digest"], e["digest"], "same image as A");
    assert_eq!(mine["version"], "1.0");
    // And B's own share now serves the identical file.
    let again = b.get("/share/v1/bundles").json();
    assert_eq!(again[0]["sha256"], sha256_hex(&web_bytes));
    let v = b.bearer("GET", "/api/v1/community/bundles", b"").json();
    assert_eq!(offered(&v, "a", "web").unwrap()["installed_version"], "1.0");

    // An untrusted publisher is refused before anything is kept.
    let r = b.bearer(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "a", "name": "evil"}"#,
    );
    assert_eq!((r.code, code(&r).as_str()), (403, "unknown_key"), "{r:?}");
    assert_eq!(b.bearer("GET", "/api/v1/bundles/evil", b"").code, 404);
    // Bad requests name what is wrong.
    for (body, want) in [
        (
            &br#"{"node": "a", "name": "nope"}"#[..],
            (404, "not_offered"),
        ),
        (
            br#"{"node": "zz", "name": "web"}"#,
            (404, "unknown_provider"),
        ),
        (br#"{"node": "a", "name": "../x"}"#, (400, "bad_request")),
        (br#"{"node": "a"}"#, (400, "bad_request")),
        (b"garbage", (400, "bad_request")),
    ] {
        let r = b.bearer("POST", "/api/v1/bundles/fetch", body);
        assert_eq!((r.code, code(&r).as_str()), want, "{r:?}");
    }
    // Without a credential: 401.
    assert_eq!(b.raw("POST", "/api/v1/bundles/fetch", &[], b"{}").code, 401);
    assert_eq!(b.get("/api/v1/community/bundles").code, 401);

    // The panel: the section, then the form (CSRF-protected) lands on the
    // review page with an Install button.
    let (cookie, csrf) = b.login();
    let page = b.raw("GET", "/bundles", &[format!("Cookie: {cookie}")], b"");
    assert_eq!(page.code, 200);
    assert!(page.body.contains("From the community"), "{}", page.body);
    assert!(page.body.contains("id=community-bundles"));
    assert!(page.body.contains("Fetch and review"));
    assert!(page.body.contains("/bundles?refresh=1"));
    assert!(page.body.contains(">app<"), "app offered: {}", page.body);
    let form = [
        format!("Cookie: {cookie}"),
        "Accept: text/html".to_string(),
        "Content-Type: application/x-www-form-urlencoded".to_string(),
    ];
    let r = b.raw(
        "POST",
        "/api/v1/bundles/fetch?back=/bundles",
        &form,
        b"node=a&name=app",
    );
    assert_eq!(r.code, 403, "{r:?}");
    assert!(r.body.contains("(csrf)"), "{}", r.body);
    let r = b.raw(
        "POST",
        &format!("/api/v1/bundles/fetch?csrf={csrf}&back=/bundles"),
        &form,
        b"node=a&name=app",
    );
    assert_eq!(r.code, 200, "{r:?}");
    assert!(r.body.contains("Install this bundle?"), "{}", r.body);
    assert!(r.body.contains("id=verified"));
    assert!(r.body.contains("Publisher good"));
    assert!(r.body.contains("/install?csrf="));

    // Headless Chromium sees the section with A's bundle (as in chromium.rs).
    let profile = b.dir.join("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!(
            "{}/api/v1/debug/login?token={}&next=%2Fbundles",
            b.url(),
            b.token()
        ))
        .output()
        .expect("chromium (tests/apt-packages.txt)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("id=\"community-bundles\""), "{dom}");
    assert!(dom.contains("<td>app</td><td>2.1</td><td>a</td>"), "{dom}");
    assert!(dom.contains("Fetch and review"), "{dom}");

    // A lying peer: a Go serf node announcing a share whose index does not
    // match what it sends.
    let mut lie = e.clone();
    lie["sha256"] = Value::from("0".repeat(64));
    let mut short = e.clone();
    short["name"] = Value::from("short");
    short["size"] = Value::from(web_bytes.len() as u64 - 1);
    let fake = lying_peer(Value::from(vec![lie, short]).to_string(), web_bytes.clone());
    let serf_dir = Agent::fresh_dir("community-serf");
    let serf = serf_sharing("liar", fake, gb, &serf_dir);
    wait_list(&b, "B lists the liar", |v| {
        offered(v, "liar", "web").is_some()
    });
    let r = b.bearer(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "liar", "name": "web"}"#,
    );
    assert_eq!(
        (r.code, code(&r).as_str()),
        (502, "index_mismatch"),
        "{r:?}"
    );
    let r = b.bearer(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "liar", "name": "short"}"#,
    );
    assert_eq!(
        (r.code, code(&r).as_str()),
        (502, "index_mismatch"),
        "{r:?}"
    );
    drop(serf);

    // Peers that lie about the OS update they offer: each is listed with
    // its error, within the description's budget (4 KiB, 3 s to connect
    // and answer, 6 s in all), none as an offer.
    let liars: Vec<GoSerf> = ["big", "drip", "bad"]
        .into_iter()
        .map(|k| serf_sharing(&format!("os-{k}"), os_liar(k), gb, &serf_dir))
        .collect();
    let t_offers = Instant::now();
    let v = loop {
        let r = b.bearer("GET", "/api/v1/update/offers", b"");
        assert_eq!(r.code, 200, "{r:?}");
        let v = r.json();
        let listed = |n: &str| {
            v["errors"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["node"] == n))
        };
        if ["os-big", "os-drip", "os-bad"].into_iter().all(listed) {
            break v;
        }
        assert!(t_offers.elapsed() < Duration::from_secs(60), "{v:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("OS offers with three liars: {v:#}");
    assert!(v["offers"].as_array().is_some_and(Vec::is_empty), "{v:#}");
    let err = |n: &str| {
        v["errors"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["node"] == n))
            .and_then(|e| e["error"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert!(err("os-big").contains("limit"), "{v:#}");
    assert!(err("os-drip").contains("too slow"), "{v:#}");
    assert!(err("os-bad").contains("malformed"), "{v:#}");
    let t = Instant::now();
    let r = b.bearer("GET", "/api/v1/update/offers", b"");
    assert_eq!(r.code, 200, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the liars are asked at once, each within its budget: {:?}",
        t.elapsed()
    );
    drop(liars);

    // nuvol ctl: available (table and JSON) and install --from.
    let ctl = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .arg("ctl")
            .args(["--host", &b.url(), "--token", &b.token()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (st, out, err) = ctl(&["bundles", "available", "--refresh"], "");
    assert_eq!(st, Some(0), "{err}");
    assert!(
        out.contains("app") && out.contains("2.1") && out.contains("Publisher good"),
        "{out}"
    );
    let (st, out, _) = ctl(&["--json", "bundles", "available"], "");
    assert_eq!(st, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(offered(&v, "a", "app").is_some(), "{v:#}");
    // Not confirmed: refused with exit 1, nothing installed.
    let (st, out, err) = ctl(&["bundles", "install", "--from", "a", "app"], "n\n");
    assert_eq!(st, Some(1), "{out}{err}");
    assert!(
        out.contains("Publisher good") && out.contains("valid"),
        "{out}"
    );
    assert_eq!(b.bearer("GET", "/api/v1/bundles/app", b"").code, 404);
    // Untrusted: exit 1.
    let (st, _, err) = ctl(&["bundles", "install", "--from", "a", "evil", "--yes"], "");
    assert_eq!(st, Some(1), "{err}");
    assert!(err.contains("unknown_key"), "{err}");
    let (st, out, err) = ctl(&["bundles", "install", "--from", "a", "app", "--yes"], "");
    assert_eq!(st, Some(0), "{out}{err}");
    assert!(out.contains("installed app 2.1"), "{out}");
    let mine = b.bearer("GET", "/api/v1/bundles/app", b"").json();
    assert_eq!(mine["version"], "2.1");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&serf_dir);
    eprintln!(
        "community: B listed A's bundles {list_secs:.1} s after start; whole test {:.1} s",
        t_all.elapsed().as_secs_f64()
    );
}
