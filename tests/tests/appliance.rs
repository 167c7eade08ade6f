//! The appliance end to end, on the booted image, driven as a user would:
//! the admin token read off the console, a publisher key trusted with
//! `nuvol ctl`, the recipes (web, Syncthing, etcd) installed through the API
//! and through `nuvol ctl`, each answering on its own port through QEMU's
//! port forwarding, a reboot through the API after which everything comes
//! back with no human, and a remove that closes the port. Also the
//! unattended path (`[bundles] install` in nuvol.toml), a service that needs
//! time to flush on a planned reboot, and the hardware watchdog resetting a
//! box whose agent hangs.
//!
//! Needs `make image` and `make bundles` (the Makefile's `test-e2e` runs
//! both and sets `NUVOL_IMAGE`, `NUVOL_BIN`, `NUVOL_BUNDLES`).

use std::path::Path;
use std::time::Duration;

use nuvol_e2e::{
    copy_to_boot, disk_copy, key_line, recipes, write_config, BootOptions, Scratch, TestKey, Vm,
};

const BOOT: Duration = Duration::from_secs(240);
/// Go services start slowly under TCG on a loaded 2-core host.
const SERVE: Duration = Duration::from_secs(300);
const READY: &str = "nuvol: ready: panel at";
const WEB: u16 = 8080;
const ETCD: u16 = 2379;
const SYNCTHING: u16 = 8384;

// --- the recipes' own answers ---------------------------------------------

fn web_page(vm: &Vm) -> Option<String> {
    match nuvol_e2e::http(vm.fwd(WEB), "GET", "/") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Syncthing's REST API answers (`/rest/system/ping`), asked as its GUI asks.
fn syncthing_healthy(vm: &Vm) -> bool {
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], vm.fwd(SYNCTHING)));
    nuvol_e2e::syncthing::Gui::open(at)
        .and_then(|g| g.get("/rest/system/ping"))
        .is_some_and(|v| v["ping"] == "pong")
}

fn etcd_at(vm: &Vm) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], vm.fwd(ETCD)))
}

fn etcd_put(vm: &Vm, k: &str, v: &str) -> bool {
    nuvol_e2e::etcd::put(etcd_at(vm), k, v)
}

fn etcd_get(vm: &Vm, k: &str) -> Option<String> {
    nuvol_e2e::etcd::get(etcd_at(vm), k)
}

/// Wait until all three recipes answer on their forwarded ports.
fn all_three_serve(vm: &Vm) {
    let page = vm.wait_for("web page", SERVE, || web_page(vm));
    assert!(page.contains("It works"), "the web recipe's page: {page}");
    vm.wait_for("Syncthing health", SERVE, || {
        syncthing_healthy(vm).then_some(())
    });
    vm.wait_for("etcd put", SERVE, || {
        etcd_put(vm, "probe", "1").then_some(())
    });
}

/// The port of a removed service no longer answers: QEMU's forwarder
/// accepts on the host side, then the guest refuses and the connection
/// closes without an HTTP answer.
fn port_closed(vm: &Vm, guest: u16) {
    vm.wait_for(
        &format!("port {guest} closed"),
        Duration::from_secs(60),
        || {
            nuvol_e2e::http(vm.fwd(guest), "GET", "/")
                .is_err()
                .then_some(())
        },
    );
}

fn dev_key_line() -> String {
    key_line(&recipes().join("dev.pub"))
}

/// After a reboot was asked for: PID 1 says so, and the box is ready again
/// (the `readies`-th ready line on the console).
fn reboot_and_wait(vm: &mut Vm, readies: usize) {
    vm.wait_console(
        "nuvol-init: rebooting",
        readies - 1,
        Duration::from_secs(120),
    );
    vm.wait_console(READY, readies, BOOT);
}

fn options() -> BootOptions {
    BootOptions {
        https: false,
        forwards: vec![WEB, ETCD, SYNCTHING],
        ..BootOptions::default()
    }
}

