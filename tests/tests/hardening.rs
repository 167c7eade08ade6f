//! A box on a hostile network, on the booted image: what a compromised
//! service cannot do, and what a stranger's USB stick cannot do.
//!
//! - A service cannot make namespaces (`unshare`, `clone(CLONE_NEWUSER)`:
//!   EPERM; `clone3`: ENOSYS) while `fork` and glibc threads still work
//!   (a static glibc probe, `tests/probe/nsprobe.c`, built here with `cc`).
//! - An exec health check (`kind = "command"`) of a uid-0 service sees the
//!   container (its processes, rootfs, host name) with the service's empty
//!   capability set, no_new_privs and seccomp, and no host process.
//! - A service that eats all memory (no useful limit, in a 256 MiB VM) is
//!   what the kernel's OOM killer kills, not the agent: the panel keeps
//!   answering and PID 1 never has to restart the agent.
//! - Connections to the panel that never send a byte are held, none
//!   closed to make room, up to the per-source budget; past it the
//!   source's own oldest go, and the panel answers throughout. The agent's
//!   fd limit is raised to PID 1's ceiling of 65536.
//! - One address sending requests without pause is answered up to its
//!   request budget, then held and refused (429 `rate_limited`), and
//!   answered again once the budget refills.
//! - A second disk with its own `nuvol-boot` (another nuvol.toml) is
//!   refused, by the kernel command line under SeaBIOS and by the boot
//!   loader's `LoaderDevicePartUUID` under OVMF, and two copies of one
//!   image are both refused.
//!
//! Needs `make image` (the Makefile's `test-e2e` sets `NUVOL_IMAGE`,
//! `NUVOL_BIN`), `cc` with static glibc (build-essential) and sfdisk.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nuvol_e2e::{disk_copy, key_line, write_config, BootOptions, Scratch, TestKey, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const SERVE: Duration = Duration::from_secs(300);
const READY: &str = "nuvol: ready: panel at";
const PROBE_PORT: u16 = 8091;

/// `tests/probe/nsprobe.c`, static.
fn build_probe(dir: &Path) -> PathBuf {
    let out = dir.join("nsprobe");
    let src = nuvol_e2e::repo().join("tests/probe/nsprobe.c");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc (build-essential)");
    assert!(st.success(), "building {}", src.display());
    out
}

fn service(vm: &Vm, name: &str) -> Option<Value> {
    match vm.http_admin("GET", &format!("/api/v1/services/{name}")) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn fetch(vm: &Vm, path: &str) -> Option<String> {
    match nuvol_e2e::http(vm.fwd(PROBE_PORT), "GET", path) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or("")
}

/// The probe service runs as uid 0 (declared, and allowed by the box), with
/// no capabilities: it writes what nsprobe and busybox's `unshare -U` got,
/// and its `oom_score_adj` and whether it can lower it, to its volume and
/// serves the volume over HTTP; its health check writes what it sees next
/// to it.
fn probe_bundle(dir: &Path, key: &TestKey) -> PathBuf {
    let probe = build_probe(dir);
    let marker = dir.join("marker");
    std::fs::write(&marker, "only-in-the-probe-image\n").unwrap();
    let run = "/bin/nsprobe > /srv/out/ns.txt 2>&1; \
               if /bin/busybox unshare -U true 2>/dev/null; then echo 'unshare -U: allowed'; \
               else echo 'unshare -U: refused'; fi >> /srv/out/ns.txt; \
               echo \"oom_score_adj: $(cat /proc/self/oom_score_adj)\" >> /srv/out/ns.txt; \
               if echo 0 > /proc/self/oom_score_adj; then echo 'lower it: done'; \
               else echo 'lower it: refused'; fi >> /srv/out/ns.txt 2>/dev/null; \
               exec /bin/busybox httpd -f -p 8091 -h /srv/out";
    let health = "{ echo procs $(ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '); \
                  echo comms $(cat /proc/[0-9]*/comm | tr '\\n' ' '); \
                  grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp|Pid):' /proc/self/status; \
                  echo host $(hostname); echo marker $(cat /etc/marker); \
                  echo userns $(cat /proc/sys/user/max_user_namespaces); \
                } > /srv/out/view.tmp && mv /srv/out/view.tmp /srv/out/view.txt";
    key.busybox_bundle_with(
        dir,
        "probe",
        &format!(
            "[run]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", {run:?}]\nuid = 0\ngid = 0\nrestart = \"always\"\n\
             [[ports]]\nname = \"http\"\nport = 8091\nprotocol = \"tcp\"\n\
             [[volumes]]\nname = \"out\"\npath = \"/srv/out\"\n\
             [health]\nkind = \"command\"\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", {health:?}]\n\
             interval_s = 2\ntimeout_s = 2\nretries = 5\n\
             [privileges]\nroot = true\n"
        ),
        &[(&probe, "/bin/nsprobe"), (&marker, "/etc/marker")],
    )
}

