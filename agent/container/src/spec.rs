//! What a container is: the runtime's own description, independent of the
//! bundle manifest and of OCI `config.json` (both are converted into it).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ContainerError, Result};

/// Longest container id (it becomes a cgroup and a directory name).
pub const MAX_ID: usize = 64;
pub(crate) const MAX_ARGS: usize = 256;
const MAX_ENV: usize = 512;
const MAX_MOUNTS: usize = 128;
pub(crate) const MAX_STR: usize = 4096;

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// A plain directory on the host.
    Dir(PathBuf),
    /// A squashfs image file, attached to a loop device and mounted read-only.
    SquashfsImage(PathBuf),
}

/// How the root filesystem is made writable, if at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootWrite {
    /// Read-only: every write to `/` fails with EROFS.
    ReadOnly,
    /// Overlayfs with the source as lower layer and `upper` (with its sibling
    /// `work`) on the data partition.
    Overlay { upper: PathBuf, work: PathBuf },
    /// Only for [`RootSource::Dir`]: the directory itself, writable (OCI `root.readonly = false`).
    InPlace,
}

/// The root filesystem of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    pub source: RootSource,
    pub write: RootWrite,
}

/// One filesystem mounted into the container, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub destination: String,
    /// Filesystem type (`proc`, `tmpfs`, `sysfs`, …) or `bind`.
    pub fstype: String,
    /// Source: a host path for binds, a free label otherwise.
    pub source: String,
    /// `MS_*` flags (for binds: applied by a remount after the bind), as
    /// mount(2) takes them: an `unsigned long`, 32 bits on 32-bit ARM
    /// (every `MS_*` flag fits there).
    pub flags: libc::c_ulong,
    /// Filesystem-specific options (`mode=755,size=64k`).
    pub data: String,
}

impl Mount {
    /// True for bind mounts.
    pub fn is_bind(&self) -> bool {
        self.fstype == "bind" || self.flags & libc::MS_BIND != 0
    }
}

/// Which network namespace the container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// A new, empty network namespace with only `lo`, and `lo` down.
    None,
    /// The host's network namespace (no isolation).
    Host,
    /// A new network namespace with `lo` up (the `nuvol0` veth is added by the
    /// network crate when it is present).
    #[default]
    Private,
}

/// cgroup limits. `None` leaves the controller's default (no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// memory.max in bytes.
    pub memory_max: Option<u64>,
    /// cpu.max: quota and period in microseconds.
    pub cpu_max: Option<(u64, u64)>,
    /// cpu.weight, 1..=10000.
    pub cpu_weight: Option<u64>,
    /// pids.max.
    pub pids_max: Option<u64>,
}

/// Everything the runtime needs to start one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// `[a-z0-9._-]`, 1..=64 chars, unique among running containers.
    pub id: String,
    pub rootfs: Rootfs,
    /// argv; `args[0]` is absolute or looked up in `PATH` from `env`.
    pub args: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: Option<String>,
    pub mounts: Vec<Mount>,
    /// Paths hidden by binding `/dev/null` (files) or an empty read-only tmpfs (dirs).
    pub masked_paths: Vec<String>,
    /// Paths remounted read-only.
    pub readonly_paths: Vec<String>,
    /// Capabilities kept (bounding, permitted, effective, inheritable and
    /// ambient); every other one is dropped.
    pub capabilities: Vec<caps::Capability>,
    pub no_new_privileges: bool,
    /// Install the runtime's default seccomp filter.
    pub seccomp: bool,
    pub network: NetworkMode,
    pub limits: Limits,
    /// `/proc/PID/oom_score_adj` of the container's processes, -1000..=1000
    /// (default [`DEFAULT_OOM_SCORE_ADJ`]). Set by the runtime, which holds
    /// CAP_SYS_RESOURCE: a process without it cannot go below this value.
    #[serde(default = "default_oom_score_adj")]
    pub oom_score_adj: i32,
}

/// Services are the OOM killer's first choice: the agent runs at -900 and
/// PID 1 at -1000 (`docs/containers.md`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = 500;

