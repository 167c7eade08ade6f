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

pub mod arm;
pub mod community;
pub mod etcd;
pub mod host_http;
pub mod rest;
pub mod syncthing;
pub mod tahoe;

/// The repository root (this crate lives in `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The image under test: `$NUVOL_IMAGE` or `out/nuvol-x86_64.img`.
pub fn image() -> PathBuf {
    image_from("NUVOL_IMAGE", "out/nuvol-x86_64.img", "make image")
}

/// The arm64 image: `$NUVOL_IMAGE_ARM64` or `out/nuvol-arm64.img`.
pub fn image_arm64() -> PathBuf {
    image_from(
        "NUVOL_IMAGE_ARM64",
        "out/nuvol-arm64.img",
        "make image ARCH=arm64",
    )
}

/// The armv7 image: `$NUVOL_IMAGE_ARMV7` or `out/nuvol-armv7.img`.
pub fn image_armv7() -> PathBuf {
    image_from(
        "NUVOL_IMAGE_ARMV7",
        "out/nuvol-armv7.img",
        "make image ARCH=armv7",
    )
}

/// `$var`, else `default` in the repository; it must exist (`make` builds it).
fn image_from(var: &str, default: &str, make: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    assert!(
        p.exists(),
        "no image at {} — run `{make}` (or `make test`)",
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
    disk_copy_of(&image(), dir, mib)
}

/// [`disk_copy`] of another image (e.g. [`image_arm64`]).
pub fn disk_copy_of(image: &Path, dir: &Path, mib: u64) -> PathBuf {
    let d = dir.join("disk.img");
    fs::copy(image, &d).unwrap();
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

/// How to boot a VM beyond the defaults of [`Vm::boot`].
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Forward a host port to the guest's HTTPS panel (443).
    pub https: bool,
    /// Guest TCP ports (services' published ports) to forward from free
    /// host ports; [`Vm::fwd`] tells which.
    pub forwards: Vec<u16>,
    /// Be able to type on the serial console ([`Vm::type_console`]); the
    /// console is still logged to [`Vm::serial`].
    pub serial_input: bool,
    /// The image's architecture (`qemu/run.sh --arch`): `None` is x86_64;
    /// `Some("arm64")` boots `qemu-system-aarch64 -M virt` with edk2,
    /// `Some("armv7")` `qemu-system-arm -M virt` with edk2's 32-bit build.
    pub arch: Option<&'static str>,
}

pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    pub qmp: PathBuf,
    pub port: u16,
    pub https_port: Option<u16>,
    pub forwards: Vec<(u16, u16)>,
    pub started: Instant,
    console_in: Option<UnixStream>,
}

impl Vm {
    pub fn boot(disk: &Path, firmware: &str, dir: &Path) -> Vm {
        Vm::boot_with(disk, firmware, dir, None)
    }

    /// [`Vm::boot`], also forwarding host port `https_port` to the guest's
    /// HTTPS panel (`qemu/run.sh --https-port`).
    pub fn boot_with(disk: &Path, firmware: &str, dir: &Path, https_port: Option<u16>) -> Vm {
        Vm::boot_full(disk, firmware, dir, https_port, &[], &[])
    }

    /// [`Vm::boot`] with [`BootOptions`].
    pub fn boot_opts(disk: &Path, firmware: &str, dir: &Path, opts: &BootOptions) -> Vm {
        Vm::boot_opts_args(disk, firmware, dir, opts, &[])
    }

