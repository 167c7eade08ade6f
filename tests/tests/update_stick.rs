//! An OS update from a USB stick (docs/boot.md, "Update"), the way a
//! volunteer brings one to a box on a roof: a stick a laptop formatted
//! (MBR, one FAT partition) with `update/` holding an artefact signed by
//! a stranger and the image's own OS as 99.0.0, plugged into the running
//! box (QMP hot-plug on an xHCI controller, UEFI).
//!
//! The agent sees the new disk, mounts its partition read-only, refuses
//! the stranger's file (`update_untrusted`), writes 99.0.0 to slot B and
//! reboots to try it; slot B is marked good. The stick stays plugged in:
//! the next boot looks at it again and applies nothing twice. The box's
//! own disk is never taken for a stick.

use std::path::PathBuf;
use std::time::Duration;

use nuvol_e2e::{
    copy_to_boot, disk_copy, fat_stick, key_line, os_part, tail, write_config, BootOptions,
    Scratch, TestKey, Vm,
};

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";

#[test]
fn a_usb_stick_plugged_into_the_running_box_updates_it() {
    let dir = Scratch::new("update-stick");
    let d = |n: &str| -> PathBuf { dir.0.join(n) };
    let disk = disk_copy(&dir.0, 1024);
    std::fs::create_dir_all(d("keys")).unwrap();
    std::fs::create_dir_all(d("other")).unwrap();
    let key = TestKey::new(&d("keys"));
    let other = TestKey::new(&d("other"));
    os_part(&disk, "bzImage", &d("bzImage"));
    os_part(&disk, "initrd.img", &d("initrd.img"));
    write_config(
        &disk,
        &format!(
            "hostname = \"e2e-stick\"\n[panel]\nallow_plain_http = true\n\
             [debug]\ntest_hooks = true\nupdate_settle_secs = 5\n\
             [update]\ntrusted_keys = [\"{}\"]\n",
            key_line(&key.public)
        ),
    );
    // An `update/` folder on the box's own boot partition (no artefact in
    // it): were the box's own disk taken for a stick, the stick watcher
    // would say it looked there.
    std::fs::write(d("README.txt"), "updates go here\n").unwrap();
    copy_to_boot(&disk, &d("README.txt"), "update/README.txt");
    let (k, i) = (d("bzImage"), d("initrd.img"));
    let good = d("good.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &i, "99.0.0", "x86_64", &good);
    let stranger = d("stranger.nvu");
    nuvol_e2e::update_artefact(&other.secret, &k, &i, "99.0.0", "x86_64", &stranger);
    let stick = d("stick.img");
    fat_stick(
        &stick,
        40,
        &[
            ("update/a-stranger.nvu", &stranger),
            ("update/nuvol-x86_64-99.0.0.nvu", &good),
        ],
    );

    let mut vm = Vm::boot_opts_args(
        &disk,
        "uefi",
        &dir.0,
        &BootOptions::default(),
        &["--usb".as_ref()],
    );
    vm.wait_console(READY, 1, BOOT);
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    // Past the agent's first look (10 s after start): its own disk was
    // not taken for a stick, nothing was looked at.
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        !vm.console().contains("USB stick"),
        "{}",
        tail(&vm.console())
    );

    // Plug it in.
    vm.qmp_json(&format!(
        r#"{{"execute":"blockdev-add","arguments":{{"driver":"raw","node-name":"stick","file":{{"driver":"file","filename":"{}"}}}}}}"#,
        stick.display()
    ));
    vm.qmp_json(
        r#"{"execute":"device_add","arguments":{"driver":"usb-storage","bus":"xhci.0","drive":"stick","id":"stick0"}}"#,
    );
    vm.wait_console("from the USB stick (sda1): rebooting to try it", 1, BOOT);
    let c = vm.console();
    assert!(
        c.contains("sda1:update/a-stranger.nvu refused"),
        "{}",
        tail(&c)
    );
    vm.wait_console(READY, 2, BOOT);
    let v = vm.wait_update_good(Duration::from_secs(120));
    assert_eq!(v["running_slot"], "B", "{v}");
    assert_eq!(v["running_version"], "99.0.0", "{v}");
    assert_eq!(v["default_slot"], "B", "{v}");
    let outcome = |name: &str| nuvol_e2e::update_file_outcome(&v, name);
    assert_eq!(
        outcome("sda1:update/a-stranger.nvu"),
        Some("update_untrusted".to_string()),
        "{v}"
    );
    assert_eq!(
        outcome("sda1:update/nuvol-x86_64-99.0.0.nvu"),
        Some("applied".to_string()),
        "{v}"
    );
    // The stick is still in: this boot looked at it again (after the
    // trial) and applied nothing twice.
    vm.wait_console("USB stick sda1 (vfat): looking at update/", 2, BOOT);
    std::thread::sleep(Duration::from_secs(3));
    let c = vm.console();
    assert_eq!(c.matches("from the USB stick").count(), 1, "{}", tail(&c));
    assert_eq!(
        c.matches("a-stranger.nvu refused").count(),
        1,
        "{}",
        tail(&c)
    );
    vm.power_off();
}
