//! Factory reset on the booted image, with the product's own `nuvol init`
//! (docs/boot.md, "Factory reset"). One disk, five boots, reused:
//!
//! 1. `nuvol ctl reset --yes` on a box with a test bundle installed and
//!    its key trusted through the API: the box reboots; the old admin token
//!    is refused, a new one is on the console, a new node id; the API's
//!    bundle and key are gone, the `[bundles] install` bundle and
//!    `trusted_keys` key of nuvol.toml are back.
//! 2. The same again, from the panel's Settings form (box ticked), with the
//!    test hook `POST /api/v1/debug/slow-reset`: QEMU is killed (a power cut) at the console line of the pause in the
//!    middle of the wipe; the next boot finishes it (attempt 2 of 3).
//! 3. A `factory-reset` file put on the boot partition of the stopped
//!    image: the next boot resets and removes the file; the boot after
//!    that does not reset again.
//!
//! Needs `make image` (the Makefile's `test-e2e` sets `NUVOL_IMAGE` and
//! `NUVOL_BIN`) and Debian's busybox-static for the test bundles.

use std::path::Path;
use std::time::{Duration, Instant};

use nuvol_e2e::{
    boot_files, copy_to_boot, disk_copy, key_line, tail, write_config, BootOptions, Scratch,
    TestKey, Vm,
};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";
const WIPED: &str = "nuvol-init: factory reset: done: ";
const PAUSING: &str = "factory reset: test hook: pausing";

/// An authenticated GET answering 200 with JSON (retried: right after the
/// ready line QEMU's port forward may still reset a connection).
fn get_json(vm: &Vm, path: &str) -> Value {
    vm.wait_for(
        &format!("GET {path}"),
        Duration::from_secs(60),
        || match vm.http_admin("GET", path) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        },
    )
}

