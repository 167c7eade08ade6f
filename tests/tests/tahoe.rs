//! The Tahoe-LAFS recipe on the booted image, driven as a user would: the
//! development key trusted and `tahoe.nvb` installed with `nuvol ctl`, the
//! one-box grid (introducer, storage node, web gateway) made by the bundle
//! on its first start, a file PUT through Tahoe's web API on the forwarded
//! port and read back by its capability; after a reboot through the API the
//! same capability still reads the same bytes (the shares and the node's
//! keys live in the bundle's volume). Prints how long the install took to
//! turn healthy and the service's memory.
//!
//! In `make test` (about 100-135 s under TCG); `NUVOL_IMAGE`, `NUVOL_BIN`,
//! `NUVOL_BUNDLES` as for the other e2e tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nuvol_e2e::tahoe::{connected_servers, get, payload, put};
use nuvol_e2e::{disk_copy, recipes, write_config, BootOptions, Scratch, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
/// Two Python processes importing Twisted and cryptography, one after the
/// other (the node needs the introducer's fURL), under TCG.
const SERVE: Duration = Duration::from_secs(600);
const READY: &str = "nuvol: ready: panel at";
const WEB: u16 = 3456;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn gateway(vm: &Vm) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], vm.fwd(WEB)))
}

fn tahoe_service(vm: &Vm) -> Option<Value> {
    let (code, body) = vm.http_admin("GET", "/api/v1/local-services").ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<Value>(&body)
        .ok()?
        .as_array()?
        .iter()
        .find(|s| s["name"] == "tahoe")
        .cloned()
}

fn wait_healthy(vm: &Vm) -> Value {
    vm.wait_for("the tahoe service healthy", SERVE, || {
        tahoe_service(vm).filter(|s| s["state"] == "running" && s["health"] == "healthy")
    })
}

fn mib(bytes: &Value) -> f64 {
    bytes.as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

#[test]
fn tahoe_one_box_grid_stores_a_file_that_survives_a_reboot() {
    let test_start = Instant::now();
    let dir = Scratch::new("tahoe");
    // Room for the bundle, the shares and the 200M the storage node keeps
    // free (TAHOE_RESERVED_SPACE in the recipe).
    let disk = disk_copy(&dir.0, 2048);
    write_config(
        &disk,
        "hostname = \"e2e-tahoe\"\n[panel]\nallow_plain_http = true\n",
    );
    let opts = BootOptions {
        forwards: vec![WEB],
        ..BootOptions::default()
    };
    // A small box: 256 MiB, where the grid's two Python processes (about
    // 130 MiB of their own memory) run beside the agent.
    let mut vm = Vm::boot_opts_args(
        &disk,
        "bios",
        &dir.0,
        &opts,
        &["--mem".as_ref(), "256".as_ref()],
    );
    vm.wait_console(READY, 1, BOOT);

    vm.ctl_ok(&["keys", "add", recipes().join("dev.pub").to_str().unwrap()]);
    let bundle = recipes().join("tahoe.nvb");
    assert!(
        bundle.exists(),
        "no {} — run `recipes/build-all.sh out/bundles tahoe`",
        bundle.display()
    );
    let installed = Instant::now();
    vm.ctl_ok(&["bundles", "install", "--yes", bundle.to_str().unwrap()]);
    let healthy = wait_healthy(&vm);
    let to_healthy = installed.elapsed();

    let data = payload(200_000, SEED);
    let cap = vm.wait_for("a PUT /uri the grid takes", SERVE, || {
        put(gateway(&vm), &data)
    });
    let to_stored = installed.elapsed();
    assert!(
        cap.starts_with("URI:CHK:"),
        "stored as shares on the storage node, not inside the cap: {cap}"
    );
    assert_eq!(
        connected_servers(gateway(&vm)),
        1,
        "the gateway knows its one storage server through the introducer"
    );
    let back = get(gateway(&vm), &cap).expect("GET /uri/<cap> answers 200");
    assert!(back == data, "the bytes read back are the bytes stored");
    // Another file is another capability (the cap is the file's, not a
    // constant of the gateway).
    let other = vm.wait_for("a second PUT", Duration::from_secs(120), || {
        put(gateway(&vm), &payload(1000, SEED))
    });
    assert_ne!(other, cap);

    let service = tahoe_service(&vm).expect("the tahoe service listed");
    eprintln!(
        "tahoe: install to healthy {:.1} s, to the first stored file {:.1} s; \
         memory {:.1} MiB when healthy, {:.1} MiB after two uploads; {} processes",
        to_healthy.as_secs_f64(),
        to_stored.as_secs_f64(),
        mib(&healthy["memory_bytes"]),
        mib(&service["memory_bytes"]),
        service["processes"]
    );
    assert_eq!(service["restarts"], 0, "no restart on the way: {service}");

    // The grid's state (node keys, introducer fURL, shares) is in the
    // bundle's volume: after a reboot the same cap reads the same bytes.
    let rebooted = Instant::now();
    vm.reboot_via_api();
    wait_healthy(&vm);
    let again = vm.wait_for("GET of the cap after the reboot", SERVE, || {
        get(gateway(&vm), &cap)
    });
    eprintln!(
        "tahoe: reboot to the file read again {:.1} s",
        rebooted.elapsed().as_secs_f64()
    );
    assert!(again == data, "the same bytes after the reboot");

    vm.power_off();
    eprintln!(
        "tahoe: whole test {:.1} s",
        test_start.elapsed().as_secs_f64()
    );
}
