//! The panel and API against a real agent process: the unauthenticated walk
//! of every route in the OpenAPI document, sessions and CSRF, the login
//! rate limit, API tokens, HTTPS and the redirect, body limits, reboot and
//! update, metrics, and a text-browser rendering.

mod common;

use std::process::Command;

use common::Agent;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The same path with a trailing slash (the route table treats both as
/// one route; `/` stays `/`).
fn slashed(path: &str) -> String {
    if path == "/" {
        path.to_string()
    } else {
        format!("{path}/")
    }
}

/// Fill `{param}` segments with a sample value.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') {
                "nonexistent1"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn documented(doc: &Value) -> Vec<(String, String, bool)> {
    documented_ops(doc)
        .into_iter()
        .map(|(m, p, public, _)| (m, p, public))
        .collect()
}

/// (method, path, public, endless stream) for every documented operation.
fn documented_ops(doc: &Value) -> Vec<(String, String, bool, bool)> {
    let mut v = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (m, op) in ops.as_object().unwrap() {
            let public = op["security"].as_array().is_some_and(|a| a.is_empty());
            let stream = op["responses"]["default"]["content"]
                .get("text/event-stream")
                .is_some();
            v.push((m.to_ascii_uppercase(), path.clone(), public, stream));
        }
    }
    v
}

#[test]
fn unauthenticated_walk_of_every_route() {
    let a = Agent::start("walk", "", false);
    let doc = a.get("/api/v1/openapi.json");
    assert_eq!(doc.code, 200, "the OpenAPI document is public");
    let doc = doc.json();
    let routes = documented(&doc);
    assert!(routes.len() >= 30, "{routes:?}");
    for (m, p, public) in &routes {
        // Never kill or reboot anything in the walk; POST /login is public
        // by design and answers 401 to a wrong secret.
        let r = a.raw(m, &concrete(p), &[], b"");
        if *public && p == "/share/v1/bundles/{name}.nvb" {
            // Public, but there is no bundle by the made-up name: the
            // share's own 404, never 401.
            assert_eq!(r.code, 404, "public {m} {p}: {r:?}");
            assert!(r.body.contains("unknown_bundle"), "{r:?}");
        } else if *public && p.starts_with("/share/v1/os") {
            // Public, but this agent runs no update marked good: nothing
            // to offer, the share's own 404, never 401.
            assert_eq!(r.code, 404, "public {m} {p}: {r:?}");
            assert!(r.body.contains("no_os_offer"), "{r:?}");
        } else if *public {
            assert!(
                matches!(r.code, 200 | 303 | 401 | 503),
                "public {m} {p}: {}",
                r.code
            );
            if m == "GET" && p != "/api/v1/network" {
                assert_eq!(r.code, 200, "public {m} {p}");
            }
        } else {
            assert_eq!(r.code, 401, "{m} {p} without credentials: {r:?}");
        }
        // With a trailing slash it is the same route, with the same answer.
        let s = a.raw(m, &slashed(&concrete(p)), &[], b"");
        assert_eq!(s.code, r.code, "{m} {p}/ without credentials: {s:?}");
        // A wrong bearer token and a made-up cookie are no better.
        if !public {
            let r = a.raw(
                m,
                &concrete(p),
                &["Authorization: Bearer nvt.x.y".into()],
                b"",
            );
            assert_eq!(r.code, 401, "{m} {p} with a wrong token");
            let r = a.raw(
                m,
                &concrete(p),
                &[format!("Cookie: nuvol_session={}", "a".repeat(64))],
                b"",
            );
            assert_eq!(r.code, 401, "{m} {p} with a made-up session");
        }
    }
    // Unauthenticated, only the public set answers anything but 401.
    for (m, p, _) in &routes {
        for other in METHODS {
            if routes
                .iter()
                .any(|(m2, p2, pb)| m2 == other && p2 == p && *pb)
                || other == m.as_str()
            {
                continue;
            }
            let r = a.raw(other, &concrete(p), &[], b"");
            assert_eq!(r.code, 401, "{other} {p} without credentials");
        }
    }
}

