//! The Community page follows the cluster live: real headless Chromium
//! (Debian `chromium`), driven over its DevTools pipe
//! (`--remote-debugging-pipe`, two FIFOs), keeps the page open while a Go
//! `serf agent` joins the nuvol agent and is then killed. The members and
//! "Recent events" sections change without a reload: `/panel.js` follows
//! `/api/v1/events` and swaps the sections in.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_port, Agent};
use serde_json::{json, Value};

/// Chromium with its DevTools protocol on two FIFOs: commands go to fd 3,
/// replies and events come from fd 4, each message ending in a NUL byte.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        let (cmd_fifo, out_fifo) = (dir.join("devtools.in"), dir.join("devtools.out"));
        for f in [&cmd_fifo, &out_fifo] {
            let st = Command::new("mkfifo").arg(f).status().expect("mkfifo");
            assert!(st.success());
        }
        let script = format!(
            "exec chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --disable-background-networking --disable-component-update \
             --disable-sync --window-size=1280,900 --user-data-dir={} \
             --remote-debugging-pipe 3<{} 4>{}",
            dir.join("profile").display(),
            cmd_fifo.display(),
            out_fifo.display()
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("chromium.log")).expect("log"))
            .spawn()
            .expect("chromium (tests/apt-packages.txt)");
        // same order as the shell opens them, or both sides wait forever
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&cmd_fifo)
            .expect("open the command fifo");
        let from_file = std::fs::File::open(&out_fifo).expect("open the reply fifo");
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut msg = Vec::new();
            while matches!(r.read_until(0, &mut msg), Ok(n) if n > 0) {
                if msg.last() == Some(&0) {
                    msg.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                msg.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
        };
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let att = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = att["sessionId"].as_str().expect("sessionId").to_string();
        b
    }

    /// Send one command and wait for its reply (events in between are
    /// skipped); panics on a protocol error.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reply to {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn navigate(&mut self, url: &str) {
        let s = self.session.clone();
        self.call(Some(&s), "Page.navigate", json!({"url": url}));
    }

    /// The value of a JavaScript expression in the page (null on errors).
    fn eval(&mut self, expr: &str) -> Value {
        let s = self.session.clone();
        let r = self.call(
            Some(&s),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn text_of(&mut self, id: &str) -> String {
        self.eval(&format!(
            "(document.getElementById('{id}') || {{innerText: ''}}).innerText"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn go_serf(dir: &Path, name: &str, join: SocketAddr) -> Child {
    let bind = SocketAddr::from(([127, 0, 0, 1], free_port()));
    Command::new("serf")
        .args([
            "agent",
            &format!("-node={name}"),
            &format!("-bind={bind}"),
            &format!("-rpc-addr=127.0.0.1:{}", free_port()),
            &format!("-join={join}"),
            "-tag",
            "role=super-node",
            "-tag",
            "zone=north",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("log"))
        .spawn()
        .expect("serf (tests/apt-packages.txt)")
}

#[test]
fn chromium_community_page_follows_membership_events_live() {
    let gossip = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = Agent::start(
        "live-panel",
        &format!(
            "[debug]\ntest_hooks = true\n\n[discovery]\nbind = \"127.0.0.1\"\nport = {}\n\
             node_name = \"live-box\"\nmdns = false\n",
            gossip.port()
        ),
        false,
    );
    let mut b = Browser::start(&a.dir);
    b.navigate(&format!(
        "{}/api/v1/debug/login?token={}&next=%2Fcommunity",
        a.url(),
        a.token()
    ));
    wait_for("the Community page", Duration::from_secs(15), || {
        b.text_of("members").contains("live-box")
    });
    // a reload would drop this marker: the page must change in place
    b.eval("window.nuvolMarker = 42");
    assert!(!b.text_of("members").contains("go-live"));

    let mut serf = go_serf(&a.dir, "go-live", gossip);
    let t0 = Instant::now();
    wait_for(
        "go-live appears without a reload",
        Duration::from_secs(20),
        || {
            let m = b.text_of("members");
            m.contains("go-live") && m.contains("north")
        },
    );
    eprintln!("join shown on the open page after {:?}", t0.elapsed());
    assert_eq!(b.eval("window.nuvolMarker"), json!(42), "the page reloaded");
    assert!(b.text_of("events").contains("go-live"));

    let _ = serf.kill();
    let _ = serf.wait();
    let t0 = Instant::now();
    wait_for(
        "go-live failed on the open page",
        Duration::from_secs(30),
        || {
            let ev = b.text_of("events");
            ev.lines()
                .any(|l| l.contains("failed") && l.contains("go-live"))
                && b.text_of("members")
                    .lines()
                    .any(|l| l.contains("go-live") && l.contains("failed"))
        },
    );
    eprintln!("failure shown on the open page after {:?}", t0.elapsed());
    assert_eq!(b.eval("window.nuvolMarker"), json!(42), "the page reloaded");
}
