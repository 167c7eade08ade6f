//! The rescue shell on the booted image (docs/boot.md, "Rescue shell"),
//! typed at through the serial console as a human would:
//!
//! 1. Enter pressed while PID 1 offers the shell at boot: busybox `sh` on
//!    ttyS0 runs commands (`nuvol rescue` shows the slot and the agent),
//!    the agent still comes up and the panel answers; `nuvol rescue slot
//!    try B` arms a one-shot try the API shows, `slot default B` makes B
//!    the default with no try left; `reboot` (busybox: SIGTERM to PID 1)
//!    in the shell reboots the box in order, and it comes up in slot B.
//! 2. An agent that fails its first three starts (`[debug] fail_starts`):
//!    the shell opens by itself, the agent is still retried and comes up,
//!    and `kill -USR2 1` in the shell powers the box off.
//! 3. `nuvol.rescue` added to the kernel command line in syslinux.cfg on
//!    the boot partition: the shell opens at boot, the agent comes up
//!    beside it, `poweroff` powers off.
//!
//! Needs `make image` (the Makefile's `test-e2e` sets `NUVOL_IMAGE`).

use std::time::Duration;

use nuvol_e2e::{boot_file, copy_to_boot, disk_copy, tail, write_config, BootOptions, Scratch, Vm};

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";
const PROMPT: &str = "rescue# ";
const SHELL: &str = "=== nuvol rescue shell on ttyS0";

fn boot(dir: &Scratch, config: &str) -> Vm {
    boot_with(dir, config, |_| {})
}

fn boot_with(dir: &Scratch, config: &str, edit: impl FnOnce(&std::path::Path)) -> Vm {
    let disk = disk_copy(&dir.0, 512);
    write_config(&disk, config);
    edit(&disk);
    let opts = BootOptions {
        serial_input: true,
        ..BootOptions::default()
    };
    Vm::boot_opts(&disk, "bios", &dir.0, &opts)
}

/// Type a command line in the shell and wait for `want` in its output.
fn run(vm: &mut Vm, line: &str, want: &str) {
    let before = vm.console().matches(want).count();
    vm.type_console(&format!("{line}\r"));
    vm.wait_console(want, before + 1, Duration::from_secs(60));
}

#[test]
fn enter_at_boot_opens_a_shell_beside_the_agent_and_its_reboot_works() {
    let dir = Scratch::new("rescue-key");
    let mut vm = boot(
        &dir,
        "hostname = \"e2e-rescue\"\n[panel]\nallow_plain_http = true\n",
    );
    let t = vm.wait_console(
        "press Enter within 10 s for a rescue shell on ttyS0",
        1,
        BOOT,
    );
    eprintln!("offered at {t:?}");
    vm.type_console("\r");
    vm.wait_console(SHELL, 1, Duration::from_secs(60));
    let t = vm.wait_console(PROMPT, 1, Duration::from_secs(60));
    eprintln!("prompt at {t:?}");
    // Real output, not the echo of what was typed.
    run(&mut vm, "echo rescue-$((6*7))-ok", "rescue-42-ok");
    // One echo, one write: the agent's console lines cannot cut it.
    run(
        &mut vm,
        "echo \"pid1=[$(tr '\\0' ' ' < /proc/1/cmdline)]\"",
        "pid1=[/init ]",
    );
    run(&mut vm, "nuvol rescue", "slot: A (kernel command line");
    let c = vm.console();
    assert!(c.contains("asked for on the console"), "{}", tail(&c));
    // The boot went on beside the shell.
    let t = vm.wait_console(READY, 1, BOOT);
    eprintln!("agent ready at {t:?}");
    vm.wait_http("/", Duration::from_secs(60));
    run(&mut vm, "nuvol rescue", "agent: running (pid");
    // Choosing the slot offline, as the banner offers.
    run(
        &mut vm,
        "nuvol rescue slot try B",
        "the next boot tries slot B once",
    );
    let v = vm.update_status();
    assert_eq!(v["armed_try"], "nuvol-B", "{v}");
    run(
        &mut vm,
        "nuvol rescue slot default b",
        "slot B is the default",
    );
    run(
        &mut vm,
        "nuvol rescue",
        "A/B slots: running A, default B, armed try none",
    );
    let v = vm.update_status();
    assert_eq!(v["default_slot"], "B", "{v}");
    assert!(v["armed_try"].is_null(), "{v}");
    run(&mut vm, "nuvol rescue slot default C", "a slot is A or B");
    let c = vm.console();
    let session = &c[c.find(SHELL).unwrap_or(0)..];
    eprintln!("the shell session so far:\n{}", tail(session));
    // busybox's `reboot` signals PID 1 (SIGTERM), which reboots in order.
    vm.type_console("reboot\r");
    vm.wait_console("nuvol-init: rebooting", 1, Duration::from_secs(120));
    let c = vm.console();
    assert!(c.contains("stopping agent"), "{}", tail(&c));
    assert!(!c.contains("did not stop"), "{}", tail(&c));
    // The box comes back (and offers the shell again), now in slot B.
    vm.wait_console("press Enter within 10 s", 2, BOOT);
    vm.wait_console(READY, 2, BOOT);
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "B", "{v}");
    assert_eq!(v["default_slot"], "B", "{v}");
}

