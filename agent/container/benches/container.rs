//! `cargo bench -p nuvol-container` (run as root):
//! 1. start latency, exec → first line of output, nuvol vs Debian's crun and
//!    runc on the same busybox rootfs and config.json, in the same run;
//! 2. RSS of this process (standing in for the agent) per running container;
//! 3. 50 containers from a squashfs image started and stopped, checking that
//!    no mount, cgroup, loop device or veth is left behind.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use common::*;
use nuvol_container::{oci, pipe, spawn, RootSource, RootWrite, Rootfs, Stdio};

const ROUNDS: usize = 15;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn first_line_nuvol(bundle: &Path, cg: &CgroupGuard, state: &Path) -> Duration {
    let b = oci::load_bundle(bundle, &unique("lat")).expect("bundle");
    let (r, w) = pipe().unwrap();
    let t0 = Instant::now();
    let mut c = spawn(
        &b.spec,
        &cg.0,
        state,
        Stdio {
            stdin: None,
            stdout: Some(w),
            stderr: None,
        },
    )
    .expect("spawn");
    let mut line = String::new();
    BufReader::new(std::fs::File::from(r))
        .read_line(&mut line)
        .unwrap();
    let dt = t0.elapsed();
    assert_eq!(line, "ready\n");
    c.wait().unwrap();
    c.destroy().unwrap();
    dt
}

fn first_line_cmd(
    runtime: &str,
    extra: &[&str],
    bundle: &Path,
    state_root: &Path,
) -> Option<Duration> {
    let id = unique("lat");
    let t0 = Instant::now();
    let mut cmd = Command::new(runtime);
    // On a hybrid cgroup host (like the build machine) crun refuses to run
    // while a cgroup2 mount with controllers is visible: give both peers a
    // private mount namespace without it (the child's own; the host's mounts
    // are untouched). Costs microseconds, in the child before exec.
    // SAFETY: only async-signal-safe system calls in the forked child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            Ok(())
        });
    }
    let mut child = cmd
        .args(extra)
        .arg("--root")
        .arg(state_root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(&id)
        .stdin(PStdio::null())
        .stdout(PStdio::piped())
        .stderr(PStdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let dt = t0.elapsed();
    let out = child.wait_with_output().ok()?;
    if line != "ready\n" {
        eprintln!(
            "{runtime}: unexpected output {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(dt)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn counts(cg: &CgroupGuard) -> (usize, usize, usize, usize) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let cgroups = cg.0.children().len();
    let loops = std::fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("loop/backing_file").exists())
                .count()
        })
        .unwrap_or(0);
    let veths = std::fs::read_dir("/sys/class/net")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("uevent"))
                        .unwrap_or_default()
                        .contains("veth")
                })
                .count()
        })
        .unwrap_or(0);
    (mounts, cgroups, loops, veths)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let root = busybox_rootfs(&bundle);
    let cg = CgroupGuard::new();
    // crun and runc get their cgroups in a uniquely named sub-tree, removed at the end.
    let cg_name = unique("nuvol-bench");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&oci_config(&["/bin/echo", "ready"], "bench")).unwrap();
    cfg["linux"]["cgroupsPath"] = serde_json::Value::String(format!("/{cg_name}/c"));
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let state = tmp.path().join("state");

    // 1. Start latency.
    let mut nuvol = Vec::new();
    let mut crun = Vec::new();
    let mut runc = Vec::new();
    // crun refuses hybrid cgroup hosts (v1 controllers + a cgroup2 mount with
    // controllers); there it runs with its cgroup manager disabled, which
    // flatters crun (it then skips the cgroup work nuvol still does).
    let crun_extra: Vec<&str> =
        match first_line_cmd("crun", &[], &bundle, &tmp.path().join("crun-state")) {
            Some(_) => vec![],
            None => vec!["--cgroup-manager=disabled"],
        };
    for _ in 0..ROUNDS {
        nuvol.push(first_line_nuvol(&bundle, &cg, &state).as_secs_f64() * 1e3);
        if let Some(d) =
            first_line_cmd("crun", &crun_extra, &bundle, &tmp.path().join("crun-state"))
        {
            crun.push(d.as_secs_f64() * 1e3);
        }
        if let Some(d) = first_line_cmd("runc", &[], &bundle, &tmp.path().join("runc-state")) {
            runc.push(d.as_secs_f64() * 1e3);
        }
    }
    let n = median(&mut nuvol);
    println!("start latency (exec -> first line), median of {ROUNDS}:");
    println!("  nuvol  {n:8.2} ms");
    if crun.is_empty() {
        println!("  crun   unavailable (apt-get install crun)");
    } else {
        let c = median(&mut crun);
        println!(
            "  crun   {c:8.2} ms   nuvol/crun = {:.2}x (target <= 1.2x) {}",
            n / c,
            crun_extra.join(" ")
        );
    }
    if runc.is_empty() {
        println!("  runc   unavailable (apt-get install runc)");
    } else {
        let r = median(&mut runc);
        println!(
            "  runc   {r:8.2} ms   nuvol/runc = {:.2}x (target < 1.0x)",
            n / r
        );
    }
    for h in [
        "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "unified",
        "systemd", "",
    ] {
        let d = Path::new("/sys/fs/cgroup").join(h).join(&cg_name);
        let _ = std::fs::remove_dir(d.join("c"));
        let _ = std::fs::remove_dir(&d);
    }

    // 2. RSS per running container.
    let img = tmp.path().join("root.squashfs");
    let ok = Command::new("mksquashfs")
        .args([root.as_os_str(), img.as_os_str()])
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "mksquashfs failed (apt-get install squashfs-tools)");
    let mk = |id: &str| {
        let r = Rootfs {
            source: RootSource::SquashfsImage(img.clone()),
            write: RootWrite::ReadOnly,
        };
        let mut s =
            nuvol_container::ContainerSpec::new(id, r, vec!["/bin/sleep".into(), "600".into()]);
        s.limits.pids_max = Some(16);
        s
    };
    // Warm up allocator and lazily initialised state first.
    let w = spawn(&mk(&unique("warm")), &cg.0, &state, Stdio::default()).unwrap();
    drop(w);
    let before = counts(&cg);
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut running = Vec::new();
    for _ in 0..50 {
        running.push(spawn(&mk(&unique("many")), &cg.0, &state, Stdio::default()).expect("spawn"));
    }
    let started = t0.elapsed();
    let rss1 = rss_kib();
    let during = counts(&cg);
    println!("50 containers (squashfs image, loop device each):");
    println!(
        "  started in {:.0} ms; RSS {rss0} KiB -> {rss1} KiB = {:.1} KiB per running container (target <= 256)",
        started.as_secs_f64() * 1e3,
        (rss1.saturating_sub(rss0)) as f64 / 50.0
    );
    println!(
        "  while running: {} cgroups, {} loop devices",
        during.1,
        during.2 - before.2
    );
    let t1 = Instant::now();
    for mut c in running.drain(..) {
        c.stop(Duration::from_millis(100)).unwrap();
        c.destroy().unwrap();
    }
    println!("  stopped in {:.0} ms", t1.elapsed().as_secs_f64() * 1e3);
    // Autoclear loop devices detach as the last reference goes: allow a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = counts(&cg);
    while after != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = counts(&cg);
    }
    println!(
        "  leak check (mounts, cgroups, loop devices, veths): before {before:?} after {after:?} -> {}",
        if after == before { "no leak" } else { "LEAK" }
    );
    assert_eq!(before, after, "leaked resources");
}
