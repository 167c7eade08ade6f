//! Discovery through the real binary: two Go `serf agent`s (Debian's
//! `serf`) and two `nuvol agent` processes on 127.0.0.1 ports, in the clear
//! and with an encryption key on all four.
//!
//! Checked: Go lists the nuvol nodes alive with their tags (config tags,
//! role/zone, and the `svc:` + Cloudy `services` tags of a bundle installed
//! through the API, once its service runs); `/api/v1/members` lists the Go
//! nodes with theirs;
//! `serf event` shows up in `/api/v1/events`; `POST /api/v1/events` reaches
//! Go's event handler; `serf query nuvol-services` is answered by both
//! nuvol nodes; `kill -9` of a nuvol node is seen as failed by both Go
//! nodes and the other nuvol; SIGTERM makes a nuvol node leave gracefully.
//!
//! `cloudy_services_tag_both_ways`: a Go agent started the way
//! package-serf's `init.d/serf` starts Cloudy's (`-protocol 4
//! -profile=wan`, node name `<hostid>-<ns>-<host>-<ip>:<port>`) publishes
//! the way avahi-ps-serf does (`serf info | jq | base64 -d | bunzip2 | jq`,
//! then `echo | bzip2 | base64 -w 0 | serf tags -set`; a script of ours
//! from a reading of it); a WAN-profile nuvol lists those services with
//! source `cloudy`, and the same script's search (`serf members
//! -status=alive -format json | jq`, word splitting) run against the Go
//! agent lists nuvol's bundle with exactly the fields avahi-ps would have
//! published.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuvol_testkit::serf::{free_gossip_port as free_port, GoSerf, SerfArgs};

/// A temporary directory removed on drop.
struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Go serf agent tagged `lang=go` that appends the user events it sees
/// to `events.log` in its directory.
struct GoPeer {
    serf: GoSerf,
    dir: PathBuf,
}

impl std::ops::Deref for GoPeer {
    type Target = GoSerf;
    fn deref(&self) -> &GoSerf {
        &self.serf
    }
}

impl GoPeer {
    fn start(dir: &Path, name: &str, key: Option<&str>, join: Option<SocketAddr>) -> GoPeer {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let mut extra = vec![format!(
            "-event-handler=user=sh -c 'echo \"$SERF_USER_EVENT $(cat)\" >> {}'",
            dir.join("events.log").display()
        )];
        if let Some(k) = key {
            extra.push(format!("-encrypt={k}"));
        }
        let args = SerfArgs {
            tags: vec!["lang=go".into()],
            join,
            extra,
        };
        GoPeer {
            serf: GoSerf::start(&dir, name, &args),
            dir,
        }
    }

    fn status_of(&self, node: &str) -> String {
        self.serf.status_of(node).unwrap_or_default()
    }

    fn events_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("events.log")).unwrap_or_default()
    }
}

/// A `nuvol agent` process, killed on drop.
struct Nuvol {
    child: Child,
    port: u16,
    gossip: SocketAddr,
    dir: PathBuf,
}