/// SeaBIOS, plain HTTP: key trusted with `nuvol ctl keys add`, the three
/// recipes uploaded through the API, each serving; a reboot through the
/// API brings all three back (etcd still holds what was written); `nuvol
/// ctl bundles remove` closes the web port.
#[test]
fn bios_recipes_through_the_api_serve_and_survive_a_reboot() {
    let dir = Scratch::new("appliance-bios");
    let disk = disk_copy(&dir.0, 2048);
    write_config(
        &disk,
        "hostname = \"e2e-appliance\"\n[panel]\nallow_plain_http = true\n",
    );
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &options());
    vm.wait_console(READY, 1, BOOT);
    assert!(vm.admin_token().is_some(), "admin token on the console");

    vm.ctl_ok(&["keys", "add", recipes().join("dev.pub").to_str().unwrap()]);
    let keys = vm.ctl_ok(&["--json", "keys", "list"]);
    assert!(keys.contains("DEVELOPMENT ONLY"), "{keys}");

    for name in ["web", "syncthing", "etcd"] {
        let (code, body) = vm
            .upload_admin("/api/v1/bundles", &recipes().join(format!("{name}.nvb")))
            .unwrap();
        assert_eq!(code, 201, "install {name} through the API: {body}");
    }
    all_three_serve(&vm);
    assert!(etcd_put(&vm, "greeting", "hello from before the reboot"));

    let (code, body) = vm.http_admin("POST", "/api/v1/system/reboot").unwrap();
    assert_eq!(code, 202, "{body}");
    reboot_and_wait(&mut vm, 2);
    all_three_serve(&vm);
    assert_eq!(
        etcd_get(&vm, "greeting").as_deref(),
        Some("hello from before the reboot"),
        "etcd's volume survives the reboot"
    );

    vm.ctl_ok(&["bundles", "remove", "web"]);
    port_closed(&vm, WEB);
    assert!(syncthing_healthy(&vm), "the others keep serving");
    vm.power_off();
}

/// OVMF, HTTPS with the console's certificate fingerprint: everything
/// through `nuvol ctl` (key, the three installs, reboot, remove).
#[test]
fn uefi_recipes_through_ctl_over_https_serve_and_survive_a_reboot() {
    let dir = Scratch::new("appliance-uefi");
    let disk = disk_copy(&dir.0, 2048);
    write_config(&disk, "hostname = \"e2e-appliance-uefi\"\n");
    let opts = BootOptions {
        https: true,
        ..options()
    };
    let mut vm = Vm::boot_opts(&disk, "uefi", &dir.0, &opts);
    vm.wait_console(READY, 1, BOOT);
    assert!(vm.fingerprint().is_some(), "fingerprint on the console");

    vm.ctl_ok(&["keys", "add", recipes().join("dev.pub").to_str().unwrap()]);
    for name in ["web", "syncthing", "etcd"] {
        let f = recipes().join(format!("{name}.nvb"));
        vm.ctl_ok(&["bundles", "install", "--yes", f.to_str().unwrap()]);
    }
    all_three_serve(&vm);
    let listed = vm.ctl_ok(&["bundles", "list"]);
    for name in ["web", "syncthing", "etcd"] {
        assert!(listed.contains(name), "{listed}");
    }

    vm.ctl_ok(&["reboot"]);
    reboot_and_wait(&mut vm, 2);
    all_three_serve(&vm);

    vm.ctl_ok(&["bundles", "remove", "etcd"]);
    vm.wait_for("etcd port closed", Duration::from_secs(60), || {
        (!etcd_put(&vm, "probe", "2")).then_some(())
    });
    assert!(web_page(&vm).is_some(), "the others keep serving");
    vm.power_off();
}

/// A bundle with one service that serves its volume over busybox httpd and,
/// on SIGTERM, takes `flush_s` seconds before it writes `flushed.txt` there
/// (a database flushing its cache), signed with a key made here.
fn flush_bundle(dir: &Path, key: &TestKey, flush_s: u32) -> std::path::PathBuf {
    let script = format!(
        "trap 'sleep {flush_s}; echo flushed > /srv/data/flushed.txt; exit 0' TERM; \
         /bin/busybox httpd -f -p 8090 -h /srv/data & wait"
    );
    key.busybox_bundle(
        dir,
        "flush",
        &format!(
            "[run]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\nuid = 1234\ngid = 1234\nrestart = \"always\"\n\
             [[ports]]\nname = \"http\"\nport = 8090\nprotocol = \"tcp\"\n\
             [[volumes]]\nname = \"data\"\npath = \"/srv/data\"\n"
        ),
    )
}

