//! Processes started in a running container (`Container::exec_target`):
//! they see what the container sees and hold what it holds, no more.

mod common;

use std::time::Duration;

use common::*;
use nuvol_container::{pipe, spawn, ExitStatus, Stdio};

fn output_of(target: &nuvol_container::ExecTarget, script: &str) -> (ExitStatus, String) {
    let (r, w) = pipe().unwrap();
    let w2 = w.try_clone().unwrap();
    let args = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let mut p = target
        .spawn(
            &args,
            Stdio {
                stdin: None,
                stdout: Some(w),
                stderr: Some(w2),
            },
        )
        .unwrap();
    let out = read_all(r, Duration::from_secs(20));
    let st = p
        .wait_timeout(Duration::from_secs(20))
        .unwrap()
        .expect("exited");
    (st, out)
}

#[test]
fn exec_joins_namespaces_cgroup_and_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    std::fs::write(root.join("etc/only-here"), "in the rootfs\n").unwrap();
    let cg = CgroupGuard::new();
    let mut s = spec(&unique("exec"), &root, "exec sleep 600");
    s.hostname = Some("joined".into());
    s.uid = 0;
    s.gid = 0;
    s.capabilities = vec![caps::Capability::CAP_CHOWN];
    s.env.push("FROM_SPEC=yes".into());
    let mut c = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap();
    let target = c.exec_target().unwrap();
    let host_pid = std::process::id();
    let (st, out) = output_of(
        &target,
        &format!(
            "echo host=$(hostname); echo pid=$$; echo procs=$(ls -d /proc/[0-9]* | wc -l); \
             cat /etc/only-here; echo env=$FROM_SPEC; \
             grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
             if kill -0 {host_pid} 2>/dev/null; then echo host-pid=visible; else echo host-pid=invisible; fi; \
             echo adj=$(cat /proc/self/oom_score_adj); cat /proc/self/cgroup"
        ),
    );
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert!(out.contains("host=joined\n"), "{out}");
    // pid 1 is the container's sleep; the shell is a small pid next to it.
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!((2..10).contains(&pid), "{out}");
    let procs: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    assert!(procs <= 5, "{out}");
    assert!(out.contains("in the rootfs\n"), "{out}");
    assert!(out.contains("env=yes\n"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000001"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000001"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("host-pid=invisible"), "{out}");
    assert!(out.contains("adj=500\n"), "{out}");
    // In the container's cgroup (its cgroup namespace shows it as the root).
    let cgroup_line = out.lines().last().unwrap_or("");
    assert!(cgroup_line.ends_with("::/"), "{out}");
    c.kill_all().unwrap();
    c.destroy().unwrap();
}

#[test]
fn exec_failure_names_the_step_and_a_hung_process_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = busybox_rootfs(tmp.path());
    let cg = CgroupGuard::new();
    let s = spec(&unique("exec-fail"), &root, "exec sleep 600");
    let mut c = spawn(&s, &cg.0, tmp.path(), Stdio::default()).unwrap();
    let target = c.exec_target().unwrap();
    let err = target
        .spawn(&["/no/such/check".into()], Stdio::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("execute /no/such/check"), "{err}");
    let mut p = target
        .spawn(&["sleep".into(), "600".into()], Stdio::default())
        .unwrap();
    assert_eq!(p.wait_timeout(Duration::from_millis(200)).unwrap(), None);
    assert_eq!(p.kill().unwrap(), ExitStatus::Signaled(libc::SIGKILL));
    assert!(target.spawn(&[], Stdio::default()).is_err());
    // Once the container is gone, nothing can be started in it.
    c.kill_all().unwrap();
    assert!(target.spawn(&["true".into()], Stdio::default()).is_err());
    c.destroy().unwrap();
}