#[test]
fn openapi_lists_exactly_the_routes_served() {
    let a = Agent::start("openapi", "", false);
    let doc = a.get("/api/v1/openapi.json").json();
    let routes = documented(&doc);
    let skip = ["/api/v1/system/reboot"]; // answered, but exercised in its own test
    for (m, p, _, stream) in documented_ops(&doc) {
        if stream {
            // Endless answers (events, log follow): only the status line.
            let auth = format!("Authorization: Bearer {}", a.token());
            let code = a.status_only(&m, &concrete(&p), &[auth]);
            assert!(
                code != 405 && code != 0,
                "documented stream {m} {p}: {code}"
            );
            if code == 404 {
                // A 404 for the resource (no such service) ends at once:
                // read it and make sure it is not "no such route".
                let r = a.bearer(&m, &concrete(&p), b"");
                assert_ne!(
                    r.json()["error"]["code"],
                    "not_found",
                    "documented stream {m} {p} is not served: {}",
                    r.body
                );
            }
        }
    }
    for (m, p, _) in &routes {
        let stream = documented_ops(&doc)
            .iter()
            .any(|(m2, p2, _, s)| m2 == m && p2 == p && *s);
        if skip.contains(&p.as_str()) || stream {
            continue;
        }
        let error_code = |r: &common::Reply| {
            if r.body.starts_with('{') {
                r.json()["error"]["code"].as_str().unwrap_or("").to_string()
            } else {
                String::new()
            }
        };
        let r = a.bearer(m, &concrete(p), b"");
        let code = error_code(&r);
        assert!(
            code != "not_found" && code != "method_not_allowed" && r.code != 405,
            "documented {m} {p} is not served: {} {}",
            r.code,
            r.body
        );
        // A trailing slash names the same route: the same answer.
        let s = a.bearer(m, &slashed(&concrete(p)), b"");
        assert_eq!(
            (s.code, error_code(&s)),
            (r.code, code.clone()),
            "documented {m} {p} with a trailing slash: {}",
            s.body
        );
        // Every method the document does not list on that path is refused.
        for other in METHODS {
            if routes.iter().any(|(m2, p2, _)| m2 == other && p2 == p) {
                continue;
            }
            for path in [concrete(p), slashed(&concrete(p))] {
                let r = a.bearer(other, &path, b"");
                assert!(
                    r.code == 405 || r.code == 404,
                    "undocumented {other} {path} answered {}: {}",
                    r.code,
                    r.body
                );
            }
        }
    }
    // And paths the document does not know are 404.
    for p in ["/api/v1/nope", "/admin", "/api/v2/status", "/dashboard/x"] {
        assert_eq!(a.bearer("GET", p, b"").code, 404, "{p}");
    }
}

