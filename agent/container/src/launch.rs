//! Creating and controlling a container process.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, CgroupRoot};
use crate::error::{ContainerError, Result};
use crate::loopdev::LoopDevice;
use crate::plan::{cpath, cstr, Op, Plan};
use crate::seccomp;
use crate::spec::{ContainerSpec, NetworkMode, RootSource, RootWrite};

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }
}

/// The container's standard streams; `None` is `/dev/null`.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(ContainerError::last_os("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// A running (or exited, not yet destroyed) container.
#[derive(Debug)]
pub struct Container {
    id: String,
    pid: i32,
    pidfd: OwnedFd,
    cgroup: Cgroup,
    state_dir: PathBuf,
    status: Option<ExitStatus>,
    destroyed: bool,
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

struct Prepared {
    plan: Plan,
    _loop: Option<LoopDevice>,
}

fn build_plan(spec: &ContainerSpec, state: &Path, cgroup_v2: bool) -> Result<Prepared> {
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
    plan.push(Op::ResetSignals, "reset signal dispositions");
    // Capabilities: bounding set first (needs CAP_SETPCAP), then ids, then the
    // kept set in every set including ambient (so a non-root user keeps it across exec).
    let mut keep = 0u64;
    for c in &spec.capabilities {
        keep |= 1u64 << c.index();
    }
    let last = last_cap();
    if spec.no_new_privileges {
        plan.push(Op::NoNewPrivs, "set no_new_privs");
    }
    if spec.seccomp {
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
            uid: spec.uid,
            gid: spec.gid,
        },
        format!("set uid {} gid {}", spec.uid, spec.gid),
    );
    plan.push(Op::Capset { keep }, "set capabilities");
    plan.push(
        Op::Ambient {
            keep,
            last_cap: last,
        },
        "raise ambient capabilities",
    );
    plan.push(
        Op::Chdir(cstr(&spec.cwd)?),
        format!("chdir to {}", spec.cwd),
    );
    plan.push(Op::Stdio, "set up stdin/stdout/stderr");
    plan.push(Op::CloseFds, "close inherited file descriptors");
    let arg0 = &spec.args[0];
    if arg0.contains('/') {
        plan.exec_paths.push(cstr(arg0)?);
    } else {
        let path = spec
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
    Ok(Prepared {
        plan,
        _loop: loopdev,
    })
}

/// A container whose process exists (in its namespaces and cgroup) but has
/// not set itself up yet: the OCI "created" state. Dropping it kills it.
#[derive(Debug)]
pub struct Created {
    container: Container,
    sync_w: OwnedFd,
    err_r: OwnedFd,
    what: Vec<String>,
    _loop: Option<LoopDevice>,
}

impl Created {
    /// The process's pid in the host's pid namespace (its network namespace is
    /// `/proc/<pid>/ns/net`, e.g. for moving a veth in).
    pub fn pid(&self) -> i32 {
        self.container.pid
    }