impl Drop for Nuvol {
    /// SIGTERM first: the agent stops its services' containers (after a
    /// SIGKILL they would outlive it).
    fn drop(&mut self) {
        self.signal("-TERM");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nuvol {
    fn start(dir: &Path, name: &str, extra: &str, trusted_key: &str) -> Nuvol {
        Nuvol::start_with(dir, name, "", extra, trusted_key)
    }

    /// `top` goes before the first table (e.g. `hostname = "..."`).
    fn start_with(dir: &Path, name: &str, top: &str, extra: &str, trusted_key: &str) -> Nuvol {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let gossip = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "{top}[bundles]\ntrusted_keys = [\"{trusted_key}\"]\n\n\
             [discovery]\nbind = \"127.0.0.1\"\nport = {}\nnode_name = \"{name}\"\n\
             mdns = false\nrole = \"super-node\"\nzone = \"z1\"\ntags = {{ colour = \"blue\" }}\n{extra}",
            gossip.port()
        );
        std::fs::write(dir.join("nuvol.toml"), config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("agent.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .args(["agent", "--network", "off", "--config"])
            .arg(dir.join("nuvol.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NUVOL_RUN_DIR", dir.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("nuvol");
        let n = Nuvol {
            child,
            port,
            gossip,
            dir,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "agent did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin-token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    fn req(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
            self.token(),
            body.len()
        );
        if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
            return (0, String::new());
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let Some((head, body)) = out.split_once("\r\n\r\n") else {
            return (0, out);
        };
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, body.to_string())
    }

    fn members(&self) -> Vec<serde_json::Value> {
        let (code, body) = self.req("GET", "/api/v1/members", b"");
        if code != 200 {
            return Vec::new();
        }
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default()
    }

    fn status_of(&self, node: &str) -> String {
        self.members()
            .iter()
            .find(|m| m["name"] == node)
            .and_then(|m| m["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

/// Reads `GET /api/v1/events` into a buffer until dropped.
struct EventStream {
    buf: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl EventStream {
    fn open(n: &Nuvol) -> EventStream {
        EventStream::open_at(n, "/api/v1/events")
    }
    fn open_at(n: &Nuvol, path: &str) -> EventStream {
        let buf = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n",
            n.token()
        )
        .expect("write");
        let (b, st) = (buf.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(k) => {
                        if let Ok(mut g) = b.lock() {
                            g.push_str(&String::from_utf8_lossy(&chunk[..k]));
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        EventStream { buf, stop }
    }
    fn text(&self) -> String {
        self.buf.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            eprintln!("{what}: after {:?}", t0.elapsed());
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("timed out after {limit:?} waiting for {what}");
    false
}

fn nuvol_cli(args: &[&str]) {
    let st = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("nuvol");
    assert!(st.success(), "nuvol {args:?}");
}

/// A signed bundle announcing `_http._tcp` on 8080, and its public key
/// line. Its service (a busybox shell loop) runs: only running services are
/// announced.
fn make_bundle(dir: &Path) -> (PathBuf, String) {
    let s = |p: &str| dir.join(p).to_string_lossy().into_owned();
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join("root").join(d)).expect("root");
    }
    std::fs::copy("/bin/busybox", dir.join("root/bin/busybox")).expect("busybox-static");
    for a in ["sh", "sleep"] {
        std::os::unix::fs::symlink("busybox", dir.join("root/bin").join(a)).expect("link");
    }
    std::fs::write(
        dir.join("m.toml"),
        "name = \"webby\"\nversion = \"1\"\npublisher = \"t\"\n\
         [run]\ncommand = [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n\
         [[announce]]\nservice_type = \"_http._tcp\"\nport = 8080\n",
    )
    .expect("manifest");
    nuvol_cli(&["bundle", "keygen", "-o", &s("k")]);
    nuvol_cli(&[
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
    let pubkey = std::fs::read_to_string(dir.join("k.pub")).expect("pub");
    let line = pubkey
        .lines()
        .find(|l| l.starts_with("RW"))
        .expect("key line")
        .to_string();
    (dir.join("w.nvb"), line)
}

fn scenario(tag: &str, key: Option<&str>) {
    let pid = std::process::id();
    let tmp = TmpDir(std::env::temp_dir().join(format!("nuvol-disc-{tag}-{pid}")));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).expect("tmp");
    let (bundle, pubkey) = make_bundle(&tmp.0);

    let go_a = GoPeer::start(&tmp.0, &format!("go-a-{pid}"), key, None);
    let go_b = GoPeer::start(&tmp.0, &format!("go-b-{pid}"), key, Some(go_a.bind));
    let extra = |join: SocketAddr| {
        let mut s = format!("join = [\"{join}\"]\n");
        if let Some(k) = key {
            s.push_str(&format!("encrypt_key = \"{k}\"\n"));
        }
        s
    };
    let n1_name = format!("nuvol-1-{pid}");
    let n2_name = format!("nuvol-2-{pid}");
    let n1 = Nuvol::start(&tmp.0, &n1_name, &extra(go_a.bind), &pubkey);
    let n2 = Nuvol::start(&tmp.0, &n2_name, &extra(go_b.bind), &pubkey);
    let diag = |n: &Nuvol| format!("{} log:\n{}", n.gossip, n.log());

    // Go sees both nuvol nodes alive, with their tags
    assert!(
        wait_for(
            "go-a lists both nuvol nodes alive",
            Duration::from_secs(20),
            || { go_a.status_of(&n1_name) == "alive" && go_a.status_of(&n2_name) == "alive" }
        ),
        "{}",
        diag(&n1)
    );
    let m = go_a.member(&n1_name).expect("member");
    assert_eq!(m["tags"]["colour"], "blue", "{m}");
    assert_eq!(m["tags"]["role"], "super-node", "{m}");
    assert_eq!(m["tags"]["zone"], "z1", "{m}");

    // the API lists the Go nodes with their tags
    let go_names = [format!("go-a-{pid}"), format!("go-b-{pid}")];
    assert!(wait_for(
        "nuvol-2 lists both Go nodes alive",
        Duration::from_secs(20),
        || { go_names.iter().all(|g| n2.status_of(g) == "alive") }
    ));
    let ms = n2.members();
    let ga = ms.iter().find(|m| m["name"] == go_names[0]).expect("go-a");
    assert_eq!(ga["tags"]["lang"], "go", "{ga}");
    assert_eq!(ga["health"], "alive", "{ga}");
    // Go sends with TTL 64: 0 hops over loopback; loss once probed 4 times
    assert!(wait_for(
        "nuvol-2 has hop count and loss for go-a",
        Duration::from_secs(20),
        || {
            n2.members().iter().any(|m| {
                m["name"] == go_names[0]
                    && m["hops"] == 0
                    && m["loss"].as_f64().is_some_and(|l| l <= 0.5)
            })
        }
    ));
    assert!(
        ga["addr"]
            .as_str()
            .is_some_and(|a| a == go_a.bind.to_string()),
        "{ga}"
    );

    // a bundle installed through the API is announced to Go as tags
    let (code, body) = n1.req(
        "POST",
        "/api/v1/bundles",
        &std::fs::read(&bundle).expect("nvb"),
    );
    assert!(code == 200 || code == 201, "install: {code} {body}");
    assert!(
        wait_for(
            "go-b sees the bundle's svc: tag",
            Duration::from_secs(20),
            || {
                go_b.member(&n1_name)
                    .is_some_and(|m| m["tags"]["svc:webby"] == "_http._tcp:8080")
            }
        ),
        "{}",
        diag(&n1)
    );
    let m = go_b.member(&n1_name).expect("member");
    assert!(
        m["tags"]["services"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{m}"
    );
    // ... and lands in the other nuvol's catalog, from both tag schemes
    assert!(wait_for(
        "nuvol-2's catalog has webby",
        Duration::from_secs(10),
        || {
            let (c, b) = n2.req("GET", "/api/v1/services?type=_http._tcp&near=1", b"");
            c == 200 && b.contains("\"serf\"") && b.contains("\"cloudy\"") && b.contains(&n1_name)
        }
    ));

    // serf event → nuvol's event stream
    let stream = EventStream::open(&n1);
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("serf")
        .args([
            "event",
            &format!("-rpc-addr={}", go_b.rpc),
            "from-go",
            "payload-42",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("serf event");
    assert!(st.success());
    assert!(
        wait_for("from-go in /api/v1/events", Duration::from_secs(10), || {
            let t = stream.text();
            t.contains("event: user") && t.contains("from-go") && t.contains("payload-42")
        }),
        "stream: {}",
        stream.text()
    );
    assert!(stream.text().contains("text/event-stream"));

    // POST /api/v1/events → Go's event handler
    let (code, body) = n2.req(
        "POST",
        "/api/v1/events",
        br#"{"name": "from-nuvol", "payload": "hello", "coalesce": false}"#,
    );
    assert_eq!(code, 202, "{body}");
    assert!(wait_for(
        "Go handler ran for from-nuvol",
        Duration::from_secs(10),
        || {
            go_a.events_log().contains("from-nuvol hello")
                && go_b.events_log().contains("from-nuvol hello")
        }
    ));
    let (code, _) = n2.req("POST", "/api/v1/events", b"{\"nme\": 1}");
    assert_eq!(code, 400);

    // serf query answered by both nuvol nodes
    let out = Command::new("serf")
        .args([
            "query",
            &format!("-rpc-addr={}", go_a.rpc),
            "-format=json",
            "-timeout=3s",
            "nuvol-services",
            "",
        ])
        .output()
        .expect("serf query");
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(q["Responses"][&n1_name].is_string(), "{q}");
    assert!(q["Responses"][&n2_name].is_string(), "{q}");
    let r: serde_json::Value =
        serde_json::from_str(q["Responses"][&n1_name].as_str().unwrap_or("")).unwrap_or_default();
    assert_eq!(r[0]["name"], "webby", "{q}");

    // kill -9 nuvol-1: failed at both Go nodes and at nuvol-2 (Serf's LAN
    // timing: probe 1 s, suspicion 4 × log10(n) s, scaled up to 6×). Its
    // service is stopped first: a container would outlive a SIGKILLed agent.
    let (code, body) = n1.req("POST", "/api/v1/services/webby/stop", b"");
    assert_eq!(code, 200, "{body}");
    let stream2 = EventStream::open(&n2);
    std::thread::sleep(Duration::from_millis(300));
    n1.signal("-9");
    let t0 = Instant::now();
    assert!(wait_for(
        "nuvol-1 failed everywhere",
        Duration::from_secs(30),
        || {
            go_a.status_of(&n1_name) == "failed"
                && go_b.status_of(&n1_name) == "failed"
                && n2.status_of(&n1_name) == "failed"
        }
    ));
    eprintln!("[{tag}] kill -9 detected by all in {:?}", t0.elapsed());
    // The event reaches the stream's reader a moment after the status.
    wait_for(
        "the failed event on the stream",
        Duration::from_secs(10),
        || {
            let t = stream2.text();
            t.contains("event: failed") && t.contains(&n1_name)
        },
    );
    let t = stream2.text();
    assert!(t.contains("event: failed") && t.contains(&n1_name), "{t}");
    // every frame has an id; a client reconnecting with `since` (or
    // Last-Event-ID) gets what it missed from the recent-events ring
    let failed_id: u64 = t
        .split("\n\n")
        .find(|f| f.contains("event: failed") && f.contains(&n1_name))
        .and_then(|f| f.lines().find_map(|l| l.strip_prefix("id: ")))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id on the failed frame: {t}"));
    let replay = EventStream::open_at(&n2, &format!("/api/v1/events?since={}", failed_id - 1));
    assert!(
        wait_for("the failed event replayed", Duration::from_secs(5), || {
            replay
                .text()
                .contains(&format!("id: {failed_id}\nevent: failed"))
        }),
        "{}",
        replay.text()
    );
    assert!(
        !replay.text().contains(&format!("id: {}\n", failed_id - 1)),
        "only events after `since`: {}",
        replay.text()
    );
    let (code, _) = n2.req("GET", "/api/v1/events?since=soon", b"");
    assert_eq!(code, 400);
    // and the Community page lists it under "Recent events"
    let (code, page) = n2.req("GET", "/community", b"");
    assert_eq!(code, 200, "{page}");
    let events = page.split_once("id=events").map(|(_, e)| e).unwrap_or("");
    assert!(
        events.contains("<td>failed</td>") && events.contains(&n1_name),
        "{page}"
    );
    let last: u64 = events
        .split_once("data-last=")
        .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(last >= failed_id, "data-last={last} < {failed_id}: {page}");
    drop(replay);

    // SIGTERM nuvol-2: graceful leave
    n2.signal("-TERM");
    assert!(wait_for("nuvol-2 left", Duration::from_secs(15), || {
        go_a.status_of(&n2_name) == "left" && go_b.status_of(&n2_name) == "left"
    }));
    drop(stream);
    drop(stream2);
}

#[test]
fn discovery_with_go_serf_clear() {
    scenario("clear", None);
}

#[test]
fn discovery_with_go_serf_encrypted() {
    scenario("enc", Some("T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="));
}

/// What a Cloudy box does with its `services` tag, written for this test
/// from a reading of package-serf's `usr/share/avahi-ps/plugs/avahi-ps-serf`
/// (not its code): the same tools in the same order, with the details that
/// decide compatibility — `echo` (a trailing newline) into `bzip2 |
/// base64 -w 0`, `p` a string, blanks in `d` as `_`, `&` in TXT as a
/// blank, `m` = `<node>.<cloud>.local`, `e` = `demo` without tinc, `'`
/// read as `"`, and the decoded list walked by shell word splitting (an
/// entry with a blank would break apart, as on Cloudy). Box `cloudy1` at
/// 127.0.0.1; `serf` finds the agent through `SERF_RPC_ADDR`.
///
/// - `publish DESC TYPE PORT TXT`: add one service (replacing one with the
///   same type and port), re-set the tag
/// - `search`: every alive member's services as one JSON array, each
///   entry with the member's name as `node_id` first
const AVAHI_PS_SERF: &str = r#"
box=cloudy1 cloud=guifi ip=127.0.0.1 device=demo
unpack() { base64 -d | bunzip2 | sed "s/'/\"/g" | jq -c '.[]'; }
entries_of() { # a tag value (JSON string or null) -> one entry per line
	local v; v=$(jq -r '. // empty')
	[ -n "$v" ] && printf '%s' "$v" | unpack
}
publish() {
	local desc=${1// /_} type=$2 port=$3 txt=${4//&/ } list="" e
	for e in $(serf info -format json | jq -c '.tags.services' | entries_of); do
		case $e in *'"s":"'$type'"'*'"p":"'$port'"'*) continue ;; esac
		list="$list$e,"
	done
	list="$list{\"s\":\"$type\",\"d\":\"$desc\",\"m\":\"$box.$cloud.local\",\"i\":\"$ip\",\"p\":\"$port\",\"e\":\"$device\",\"t\":\"$txt\"}"
	serf tags -set "services=$(echo "[$list]" | bzip2 | base64 -w 0)"
}
search() {
	local out="" m name e
	for m in $(serf members -status=alive -format json | jq -c '.members[] | {name, s: .tags.services}'); do
		name=$(printf '%s' "$m" | jq -c '.name')
		for e in $(printf '%s' "$m" | jq -c '.s' | entries_of); do
			out="$out${out:+,}{\"node_id\":$name,${e#\{}"
		done
	done
	echo "[$out]"
}
"$@"
"#;

fn avahi_ps_serf(rpc: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(AVAHI_PS_SERF)
        .arg("avahi-ps-serf")
        .args(args)
        .env("SERF_RPC_ADDR", rpc)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "avahi-ps-serf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cloudy_services_tag_both_ways() {
    let pid = std::process::id();
    let tmp = TmpDir(std::env::temp_dir().join(format!("nuvol-disc-cloudy-{pid}")));
    let _ = std::fs::remove_dir_all(&tmp.0);
    std::fs::create_dir_all(&tmp.0).expect("tmp");
    let (bundle, pubkey) = make_bundle(&tmp.0);

    // Cloudy's serf, as init.d/serf starts it (port 5000 there; a free
    // port here so parallel runs do not collide)
    let port = free_port();
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    let rpc = format!("127.0.0.1:{}", free_port());
    let go_name = format!("5f2b9c0e4d1a7e3b8c6d0f1a2b3c4d5e-{pid}-cloudy1-127.0.0.1:{port}");
    let dir = tmp.0.join("cloudy1");
    std::fs::create_dir_all(&dir).expect("dir");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let child = Command::new("serf")
        .args(["agent", "-protocol", "4"])
        .arg(format!("-node={go_name}"))
        .arg(format!("-bind={bind}"))
        .arg(format!("-rpc-addr={rpc}"))
        .arg("-profile=wan")
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("serf is installed (tests/apt-packages.txt)");
    let go = GoSerf::adopt(child, rpc.clone(), bind, dir.join("agent.log"));
    assert!(wait_for("Cloudy serf up", Duration::from_secs(10), || go
        .members()
        .is_some()));
    // what serf.service and syncthing.service publish through avahi-ps
    avahi_ps_serf(
        &rpc,
        &[
            "publish",
            "SERF instance running",
            "serf",
            &port.to_string(),
            "",
        ],
    );
    avahi_ps_serf(
        &rpc,
        &[
            "publish",
            "Syncthing instance running",
            "syncthing",
            "22000",
            "node_id=ABC-123",
        ],
    );
    let mine = go.member(&go_name).expect("self");
    assert!(mine["tags"]["services"].is_string(), "{mine}");

    let n_name = format!("nuvol-c-{pid}");
    let n = Nuvol::start_with(
        &tmp.0,
        &n_name,
        "hostname = \"cbox\"\n",
        &format!("profile = \"wan\"\njoin = [\"{bind}\"]\n"),
        &pubkey,
    );
    assert!(
        wait_for(
            "nuvol sees Cloudy's services",
            Duration::from_secs(30),
            || {
                let (c, b) = n.req("GET", "/api/v1/services", b"");
                c == 200
                    && b.contains("SERF_instance_running")
                    && b.contains("Syncthing_instance_running")
            }
        ),
        "{}",
        n.log()
    );
    let (_, body) = n.req("GET", "/api/v1/services", b"");
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
    let find = |name: &str| {
        all.iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let serf = find("SERF_instance_running");
    assert_eq!(serf["source"], "cloudy", "{serf}");
    assert_eq!(serf["service_type"], "_serf._tcp", "{serf}");
    assert_eq!(serf["port"], port, "{serf}");
    assert_eq!(serf["node"], go_name.as_str(), "{serf}");
    assert_eq!(serf["addr"], "127.0.0.1", "{serf}");
    assert_eq!(serf["txt"]["microcloud"], "demo", "{serf}");
    let sync = find("Syncthing_instance_running");
    assert_eq!(sync["service_type"], "_syncthing._tcp", "{sync}");
    assert_eq!(sync["port"], 22000, "{sync}");
    assert_eq!(sync["txt"]["txt"], "node_id=ABC-123", "{sync}");

    // nuvol's bundle, read by Cloudy's search from the Go agent
    let (code, body) = n.req(
        "POST",
        "/api/v1/bundles",
        &std::fs::read(&bundle).expect("nvb"),
    );
    assert!(code == 200 || code == 201, "install: {code} {body}");
    let mut found = serde_json::Value::Null;
    assert!(
        wait_for(
            "avahi-ps search lists webby",
            Duration::from_secs(30),
            || {
                let out = avahi_ps_serf(&rpc, &["search"]);
                let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
                // the bundle share comes first, webby once its service runs
                match list
                    .into_iter()
                    .find(|s| s["node_id"] == n_name.as_str() && s["s"] == "http")
                {
                    Some(s) => {
                        found = s;
                        true
                    }
                    None => false,
                }
            }
        ),
        "{}",
        n.log()
    );
    let want = serde_json::json!({
        "node_id": n_name, "s": "http", "d": "webby_on_cbox", "m": "cbox.guifi.local",
        "i": "127.0.0.1", "p": "8080", "e": "demo", "t": ""
    });
    assert_eq!(found, want);
    // the Cloudy node's own two services are still listed next to nuvol's,
    // and so is nuvol's bundle share (last: the first to go when the tag is
    // full), so Cloudy users see where bundles can be fetched
    let out = avahi_ps_serf(&rpc, &["search"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("search output is JSON");
    let of = |node: &str| -> Vec<String> {
        list.iter()
            .filter(|s| s["node_id"] == node)
            .map(|s| s["s"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(of(&go_name), ["serf", "syncthing"], "{out}");
    assert_eq!(of(&n_name), ["http", "nuvol-bundles"], "{out}");
    assert_eq!(list.len(), 4, "{out}");
}