#[test]
fn sessions_and_csrf() {
    let a = Agent::start("session", "", false);
    // Pages show the login form (401) without a session.
    let r = a.get("/dashboard");
    assert_eq!(r.code, 401);
    assert!(
        r.body.contains("id=login") && r.body.contains("name=secret"),
        "{}",
        r.body
    );
    // A wrong secret is refused.
    let form = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    let r = a.raw("POST", "/login", &form, b"secret=nope&next=/dashboard");
    assert_eq!(r.code, 401);
    assert!(r.body.contains("id=login-error"));
    // The right one gives a cookie: HttpOnly, SameSite=Strict, not Secure on HTTP.
    let body = format!("secret={}&next=https%3A%2F%2Fevil.example%2F", a.token());
    let r = a.raw("POST", "/login", &form, body.as_bytes());
    assert_eq!(r.code, 303);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/dashboard"),
        "no open redirect"
    );
    let c = r.header("set-cookie").unwrap();
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"),
        "{c}"
    );
    let (session, csrf) = a.login();
    let ck = format!("Cookie: {session}");
    for p in [
        "/dashboard",
        "/community",
        "/services",
        "/bundles",
        "/network",
        "/settings",
        "/update",
    ] {
        let r = a.raw("GET", p, std::slice::from_ref(&ck), b"");
        assert_eq!(r.code, 200, "{p}");
        assert!(
            r.body.contains("<nav>") && r.body.contains("Log out"),
            "{p}"
        );
    }
    // State changes by cookie need the CSRF token.
    let r = a.raw(
        "POST",
        "/api/v1/tokens",
        std::slice::from_ref(&ck),
        b"{\"name\":\"x\"}",
    );
    assert_eq!(r.code, 403);
    assert_eq!(r.json()["error"]["code"], "csrf");
    let r = a.raw(
        "POST",
        "/api/v1/tokens",
        &[ck.clone(), "X-CSRF-Token: 00".into()],
        b"{\"name\":\"x\"}",
    );
    assert_eq!(r.code, 403, "a wrong CSRF token");
    let r = a.raw(
        "POST",
        "/api/v1/tokens",
        &[ck.clone(), format!("X-CSRF-Token: {csrf}")],
        b"{\"name\":\"x\"}",
    );
    assert_eq!(r.code, 201, "{r:?}");
    // A browser form post (csrf in the action URL) is answered for a browser.
    let r = a.raw(
        "POST",
        &format!("/api/v1/tokens?csrf={csrf}&back=/settings"),
        &[ck.clone(), "Accept: text/html".into(), form[0].clone()],
        b"name=phone",
    );
    assert_eq!(r.code, 200);
    assert!(
        r.body.contains("nvt.") && r.body.contains("not shown again"),
        "{}",
        r.body
    );
    let id = a.bearer("GET", "/api/v1/tokens", b"").json()["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = a.raw(
        "POST",
        &format!("/api/v1/tokens/{id}/revoke?csrf={csrf}&back=/settings"),
        &[ck.clone(), "Accept: text/html".into()],
        b"",
    );
    assert_eq!(r.code, 303);
    assert_eq!(r.header("location").as_deref(), Some("/settings"));
    // Errors come back as an HTML page for a browser.
    let r = a.raw(
        "POST",
        &format!("/api/v1/bundles/none/rollback?csrf={csrf}&back=/bundles"),
        &[ck.clone(), "Accept: text/html".into()],
        b"",
    );
    assert_eq!(r.code, 404);
    assert!(r.body.contains("id=error"), "{}", r.body);
    // Logging out ends the session (needs CSRF too).
    assert_eq!(
        a.raw("POST", "/logout", std::slice::from_ref(&ck), b"")
            .code,
        403
    );
    let r = a.raw(
        "POST",
        &format!("/logout?csrf={csrf}"),
        std::slice::from_ref(&ck),
        b"",
    );
    assert_eq!(r.code, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(a.raw("GET", "/settings", &[ck], b"").code, 401);
}

#[test]
fn login_is_rate_limited() {
    let a = Agent::start("ratelimit", "", false);
    let form = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    for _ in 0..5 {
        assert_eq!(a.raw("POST", "/login", &form, b"secret=wrong").code, 401);
    }
    let body = format!("secret={}", a.token());
    let r = a.raw("POST", "/login", &form, body.as_bytes());
    assert_eq!(r.code, 429, "locked out even with the right secret");
    assert!(r.header("retry-after").is_some());
    // Bearer API access is not affected.
    assert_eq!(a.bearer("GET", "/api/v1/tokens", b"").code, 200);
}

#[test]
fn api_tokens_work_and_revoke() {
    let a = Agent::start("tokens", "", false);
    let r = a.bearer("POST", "/api/v1/tokens", b"{\"name\":\"ci\"}");
    assert_eq!(r.code, 201);
    let v = r.json();
    let (id, secret) = (v["id"].as_str().unwrap(), v["token"].as_str().unwrap());
    let with = |m: &str, p: &str| a.raw(m, p, &[format!("Authorization: Bearer {secret}")], b"");
    assert_eq!(with("GET", "/api/v1/bundles").code, 200);
    let saved = std::fs::read_to_string(a.dir.join("state/api-tokens.json")).unwrap();
    assert!(!saved.contains(secret), "only the hash is stored");
    assert_eq!(
        a.bearer("DELETE", &format!("/api/v1/tokens/{id}"), b"")
            .code,
        200
    );
    assert_eq!(with("GET", "/api/v1/bundles").code, 401);
    assert_eq!(
        a.bearer("DELETE", &format!("/api/v1/tokens/{id}"), b"")
            .code,
        404
    );
    assert_eq!(
        a.bearer("POST", "/api/v1/tokens", b"{\"name\":\"\"}").code,
        400
    );
}

