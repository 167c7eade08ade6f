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
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
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
