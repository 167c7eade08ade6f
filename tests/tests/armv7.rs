//! The armv7 image (`make image ARCH=armv7`) on `qemu-system-arm -M virt`
//! with edk2's 32-bit ARM build (UEFI, systemd-boot's ARM loader, a zImage
//! with the EFI stub), a Cortex-A7 under TCG with 128 MiB of memory, the
//! size of the small 32-bit boards, running the product's own `nuvol init`
//! and agent:
//!
//! - it boots to ready and `/api/v1/status` says `arm` (Rust's name for
//!   32-bit ARM, the one bundles and OS updates use);
//! - `nuvol ctl status` from the host names the architecture;
//! - the kernel saw the memory and the agent's resident size is within the
//!   product's 8 MiB budget;
//! - the x86_64 build of the web recipe is refused, naming both
//!   architectures; the build for `arm` (`make bundles ARCH=armv7`, from
//!   Debian's armhf packages) installs through `nuvol ctl` and serves its
//!   page through a forwarded port, in a container on the 128 MiB box;
//! - a signed OS update for `arm` (this image's own kernel and initramfs
//!   as version 99.0.0) goes to slot B, the box reboots into the try
//!   through systemd-boot's one-shot (an EFI variable, written through
//!   32-bit edk2's runtime services), marks it good and makes B the
//!   default in `loader.conf`; the web page is served again after it;
//! - the power button (a PL061 GPIO key on virt) powers it off cleanly.

use nuvol_e2e::arm::{Arch, ArmBox};
use nuvol_e2e::image_armv7;

const MIB: u64 = 1 << 20;
const ARMV7: Arch = Arch {
    make: "armv7",
    rust: "arm",
};

#[test]
fn armv7_boots_in_128_mib_serves_a_bundle_answers_updates_and_powers_off() {
    let mut b = ArmBox::boot(ARMV7, image_armv7(), 128);
    let status = b.status_names_the_arch();

    // The kernel has the 128 MiB (less its own image and reservations),
    // all of it usable through highmem or not.
    let total = status["memory"]["total_bytes"].as_u64().unwrap();
    assert!(
        (96 * MIB..=128 * MIB).contains(&total),
        "memory total {total} bytes: {status}"
    );
    let rss = status["agent_rss_bytes"].as_u64().unwrap();
    eprintln!(
        "armv7: agent RSS {:.1} MiB, memory total {:.1} MiB, available {:.1} MiB",
        rss as f64 / MIB as f64,
        total as f64 / MIB as f64,
        status["memory"]["available_bytes"].as_u64().unwrap() as f64 / MIB as f64
    );
    // The product's budget: the agent in 8 MiB.
    assert!(
        (MIB..=8 * MIB).contains(&rss),
        "agent RSS {rss} bytes (budget 8 MiB): {status}"
    );

    b.web_bundle_refused_then_served();
    b.update_tried_and_kept();
    b.vm.power_off();
}
