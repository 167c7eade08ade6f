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
//! - the image's hybrid MBR leads a reader of MBRs only (the Raspberry
//!   Pi's firmware) to the boot partition: mtools at that entry's offset
//!   reads the image's `nuvol.toml`, while sfdisk (like UEFI and Linux,
//!   which boot it above) still sees the GPT;
//! - an x86_64 box and an arm64 box on one LAN find each other through
//!   gossip and list each other's services; each sees the other's bundle
//!   as built for another architecture and a fetch of it is refused.

use std::time::Duration;

use nuvol_e2e::arm::{Arch, ArmBox};
use nuvol_e2e::community::Community;
use nuvol_e2e::{image_arm64, recipes, recipes_for};
use serde_json::Value;

const ARM64: Arch = Arch {
    make: "arm64",
    rust: "aarch64",
};

#[test]
fn arm64_boots_serves_a_bundle_reboots_and_powers_off() {
    let mut b = ArmBox::boot(ARM64, image_arm64(), 256);
    b.status_names_the_arch();
    b.web_bundle_refused_then_served();
    b.update_tried_and_kept();
    b.vm.power_off();
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
fn the_hybrid_mbr_leads_to_the_boot_partition() {
    let img = image_arm64();
    let mut head = [0u8; 512];
    use std::io::Read;
    std::fs::File::open(&img)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert_eq!(&head[510..], &[0x55, 0xaa], "MBR signature");
    let entry = |i: usize| {
        let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
        let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
        (e[4], u32_at(8), u32_at(12))
    };
    let (kind, lba, _) = entry(0);
    assert_eq!((kind, lba), (0xEE, 1), "the protective entry from sector 1");
    let (kind, fat_lba, fat_sectors) = entry(1);
    assert_eq!(kind, 0x0E, "the boot partition as FAT16 (LBA)");
    // sfdisk reads the GPT (a hybrid MBR does not hide it), whose first
    // partition is the one the MBR entry points at.
    let out = std::process::Command::new("sfdisk")
        .arg("--json")
        .arg(&img)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partitiontable"]["label"], "gpt");
    let p1 = &v["partitiontable"]["partitions"][0];
    assert_eq!(p1["name"], "nuvol-boot");
    assert_eq!(p1["start"].as_u64(), Some(fat_lba as u64));
    assert_eq!(p1["size"].as_u64(), Some(fat_sectors as u64));
    // A reader of the MBR alone finds the files there.
    let out = std::process::Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", img.display(), fat_lba as u64 * 512))
        .arg("::/nuvol.toml")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = std::fs::read(nuvol_e2e::repo().join("image/nuvol.toml")).unwrap();
    assert_eq!(out.stdout, shipped, "nuvol.toml through the MBR entry");
}

#[test]
fn an_x86_box_and_an_arm64_box_see_each_other_and_their_services() {
    let x86 = recipes();
    let arm = recipes_for("arm64");
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
