//! Another process in a running container (health checks): it joins the
//! container's namespaces and cgroup and takes on its identity (uid/gid,
//! capabilities, no_new_privs, seccomp), like `runc exec`.
//!
//! The process is cloned straight into the container: on a short-lived
//! thread of its own that first enters the container's pid namespace with
//! `setns(pidfd, CLONE_NEWPID)` (which only decides where that thread's
//! children are born), with `CLONE_INTO_CGROUP` on cgroup v2. The child
//! then joins the mount, UTS, IPC, network and cgroup namespaces with one
//! `setns(pidfd, …)` (the pidfd pins the container's init, so a recycled
//! pid cannot redirect it), and runs the same end of plan as the
//! container's own init: signals, no_new_privs, seccomp, bounding set,
//! ids, capabilities, `chdir`, stdio, `execve`.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cgroup::Cgroup;
use crate::error::{ContainerError, Result};
use crate::launch::{
    pipe, release, signal_pidfd, wait_pidfd, CloneArgs, ExitStatus, Stdio, CLONE_INTO_CGROUP,
    CLONE_PIDFD,
};
use crate::plan::{Op, Plan};
use crate::setup::{push_identity, set_oom_score_adj, Identity};
use crate::spec;

/// How long a process cloned into a container waits for its go byte (it
/// is released at once; this only bounds a stuck parent).
const EXEC_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom [`ExecTarget::spawn`] runs a process: a running
/// container, from [`crate::Container::exec_target`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pidfd: OwnedFd,
    cgroup: Cgroup,
    identity: Identity,
}

/// A process started in a container by [`ExecTarget::spawn`]. Dropping it
/// kills and reaps it.
#[derive(Debug)]
pub struct ExecProcess {
    pid: i32,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
}

impl ExecTarget {
    pub(crate) fn new(pidfd: OwnedFd, cgroup: Cgroup, identity: Identity) -> ExecTarget {
        ExecTarget {
            inner: Arc::new(Inner {
                pidfd,
                cgroup,
                identity,
            }),
        }
    }

    /// Start `args` in the container. Returns once it has exec'd, or with
    /// the setup step that failed (e.g. `execute /bin/check: No such file
    /// or directory`).
    pub fn spawn(&self, args: &[String], stdio: Stdio) -> Result<ExecProcess> {
        check_args(args)?;
        let id = &self.inner.identity;
        let mut plan = Plan::new(args, &id.env, &id.additional_gids)?;
        plan.start_timeout_ms = EXEC_START_TIMEOUT.as_millis() as i64;
        plan.join_fd = self.inner.pidfd.as_raw_fd();
        plan.push(
            Op::Join {
                flags: libc::CLONE_NEWNS
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWCGROUP,
            },
            "join the container's namespaces",
        );
        push_identity(&mut plan, id, &args[0])?;
        let devnull = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(ContainerError::sys("open /dev/null"))?;
        let fd_or_null =
            |f: &Option<OwnedFd>| f.as_ref().map_or(devnull.as_raw_fd(), |f| f.as_raw_fd());
        plan.stdio = [
            fd_or_null(&stdio.stdin),
            fd_or_null(&stdio.stdout),
            fd_or_null(&stdio.stderr),
        ];
        let (sync_r, sync_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        plan.sync_fd = sync_r.as_raw_fd();
        plan.err_fd = err_w.as_raw_fd();
        let v2_dir = self.inner.cgroup.v2_dir();
        let cg_fd = match &v2_dir {
            Some(d) => Some(fs::File::open(d).map_err(ContainerError::cgroup(d.clone()))?),
            None => None,
        };
        let mut flags = CLONE_PIDFD;
        if cg_fd.is_some() {
            flags |= CLONE_INTO_CGROUP;
        }
        let mut pidfd: RawFd = -1;
        let clone_args = CloneArgs::new(flags, &mut pidfd, cg_fd.as_ref());
        let container = self.inner.pidfd.as_raw_fd();
        let cgroup = &self.inner.cgroup;
        let oom_score_adj = id.oom_score_adj;
        let what = std::mem::take(&mut plan.what);
        let plan = Shared(&plan);
        // The cloning thread must outlive the child's setup: the child's
        // parent-death signal follows that thread until it is released.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("nuvol-exec".into())
                .stack_size(256 * 1024)
                .spawn_scoped(scope, || -> Result<ExecProcess> {
                    // SAFETY: see `clone_into`; every pointer is live for the call.
                    let pid = unsafe { clone_into(container, &clone_args, plan.get())? };
                    // SAFETY: CLONE_PIDFD stored a new fd, owned by nobody
                    // else, where `clone_args.pidfd` points (`pidfd` above).
                    let pidfd = unsafe {
                        let fd = std::ptr::read_volatile(clone_args.pidfd as *const RawFd);
                        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                    };
                    let mut process = ExecProcess {
                        pid,
                        pidfd,
                        status: None,
                    };
                    drop(sync_r);
                    drop(err_w);
                    drop(stdio);
                    if v2_dir.is_none() {
                        cgroup.add_pid(pid)?;
                    }
                    set_oom_score_adj(pid, oom_score_adj)?;
                    if let Err(e) = release(sync_w, &err_r, &what, EXEC_START_TIMEOUT) {
                        let _ = process.kill();
                        return Err(e);
                    }
                    Ok(process)
                })
                .map_err(ContainerError::sys(
                    "start a thread to clone into the container",
                ))?
                .join()
                .unwrap_or_else(|_| {
                    Err(ContainerError::Sys {
                        what: "clone into the container",
                        source: io::Error::other("the cloning thread panicked"),
                    })
                })
        })
    }
}

