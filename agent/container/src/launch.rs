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
use crate::plan::{STEP_CLOSE_FDS, STEP_NOT_STARTED, STEP_PDEATHSIG, STEP_WAIT};
use crate::setup::{build_plan, set_oom_score_adj, Identity};
use crate::spec::{ContainerSpec, NetworkMode};

pub(crate) const CLONE_PIDFD: u64 = 0x1000;
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

#[repr(C)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}
// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2): u64 fields
// only, pointers included, so 88 bytes on 32-bit ARM too.
const _: () = assert!(std::mem::size_of::<CloneArgs>() == 88);

impl CloneArgs {
    /// `clone3` arguments for a child that signals SIGCHLD, with its pidfd
    /// stored into `pidfd` and (with `CLONE_INTO_CGROUP`) born in `cgroup`.
    pub(crate) fn new(flags: u64, pidfd: &mut RawFd, cgroup: Option<&fs::File>) -> CloneArgs {
        CloneArgs {
            flags,
            pidfd: pidfd as *mut RawFd as u64,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: libc::SIGCHLD as u64,
            stack: 0,
            stack_size: 0,
            tls: 0,
            set_tid: 0,
            set_tid_size: 0,
            cgroup: cgroup.map_or(0, |f| f.as_raw_fd() as u64),
        }
    }
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
    identity: Identity,
}

/// A container whose process exists (in its namespaces and cgroup) but has
/// not set itself up yet: the OCI "created" state. Dropping it kills it.
#[derive(Debug)]
pub struct Created {
    container: Container,
    sync_w: OwnedFd,
    err_r: OwnedFd,
    what: Vec<String>,
    start_timeout: Duration,
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
            start_timeout,
            _loop,
        } = self;
        release(sync_w, &err_r, &what, start_timeout)?;
        Ok(container)
    }
}

/// Send the go byte to a created process and wait until it has exec'd (EOF
/// on the error pipe) or reported the step that failed.
pub(crate) fn release(
    sync_w: OwnedFd,
    err_r: &OwnedFd,
    what: &[String],
    start_timeout: Duration,
) -> Result<()> {
    // SAFETY: writing one byte from a live buffer to our pipe.
    let released = unsafe { libc::write(sync_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } == 1;
    // EPIPE if the process already gave up; its reason is on the error pipe.
    let release_error = (!released).then(io::Error::last_os_error);
    drop(sync_w);
    let mut msg = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        // SAFETY: reading into the unfilled tail of a live buffer.
        let n = unsafe { libc::read(err_r.as_raw_fd(), msg[got..].as_mut_ptr().cast(), 8 - got) };
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
        return match release_error {
            None => Ok(()),
            Some(source) => Err(ContainerError::Sys {
                what: "release container process",
                source,
            }),
        };
    }
    if got < 8 {
        return Err(ContainerError::Sys {
            what: "container setup",
            source: io::Error::other("short status message"),
        });
    }
    let step = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let errno = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let source = io::Error::from_raw_os_error(errno);
    let before = |what| ContainerError::Sys {
        what,
        source: io::Error::from_raw_os_error(errno),
    };
    Err(match step {
        STEP_NOT_STARTED => ContainerError::NotStarted {
            after: start_timeout,
        },
        STEP_PDEATHSIG => before("container process: set its parent-death signal"),
        STEP_CLOSE_FDS => before("container process: close inherited file descriptors"),
        STEP_WAIT => before("container process: wait to be started"),
        _ => {
            let step = step as usize;
            let what = what.get(step).cloned().unwrap_or_else(|| "unknown".into());
            ContainerError::Setup { step, what, source }
        }
    })
}

/// Create a container's process without starting it. `state_dir` holds its
/// mount points (`state_dir/<id>/root`).
///
/// The process holds none of this process's file descriptors (only the
/// pipes and stdio it needs), is SIGKILLed by the kernel if this process
/// dies before [`Created::start`], and exits by itself if it is not started
/// within [`START_TIMEOUT`]. Any thread may create and another start it.
pub fn create(
    spec: &ContainerSpec,
    cgroups: &CgroupRoot,
    state_dir: &Path,
    stdio: Stdio,
) -> Result<Created> {
    create_with_timeout(spec, cgroups, state_dir, stdio, START_TIMEOUT)
}