#[test]
fn provisioned_password_and_api_key_replace_the_token() {
    // sha256("provisioning-key")
    let key_hash = "sha256:".to_string() + &sha256_hex("provisioning-key");
    let phc = nuvol_api::auth::argon2_hash("s3cret pass").unwrap();
    let slow = nuvol_api::auth::argon2_hash("argon2-key").unwrap();
    let cfg =
        format!("[admin]\npassword_hash = \"{phc}\"\napi_keys = [\"{key_hash}\", \"{slow}\"]\n");
    let a = Agent::start("admin", &cfg, false);
    assert!(!a.console().contains("admin token:"), "{}", a.console());
    let ok = a.raw(
        "GET",
        "/api/v1/tokens",
        &["Authorization: Bearer provisioning-key".into()],
        b"",
    );
    assert_eq!(ok.code, 200);
    assert_eq!(
        a.bearer("GET", "/api/v1/tokens", b"").code,
        401,
        "console token is off"
    );
    for _ in 0..2 {
        let r = a.raw(
            "GET",
            "/api/v1/tokens",
            &["Authorization: Bearer argon2-key".into()],
            b"",
        );
        assert_eq!(r.code, 200, "argon2 API key");
    }
    let form = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    assert_eq!(
        a.raw("POST", "/login", &form, b"secret=s3cret+pass").code,
        303
    );
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn https_with_self_signed_cert_and_redirect() {
    let a = Agent::start("https", "", true);
    let hp = a.https_port.unwrap();
    let console = a.console();
    let fp_line = console
        .lines()
        .find(|l| l.contains("certificate SHA-256 fingerprint: "))
        .unwrap_or_else(|| panic!("{console}"));
    let fp = fp_line.rsplit(' ').next().unwrap().to_string();
    let der = std::fs::read(a.dir.join("state/tls/cert.der")).unwrap();
    let want: String = sha256_hex_bytes(&der);
    assert_eq!(
        fp.replace(':', "").to_ascii_lowercase(),
        want,
        "console shows the cert's fingerprint"
    );
    // Plain HTTP: the status page and JSON stay, the rest goes to HTTPS.
    assert_eq!(a.get("/").code, 200);
    assert_eq!(a.get("/api/v1/status").code, 200);
    let r = a.get("/dashboard?x=1");
    assert_eq!(r.code, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{hp}/dashboard?x=1"))
    );
    assert_eq!(a.bearer("GET", "/api/v1/bundles", b"").code, 308);
    // The bundle share stays on plain HTTP: peers fetch signed bytes without TLS.
    assert_eq!(a.get("/share/v1/bundles").code, 200);
    assert_eq!(a.raw("POST", "/share/v1/bundles", &[], b"").code, 308);
    // HTTPS serves everything; the session cookie is Secure there.
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("https://127.0.0.1:{hp}/api/v1/status"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let out = Command::new("curl")
        .args(["-sk", "-D", "-", "-o", "/dev/null", "--data"])
        .arg(format!("secret={}", a.token()))
        .arg(format!("https://127.0.0.1:{hp}/login"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains("303") && head.contains("; secure"), "{head}");
    // A client that does not trust the certificate is refused.
    let st = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(format!("https://127.0.0.1:{hp}/"))
        .status()
        .unwrap();
    assert!(!st.success());
}

fn sha256_hex_bytes(b: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("nuvol-fp-{}", std::process::id()));
    std::fs::write(&p, b).unwrap();
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    let _ = std::fs::remove_file(&p);
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn plain_http_can_be_allowed() {
    let a = Agent::start("plain", "[panel]\nallow_plain_http = true\n", true);
    assert_eq!(a.bearer("GET", "/api/v1/bundles", b"").code, 200);
    assert_eq!(a.get("/dashboard").code, 401);
}

#[test]
fn bodies_are_limited_and_slow_clients_cut() {
    let a = Agent::start("limits", "", false);
    let big = vec![b'a'; 100 * 1024];
    let r = a.raw("POST", "/login", &[], &big);
    assert_eq!(r.code, 413, "{r:?}");
    let r = a.bearer("POST", "/api/v1/tokens", &big);
    assert_eq!(r.code, 413);
    // A client that sends half its headers and stops is dropped (10 s).
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "slow header cut"
    );
}

#[test]
fn reboot_update_metrics_history() {
    let a = Agent::start("system", "", false);
    assert_eq!(a.raw("POST", "/api/v1/system/reboot", &[], b"").code, 401);
    let r = a.bearer("POST", "/api/v1/system/reboot", b"");
    assert_eq!(r.code, 202);
    assert_eq!(
        r.json()["rebooting"],
        false,
        "not under nuvol init: nothing rebooted"
    );
    // Factory reset: a credential, then an explicit confirmation; a
    // development host has no nuvol init to carry it out.
    let yes = br#"{"confirm": true}"#;
    assert_eq!(a.raw("POST", "/api/v1/reset", &[], yes).code, 401);
    let r = a.bearer("POST", "/api/v1/reset", b"");
    assert_eq!(r.code, 400, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "confirm_required");
    let r = a.bearer("POST", "/api/v1/reset", yes);
    assert_eq!(r.code, 202, "{r:?}");
    assert_eq!(r.json()["resetting"], false, "not under nuvol init");
    let r = a.bearer("POST", "/api/v1/update", b"");
    assert_eq!(r.code, 501);
    assert_eq!(r.json()["error"]["code"], "update_unavailable");
    assert_eq!(
        a.bearer("GET", "/api/v1/update", b"").json()["available"],
        false
    );
    assert_eq!(a.get("/metrics").code, 401);
    let m = a.bearer("GET", "/metrics", b"");
    assert_eq!(m.code, 200);
    for want in [
        "nuvol_memory_total_bytes ",
        "nuvol_http_requests_total{route=\"/api/v1/system/reboot\",code=\"401\"} 1",
        "nuvol_bundles_installed 0",
        "nuvol_disk_total_bytes{mount=",
    ] {
        assert!(m.body.contains(want), "{want} in\n{}", m.body);
    }
    // Each metric family once: Prometheus refuses a page that repeats one.
    let mut families: Vec<&str> = m
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let n = families.len();
    families.sort_unstable();
    families.dedup();
    assert_eq!(families.len(), n, "a metric family twice in\n{}", m.body);
    let h = a.bearer("GET", "/api/v1/history", b"").json();
    assert_eq!(h["every_s"], 30);
    assert!(
        !h["samples"].as_array().unwrap().is_empty(),
        "first sample at start"
    );
}

#[test]
fn pages_read_in_a_text_browser() {
    let a = Agent::start("w3m", "hostname = \"ignored\"\n", false);
    let (session, _) = a.login();
    for (p, want) in [
        ("/", "Interfaces"),
        ("/dashboard", "Memory"),
        ("/bundles", "Upload and check"),
        ("/bundles", "Free space for bundles:"),
        ("/settings", "API tokens"),
        ("/update", "nuvol ctl update"),
    ] {
        let r = a.raw("GET", p, &[format!("Cookie: {session}")], b"");
        assert_eq!(r.code, 200, "{p}");
        let f = a.dir.join("page.html");
        std::fs::write(&f, &r.body).unwrap();
        let out = Command::new("w3m")
            .args(["-dump", "-T", "text/html", "-cols", "60"])
            .arg(&f)
            .output()
            .expect("w3m (tests/apt-packages.txt)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "{p} as text:\n{text}");
        assert!(
            !text.contains("<td") && !text.contains("{"),
            "{p}: markup leaks:\n{text}"
        );
    }
}

/// Build a signed bundle `w` 1 with a fresh key: (bundle path, key.pub path).
fn signed_bundle(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let nuvol = env!("CARGO_BIN_EXE_nuvol");
    std::fs::create_dir_all(dir.join("root/bin")).unwrap();
    std::fs::write(dir.join("root/bin/x"), "x").unwrap();
    std::fs::write(
        dir.join("m.toml"),
        "name = \"w\"\nversion = \"1\"\npublisher = \"Panel Test Publisher\"\n[run]\ncommand = [\"/bin/x\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(nuvol).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let s = |p: &str| dir.join(p).to_str().unwrap().to_string();
    run(&["bundle", "keygen", "-o", &s("k")]);
    run(&[
        "bundle",
        "build",
        "-m",
        &s("m.toml"),
        "-r",
        &s("root"),
        "-o",
        &s("w.nvb"),
        "-k",
        &s("k.sec"),
    ]);
    (dir.join("w.nvb"), dir.join("k.pub"))
}

#[test]
fn browser_upload_shows_signature_then_installs() {
    let a = Agent::start("upload", "", false);
    let (bundle, key) = signed_bundle(&a.dir.join("b"));
    // Unknown publisher: refused at the check, nothing pending.
    let (session, csrf) = a.login();
    let ck = format!("Cookie: {session}");
    let file = std::fs::read(&bundle).unwrap();
    let boundary = "----nuvoltest7MA4YWxk";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"w.nvb\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&file);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let headers = vec![
        ck.clone(),
        "Accept: text/html".to_string(),
        format!("Content-Type: multipart/form-data; boundary={boundary}"),
    ];
    let verify = format!("/api/v1/bundles/verify?csrf={csrf}&back=/bundles");
    let r = a.raw("POST", &verify, &headers, &form);
    assert_eq!(r.code, 403, "unknown key: {}", r.body);
    assert!(r.body.contains("id=error"), "{}", r.body);
    // Trust the key (bearer), then the check shows publisher and key first.
    let r = a.bearer("POST", "/api/v1/keys", &std::fs::read(&key).unwrap());
    assert_eq!(r.code, 201, "{}", r.body);
    let key_id = r.json()["key_id"].as_str().unwrap().to_string();
    let r = a.raw("POST", &verify, &headers, &form);
    assert_eq!(r.code, 200, "{}", r.body);
    for want in [
        "id=verified",
        "Panel Test Publisher",
        key_id.as_str(),
        "not installed",
        "Install",
    ] {
        assert!(r.body.contains(want), "{want}: {}", r.body);
    }
    assert_eq!(
        a.bearer("GET", "/api/v1/bundles", b"").body.trim(),
        "[]",
        "nothing installed yet"
    );
    let action = r
        .body
        .split("action=\"")
        .find(|s| s.starts_with("/api/v1/bundles/pending/"))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let r = a.raw(
        "POST",
        &action,
        &[ck.clone(), "Accept: text/html".into()],
        b"",
    );
    assert_eq!(r.code, 303, "{}", r.body);
    let page = a.raw("GET", "/bundles", std::slice::from_ref(&ck), b"");
    assert!(
        page.body.contains("Panel Test Publisher") && page.body.contains("remove and delete data"),
        "{}",
        page.body
    );
    // The pending upload was used up.
    let r = a.raw(
        "POST",
        &action,
        &[ck.clone(), "Accept: text/html".into()],
        b"",
    );
    assert_eq!(r.code, 404);
    // Remove through the form.
    let r = a.raw(
        "POST",
        &format!("/api/v1/bundles/w/remove?purge=1&csrf={csrf}&back=/bundles"),
        &[ck.clone(), "Accept: text/html".into()],
        b"",
    );
    assert_eq!(r.code, 303, "{}", r.body);
    assert_eq!(a.bearer("GET", "/api/v1/bundles", b"").body.trim(), "[]");
    // And the CLI installs and removes it too.
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .args(["ctl", "--host", &a.url(), "--token", &a.token()])
            .args(args)
            .output()
            .unwrap()
    };
    let o = ctl(&["bundles", "install", bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("installed w 1 (publisher Panel Test Publisher"));
    let o = ctl(&["bundles", "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Panel Test Publisher"));
    let o = ctl(&["bundles", "remove", "w"]);
    assert!(o.status.success());
}

/// The status code of `req` sent as is on a fresh connection.
fn status_of(a: &Agent, req: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn documented_limits_hold() {
    let gossip = {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap().port()
    };
    let a = Agent::start(
        "doclimits",
        &format!(
            "[discovery]\nbind = \"127.0.0.1\"\nport = {gossip}\nnode_name = \"lim\"\nmdns = false\n"
        ),
        false,
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // The request head: 64 KiB with the blank line, 100 header lines.
    assert!(doc.contains("request head at most 64 KiB"), "docs/api.md");
    let head = |n: usize| {
        let bare = "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: \r\n\r\n";
        let req = format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(n - bare.len())
        );
        assert_eq!(req.len(), n);
        status_of(&a, req.as_bytes())
    };
    assert_eq!(head(64 * 1024), 200);
    assert_eq!(head(64 * 1024 + 1), 431);
    assert_eq!(head(100 * 1024), 431, "never more than the limit");
    assert!(doc.contains("at most 100 header lines"), "docs/api.md");
    let lines = |n: usize| {
        let mut req = "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_string();
        for i in 2..n {
            req.push_str(&format!("X-H{i}: 1\r\n"));
        }
        req.push_str("\r\n");
        status_of(&a, req.as_bytes())
    };
    assert_eq!(lines(100), 200);
    assert_eq!(lines(101), 431);
    // Bodies: one code for "too large" everywhere.
    let body = |path: &str, n: usize| {
        let r = a.bearer("POST", path, &vec![b'a'; n]);
        let code = serde_json::from_str::<Value>(&r.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        (r.code, code.unwrap_or_default())
    };
    for (path, max, phrase) in [
        ("/api/v1/tokens", 64 * 1024, "forms and JSON at most 64 KiB"),
        (
            "/api/v1/keys",
            8 * 1024,
            "keys and revocation reasons at most 8 KiB",
        ),
        ("/api/v1/events", 4 * 1024, "user events at most 4 KiB"),
    ] {
        assert!(doc.contains(phrase), "docs/api.md: {phrase}");
        let (code, err) = body(path, max);
        assert!(
            code != 413 && err != "body_too_large",
            "{path} at {max}: {code} {err}"
        );
        assert_eq!(
            body(path, max + 1),
            (413, "body_too_large".into()),
            "{path}"
        );
    }
}

/// The Settings page's factory reset: a form with a checkbox that must be
/// ticked; the browser post without it is an error page, with it the
/// answer page (a development host has no nuvol init to reset).
#[test]
fn settings_page_factory_reset_needs_the_box_ticked() {
    let a = Agent::start("reset-form", "", false);
    let (session, csrf) = a.login();
    let ck = format!("Cookie: {session}");
    let page = a.raw("GET", "/settings", std::slice::from_ref(&ck), b"");
    assert_eq!(page.code, 200);
    for want in [
        "id=factory-reset",
        "name=confirm value=yes required",
        "Factory reset</button>",
    ] {
        assert!(page.body.contains(want), "{want}: {}", page.body);
    }
    let action = page
        .body
        .split("action=\"")
        .find(|s| s.starts_with("/api/v1/reset?"))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert!(action.contains(&format!("csrf={csrf}")), "{action}");
    let form = |body: &[u8]| {
        a.raw(
            "POST",
            &action,
            &[
                ck.clone(),
                "Accept: text/html".into(),
                "Content-Type: application/x-www-form-urlencoded".into(),
            ],
            body,
        )
    };
    let r = form(b"");
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(r.body.contains("confirm_required"), "{}", r.body);
    let r = form(b"confirm=yes");
    assert_eq!(r.code, 200, "{}", r.body);
    assert!(
        r.body.contains("<h1>Factory reset</h1>") && r.body.contains("nothing was reset"),
        "{}",
        r.body
    );
    // Without the CSRF token: refused before anything else.
    let r = a.raw(
        "POST",
        "/api/v1/reset",
        &[ck.clone(), "Accept: text/html".into()],
        b"confirm=yes",
    );
    assert_eq!(r.code, 403, "{}", r.body);
}
