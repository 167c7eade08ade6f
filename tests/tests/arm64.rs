//! The arm64 image (`make image ARCH=arm64`) on `qemu-system-aarch64 -M
//! virt` with edk2 (UEFI, systemd-boot, the EFI zboot kernel), a Cortex-A53
//! under TCG, with the product's own `nuvol init` and agent:
//!
//! - it boots to ready and `/api/v1/status` says `aarch64`;
//! - a signed web bundle built for aarch64 installs through `nuvol ctl` and
//!   serves its page through a forwarded port; the x86_64 build of the same
//!   recipe is refused before anything is written, naming both
//!   architectures;
//! - a signed OS update for aarch64 (this image's own kernel and initramfs
//!   as version 99.0.0) goes to slot B, the box reboots into the try through
//!   systemd-boot's one-shot, marks it good (the web service runs again) and
//!   makes B the default in `loader.conf`;
//! - the power button powers it off cleanly;
//! - an x86_64 box and an arm64 box on one LAN find each other through
//!   gossip and list each other's services; each sees the other's bundle
//!   as built for another architecture and a fetch of it is refused.

use std::path::PathBuf;
use std::time::Duration;

use nuvol_e2e::community::Community;
use nuvol_e2e::{
    copy_from_boot, disk_copy_of, image_arm64, key_line, recipes, write_config, BootOptions,
    Scratch, TestKey, Vm,
};
use serde_json::Value;

/// TCG emulates every arm64 instruction: slower than the x86 boots.
const BOOT: Duration = Duration::from_secs(400);
const READY: &str = "nuvol: ready: panel at";

/// The recipes built for aarch64: `$NUVOL_BUNDLES_ARM64` or `out/bundles-arm64`.
fn recipes_arm64() -> PathBuf {
    let p = std::env::var_os("NUVOL_BUNDLES_ARM64")
        .map(PathBuf::from)
        .unwrap_or_else(|| nuvol_e2e::repo().join("out/bundles-arm64"));
    assert!(
        p.join("web.nvb").exists(),
        "no arm64 recipes in {} — run `make bundles ARCH=arm64`",
        p.display()
    );
    p
}

fn page(vm: &Vm) -> Option<String> {
    nuvol_e2e::http(vm.fwd(8080), "GET", "/")
        .ok()
        .filter(|(c, _)| *c == 200)
        .map(|(_, b)| b)
}

#[test]
fn arm64_boots_serves_a_bundle_reboots_and_powers_off() {
    let dir = Scratch::new("arm64");
    let disk = disk_copy_of(&image_arm64(), &dir.0, 1024);
    let key = TestKey::new(&dir.0);
    write_config(
        &disk,
        &format!(
            "hostname = \"e2e-arm64\"\n[panel]\nallow_plain_http = true\n\
             [debug]\ntest_hooks = true\nupdate_settle_secs = 5\n\
             [update]\ntrusted_keys = [\"{}\"]\n",
            key_line(&key.public)
        ),
    );
    // The image's own OS (slot A's files) as update 99.0.0 for aarch64.
    let (kernel, initrd) = (dir.0.join("bzImage"), dir.0.join("initrd.img"));
    copy_from_boot(&disk, "A/bzImage", &kernel);
    copy_from_boot(&disk, "A/initrd.img", &initrd);
    let update = dir.0.join("nuvol-arm64-99.0.0.nvu");
    nuvol_e2e::update_artefact(&key.secret, &kernel, &initrd, "99.0.0", "aarch64", &update);
    let opts = BootOptions {
        forwards: vec![8080],
        arch: Some("arm64"),
        ..BootOptions::default()
    };
    let mut vm = Vm::boot_opts_args(
        &disk,
        "uefi",
        &dir.0,
        &opts,
        &["--mem".as_ref(), "256".as_ref()],
    );
    let took = vm.wait_console(READY, 1, BOOT);
    eprintln!("arm64: ready in {} s", took.as_secs());

    let (code, body) = vm.http("GET", "/api/v1/status").unwrap();
    assert_eq!(code, 200, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["arch"], "aarch64", "{status}");
    assert_eq!(status["hostname"], "e2e-arm64", "{status}");
    let (_, out, _) = vm.ctl(&["status"]);
    assert!(
        out.contains("(aarch64)"),
        "ctl status names the architecture:\n{out}"
    );

    let arm = recipes_arm64();
    vm.ctl_ok(&["keys", "add", arm.join("dev.pub").to_str().unwrap()]);

    // The x86_64 build of the recipe: refused, nothing installed.
    let x86 = recipes().join("web.nvb");
    let (rc, out, err) = vm.ctl(&["bundles", "install", "--yes", x86.to_str().unwrap()]);
    assert_ne!(rc, 0, "an x86_64 bundle installs on arm64:\n{out}{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains("x86_64") && said.contains("aarch64"),
        "the refusal names both architectures:\n{said}"
    );
    let (_, list, _) = vm.ctl(&["bundles", "list"]);
    assert!(!list.contains("web"), "nothing half-installed:\n{list}");

    vm.ctl_ok(&[
        "bundles",
        "install",
        "--yes",
        arm.join("web.nvb").to_str().unwrap(),
    ]);
    let body = vm.wait_for("the web bundle's page", Duration::from_secs(180), || {
        page(&vm)
    });
    assert!(body.contains("It works"), "{body}");

    // The OS update: slot B, a try through systemd-boot's one-shot.
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["available"], true, "updates work on arm64: {v}");
    assert_eq!(v["loader"], "uefi", "{v}");
    let out = vm.ctl_ok(&["update", update.to_str().unwrap()]);
    assert!(out.contains("written to slot B"), "{out}");
    let v = vm.update_status();
    assert_eq!(v["armed_try"], "nuvol-B.conf", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    let took = vm.reboot_via_api_within(BOOT);
    eprintln!("arm64: rebooted into the try in {} s", took.as_secs());
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "B", "{v}");
    assert_eq!(v["running_version"], "99.0.0", "{v}");
    let v = vm.wait_update_good(Duration::from_secs(240));
    assert_eq!(v["default_slot"], "B", "loader.conf switched: {v}");
    let body = vm.wait_for(
        "the page after the update",
        Duration::from_secs(180),
        || page(&vm),
    );
    assert!(body.contains("It works"), "{body}");

    vm.power_off();
}

