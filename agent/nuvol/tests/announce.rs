//! Announcements follow the services: a real `nuvol agent` (gossip + mDNS)
//! in one network namespace, Debian's `avahi-daemon` and a Go `serf agent`
//! in another, joined by a veth pair. The agent runs signed busybox bundles
//! as containers; the test watches what the peers see:
//!
//! - an installed bundle whose service runs is announced over gossip
//!   (`svc:` and Cloudy `services` tags at the Go peer) and mDNS
//!   (`avahi-browse`), with the manifest's `instance` and `txt`;
//! - install → listed by `avahi-browse` within a couple of seconds;
//! - a crash (exit 1 → backoff, crash loop) withdraws it from both within a
//!   few seconds, Avahi drops it on nuvol's goodbye, and the crash loop
//!   does not flood gossip with tag updates; it comes back once it runs;
//! - stop/start through the API withdraws/re-announces it;
//! - a service whose http health check fails is never announced, one whose
//!   check passes is;
//! - removal withdraws; the bundle share `svc:nuvol.bundles` stays.
//!
//! Needs root (namespaces, containers, loop devices), `avahi-daemon`,
//! `avahi-utils`, `dbus`, `serf`, `busybox-static`, `squashfs-tools`,
//! `bzip2`, `iproute2`, `util-linux` (tests/apt-packages.txt).

mod common;
#[path = "../../mdns/tests/common/mod.rs"]
mod rig;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nuvol_bundle::{build, ImageType, SecretKey};
use rig::{Avahi, Pair};
use serde_json::Value;

/// The shared busybox rootfs with a page for `httpd` under /www.
fn busybox_rootfs(root: &Path) {
    common::busybox_rootfs(root);
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), "ok\n").unwrap();
}

/// Bundle `name` from the busybox rootfs with the manifest tail `rest`
/// (after `[run]`), signed with `key`.
fn bundle(dir: &Path, key: &SecretKey, name: &str, command: &str, rest: &str) -> PathBuf {
    let root = dir.join("rootfs");
    if !root.exists() {
        busybox_rootfs(&root);
    }
    let mf = dir.join(format!("{name}.toml"));
    std::fs::write(
        &mf,
        format!(
            "name = \"{name}\"\nversion = \"1\"\npublisher = \"test\"\n\
             [run]\ncommand = {command}\n{rest}"
        ),
    )
    .unwrap();
    let out = dir.join(format!("{name}.nvb"));
    build::build(&mf, &root, ImageType::Squashfs, &out, Some(key)).unwrap();
    out
}

/// Runs until `/data/crash` exists, then exits 1 (and at once on every
/// restart while the file is there: a crash loop).
const PLAIN: &str = r#"["/bin/sh", "-c", "trap 'exit 0' TERM; while [ ! -e /data/crash ]; do sleep 0.1; done; echo crashing; exit 1"]"#;
const HTTPD: &str = r#"["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]"#;

struct Agent {
    child: Child,
    port: u16,
    ns: String,
    dir: PathBuf,
}