fn default_oom_score_adj() -> i32 {
    DEFAULT_OOM_SCORE_ADJ
}

/// Parse a capability name, with or without the `CAP_` prefix, any case.
pub fn parse_capability(name: &str) -> Result<caps::Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .map_err(|_| ContainerError::UnknownCapability(name.to_string()))
}

/// The default mounts of a nuvol container: /proc, a minimal /dev, /sys and
/// the cgroup filesystem read-only.
pub fn default_mounts() -> Vec<Mount> {
    let m = |destination: &str, fstype: &str, flags: libc::c_ulong, data: &str| Mount {
        destination: destination.into(),
        fstype: fstype.into(),
        source: fstype.into(),
        flags,
        data: data.into(),
    };
    let nse = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    vec![
        m("/proc", "proc", nse, ""),
        m(
            "/dev",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            "mode=755,size=65536k",
        ),
        m(
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        ),
        m("/dev/shm", "tmpfs", nse, "mode=1777,size=65536k"),
        m("/dev/mqueue", "mqueue", nse, ""),
        m("/sys", "sysfs", nse | libc::MS_RDONLY, ""),
        m(
            "/sys/fs/cgroup",
            "cgroup2",
            nse | libc::MS_RDONLY | libc::MS_RELATIME,
            "",
        ),
    ]
}

/// Paths masked by default (as runc and crun do).
pub fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Paths made read-only by default.
pub fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn check_str(field: &str, s: &str) -> Result<()> {
    if s.len() > MAX_STR {
        return Err(ContainerError::InvalidSpec(format!(
            "{field} is longer than {MAX_STR} bytes"
        )));
    }
    if s.contains('\0') {
        return Err(ContainerError::InvalidSpec(format!(
            "{field} contains a NUL byte"
        )));
    }
    Ok(())
}

fn check_abs(field: &str, s: &str) -> Result<()> {
    check_str(field, s)?;
    if !s.starts_with('/') {
        return Err(ContainerError::InvalidSpec(format!(
            "{field} {s:?} is not an absolute path"
        )));
    }
    if s.split('/').any(|c| c == "..") {
        return Err(ContainerError::InvalidSpec(format!(
            "{field} {s:?} contains `..`"
        )));
    }
    Ok(())
}

/// Check that a container id is usable as a cgroup and directory name.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidSpec(format!(
            "id {id:?} must be 1-{MAX_ID} characters of a-z 0-9 . _ - and not start with a dot"
        )))
    }
}

fn check_overlay_path(field: &str, p: &Path) -> Result<()> {
    let s = p.to_string_lossy();
    if s.contains(',') || s.contains(':') || s.contains('\\') {
        return Err(ContainerError::InvalidSpec(format!(
            "{field} {s:?} contains a character overlayfs options cannot carry (, : \\)"
        )));
    }
    Ok(())
}

impl ContainerSpec {
    /// A spec with nuvol's defaults: read-only rootfs, default mounts and
    /// masks, no capabilities, no_new_privs, seccomp, private network.
    pub fn new(id: &str, rootfs: Rootfs, args: Vec<String>) -> Self {
        ContainerSpec {
            id: id.to_string(),
            rootfs,
            args,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: Some(id.chars().take(63).collect()),
            mounts: default_mounts(),
            masked_paths: default_masked_paths(),
            readonly_paths: default_readonly_paths(),
            capabilities: Vec::new(),
            no_new_privileges: true,
            seccomp: true,
            network: NetworkMode::Private,
            limits: Limits::default(),
            oom_score_adj: DEFAULT_OOM_SCORE_ADJ,
        }
    }