/// Many small processes, each smaller than the agent (~14 MiB), 320 MiB in
/// all, under a limit far above the VM's memory: without oom_score_adj the
/// agent, the biggest process, would be the OOM killer's pick.
fn hog_bundle(dir: &Path, key: &TestKey) -> PathBuf {
    let run =
        "for i in $(seq 80); do dd if=/dev/zero of=/dev/null bs=4M count=100000000 & done; wait";
    key.busybox_bundle(
        dir,
        "hog",
        &format!(
            "[run]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", {run:?}]\nrestart = \"never\"\n\
             [resources]\nmemory_mb = 4096\npids = 128\n"
        ),
    )
}

#[test]
fn namespaces_refused_health_checks_contained_and_the_oom_killer_spares_the_agent() {
    let dir = Scratch::new("hardening-isolation");
    let key = TestKey::new(&dir.0);
    let disk = disk_copy(&dir.0, 1024);
    write_config(
        &disk,
        &format!(
            "hostname = \"e2e-hardening\"\n[panel]\nallow_plain_http = true\n\
             [bundles]\ntrusted_keys = [\"{}\"]\nallow_root = true\n",
            key_line(&key.public)
        ),
    );
    let opts = BootOptions {
        https: false,
        forwards: vec![PROBE_PORT],
        ..BootOptions::default()
    };
    let args: [&OsStr; 2] = ["--mem".as_ref(), "256".as_ref()];
    let mut vm = Vm::boot_opts_args(&disk, "bios", &dir.0, &opts, &args);
    vm.wait_console(READY, 1, BOOT);

    // 0. Silent connections are held, not churned, up to the per-source
    //    budget.
    silent_flood_waits(&vm);

    let (code, body) = vm
        .upload_admin("/api/v1/bundles", &probe_bundle(&dir.0, &key))
        .unwrap();
    assert_eq!(code, 201, "install the probe: {body}");

    // 1. No namespaces from inside; fork and threads work.
    let ns = vm.wait_for("the probe's results", SERVE, || {
        fetch(&vm, "/ns.txt").filter(|t| t.contains("unshare -U:"))
    });
    eprintln!("nsprobe in the container:\n{ns}");
    for want in [
        "unshare(CLONE_NEWUSER): EPERM",
        "clone(CLONE_NEWUSER): EPERM",
        "clone(CLONE_NEWUSER|CLONE_NEWNET): EPERM",
        "clone3(CLONE_NEWUSER): ENOSYS",
        "clone3(): ENOSYS",
        "pthread_create: ok",
        "fork: ok",
        "unshare -U: refused",
        "oom_score_adj: 500",
        "lower it: refused",
    ] {
        assert!(ns.contains(want), "no {want:?} in:\n{ns}");
    }

    // 2. The health check's view is the container's, with the service's privileges.
    let view = vm.wait_for("the health check's view", SERVE, || fetch(&vm, "/view.txt"));
    eprintln!("the health check saw:\n{view}");
    assert_eq!(field(&view, "CapEff:"), "0000000000000000", "{view}");
    assert_eq!(field(&view, "CapBnd:"), "0000000000000000", "{view}");
    assert_eq!(field(&view, "NoNewPrivs:"), "1", "{view}");
    assert_eq!(field(&view, "Seccomp:"), "2", "{view}");
    let pid: u32 = field(&view, "Pid:").parse().unwrap_or(0);
    assert!(
        (2..50).contains(&pid),
        "a pid of the container's namespace: {view}"
    );
    let procs: Vec<u32> = field(&view, "procs ")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(procs.contains(&1) && procs.len() < 10, "{view}");
    // Neither PID 1 nor the agent (both run /init) is in sight.
    assert!(
        !field(&view, "comms ")
            .split_whitespace()
            .any(|c| c == "init"),
        "{view}"
    );
    assert_eq!(field(&view, "host "), "probe", "{view}");
    assert_eq!(field(&view, "marker "), "only-in-the-probe-image", "{view}");
    assert_eq!(
        field(&view, "userns "),
        "0",
        "PID 1 closed user namespaces: {view}"
    );
    vm.wait_for("probe healthy", SERVE, || {
        service(&vm, "probe").filter(|s| s["health"] == "healthy")
    });

    // 3. Memory runs out: the OOM killer takes the service, not the agent.
    let (code, body) = vm
        .upload_admin("/api/v1/bundles", &hog_bundle(&dir.0, &key))
        .unwrap();
    assert_eq!(code, 201, "install the hog: {body}");
    let hog = vm.wait_for("the hog OOM-killed", SERVE, || {
        service(&vm, "hog").filter(|s| s["last_exit"]["reason"] == "oom-killed")
    });
    eprintln!("hog: {hog}");
    vm.wait_http("/api/v1/status", Duration::from_secs(60));
    let console = vm.console();
    assert!(
        console.contains("Out of memory") || console.contains("Killed process"),
        "a global OOM kill is on the console:\n{}",
        nuvol_e2e::tail(&console)
    );
    assert!(
        !console.contains("agent exited"),
        "PID 1 never had to restart the agent:\n{}",
        nuvol_e2e::tail(&console)
    );
    assert!(
        !console
            .lines()
            .any(|l| l.contains("Killed process") && l.contains("(init)")),
        "neither PID 1 nor the agent was killed:\n{}",
        nuvol_e2e::tail(&console)
    );
    // Last (it spends the host's request budget): one address asking
    // without pause is cut to its budget.
    request_budget_holds(&vm);

    vm.qmp("system_powerdown");
    vm.wait_exit(Duration::from_secs(120));
}

