//! cgroups: v2 (what nuvol boots with) and, for development hosts that still
//! run the hybrid layout, the v1 memory/pids/cpu hierarchies.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{ContainerError, Result};
use crate::spec::{check_id, Limits};

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
const MAX_FILE: u64 = 64 * 1024;

/// Where containers' cgroups are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// A directory in the unified (v2) hierarchy.
    V2(PathBuf),
    /// One directory per v1 hierarchy (memory, pids, cpu).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

/// The cgroup of one container.
#[derive(Debug, Clone)]
pub struct Cgroup {
    root: CgroupRoot,
    id: String,
}

fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let f = fs::File::open(path)?;
    let mut s = String::new();
    f.take(MAX_FILE).read_to_string(&mut s)?;
    Ok(s)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(ContainerError::cgroup(path))
}

/// The value of `key` in a flat-keyed cgroup file (`memory.events`, `cgroup.events`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let s = read_small(path).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// This process's cgroup path in the hierarchy named `want` ("" = unified).
fn own_cgroup(want: &str) -> Option<String> {
    let s = read_small(Path::new("/proc/self/cgroup")).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.splitn(3, ':');
        let _id = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        if (want.is_empty() && ctrls.is_empty())
            || (!want.is_empty() && ctrls.split(',').any(|c| c == want))
        {
            Some(path.trim_start_matches('/').to_string())
        } else {
            None
        }
    })
}

fn v2_has(path: &Path, ctrls: &[&str]) -> bool {
    read_small(&path.join("cgroup.controllers"))
        .map(|s| ctrls.iter().all(|c| s.split_whitespace().any(|x| x == *c)))
        .unwrap_or(false)
}