/// The plan, lent to the cloning thread.
struct Shared<'a>(&'a Plan);

// SAFETY: the plan's raw pointers point into the plan itself; the cloning
// thread only reads it and is joined before the plan is dropped.
unsafe impl Send for Shared<'_> {}
unsafe impl Sync for Shared<'_> {}

impl Shared<'_> {
    fn get(&self) -> &Plan {
        self.0
    }
}

/// Enter the pid namespace of `container` (a pidfd) on this thread, block
/// every signal (the child inherits the mask: no handler of the agent runs
/// in it) and clone; the child runs `plan` and never returns here.
///
/// # Safety
/// `args` must be a valid `clone_args` whose pointers are live, and the
/// plan's fds open. Only for a thread that ends afterwards: its pid
/// namespace for children stays the container's.
unsafe fn clone_into(container: RawFd, args: &CloneArgs, plan: &Plan) -> Result<i32> {
    let mut all: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    if libc::setns(container, libc::CLONE_NEWPID) < 0 {
        return Err(ContainerError::last_os(
            "enter the container's pid namespace",
        ));
    }
    let pid = libc::syscall(
        libc::SYS_clone3,
        args as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if pid == 0 {
        plan.run_child()
    }
    if pid < 0 {
        return Err(ContainerError::last_os("clone3 into the container"));
    }
    Ok(pid as i32)
}

fn check_args(args: &[String]) -> Result<()> {
    if args.is_empty() || args[0].is_empty() {
        return Err(ContainerError::InvalidSpec("exec: no command".into()));
    }
    if args.len() > spec::MAX_ARGS || args.iter().any(|a| a.len() > spec::MAX_STR) {
        return Err(ContainerError::InvalidSpec(format!(
            "exec: at most {} arguments of {} bytes each",
            spec::MAX_ARGS,
            spec::MAX_STR
        )));
    }
    Ok(())
}

impl ExecProcess {
    /// Its pid in the host's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait up to `timeout` for it to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: polling one pollfd we own; the pidfd turns readable on exit.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    /// Its status if it has ended (reaps it).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = wait_pidfd(self.pidfd.as_fd(), libc::WNOHANG)?;
        }
        Ok(self.status)
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        signal_pidfd(self.pidfd.as_fd(), libc::SIGKILL)?;
        loop {
            if let Some(s) = wait_pidfd(self.pidfd.as_fd(), 0)? {
                self.status = Some(s);
                return Ok(s);
            }
        }
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
