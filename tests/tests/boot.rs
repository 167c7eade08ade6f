//! The built image, booted for real in QEMU (TCG here, KVM where it works).

use std::time::Duration;

use nuvol_e2e::{disk_copy, write_config, Scratch, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(180);
const READY: &str = "nuvol: ready: panel at";

fn status(vm: &mut Vm) -> Value {
    serde_json::from_str(&vm.wait_http("/api/v1/status", Duration::from_secs(60))).unwrap()
}

fn data_disk(st: &Value) -> &Value {
    st["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["mount"] == "/data")
        .expect("/data in status")
}

/// `GET /api/v1/network` (public): the NIC holds a bound DHCP lease from
/// QEMU user-net (10.0.2.15, router and server 10.0.2.2, DNS 10.0.2.3) and
/// the default route via 10.0.2.2 was installed from it.
fn assert_user_net_lease(vm: &mut Vm) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let net: Value = loop {
        let net: Value =
            serde_json::from_str(&vm.wait_http("/api/v1/network", Duration::from_secs(60)))
                .unwrap();
        let bound = net["interfaces"]
            .as_array()
            .is_some_and(|ifs| ifs.iter().any(|i| i["dhcp"]["state"] == "bound"));
        if bound || std::time::Instant::now() > deadline {
            break net;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let ifs = net["interfaces"].as_array().expect("interfaces");
    let nic = ifs
        .iter()
        .find(|i| i["dhcp"]["state"] == "bound")
        .unwrap_or_else(|| panic!("no NIC with a bound DHCP lease: {net}"));
    let lease = &nic["dhcp"]["lease"];
    assert_eq!(lease["address"], "10.0.2.15/24", "{nic}");
    assert_eq!(lease["server"], "10.0.2.2", "{nic}");
    assert_eq!(lease["routers"][0], "10.0.2.2", "{nic}");
    assert!(
        lease["expires_at"].as_u64() > lease["obtained"].as_u64(),
        "{nic}"
    );
    assert!(
        nic["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.0.2.15/24"),
        "{nic}"
    );
    assert_eq!(nic["managed"], true, "{nic}");
    let routes = net["routes"].as_array().expect("routes");
    assert!(
        routes.iter().any(|r| r["destination"] == "0.0.0.0/0"
            && r["gateway"] == "10.0.2.2"
            && r["interface"] == nic["name"]
            && r["protocol"] == "dhcp"),
        "default route via 10.0.2.2 from DHCP: {routes:?}"
    );
    assert!(
        net["dns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "10.0.2.3"),
        "QEMU's DNS server from the lease: {net}"
    );
    assert_eq!(net["config_error"], Value::Null, "{net}");
}

/// SeaBIOS: boot, status fields, the data partition grown to fill a bigger
/// disk, the agent SIGKILLed and restarted by PID 1, a clean poweroff, and a
/// second boot that finds the data written by the first.
#[test]
fn bios_boot_status_restart_poweroff_and_persistence() {
    let dir = Scratch::new("bios");
    let disk = disk_copy(&dir.0, 256);
    write_config(
        &disk,
        "hostname = \"e2e-bios\"\n[debug]\ntest_hooks = true\n# The test speaks plain HTTP through QEMU user-net (guest :80 only).\n[panel]\nallow_plain_http = true\n",
    );

    let mut vm = Vm::boot(&disk, "bios", &dir.0);
    let t = vm.wait_console(READY, 1, BOOT);
    eprintln!("bios: ready after {:.1} s", t.as_secs_f64());
    let st = status(&mut vm);
    assert_eq!(st["hostname"], "e2e-bios");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["boot_count"], 1);
    assert!(st["uptime_s"].as_u64().is_some());
    assert!(st["memory"]["total_bytes"].as_u64().unwrap() > 256 << 20);
    assert_eq!(st["load"].as_array().unwrap().len(), 3);
    assert_eq!(st["config"]["problem"], Value::Null);
    let data = data_disk(&st);
    assert_eq!(data["fs"], "ext4");
    assert!(
        data["total_bytes"].as_u64().unwrap() > 200 << 20,
        "data fills the 256 MiB disk: {data}"
    );
    let ifs = st["interfaces"].as_array().unwrap();
    let eth = ifs.iter().find(|i| i["name"] != "lo").expect("a NIC");
    assert!(
        eth["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("10.0.2.")),
        "DHCP address from QEMU user-net: {eth}"
    );
    assert_user_net_lease(&mut vm);
    let node_id = st["node_id"].as_str().unwrap().to_string();
    let (code, page) = vm.http("GET", "/").unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("e2e-bios") && page.contains("/data"),
        "{page}"
    );

    // The agent dies hard; PID 1 restarts it and the panel comes back.
    // Without the admin token (printed on the console) the hook is closed.
    let (code, _) = vm.http("POST", "/api/v1/debug/kill").unwrap();
    assert_eq!(code, 401, "state-changing routes need the admin token");
    assert!(vm.admin_token().is_some_and(|t| t.len() == 64));
    let _ = vm.http_admin("POST", "/api/v1/debug/kill");
    vm.wait_console(
        "agent exited (killed by SIGKILL)",
        1,
        Duration::from_secs(30),
    );
    vm.wait_console(READY, 2, Duration::from_secs(60));
    let st = status(&mut vm);
    assert_eq!(st["node_id"], node_id.as_str());
    assert_eq!(st["boot_count"], 1, "an agent restart is not a boot");

    vm.power_off();
    drop(vm);

    let mut vm = Vm::boot(&disk, "bios", &dir.0);
    vm.wait_console(READY, 1, BOOT);
    let st = status(&mut vm);
    assert_eq!(st["node_id"], node_id.as_str(), "node id persisted on data");
    assert_eq!(st["boot_count"], 2, "boot counter persisted on data");
    assert!(data_disk(&st)["total_bytes"].as_u64().unwrap() > 200 << 20);
    vm.power_off();
}

/// OVMF (UEFI) with a broken provisioning file: the box still boots with
/// safe defaults, and the console and status page name file, line, problem.
#[test]
fn uefi_boot_with_bad_config_uses_defaults_and_says_why() {
    let dir = Scratch::new("uefi");
    let disk = disk_copy(&dir.0, 64);
    // A value of the wrong type refuses the file (an unknown key would
    // only be skipped, see update.rs).
    write_config(
        &disk,
        "hostname = \"e2e-uefi\"\n[panel]\nport = \"eighty\"\n",
    );

    // HTTPS forwarded to a host port as `make qemu` does: the guest learns
    // the public port from the SMBIOS OEM string run.sh passes.
    let https_port = nuvol_e2e::free_port();
    let mut vm = Vm::boot_with(&disk, "uefi", &dir.0, Some(https_port));
    let t = vm.wait_console(READY, 1, BOOT);
    eprintln!("uefi: ready after {:.1} s", t.as_secs_f64());
    let c = vm.console();
    assert!(
        c.contains("CONFIG PROBLEM: /boot/nuvol.toml:3:") && c.contains("eighty"),
        "{}",
        nuvol_e2e::tail(&c)
    );
    let st = status(&mut vm);
    assert_eq!(st["hostname"], "nuvol", "defaults in force");
    let problem = st["config"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("/boot/nuvol.toml:3:") && problem.contains("eighty"),
        "{problem}"
    );
    let (_, page) = vm.http("GET", "/").unwrap();
    assert!(
        page.contains("config-problem") && page.contains("nuvol.toml:3:"),
        "{page}"
    );
    // Plain HTTP redirects everything private to HTTPS, at the forwarded port.
    let (code, text) = nuvol_e2e::http_full(vm.port, "GET", "/settings", None).unwrap();
    let want = format!("location: https://nuvol:{https_port}/settings");
    assert!(
        code == 308 && text.to_ascii_lowercase().contains(&want),
        "{code} {text}"
    );
    vm.power_off();
}
