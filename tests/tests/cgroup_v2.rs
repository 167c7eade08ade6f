//! The container and supervisor tests that need cgroup v2, run for real on
//! the box's own kernel (a v2-only kernel) in QEMU, because development
//! hosts like the build machine still mount cgroup v1.
//!
//! The host side builds the tests for `x86_64-unknown-linux-musl`, packs
//! them with Debian's static busybox and `tests/cgroup-v2/init` into a newc
//! initramfs (written here, no `cpio` needed), boots the cached nuvol kernel
//! (`image/kernel.sh`, the same one `make kernel` builds) with it and checks
//! the console: every listed test reports `ok`, the run ends in
//! `NUVOL-CGV2: PASS`, and no cgroup is left. Inside, the tests run with
//! `NUVOL_REQUIRE_CGROUP_V2=1`, which makes them fail (never skip) if v2 is
//! missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuvol_e2e::{repo, Scratch};

/// Test binary → the tests of it that run under QEMU (empty: all of them),
/// each of which must report `ok`.
const PLAN: &[(&str, &str, &[&str])] = &[
    (
        "nuvol-container",
        "limits",
        &[
            "memory_hog_is_oom_killed",
            "fork_bomb_stops_at_pids_max",
            "stop_with_grace_lets_a_service_exit_cleanly",
            "cpu_max_and_weight_are_written_and_enforced",
            "fifty_containers_leave_no_cgroups_or_mounts",
            "v2_root_path_enables_controllers_on_the_way_down",
        ],
    ),
    (
        "nuvol-container",
        "isolation",
        &[
            "pid1_hostname_and_host_invisible",
            "readonly_rootfs_and_dropped_capabilities",
            "non_root_user_and_environment",
            "setup_failure_names_the_step",
        ],
    ),
    (
        "nuvol-supervisor",
        "supervisor",
        &[
            "memory_hog_is_oom_killed_reported_and_restarted",
            "crash_loop_backoff_grows_and_caps",
            "stop_kills_everything_and_logs_are_captured",
            "restart_policies",
        ],
    ),
];

const TIMEOUT: Duration = Duration::from_secs(900);

/// The nuvol kernel: `$NUVOL_KERNEL`, else `image/kernel.sh` with the
/// Makefile's fragments (a copy from the cache when it is built already).
fn kernel(dir: &Path) -> PathBuf {
    if let Some(k) = std::env::var_os("NUVOL_KERNEL") {
        return PathBuf::from(k);
    }
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let frags: Vec<String> = makefile
        .lines()
        .find_map(|l| l.strip_prefix("KERNEL_FRAGMENTS :="))
        .expect("KERNEL_FRAGMENTS in the Makefile")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let out = dir.join("bzImage");
    let st = Command::new(repo().join("image/kernel.sh"))
        .arg(&out)
        .args(&frags)
        .current_dir(repo())
        .status()
        .expect("run image/kernel.sh");
    assert!(st.success(), "image/kernel.sh failed");
    out
}

/// Build the listed test binaries for musl; test name → executable.
fn build_tests() -> Vec<(String, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "test",
        "--no-run",
        "--target",
        "x86_64-unknown-linux-musl",
        "--message-format=json",
        "--locked",
    ]);
    let mut pkgs: Vec<&str> = PLAN.iter().map(|p| p.0).collect();
    pkgs.dedup();
    for p in pkgs {
        cmd.args(["-p", p]);
    }
    for (_, t, _) in PLAN {
        cmd.args(["--test", t]);
    }
    let out = cmd
        .current_dir(repo())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building the tests for musl failed (rustup target add x86_64-unknown-linux-musl; `make deps` does it)"
    );
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(exe), Some(name)) = (v["executable"].as_str(), v["target"]["name"].as_str()) {
            if PLAN.iter().any(|p| p.1 == name) {
                found.push((name.to_string(), PathBuf::from(exe)));
            }
        }
    }
    for (_, t, _) in PLAN {
        assert!(found.iter().any(|f| f.0 == *t), "no executable for {t}");
    }
    found
}

/// A newc ("070701") cpio archive, as the kernel unpacks into its rootfs.
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            ino: 1,
        }
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o040000 != 0 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, b"");
    }
    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100755, data);
    }
    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, b"");
        self.buf
    }
}

/// Debug test binaries are large; their debug info is not needed in the VM.
fn stripped(exe: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join("stripped");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(exe)
        .status()
        .expect("strip (binutils)");
    assert!(st.success());
    let data = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    data
}