/// The services of type `_http._tcp` box `n` lists, as (node, name).
fn http_services(c: &Community, n: usize) -> Vec<(String, String)> {
    let v = c.get(n, "/api/v1/services?type=_http._tcp");
    v.as_array()
        .cloned()
        .or_else(|| v["services"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap_or("").to_string(),
                s["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// An x86_64 box and an arm64 box on one LAN (`community.sh --arm64 2`):
/// each runs its architecture's web bundle; gossip makes them members of
/// one community and each lists the other's service.
#[test]
fn an_x86_box_and_an_arm64_box_see_each_other_and_their_services() {
    let x86 = recipes();
    let arm = recipes_arm64();
    let arm64_image = image_arm64();
    let c = Community::up(
        "mixed-arch",
        2,
        75,
        &[
            "--one-zone",
            "--no-overlay",
            "--bundles",
            x86.to_str().unwrap(),
            "--arm64",
            "2",
            "--arm64-image",
            arm64_image.to_str().unwrap(),
        ],
    );
    eprintln!("mixed-arch: both boxes ready in {:.1} s", c.boot_s);
    assert_eq!(c.get(1, "/api/v1/status")["arch"], "x86_64");
    assert_eq!(c.get(2, "/api/v1/status")["arch"], "aarch64");

    // The same development key signs both architectures' recipes.
    for (n, dir) in [(1, &x86), (2, &arm)] {
        let web = std::fs::read(dir.join("web.nvb")).expect("web.nvb");
        let (code, body) = c.http(n, "POST", "/api/v1/bundles", &web).expect("upload");
        assert!(
            (200..300).contains(&code),
            "install web on box{n}: {code} {body}"
        );
    }
    for (n, other) in [(1, "box2"), (2, "box1")] {
        c.wait_for(
            &format!("box{n} lists {other} alive and its web service"),
            Duration::from_secs(240),
            || {
                let alive = c.get(n, "/api/v1/members").to_string().contains(other);
                let listed = http_services(&c, n)
                    .iter()
                    .any(|(node, name)| node == other && name.starts_with("web"));
                (alive && listed).then_some(())
            },
        );
    }
    // The bundle share: box1 sees box2's web as built for aarch64, not for
    // it, and a fetch is refused before anything is downloaded.
    let offer = c.wait_for(
        "box2's web in box1's community bundles",
        Duration::from_secs(120),
        || {
            let v = c.get(1, "/api/v1/community/bundles?refresh=1");
            v["bundles"]
                .as_array()?
                .iter()
                .find(|b| b["node"] == "box2" && b["name"] == "web")
                .cloned()
        },
    );
    assert_eq!(offer["arch"], "aarch64", "{offer}");
    assert_eq!(offer["runs_here"], false, "{offer}");
    let (code, body) = c
        .http(
            1,
            "POST",
            "/api/v1/bundles/fetch",
            br#"{"node": "box2", "name": "web"}"#,
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("wrong_arch"), "{body}");
}
