//! A real `nuvol agent` running a signed bundle as a container service: the
//! service list, logs (with follow), stop/start, the admin token, and the
//! store → supervisor sync on upgrade and removal through the API.
//! Needs root (containers, loop devices), squashfs-tools and busybox-static.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nuvol_bundle::{build, ImageType, SecretKey, Store};
use serde_json::Value;

const SCRIPT: &str = "trap 'echo bye; exit 0' TERM; echo hello-from-VERSION; \
     echo written > /data/proof; echo upper > /tmp/upper-proof; i=0; \
     while true; do i=$((i+1)); echo tick $i; sleep 0.2; done";

fn busybox_rootfs(root: &Path) {
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("apt-get install busybox-static");
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
}

fn make_bundle(dir: &Path, key: &SecretKey, version: &str) -> PathBuf {
    make_named_bundle(dir, key, "echo", version)
}

fn make_named_bundle(dir: &Path, key: &SecretKey, name: &str, version: &str) -> PathBuf {
    let root = dir.join("rootfs");
    if !root.exists() {
        busybox_rootfs(&root);
    }
    // The store tells versions apart by image digest: make the images differ.
    std::fs::write(root.join("etc/version"), format!("{name} {version}")).unwrap();
    let script = SCRIPT.replace("VERSION", version);
    let manifest = format!(
        "name = \"{name}\"\nversion = \"{version}\"\npublisher = \"test\"\n\
         [run]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n\
         [[volumes]]\nname = \"data\"\npath = \"/data\"\n\
         [resources]\nmemory_mb = 64\npids = 32\n"
    );
    let mf = dir.join(format!("manifest-{name}-{version}.toml"));
    std::fs::write(&mf, manifest).unwrap();
    let out = dir.join(format!("{name}-{version}.nvb"));
    build::build(&mf, &root, ImageType::Squashfs, &out, Some(key)).unwrap();
    out
}

struct Agent {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Agent {
    fn start(dir: PathBuf) -> Agent {
        Agent::start_with(dir, "")
    }

