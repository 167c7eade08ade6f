//! Running a plain OCI runtime bundle (`config.json` + rootfs). What is
//! supported is listed in [`SUPPORT`] and in `docs/containers.md`; anything
//! that would silently weaken isolation or that the runtime cannot honour is
//! refused, the rest is reported as a warning. [`config`] holds the types for
//! the part of `config.json` that is read.

pub mod config;

use std::path::Path;

use crate::error::{ContainerError, Result};
use crate::spec::{ContainerSpec, Limits, Mount, NetworkMode, RootSource, RootWrite, Rootfs};
use config::{Config, NamespaceType};

/// The runtime-spec fields and how this runtime treats them.
pub const SUPPORT: &[(&str, &str)] = &[
    ("ociVersion", "1.0.x-1.2.x accepted"),
    ("root.path, root.readonly", "supported (directory rootfs)"),
    ("process.args, env, cwd", "supported"),
    ("process.user.uid, gid, additionalGids", "supported (umask, username ignored)"),
    ("process.terminal", "refused when true (no console support)"),
    ("process.capabilities", "supported as one set: bounding (else effective) is kept everywhere, incl. ambient"),
    ("process.noNewPrivileges", "supported"),
    ("process.rlimits, oomScoreAdj, apparmorProfile, selinuxLabel", "ignored with a warning"),
    ("hostname", "supported"),
    ("mounts", "proc, sysfs, tmpfs, devpts, mqueue, cgroup/cgroup2 (read-only cgroup2), bind/rbind with ro/nosuid/nodev/noexec"),
    ("hooks", "refused (would run host programs)"),
    ("linux.namespaces", "pid and mount required; uts, ipc, cgroup always created; network: new (no path) or host (absent); user and time refused"),
    ("linux.uidMappings, gidMappings", "refused (no user namespaces)"),
    ("linux.resources.memory.limit", "supported (memory.max)"),
    ("linux.resources.cpu.quota, period, shares", "supported (cpu.max, cpu.weight)"),
    ("linux.resources.pids.limit", "supported (pids.max)"),
    ("linux.resources.devices, blockIO, hugepageLimits, network", "ignored with a warning; the device set is fixed (null zero full random urandom tty)"),
    ("linux.devices", "ignored with a warning"),
    ("linux.maskedPaths, readonlyPaths", "supported"),
    ("linux.seccomp", "not interpreted: the runtime's default filter is installed instead (warning)"),
    ("linux.sysctl, intelRdt, personality, rootfsPropagation", "ignored with a warning"),
    ("annotations", "ignored"),
];

/// A bundle converted to the runtime's spec, plus what was ignored.
#[derive(Debug, Clone)]
pub struct OciBundle {
    pub spec: ContainerSpec,
    pub warnings: Vec<String>,
}

fn mount_flags(opts: &[String]) -> (libc::c_ulong, bool, String) {
    let mut flags: libc::c_ulong = 0;
    let mut bind = false;
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "suid" => flags &= !libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "dev" => flags &= !libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "exec" => flags &= !libc::MS_NOEXEC,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "noatime" => flags |= libc::MS_NOATIME,
            "nodiratime" => flags |= libc::MS_NODIRATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "bind" | "rbind" => bind = true,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {}
            other => data.push(other),
        }
    }
    (flags, bind, data.join(","))
}