/// The unattended path: `[bundles] install` and `trusted_keys` in the
/// nuvol.toml on the boot partition, the bundle file beside it; after the
/// first boot the web recipe serves with no API call. Then a service that
/// needs 5 s to flush after SIGTERM gets them on a planned reboot; and an
/// agent that hangs (SIGSTOP) stops its heartbeats, so PID 1 stops feeding
/// the i6300esb watchdog and the VM resets by itself.
#[test]
fn unattended_install_planned_reboot_flush_and_watchdog_reset() {
    let dir = Scratch::new("appliance-unattended");
    let disk = disk_copy(&dir.0, 1024);
    copy_to_boot(&disk, &recipes().join("web.nvb"), "bundles/web.nvb");
    write_config(
        &disk,
        &format!(
            "hostname = \"e2e-unattended\"\n[debug]\ntest_hooks = true\n[panel]\nallow_plain_http = true\n\
             [bundles]\ntrusted_keys = [\"{}\"]\ninstall = [\"bundles/web.nvb\"]\n",
            dev_key_line()
        ),
    );
    let opts = BootOptions {
        https: false,
        forwards: vec![WEB, 8090],
        ..BootOptions::default()
    };
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &opts);
    vm.wait_console(READY, 1, BOOT);
    let page = vm.wait_for("web page from [bundles] install", SERVE, || web_page(&vm));
    assert!(page.contains("It works"), "{page}");

    // The agent dies between creating a container and starting it: the
    // created child must not keep the agent's listener (port 80) or locks,
    // nor wait forever; PID 1 restarts the agent, which gets its panel back
    // and starts the service again.
    let (code, body) = vm
        .http_admin("POST", "/api/v1/debug/kill-after-create")
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let _ = vm.http_admin("POST", "/api/v1/services/web/restart");
    vm.wait_console(
        "agent exited (killed by SIGKILL)",
        1,
        Duration::from_secs(60),
    );
    vm.wait_console(READY, 2, Duration::from_secs(90));
    vm.wait_http("/api/v1/status", Duration::from_secs(30));
    vm.wait_for("web page after the agent died mid-start", SERVE, || {
        web_page(&vm)
    });

    // A service that flushes for 5 s after SIGTERM.
    let key = TestKey::new(&dir.0);
    let nvb = flush_bundle(&dir.0, &key, 5);
    vm.ctl_ok(&["keys", "add", key.public.to_str().unwrap()]);
    let (code, body) = vm.upload_admin("/api/v1/bundles", &nvb).unwrap();
    assert_eq!(code, 201, "{body}");
    vm.wait_for("flush service", SERVE, || {
        matches!(
            nuvol_e2e::http(vm.fwd(8090), "GET", "/flushed.txt"),
            Ok((404, _))
        )
        .then_some(())
    });
    let (code, _) = vm.http_admin("POST", "/api/v1/system/reboot").unwrap();
    assert_eq!(code, 202);
    vm.wait_console("nuvol-init: rebooting", 1, Duration::from_secs(120));
    vm.wait_console(READY, 3, BOOT);
    let flushed = vm.wait_for(
        "flush service after the reboot",
        SERVE,
        || match nuvol_e2e::http(vm.fwd(8090), "GET", "/flushed.txt") {
            Ok((200, b)) => Some(b),
            Ok((404, _)) => Some(String::new()),
            _ => None,
        },
    );
    assert_eq!(
        flushed.trim(),
        "flushed",
        "the service got its 5 s after SIGTERM on the planned reboot; console:\n{}",
        nuvol_e2e::tail(&vm.console())
    );

    // The agent hangs: no heartbeats, no watchdog food, a reset. PID 1 never
    // says "rebooting": the hardware does it.
    const BOOTED: &str = "nuvol-init: left the initramfs rootfs";
    let boots = vm.console().matches(BOOTED).count();
    let _ = nuvol_e2e::http_request(
        vm.port,
        "POST",
        "/api/v1/debug/hang",
        vm.admin_token().as_deref(),
        &[],
        b"",
    );
    vm.wait_console("silent for", 1, Duration::from_secs(120));
    vm.wait_console(BOOTED, boots + 1, Duration::from_secs(180));
    let c = vm.console();
    assert_eq!(
        c.matches("nuvol-init: rebooting").count(),
        1,
        "the watchdog reset the box, PID 1 did not reboot it"
    );
    vm.wait_console(READY, 4, BOOT);
    vm.wait_for("web page after the watchdog reset", SERVE, || web_page(&vm));
    vm.power_off();
}