impl Drop for Agent {
    /// SIGTERM: the agent stops its containers (after SIGKILL they would
    /// outlive it), then SIGKILL if it hangs.
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// `nuvol agent` in namespace `ns` (network namespace only: cgroups and
    /// mounts are the host's, as for the other service tests).
    fn start(ns: &str, dir: &Path, config: &str) -> Agent {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("nuvol.toml"), config).unwrap();
        let port = 8500 + (std::process::id() % 1000) as u16;
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_nuvol"))
            .args(["agent", "--network", "off", "--config"])
            .arg(dir.join("nuvol.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NUVOL_RUN_DIR", dir.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nsenter");
        let a = Agent {
            child,
            port,
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
        };
        let t = Instant::now();
        while !a.log().contains("nuvol: ready") {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "agent not ready: {}",
                a.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// An authenticated request from inside the agent's namespace.
    fn req(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let (port, token) = (self.port, self.token());
        let (method, path, body) = (method.to_string(), path.to_string(), body.to_vec());
        Pair::in_ns(&self.ns, move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                 Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.write_all(&body).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            let out = String::from_utf8_lossy(&out).into_owned();
            let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (code, body.to_string())
        })
    }

    fn install(&self, nvb: &Path) {
        let (code, body) = self.req("POST", "/api/v1/bundles", &std::fs::read(nvb).unwrap());
        assert!(code == 200 || code == 201, "install: {code} {body}");
    }

    fn service(&self, name: &str) -> Value {
        let (code, body) = self.req("GET", &format!("/api/v1/services/{name}"), b"");
        if code != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Tag updates the agent made so far (one log line each).
    fn tag_updates(&self) -> usize {
        self.log().matches("discovery: announcing").count()
    }
}

/// A Go `serf agent` in namespace `ns`, killed on drop.
struct GoSerf {
    child: Child,
    ns: String,
    rpc: String,
}

impl Drop for GoSerf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoSerf {
    fn start(ns: &str, bind: &str, dir: &Path) -> GoSerf {
        let rpc = "127.0.0.1:7373".to_string();
        let log = std::fs::File::create(dir.join("serf.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "serf", "agent", "-node=go-peer"])
            .arg(format!("-bind={bind}:7946"))
            .arg(format!("-rpc-addr={rpc}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serf is installed (tests/apt-packages.txt)");
        let g = GoSerf {
            child,
            ns: ns.to_string(),
            rpc,
        };
        let t = Instant::now();
        while g.members().is_empty() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }

    fn members(&self) -> Vec<Value> {
        let Ok(out) = Command::new("ip")
            .args(["netns", "exec", &self.ns, "serf", "members", "-format=json"])
            .arg(format!("-rpc-addr={}", self.rpc))
            .output()
        else {
            return Vec::new();
        };
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["members"].as_array().cloned().unwrap_or_default()
    }

    /// The tags of `node` as the Go peer sees them, if it is alive.
    fn tags(&self, node: &str) -> Option<Value> {
        self.members()
            .into_iter()
            .find(|m| m["name"] == node && m["status"] == "alive")
            .map(|m| m["tags"].clone())
    }
}

/// The Cloudy `services` tag decoded the way avahi-ps does
/// (`base64 -d | bunzip2`).
fn cloudy(tags: &Value) -> String {
    let Some(v) = tags["services"].as_str() else {
        return String::new();
    };
    let out = Command::new("sh")
        .args(["-c", "printf '%s' \"$1\" | base64 -d | bunzip2", "sh", v])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f() {
            eprintln!("{what}: after {:?}", t.elapsed());
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// Wait for a line of `kind` for `instance` from the running browser: how
/// long after `since` it came.
fn seen(watch: &rig::Watch, kind: &str, instance: &str, since: Instant, secs: u64) -> Duration {
    watch
        .wait(kind, instance, since, secs)
        .unwrap_or_else(|| panic!("avahi-browse: no {kind} line for {instance:?} in {secs} s"))
}

/// avahi-browse lists `instance` of `stype`; returns the resolved line.
fn listed(av: &Avahi, instance: &str, stype: &str) -> Option<Vec<String>> {
    av.browse()
        .into_iter()
        .find(|l| l.len() >= 10 && l[3] == instance && l[4] == stype)
}

/// A scratch directory removed on drop (also when the test fails).
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.0.join("agent/agent.log"));
            eprintln!("agent log:\n{}", log.unwrap_or_default());
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn announcements_follow_running_healthy_services() {
    let pid = std::process::id();
    let tmp = TmpDir(std::env::temp_dir().join(format!("nuvol-announce-{pid}")));
    let dir = tmp.0.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = SecretKey::generate().unwrap();
    let plain = bundle(
        &dir,
        &key,
        "plain",
        PLAIN,
        "[[volumes]]\nname = \"data\"\npath = \"/data\"\n\
         [[announce]]\nservice_type = \"_demo._tcp\"\nport = 7000\n",
    );
    let web = bundle(
        &dir,
        &key,
        "web",
        HTTPD,
        "[health]\nkind = \"http\"\nport = 8080\npath = \"/index.html\"\ninterval_s = 1\ntimeout_s = 1\nretries = 2\n\
         [[announce]]\nservice_type = \"_http._tcp\"\nport = 8080\ninstance = \"Web Panel\"\n\
         txt = { path = \"/index.html\", v = \"1\" }\n",
    );
    let sick = bundle(
        &dir,
        &key,
        "sick",
        HTTPD,
        "[health]\nkind = \"http\"\nport = 8080\npath = \"/missing.html\"\ninterval_s = 1\ntimeout_s = 1\nretries = 2\n\
         [[announce]]\nservice_type = \"_sick._tcp\"\nport = 8080\ninstance = \"Sick Panel\"\n",
    );
    let public = key.public().to_text("test");
    let keyline = public.lines().nth(1).unwrap().to_string();

    let p = Pair::new();
    let av = Avahi::start(&p.a, &p.va, &format!("peer-{pid}"));
    let watch = av.watch();
    let go = GoSerf::start(&p.a, &p.ip_a, &dir);
    let host = format!("annbox{pid}");
    let node = format!("nuvol-{pid}");
    let a = Agent::start(
        &p.b,
        &dir.join("agent"),
        &format!(
            "hostname = \"{host}\"\n[bundles]\ntrusted_keys = [\"{keyline}\"]\n\
             [discovery]\nbind = \"{}\"\nnode_name = \"{node}\"\njoin = [\"{}:7946\"]\nmdns = true\n",
            p.ip_b, p.ip_a
        ),
    );
    wait("the Go peer sees nuvol alive", 20, || {
        go.tags(&node).is_some()
    });
    let has = |svc: &str, value: &str| go.tags(&node).is_some_and(|t| t[svc] == value);
    let lacks = |svc: &str| go.tags(&node).is_some_and(|t| t[svc].is_null());

    // Install: the service starts and is announced at once, over mDNS with
    // its default instance name, over gossip with both tag schemes.
    let plain_instance = format!("plain on {host}");
    let t = Instant::now();
    a.install(&plain);
    let install_to_avahi = seen(&watch, "=", &plain_instance, t, 30);
    wait("the Go peer sees svc:plain", 10, || {
        has("svc:plain", "_demo._tcp:7000")
    });
    assert!(
        install_to_avahi < Duration::from_secs(3),
        "install → resolved by avahi-browse took {install_to_avahi:?}"
    );
    let tags = go.tags(&node).unwrap();
    assert!(cloudy(&tags).contains("\"s\":\"demo\""), "{tags}");
    let l = listed(&av, &plain_instance, "_demo._tcp").expect("in Avahi's cache");
    assert_eq!(l[6], format!("{host}.local"), "{l:?}");
    assert_eq!(l[7], p.ip_b, "{l:?}");
    assert_eq!(l[8], "7000", "{l:?}");

    // A crash loop (exit 1, backoff 1 s, 2 s, 4 s ...): withdrawn from the
    // Go peer and from Avahi (goodbye) within a few seconds; the share stays.
    let flag = dir.join("agent/state/bundles/volumes/plain/data/crash");
    let updates_before = a.tag_updates();
    std::fs::write(&flag, "").unwrap();
    let t = Instant::now();
    let to_gossip = wait("the Go peer drops svc:plain", 10, || lacks("svc:plain"));
    let to_avahi = seen(&watch, "-", &plain_instance, t, 10);
    assert!(to_gossip < Duration::from_secs(3), "{to_gossip:?}");
    assert!(to_avahi < Duration::from_secs(3), "{to_avahi:?}");
    wait("avahi's cache drops plain", 5, || {
        listed(&av, &plain_instance, "_demo._tcp").is_none()
    });
    let tags = go.tags(&node).unwrap();
    assert_eq!(
        tags["svc:nuvol.bundles"],
        format!("_nuvol-bundles._tcp:{}", a.port),
        "{tags}"
    );
    assert!(!cloudy(&tags).contains("\"s\":\"demo\""), "{tags}");
    // It keeps crashing; it stays withdrawn and gossip is not flooded.
    let loop_start = Instant::now();
    while loop_start.elapsed() < Duration::from_secs(8) {
        assert!(lacks("svc:plain"), "a crash-looping service was announced");
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = a.service("plain");
    assert!(st["restarts"].as_u64().unwrap_or(0) >= 2, "{st}");
    assert!(watch.first("=", &plain_instance, t).is_none());
    let updates = a.tag_updates() - updates_before;
    eprintln!("tag updates during ~10 s of crash loop: {updates}");
    assert!(updates <= 2, "{updates} tag updates for one crash loop");

    // Fixed: it runs again (restart now instead of waiting for the
    // backoff) and is announced again.
    std::fs::remove_file(&flag).unwrap();
    let (code, body) = a.req("POST", "/api/v1/services/plain/restart", b"");
    assert_eq!(code, 200, "{body}");
    let t = Instant::now();
    wait("the Go peer sees svc:plain again", 10, || {
        has("svc:plain", "_demo._tcp:7000")
    });
    seen(&watch, "=", &plain_instance, t, 10);

    // Stopped through the API: withdrawn; started: back.
    let (code, body) = a.req("POST", "/api/v1/services/plain/stop", b"");
    assert_eq!(code, 200, "{body}");
    let t = Instant::now();
    wait("the Go peer drops stopped plain", 10, || lacks("svc:plain"));
    seen(&watch, "-", &plain_instance, t, 10);
    let (code, body) = a.req("POST", "/api/v1/services/plain/start", b"");
    assert_eq!(code, 200, "{body}");
    let t = Instant::now();
    wait("the Go peer sees started plain", 10, || {
        has("svc:plain", "_demo._tcp:7000")
    });
    seen(&watch, "=", &plain_instance, t, 10);

    // Health: `web` passes its http check and is announced with the
    // manifest's instance and TXT; `sick` fails its check and never is.
    let t = Instant::now();
    a.install(&web);
    a.install(&sick);
    seen(&watch, "=", "Web Panel", t, 15);
    let l = listed(&av, "Web Panel", "_http._tcp").expect("in Avahi's cache");
    assert_eq!(l[8], "8080", "{l:?}");
    assert!(
        l[9].contains("\"path=/index.html\"") && l[9].contains("\"v=1\""),
        "TXT from the manifest: {l:?}"
    );
    // The svc: tag carries the instance too, for peers beyond this LAN.
    wait("the Go peer sees svc:Web Panel", 10, || {
        has("svc:Web Panel", "_http._tcp:8080")
    });
    assert!(cloudy(&go.tags(&node).unwrap()).contains("\"d\":\"Web_Panel\""));
    wait("sick restarted as unhealthy", 30, || {
        a.service("sick")["restarts"].as_u64().unwrap_or(0) >= 1
    });
    assert!(lacks("svc:sick"), "{:?}", go.tags(&node));
    assert!(
        !watch.saw("_sick._tcp") && !watch.saw("Sick"),
        "Avahi saw the unhealthy service"
    );

    // Removal: withdrawn with a goodbye; the others stay.
    let (code, body) = a.req("DELETE", "/api/v1/bundles/web", b"");
    assert!(code == 200 || code == 204, "{code} {body}");
    let t = Instant::now();
    wait("the Go peer drops svc:Web Panel", 10, || {
        lacks("svc:Web Panel")
    });
    let gone = seen(&watch, "-", "Web Panel", t, 10);
    assert!(gone < Duration::from_secs(3), "{gone:?}");
    let tags = go.tags(&node).unwrap();
    assert_eq!(tags["svc:plain"], "_demo._tcp:7000", "{tags}");
    assert!(!tags["svc:nuvol.bundles"].is_null(), "{tags}");
    let agent_pid = a.child.id();
    drop(a);
    assert!(
        in_cgroup_of(agent_pid).is_empty(),
        "service processes outlived the agent"
    );
}

/// Pids of processes in the services cgroup of agent `pid`.
fn in_cgroup_of(pid: u32) -> Vec<String> {
    let tag = format!("nuvol-agent-{pid}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&tag))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