fn bundle_names(vm: &Vm) -> Vec<String> {
    let mut v: Vec<String> = get_json(vm, "/api/v1/bundles")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

fn trusted_keys(vm: &Vm) -> Vec<String> {
    get_json(vm, "/api/v1/keys")["trusted"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k["key_id"].as_str().map(str::to_string))
        .collect()
}

fn node_id(vm: &Vm) -> String {
    let v: Value = vm.wait_for("GET /api/v1/status", Duration::from_secs(60), || {
        match vm.http("GET", "/api/v1/status") {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    });
    v["node_id"].as_str().unwrap_or_default().to_string()
}

/// Wait until `[bundles] install` put `prov` back (provisioning runs
/// beside the panel, after the ready line).
fn wait_provisioned(vm: &Vm) {
    vm.wait_for("[bundles] install from nuvol.toml", BOOT, || {
        bundle_names(vm).contains(&"prov".to_string()).then_some(())
    });
}

/// Log in as a browser does and post the Settings page's factory reset
/// form with its box ticked; returns the page the browser shows.
fn panel_reset(vm: &Vm) -> String {
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (cookie, csrf) = vm.login().expect("panel login");
    let ck = ("Cookie", cookie.as_str());
    let (code, settings) =
        nuvol_e2e::http_request(vm.port, "GET", "/settings", None, &[ck], b"").unwrap();
    assert_eq!(code, 200);
    assert!(settings.contains("id=factory-reset"), "{settings}");
    let (code, page) = nuvol_e2e::http_request(
        vm.port,
        "POST",
        &format!("/api/v1/reset?csrf={csrf}&back=%2Fsettings"),
        None,
        &[ck, ("Accept", "text/html"), form],
        b"confirm=yes",
    )
    .unwrap();
    assert_eq!(code, 200, "{page}");
    page
}

/// What a box in service has beyond nuvol.toml: a publisher key trusted and
/// a bundle installed through `nuvol ctl`.
fn use_the_box(vm: &Vm, key: &TestKey, nvb: &Path) -> String {
    let out = vm.ctl_ok(&["keys", "add", key.public.to_str().unwrap()]);
    let id = out.split_whitespace().last().unwrap_or("").to_string();
    vm.ctl_ok(&["bundles", "install", nvb.to_str().unwrap()]);
    assert!(bundle_names(vm).contains(&"sleeper".to_string()));
    assert!(trusted_keys(vm).len() >= 2, "{:?}", trusted_keys(vm));
    id
}

/// The state right after a reset: nuvol.toml's key and bundle only.
fn assert_fresh(vm: &Vm, prov_key: &str, what: &str) {
    wait_provisioned(vm);
    assert_eq!(bundle_names(vm), ["prov"], "{what}: bundles");
    assert_eq!(trusted_keys(vm), [prov_key], "{what}: keys");
}

#[test]
fn factory_reset_from_ctl_after_a_power_cut_and_from_the_boot_partition() {
    let t0 = Instant::now();
    let dir = Scratch::new("reset");
    let disk = disk_copy(&dir.0, 1024);
    let prov = TestKey::new(&dir.0.join("prov-key").tap_mkdir());
    let user = TestKey::new(&dir.0.join("user-key").tap_mkdir());
    let sleep =
        "[run]\ncommand = [\"/bin/busybox\", \"sleep\", \"100000\"]\nuid = 1234\ngid = 1234\n";
    let prov_nvb = prov.busybox_bundle(&dir.0, "prov", sleep);
    let user_nvb = user.busybox_bundle(&dir.0, "sleeper", sleep);
    copy_to_boot(&disk, &prov_nvb, "bundles/prov.nvb");
    write_config(
        &disk,
        &format!(
            "hostname = \"e2e-reset\"\n[debug]\ntest_hooks = true\n[panel]\nallow_plain_http = true\n\
             [bundles]\ntrusted_keys = [\"{}\"]\ninstall = [\"bundles/prov.nvb\"]\n",
            key_line(&prov.public)
        ),
    );
    let opts = BootOptions::default();

    // --- 1. nuvol ctl reset --yes ------------------------------------------
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &opts);
    let ready = vm.wait_console(READY, 1, BOOT);
    eprintln!("bench: first boot ready after {:.1} s", ready.as_secs_f64());
    wait_provisioned(&vm);
    let prov_key = trusted_keys(&vm);
    assert_eq!(prov_key.len(), 1, "{prov_key:?}");
    let prov_key = prov_key[0].clone();
    let user_key = use_the_box(&vm, &user, &user_nvb);
    let (token1, node1) = (vm.admin_token().unwrap(), node_id(&vm));

    // Without --yes it asks; no answer resets nothing.
    let (code, _, err) = vm.ctl(&["reset"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing was reset"), "{err}");
    // And the API wants the confirmation in the body.
    let (code, body) = vm.http_admin("POST", "/api/v1/reset").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("confirm_required"), "{body}");
    assert!(!vm.console().contains("factory reset requested"));

    let asked = Instant::now();
    let out = vm.ctl_ok(&["reset", "--yes"]);
    assert!(out.contains("the box is resetting"), "{out}");
    vm.wait_console("nuvol-init: rebooting", 1, Duration::from_secs(120));
    vm.wait_console(WIPED, 1, BOOT);
    vm.wait_console(READY, 2, BOOT);
    eprintln!(
        "bench: ctl reset to ready again {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    let c = vm.console();
    show_reset_lines(&c);
    assert!(
        c.contains("factory reset requested by the API (panel or nuvol ctl)")
            && c.contains("(attempt 1 of 3)"),
        "{}",
        tail(&c)
    );
    new_token(&vm, &token1);
    assert_ne!(node_id(&vm), node1, "a new node identity");
    let (code, _) = nuvol_e2e::http_auth(vm.port, "GET", "/api/v1/bundles", Some(&token1)).unwrap();
    assert_eq!(code, 401, "the old admin token is refused");
    assert_fresh(&vm, &prov_key, "after ctl reset");
    assert!(!trusted_keys(&vm).contains(&user_key));

    // --- 2. a power cut in the middle of the wipe ---------------------------
    use_the_box(&vm, &user, &user_nvb);
    let (code, body) = vm.http_admin("POST", "/api/v1/debug/slow-reset").unwrap();
    assert_eq!(code, 200, "{body}");
    // This time from the panel: the Settings page's form, box ticked.
    let page = panel_reset(&vm);
    assert!(page.contains("factory reset recorded"), "{page}");
    vm.wait_console(PAUSING, 1, BOOT);
    vm.kill();
    show_reset_lines(&vm.console());
    let token_before_cut = vm.admin_token().unwrap();
    drop(vm);

    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &opts);
    vm.wait_console(WIPED, 1, BOOT);
    vm.wait_console(READY, 1, BOOT);
    let c = vm.console();
    show_reset_lines(&c);
    assert!(c.contains("(attempt 2 of 3)"), "{}", tail(&c));
    assert!(
        !c.contains(PAUSING),
        "the pause is for the first attempt only"
    );
    new_token(&vm, &token_before_cut);
    assert_fresh(&vm, &prov_key, "after the cut wipe was finished");

    // --- 3. the factory-reset file on the boot partition --------------------
    use_the_box(&vm, &user, &user_nvb);
    let token3 = vm.admin_token().unwrap();
    vm.power_off();
    drop(vm);
    let empty = dir.0.join("factory-reset");
    std::fs::write(&empty, "").unwrap();
    copy_to_boot(&disk, &empty, "factory-reset");
    assert!(boot_files(&disk).contains(&"factory-reset".to_string()));

    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &opts);
    vm.wait_console(WIPED, 1, BOOT);
    vm.wait_console(READY, 1, BOOT);
    let c = vm.console();
    show_reset_lines(&c);
    assert!(
        c.contains("factory reset requested by the factory-reset file on the boot partition")
            && c.contains("factory reset: removed /boot/factory-reset"),
        "{}",
        tail(&c)
    );
    let token4 = new_token(&vm, &token3);
    assert_fresh(&vm, &prov_key, "after the boot partition's file");
    let node4 = node_id(&vm);

    // The next boot does not reset again.
    let (code, _) = vm.http_admin("POST", "/api/v1/system/reboot").unwrap();
    assert_eq!(code, 202);
    vm.wait_console("nuvol-init: rebooting", 1, Duration::from_secs(120));
    vm.wait_console(READY, 2, BOOT);
    let c = vm.console();
    assert_eq!(c.matches(WIPED).count(), 1, "{}", tail(&c));
    assert_eq!(vm.admin_token().unwrap(), token4, "same token");
    assert_eq!(node_id(&vm), node4, "same node");
    vm.power_off();
    drop(vm);
    let files = boot_files(&disk);
    assert!(
        !files
            .iter()
            .any(|f| f.eq_ignore_ascii_case("factory-reset")),
        "{files:?}"
    );
    assert!(files.contains(&"nuvol.toml".to_string()), "{files:?}");
    eprintln!("bench: reset test took {:.1} s", t0.elapsed().as_secs_f64());
}

/// The admin token this boot printed, which must differ from `old`.
fn new_token(vm: &Vm, old: &str) -> String {
    let t = vm.wait_for(
        "a new admin token on the console",
        Duration::from_secs(30),
        || vm.admin_token().filter(|t| t != old),
    );
    for l in vm.console().lines().filter(|l| l.contains("admin token")) {
        eprintln!("console: {}", l.trim());
    }
    t
}

/// The console's factory reset lines, for the test's output.
fn show_reset_lines(console: &str) {
    for l in console.lines().filter(|l| l.contains("factory reset")) {
        eprintln!("console: {}", l.trim());
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
