//! A hand-made OCI runtime bundle (busybox rootfs + config.json) runs, and
//! configs the runtime cannot honour are refused.

mod common;

use std::time::Duration;

use common::*;
use nuvol_container::{oci, pipe, spawn, ExitStatus, Stdio};

#[test]
fn hand_made_oci_bundle_runs() {
    let tmp = tempfile::tempdir().unwrap();
    busybox_rootfs(tmp.path());
    std::fs::write(
        tmp.path().join("config.json"),
        oci_config(&["sh", "-c", "echo $FROM_OCI $(hostname) $$; cat /sys/fs/cgroup/memory.max 2>/dev/null; grep CapBnd /proc/self/status; touch /x || echo ro"], "oci-box"),
    )
    .unwrap();
    let b = oci::load_bundle(tmp.path(), &unique("oci")).unwrap();
    assert!(
        b.warnings.iter().any(|w| w.contains("rlimits")),
        "{:?}",
        b.warnings
    );
    assert_eq!(b.spec.limits.memory_max, Some(64 << 20));
    assert_eq!(b.spec.limits.pids_max, Some(64));
    let cg = CgroupGuard::new();
    let (r, w) = pipe().unwrap();
    let w2 = w.try_clone().unwrap();
    let state = tmp.path().join("state");
    let mut c = spawn(
        &b.spec,
        &cg.0,
        &state,
        Stdio {
            stdin: None,
            stdout: Some(w),
            stderr: Some(w2),
        },
    )
    .unwrap();
    let out = read_all(r, Duration::from_secs(20));
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(0), "{out}");
    assert!(out.starts_with("yes oci-box 1\n"), "{out}");
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    assert!(out.contains("CapBnd:\t0000000020000420"), "{out}");
    assert!(out.contains("ro\n"), "{out}");
    if cg.0.is_v2() {
        assert!(out.contains("67108864"), "{out}");
    }
    c.destroy().unwrap();
}

#[test]
fn unsupported_oci_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    busybox_rootfs(tmp.path());
    let good = oci_config(&["true"], "h");
    let cases = [
        (
            good.replace("\"terminal\": false", "\"terminal\": true"),
            "terminal",
        ),
        (good.replace("{ \"type\": \"pid\" }, ", ""), "Pid"),
        (
            good.replace("\"args\": [\"true\"]", "\"args\": []"),
            "no entrypoint",
        ),
        (
            good.replace(
                "\"CAP_KILL\", \"CAP_NET",
                "\"CAP_KILL\", \"CAP_FLYING\", \"CAP_NET",
            ),
            "CAP_FLYING",
        ),
        (
            good.replace("\"ociVersion\": \"1.0.2\"", "\"ociVersion\": \"0.9\""),
            "ociVersion",
        ),
        (
            good.replace("\"type\": \"proc\"", "\"type\": \"nfs\""),
            "nfs",
        ),
    ];
    for (cfg, expect) in cases {
        std::fs::write(tmp.path().join("config.json"), &cfg).unwrap();
        let e = oci::load_bundle(tmp.path(), "x").unwrap_err().to_string();
        assert!(e.contains(expect), "expected {expect:?} in {e:?}");
    }
    assert!(oci::load_bundle(&tmp.path().join("missing"), "x").is_err());
}
