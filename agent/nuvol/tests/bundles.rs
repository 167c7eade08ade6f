//! Signed bundles through a real agent: the HTTP API (keys, upload,
//! upgrade, rollback, remove) and unattended installs named in nuvol.toml
//! (a file next to it and an http:// URL). Needs root (the store loop-mounts
//! each image to check it) and mksquashfs.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Agent;
use serde_json::Value;

/// Bundle `name` `version` signed with `dir/k.sec`.
fn bundle(dir: &Path, name: &str, version: &str) -> PathBuf {
    common::signed_bundle(dir, "k", name, version)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn error_code(body: &str) -> String {
    json(body)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn bundle_api_keys_install_upgrade_rollback_remove() {
    let dir = Agent::fresh_dir("bundle-api");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    common::keygen(&work, "k");
    let v1 = std::fs::read(bundle(&work, "web", "1.0")).unwrap();
    let v2 = std::fs::read(bundle(&work, "web", "2.0")).unwrap();
    let a = Agent::start_in(dir, "", false);

    // Nothing trusted yet: refused, nothing installed.
    let (code, _, body) = a.areq("POST", "/api/v1/bundles", &v1);
    assert_eq!(
        (code, error_code(&body).as_str()),
        (403, "unknown_key"),
        "{body}"
    );
    let (code, _, body) = a.areq("POST", "/api/v1/bundles", b"not a bundle at all");
    assert_eq!(code, 400, "{body}");
    assert_eq!(error_code(&body), "malformed_bundle", "{body}");
    // Uploads need the token like every state-changing route.
    let (code, _, _) = a.req("POST", "/api/v1/bundles");
    assert_eq!(code, 401);

    let pubkey = std::fs::read(work.join("k.pub")).unwrap();
    let (code, _, body) = a.areq("POST", "/api/v1/keys", &pubkey);
    assert_eq!(code, 201, "{body}");
    let key_id = json(&body)["key_id"].as_str().unwrap().to_string();
    let (_, _, body) = a.areq("GET", "/api/v1/keys", b"");
    assert!(body.contains(&key_id), "{body}");

    let (code, _, body) = a.areq("POST", "/api/v1/bundles", &v1);
    assert_eq!(code, 201, "{body}");
    let b = json(&body);
    assert_eq!(
        (b["name"].as_str(), b["version"].as_str()),
        (Some("web"), Some("1.0")),
        "{body}"
    );
    let (code, _, body) = a.areq("POST", "/api/v1/bundles", &v2);
    assert_eq!(code, 201, "{body}");
    let (_, _, body) = a.areq("GET", "/api/v1/bundles/web", b"");
    assert_eq!(json(&body)["version"], "2.0", "{body}");
    assert!(body.contains(&key_id), "publisher key shown: {body}");

    let (code, _, body) = a.areq("POST", "/api/v1/bundles/web/rollback", b"");
    assert_eq!(code, 200, "{body}");
    let (_, _, body) = a.areq("GET", "/api/v1/bundles", b"");
    let list = json(&body);
    assert_eq!(list[0]["version"], "1.0", "{body}");
    assert_eq!(list[0]["previous"]["version"], "2.0", "{body}");

    // A revoked key: its bundles are refused from then on.
    let (code, _, body) = a.areq("POST", &format!("/api/v1/keys/{key_id}/revoke"), b"");
    assert!(code == 200 || code == 201, "{code} {body}");
    let (code, _, body) = a.areq("POST", "/api/v1/bundles", &v2);
    assert_eq!(
        (code, error_code(&body).as_str()),
        (403, "revoked_key"),
        "{body}"
    );

    let (code, _, body) = a.areq("DELETE", "/api/v1/bundles/web?purge=1", b"");
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = a.areq("GET", "/api/v1/bundles/web", b"");
    assert_eq!(code, 404, "{body}");
}

/// A one-shot HTTP server on loopback serving `files` (path → bytes) and
/// 404 for anything else; returns its port.
fn serve(files: Vec<(String, Vec<u8>)>) -> u16 {
    serve_opts(files, true)
}

/// [`serve`], with or without a Content-Length (without: the body ends
/// when the connection closes).
fn serve_opts(files: Vec<(String, Vec<u8>)>, with_len: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let len = if with_len {
                        format!("Content-Length: {}\r\n", body.len())
                    } else {
                        String::new()
                    };
                    let _ = write!(s, "HTTP/1.1 200 OK\r\n{len}Connection: close\r\n\r\n");
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    port
}

#[test]
fn bundles_named_in_config_install_unattended_from_file_and_url() {
    let dir = Agent::fresh_dir("bundle-prov");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let key_line = common::keygen(&work, "k");
    std::fs::create_dir_all(dir.join("bundles")).unwrap();
    std::fs::copy(bundle(&work, "local", "1"), dir.join("bundles/local.nvb")).unwrap();
    let remote = std::fs::read(bundle(&work, "remote", "3")).unwrap();
    let port = serve(vec![("/b/remote.nvb".into(), remote)]);
    let config = format!(
        "[bundles]\ntrusted_keys = [\"{}\"]\ninstall = [\"bundles/local.nvb\", \"http://127.0.0.1:{port}/b/remote.nvb\", \"http://127.0.0.1:{port}/b/missing.nvb\"]\n",
        key_line
    );
    let mut a = Agent::start_in(dir, &config, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = a.areq("GET", "/api/v1/bundles", b"");
        if body.contains("\"local\"") && body.contains("\"remote\"") {
            assert!(body.contains("\"3\""), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "not installed: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The missing one is named on the console, and does not stop the others.
    a.child.kill().unwrap();
    let _ = a.child.wait();
    let err = a.console();
    assert!(
        err.contains("missing.nvb") && err.contains("NOT INSTALLED") && err.contains("404"),
        "{err}"
    );
}

/// A tmpfs of `size` mounted on a directory for one test; unmounted (and
/// the directory's parent removed) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        if let Some(p) = self.0.parent() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// POST `body` to `path` with the admin token, with a Content-Length or
/// chunked (in 256 KiB chunks); the body is written from another thread so
/// an early answer is read whatever happens to the rest. (code, JSON).
fn post_body(a: &Agent, path: &str, body: &[u8], chunked: bool) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let len = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\n{len}\r\n\r\n",
        a.token()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        for c in body.chunks(256 * 1024) {
            let r = if chunked {
                write!(w, "{:x}\r\n", c.len())
                    .and_then(|()| w.write_all(c))
                    .and_then(|()| w.write_all(b"\r\n"))
            } else {
                w.write_all(c)
            };
            if r.is_err() {
                return;
            }
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let _ = writer.join();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v = serde_json::from_str(body).unwrap_or(Value::Null);
    (code, v)
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn assert_507(code: u16, v: &Value, what: &str) -> (u64, u64) {
    assert_eq!(code, 507, "{what}: {v}");
    let e = &v["error"];
    assert_eq!(e["code"], "insufficient_storage", "{what}: {v}");
    let needed = e["needed_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    let free = e["free_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    assert!(needed > free, "{what}: {v}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(&needed.to_string()) && msg.contains(&free.to_string()),
        "{what}: the message names both numbers: {msg}"
    );
    (needed, free)
}

#[test]
fn a_full_disk_is_a_clear_answer_and_leaves_nothing_behind() {
    let dir = Agent::fresh_dir("bundle-full");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    common::keygen(&work, "k");
    let big = std::fs::read(common::signed_bundle_padded(
        &work,
        "k",
        "big",
        "1",
        10 << 20,
    ))
    .unwrap();
    let mid = std::fs::read(common::signed_bundle_padded(
        &work,
        "k",
        "mid",
        "1",
        5 << 20,
    ))
    .unwrap();
    let small = std::fs::read(bundle(&work, "small", "1")).unwrap();
    // The agent's whole state directory on an 8 MiB filesystem.
    let state = dir.join("state");
    let _fs = Tmpfs::mount(&state, "8m");
    let a = Agent::start_in(dir, "", false);
    let (code, _, body) = a.areq(
        "POST",
        "/api/v1/keys",
        &std::fs::read(work.join("k.pub")).unwrap(),
    );
    assert_eq!(code, 201, "{body}");

    let (code, _, body) = a.areq("GET", "/api/v1/storage", b"");
    assert_eq!(code, 200, "{body}");
    let st = json(&body);
    assert_eq!(st["total_bytes"], 8 << 20, "{body}");
    let free0 = st["free_bytes"].as_u64().unwrap();
    assert!(free0 > 7 << 20 && free0 <= 8 << 20, "{body}");
    assert!(
        st["path"]
            .as_str()
            .unwrap()
            .starts_with(state.to_str().unwrap()),
        "{body}"
    );
    let largest = st["largest_bundle_bytes"].as_u64().unwrap();
    assert!(
        largest < (mid.len() as u64) && largest > small.len() as u64,
        "{body}"
    );

    let nothing_left = |what: &str| {
        let left = files_under(&state.join("bundles"));
        assert_eq!(
            left,
            [".lock", "keyring.json", "keyring.json.lock"],
            "{what}: only the keyring (and the locks) in the store"
        );
        let (_, _, body) = a.areq("GET", "/api/v1/bundles", b"");
        assert_eq!(body.trim(), "[]", "{what}");
        let free = json(&a.areq("GET", "/api/v1/storage", b"").2)["free_bytes"]
            .as_u64()
            .unwrap();
        assert!(
            free + 64 * 1024 >= free0,
            "{what}: {free} free, {free0} before"
        );
    };

    // Declared too big: refused before a byte is stored, naming the sizes.
    let (code, v) = post_body(&a, "/api/v1/bundles", &big, false);
    let (needed, free) = assert_507(code, &v, "upload with Content-Length");
    assert_eq!(needed, 2 * big.len() as u64 + (1 << 20), "{v}");
    assert!(free <= free0, "{v}");
    nothing_left("upload with Content-Length");
    let (code, v) = post_body(&a, "/api/v1/bundles/verify", &mid, false);
    assert_507(code, &v, "verify with Content-Length");
    nothing_left("verify with Content-Length");

    // No length: the disk fills up while streaming. Same answer, no
    // partial file left.
    let (code, v) = post_body(&a, "/api/v1/bundles", &big, true);
    assert_507(code, &v, "chunked upload");
    nothing_left("chunked upload");

    // Fits as an upload but not as an install next to it: kept as
    // pending, the install is refused, installs nothing and (like any
    // failed install) discards the pending upload.
    let (code, v) = post_body(&a, "/api/v1/bundles/verify", &mid, true);
    assert_eq!(code, 200, "{v}");
    let id = v["pending"].as_str().unwrap().to_string();
    let (code, _, body) = a.areq(
        "POST",
        &format!("/api/v1/bundles/pending/{id}/install"),
        b"",
    );
    let (needed, _) = assert_507(code, &json(&body), "install of a pending upload");
    assert!(
        needed <= mid.len() as u64 + (1 << 20),
        "the image and 1 MiB: {body}"
    );
    nothing_left("pending install");
    let (code, _, body) = a.areq("DELETE", &format!("/api/v1/bundles/pending/{id}"), b"");
    assert_eq!(code, 404, "{body}");

    // `nuvol ctl`: the same answer (exit 1), and the free space in the list.
    let ctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .args(["ctl", "--host", &a.url(), "--token", &a.token()])
            .args(args)
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let big_file = work.join("big-1.nvb");
    let o = ctl(&["bundles", "install", big_file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("507") && err.contains("insufficient_storage"),
        "{err}"
    );
    nothing_left("ctl bundles install");
    let o = ctl(&["bundles", "list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("free: ") && text.contains("of 8.0 MiB on ") && text.contains("fits"),
        "{text}"
    );

    // What fits still installs.
    let (code, v) = post_body(&a, "/api/v1/bundles", &small, true);
    assert_eq!(code, 201, "{v}");
    let (code, v) = post_body(&a, "/api/v1/bundles", &bundle_bytes_v2(&work), false);
    assert_eq!(code, 201, "{v}");
    let (_, _, body) = a.areq("GET", "/api/v1/bundles", b"");
    assert_eq!(json(&body)[0]["version"], "2", "{body}");
}

fn bundle_bytes_v2(work: &Path) -> Vec<u8> {
    std::fs::read(bundle(work, "small", "2")).unwrap()
}

#[test]
fn provisioning_what_cannot_fit_says_so_on_the_console() {
    let dir = Agent::fresh_dir("bundle-prov-full");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let key_line = common::keygen(&work, "k");
    let big = common::signed_bundle_padded(&work, "k", "big", "1", 10 << 20);
    let big_bytes = std::fs::read(&big).unwrap();
    std::fs::create_dir_all(dir.join("bundles")).unwrap();
    std::fs::copy(&big, dir.join("bundles/big.nvb")).unwrap();
    std::fs::copy(bundle(&work, "small", "1"), dir.join("bundles/small.nvb")).unwrap();
    let with_len = serve(vec![("/b/big.nvb".into(), big_bytes.clone())]);
    let no_len = serve_opts(vec![("/b/big.nvb".into(), big_bytes)], false);
    let config = format!(
        "[bundles]\ntrusted_keys = [\"{key_line}\"]\ninstall = [\"bundles/big.nvb\", \"bundles/small.nvb\", \
         \"http://127.0.0.1:{with_len}/b/big.nvb\", \"http://127.0.0.1:{no_len}/b/big.nvb\"]\n"
    );
    let state = dir.join("state");
    let _fs = Tmpfs::mount(&state, "8m");
    let a = Agent::start_in(dir, &config, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let c = a.console();
        let lines: Vec<String> = c
            .lines()
            .filter(|l| l.contains("NOT INSTALLED"))
            .map(str::to_string)
            .collect();
        if lines.len() >= 3 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{c}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for l in &lines {
        assert!(
            l.contains("big.nvb") && l.contains("not enough free space") && l.contains(") free"),
            "{l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(":{no_len}/")) && l.contains("filled it")),
        "{lines:?}"
    );
    // The one that fits is installed; no download or stage is left.
    let (_, _, body) = a.areq("GET", "/api/v1/bundles", b"");
    let list = json(&body);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(list[0]["name"], "small", "{body}");
    let tmp = files_under(&state.join("bundles/tmp"));
    assert!(tmp.is_empty(), "{tmp:?}");
}

fn udp_tcp_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

#[test]
fn fetching_from_a_peer_what_cannot_fit_is_refused_before_downloading() {
    let work = Agent::fresh_dir("bundle-peer-full-work");
    let key = common::keygen(&work, "k");
    let big = std::fs::read(common::signed_bundle_padded(
        &work,
        "k",
        "big",
        "1",
        5 << 20,
    ))
    .unwrap();
    let gossip = |port: u16, name: &str, join: &str| {
        format!(
            "[bundles]\ntrusted_keys = [\"{key}\"]\n[discovery]\nbind = \"127.0.0.1\"\nport = {port}\n\
             node_name = \"{name}\"\nmdns = false\n{join}"
        )
    };
    let ga = udp_tcp_port();
    let a = Agent::start("bundle-peer-a", &gossip(ga, "a", ""), false);
    let (code, v) = post_body(&a, "/api/v1/bundles", &big, false);
    assert_eq!(code, 201, "{v}");
    let dir = Agent::fresh_dir("bundle-peer-b");
    let state = dir.join("state");
    let _fs = Tmpfs::mount(&state, "8m");
    let join = format!("join = [\"127.0.0.1:{ga}\"]\n");
    let b = Agent::start_in(dir, &gossip(udp_tcp_port(), "b", &join), false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = b.areq("GET", "/api/v1/community/bundles?refresh=1", b"");
        if body.contains("\"big\"") {
            break;
        }
        assert!(Instant::now() < deadline, "a's offer never showed: {body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, _, body) = b.areq(
        "POST",
        "/api/v1/bundles/fetch",
        br#"{"node": "a", "name": "big"}"#,
    );
    let (needed, _) = assert_507(code, &json(&body), "fetch from a peer");
    assert_eq!(needed, 2 * big.len() as u64 + (1 << 20), "{body}");
    let tmp = files_under(&state.join("bundles/tmp"));
    assert!(tmp.is_empty(), "{tmp:?}");
    let _ = std::fs::remove_dir_all(&work);
}