/// How long a created container process waits for [`Created::start`].
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// [`create`] with another start timeout than [`START_TIMEOUT`].
pub fn create_with_timeout(
    spec: &ContainerSpec,
    cgroups: &CgroupRoot,
    state_dir: &Path,
    stdio: Stdio,
    start_timeout: Duration,
) -> Result<Created> {
    spec.validate()?;
    let state = state_dir.join(&spec.id);
    let cgroup = cgroups.cgroup(&spec.id)?;
    cgroup.create(&spec.limits)?;
    let result = create_inner(spec, &cgroup, &state, stdio, start_timeout);
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
    start_timeout: Duration,
) -> Result<Created> {
    let v2_dir = cgroup.v2_dir();
    let mut prepared = build_plan(spec, state, v2_dir.is_some())?;
    prepared.plan.start_timeout_ms = i64::try_from(start_timeout.as_millis()).unwrap_or(i64::MAX);
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
    let args = CloneArgs::new(flags, &mut pidfd, cg_fd.as_ref());
    let pid = launcher::clone(&args, &prepared.plan)?;
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
        identity: Identity::of(spec),
    };
    // From here on, dropping `container` kills the process and removes cgroup and state.
    if v2_dir.is_none() {
        cgroup.add_pid(pid)?;
    }
    set_oom_score_adj(pid, spec.oom_score_adj)?;
    Ok(Created {
        container,
        sync_w,
        err_r,
        what: std::mem::take(&mut prepared.plan.what),
        start_timeout,
        _loop: prepared._loop,
    })
}

/// The one thread that clones container processes.
///
/// The kernel's parent-death signal fires when the *thread* that cloned a
/// process ends, not the process: a container cloned on a short-lived
/// thread (tokio's blocking pool) would be killed when that thread retires.
/// This thread lives as long as the process, so the signal means "the agent
/// is gone". It blocks every signal, and the children inherit that mask: no
/// handler of the agent ever runs in a container process.
mod launcher {
    use std::io;
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::CloneArgs;
    use crate::error::{ContainerError, Result};
    use crate::plan::Plan;

    struct Job {
        args: *const CloneArgs,
        plan: *const Plan,
        done: mpsc::SyncSender<io::Result<i32>>,
    }

    // SAFETY: the pointers refer to the caller's stack, and the caller
    // blocks until `done` is answered, so they outlive their use here.
    unsafe impl Send for Job {}

    static JOBS: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

    fn jobs() -> Result<mpsc::Sender<Job>> {
        let mut g = JOBS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = g.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nuvol-clone".into())
            .spawn(move || run(rx))
            .map_err(ContainerError::sys("start the container launcher thread"))?;
        *g = Some(tx.clone());
        Ok(tx)
    }

    fn run(rx: mpsc::Receiver<Job>) {
        // SAFETY: a zeroed sigset filled by sigfillset, applied to this thread.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        }
        while let Ok(job) = rx.recv() {
            // SAFETY: clone3 without CLONE_VM and without a stack behaves like
            // fork: the child gets a copy of this address space and returns 0
            // here. The child only runs `run_child`, which makes raw system
            // calls and never returns. `job`'s pointers are live (see `Job`).
            let pid = unsafe {
                libc::syscall(libc::SYS_clone3, job.args, std::mem::size_of::<CloneArgs>())
            };
            if pid == 0 {
                // SAFETY: we are the child; the plan's fds are open in our copy of the fd table.
                unsafe { (*job.plan).run_child() }
            }
            let r = if pid < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(pid as i32)
            };
            let _ = job.done.send(r);
        }
    }

    /// clone3 with `args` on the launcher thread; the child runs `plan`.
    pub(super) fn clone(args: &CloneArgs, plan: &Plan) -> Result<i32> {
        let (done, answer) = mpsc::sync_channel(1);
        let job = Job { args, plan, done };
        let gone = || ContainerError::Sys {
            what: "container launcher thread",
            source: io::Error::other("it is gone"),
        };
        jobs()?.send(job).map_err(|_| gone())?;
        answer
            .recv()
            .map_err(|_| gone())?
            .map_err(ContainerError::sys("clone3"))
    }
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

/// `waitid(P_PIDFD)` for a child of this process: its status once it ended
/// (reaped), `None` while it runs (with `WNOHANG` in `extra`).
pub(crate) fn wait_pidfd(pidfd: BorrowedFd<'_>, extra: libc::c_int) -> Result<Option<ExitStatus>> {
    // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: P_PIDFD waits on our own child through its pidfd.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
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
    Ok(Some(decode(&info)))
}

/// `pidfd_send_signal`; a process already gone is not an error.
pub(crate) fn signal_pidfd(pidfd: BorrowedFd<'_>, sig: i32) -> Result<()> {
    // SAFETY: pidfd_send_signal on a pidfd with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
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
        let s = wait_pidfd(self.pidfd.as_fd(), extra)?;
        self.status = s;
        Ok(s)
    }

    /// What [`crate::ExecTarget::spawn`] needs to start another process in
    /// this container: its namespaces (through a pidfd), cgroup, user,
    /// capabilities, no_new_privs and seccomp filter.
    pub fn exec_target(&self) -> Result<crate::ExecTarget> {
        let pidfd = self
            .pidfd
            .try_clone()
            .map_err(ContainerError::sys("duplicate the container's pidfd"))?;
        Ok(crate::exec::ExecTarget::new(
            pidfd,
            self.cgroup.clone(),
            self.identity.clone(),
        ))
    }

    /// Send `sig` to the init process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        signal_pidfd(self.pidfd.as_fd(), sig)
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
