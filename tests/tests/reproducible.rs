//! Two `make image` runs of the same source, in different directories, with
//! fresh cargo target dirs and the clock moved two days on for the image
//! step, give byte-identical images. `NUVOL_REPRO_ARCHES` says for which
//! architectures: x86_64 in `make test` (one second cargo build from a
//! fresh target dir is the costly part), `x86_64 arm64` in `make
//! test-full`. (The kernel comes from the shared content-keyed cache in
//! both; its own build is pinned by KBUILD_BUILD_TIMESTAMP/USER/HOST in
//! image/kernel.sh.)

use std::process::Command;

use nuvol_e2e::{image, image_arm64, repo, Scratch};

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
    eprintln!("reproducible: {arches} (NUVOL_REPRO_ARCHES)");
    for arch in arches.split_whitespace() {
        let first = match arch {
            "x86_64" => image(),
            "arm64" => image_arm64(),
            other => panic!("NUVOL_REPRO_ARCHES: unknown architecture {other}"),
        };
        let st = Command::new("make")
            .args(["-s", "image", "IMAGE_WRAPPER=faketime -f +2d"])
            .arg(format!("ARCH={arch}"))
            .current_dir(&src)
            .env("SOURCE_DATE_EPOCH", &epoch)
            // Move only the clock: files keep their real (fresh) times.
            .env("NO_FAKE_STAT", "1")
            .env("CARGO_TARGET_DIR", dir.0.join("target"))
            .status()
            .unwrap();
        assert!(st.success(), "second make image ARCH={arch} failed");
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
