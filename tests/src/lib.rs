//! A small harness for booting nuvol images in QEMU from tests: start a VM
//! through `qemu/run.sh`, watch its serial console, talk HTTP to the panel
//! through the forwarded port, and drive QMP (power button).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The image under test: `$NUVOL_IMAGE` or `out/nuvol-x86_64.img`.
pub fn image() -> PathBuf {
    let p = std::env::var_os("NUVOL_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out/nuvol-x86_64.img"));
    assert!(
        p.exists(),
        "no image at {} — run `make image` (or `make test`)",
        p.display()
    );
    p
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);
impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("nuvol-e2e-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copy the image and grow the copy to `mib` MiB (a "bigger USB stick").
pub fn disk_copy(dir: &Path, mib: u64) -> PathBuf {
    let d = dir.join("disk.img");
    fs::copy(image(), &d).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    d
}

/// Byte offset of the boot partition (GPT partition 1) in a disk image.
fn boot_offset(disk: &Path) -> u64 {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
        * 512
}

/// Replace `nuvol.toml` on the image's boot partition (as a user would from
/// a laptop after flashing).
pub fn write_config(disk: &Path, text: &str) {
    let src = disk.with_extension("nuvol.toml");
    fs::write(&src, text).unwrap();
    let target = format!("{}@@{}", disk.display(), boot_offset(disk));
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-i", &target])
        .arg(&src)
        .arg("::nuvol.toml")
        .status()
        .unwrap();
    assert!(st.success(), "mcopy nuvol.toml into the image");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    pub qmp: PathBuf,
    pub port: u16,
    pub started: Instant,
}

impl Vm {
    pub fn boot(disk: &Path, firmware: &str, dir: &Path) -> Vm {
        Vm::boot_with(disk, firmware, dir, None)
    }

    /// [`Vm::boot`], also forwarding host port `https_port` to the guest's
    /// HTTPS panel (`qemu/run.sh --https-port`).
    pub fn boot_with(disk: &Path, firmware: &str, dir: &Path, https_port: Option<u16>) -> Vm {
        let port = free_port();
        let serial = dir.join(format!("serial-{port}.log"));
        let qmp = dir.join("qmp.sock");
        let _ = fs::remove_file(&qmp);
        let mut args: Vec<std::ffi::OsString> = vec![
            "--firmware".into(),
            firmware.into(),
            "--port".into(),
            port.to_string().into(),
            "--serial".into(),
            serial.clone().into(),
            "--qmp".into(),
            qmp.clone().into(),
        ];
        if firmware == "uefi" {
            // The variable store persists across boots of this disk, like NVRAM.
            let vars = dir.join("ovmf-vars.fd");
            if !vars.exists() {
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
            }
            args.extend(["--vars".into(), vars.into()]);
        }
        if let Some(p) = https_port {
            args.extend(["--https-port".into(), p.to_string().into()]);
        }
        args.push(disk.into());
        let mut cmd = Command::new(repo().join("qemu/run.sh"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = cmd.spawn().expect("start qemu/run.sh");
        Vm {
            child,
            serial,
            qmp,
            port,
            started: Instant::now(),
        }
    }

    pub fn console(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Wait until the console shows `needle` `count` times in all; panics
    /// with the console's tail on timeout.
    pub fn wait_console(&mut self, needle: &str, count: usize, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.console();
            if c.matches(needle).count() >= count {
                return self.started.elapsed();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "qemu exited ({st}) before {needle:?} appeared; console:\n{}",
                    tail(&c)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {needle:?} (x{count}) on the console after {timeout:?}; console:\n{}",
                    tail(&c)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One HTTP request to the guest's panel; returns (status, body).
    pub fn http(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        http_auth(self.port, method, path, None)
    }

    /// The admin token the agent printed on the console (the last one shown).
    pub fn admin_token(&self) -> Option<String> {
        let c = self.console();
        let line = c
            .lines()
            .rev()
            .find(|l| l.contains("nuvol: admin token: "))?;
        let rest = &line[line.find("nuvol: admin token: ")? + "nuvol: admin token: ".len()..];
        rest.split_whitespace().next().map(str::to_string)
    }

    /// One HTTP request with the admin token from the console.
    pub fn http_admin(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        let token = self
            .admin_token()
            .ok_or_else(|| std::io::Error::other("no admin token on the console"))?;
        http_auth(self.port, method, path, Some(&token))
    }

    /// Poll until a GET returns 200, or panic after `timeout`.
    pub fn wait_http(&mut self, path: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, body)) = self.http("GET", path) {
                return body;
            }
            if Instant::now() >= deadline {
                panic!(
                    "GET {path} never answered 200 within {timeout:?}; console:\n{}",
                    tail(&self.console())
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Send one QMP command (after the capabilities handshake).
    pub fn qmp(&self, command: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match UnixStream::connect(&self.qmp) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("qmp connect: {e}"),
            }
        };
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).unwrap(); // greeting
        writeln!(w, r#"{{"execute":"qmp_capabilities"}}"#).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        writeln!(w, r#"{{"execute":"{command}"}}"#).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(
            line.contains("return") || line.contains("event"),
            "qmp {command}: {line}"
        );
    }

    /// Wait for QEMU to exit (after a guest poweroff).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "qemu still running after {timeout:?}; console:\n{}",
                    tail(&self.console())
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Minimal HTTP/1.1 client (Connection: close).
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_auth(port, method, path, None)
}

/// [`http`] with an optional `Authorization: Bearer` token.
pub fn http_auth(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let (status, text) = http_full(port, method, path, token)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The status and the whole response text, headers included.
pub fn http_full(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: nuvol\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    Ok((status, text))
}
