//! A container's setup as a [`Plan`]: the mounts of its rootfs, volumes
//! and `/dev`, `pivot_root`, then its identity (signals, no_new_privs,
//! seccomp, capabilities, ids, stdio, exec), built from its spec in the
//! parent. The identity part also ends the plan of a process started in
//! a running container (`exec.rs`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{ContainerError, Result};
use crate::loopdev::LoopDevice;
use crate::plan::{cpath, cstr, Op, Plan};
use crate::seccomp;
use crate::spec::{ContainerSpec, NetworkMode, RootSource, RootWrite};

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

fn components(dest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in dest.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur.push('/');
        cur.push_str(c);
        out.push(cur.clone());
    }
    out
}

/// Refuse mount destinations that pass through a symlink in a directory rootfs
/// (a symlink there could point the mount anywhere on the host).
fn check_no_symlink(root: &Path, dest: &str) -> Result<()> {
    for c in components(dest) {
        let p = root.join(c.trim_start_matches('/'));
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ContainerError::InvalidSpec(format!(
                    "mount destination {dest:?} passes through symlink {}",
                    p.display()
                )))
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

pub(crate) struct Prepared {
    pub plan: Plan,
    pub _loop: Option<LoopDevice>,
}

pub(crate) fn build_plan(spec: &ContainerSpec, state: &Path, cgroup_v2: bool) -> Result<Prepared> {
    let mut plan = Plan::new(&spec.args, &spec.env, &spec.additional_gids)?;
    let root = state.join("root");
    fs::create_dir_all(&root).map_err(ContainerError::sys("create container state directory"))?;
    let croot = cpath(&root)?;
    plan.push(
        Op::Mount {
            src: None,
            target: cstr("/")?,
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None,
        },
        "make all mounts private",
    );
    if !cgroup_v2 {
        // On v2 the clone itself creates the cgroup namespace, rooted at the container's cgroup.
        plan.push(Op::UnshareCgroup, "unshare cgroup namespace");
    }
    let mut loopdev = None;
    let mut remount_ro = false;
    let lower: PathBuf = match &spec.rootfs.source {
        RootSource::Dir(d) => d.clone(),
        RootSource::SquashfsImage(img) => {
            let dev = LoopDevice::attach(img)?;
            let target = if matches!(spec.rootfs.write, RootWrite::ReadOnly) {
                root.clone()
            } else {
                let l = state.join("lower");
                fs::create_dir_all(&l).map_err(ContainerError::sys("create lower directory"))?;
                l
            };
            plan.push(
                Op::Mount {
                    src: Some(cpath(dev.path())?),
                    target: cpath(&target)?,
                    fstype: Some(cstr(image_fstype(img))?),
                    flags: libc::MS_RDONLY | libc::MS_NODEV,
                    data: None,
                },
                format!("mount image {} ({})", img.display(), dev.path().display()),
            );
            loopdev = Some(dev);
            target
        }
    };
    match (&spec.rootfs.source, &spec.rootfs.write) {
        (RootSource::SquashfsImage(_), RootWrite::ReadOnly) => {}
        (_, RootWrite::Overlay { upper, work }) => {
            fs::create_dir_all(upper)
                .map_err(ContainerError::sys("create overlay upper directory"))?;
            fs::create_dir_all(work)
                .map_err(ContainerError::sys("create overlay work directory"))?;
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            );
            plan.push(
                Op::Mount {
                    src: Some(cstr("overlay")?),
                    target: croot.clone(),
                    fstype: Some(cstr("overlay")?),
                    flags: 0,
                    data: Some(cstr(&data)?),
                },
                "mount overlay rootfs",
            );
        }
        (RootSource::Dir(d), w) => {
            plan.push(
                Op::Mount {
                    src: Some(cpath(d)?),
                    target: croot.clone(),
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                },
                format!("bind rootfs {}", d.display()),
            );
            remount_ro = matches!(w, RootWrite::ReadOnly);
        }
        (RootSource::SquashfsImage(_), RootWrite::InPlace) => {
            return Err(ContainerError::InvalidSpec(
                "rootfs: a squashfs image cannot be written in place".into(),
            ))
        }
    }
    let dir_root = match (&spec.rootfs.source, &spec.rootfs.write) {
        (RootSource::Dir(d), RootWrite::ReadOnly | RootWrite::InPlace) => Some(d.clone()),
        _ => None,
    };
    let inside = |dest: &str| root.join(dest.trim_start_matches('/'));
    let mut has_dev = false;
    for m in &spec.mounts {
        if let Some(d) = &dir_root {
            check_no_symlink(d, &m.destination)?;
        }
        let comps = components(&m.destination);
        let is_file_bind = m.is_bind()
            && fs::metadata(&m.source)
                .map(|md| !md.is_dir())
                .unwrap_or(false);
        for (i, c) in comps.iter().enumerate() {
            let p = cpath(&inside(c))?;
            if i + 1 == comps.len() && is_file_bind {
                plan.push(Op::Touch(p), format!("create mount point {c}"));
            } else {
                plan.push(Op::Mkdir(p), format!("create mount point {c}"));
            }
        }
        let target = cpath(&inside(&m.destination))?;
        if m.is_bind() {
            plan.push(
                Op::Mount {
                    src: Some(cstr(&m.source)?),
                    target: target.clone(),
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                },
                format!("bind {} on {}", m.source, m.destination),
            );
            let extra = m.flags & !(libc::MS_BIND | libc::MS_REC);
            if extra != 0 {
                plan.push(
                    Op::Mount {
                        src: None,
                        target,
                        fstype: None,
                        flags: libc::MS_REMOUNT | libc::MS_BIND | extra,
                        data: None,
                    },
                    format!("remount {} with flags {extra:#x}", m.destination),
                );
            }
        } else {
            plan.push(
                Op::Mount {
                    src: Some(cstr(&m.source)?),
                    target,
                    fstype: Some(cstr(&m.fstype)?),
                    flags: m.flags,
                    data: if m.data.is_empty() {
                        None
                    } else {
                        Some(cstr(&m.data)?)
                    },
                },
                format!("mount {} on {}", m.fstype, m.destination),
            );
        }
        if m.destination == "/dev" {
            has_dev = true;
            for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
                let p = cpath(&inside(&format!("/dev/{dev}")))?;
                plan.push(Op::Touch(p.clone()), format!("create /dev/{dev}"));
                plan.push(
                    Op::Mount {
                        src: Some(cstr(&format!("/dev/{dev}"))?),
                        target: p,
                        fstype: None,
                        flags: libc::MS_BIND,
                        data: None,
                    },
                    format!("bind /dev/{dev}"),
                );
            }
        }
    }
    if has_dev {
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("pts/ptmx", "/dev/ptmx"),
        ] {
            plan.push(
                Op::Symlink {
                    target: cstr(target)?,
                    link: cpath(&inside(link))?,
                },
                format!("symlink {link}"),
            );
        }
    }
    if remount_ro {
        plan.push(
            Op::Mount {
                src: None,
                target: croot.clone(),
                fstype: None,
                flags: libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                data: None,
            },
            "remount rootfs read-only",
        );
    }
    plan.push(Op::Chdir(croot), "chdir to rootfs");
    plan.push(Op::PivotRoot, "pivot_root");
    for p in &spec.masked_paths {
        plan.push(Op::Mask(cstr(p)?), format!("mask {p}"));
    }
    for p in &spec.readonly_paths {
        plan.push(Op::ReadOnly(cstr(p)?), format!("make {p} read-only"));
    }
    if let Some(h) = &spec.hostname {
        plan.push(Op::Sethostname(cstr(h)?), "sethostname");
    }
    if spec.network == NetworkMode::Private {
        plan.push(Op::LoopbackUp, "bring lo up");
    }
    push_identity(&mut plan, &Identity::of(spec), &spec.args[0])?;
    Ok(Prepared {
        plan,
        _loop: loopdev,
    })
}

