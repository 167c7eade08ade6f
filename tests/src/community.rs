//! A community of booted boxes in two zones (`qemu/community.sh`): start it
//! detached, talk to each box's API over the testbed's routed addresses,
//! kill and restart boxes, stop everything on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{image, repo, Scratch};

pub struct Community {
    pub dir: Scratch,
    pub net: u8,
    pub token: String,
    pub key: String,
    pub boxes: Vec<Value>,
    /// seconds from the first QEMU start to every box ready
    pub boot_s: f64,
    pub started: Instant,
}

fn script() -> PathBuf {
    repo().join("qemu/community.sh")
}

impl Community {
    /// Boot `n` boxes (`extra`: more options of `community.sh up`).
    pub fn up(tag: &str, n: usize, net: u8, extra: &[&str]) -> Community {
        let dir = Scratch::new(tag);
        let started = Instant::now();
        let st = Command::new(script())
            .args([
                "up",
                "--detach",
                "--boxes",
                &n.to_string(),
                "--net",
                &net.to_string(),
            ])
            .args(["--mem", "192", "--dir"])
            .arg(&dir.0)
            .args(extra)
            .arg(image())
            .status()
            .expect("run qemu/community.sh");
        let json: Value = std::fs::read(dir.0.join("community.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let c = Community {
            net,
            token: json["token"].as_str().unwrap_or("").to_string(),
            key: json["encrypt_key"].as_str().unwrap_or("").to_string(),
            boxes: json["boxes"].as_array().cloned().unwrap_or_default(),
            boot_s: json["boot_s"].as_f64().unwrap_or(0.0),
            dir,
            started,
        };
        if !st.success() {
            for i in 1..=n {
                eprintln!("--- box{i} console ---\n{}", crate::tail(&c.console(i)));
            }
            panic!("qemu/community.sh up failed ({st})");
        }
        c
    }

    pub fn ip(&self, n: usize) -> String {
        self.boxes[n - 1]["ip"].as_str().unwrap_or("").to_string()
    }

    pub fn console(&self, n: usize) -> String {
        std::fs::read(self.dir.0.join(format!("box{n}/serial.log")))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn cmd(&self, verb: &str, args: &[&str]) -> std::process::ExitStatus {
        Command::new(script())
            .args([verb, "--dir"])
            .arg(&self.dir.0)
            .args(args)
            .status()
            .expect("run qemu/community.sh")
    }

    /// Power box `n` off hard.
    pub fn kill(&self, n: usize) {
        assert!(self.cmd("kill", &[&n.to_string()]).success());
    }

    /// Boot box `n` again.
    pub fn start(&self, n: usize) {
        assert!(self.cmd("start", &[&n.to_string()]).success());
    }

    /// Run a command in namespace `ns` (r, a or b) of the testbed.
    pub fn run_in(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new(script());
        c.args(["run", "--dir"]).arg(&self.dir.0).arg(ns).args(args);
        c
    }

    /// One HTTP request to box `n`'s API with the community's token:
    /// (status, body).
    pub fn http(
        &self,
        n: usize,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        http(&self.ip(n), method, path, &self.token, body)
    }

    /// GET `path` on box `n` as JSON (`Null` on any failure).
    pub fn get(&self, n: usize, path: &str) -> Value {
        match self.http(n, "GET", path, b"") {
            Ok((200, b)) => serde_json::from_str(&b).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Poll `f` until `Some`, or panic naming `what` with every console's
    /// tail.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() >= deadline {
                for i in 1..=self.boxes.len() {
                    eprintln!("--- box{i} console ---\n{}", crate::tail(&self.console(i)));
                }
                panic!("{what}: not within {timeout:?}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Community {
    fn drop(&mut self) {
        let _ = self.cmd("down", &[]);
    }
}

/// A plain HTTP/1.1 request to `ip:80` with a bearer token; 30 s budget.
pub fn http(
    ip: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let addr: SocketAddr = format!("{ip}:80")
        .parse()
        .map_err(|e| std::io::Error::other(format!("{ip}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {ip}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.take(16 << 20).read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = match text.split_once("\r\n\r\n") {
        Some((h, b))
            if h.to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            crate::rest::dechunk(b)
        }
        Some((_, b)) => b.to_string(),
        None => String::new(),
    };
    Ok((code, body))
}
