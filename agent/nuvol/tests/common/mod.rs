//! A real `nuvol agent` process for integration tests: start it on a free
//! loopback port with a given nuvol.toml, talk HTTP to it, kill it on drop.
#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Agent {
    /// A clean scratch directory for one agent (removed when it drops).
    pub fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nuvol-agent-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn start(tag: &str, config: &str) -> Agent {
        Agent::start_in(Agent::fresh_dir(tag), config)
    }

    /// Start with `dir/nuvol.toml` = `config`, state in `dir/state`.
    pub fn start_in(dir: PathBuf, config: &str) -> Agent {
        std::fs::write(dir.join("nuvol.toml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_nuvol"))
            .args(["agent", "--config"])
            .arg(dir.join("nuvol.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NUVOL_RUN_DIR", dir.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let a = Agent { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "agent did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    /// Everything the agent wrote to stderr (its console); call after it exited.
    pub fn console(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        err
    }

    /// An unauthenticated request.
    pub fn req(&self, method: &str, path: &str) -> (u16, String, String) {
        self.send(method, path, None, b"")
    }

    /// The admin token the agent made on first start.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A request with the admin token.
    pub fn areq(&self, method: &str, path: &str, body: &[u8]) -> (u16, String, String) {
        self.send(method, path, Some(&self.token()), body)
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
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
        (code, head.to_ascii_lowercase(), body.to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