/// 2000 requests pipelined on one connection, as fast as the box reads
/// them: the first 300 (the burst) and what refills meanwhile are
/// answered, then one is held 1 s and answered 429 `rate_limited` with
/// `Retry-After`, and the connection is closed. The budget refills: a
/// moment later the same address is answered again.
fn request_budget_holds(vm: &Vm) {
    use std::io::{Read, Write};
    const SENT: usize = 2000;
    let before = metric(vm, "nuvol_http_rate_limited_total").unwrap_or(0.0);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", vm.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let reqs = "GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n".repeat(SENT);
        let _ = w.write_all(reqs.as_bytes()); // fails once the box closes
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out);
    let limited = text.matches("HTTP/1.1 429").count();
    let answered = text.matches("HTTP/1.1 ").count() - limited;
    eprintln!("request budget: {answered} answered, {limited} refused of {SENT} pipelined");
    assert!(answered >= 300, "the burst is answered: {answered}");
    assert!(answered < SENT, "not all {SENT}: {answered}");
    assert_eq!(limited, 1, "one 429, then the connection closes");
    let tail = &text[text.find("HTTP/1.1 429").unwrap()..];
    assert!(
        tail.contains("rate_limited") && tail.to_ascii_lowercase().contains("retry-after: "),
        "{tail}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (code, _) = vm.http("GET", "/api/v1/status").expect("status after");
    assert_eq!(code, 200, "the budget refills");
    let after = metric(vm, "nuvol_http_rate_limited_total").unwrap_or(0.0);
    assert!(after >= before + 1.0, "counted: {before} -> {after}");
}