#[test]
fn three_failed_agent_starts_open_the_shell_and_the_agent_is_still_retried() {
    let dir = Scratch::new("rescue-fail");
    let mut vm = boot(&dir, "[debug]\ntest_hooks = true\nfail_starts = 3\n");
    let t = vm.wait_console(
        "the agent failed to start 3 times in a row; it is still retried",
        1,
        BOOT,
    );
    eprintln!("shell opened after three failures at {t:?}");
    vm.wait_console(SHELL, 1, Duration::from_secs(60));
    vm.wait_console(PROMPT, 1, Duration::from_secs(60));
    let c = vm.console();
    assert_eq!(
        c.matches("failing start").count(),
        3,
        "three failed starts:\n{}",
        tail(&c)
    );
    // The fourth start is a good one.
    let t = vm.wait_console(READY, 1, BOOT);
    eprintln!("agent ready at {t:?}");
    vm.wait_http("/", Duration::from_secs(60));
    run(&mut vm, "nuvol rescue", "starts this boot: 4,");
    vm.type_console("kill -USR2 1\r");
    vm.wait_exit(Duration::from_secs(120));
    let c = vm.console();
    assert!(c.contains("nuvol-init: powering off"), "{}", tail(&c));
}

#[test]
fn the_kernel_command_line_flag_opens_the_shell_at_boot() {
    let dir = Scratch::new("rescue-cmdline");
    let mut vm = boot_with(&dir, "", |disk| {
        // As a human would from a laptop: the flag on syslinux's APPEND lines.
        let cfg = boot_file(disk, "syslinux/syslinux.cfg");
        assert!(cfg.contains("APPEND "), "{cfg}");
        let cfg: String = cfg
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("APPEND ") {
                    format!("{l} nuvol.rescue\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let f = dir.0.join("syslinux.cfg");
        std::fs::write(&f, cfg).unwrap();
        copy_to_boot(disk, &f, "syslinux/syslinux.cfg");
    });
    let t = vm.wait_console("nuvol.rescue on the kernel command line", 1, BOOT);
    eprintln!("shell opened at {t:?}");
    vm.wait_console(SHELL, 1, Duration::from_secs(60));
    vm.wait_console(PROMPT, 1, Duration::from_secs(60));
    let c = vm.console();
    assert!(!c.contains("press Enter within"), "{}", tail(&c));
    vm.wait_console(READY, 1, BOOT);
    run(&mut vm, "nuvol rescue", "agent: running (pid");
    vm.type_console("poweroff\r");
    vm.wait_exit(Duration::from_secs(120));
    assert!(vm.console().contains("nuvol-init: powering off"));
}