impl CgroupRoot {
    /// Use (and create) `path` in a cgroup2 hierarchy, enabling the memory,
    /// pids and cpu controllers on the way down from the mount point.
    pub fn v2(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(ContainerError::cgroup(&path))?;
        // Enable controllers in every ancestor below the hierarchy root, then in `path` itself.
        let mut chain = vec![path.clone()];
        let mut p = path.parent();
        while let Some(d) = p {
            if !d.join("cgroup.subtree_control").exists() {
                break;
            }
            chain.push(d.to_path_buf());
            p = d.parent();
        }
        for dir in chain.iter().rev() {
            let available = read_small(&dir.join("cgroup.controllers")).unwrap_or_default();
            for c in ["memory", "pids", "cpu"] {
                if available.split_whitespace().any(|x| x == c) {
                    // Fails harmlessly where the cgroup holds processes (no-internal-process rule);
                    // the final check below is what matters.
                    let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
        let ctl = read_small(&path.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["memory", "pids"] {
            if !ctl.split_whitespace().any(|x| x == c) {
                return Err(ContainerError::CgroupsUnavailable(format!(
                    "controller {c} cannot be enabled in {}",
                    path.display()
                )));
            }
        }
        Ok(CgroupRoot::V2(path))
    }

    /// Create `parent/name` and enable the controllers there, provided
    /// `parent` already delegates memory and pids (nothing else is written).
    fn v2_within(parent: &Path, name: &str) -> Result<Self> {
        let ctl = read_small(&parent.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| ctl.split_whitespace().any(|x| x == c);
        if !(has("memory") && has("pids")) {
            return Err(ContainerError::CgroupsUnavailable(format!(
                "{} does not delegate memory and pids",
                parent.display()
            )));
        }
        let path = parent.join(name);
        fs::create_dir_all(&path).map_err(ContainerError::cgroup(&path))?;
        for c in ["memory", "pids", "cpu"] {
            if c != "cpu" || has("cpu") {
                if let Err(e) = write(&path.join("cgroup.subtree_control"), &format!("+{c}")) {
                    let _ = fs::remove_dir(&path);
                    return Err(e);
                }
            }
        }
        Ok(CgroupRoot::V2(path))
    }

    /// Pick what this host offers: cgroup v2 if its root has the memory and
    /// pids controllers, otherwise the v1 hierarchies. `name` becomes a child
    /// of this process's own cgroup in each hierarchy.
    pub fn detect(name: &str) -> Result<Self> {
        check_id(name)?;
        let base = Path::new(CGROUP_MOUNT);
        for mount in [base.to_path_buf(), base.join("unified")] {
            if !v2_has(&mount, &["memory", "pids"]) {
                continue;
            }
            // Our own cgroup first, then its ancestors: a cgroup holding
            // processes (like a systemd session scope) cannot delegate
            // controllers, its parent slice usually already does. Nothing
            // outside the new `name` directory is written.
            let own = own_cgroup("").unwrap_or_default();
            let mut cand = Some(mount.join(&own));
            while let Some(parent) = cand {
                if let Ok(root) = Self::v2_within(&parent, name) {
                    return Ok(root);
                }
                cand = parent
                    .parent()
                    .filter(|p| p.starts_with(&mount))
                    .map(Path::to_path_buf);
            }
            return Err(ContainerError::CgroupsUnavailable(format!(
                "no cgroup above {own} delegates the memory and pids controllers"
            )));
        }
        let dir = |ctrl: &str, mount: &str| -> Result<PathBuf> {
            let own = own_cgroup(ctrl).ok_or_else(|| {
                ContainerError::CgroupsUnavailable(format!("no v1 {ctrl} hierarchy"))
            })?;
            let p = base.join(mount).join(own).join(name);
            fs::create_dir_all(&p).map_err(ContainerError::cgroup(&p))?;
            Ok(p)
        };
        let memory = dir("memory", "memory")?;
        let pids = dir("pids", "pids")?;
        let cpu = dir("cpu", "cpu")?;
        Ok(CgroupRoot::V1 { memory, pids, cpu })
    }

    /// Every directory this root owns.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            CgroupRoot::V2(p) => vec![p.clone()],
            CgroupRoot::V1 { memory, pids, cpu } => vec![memory.clone(), pids.clone(), cpu.clone()],
        }
    }

    /// The ids of cgroups left below this root (e.g. by a crashed agent).
    pub fn children(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.dirs().first() {
            if let Ok(rd) = fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if let Some(n) = e.file_name().to_str() {
                            out.push(n.to_string());
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The (possibly not yet created) cgroup of container `id`.
    pub fn cgroup(&self, id: &str) -> Result<Cgroup> {
        check_id(id)?;
        Ok(Cgroup {
            root: self.clone(),
            id: id.to_string(),
        })
    }

    /// Remove the root directories (they must be empty of containers).
    pub fn remove(&self) -> Result<()> {
        for d in self.dirs() {
            match fs::remove_dir(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ContainerError::Cgroup { path: d, source: e }),
            }
        }
        Ok(())
    }

    /// True for the unified hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self, CgroupRoot::V2(_))
    }
}

impl Cgroup {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The cgroup directories (one for v2, three for v1).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.root
            .dirs()
            .into_iter()
            .map(|d| d.join(&self.id))
            .collect()
    }

    /// The v2 directory, whose fd `clone3(CLONE_INTO_CGROUP)` takes.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        match &self.root {
            CgroupRoot::V2(p) => Some(p.join(&self.id)),
            CgroupRoot::V1 { .. } => None,
        }
    }

    fn memory_dir(&self) -> PathBuf {
        match &self.root {
            CgroupRoot::V2(p) => p.join(&self.id),
            CgroupRoot::V1 { memory, .. } => memory.join(&self.id),
        }
    }

    fn pids_dir(&self) -> PathBuf {
        match &self.root {
            CgroupRoot::V2(p) => p.join(&self.id),
            CgroupRoot::V1 { pids, .. } => pids.join(&self.id),
        }
    }

    /// Create the cgroup (removing a stale one of the same name) and write the limits.
    pub fn create(&self, limits: &Limits) -> Result<()> {
        if self.dirs().iter().any(|d| d.exists()) {
            self.destroy()?;
        }
        for d in self.dirs() {
            fs::create_dir(&d).map_err(ContainerError::cgroup(&d))?;
        }
        match &self.root {
            CgroupRoot::V2(_) => {
                let d = self.memory_dir();
                if let Some(m) = limits.memory_max {
                    write(&d.join("memory.max"), &m.to_string())?;
                    // No swap: the limit is the limit.
                    if d.join("memory.swap.max").exists() {
                        write(&d.join("memory.swap.max"), "0")?;
                    }
                }
                write(&d.join("memory.oom.group"), "1")?;
                if let Some(p) = limits.pids_max {
                    write(&d.join("pids.max"), &p.to_string())?;
                }
                if let Some((q, p)) = limits.cpu_max {
                    write(&d.join("cpu.max"), &format!("{q} {p}"))?;
                }
                if let Some(w) = limits.cpu_weight {
                    write(&d.join("cpu.weight"), &w.to_string())?;
                }
            }
            CgroupRoot::V1 { cpu, .. } => {
                let m = self.memory_dir();
                if let Some(v) = limits.memory_max {
                    write(&m.join("memory.limit_in_bytes"), &v.to_string())?;
                }
                if let Some(p) = limits.pids_max {
                    write(&self.pids_dir().join("pids.max"), &p.to_string())?;
                }
                let c = cpu.join(&self.id);
                if let Some((q, p)) = limits.cpu_max {
                    write(&c.join("cpu.cfs_period_us"), &p.to_string())?;
                    write(&c.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
                if let Some(w) = limits.cpu_weight {
                    // v2 weight 100 == v1 shares 1024.
                    write(
                        &c.join("cpu.shares"),
                        &(w.saturating_mul(1024) / 100).max(2).to_string(),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Move `pid` into the cgroup (v1; on v2 the runtime uses CLONE_INTO_CGROUP).
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        read_small(&self.pids_dir().join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// True while any process is in the cgroup.
    pub fn populated(&self) -> bool {
        match &self.root {
            CgroupRoot::V2(_) => {
                keyed(&self.memory_dir().join("cgroup.events"), "populated").unwrap_or(0) != 0
            }
            CgroupRoot::V1 { .. } => self.dirs().iter().any(|d| {
                read_small(&d.join("cgroup.procs"))
                    .map(|s| !s.trim().is_empty())
                    .unwrap_or(false)
            }),
        }
    }

    /// How many times the kernel OOM killer killed a process in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        match &self.root {
            CgroupRoot::V2(_) => {
                keyed(&self.memory_dir().join("memory.events"), "oom_kill").unwrap_or(0)
            }
            CgroupRoot::V1 { .. } => {
                keyed(&self.memory_dir().join("memory.oom_control"), "oom_kill").unwrap_or(0)
            }
        }
    }

    /// How many forks failed because pids.max was reached.
    pub fn pids_max_events(&self) -> u64 {
        keyed(&self.pids_dir().join("pids.events"), "max").unwrap_or(0)
    }

    /// Current number of tasks (pids.current).
    pub fn pids_current(&self) -> u64 {
        read_small(&self.pids_dir().join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Current memory use in bytes.
    pub fn memory_current(&self) -> u64 {
        let f = match &self.root {
            CgroupRoot::V2(_) => "memory.current",
            CgroupRoot::V1 { .. } => "memory.usage_in_bytes",
        };
        read_small(&self.memory_dir().join(f))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time used by the cgroup's processes, in microseconds
    /// (`cpu.stat` `usage_usec` on v2; on v1 `cpuacct.usage`, found only
    /// when cpuacct is co-mounted with cpu; 0 when unknown).
    pub fn cpu_usage_usec(&self) -> u64 {
        match &self.root {
            CgroupRoot::V2(p) => {
                keyed(&p.join(&self.id).join("cpu.stat"), "usage_usec").unwrap_or(0)
            }
            CgroupRoot::V1 { cpu, .. } => read_small(&cpu.join(&self.id).join("cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(0, |ns| ns / 1000),
        }
    }

    /// SIGKILL every process in the cgroup and wait (up to `timeout`) until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.dirs().iter().any(|d| d.exists()) || !self.populated() {
                return Ok(());
            }
            let kill_file = self.memory_dir().join("cgroup.kill");
            let used_kill = self.root.is_v2() && fs::write(&kill_file, "1").is_ok();
            if !used_kill {
                for pid in self.pids() {
                    // SAFETY: kill(2) with a pid read from cgroup.procs; no memory is touched.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if Instant::now() >= deadline {
                return Err(ContainerError::Cgroup {
                    path: self.memory_dir(),
                    source: io::Error::new(io::ErrorKind::TimedOut, "processes survive SIGKILL"),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill whatever is left and remove the cgroup directories.
    pub fn destroy(&self) -> Result<()> {
        self.kill_all(Duration::from_secs(5))?;
        for d in self.dirs() {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    // EBUSY while the last exiting task is still being released.
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(ContainerError::Cgroup { path: d, source: e }),
                }
            }
        }
        Ok(())
    }
}
