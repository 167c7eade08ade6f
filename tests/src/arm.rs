//! What both ARM images go through in the suite (`tests/arm64.rs`,
//! `tests/armv7.rs`): a box booted through UEFI with an OS update for its
//! architecture at hand, its status naming the architecture, the web recipe
//! built for x86_64 refused and the one built for it served, and the update
//! tried, kept and the page served again.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::{
    copy_from_boot, disk_copy_of, key_line, recipes, recipes_for, write_config, BootOptions,
    Scratch, TestKey, Vm,
};

/// TCG emulates every ARM instruction: slower than the x86 boots.
pub const BOOT: Duration = Duration::from_secs(400);
const READY: &str = "nuvol: ready: panel at";

/// One ARM architecture as the Makefile (`arm64`, `armv7`) and as Rust,
/// bundles and updates (`aarch64`, `arm`) name it.
#[derive(Clone, Copy)]
pub struct Arch {
    pub make: &'static str,
    pub rust: &'static str,
}

/// A booted ARM box with `hostname = "e2e-MAKE"`, the panel's port 8080
/// forwarded, and `update`: its own slot A's kernel and initramfs as
/// version 99.0.0 for its architecture, signed by a key it trusts.
pub struct ArmBox {
    pub vm: Vm,
    pub update: PathBuf,
    pub arch: Arch,
    _dir: Scratch,
}

impl ArmBox {
    pub fn boot(arch: Arch, image: PathBuf, mem_mib: u32) -> ArmBox {
        let dir = Scratch::new(arch.make);
        let disk = disk_copy_of(&image, &dir.0, 1024);
        let key = TestKey::new(&dir.0);
        write_config(
            &disk,
            &format!(
                "hostname = \"e2e-{}\"\n[panel]\nallow_plain_http = true\n\
                 [debug]\ntest_hooks = true\nupdate_settle_secs = 5\n\
                 [update]\ntrusted_keys = [\"{}\"]\n",
                arch.make,
                key_line(&key.public)
            ),
        );
        let (kernel, initrd) = (dir.0.join("bzImage"), dir.0.join("initrd.img"));
        copy_from_boot(&disk, "A/bzImage", &kernel);
        copy_from_boot(&disk, "A/initrd.img", &initrd);
        let update = dir.0.join(format!("nuvol-{}-99.0.0.nvu", arch.make));
        crate::update_artefact(&key.secret, &kernel, &initrd, "99.0.0", arch.rust, &update);
        let opts = BootOptions {
            forwards: vec![8080],
            arch: Some(arch.make),
            ..BootOptions::default()
        };
        let mem = mem_mib.to_string();
        let mut vm = Vm::boot_opts_args(
            &disk,
            "uefi",
            &dir.0,
            &opts,
            &["--mem".as_ref(), mem.as_ref()],
        );
        let took = vm.wait_console(READY, 1, BOOT);
        eprintln!("{}: ready in {} s", arch.make, took.as_secs());
        ArmBox {
            vm,
            update,
            arch,
            _dir: dir,
        }
    }

    /// `/api/v1/status` and `nuvol ctl status` name the architecture and
    /// the host name; the status, for more checks.
    pub fn status_names_the_arch(&self) -> Value {
        let (code, body) = self.vm.http("GET", "/api/v1/status").unwrap();
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["arch"], self.arch.rust, "{status}");
        assert_eq!(
            status["hostname"],
            format!("e2e-{}", self.arch.make),
            "{status}"
        );
        let (_, out, _) = self.vm.ctl(&["status"]);
        assert!(
            out.contains(&format!("({})", self.arch.rust)),
            "ctl status names the architecture:\n{out}"
        );
        status
    }

    /// The web page the box serves on its forwarded port 8080, if any.
    pub fn page(&self) -> Option<String> {
        crate::http(self.vm.fwd(8080), "GET", "/")
            .ok()
            .filter(|(c, _)| *c == 200)
            .map(|(_, b)| b)
    }

    fn page_works(&self, what: &str) {
        let body = self
            .vm
            .wait_for(what, Duration::from_secs(180), || self.page());
        assert!(body.contains("It works"), "{body}");
    }

    /// The x86_64 build of the web recipe is refused, naming both
    /// architectures, with nothing left installed; the build for this
    /// architecture (`make bundles ARCH=MAKE`) installs through `nuvol ctl`
    /// and its page is served through the forwarded port.
    pub fn web_bundle_refused_then_served(&self) {
        let own = recipes_for(self.arch.make);
        let vm = &self.vm;
        vm.ctl_ok(&["keys", "add", own.join("dev.pub").to_str().unwrap()]);
        let x86 = recipes().join("web.nvb");
        let (rc, out, err) = vm.ctl(&["bundles", "install", "--yes", x86.to_str().unwrap()]);
        assert_ne!(
            rc, 0,
            "an x86_64 bundle installs on {}:\n{out}{err}",
            self.arch.make
        );
        let said = format!("{out}{err}");
        assert!(
            said.contains("x86_64") && said.contains(&format!("this box is {}", self.arch.rust)),
            "the refusal names both architectures:\n{said}"
        );
        let (_, list, _) = vm.ctl(&["bundles", "list"]);
        assert!(!list.contains("web"), "nothing half-installed:\n{list}");
        vm.ctl_ok(&[
            "bundles",
            "install",
            "--yes",
            own.join("web.nvb").to_str().unwrap(),
        ]);
        self.page_works("the web bundle's page");
    }

    /// The update goes to slot B, the box reboots into it through
    /// systemd-boot's one-shot, marks it good once settled (B becomes the
    /// default in `loader.conf`) and serves the page again.
    pub fn update_tried_and_kept(&mut self) {
        let make = self.arch.make;
        let vm = &mut self.vm;
        let v = vm.update_status();
        assert_eq!(v["running_slot"], "A", "{v}");
        assert_eq!(v["available"], true, "updates work on {make}: {v}");
        assert_eq!(v["loader"], "uefi", "{v}");
        let out = vm.ctl_ok(&["update", self.update.to_str().unwrap()]);
        assert!(out.contains("written to slot B"), "{out}");
        let v = vm.update_status();
        assert_eq!(v["armed_try"], "nuvol-B.conf", "{v}");
        assert_eq!(v["default_slot"], "A", "{v}");
        let took = vm.reboot_via_api_within(BOOT);
        eprintln!("{make}: rebooted into the try in {} s", took.as_secs());
        let v = vm.update_status();
        assert_eq!(v["running_slot"], "B", "{v}");
        assert_eq!(v["running_version"], "99.0.0", "{v}");
        let v = vm.wait_update_good(Duration::from_secs(240));
        assert_eq!(v["default_slot"], "B", "loader.conf switched: {v}");
        self.page_works("the page after the update");
    }
}