/// A metric's value from the box's `/metrics` (admin).
fn metric(vm: &Vm, name: &str) -> Option<f64> {
    let (code, body) = vm.http_admin("GET", "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Connections to the panel that never send a byte are held, not churned,
/// up to the per-source limit; beyond it the source's own oldest go. All
/// of QEMU user-net's connections come from one address (10.0.2.2), so
/// this is the per-source budget (64) on the box; the 4096-connection
/// waiting tier behind it is sized from PID 1's fd ceiling, checked on the
/// console.
fn silent_flood_waits(vm: &Vm) {
    const HELD: usize = 60;
    const MORE: usize = 20;
    assert!(
        vm.console().contains("fd limit raised from=1024 to=65536"),
        "the agent's fd limit, under PID 1's ceiling:\n{}",
        nuvol_e2e::tail(&vm.console())
    );
    let evicted = || metric(vm, "nuvol_http_connections_evicted_total").unwrap_or(-1.0);
    let before = evicted();
    let connect = || {
        // Paced: QEMU user-net sets up each guest connection in turn.
        std::thread::sleep(Duration::from_millis(20));
        std::net::TcpStream::connect(("127.0.0.1", vm.port)).expect("connect through QEMU")
    };
    let mut held: Vec<std::net::TcpStream> = (0..HELD).map(|_| connect()).collect();
    let waiting = vm.wait_for("the silent connections held", SERVE, || {
        metric(vm, "nuvol_http_connections_waiting").filter(|w| *w >= HELD as f64)
    });
    assert_eq!(
        evicted(),
        before,
        "none closed to make room while under the limit"
    );
    held.extend((0..MORE).map(|_| connect()));
    let after = vm.wait_for("the source's oldest closed to make room", SERVE, || {
        Some(evicted()).filter(|e| *e >= before + (HELD + MORE - 64) as f64)
    });
    let started = std::time::Instant::now();
    let (code, _) = vm
        .http("GET", "/api/v1/status")
        .expect("status during the flood");
    let took = started.elapsed();
    eprintln!(
        "silent flood: {waiting} waiting of {HELD} held, then {MORE} more: evicted {before} -> {after}, \
         status in {took:?}"
    );
    assert_eq!(code, 200);
    drop(held);
}

/// Give partitions 1 and 2 of `disk` other PARTUUIDs (another image's).
fn set_partuuids(disk: &Path, boot: &str, data: &str) {
    for (n, u) in [("1", boot), ("2", data)] {
        let st = Command::new("sfdisk")
            .args(["--quiet", "--part-uuid"])
            .arg(disk)
            .args([n, u])
            .status()
            .expect("sfdisk");
        assert!(
            st.success(),
            "sfdisk --part-uuid {} {n} {u}",
            disk.display()
        );
    }
}

/// The PARTUUID of partition `n` of `disk`.
fn partuuid(disk: &Path, n: usize) -> String {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitiontable"]["partitions"][n - 1]["uuid"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase()
}

fn hostname(vm: &Vm) -> String {
    let (code, body) = vm.http("GET", "/api/v1/status").unwrap();
    assert_eq!(code, 200, "{body}");
    let st: Value = serde_json::from_str(&body).unwrap();
    st["hostname"].as_str().unwrap_or_default().to_string()
}

fn boot_with_second_disk(own: &Path, second: &Path, firmware: &str, dir: &Path) -> Vm {
    let args: [&OsStr; 2] = ["--drive".as_ref(), second.as_os_str()];
    let mut vm = Vm::boot_opts_args(own, firmware, dir, &BootOptions::default(), &args);
    vm.wait_console(READY, 1, BOOT);
    vm
}

fn power_off(vm: &mut Vm) {
    vm.qmp("system_powerdown");
    vm.wait_exit(Duration::from_secs(120));
}

#[test]
fn a_second_disk_with_its_own_boot_partition_is_refused() {
    let dir = Scratch::new("hardening-disks");
    let (own_dir, other_dir) = (dir.0.join("own"), dir.0.join("other"));
    std::fs::create_dir_all(&own_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let own = disk_copy(&own_dir, 256);
    write_config(
        &own,
        "hostname = \"own-box\"\n[panel]\nallow_plain_http = true\n",
    );
    // A stranger's stick: another image (other PARTUUIDs), its own config.
    let other = disk_copy(&other_dir, 256);
    write_config(
        &other,
        "hostname = \"stranger\"\n[panel]\nallow_plain_http = true\n",
    );
    let stranger_boot = "5e1f0000-aaaa-4bbb-8ccc-000000000001";
    set_partuuids(
        &other,
        stranger_boot,
        "5e1f0000-aaaa-4bbb-8ccc-000000000002",
    );
    let own_boot = partuuid(&own, 1);

    // SeaBIOS: the kernel command line names the box's own boot partition;
    // the stranger's disk is the guest's vda, the box's own vdb.
    let mut vm = boot_with_second_disk(&own, &other, "bios", &own_dir);
    assert_eq!(hostname(&vm), "own-box");
    let c = vm.console();
    for want in [
        format!("refusing nuvol-boot /dev/vda1 (PARTUUID {stranger_boot})"),
        format!("/dev/vdb1 (PARTUUID {own_boot}) (named by the kernel command line"),
        "refusing nuvol-data /dev/vda2".to_string(),
        "boot partition /dev/vdb1 on /boot".to_string(),
    ] {
        assert!(c.contains(&want), "no {want:?} on the console:\n{c}");
    }
    power_off(&mut vm);

    // OVMF: systemd-boot's LoaderDevicePartUUID names it.
    let mut vm = boot_with_second_disk(&own, &other, "uefi", &own_dir);
    assert_eq!(hostname(&vm), "own-box");
    let c = vm.console();
    for want in [
        format!(
            "boot partition: PARTUUID {own_boot}, named by the boot loader (LoaderDevicePartUUID)"
        ),
        format!("refusing nuvol-boot /dev/vda1 (PARTUUID {stranger_boot})"),
    ] {
        assert!(c.contains(&want), "no {want:?} on the console:\n{c}");
    }
    power_off(&mut vm);

    // A copy of the same image (same PARTUUIDs), another config: the box
    // cannot tell which one it booted from and uses neither.
    std::fs::remove_file(&other).unwrap();
    let copy = disk_copy(&other_dir, 256);
    write_config(
        &copy,
        "hostname = \"stranger\"\n[panel]\nallow_plain_http = true\n",
    );
    let mut vm = boot_with_second_disk(&own, &copy, "bios", &own_dir);
    let c = vm.console();
    assert!(
        c.contains("refusing nuvol-boot /dev/vda1")
            && c.contains("/dev/vdb1")
            && c.contains("cannot tell which one it booted from"),
        "{c}"
    );
    assert_eq!(
        hostname(&vm),
        "nuvol",
        "built-in defaults, not the stranger's"
    );
    power_off(&mut vm);
}