fn initramfs(dir: &Path, tests: &[(String, PathBuf)]) -> PathBuf {
    let mut c = Cpio::new();
    c.dir("bin");
    c.file(
        "bin/busybox",
        &std::fs::read("/bin/busybox").expect("apt-get install busybox-static"),
    );
    c.file(
        "init",
        &std::fs::read(repo().join("tests/cgroup-v2/init")).unwrap(),
    );
    c.dir("tests");
    let mut list = String::new();
    for (_, name, filters) in PLAN {
        let exe = &tests.iter().find(|t| t.0 == *name).unwrap().1;
        c.file(&format!("tests/{name}"), &stripped(exe, dir));
        // `--exact` with the names: exactly these run, each one reported.
        list.push_str(&format!("{name}:--exact,{}\n", filters.join(",")));
    }
    c.file("tests/list", list.as_bytes());
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, c.finish()).unwrap();
    path
}

/// Remove kernel log lines (`[   26.46] Memory cgroup out of memory: …`)
/// printed before `dmesg -n 1` or at emergency level, which can split a
/// `test … ok` line in two.
fn strip_kernel_messages(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        let stamp = rest[i + 1..]
            .find(']')
            .map(|j| &rest[i + 1..i + 1 + j])
            .filter(|s| {
                s.contains('.') && s.trim().chars().all(|c| c.is_ascii_digit() || c == '.')
            });
        match stamp {
            Some(_) => {
                out.push_str(&rest[..i]);
                rest = rest[i..].find('\n').map_or("", |n| &rest[i + n + 1..]);
            }
            None => {
                out.push_str(&rest[..=i]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn kernel_messages_are_stripped() {
    let t = "test a ... [   26.46] Memory cgroup out of memory: x\nok\ntest b ... ok [x]\n";
    assert_eq!(
        strip_kernel_messages(t),
        "test a ... ok\ntest b ... ok [x]\n"
    );
}

/// QEMU, killed on drop.
struct Qemu(Child);
impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cgroup_v2_limits_on_the_box_kernel() {
    let scratch = Scratch::new("cgroup-v2");
    let dir = &scratch.0;
    let kernel = kernel(dir);
    let tests = build_tests();
    let initrd = initramfs(dir, &tests);
    // As qemu/run.sh: KVM only where it really runs guests (it can exist and
    // fail under nested virtualisation), else TCG; QEMU_ACCEL forces one.
    let accel = std::env::var("QEMU_ACCEL").unwrap_or_else(|_| {
        let out = Command::new(repo().join("qemu/probe-kvm.sh"))
            .arg(&kernel)
            .output()
            .expect("qemu/probe-kvm.sh");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let cpu = if accel == "kvm" { "host" } else { "qemu64" };
    eprintln!("booting the box kernel with {accel}");
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", &accel, "-cpu", cpu, "-smp", "2", "-m", "512"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 rdinit=/init panic=-1 quiet",
            "-nographic",
            "-no-reboot",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let mut stdout = child.stdout.take().unwrap();
    let _qemu = Qemu(child);
    let console = Arc::new(Mutex::new(String::new()));
    let c2 = console.clone();
    // The console as it comes, kept after the run for a look at a failure.
    let log_path = std::env::temp_dir().join("nuvol-cgroup-v2-console.log");
    eprintln!("console: {}", log_path.display());
    let mut log = std::fs::File::create(&log_path).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = log.write_all(&buf[..n]);
            let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
            c2.lock().unwrap().push_str(&text);
        }
    });
    let text = || console.lock().unwrap().clone();
    let done = |t: &str| t.contains("NUVOL-CGV2: PASS") || t.contains("NUVOL-CGV2: FAIL");
    while !done(&text()) {
        if started.elapsed() > TIMEOUT {
            panic!("no PASS/FAIL after {TIMEOUT:?}; console:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the last lines through.
    std::thread::sleep(Duration::from_millis(300));
    let out = strip_kernel_messages(&text());
    eprintln!(
        "cgroup v2 run on the box kernel took {:.0?}; console tail:\n{}",
        started.elapsed(),
        out.lines()
            .filter(|l| l.starts_with("NUVOL-CGV2") || l.starts_with("test "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let ctl = out
        .lines()
        .find_map(|l| l.strip_prefix("NUVOL-CGV2: subtree_control "))
        .unwrap_or_else(|| panic!("no controller line; console:\n{out}"));
    for c in ["memory", "pids", "cpu"] {
        assert!(
            ctl.split_whitespace().any(|x| x == c),
            "controller {c} missing: {ctl}"
        );
    }
    for (_, bin, names) in PLAN {
        for n in names.iter() {
            assert!(
                out.contains(&format!("test {n} ... ok")),
                "{bin}::{n} did not pass on cgroup v2; console:\n{out}"
            );
        }
    }
    assert!(
        out.contains("NUVOL-CGV2: leftover cgroups 0"),
        "cgroups leaked; console:\n{out}"
    );
    assert!(out.contains("NUVOL-CGV2: PASS"), "console:\n{out}");
}