fn oci_err(path: &Path, msg: impl Into<String>) -> ContainerError {
    ContainerError::Oci {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Load `bundle/config.json` and convert it for container `id`.
pub fn load_bundle(bundle: &Path, id: &str) -> Result<OciBundle> {
    let cfg = bundle.join("config.json");
    let meta = std::fs::metadata(&cfg).map_err(|e| oci_err(&cfg, e.to_string()))?;
    if meta.len() > 1 << 20 {
        return Err(oci_err(&cfg, "config.json is larger than 1 MiB"));
    }
    let text = std::fs::read_to_string(&cfg).map_err(|e| oci_err(&cfg, e.to_string()))?;
    let config = config::parse(&text).map_err(|m| oci_err(&cfg, m))?;
    convert(&config, bundle, id).map_err(|e| match e {
        ContainerError::InvalidSpec(m) => oci_err(&cfg, m),
        other => other,
    })
}

/// True when an optional string is present and not empty.
fn set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// True when an optional list is present and not empty.
fn nonempty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// Convert a parsed `config.json`; `bundle` resolves a relative `root.path`.
pub fn convert(spec: &Config, bundle: &Path, id: &str) -> Result<OciBundle> {
    let cfg = bundle.join("config.json");
    let mut warnings = Vec::new();
    let v = &spec.oci_version;
    if !(v.starts_with("1.0.") || v.starts_with("1.1.") || v.starts_with("1.2.")) {
        return Err(oci_err(
            &cfg,
            format!("ociVersion {v:?} not supported (1.0-1.2)"),
        ));
    }
    let root = spec
        .root
        .as_ref()
        .ok_or_else(|| oci_err(&cfg, "root is missing"))?;
    let root_path = bundle.join(&root.path);
    let write = if root.readonly.unwrap_or(false) {
        RootWrite::ReadOnly
    } else {
        RootWrite::InPlace
    };
    let process = spec
        .process
        .as_ref()
        .ok_or_else(|| oci_err(&cfg, "process is missing"))?;
    if process.terminal.unwrap_or(false) {
        return Err(oci_err(&cfg, "process.terminal = true is not supported"));
    }
    let args = process.args.clone().unwrap_or_default();
    if args.is_empty() {
        return Err(oci_err(&cfg, "process.args is empty: no entrypoint"));
    }
    let mut c = ContainerSpec::new(
        id,
        Rootfs {
            source: RootSource::Dir(root_path),
            write,
        },
        args,
    );
    c.env = process.env.clone().unwrap_or_default();
    c.cwd = process.cwd.clone();
    c.uid = process.user.uid;
    c.gid = process.user.gid;
    c.additional_gids = process.user.additional_gids.clone().unwrap_or_default();
    c.no_new_privileges = process.no_new_privileges.unwrap_or(false);
    c.hostname = spec.hostname.clone().filter(|h| !h.is_empty());
    c.capabilities = Vec::new();
    if let Some(caps) = &process.capabilities {
        if let Some(set) = caps.bounding.as_ref().or(caps.effective.as_ref()) {
            c.capabilities = set.iter().map(|c| c.0).collect();
            c.capabilities.sort_by_key(|c| c.to_string());
            c.capabilities.dedup();
        }
    }
    if nonempty(&process.rlimits) {
        warnings.push("process.rlimits ignored".into());
    }
    if process.oom_score_adj.is_some() {
        warnings.push("process.oomScoreAdj ignored".into());
    }
    if set(&process.apparmor_profile) {
        warnings.push("process.apparmorProfile ignored".into());
    }
    if set(&process.selinux_label) {
        warnings.push("process.selinuxLabel ignored".into());
    }
    if spec.hooks.is_some() {
        return Err(oci_err(&cfg, "hooks are not supported"));
    }
    c.mounts = Vec::new();
    for m in spec.mounts.iter().flatten() {
        let dest = m.destination.clone();
        let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
        let (flags, bind, data) = mount_flags(m.options.as_deref().unwrap_or_default());
        let source = m.source.clone().unwrap_or_else(|| typ.clone());
        let mount = if bind || typ == "bind" {
            Mount {
                destination: dest,
                fstype: "bind".into(),
                source: bundle.join(&source).to_string_lossy().into_owned(),
                flags,
                data: String::new(),
            }
        } else {
            match typ.as_str() {
                "proc" | "sysfs" | "tmpfs" | "devpts" | "mqueue" => Mount {
                    destination: dest,
                    fstype: typ.clone(),
                    source,
                    flags,
                    data,
                },
                "cgroup" | "cgroup2" => Mount {
                    destination: dest,
                    fstype: "cgroup2".into(),
                    source: "cgroup2".into(),
                    flags: flags | libc::MS_RDONLY,
                    data: String::new(),
                },
                other => {
                    return Err(oci_err(
                        &cfg,
                        format!("mount type {other:?} at {dest} is not supported"),
                    ))
                }
            }
        };
        c.mounts.push(mount);
    }
    let linux = spec
        .linux
        .as_ref()
        .ok_or_else(|| oci_err(&cfg, "linux section is missing"))?;
    let ns = linux.namespaces.as_deref().unwrap_or_default();
    let has = |t: NamespaceType| ns.iter().any(|n| n.typ == t);
    for t in [NamespaceType::Pid, NamespaceType::Mount] {
        if !has(t) {
            return Err(oci_err(&cfg, format!("namespace {t:?} is required")));
        }
    }
    for n in ns {
        match n.typ {
            NamespaceType::User | NamespaceType::Time => {
                return Err(oci_err(
                    &cfg,
                    format!("namespace {:?} is not supported", n.typ),
                ))
            }
            _ if n.path.is_some() => {
                return Err(oci_err(
                    &cfg,
                    format!("joining an existing {:?} namespace is not supported", n.typ),
                ))
            }
            _ => {}
        }
    }
    c.network = if has(NamespaceType::Network) {
        NetworkMode::Private
    } else {
        NetworkMode::Host
    };
    for t in [
        NamespaceType::Uts,
        NamespaceType::Ipc,
        NamespaceType::Cgroup,
    ] {
        if !has(t) {
            warnings.push(format!("namespace {t:?} not requested but created anyway"));
        }
    }
    if nonempty(&linux.uid_mappings) || nonempty(&linux.gid_mappings) {
        return Err(oci_err(&cfg, "uid/gid mappings are not supported"));
    }
    let mut limits = Limits::default();
    if let Some(r) = &linux.resources {
        if let Some(l) = r.memory.as_ref().and_then(|m| m.limit) {
            if l > 0 {
                limits.memory_max = Some(l as u64);
            } else if l == 0 || l < -1 {
                return Err(oci_err(&cfg, format!("memory.limit {l} is invalid")));
            }
        }
        if let Some(cpu) = &r.cpu {
            if let Some(q) = cpu.quota {
                if q > 0 {
                    limits.cpu_max = Some((q as u64, cpu.period.unwrap_or(100_000)));
                }
            }
            if let Some(s) = cpu.shares {
                // v1 shares 2..262144 to v2 weight 1..10000 (the mapping crun and runc use).
                limits.cpu_weight = Some(1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142);
            }
        }
        if let Some(p) = &r.pids {
            if p.limit > 0 {
                limits.pids_max = Some(p.limit as u64);
            }
        }
        if nonempty(&r.devices) {
            warnings.push("linux.resources.devices ignored: the device set is fixed".into());
        }
        if r.block_io.is_some() || r.hugepage_limits.is_some() || r.network.is_some() {
            warnings.push("linux.resources blockIO/hugepageLimits/network ignored".into());
        }
    }
    c.limits = limits;
    c.masked_paths = linux.masked_paths.clone().unwrap_or_default();
    c.readonly_paths = linux.readonly_paths.clone().unwrap_or_default();
    if linux.seccomp.is_some() {
        warnings.push("linux.seccomp not interpreted: the default filter is installed".into());
    }
    c.seccomp = true;
    if nonempty(&linux.devices) {
        warnings.push("linux.devices ignored".into());
    }
    if linux.sysctl.as_ref().is_some_and(|s| !s.is_empty()) {
        warnings.push("linux.sysctl ignored".into());
    }
    if linux.intel_rdt.is_some() {
        warnings.push("linux.intelRdt ignored".into());
    }
    if linux.personality.is_some() {
        warnings.push("linux.personality ignored".into());
    }
    if set(&linux.rootfs_propagation) {
        warnings.push("linux.rootfsPropagation ignored".into());
    }
    c.validate()?;
    Ok(OciBundle { spec: c, warnings })
}

#[cfg(test)]
mod tests;
