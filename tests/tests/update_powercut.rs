//! OS updates booted by UEFI, and power cuts during updates on both
//! loaders (docs/boot.md, "Update").
//!
//! 1. **Template.** One disk booted once (SeaBIOS) with a service from a
//!    signed bundle installed and running, then powered off; every run
//!    below starts from a copy of it. The agent pauses 0.7 s after each
//!    durable write of an update (`[debug] update_step_pause_ms`), so cuts
//!    land between writes.
//! 2. **UEFI, no cut.** From OVMF: the image's own OS as 99.0.0 through
//!    `nuvol ctl update` arms systemd-boot's one-shot entry
//!    (`LoaderEntryOneShot`), the reboot runs slot B (the loader deleted the
//!    variable), it is marked good and becomes the default, and a plain
//!    reboot stays in B. Its phases are timed: they place the cuts below.
//! 3. **Power cuts.** `NUVOL_POWERCUT_POINTS` runs (default 3; `make
//!    test-full` runs 40, 20 per loader), each on a fresh copy, its loader
//!    and phase chosen in turn and its instant at random (seed printed;
//!    `NUVOL_SEED=N` replays): QEMU is SIGKILLed while the update is
//!    written, during the trial boot, or around the mark-good writes. The
//!    next boot must reach a working slot with the data (the same admin
//!    token) and the service intact, and the box must end where a run
//!    without the cut ends: slot B marked good and default (after at most
//!    one more reboot when the cut spent a try), or, when the cut came
//!    before the update was recorded, slot A with nothing armed, and the
//!    same update accepted again at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nuvol_e2e::{disk_copy, key_line, os_part, write_config, Scratch, TestKey, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";
const SETTLE_S: u64 = 5;
/// The test hook's pause after each durable write (`NUVOL_UPDATE_PAUSE_MS`
/// overrides it: the bench runs with 0 and no cuts).
fn pause_ms() -> u64 {
    std::env::var("NUVOL_UPDATE_PAUSE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(700)
}

/// splitmix64: a seeded sequence, enough to place cuts reproducibly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One reboot request, not retried (the power may be cut meanwhile).
fn try_reboot(vm: &Vm) -> bool {
    matches!(vm.http_admin("POST", "/api/v1/system/reboot"), Ok((202, _)))
}

fn wait_good(vm: &Vm) -> (Value, Duration) {
    let t = Instant::now();
    let v = vm.wait_update_good(Duration::from_secs(180));
    (v, t.elapsed())
}

fn copy_sparse(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp {}", from.display());
}

/// One run's directory: a copy of the template disk (and under UEFI a
/// fresh variable store, made by `Vm::boot`).
fn fresh(root: &Path, name: &str, template: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    copy_sparse(template, &disk);
    (dir, disk)
}

/// The phases of an update, as timed in the uncut UEFI run.
#[derive(Debug, Clone, Copy)]
struct Timing {
    apply: Duration,
    mark: Duration,
}

/// What one cut run saw before the cut.
#[derive(Debug, Default)]
struct Seen {
    applied: bool,
    trial_ready: bool,
    good: bool,
}

/// Drive the update as a user would (ctl update, reboot through the API,
/// wait for "marked good") while another thread cuts the power `after`
/// the start of `phase`. Returns what was seen before the cut.
fn run_with_cut(vm: &mut Vm, artefact: &Path, phase: &str, after: Duration) -> Seen {
    let cut = Arc::new(AtomicBool::new(false));
    let pid = vm.pid();
    let arm = |cut: &Arc<AtomicBool>| {
        let cut = cut.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            cut.store(true, Ordering::SeqCst);
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        })
    };
    let mut seen = Seen::default();
    let mut killer = None;
    let dead = |vm: &mut Vm, cut: &Arc<AtomicBool>| cut.load(Ordering::SeqCst) || vm.exited();
    // Apply.
    if phase == "apply" {
        killer = Some(arm(&cut));
    }
    let (code, out, _) = vm.ctl(&["update", artefact.to_str().unwrap()]);
    if code == 0 && out.contains("written to slot B") {
        seen.applied = true;
    }
    if seen.applied && !dead(vm, &cut) {
        // Trial boot.
        let n = vm.console().matches(READY).count();
        if try_reboot(vm) && phase == "trial" {
            killer = Some(arm(&cut));
        }
        while !dead(vm, &cut) {
            if vm.console().matches(READY).count() > n {
                seen.trial_ready = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Settling and mark good.
        if seen.trial_ready {
            if phase == "mark" {
                killer = Some(arm(&cut));
            }
            let deadline = Instant::now() + Duration::from_secs(180);
            while !dead(vm, &cut) && Instant::now() < deadline {
                if let Ok((200, b)) = vm.http_admin("GET", "/api/v1/update") {
                    if b.contains("\"phase\":\"good\"") {
                        seen.good = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // A cut planned after the end of its phase lands on the idle box.
    match killer {
        Some(k) => {
            let _ = k.join();
        }
        None => vm.kill(),
    }
    vm.kill();
    seen
}

#[test]
fn uefi_update_and_power_cuts_on_both_loaders() {
    let t0 = Instant::now();
    let root = Scratch::new("update-powercut");
    let d = |n: &str| -> PathBuf { root.0.join(n) };
    let seed: u64 = std::env::var("NUVOL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let points: usize = std::env::var("NUVOL_POWERCUT_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!("power cuts: seed {seed} ({points} points; replay with NUVOL_SEED={seed})");
    let mut rng = Rng(seed);

    // --- 1. the template ------------------------------------------------------
    std::fs::create_dir_all(d("keys")).unwrap();
    let key = TestKey::new(&d("keys"));
    let template = disk_copy(&root.0, 1024);
    os_part(&template, "bzImage", &d("bzImage"));
    os_part(&template, "initrd.img", &d("initrd.img"));
    write_config(
        &template,
        &format!(
            "hostname = \"e2e-powercut\"\n[panel]\nallow_plain_http = true\n\
             [debug]\ntest_hooks = true\nupdate_settle_secs = {SETTLE_S}\n\
             update_step_pause_ms = {}\n\
             [update]\ntrusted_keys = [\"{}\"]\n",
            pause_ms(),
            key_line(&key.public)
        ),
    );
    let good = d("nuvol-x86_64-99.0.0.nvu");
    nuvol_e2e::update_artefact(
        &key.secret,
        &d("bzImage"),
        &d("initrd.img"),
        "99.0.0",
        "x86_64",
        &good,
    );
    let token = {
        let mut vm = Vm::boot(&template, "bios", &root.0);
        vm.wait_console(READY, 1, BOOT);
        vm.ctl_ok(&["keys", "add", key.public.to_str().unwrap()]);
        let sleep =
            "[run]\ncommand = [\"/bin/busybox\", \"sleep\", \"100000\"]\nuid = 1234\ngid = 1234\n";
        let nvb = key.busybox_bundle(&root.0, "sleeper", sleep);
        vm.ctl_ok(&["bundles", "install", nvb.to_str().unwrap()]);
        vm.wait_for("sleeper running", Duration::from_secs(60), || {
            vm.service_running("sleeper").then_some(())
        });
        let t = vm.admin_token().unwrap();
        vm.power_off();
        t
    };

    // --- 2. UEFI, no cut ------------------------------------------------------
    let timing = {
        let (dir, disk) = fresh(&root.0, "uefi", &template);
        let mut vm = Vm::boot(&disk, "uefi", &dir);
        vm.wait_console(READY, 1, BOOT);
        let v = vm.update_status();
        assert_eq!(v["loader"], "uefi", "{v}");
        assert_eq!(v["running_slot"], "A", "{v}");
        assert_eq!(v["default_slot"], "A", "{v}");
        vm.wait_for("sleeper running", Duration::from_secs(60), || {
            vm.service_running("sleeper").then_some(())
        });
        let t = Instant::now();
        let out = vm.ctl_ok(&["update", good.to_str().unwrap()]);
        let apply = t.elapsed();
        assert!(out.contains("written to slot B"), "{out}");
        let v = vm.update_status();
        assert_eq!(v["armed_try"], "nuvol-B.conf", "{v}");
        assert_eq!(v["update"]["phase"], "pending", "{v}");
        let trial = vm.reboot_via_api();
        let v = vm.update_status();
        assert_eq!(v["running_slot"], "B", "{v}");
        assert!(
            v["armed_try"].is_null(),
            "systemd-boot deleted its one-shot variable: {v}"
        );
        let (v, mark) = wait_good(&vm);
        assert_eq!(v["default_slot"], "B", "{v}");
        let out = vm.ctl_ok(&["update"]);
        assert!(
            out.contains("running slot B (99.0.0), default slot B"),
            "{out}"
        );
        let plain = vm.reboot_via_api();
        let v = vm.update_status();
        assert_eq!(v["running_slot"], "B", "UEFI stays in B: {v}");
        vm.power_off();
        eprintln!(
            "bench: uefi update: artefact {} bytes, apply {:.1} s, trial boot {:.1} s, ready to marked good {:.1} s (settle {SETTLE_S} s), plain reboot {:.1} s",
            std::fs::metadata(&good).map_or(0, |m| m.len()),
            apply.as_secs_f64(),
            trial.as_secs_f64(),
            mark.as_secs_f64(),
            plain.as_secs_f64()
        );
        Timing { apply, mark }
    };

    // --- 3. power cuts --------------------------------------------------------
    let first_fw = (seed & 1) as usize;
    let first_phase = ((seed >> 1) % 3) as usize;
    for i in 0..points {
        let fw = ["bios", "uefi"][(first_fw + i) % 2];
        let phase = ["apply", "trial", "mark"][(first_phase + i) % 3];
        let (dir, disk) = fresh(&root.0, &format!("cut-{i}"), &template);
        let mut vm = Vm::boot(&disk, fw, &dir);
        let boot = vm.wait_console(READY, 1, BOOT);
        let x = rng.unit();
        // Over the apply; over a whole boot; from halfway through the
        // settling time to past the mark-good writes.
        let after = match phase {
            "apply" => timing.apply.mul_f64(x),
            "trial" => boot.mul_f64(x),
            _ => timing.mark.mul_f64(0.5 + 0.7 * x),
        };
        let seen = run_with_cut(&mut vm, &good, phase, after);
        eprintln!(
            "power cut {}/{points}: {fw}, {:.2} s into {phase}; before it: {seen:?}",
            i + 1,
            after.as_secs_f64()
        );
        // The next boot, and on to where an uncut run ends.
        let mut vm = Vm::boot(&disk, fw, &dir);
        vm.wait_console(READY, 1, BOOT);
        assert_eq!(
            vm.admin_token().as_deref(),
            Some(token.as_str()),
            "the data partition kept the admin token"
        );
        let mut v = vm.update_status();
        let mut reboots = 0;
        while v["update"]["phase"] == "pending" {
            if v["running_slot"] == v["update"]["slot"] {
                v = wait_good(&vm).0;
                break;
            }
            assert!(!v["armed_try"].is_null(), "a pending update is armed: {v}");
            assert!(reboots < 2, "still not in B after {reboots} reboots: {v}");
            vm.reboot_via_api();
            reboots += 1;
            v = vm.update_status();
        }
        if seen.applied {
            assert!(!v["update"].is_null(), "applied, yet no record: {v}");
        }
        if v["update"].is_null() {
            // Cut before the update was recorded: the old slot, nothing
            // armed, and the same update goes through at once.
            assert_eq!(v["running_slot"], "A", "{v}");
            assert_eq!(v["default_slot"], "A", "{v}");
            assert!(v["armed_try"].is_null(), "{v}");
            let out = vm.ctl_ok(&["update", good.to_str().unwrap()]);
            assert!(out.contains("written to slot B"), "{out}");
        } else {
            assert_eq!(v["update"]["phase"], "good", "{v}");
            assert_eq!(v["running_slot"], "B", "{v}");
            assert_eq!(v["default_slot"], "B", "{v}");
            let tries = v["update"]["tries"].as_u64().unwrap_or(0);
            assert!(tries <= 2, "one cut spends at most one try: {v}");
        }
        vm.wait_for("sleeper running again", Duration::from_secs(60), || {
            vm.service_running("sleeper").then_some(())
        });
        eprintln!(
            "power cut {}/{points}: ends in slot {} ({}, tries {}, {reboots} more reboots)",
            i + 1,
            v["running_slot"].as_str().unwrap_or("?"),
            v["update"]["phase"].as_str().unwrap_or("no update"),
            v["update"]["tries"]
        );
        if seen.good {
            assert_eq!(v["update"]["phase"], "good");
        }
        vm.kill();
        let _ = std::fs::remove_file(&disk);
    }
    eprintln!(
        "bench: update power-cut test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
