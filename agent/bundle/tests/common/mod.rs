#![allow(dead_code)]
//! Shared helpers for the integration tests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nuvol_bundle::build::build;
use nuvol_bundle::{ImageType, SecretKey};

pub fn manifest_text(name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
version = "{version}"
publisher = "nuvol tests"
[run]
command = ["/bin/serve", "--port", "8080"]
env = {{ MODE = "test" }}
[[ports]]
name = "http"
port = 8080
[[volumes]]
name = "data"
path = "/var/lib/data"
[[announce]]
service_type = "_http._tcp"
port = 8080
txt = {{ path = "/" }}
{extra}
"#
    )
}

/// A small rootfs: a few files, a directory, an in-root symlink.
pub fn make_rootfs(dir: &Path, marker: &str) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("var/lib")).unwrap();
    fs::write(dir.join("bin/serve"), format!("#!/bin/sh\necho {marker}\n")).unwrap();
    fs::set_permissions(dir.join("bin/serve"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("index.html"), format!("<h1>{marker}</h1>\n")).unwrap();
    std::os::unix::fs::symlink("../index.html", dir.join("bin/index")).unwrap();
}

/// Build a signed bundle `name`-`version` into `out_dir`; returns its path.
pub fn make_bundle(out_dir: &Path, key: &SecretKey, name: &str, version: &str) -> PathBuf {
    let root = out_dir.join(format!("rootfs-{name}-{version}"));
    make_rootfs(&root, &format!("{name} {version}"));
    let mf = out_dir.join(format!("{name}-{version}.toml"));
    fs::write(&mf, manifest_text(name, version, "")).unwrap();
    let out = out_dir.join(format!("{name}-{version}.nvb"));
    build(&mf, &root, ImageType::Squashfs, &out, Some(key)).unwrap();
    out
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