    fn start_with(dir: PathBuf, config: &str) -> Agent {
        std::fs::write(dir.join("nuvol.toml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .args(["agent", "--network", "off", "--config"])
            .arg(dir.join("nuvol.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NUVOL_RUN_DIR", dir.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let a = Agent {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    /// The lead's contract: 64 hex characters in `<state-dir>/admin-token`.
    fn token(&self) -> String {
        let t = std::fs::read_to_string(self.dir.join("state/admin-token")).unwrap();
        let t = t.trim().to_string();
        assert_eq!(t.len(), 64);
        t
    }

    fn send(&self, method: &str, path: &str, auth: bool, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let auth = if auth {
            format!("Authorization: Bearer {}\r\n", self.token())
        } else {
            String::new()
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (code, body.to_string())
    }

    fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.send("GET", path, true, b"");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Poll the service until `pred` holds.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_service("echo", what, pred)
    }

    /// Poll service `name` until `pred` holds.
    fn wait_for_service(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.get_json("/api/v1/local-services");
            if let Some(s) = list
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name && pred(s))
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {list}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the agent stops its services (nothing may outlive it).
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Pids of processes whose cgroup path names this agent's service cgroup.
fn processes_in_cgroup_of(agent_pid: u32) -> Vec<String> {
    let tag = format!("nuvol-agent-{agent_pid}/");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) {
            if cg.contains(&tag) {
                out.push(name);
            }
        }
    }
    out
}

#[test]
fn bundle_runs_as_a_service_with_logs_stop_start_and_sync() {
    let dir = std::env::temp_dir().join(format!("nuvol-services-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(&dir, &key, "1.0");
    let v2 = make_bundle(&dir, &key, "2.0");
    // Install before the agent starts, as provisioning would.
    {
        let store = Store::open(&dir.join("state")).unwrap();
        store.keyring().add(&key.public(), "test").unwrap();
        store.install(&v1).unwrap();
    }
    let mut a = Agent::start(dir.clone());
    let agent_pid = a.child.as_ref().unwrap().id();

    // Running, from the bundle, with a pid and memory use.
    let s = a.wait_for("running", |s| {
        s["state"] == "running" && s["pid"].is_number()
    });
    assert_eq!(s["version"], "1.0");
    assert!(s["digest"].as_str().unwrap().len() == 64);
    let one = a.get_json("/api/v1/services/echo");
    assert_eq!(one["name"], "echo");
    assert_eq!(one["state"], "running");

    // Logs: the first line, then ticks; ?lines bounds the answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = a.send("GET", "/api/v1/services/echo/logs", true, b"");
        assert_eq!(code, 200);
        if body.contains("hello-from-1.0") && body.contains("tick 2") {
            assert!(body.contains("[nuvol] started, pid"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "no output: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, two) = a.send("GET", "/api/v1/services/echo/logs?lines=2", true, b"");
    assert_eq!(two.lines().count(), 2, "{two}");
    // The volume is the store's, the rootfs writes go to the overlay upper.
    let proof = dir.join("state/bundles/volumes/echo/data/proof");
    assert_eq!(std::fs::read_to_string(&proof).unwrap().trim(), "written");
    assert!(dir
        .join("state/services/echo/upper/tmp/upper-proof")
        .exists());

    // Follow: the stream stays open and brings lines written after it opened.
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /api/v1/services/echo/logs?follow=1&lines=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
            a.token()
        )
        .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        let ticks = |t: &str| t.matches("tick ").count();
        while ticks(&seen) < 4 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "follow stalled: {seen}"
            );
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "follow stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        assert!(seen
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"));
        assert!(
            !seen.contains("hello-from"),
            "lines=1 must skip older lines: {seen}"
        );
    }

    // Without the token: 401 everywhere.
    for (m, p) in [
        ("GET", "/api/v1/local-services"),
        ("GET", "/api/v1/services/echo"),
        ("GET", "/api/v1/services/echo/logs?follow=1"),
        ("POST", "/api/v1/services/echo/stop"),
    ] {
        assert_eq!(a.send(m, p, false, b"").0, 401, "{m} {p}");
    }
    assert_eq!(a.send("GET", "/api/v1/services/nope", true, b"").0, 404);
    assert_eq!(
        a.send("GET", "/api/v1/services/echo/logs?lines=x", true, b"")
            .0,
        400
    );

    // Stop: SIGTERM reaches the service, nothing of it survives; it stays stopped.
    let (code, body) = a.send("POST", "/api/v1/services/echo/stop", true, b"");
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["state"], "stopped");
    assert!(st["pid"].is_null());
    assert!(processes_in_cgroup_of(agent_pid).is_empty());
    let (_, logs) = a.send("GET", "/api/v1/services/echo/logs", true, b"");
    assert!(
        logs.contains("bye"),
        "SIGTERM not seen by the service: {logs}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.get_json("/api/v1/services/echo")["state"], "stopped");

    // Start again.
    assert_eq!(
        a.send("POST", "/api/v1/services/echo/start", true, b"").0,
        200
    );
    a.wait_for("restart", |s| {
        s["state"] == "running" && s["pid"].is_number()
    });

    // Upgrade through the API: the service restarts on the new image.
    let body = std::fs::read(&v2).unwrap();
    let (code, resp) = a.send("POST", "/api/v1/bundles", true, &body);
    assert_eq!(code, 201, "{resp}");
    a.wait_for("version 2.0", |s| {
        s["version"] == "2.0" && s["state"] == "running"
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, logs) = a.send("GET", "/api/v1/services/echo/logs", true, b"");
        // A tick after the greeting: 2.0's `echo written > /data/proof`
        // (which truncates first) is done.
        if logs
            .split_once("hello-from-2.0")
            .is_some_and(|(_, after)| after.contains("tick "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "2.0 never ran: {logs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The upper layer was reset for the new image; the volume was kept.
    assert_eq!(std::fs::read_to_string(&proof).unwrap().trim(), "written");

    // Removal through the API: the service goes away with all its processes.
    let (code, resp) = a.send("DELETE", "/api/v1/bundles/echo", true, b"");
    assert!(code == 200 || code == 204, "{code} {resp}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = a.get_json("/api/v1/local-services");
        if list.as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "service not removed: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(processes_in_cgroup_of(agent_pid).is_empty());
    // Its logs and writable layer go with it (a reinstall starts clean).
    let data = dir.join("state/services/echo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while data.exists() {
        assert!(Instant::now() < deadline, "{} left behind", data.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop();
}

#[test]
fn agent_stop_takes_its_services_down() {
    let dir = std::env::temp_dir().join(format!("nuvol-services-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(&dir, &key, "1.0");
    {
        let store = Store::open(&dir.join("state")).unwrap();
        store.keyring().add(&key.public(), "test").unwrap();
        store.install(&v1).unwrap();
    }
    let mut a = Agent::start(dir.clone());
    let agent_pid = a.child.as_ref().unwrap().id();
    let s = a.wait_for("running", |s| {
        s["state"] == "running" && s["pid"].is_number()
    });
    assert!(!processes_in_cgroup_of(agent_pid).is_empty(), "{s}");
    a.stop();
    assert!(
        processes_in_cgroup_of(agent_pid).is_empty(),
        "service processes outlived the agent"
    );
}

#[test]
fn bundle_named_in_nuvol_toml_is_installed_and_run() {
    let dir = std::env::temp_dir().join(format!("nuvol-services-prov-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(&dir, &key, "1.0");
    let public = key.public().to_text("test");
    let line = public.lines().nth(1).unwrap();
    let config = format!(
        "[bundles]\ntrusted_keys = [{line:?}]\ninstall = [{:?}]\n",
        v1.file_name().unwrap().to_str().unwrap()
    );
    let mut a = Agent::start_with(dir.clone(), &config);
    let s = a.wait_for("provisioned service", |s| {
        s["state"] == "running" && s["version"] == "1.0"
    });
    assert!(s["pid"].is_number(), "{s}");
    a.stop();
}

/// One bundle of three with a garbled `state.json` (a power cut): the other
/// two run, the broken one is listed with its problem (API and `nuvol ctl`)
/// and is removed, volumes and all, through the API.
#[test]
fn one_broken_bundle_does_not_stop_the_others() {
    let dir = std::env::temp_dir().join(format!("nuvol-services-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = SecretKey::generate().unwrap();
    let names = ["alpha", "bravo", "charlie"];
    {
        let store = Store::open(&dir.join("state")).unwrap();
        store.keyring().add(&key.public(), "test").unwrap();
        for n in names {
            store
                .install(&make_named_bundle(&dir, &key, n, "1.0"))
                .unwrap();
        }
    }
    let bundles = dir.join("state/bundles");
    std::fs::write(
        bundles.join("installed/bravo/state.json"),
        b"{\"current\": \"ab",
    )
    .unwrap();
    let mut a = Agent::start(dir.clone());

    for n in ["alpha", "charlie"] {
        a.wait_for_service(n, "running", |s| {
            s["state"] == "running" && s["pid"].is_number()
        });
    }
    let s = a.wait_for_service("bravo", "shown as not running", |s| {
        s["problem"].is_string()
    });
    assert_ne!(s["state"], "running", "{s}");
    assert!(s["problem"].as_str().unwrap().contains("state.json"), "{s}");

    let list = a.get_json("/api/v1/bundles");
    let list = list.as_array().unwrap();
    let listed: Vec<&str> = list.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "{list:?}");
    let bravo = &list[1];
    assert_eq!(bravo["state"], "broken", "{bravo}");
    assert!(
        bravo["file"]
            .as_str()
            .unwrap()
            .ends_with("installed/bravo/state.json"),
        "{bravo}"
    );
    assert!(!bravo["problem"].as_str().unwrap().is_empty(), "{bravo}");
    assert_eq!(list[0]["state"], "installed");
    let one = a.get_json("/api/v1/bundles/bravo");
    assert_eq!(one["state"], "broken", "{one}");

    let ctl = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .args(["ctl", "--host", &format!("http://127.0.0.1:{}", a.port)])
        .args(["--token", &a.token(), "bundles", "list"])
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ctl.stdout);
    assert!(
        ctl.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("bravo: broken: ") && l.contains("state.json")),
        "{out}"
    );

    let (code, resp) = a.send("DELETE", "/api/v1/bundles/bravo?purge=1", true, b"");
    assert_eq!(code, 200, "{resp}");
    assert!(!bundles.join("installed/bravo").exists());
    assert!(!bundles.join("volumes/bravo").exists());
    assert_eq!(std::fs::read_dir(bundles.join("tmp")).unwrap().count(), 0);
    let list = a.get_json("/api/v1/bundles");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let svcs = a.get_json("/api/v1/local-services");
        let names: Vec<&str> = svcs
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        if names == ["alpha", "charlie"] {
            break;
        }
        assert!(Instant::now() < deadline, "bravo still listed: {svcs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.wait_for_service("alpha", "still running", |s| s["state"] == "running");
    a.stop();
}
