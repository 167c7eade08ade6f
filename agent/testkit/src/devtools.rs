//! A headless Chromium kept open and driven over its DevTools protocol on a
//! pipe (`--remote-debugging-pipe`: commands on fd 3, replies and events on
//! fd 4, each message ending in a NUL byte), here two FIFOs. For what a
//! one-shot run cannot do: keep a page open while the world changes,
//! evaluate JavaScript in it (layout sizes, a marker that a reload drops).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Error, Result, HEADLESS};

/// How long one DevTools command may take.
pub const REPLY_WITHIN: Duration = Duration::from_secs(20);

/// A browser with one page (tab) attached; killed on drop.
pub struct Browser {
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

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Browser {
    /// Start Chromium with a `width`×`height` window, its profile, FIFOs and
    /// log (`chromium.log`) in `dir`, and open a blank page.
    pub fn start(dir: &Path, width: u32, height: u32) -> Result<Browser> {
        let (cmd_fifo, out_fifo) = (dir.join("devtools.in"), dir.join("devtools.out"));
        for f in [&cmd_fifo, &out_fifo] {
            let st = Command::new("mkfifo").arg(f).status().map_err(io(f))?;
            if !st.success() {
                return Err(Error::DevTools(format!("mkfifo {} failed", f.display())));
            }
        }
        let script = format!(
            "exec {} {} --window-size={width},{height} --user-data-dir={} \
             --remote-debugging-pipe 3<{} 4>{}",
            crate::program(),
            HEADLESS.join(" "),
            dir.join("profile").display(),
            cmd_fifo.display(),
            out_fifo.display()
        );
        let log = dir.join("chromium.log");
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(io(&log))?)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "bash".into(),
                source,
            })?;
        // same order as the shell opens them, or both sides wait forever
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&cmd_fifo)
            .map_err(io(&cmd_fifo))?;
        let from_file = std::fs::File::open(&out_fifo).map_err(io(&out_fifo))?;
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
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"]
            .as_str()
            .ok_or_else(|| Error::DevTools(format!("no targetId in {target}")))?
            .to_string();
        let att = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        b.session = att["sessionId"]
            .as_str()
            .ok_or_else(|| Error::DevTools(format!("no sessionId in {att}")))?
            .to_string();
        Ok(b)
    }

    /// Send one command (to the page's session if `session`) and wait for
    /// its reply; events in between are skipped.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .map_err(|e| Error::DevTools(format!("{method}: write: {e}")))?;
        let deadline = Instant::now() + REPLY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.from.recv_timeout(left).map_err(|_| {
                Error::DevTools(format!("no reply to {method} within {REPLY_WITHIN:?}"))
            })?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(Error::DevTools(format!("{method}: {e}")));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// A command to the page.
    pub fn page_call(&mut self, method: &str, params: Value) -> Result<Value> {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    /// Load `url` in the page (returns once navigation started).
    pub fn navigate(&mut self, url: &str) -> Result<()> {
        self.page_call("Page.navigate", json!({"url": url}))
            .map(|_| ())
    }

    /// The value of a JavaScript expression in the page (`null` when it
    /// throws or has no JSON value).
    pub fn eval(&mut self, expr: &str) -> Result<Value> {
        let r = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )?;
        Ok(r["result"]["value"].clone())
    }

    /// Load a panel page (`url`, landing on `path`: a login redirect may come
    /// first) and wait until it is complete; then how wide the document is
    /// (`scrollWidth`, px) and which `.wrap` boxes (tables) need their own
    /// scroll bar, by table id or first words.
    pub fn page_width(&mut self, url: &str, path: &str, within: Duration) -> Result<(u64, Value)> {
        self.navigate(url)?;
        let want = json!(path);
        let loaded = wait_until(within, || {
            self.eval("document.readyState === 'complete' && !!document.querySelector('main')")
                .is_ok_and(|v| v == json!(true))
                && self.eval("location.pathname").is_ok_and(|v| v == want)
        });
        if !loaded {
            return Err(Error::DevTools(format!(
                "{path} did not load within {within:?}"
            )));
        }
        let width = self
            .eval("document.documentElement.scrollWidth")?
            .as_u64()
            .unwrap_or(u64::MAX);
        let cut = self.eval(
            "Array.from(document.querySelectorAll('.wrap'))\
             .filter(e => e.scrollWidth > e.clientWidth)\
             .map(e => (e.querySelector('table') || e).id || e.innerText.slice(0, 40))",
        )?;
        Ok((width, cut))
    }

    /// The text of the element with `id` as shown (`innerText`), empty if
    /// there is none.
    pub fn text_of(&mut self, id: &str) -> Result<String> {
        let id = serde_json::to_string(id).unwrap_or_default();
        Ok(self
            .eval(&format!(
                "(document.getElementById({id}) || {{innerText: ''}}).innerText"
            ))?
            .as_str()
            .unwrap_or("")
            .to_string())
    }
}

/// Poll `f` every 200 ms until it holds; `false` after `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
