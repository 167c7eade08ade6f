//! Shared test helpers: a busybox rootfs and a uniquely named cgroup sub-tree.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nuvol_container::{
    pipe, spawn, CgroupRoot, ContainerSpec, ExitStatus, RootSource, RootWrite, Rootfs, Stdio,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test run.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A rootfs made of Debian's busybox-static and its applet links.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in [
        "bin", "sbin", "proc", "sys", "dev", "tmp", "etc", "www", "data", "usr/bin",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("apt-get install busybox-static");
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("www/index.html"), "ok\n").unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )
    .unwrap();
    root
}

/// A cgroup sub-tree removed (with anything left in it) on drop.
pub struct CgroupGuard(pub CgroupRoot);

impl CgroupGuard {
    /// Fails when `NUVOL_REQUIRE_CGROUP_V2` is set and the host offers only
    /// v1, so a v2 run can never pass on v1 by accident. Says which one it
    /// uses.
    pub fn new() -> Self {
        let root = CgroupRoot::detect(&unique("nuvol-test")).expect("cgroups");
        require_v2_if_asked(&root);
        CgroupGuard(root)
    }
}

/// Panic if cgroup v2 is required but `root` is not v2; print which is used.
pub fn require_v2_if_asked(root: &CgroupRoot) {
    if std::env::var_os("NUVOL_REQUIRE_CGROUP_V2").is_some() {
        assert!(
            root.is_v2(),
            "cgroup v2 required (NUVOL_REQUIRE_CGROUP_V2) but this kernel offers {root:?}"
        );
    }
    if !root.is_v2() {
        eprintln!(
            "note: cgroup v1 (hybrid host); v2 is tested on the booted image (tests/tests/services_on_box.rs)"
        );
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for id in self.0.children() {
            if let Ok(cg) = self.0.cgroup(&id) {
                let _ = cg.destroy();
            }
        }
        let _ = self.0.remove();
    }
}

pub fn spec(id: &str, rootfs: &Path, script: &str) -> ContainerSpec {
    let r = Rootfs {
        source: RootSource::Dir(rootfs.to_path_buf()),
        write: RootWrite::ReadOnly,
    };
    ContainerSpec::new(id, r, vec!["/bin/sh".into(), "-c".into(), script.into()])
}

/// Read everything from a pipe until EOF or `timeout`.
pub fn read_all(fd: OwnedFd, timeout: Duration) -> String {
    let mut f = std::fs::File::from(fd);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Blocking read: the writers are the container's processes, which exit.
    while Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A hand-written OCI runtime config (what `runc spec` produces, minus the terminal).
pub fn oci_config(args: &[&str], hostname: &str) -> String {
    let args = serde_json::to_string(args).unwrap();
    format!(
        r#"{{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{ "uid": 0, "gid": 0 }},
    "args": {args},
    "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_OCI=yes"],
    "cwd": "/",
    "capabilities": {{
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    }},
    "rlimits": [{{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }}],
    "noNewPrivileges": true
  }},
  "root": {{ "path": "rootfs", "readonly": true }},
  "hostname": "{hostname}",
  "mounts": [
    {{ "destination": "/proc", "type": "proc", "source": "proc" }},
    {{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }},
    {{ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }},
    {{ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }},
    {{ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }},
    {{ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] }},
    {{ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }}
  ],
  "linux": {{
    "resources": {{ "memory": {{ "limit": 67108864 }}, "pids": {{ "limit": 64 }} }},
    "namespaces": [ {{ "type": "pid" }}, {{ "type": "network" }}, {{ "type": "ipc" }}, {{ "type": "uts" }}, {{ "type": "mount" }}, {{ "type": "cgroup" }} ],
    "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
  }}
}}"#
    )
}

/// Run the container to its end with stdout and stderr into one pipe;
/// its exit and output (read for at most `timeout`).
pub fn run_to_end(
    spec: &ContainerSpec,
    cg: &CgroupGuard,
    state: &Path,
    timeout: Duration,
) -> (ExitStatus, String) {
    let (r, w) = pipe().unwrap();
    let w2 = w.try_clone().unwrap();
    let mut c = spawn(
        spec,
        &cg.0,
        state,
        Stdio {
            stdin: None,
            stdout: Some(w),
            stderr: Some(w2),
        },
    )
    .unwrap();
    let out = read_all(r, timeout);
    let st = c.wait().unwrap();
    c.destroy().unwrap();
    (st, out)
}
