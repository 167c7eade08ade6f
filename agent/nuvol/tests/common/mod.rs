//! A real `nuvol agent` process for integration tests (its console goes to
//! a file), and a tiny HTTP client.
#![allow(dead_code)]

pub mod attack;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub https_port: Option<u16>,
    pub dir: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    /// Header lines, names lower-cased.
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Agent {
    /// A clean scratch directory for one agent (removed when it drops).
    pub fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nuvol-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn start(tag: &str, config: &str, https: bool) -> Agent {
        Agent::start_in(Agent::fresh_dir(tag), config, https)
    }

    /// Start with `dir/nuvol.toml` = `config`, state in `dir/state`.
    pub fn start_in(dir: PathBuf, config: &str, https: bool) -> Agent {
        Agent::start_in_env(dir, config, https, &[])
    }

    /// [`Agent::start_in`] with extra environment variables for the agent.
    pub fn start_in_env(dir: PathBuf, config: &str, https: bool, env: &[(&str, &str)]) -> Agent {
        Agent::start_full(dir, config, https, env, None)
    }

    /// [`Agent::start_in`] as on the box: started with the kernel's default
    /// soft fd limit of 1024 (the hard limit stays the test's), the network
    /// left alone.
    pub fn start_box_like(dir: PathBuf, config: &str) -> Agent {
        Agent::start_full(dir, config, false, &[], Some(1024))
    }

    fn start_full(
        dir: PathBuf,
        config: &str,
        https: bool,
        env: &[(&str, &str)],
        nofile: Option<libc::rlim_t>,
    ) -> Agent {
        std::fs::write(dir.join("nuvol.toml"), config).unwrap();
        let port = free_port();
        let https_port = https.then(free_port);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nuvol"));
        cmd.args(["agent", "--config"])
            .arg(dir.join("nuvol.toml"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NUVOL_RUN_DIR", dir.join("run"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("console")).unwrap());
        cmd.envs(env.iter().copied());
        if let Some(n) = nofile {
            cmd.args(["--network", "off"]);
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let mut l = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
                        l.rlim_cur = n.min(l.rlim_max);
                        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
                    }
                    Ok(())
                });
            }
        }
        if let Some(p) = https_port {
            cmd.args(["--https-listen", &format!("127.0.0.1:{p}")]);
        }
        let child = cmd.spawn().unwrap();
        let a = Agent {
            child,
            port,
            https_port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !a.console().contains("nuvol: ready") {
            assert!(
                Instant::now() < deadline,
                "agent not ready: {}",
                a.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        a
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// A raw request; `headers` are full lines without CRLF.
    pub fn raw(&self, method: &str, path: &str, headers: &[String], body: &[u8]) -> Reply {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(req.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Reply {
            code,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    /// An unauthenticated request: (code, lower-cased head, body).
    pub fn req(&self, method: &str, path: &str) -> (u16, String, String) {
        self.send(method, path, None, b"")
    }

    /// A request with the admin token: (code, lower-cased head, body).
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
        let headers: Vec<String> = token
            .map(|t| format!("Authorization: Bearer {t}"))
            .into_iter()
            .collect();
        let r = self.raw(method, path, &headers, body);
        (r.code, r.head.to_ascii_lowercase(), r.body)
    }

    /// Only the status code of a request (for endless streams).
    pub fn status_only(&self, method: &str, path: &str, headers: &[String]) -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 200 {
            if s.read(&mut b).unwrap_or(0) == 0 {
                break;
            }
            line.push(b[0]);
        }
        String::from_utf8_lossy(&line)
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, &[], b"")
    }

    pub fn bearer(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        self.raw(
            method,
            path,
            &[format!("Authorization: Bearer {}", self.token())],
            body,
        )
    }

    /// Log in with the admin token: (session cookie, CSRF token).
    pub fn login(&self) -> (String, String) {
        let body = format!("secret={}&next=%2Fsettings", self.token());
        let r = self.raw(
            "POST",
            "/login",
            &["Content-Type: application/x-www-form-urlencoded".into()],
            body.as_bytes(),
        );
        assert_eq!(r.code, 303, "{r:?}");
        let cookie = r.header("set-cookie").unwrap();
        let session = cookie.split(';').next().unwrap().to_string();
        let s = self.raw(
            "GET",
            "/api/v1/session",
            &[format!("Cookie: {session}")],
            b"",
        );
        let csrf = s.json()["csrf"].as_str().unwrap().to_string();
        (session, csrf)
    }
}

impl Agent {
    /// Stop the agent (SIGKILL) but keep its directory: for restarts with
    /// [`Agent::start_in`].
    pub fn stop_keep(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Drop then finds no directory to remove.
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The agent's side of a failed test.
            eprintln!(
                "--- console of the agent in {}:\n{}",
                self.dir.display(),
                self.console()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run `nuvol ARGS…`, which must succeed.
pub fn nuvol_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nuvol {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key pair `dir/NAME.pub`, `dir/NAME.sec`; returns the base64 line
/// (what `trusted_keys` takes).
pub fn keygen(dir: &Path, name: &str) -> String {
    nuvol_ok(&["bundle", "keygen", "-o", dir.join(name).to_str().unwrap()]);
    std::fs::read_to_string(dir.join(format!("{name}.pub")))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string()
}

/// Bundle `name` `version` (publisher "Publisher KEY", one file
/// `/bin/svc`), signed with `dir/KEY.sec`, built into `dir/NAME-VERSION.nvb`.
pub fn signed_bundle(dir: &Path, key: &str, name: &str, version: &str) -> PathBuf {
    signed_bundle_padded(dir, key, name, version, 0)
}

/// [`signed_bundle`] with a file `/pad` of `pad` random (incompressible)
/// bytes, so the bundle is at least that big.
pub fn signed_bundle_padded(
    dir: &Path,
    key: &str,
    name: &str,
    version: &str,
    pad: usize,
) -> PathBuf {
    let root = dir.join(format!("root-{name}-{version}"));
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/svc"), format!("{name} {version}")).unwrap();
    if pad > 0 {
        let mut bytes = vec![0u8; pad];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut bytes)
            .unwrap();
        std::fs::write(root.join("pad"), bytes).unwrap();
    }
    let m = dir.join(format!("{name}-{version}.toml"));
    std::fs::write(
        &m,
        format!(
            "name = \"{name}\"\nversion = \"{version}\"\npublisher = \"Publisher {key}\"\n\
             [run]\ncommand = [\"/bin/svc\"]\n"
        ),
    )
    .unwrap();
    let out = dir.join(format!("{name}-{version}.nvb"));
    let sec = dir.join(format!("{key}.sec"));
    nuvol_ok(&[
        "bundle",
        "build",
        "-m",
        m.to_str().unwrap(),
        "-r",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-k",
        sec.to_str().unwrap(),
    ]);
    out
}

/// A busybox root filesystem (every applet linked) in `root`.
pub fn busybox_rootfs(root: &Path) {
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
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
}

/// A bundle `name` `version` running `/bin/sh -c script` on busybox,
/// signed with `key`, built into `dir/NAME-VERSION.nvb`.
pub fn busybox_bundle(
    dir: &Path,
    key: &nuvol_bundle::SecretKey,
    name: &str,
    version: &str,
    script: &str,
) -> PathBuf {
    busybox_bundle_with(dir, key, name, version, script, "")
}

/// [`busybox_bundle`] with `more` appended to the manifest (e.g.
/// `[[announce]]` tables).
pub fn busybox_bundle_with(
    dir: &Path,
    key: &nuvol_bundle::SecretKey,
    name: &str,
    version: &str,
    script: &str,
    more: &str,
) -> PathBuf {
    let root = dir.join(format!("rootfs-{name}"));
    if !root.exists() {
        busybox_rootfs(&root);
    }
    std::fs::write(root.join("etc/version"), format!("{name} {version}")).unwrap();
    let manifest = format!(
        "name = \"{name}\"\nversion = \"{version}\"\npublisher = \"test\"\n\
         [run]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n\
         [resources]\nmemory_mb = 64\npids = 32\n{more}"
    );
    let mf = dir.join(format!("manifest-{name}-{version}.toml"));
    std::fs::write(&mf, manifest).unwrap();
    let out = dir.join(format!("{name}-{version}.nvb"));
    nuvol_bundle::build::build(
        &mf,
        &root,
        nuvol_bundle::ImageType::Squashfs,
        &out,
        Some(key),
    )
    .unwrap();
    out
}
