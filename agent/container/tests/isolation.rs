//! Real containers, as root: isolation, read-only rootfs, capabilities, images.

mod common;

use std::time::Duration;

use common::*;
use nuvol_container::{spawn, ExitStatus, RootSource, RootWrite, Rootfs, Stdio};

fn run(
    spec: &nuvol_container::ContainerSpec,
    cg: &CgroupGuard,
    state: &std::path::Path,
) -> (ExitStatus, String) {
    run_to_end(spec, cg, state, Duration::from_secs(20))
}

#[test]
fn pid1_hostname_and_host_invisible() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let id = unique("iso");
    let mut s = spec(
        &id,
        &root,
        "echo pid=$$; echo host=$(hostname); echo procs=$(ls -d /proc/[0-9]* | wc -l); \
         echo mounts=$(wc -l < /proc/self/mounts); cat /proc/self/mounts; echo self=$(readlink /proc/1/exe)",
    );
    s.hostname = Some("box-one".into());
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(out.contains("host=box-one\n"), "{out}");
    // Only the shell and the short-lived pipeline helpers: far fewer than the host's processes.
    let procs: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs <= 4, "{out}");
    // None of the host's mounts (e.g. the host's / or the test's temp dir) are visible.
    assert!(!out.contains(tmp.path().to_str().unwrap()), "{out}");
    assert!(!out.contains(" /work"), "{out}");
    let mounts: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("mounts="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(mounts < 40, "{out}");
}

#[test]
fn readonly_rootfs_and_dropped_capabilities() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let mut s = spec(
        &unique("ro"),
        &root,
        "if touch /bin/x 2>/dev/null; then echo WRITE-OK; else echo WRITE-FAILED; fi; \
         grep -E '^Cap(Eff|Bnd|Amb):' /proc/self/status; \
         if chown 65534 /tmp 2>/dev/null; then echo CHOWN-OK; else echo CHOWN-FAILED; fi; \
         if hostname other 2>/dev/null; then echo HOSTNAME-OK; else echo HOSTNAME-FAILED; fi; \
         grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status",
    );
    // Keep only CAP_CHOWN: chown works, sethostname (CAP_SYS_ADMIN) does not.
    s.capabilities = vec![caps::Capability::CAP_CHOWN];
    s.mounts.push(nuvol_container::Mount {
        destination: "/tmp".into(),
        fstype: "tmpfs".into(),
        source: "tmpfs".into(),
        flags: 0,
        data: "size=1m".into(),
    });
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("WRITE-FAILED"), "{out}");
    assert!(!root.join("bin/x").exists());
    assert!(out.contains("CapEff:\t0000000000000001"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000001"), "{out}");
    assert!(out.contains("CHOWN-OK"), "{out}");
    assert!(out.contains("HOSTNAME-FAILED"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

/// Under memory pressure the kernel's OOM killer picks a service before the
/// agent (-900) or PID 1 (-1000): every container process starts at +500
/// and, without CAP_SYS_RESOURCE, cannot lower it.
#[test]
fn services_are_first_for_the_oom_killer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let mut s = spec(
        &unique("oom"),
        &root,
        "echo adj=$(cat /proc/self/oom_score_adj); \
         if echo 0 > /proc/self/oom_score_adj; then echo lowered; else echo kept; fi 2>/dev/null; \
         sh -c 'echo child=$(cat /proc/self/oom_score_adj)'",
    );
    s.uid = 65534;
    s.gid = 65534;
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("adj=500\n"), "{out}");
    if has_cap_sys_resource() {
        assert!(out.contains("kept\n"), "{out}");
        assert!(out.contains("child=500\n"), "{out}");
    } else {
        // The floor is set only by a writer holding CAP_SYS_RESOURCE, which
        // this host's sandbox withholds (the agent on a box has it;
        // tests/tests/hardening.rs checks the floor on the booted image).
        eprintln!("note: no CAP_SYS_RESOURCE here: the oom_score_adj floor is not checked");
        assert!(!out.contains("child=1"), "{out}");
    }
}

fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    const CAP_SYS_RESOURCE: u32 = 24;
    u64::from_str_radix(eff, 16).unwrap() & (1 << CAP_SYS_RESOURCE) != 0
}

#[test]
fn non_root_user_and_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let mut s = spec(&unique("user"), &root, "id -u; id -g; echo $GREETING; pwd");
    s.uid = 65534;
    s.gid = 65534;
    s.env.push("GREETING=hello-from-env".into());
    s.cwd = "/www".into();
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "65534\n65534\nhello-from-env\n/www\n");
}

#[test]
fn squashfs_image_with_overlay_and_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let img = tmp.path().join("root.squashfs");
    let st = std::process::Command::new("mksquashfs")
        .args([root.as_os_str(), img.as_os_str()])
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .expect("apt-get install squashfs-tools");
    assert!(st.success());
    let vol = tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let cg = CgroupGuard::new();

    // Read-only image: writes fail.
    let r = Rootfs {
        source: RootSource::SquashfsImage(img.clone()),
        write: RootWrite::ReadOnly,
    };
    let mut s = nuvol_container::ContainerSpec::new(
        &unique("img"),
        r,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /etc/x 2>/dev/null && echo W || echo RO; grep -c squashfs /proc/mounts".into(),
        ],
    );
    s.hostname = None;
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "RO\n1\n");

    // Image + overlay upper on "data" + a volume: writes land in upper and volume.
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    let r = Rootfs {
        source: RootSource::SquashfsImage(img),
        write: RootWrite::Overlay {
            upper: upper.clone(),
            work,
        },
    };
    let mut s = nuvol_container::ContainerSpec::new(
        &unique("ovl"),
        r,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo a > /etc/new && echo b > /data/file && cat /etc/new /data/file".into(),
        ],
    );
    s.mounts.push(nuvol_container::Mount {
        destination: "/data".into(),
        fstype: "bind".into(),
        source: vol.to_str().unwrap().into(),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: String::new(),
    });
    let (st, out) = run(&s, &cg, tmp.path());
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "a\nb\n");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/new")).unwrap(),
        "a\n"
    );
    assert_eq!(std::fs::read_to_string(vol.join("file")).unwrap(), "b\n");
}

#[test]
fn setup_failure_names_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let s = spec(&unique("bad"), &root, "true");
    let mut s = s;
    s.args = vec!["/no/such/program".into()];
    let e = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("execute /no/such/program"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
    assert!(cg.0.children().is_empty(), "cgroup left behind");
}