    /// Refuse anything the runtime cannot run safely, with a message naming the field.
    pub fn validate(&self) -> Result<()> {
        check_id(&self.id)?;
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return Err(ContainerError::InvalidSpec(format!(
                "oom_score_adj: {} is not in -1000..=1000",
                self.oom_score_adj
            )));
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(ContainerError::InvalidSpec(
                "args: no entrypoint given".into(),
            ));
        }
        if self.args.len() > MAX_ARGS {
            return Err(ContainerError::InvalidSpec(format!(
                "args: more than {MAX_ARGS} arguments"
            )));
        }
        for a in &self.args {
            check_str("args", a)?;
        }
        if self.env.len() > MAX_ENV {
            return Err(ContainerError::InvalidSpec(format!(
                "env: more than {MAX_ENV} variables"
            )));
        }
        for e in &self.env {
            check_str("env", e)?;
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                _ => {
                    return Err(ContainerError::InvalidSpec(format!(
                        "env entry {e:?} is not KEY=value"
                    )))
                }
            }
        }
        check_abs("cwd", &self.cwd)?;
        if let Some(h) = &self.hostname {
            if h.is_empty()
                || h.len() > 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            {
                return Err(ContainerError::InvalidSpec(format!(
                    "hostname {h:?} is not a valid host name"
                )));
            }
        }
        if self.mounts.len() > MAX_MOUNTS {
            return Err(ContainerError::InvalidSpec(format!(
                "mounts: more than {MAX_MOUNTS}"
            )));
        }
        for m in &self.mounts {
            check_abs("mount destination", &m.destination)?;
            check_str("mount source", &m.source)?;
            check_str("mount options", &m.data)?;
            check_str("mount type", &m.fstype)?;
            if m.is_bind() {
                check_abs("bind mount source", &m.source)?;
            }
        }
        for p in self.masked_paths.iter().chain(&self.readonly_paths) {
            check_abs("masked/readonly path", p)?;
        }
        match (&self.rootfs.source, &self.rootfs.write) {
            (RootSource::SquashfsImage(_), RootWrite::InPlace) => {
                return Err(ContainerError::InvalidSpec(
                    "rootfs: a squashfs image cannot be written in place".into(),
                ))
            }
            (src, RootWrite::Overlay { upper, work }) => {
                let lower = match src {
                    RootSource::Dir(p) | RootSource::SquashfsImage(p) => p,
                };
                check_overlay_path("rootfs lower", lower)?;
                check_overlay_path("rootfs upper", upper)?;
                check_overlay_path("rootfs work", work)?;
            }
            _ => {}
        }
        let l = &self.limits;
        if l.memory_max == Some(0) {
            return Err(ContainerError::InvalidSpec(
                "limits: memory_max must be > 0".into(),
            ));
        }
        if l.pids_max == Some(0) {
            return Err(ContainerError::InvalidSpec(
                "limits: pids_max must be > 0".into(),
            ));
        }
        if let Some((q, p)) = l.cpu_max {
            if q < 1000 || !(1000..=1_000_000).contains(&p) {
                return Err(ContainerError::InvalidSpec(
                    "limits: cpu_max needs quota >= 1000us and period in 1000..=1000000us".into(),
                ));
            }
        }
        if let Some(w) = l.cpu_weight {
            if !(1..=10000).contains(&w) {
                return Err(ContainerError::InvalidSpec(
                    "limits: cpu_weight must be in 1..=10000".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        let rootfs = Rootfs {
            source: RootSource::Dir("/tmp/x".into()),
            write: RootWrite::ReadOnly,
        };
        ContainerSpec::new("t1", rootfs, vec!["/bin/sh".into()])
    }

    #[test]
    fn capability_names() {
        assert_eq!(
            parse_capability("net_bind_service").unwrap(),
            caps::Capability::CAP_NET_BIND_SERVICE
        );
        assert_eq!(
            parse_capability("CAP_CHOWN").unwrap(),
            caps::Capability::CAP_CHOWN
        );
        let e = parse_capability("CAP_FLY").unwrap_err();
        assert_eq!(e.to_string(), "unknown capability \"CAP_FLY\"");
    }

    #[test]
    fn validation_refuses_bad_specs() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.args.clear();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("no entrypoint"));
        let mut s = spec();
        s.id = "Bad/Id".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.cwd = "relative".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env.push("NOEQUALS".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.limits.pids_max = Some(0);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.mounts[0].destination = "/a/../../etc".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.rootfs.write = RootWrite::Overlay {
            upper: "/d/up,per".into(),
            work: "/d/work".into(),
        };
        assert!(s.validate().is_err());
    }
}