/// Who a container's processes are, kept with the container so that a
/// process started in it later ([`crate::ExecTarget`]) gets the same.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<caps::Capability>,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    pub env: Vec<String>,
    pub cwd: String,
    pub oom_score_adj: i32,
}

impl Identity {
    pub(crate) fn of(spec: &ContainerSpec) -> Identity {
        Identity {
            uid: spec.uid,
            gid: spec.gid,
            additional_gids: spec.additional_gids.clone(),
            capabilities: spec.capabilities.clone(),
            no_new_privileges: spec.no_new_privileges,
            seccomp: spec.seccomp,
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            oom_score_adj: spec.oom_score_adj,
        }
    }
}

/// The end of every plan: signals, no_new_privs, seccomp, capabilities,
/// ids, working directory, stdio, exec of `arg0` (looked up in the
/// identity's `PATH` unless it has a slash).
pub(crate) fn push_identity(plan: &mut Plan, id: &Identity, arg0: &str) -> Result<()> {
    plan.push(Op::ResetSignals, "reset signal dispositions");
    // Capabilities: bounding set first (needs CAP_SETPCAP), then ids, then the
    // kept set in every set including ambient (so a non-root user keeps it across exec).
    let mut keep = 0u64;
    for c in &id.capabilities {
        keep |= 1u64 << c.index();
    }
    let last = last_cap();
    if id.no_new_privileges {
        plan.push(Op::NoNewPrivs, "set no_new_privs");
    }
    if id.seccomp {
        plan.bpf = seccomp::default_filter()?;
        // Installed while CAP_SYS_ADMIN is still held, so it works without no_new_privs too.
        plan.push(Op::Seccomp, "install seccomp filter");
    }
    plan.push(
        Op::DropBounding {
            keep,
            last_cap: last,
        },
        "drop capabilities from the bounding set",
    );
    plan.push(Op::KeepCaps, "keep capabilities across setuid");
    plan.push(
        Op::SetIds {
            uid: id.uid,
            gid: id.gid,
        },
        format!("set uid {} gid {}", id.uid, id.gid),
    );
    plan.push(Op::Capset { keep }, "set capabilities");
    plan.push(
        Op::Ambient {
            keep,
            last_cap: last,
        },
        "raise ambient capabilities",
    );
    plan.push(Op::Chdir(cstr(&id.cwd)?), format!("chdir to {}", id.cwd));
    plan.push(Op::Stdio, "set up stdin/stdout/stderr");
    plan.push(Op::CloseFds, "close inherited file descriptors");
    if arg0.contains('/') {
        plan.exec_paths.push(cstr(arg0)?);
    } else {
        let path = id
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for dir in path.split(':').filter(|d| d.starts_with('/')).take(32) {
            plan.exec_paths
                .push(cstr(&format!("{}/{arg0}", dir.trim_end_matches('/')))?);
        }
    }
    plan.push(Op::Exec, format!("execute {arg0}"));
    Ok(())
}

/// The filesystem of a bundle image, from its superblock magic: erofs
/// (`0xE0F5E1E2` at byte 1024) or squashfs (`hsqs` at 0, and the default,
/// so a bad image fails at the mount step with the image named).
fn image_fstype(img: &std::path::Path) -> &'static str {
    use std::io::Read;
    let mut head = [0u8; 1028];
    let read = fs::File::open(img).and_then(|mut f| f.read_exact(&mut head));
    if read.is_ok() && head[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
        "erofs"
    } else {
        "squashfs"
    }
}

/// Set a created (not yet started) process's `oom_score_adj`. Written by
/// this process, which holds CAP_SYS_RESOURCE, it is also the floor the
/// process cannot go below without that capability.
pub(crate) fn set_oom_score_adj(pid: i32, adj: i32) -> Result<()> {
    fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
        .map_err(ContainerError::sys("set oom_score_adj"))
}
