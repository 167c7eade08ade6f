//! Two builds of the same source, in different directories, with the clock
//! moved two days on for the image step, give byte-identical images.
//!
//! - `NUVOL_REPRO_BUILD=all` (`make test-full`): a second `make image` from
//!   a copy of the tree, with a fresh cargo target dir: the binary is
//!   compiled again there, so a path or time leaking into it shows.
//! - `NUVOL_REPRO_BUILD=image` (`make test`, the default): the copy's image
//!   step only (`image/build.sh`, under the moved clock) from the suite's
//!   binary and the cached kernel: what leaks through the initramfs, the
//!   FAT boot partition or the loader entries shows; the second compile
//!   (about 2.5 minutes of the suite) is left to `make test-full`.
//!
//! `NUVOL_REPRO_ARCHES` says for which architectures: x86_64 in `make
//! test`, `x86_64 arm64 armv7` in `make test-full`. (The kernel comes from the
//! shared content-keyed cache in both; its own build is pinned by
//! KBUILD_BUILD_TIMESTAMP/USER/HOST in image/kernel.sh.)

use std::process::Command;

use nuvol_e2e::{image, image_arm64, image_armv7, repo, Scratch};

fn sha256(p: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn image_is_reproducible_across_directories_and_days() {
    let dir = Scratch::new("repro");
    let src = dir.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // The working tree as git sees it (tracked + untracked, minus ignored).
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(files.status.success());
    let mut tar = Command::new("tar")
        .args(["--null", "-T", "-", "-cf", "-"])
        .current_dir(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        tar.stdin.take().unwrap().write_all(&files.stdout).unwrap();
    }
    let untar = Command::new("tar")
        .args(["-xf", "-"])
        .current_dir(&src)
        .stdin(tar.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(tar.wait().unwrap().success() && untar.success());
    // Every file freshly touched: source mtimes must not leak either.
    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_else(|_| {
        let o = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(repo())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    });
    // The clock moves two days on for the image step (libfaketime cannot
    // wrap rustc, which hangs under it; rustc embeds no time anyway).
    let arches = std::env::var("NUVOL_REPRO_ARCHES").unwrap_or_else(|_| "x86_64".into());
    let build = std::env::var("NUVOL_REPRO_BUILD").unwrap_or_else(|_| "image".into());
    let whole = match build.as_str() {
        "all" => true,
        "image" => false,
        other => panic!("NUVOL_REPRO_BUILD={other}: `all` or `image`"),
    };
    eprintln!(
        "reproducible: {arches} (NUVOL_REPRO_ARCHES), rebuilding {build} (NUVOL_REPRO_BUILD)"
    );
    for arch in arches.split_whitespace() {
        let first = match arch {
            "x86_64" => image(),
            "arm64" => image_arm64(),
            "armv7" => image_armv7(),
            other => panic!("NUVOL_REPRO_ARCHES: unknown architecture {other}"),
        };
        let st = if whole {
            Command::new("make")
                .args(["-s", "image", "IMAGE_WRAPPER=faketime -f +2d"])
                .arg(format!("ARCH={arch}"))
                .current_dir(&src)
                .env("SOURCE_DATE_EPOCH", &epoch)
                // Move only the clock: files keep their real (fresh) times.
                .env("NO_FAKE_STAT", "1")
                .env("CARGO_TARGET_DIR", dir.0.join("target"))
                .status()
                .unwrap()
        } else {
            // The kernel from the cache (the copy has no out/), then the
            // image step alone with the suite's binary.
            let (kernel, bin) = match arch {
                "x86_64" => ("out/bzImage", nuvol_e2e::nuvol_bin()),
                _ => panic!("NUVOL_REPRO_BUILD=image: x86_64 only (the suite's binary)"),
            };
            let k = Command::new("make")
                .args(["-s", "kernel"])
                .arg(format!("ARCH={arch}"))
                .current_dir(&src)
                .status()
                .unwrap();
            assert!(k.success(), "make kernel ARCH={arch} in the copy failed");
            Command::new("faketime")
                .args(["-f", "+2d", "image/build.sh", arch])
                .arg(&bin)
                .arg(kernel)
                .arg(format!("out/nuvol-{arch}.img"))
                .current_dir(&src)
                .env("SOURCE_DATE_EPOCH", &epoch)
                .env("NO_FAKE_STAT", "1")
                .status()
                .unwrap()
        };
        assert!(st.success(), "second image build ARCH={arch} failed");
        let second = src.join(format!("out/nuvol-{arch}.img"));
        assert_eq!(
            sha256(&first),
            sha256(&second),
            "{arch} images differ: {} vs {}",
            first.display(),
            second.display()
        );
    }
}