    /// [`Vm::boot_opts`] with more `qemu/run.sh` options, e.g. `--mem 256`
    /// or `--drive other.img` (a second disk the guest names first).
    pub fn boot_opts_args(
        disk: &Path,
        firmware: &str,
        dir: &Path,
        opts: &BootOptions,
        run_args: &[&std::ffi::OsStr],
    ) -> Vm {
        let https = opts.https.then(free_port);
        let fwd: Vec<(u16, u16)> = opts.forwards.iter().map(|g| (free_port(), *g)).collect();
        let mut run_args = run_args.to_vec();
        if let Some(a) = opts.arch {
            run_args.extend([std::ffi::OsStr::new("--arch"), std::ffi::OsStr::new(a)]);
        }
        let run_args = &run_args[..];
        if !opts.serial_input {
            return Vm::boot_full(disk, firmware, dir, https, &fwd, run_args);
        }
        let sock = dir.join("serial.sock");
        let _ = fs::remove_file(&sock);
        let mut args: Vec<&std::ffi::OsStr> = vec!["--serial-socket".as_ref(), sock.as_os_str()];
        args.extend_from_slice(run_args);
        let mut vm = Vm::boot_full(disk, firmware, dir, https, &fwd, &args);
        // QEMU starts the guest once we are connected; what comes out is in
        // the log file, the socket only has to be drained.
        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => panic!("serial socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut r = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
        vm.console_in = Some(s);
        vm.started = Instant::now();
        vm
    }

    /// Type `text` on the serial console (needs [`BootOptions::serial_input`]).
    pub fn type_console(&mut self, text: &str) {
        let s = self
            .console_in
            .as_mut()
            .expect("BootOptions::serial_input to type on the console");
        s.write_all(text.as_bytes())
            .expect("write to the serial console");
    }

    fn boot_full(
        disk: &Path,
        firmware: &str,
        dir: &Path,
        https_port: Option<u16>,
        forwards: &[(u16, u16)],
        run_args: &[&std::ffi::OsStr],
    ) -> Vm {
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
            let arch = run_args
                .windows(2)
                .find(|w| w[0] == "--arch")
                .and_then(|w| w[1].to_str());
            let template = match arch {
                Some("arm64") => "/usr/share/AAVMF/AAVMF_VARS.fd",
                Some("armv7") => "/usr/share/AAVMF/AAVMF32_VARS.fd",
                _ => "/usr/share/OVMF/OVMF_VARS_4M.fd",
            };
            let vars = dir.join("ovmf-vars.fd");
            if !vars.exists() {
                fs::copy(template, &vars).unwrap();
            }
            args.extend(["--vars".into(), vars.into()]);
        }
        if let Some(p) = https_port {
            args.extend(["--https-port".into(), p.to_string().into()]);
        }
        for (h, g) in forwards {
            args.extend(["--forward".into(), format!("{h}:{g}").into()]);
        }
        args.extend(run_args.iter().map(|a| a.to_os_string()));
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
            https_port,
            forwards: forwards.to_vec(),
            started: Instant::now(),
            console_in: None,
        }
    }

    /// The host port forwarded to the guest's TCP port `guest`.
    pub fn fwd(&self, guest: u16) -> u16 {
        self.forwards
            .iter()
            .find(|(_, g)| *g == guest)
            .map(|(h, _)| *h)
            .unwrap_or_else(|| panic!("guest port {guest} is not forwarded"))
    }

    /// The HTTPS certificate fingerprint the agent printed (the last one).
    pub fn fingerprint(&self) -> Option<String> {
        let c = self.console();
        let key = "certificate SHA-256 fingerprint: ";
        let line = c.lines().rev().find(|l| l.contains(key))?;
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next().map(str::to_string)
    }

    /// `nuvol ctl ARGS` against this box, as a user would run it: over
    /// HTTPS with the console's token and fingerprint when HTTPS is
    /// forwarded, else plain HTTP. Returns (exit code, stdout, stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let token = self.admin_token().expect("admin token on the console");
        let mut cmd = Command::new(nuvol_bin());
        cmd.arg("ctl")
            .args(args)
            .env("NUVOL_TOKEN", token)
            .stdin(Stdio::null());
        match self.https_port {
            Some(p) => {
                cmd.env("NUVOL_HOST", format!("https://127.0.0.1:{p}"));
                cmd.env(
                    "NUVOL_FINGERPRINT",
                    self.fingerprint()
                        .expect("certificate fingerprint on the console"),
                );
            }
            None => {
                cmd.env("NUVOL_HOST", format!("http://127.0.0.1:{}", self.port));
            }
        }
        let out = cmd.output().expect("run nuvol ctl");
        let r = (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        eprintln!("$ nuvol ctl {} -> {}\n{}{}", args.join(" "), r.0, r.1, r.2);
        r
    }

    /// [`Vm::ctl`] that must succeed; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.ctl(args);
        assert_eq!(
            code,
            0,
            "nuvol ctl {args:?} failed: {out}{err}\nconsole:\n{}",
            tail(&self.console())
        );
        out
    }

    /// Upload a file with the admin token (plain HTTP): (status, body).
    pub fn upload_admin(&self, path: &str, file: &Path) -> std::io::Result<(u16, String)> {
        let token = self
            .admin_token()
            .ok_or_else(|| std::io::Error::other("no admin token on the console"))?;
        let body = fs::read(file)?;
        http_request(self.port, "POST", path, Some(&token), &[], &body)
    }

    /// Ask for a reboot through the API (`POST /api/v1/system/reboot`,
    /// retried for up to a minute until it answers 202).
    pub fn ask_reboot(&self) {
        let code = self.wait_for(
            "POST /api/v1/system/reboot",
            Duration::from_secs(60),
            || {
                self.http_admin("POST", "/api/v1/system/reboot")
                    .ok()
                    .map(|(c, _)| c)
            },
        );
        assert_eq!(code, 202, "POST /api/v1/system/reboot");
    }

    /// Reboot through the API and wait (up to 240 s) for the next boot's
    /// ready line; returns how long it took.
    pub fn reboot_via_api(&mut self) -> Duration {
        self.reboot_via_api_within(Duration::from_secs(240))
    }

    /// [`Vm::reboot_via_api`], waiting up to `timeout` (arm64 under TCG).
    pub fn reboot_via_api_within(&mut self, timeout: Duration) -> Duration {
        const READY: &str = "nuvol: ready: panel at";
        let n = self.console().matches(READY).count();
        let t = Instant::now();
        self.ask_reboot();
        self.wait_console(READY, n + 1, timeout);
        t.elapsed()
    }

    /// `GET /api/v1/update` as JSON, retried for up to a minute (the
    /// forward right after a boot).
    pub fn update_status(&self) -> serde_json::Value {
        self.wait_for("GET /api/v1/update", Duration::from_secs(60), || match self
            .http_admin("GET", "/api/v1/update")
        {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        })
    }

    /// Wait until the box's last update is marked good; `GET
    /// /api/v1/update` then.
    pub fn wait_update_good(&self, timeout: Duration) -> serde_json::Value {
        self.wait_for("update marked good", timeout, || {
            let v = self.update_status();
            (v["update"]["phase"] == "good").then_some(v)
        })
    }

    /// Whether the service `name` runs on the box.
    pub fn service_running(&self, name: &str) -> bool {
        match self.http_admin("GET", "/api/v1/local-services") {
            Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .any(|s| s["name"] == name && s["state"] == "running"),
            _ => false,
        }
    }

    /// Log in to the panel with the console's admin token as a browser
    /// does: (the session's `Cookie:` value, its CSRF token).
    pub fn login(&self) -> std::io::Result<(String, String)> {
        let token = self
            .admin_token()
            .ok_or_else(|| std::io::Error::other("no admin token on the console"))?;
        let body = format!("secret={token}&next=%2Fdashboard");
        let (code, text) = http_request_full(
            self.port,
            "POST",
            "/login",
            None,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )?;
        let cookie = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .filter(|_| code == 303)
            .ok_or_else(|| std::io::Error::other(format!("login: {code}")))?;
        let (_, text) = http_request_full(
            self.port,
            "GET",
            "/api/v1/session",
            None,
            &[("Cookie", &cookie)],
            b"",
        )?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        let csrf = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["csrf"].as_str().map(str::to_string))
            .ok_or_else(|| std::io::Error::other(format!("no csrf in {body:?}")))?;
        Ok((cookie, csrf))
    }

    /// A panel page as a browser logged in with `session` gets it (the
    /// whole answer, headers included).
    pub fn panel_page(&self, session: &(String, String), path: &str) -> String {
        http_request_full(self.port, "GET", path, None, &[("Cookie", &session.0)], b"")
            .map(|(_, page)| page)
            .unwrap_or_default()
    }

    /// Submit a panel upload form as a browser does: `file` as the form
    /// field `field` (multipart), the session's cookie, CSRF and `back` in
    /// the action's query. Returns (status, the whole answer).
    pub fn form_upload(
        &self,
        session: &(String, String),
        action: &str,
        back: &str,
        field: &str,
        file: &Path,
    ) -> std::io::Result<(u16, String)> {
        let boundary = "----nuvole2e5d8a1f";
        let name = file
            .file_name()
            .map_or("f".into(), |n| n.to_string_lossy().into_owned());
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&fs::read(file)?);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let ctype = format!("multipart/form-data; boundary={boundary}");
        http_request_full(
            self.port,
            "POST",
            &format!("{action}?csrf={}&back={back}", session.1),
            None,
            &[
                ("Cookie", &session.0),
                ("Accept", "text/html"),
                ("Content-Type", &ctype),
            ],
            &body,
        )
    }

    /// Poll `f` until it returns `Some`, or panic with the console's tail.
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
                panic!(
                    "{what}: not within {timeout:?}; console:\n{}",
                    tail(&self.console())
                );
            }
            std::thread::sleep(Duration::from_millis(500));
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
        let c = without_printk(&self.console());
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
        let what = format!("GET {path} answering 200");
        self.wait_for(&what, timeout, || match self.http("GET", path) {
            Ok((200, body)) => Some(body),
            _ => None,
        })
    }

    /// Press the power button (QMP) and check the orderly power-off: the
    /// agent stopped within PID 1's grace (services included) and the data
    /// partition unmounted cleanly.
    pub fn power_off(&mut self) {
        self.qmp("system_powerdown");
        self.wait_exit(Duration::from_secs(120));
        let c = self.console();
        for (want, present) in [
            ("nuvol-init: power button pressed", true),
            ("nuvol-init: powering off", true),
            ("did not stop", false),
            ("remounting read-only", false),
        ] {
            assert_eq!(
                c.contains(want),
                present,
                "{want:?} on the console:\n{}",
                tail(&c)
            );
        }
    }

    /// Send one QMP command (after the capabilities handshake).
    pub fn qmp(&self, command: &str) {
        self.qmp_json(&format!(r#"{{"execute":"{command}"}}"#));
    }

    /// Send one QMP request given as JSON, e.g. with `arguments`; panics
    /// unless QEMU answers `return`.
    pub fn qmp_json(&self, request: &str) {
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
        writeln!(w, "{request}").unwrap();
        // Events may come before the answer.
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if !line.contains("\"event\"") {
                break;
            }
        }
        assert!(line.contains("\"return\""), "qmp {request}: {line}");
    }

    /// QEMU's process id (to cut the power from another thread).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether QEMU has exited (a power cut from another thread).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Cut the power: SIGKILL QEMU, whatever the guest is doing (what the
    /// guest wrote to its disk so far stays; its page cache is lost).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The console with the kernel's messages cut out. The kernel writes
/// them to the UART at once while user space's output waits in the tty
/// buffer, so a message can land in the middle of a line of ours
/// (`nuvol: admin to[    5.1] …\nken: …`); without them the line is whole
/// again.
pub fn without_printk(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    let mut rest = console;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let stamp_len = after.find(']').filter(|&j| {
            let stamp = after[..j].trim_start();
            let (secs, frac) = stamp.split_once('.').unwrap_or(("", ""));
            !secs.is_empty()
                && !frac.is_empty()
                && secs.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        });
        match stamp_len {
            Some(_) => {
                // Drop the message through its newline.
                rest = match after.find('\n') {
                    Some(n) => &after[n + 1..],
                    None => "",
                };
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The static `nuvol` the image was built from (`$NUVOL_BIN`, as the
/// Makefile sets it), for `nuvol ctl` and `nuvol bundle` on the host.
pub fn nuvol_bin() -> PathBuf {
    let p = std::env::var_os("NUVOL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("out/nuvol"));
    assert!(
        p.exists(),
        "no nuvol binary at {} (make nuvol)",
        p.display()
    );
    p
}

/// The base64 line of a public key file (what `trusted_keys` takes).
pub fn key_line(public: &Path) -> String {
    fs::read_to_string(public)
        .unwrap_or_else(|e| panic!("{}: {e}", public.display()))
        .lines()
        .find(|l| !l.starts_with("untrusted comment:") && !l.trim().is_empty())
        .expect("a key line")
        .trim()
        .to_string()
}

/// The signed recipes (`$NUVOL_BUNDLES`, else `out/bundles`): NAME.nvb and
/// the development key dev.pub.
pub fn recipes() -> PathBuf {
    recipes_from("NUVOL_BUNDLES", "out/bundles", "make bundles")
}

/// The recipes built for another architecture of the Makefile (`arm64`,
/// `armv7`): `$NUVOL_BUNDLES_ARM64` or `out/bundles-arm64`, and so on.
pub fn recipes_for(arch: &str) -> PathBuf {
    recipes_from(
        &format!("NUVOL_BUNDLES_{}", arch.to_uppercase()),
        &format!("out/bundles-{arch}"),
        &format!("make bundles ARCH={arch}"),
    )
}

fn recipes_from(var: &str, default: &str, make: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    assert!(
        p.join("dev.pub").exists() && p.join("web.nvb").exists(),
        "no recipes in {} — run `{make}`",
        p.display()
    );
    p
}

/// Copy a host file onto the image's boot partition at `dst` (e.g.
/// `bundles/web.nvb`), making directories, as a user would from a laptop.
pub fn copy_to_boot(disk: &Path, src: &Path, dst: &str) {
    let target = format!("{}@@{}", disk.display(), boot_offset(disk));
    let mut dir = String::new();
    if let Some((parent, _)) = dst.rsplit_once('/') {
        for part in parent.split('/') {
            dir = if dir.is_empty() {
                part.to_string()
            } else {
                format!("{dir}/{part}")
            };
            // Fails harmlessly when it exists.
            let _ = Command::new("mmd")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-i", &target, &format!("::{dir}")])
                .stderr(Stdio::null())
                .status();
        }
    }
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-i", &target])
        .arg(src)
        .arg(format!("::{dst}"))
        .status()
        .unwrap();
    assert!(st.success(), "mcopy {} to ::{dst}", src.display());
}

/// The text of a file on the image's boot partition (e.g.
/// `syslinux/syslinux.cfg`), as `mtype` reads it.
pub fn boot_file(disk: &Path, path: &str) -> String {
    let target = format!("{}@@{}", disk.display(), boot_offset(disk));
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &target, &format!("::{path}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "mtype ::{path}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's kernel (`bzImage`) or initramfs (`initrd.img`) as built,
/// copied to `dst`: from beside the image (`out/`), else from the disk's
/// slot A (zero-padded to the slot's fixed size there).
pub fn os_part(disk: &Path, name: &str, dst: &Path) {
    match image().parent().map(|d| d.join(name)) {
        Some(p) if p.is_file() => {
            fs::copy(&p, dst).unwrap();
        }
        _ => copy_from_boot(disk, &format!("A/{name}"), dst),
    }
}

/// Sign `kernel` and `initrd` as OS update `version` for `arch` with
/// `key` (`nuvol update build`), into `out`.
pub fn update_artefact(
    key: &Path,
    kernel: &Path,
    initrd: &Path,
    version: &str,
    arch: &str,
    out: &Path,
) {
    let st = Command::new(nuvol_bin())
        .args(["update", "build", "--kernel"])
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--version", version, "--arch", arch, "-k"])
        .arg(key)
        .arg("-o")
        .arg(out)
        .status()
        .expect("run nuvol update build");
    assert!(st.success(), "nuvol update build {version}");
}

/// A USB stick as a laptop leaves it: an MBR with one FAT partition from
/// 1 MiB on, holding `files` (name on the stick, e.g. `update/x.nvu`;
/// host file).
pub fn fat_stick(path: &Path, mib: u64, files: &[(&str, &Path)]) {
    let part = path.with_extension("part");
    let _ = fs::remove_file(&part);
    let st = Command::new("mkfs.vfat")
        .args(["-C", "-n", "STICK"])
        .arg(&part)
        .arg(((mib - 1) * 1024).to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.vfat");
    let img = format!("{}", part.display());
    for (name, src) in files {
        if let Some((dir, _)) = name.rsplit_once('/') {
            let _ = Command::new("mmd")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-D", "s", "-i", &img, &format!("::{dir}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let st = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &img])
            .arg(src)
            .arg(format!("::{name}"))
            .status()
            .unwrap();
        assert!(st.success(), "mcopy {name} onto the stick");
    }
    let stick = fs::File::create(path).unwrap();
    stick.set_len(mib * 1024 * 1024).unwrap();
    drop(stick);
    let mut sf = Command::new("sfdisk")
        .args(["-q", "--label", "dos"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sf.stdin
        .take()
        .unwrap()
        .write_all(b"start=2048, type=c\n")
        .unwrap();
    assert!(sf.wait().unwrap().success(), "sfdisk on the stick");
    let st = Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"])
        .status()
        .unwrap();
    assert!(st.success(), "dd the FAT onto the stick");
    let _ = fs::remove_file(&part);
}

/// Copy a file off the image's boot partition (`src`, e.g. `A/bzImage`)
/// to `dst` on the host, byte for byte.
pub fn copy_from_boot(disk: &Path, src: &str, dst: &Path) {
    let target = format!("{}@@{}", disk.display(), boot_offset(disk));
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-n", "-o", "-i", &target, &format!("::{src}")])
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success(), "mcopy ::{src} off the image");
}

/// The names at the top of the image's boot partition (as `mdir` lists
/// them: long names where there are, in the case they were written).
pub fn boot_files(disk: &Path) -> Vec<String> {
    let target = format!("{}@@{}", disk.display(), boot_offset(disk));
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-b", "-i", &target, "::/"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mdir of the boot partition");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches("::/").to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// What became of the update file `name` (`boot_files` of `GET
/// /api/v1/update`): `applied` or a refusal's code.
pub fn update_file_outcome(update: &serde_json::Value, name: &str) -> Option<String> {
    update["boot_files"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["outcome"].as_str().map(str::to_string))
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
    http_request_full(port, method, path, token, &[], b"")
}

/// A request with extra headers and a body: (status, body).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let (status, text) = http_request_full(port, method, path, token, headers, body)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// [`http_request`] returning the whole response text, headers included.
pub fn http_request_full(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    http_request_within(
        port,
        method,
        path,
        token,
        headers,
        body,
        Duration::from_secs(30),
    )
}

/// [`http_request_full`] waiting up to `silence` for each part of the
/// answer: for requests the box answers only after a budget of its own
/// runs out (a stalled download's 30 s of silence), which the client's
/// own patience must clearly exceed.
pub fn http_request_within(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
    silence: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(silence))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: nuvol\r\nConnection: close\r\n{auth}{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
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

/// A publisher key made for a test with `nuvol bundle keygen` (as a
/// publisher would on a workstation).
pub struct TestKey {
    pub secret: PathBuf,
    pub public: PathBuf,
}

impl TestKey {
    pub fn new(dir: &Path) -> TestKey {
        let base = dir.join("test-publisher");
        let st = Command::new(nuvol_bin())
            .args(["bundle", "keygen", "-o"])
            .arg(&base)
            .args(["-c", "e2e test publisher"])
            .stdout(Stdio::null())
            .status()
            .expect("nuvol bundle keygen");
        assert!(st.success(), "nuvol bundle keygen");
        TestKey {
            secret: base.with_extension("sec"),
            public: base.with_extension("pub"),
        }
    }

    /// Build and sign a bundle whose image holds Debian's static busybox
    /// (`/bin/busybox`, package busybox-static) and a minimal `/etc`; the
    /// manifest is `name`, a version, a publisher and `rest` (the `[run]`
    /// table and whatever else the test needs).
    pub fn busybox_bundle(&self, dir: &Path, name: &str, rest: &str) -> PathBuf {
        self.busybox_bundle_with(dir, name, rest, &[])
    }

    /// [`TestKey::busybox_bundle`] with more files in the image: `(host
    /// file, path in the image)`, mode kept (e.g. a static test program).
    pub fn busybox_bundle_with(
        &self,
        dir: &Path,
        name: &str,
        rest: &str,
        files: &[(&Path, &str)],
    ) -> PathBuf {
        let root = dir.join(format!("{name}-rootfs"));
        let _ = fs::remove_dir_all(&root);
        for d in ["bin", "etc", "tmp", "srv"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static installed");
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/nonexistent\nsvc:x:1234:1234:svc:/:/nonexistent\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\nsvc:x:1234:\n").unwrap();
        for (src, dst) in files {
            let to = root.join(dst.trim_start_matches('/'));
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(src, &to).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
        let manifest = dir.join(format!("{name}.toml"));
        fs::write(
            &manifest,
            format!("name = \"{name}\"\nversion = \"1.0.0\"\npublisher = \"e2e\"\n{rest}"),
        )
        .unwrap();
        let out = dir.join(format!("{name}.nvb"));
        let o = Command::new(nuvol_bin())
            .args(["bundle", "build", "-m"])
            .arg(&manifest)
            .arg("-r")
            .arg(&root)
            .arg("-o")
            .arg(&out)
            .arg("-k")
            .arg(&self.secret)
            .output()
            .expect("nuvol bundle build");
        assert!(
            o.status.success(),
            "nuvol bundle build {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_messages_inside_a_line_are_cut_out() {
        let c = "nuvol: admin to[    5.123456] virtio_net virtio1: link up\nken: abc (also in x)\n[    6.000001] whole line\nkeep [brackets] and [1.x]\n";
        assert_eq!(
            super::without_printk(c),
            "nuvol: admin token: abc (also in x)\nkeep [brackets] and [1.x]\n"
        );
    }
}