    /// Let the process set itself up and exec the entrypoint. Returns once the
    /// exec succeeded, or with the step that failed.
    pub fn start(self) -> Result<Container> {
        let Created {
            container,
            sync_w,
            err_r,
            what,
            _loop,
        } = self;
        // SAFETY: writing one byte from a live buffer to our pipe.
        if unsafe { libc::write(sync_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
            return Err(ContainerError::last_os("release container process"));
        }
        drop(sync_w);
        let mut msg = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            // SAFETY: reading into the unfilled tail of a live buffer.
            let n =
                unsafe { libc::read(err_r.as_raw_fd(), msg[got..].as_mut_ptr().cast(), 8 - got) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(ContainerError::last_os("read container setup status"));
            }
            if n == 0 {
                break;
            }
            got += n as usize;
        }
        if got == 0 {
            return Ok(container);
        }
        if got < 8 {
            return Err(ContainerError::Sys {
                what: "container setup",
                source: io::Error::other("short status message"),
            });
        }
        let step = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        let errno = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let what = what.get(step).cloned().unwrap_or_else(|| "unknown".into());
        Err(ContainerError::Setup {
            step,
            what,
            source: io::Error::from_raw_os_error(errno),
        })
    }
}

/// Create a container's process without starting it. `state_dir` holds its
/// mount points (`state_dir/<id>/root`).
pub fn create(
    spec: &ContainerSpec,
    cgroups: &CgroupRoot,
    state_dir: &Path,
    stdio: Stdio,
) -> Result<Created> {
    spec.validate()?;
    let state = state_dir.join(&spec.id);
    let cgroup = cgroups.cgroup(&spec.id)?;
    cgroup.create(&spec.limits)?;
    let result = create_inner(spec, &cgroup, &state, stdio);
    if result.is_err() {
        let _ = cgroup.destroy();
        let _ = remove_state(&state);
    }
    result
}

/// Create, run `before_start(pid)` (e.g. attach networking), start.
pub fn spawn_with(
    spec: &ContainerSpec,
    cgroups: &CgroupRoot,
    state_dir: &Path,
    stdio: Stdio,
    before_start: impl FnOnce(i32) -> Result<()>,
) -> Result<Container> {
    let created = create(spec, cgroups, state_dir, stdio)?;
    before_start(created.pid())?;
    created.start()
}

/// Create and start a container.
pub fn spawn(
    spec: &ContainerSpec,
    cgroups: &CgroupRoot,
    state_dir: &Path,
    stdio: Stdio,
) -> Result<Container> {
    create(spec, cgroups, state_dir, stdio)?.start()
}

fn remove_state(state: &Path) -> io::Result<()> {
    for d in ["root", "lower"] {
        match fs::remove_dir(state.join(d)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match fs::remove_dir(state) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn create_inner(
    spec: &ContainerSpec,
    cgroup: &Cgroup,
    state: &Path,
    stdio: Stdio,
) -> Result<Created> {
    let v2_dir = cgroup.v2_dir();
    let mut prepared = build_plan(spec, state, v2_dir.is_some())?;
    let devnull = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(ContainerError::sys("open /dev/null"))?;
    let fd_or_null =
        |f: &Option<OwnedFd>| f.as_ref().map_or(devnull.as_raw_fd(), |f| f.as_raw_fd());
    prepared.plan.stdio = [
        fd_or_null(&stdio.stdin),
        fd_or_null(&stdio.stdout),
        fd_or_null(&stdio.stderr),
    ];
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    prepared.plan.sync_fd = sync_r.as_raw_fd();
    prepared.plan.err_fd = err_w.as_raw_fd();
    let cg_fd = match &v2_dir {
        Some(d) => Some(fs::File::open(d).map_err(ContainerError::cgroup(d.clone()))?),
        None => None,
    };
    let mut flags =
        (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as u64
            | CLONE_PIDFD;
    if spec.network != NetworkMode::Host {
        flags |= libc::CLONE_NEWNET as u64;
    }
    if cg_fd.is_some() {
        flags |= CLONE_INTO_CGROUP | libc::CLONE_NEWCGROUP as u64;
    }
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags,
        pidfd: &mut pidfd as *mut RawFd as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cg_fd.as_ref().map_or(0, |f| f.as_raw_fd() as u64),
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork: the
    // child gets a copy of this address space and returns 0 here. The child
    // only runs `run_child`, which makes raw system calls and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: we are the child; the plan's fds are open in our copy of the fd table.
        unsafe { prepared.plan.run_child() }
    }
    if pid < 0 {
        return Err(ContainerError::last_os("clone3"));
    }
    let pid = pid as i32;
    // SAFETY: CLONE_PIDFD stored a new fd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(sync_r);
    drop(err_w);
    drop(stdio);
    let container = Container {
        id: spec.id.clone(),
        pid,
        pidfd,
        cgroup: cgroup.clone(),
        state_dir: state.to_path_buf(),
        status: None,
        destroyed: false,
    };
    // From here on, dropping `container` kills the process and removes cgroup and state.
    if v2_dir.is_none() {
        cgroup.add_pid(pid)?;
    }
    Ok(Created {
        container,
        sync_w,
        err_r,
        what: std::mem::take(&mut prepared.plan.what),
        _loop: prepared._loop,
    })
}

fn decode(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: waitid filled a SIGCHLD siginfo.
    let status = unsafe { info.si_status() };
    if info.si_code == libc::CLD_EXITED {
        ExitStatus::Exited(status)
    } else {
        ExitStatus::Signaled(status)
    }
}

impl Container {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The init process's pid in the host's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A pidfd that becomes readable when the init process exits (for async waiting).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// The exit status if the init process has ended (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_flags(libc::WNOHANG)
    }

    /// Block until the init process ends.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(s) = self.wait_flags(0)? {
                return Ok(s);
            }
        }
    }

    fn wait_flags(&mut self, extra: libc::c_int) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: P_PIDFD waits on our own child through its pidfd.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.pidfd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED | extra,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(ContainerError::Sys {
                    what: "waitid",
                    source: e,
                });
            }
            break;
        }
        // SAFETY: reading the pid field of a filled (or zeroed) siginfo.
        if unsafe { info.si_pid() } == 0 {
            return Ok(None);
        }
        let s = decode(&info);
        self.status = Some(s);
        Ok(Some(s))
    }

    /// Send `sig` to the init process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(ContainerError::Sys {
                what: "pidfd_send_signal",
                source: e,
            });
        }
        Ok(())
    }

    /// True if the kernel OOM killer killed something in the container.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    /// SIGKILL every process in the container and wait for them to be gone.
    pub fn kill_all(&mut self) -> Result<ExitStatus> {
        // Killing init takes down the pid namespace; the cgroup catches anything else.
        self.signal(libc::SIGKILL)?;
        self.cgroup.kill_all(Duration::from_secs(5))?;
        self.wait()
    }

    /// Stop: `SIGTERM` to init, up to `grace` for the container to exit, then
    /// SIGKILL for everything in its cgroup. Returns how init ended.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM)?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.try_wait()? {
                self.cgroup.kill_all(Duration::from_secs(5))?;
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_all()
    }

    /// Kill whatever is left, reap, remove the cgroup and the state directory.
    pub fn destroy(mut self) -> Result<Option<ExitStatus>> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Option<ExitStatus>> {
        if self.destroyed {
            return Ok(self.status);
        }
        self.destroyed = true;
        if self.status.is_none() {
            self.kill_all()?;
        }
        self.cgroup.destroy()?;
        remove_state(&self.state_dir)
            .map_err(ContainerError::sys("remove container state directory"))?;
        Ok(self.status)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
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
