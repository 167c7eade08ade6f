//! nuvol's service supervisor: runs each service in a container, restarts
//! it by policy with exponential backoff, checks its health, orders starts
//! by dependencies, stops with SIGTERM → grace → SIGKILL of the whole
//! cgroup, reports OOM kills, and captures its output.
//!
//! Built for the agent's tokio current-thread runtime: one task per service,
//! blocking container work on `spawn_blocking`, health checks on their own
//! short-lived threads.

pub mod error;
pub mod health;
pub mod logs;
pub mod spec;

/// Test hooks, armed only through the API's `[debug] test_hooks` routes.
pub mod test_hooks {
    use std::sync::atomic::{AtomicBool, Ordering};

    static KILL_AFTER_CREATE: AtomicBool = AtomicBool::new(false);

    /// The next container this process creates is followed by a SIGKILL of
    /// the whole agent before the container is started: the window in
    /// which a created container must not outlive its agent.
    pub fn arm_kill_after_create() {
        KILL_AFTER_CREATE.store(true, Ordering::SeqCst);
    }

    pub(crate) fn fire_kill_after_create() {
        if KILL_AFTER_CREATE.swap(false, Ordering::SeqCst) {
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
}

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nuvol_container::{CgroupRoot, Container, Stdio};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

pub use error::{Result, SupervisorError};
pub use logs::{LogFollower, LogLimits, LogLine, LogStore, Stream};
/// How a run ended ([`ExitRecord::status`]).
pub use nuvol_container::ExitStatus;
pub use spec::{HealthKind, RestartPolicy, ServiceSpec};

/// How many start times / backoff delays the status keeps.
const HISTORY: usize = 64;

/// Lifecycle state of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Added, never started, or stopped on request.
    Stopped,
    Starting,
    Running,
    /// Waiting to be restarted.
    Backoff,
    Stopping,
    /// Ended and the restart policy says not to restart.
    Exited,
}

/// Result of the last health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The service has no health check.
    None,
    Unknown,
    Healthy,
    Unhealthy,
}

/// Why a run of the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    /// The process ended by itself.
    Exited,
    /// The kernel OOM killer killed it (memory.events oom_kill).
    OomKilled,
    /// Its health check failed `retries` times in a row.
    Unhealthy,
    /// Stopped on request.
    Stopped,
    /// Restarted on request.
    Restarted,
    /// The container could not be created or started.
    StartFailed,
}

/// The end of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Milliseconds since the supervisor was created.
    pub at_ms: u64,
    pub reason: ExitReason,
    pub status: Option<ExitStatus>,
    pub detail: String,
}

/// What `status()` reports per service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<i32>,
    pub health: Health,
    pub last_health_error: Option<String>,
    /// Restarts so far (not counting the first start).
    pub restarts: u32,
    /// Total OOM kills seen.
    pub oom_kills: u64,
    pub last_exit: Option<ExitRecord>,
    /// Start times, milliseconds since the supervisor was created (last 64).
    pub started_ms: Vec<u64>,
    /// Backoff delay chosen before each restart, in milliseconds (last 64).
    pub backoff_ms: Vec<u64>,
    /// Current memory use of the container's cgroup.
    pub memory_bytes: u64,
    /// CPU time used by the current run (all its processes), microseconds.
    #[serde(default)]
    pub cpu_usec: u64,
    /// Processes (tasks) in the container's cgroup now (`pids.current`).
    #[serde(default)]
    pub processes: u64,
    /// Forks refused because the `pids` limit was reached (`pids.events`).
    #[serde(default)]
    pub forks_refused: u64,
    /// Network address, if the network hook attached one.
    pub address: Option<String>,
}

/// Attaches a container to the host network (the agent implements this with
/// `nuvol-net`'s `NetHandle::attach_container` / `detach_container`).
pub trait NetworkHook: Send + Sync + 'static {
    /// Called while the container exists but has not started; returns its address.
    fn attach<'a>(
        &'a self,
        service: &'a str,
        pid: i32,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
    /// Called once the container is gone.
    fn detach<'a>(&'a self, service: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

enum Ctl {
    Stop,
    Restart,
}

struct Service {
    spec: Mutex<ServiceSpec>,
    logs: Arc<LogStore>,
    status: Mutex<ServiceStatus>,
    changed: watch::Sender<u64>,
    /// The supervisor-wide [`Supervisor::changes`] counter.
    any_changed: Arc<watch::Sender<u64>>,
    ctl: Mutex<Option<mpsc::UnboundedSender<Ctl>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    data_dir: PathBuf,
    state_dir: PathBuf,
    cgroups: CgroupRoot,
    network: Option<Arc<dyn NetworkHook>>,
    epoch: Instant,
    log_limits: LogLimits,
    services: Mutex<BTreeMap<String, Arc<Service>>>,
    /// Bumped when a service is added or removed, or its state or health
    /// changes (see [`Supervisor::changes`]).
    changes: Arc<watch::Sender<u64>>,
}

/// The supervisor. Cheap to clone; all clones share the services.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn push_bounded(v: &mut Vec<u64>, x: u64) {
    v.push(x);
    if v.len() > HISTORY {
        v.remove(0);
    }
}

fn bump(w: &watch::Sender<u64>) {
    w.send_modify(|v| *v = v.wrapping_add(1));
}

impl Service {
    fn update(&self, f: impl FnOnce(&mut ServiceStatus)) {
        let moved = {
            let mut st = lock(&self.status);
            let before = (st.state, st.health);
            f(&mut st);
            before != (st.state, st.health)
        };
        bump(&self.changed);
        if moved {
            bump(&self.any_changed);
        }
    }
    fn note(&self, text: &str) {
        self.logs.push(Stream::Supervisor, text);
    }
}

impl Supervisor {
    /// `data_dir` holds per-service data (`services/<name>/{logs,volumes,upper,work}`)
    /// and mount points (`run/`). Service cgroups are created below `cgroups`;
    /// any left there by a previous agent are killed and removed.
    pub fn new(data_dir: &Path, cgroups: CgroupRoot) -> Result<Self> {
        let state_dir = data_dir.join("run");
        std::fs::create_dir_all(data_dir.join("services"))
            .map_err(SupervisorError::io("create services directory"))?;
        std::fs::create_dir_all(&state_dir).map_err(SupervisorError::io("create run directory"))?;
        for stale in cgroups.children() {
            if let Ok(cg) = cgroups.cgroup(&stale) {
                cg.destroy()?;
            }
        }
        if let Ok(rd) = std::fs::read_dir(&state_dir) {
            for e in rd.flatten() {
                // Only empty mount point directories can be left (mounts lived in the containers' namespaces).
                let _ = std::fs::remove_dir(e.path().join("root"));
                let _ = std::fs::remove_dir(e.path().join("lower"));
                let _ = std::fs::remove_dir(e.path());
            }
        }
        Ok(Supervisor {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                state_dir,
                cgroups,
                network: None,
                epoch: Instant::now(),
                log_limits: LogLimits::default(),
                services: Mutex::new(BTreeMap::new()),
                changes: Arc::new(watch::channel(0).0),
            }),
        })
    }

    /// Attach private-network containers through `hook` (call before adding services).
    pub fn with_network(mut self, hook: Arc<dyn NetworkHook>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.network = Some(hook);
        }
        self
    }

    /// Use other log limits (call before adding services).
    pub fn with_log_limits(mut self, limits: LogLimits) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.log_limits = limits;
        }
        self
    }

    fn service(&self, name: &str) -> Result<Arc<Service>> {
        lock(&self.inner.services)
            .get(name)
            .cloned()
            .ok_or_else(|| SupervisorError::UnknownService(name.to_string()))
    }

    /// Add a service (validated). Replaces a stopped service of the same name.
    pub fn add(&self, spec: ServiceSpec) -> Result<()> {
        spec.validate()?;
        let mut services = lock(&self.inner.services);
        if let Some(old) = services.get(&spec.name) {
            if lock(&old.task).as_ref().is_some_and(|t| !t.is_finished()) {
                return Err(SupervisorError::Duplicate(spec.name.clone()));
            }
            *lock(&old.spec) = spec;
            return Ok(());
        }
        let dir = self.inner.data_dir.join("services").join(&spec.name);
        let logs = Arc::new(LogStore::new(&dir.join("logs"), self.inner.log_limits));
        let status = ServiceStatus {
            name: spec.name.clone(),
            state: State::Stopped,
            pid: None,
            health: if spec.health.is_some() {
                Health::Unknown
            } else {
                Health::None
            },
            last_health_error: None,
            restarts: 0,
            oom_kills: 0,
            last_exit: None,
            started_ms: Vec::new(),
            backoff_ms: Vec::new(),
            memory_bytes: 0,
            processes: 0,
            forks_refused: 0,
            cpu_usec: 0,
            address: None,
        };
        let (changed, _) = watch::channel(0);
        services.insert(
            spec.name.clone(),
            Arc::new(Service {
                spec: Mutex::new(spec),
                logs,
                status: Mutex::new(status),
                changed,
                any_changed: self.inner.changes.clone(),
                ctl: Mutex::new(None),
                task: Mutex::new(None),
            }),
        );
        drop(services);
        bump(&self.inner.changes);
        Ok(())
    }

    /// Remove a stopped service (its data directory stays).
    pub fn remove(&self, name: &str) -> Result<()> {
        let svc = self.service(name)?;
        if lock(&svc.task).as_ref().is_some_and(|t| !t.is_finished()) {
            return Err(SupervisorError::Running(name.to_string()));
        }
        lock(&self.inner.services).remove(name);
        bump(&self.inner.changes);
        Ok(())
    }

    /// A receiver that sees a new value whenever a service is added or
    /// removed, or the state or health of one changes (not on every health
    /// check, memory reading or log line). A `watch`: a slow reader only
    /// ever has the latest value waiting, never a queue; it then reads
    /// [`Supervisor::status`] for what changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Services in dependency order, starting from `roots` (all if `None`).
    fn order(&self, roots: Option<&str>) -> Result<Vec<String>> {
        let services = lock(&self.inner.services);
        let deps: BTreeMap<String, Vec<String>> = services
            .iter()
            .map(|(n, s)| (n.clone(), lock(&s.spec).depends_on.clone()))
            .collect();
        drop(services);
        let mut out = Vec::new();
        let mut done = BTreeSet::new();
        fn visit(
            n: &str,
            deps: &BTreeMap<String, Vec<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            out: &mut Vec<String>,
        ) -> Result<()> {
            if done.contains(n) {
                return Ok(());
            }
            if let Some(i) = path.iter().position(|p| p == n) {
                let mut cycle = path[i..].to_vec();
                cycle.push(n.to_string());
                return Err(SupervisorError::DependencyCycle(cycle.join(" -> ")));
            }
            path.push(n.to_string());
            for d in deps.get(n).into_iter().flatten() {
                if !deps.contains_key(d) {
                    return Err(SupervisorError::UnknownDependency {
                        service: n.to_string(),
                        dependency: d.clone(),
                    });
                }
                visit(d, deps, path, done, out)?;
            }
            path.pop();
            done.insert(n.to_string());
            out.push(n.to_string());
            Ok(())
        }
        match roots {
            Some(r) => {
                if !deps.contains_key(r) {
                    return Err(SupervisorError::UnknownService(r.to_string()));
                }
                visit(r, &deps, &mut Vec::new(), &mut done, &mut out)?
            }
            None => {
                for n in deps.keys() {
                    visit(n, &deps, &mut Vec::new(), &mut done, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Start a service, after starting its dependencies (transitively) and
    /// waiting until each is running, and healthy if it has a health check.
    pub async fn start(&self, name: &str) -> Result<()> {
        let order = self.order(Some(name))?;
        self.start_in_order(&order).await
    }

    /// Start every service, dependencies first.
    pub async fn start_all(&self) -> Result<()> {
        let order = self.order(None)?;
        self.start_in_order(&order).await
    }

    async fn start_in_order(&self, order: &[String]) -> Result<()> {
        for (i, n) in order.iter().enumerate() {
            self.start_one(n)?;
            let is_dependency = order[i + 1..].iter().any(|later| {
                self.service(later)
                    .map(|s| lock(&s.spec).depends_on.contains(n))
                    .unwrap_or(false)
            });
            if is_dependency {
                self.wait_ready(n).await?;
            }
        }
        Ok(())
    }

    /// Wait until the service runs (and is healthy, if it has a check).
    pub async fn wait_ready(&self, name: &str) -> Result<()> {
        let svc = self.service(name)?;
        let mut rx = svc.changed.subscribe();
        loop {
            {
                let st = lock(&svc.status);
                let healthy = matches!(st.health, Health::None | Health::Healthy);
                if st.state == State::Running && healthy {
                    return Ok(());
                }
                if matches!(st.state, State::Exited | State::Stopped) && lock(&svc.task).is_none() {
                    return Err(SupervisorError::invalid(name, "not running"));
                }
            }
            if rx.changed().await.is_err() {
                return Err(SupervisorError::UnknownService(name.to_string()));
            }
        }
    }

    fn start_one(&self, name: &str) -> Result<()> {
        let svc = self.service(name)?;
        let mut task = lock(&svc.task);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&svc.ctl) = Some(tx);
        let inner = self.inner.clone();
        let s = svc.clone();
        *task = Some(tokio::spawn(async move { run_service(inner, s, rx).await }));
        Ok(())
    }

    /// Stop a service: SIGTERM, its grace period, then SIGKILL of its whole
    /// cgroup. Returns once nothing of it runs.
    pub async fn stop(&self, name: &str) -> Result<()> {
        let svc = self.service(name)?;
        if let Some(tx) = lock(&svc.ctl).take() {
            let _ = tx.send(Ctl::Stop);
        }
        let task = lock(&svc.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        Ok(())
    }

    /// Stop every service, dependents before their dependencies, in waves:
    /// all services nothing still running depends on get SIGTERM together,
    /// and the next wave starts when the last of them is gone. One after
    /// another, N services that ignore SIGTERM (a daemon exec'd as PID 1 of
    /// its namespace does) would take N grace periods, longer than PID 1
    /// gives the agent to stop.
    pub async fn stop_all(&self) -> Result<()> {
        let order = self.order(None)?; // also refuses cycles
        let deps: BTreeMap<String, Vec<String>> = order
            .iter()
            .map(|n| Ok((n.clone(), lock(&self.service(n)?.spec).depends_on.clone())))
            .collect::<Result<_>>()?;
        let mut left: BTreeSet<String> = order.into_iter().collect();
        while !left.is_empty() {
            let wave: Vec<String> = left
                .iter()
                .filter(|n| {
                    !left
                        .iter()
                        .any(|m| deps.get(m).is_some_and(|d| d.contains(n)))
                })
                .cloned()
                .collect();
            if wave.is_empty() {
                // Not reachable after `order`; never loop forever.
                return Err(SupervisorError::DependencyCycle(
                    left.into_iter().collect::<Vec<_>>().join(" -> "),
                ));
            }
            let mut tasks = Vec::new();
            for n in &wave {
                let svc = self.service(n)?;
                if let Some(tx) = lock(&svc.ctl).take() {
                    let _ = tx.send(Ctl::Stop);
                }
                tasks.extend(lock(&svc.task).take());
            }
            // The service tasks run on their own: awaiting them one by one
            // waits for the slowest, not for the sum.
            for t in tasks {
                let _ = t.await;
            }
            for n in &wave {
                left.remove(n);
            }
        }
        Ok(())
    }

    /// Restart a running service now (no backoff), or start a stopped one.
    pub async fn restart(&self, name: &str) -> Result<()> {
        let svc = self.service(name)?;
        let running = lock(&svc.task).as_ref().is_some_and(|t| !t.is_finished());
        if running {
            if let Some(tx) = lock(&svc.ctl).as_ref() {
                let _ = tx.send(Ctl::Restart);
            }
            Ok(())
        } else {
            self.start(name).await
        }
    }

    /// The status of every service.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let services: Vec<Arc<Service>> = lock(&self.inner.services).values().cloned().collect();
        services
            .iter()
            .map(|s| {
                let mut st = lock(&s.status).clone();
                if st.pid.is_some() {
                    if let Ok(cg) = self.inner.cgroups.cgroup(&st.name) {
                        st.memory_bytes = cg.memory_current();
                        st.cpu_usec = cg.cpu_usage_usec();
                        st.processes = cg.pids_current();
                        st.forks_refused = cg.pids_max_events();
                    }
                }
                st
            })
            .collect()
    }

    /// The status of one service.
    pub fn service_status(&self, name: &str) -> Result<ServiceStatus> {
        self.status()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SupervisorError::UnknownService(name.into()))
    }

    /// The log lines kept in memory.
    pub fn logs(&self, name: &str) -> Result<Vec<LogLine>> {
        Ok(self.service(name)?.logs.snapshot())
    }

    /// The lines in memory, then new ones as they arrive (`LogFollower::next`).
    pub fn follow(&self, name: &str) -> Result<LogFollower> {
        Ok(self.service(name)?.logs.follow())
    }

    /// The cgroup root services run under.
    pub fn cgroups(&self) -> &CgroupRoot {
        &self.inner.cgroups
    }

    /// Milliseconds since the supervisor was created: the clock of
    /// [`ServiceStatus::started_ms`] and [`ExitRecord::at_ms`].
    pub fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }
}

async fn read_stream(fd: OwnedFd, stream: Stream, logs: Arc<LogStore>) {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut kept = true;
        for &b in &buf[..n] {
            if b == b'\n' {
                kept &= logs.push(
                    stream,
                    String::from_utf8_lossy(&line).trim_end_matches('\r'),
                );
                line.clear();
            } else {
                line.push(b);
                if line.len() >= logs::MAX_LINE {
                    kept &= logs.push(stream, &String::from_utf8_lossy(&line));
                    line.clear();
                }
            }
        }
        // Over the rate limit: leave the rest in the pipe for a while
        // (backpressure on the service) rather than spend the agent's
        // thread reading lines only to drop them. Within it: let the
        // API and the other tasks run between reads.
        if kept {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(logs::OVER_BUDGET_PAUSE).await;
        }
    }
    if !line.is_empty() {
        logs.push(stream, &String::from_utf8_lossy(&line));
    }
}

struct RunEnd {
    reason: ExitReason,
    status: Option<ExitStatus>,
    detail: String,
    /// Stop requested: do not restart.
    stop: bool,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Start one container and supervise it until it ends.
async fn run_once(
    inner: &Arc<Inner>,
    svc: &Arc<Service>,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
) -> RunEnd {
    let spec = lock(&svc.spec).clone();
    let name = spec.name.clone();
    let fail = |detail: String| RunEnd {
        reason: ExitReason::StartFailed,
        status: None,
        detail,
        stop: false,
    };
    let data = inner.data_dir.join("services").join(&name);
    let cspec = match spec.container_spec(&name, &data) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let (out_r, out_w) = match nuvol_container::pipe() {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let (err_r, err_w) = match nuvol_container::pipe() {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let (cgroups, state_dir) = (inner.cgroups.clone(), inner.state_dir.clone());
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    let created = match blocking(move || {
        nuvol_container::create(&cspec, &cgroups, &state_dir, stdio)
    })
    .await
    {
        Some(Ok(c)) => c,
        Some(Err(e)) => return fail(e.to_string()),
        None => return fail("create task panicked".into()),
    };
    test_hooks::fire_kill_after_create();
    let pid = created.pid();
    let use_net = spec.network == spec::Network::Private && inner.network.is_some();
    if let (true, Some(net)) = (use_net, &inner.network) {
        match net.attach(&name, pid).await {
            Ok(addr) => svc.update(|s| s.address = Some(addr)),
            Err(e) => {
                drop(created);
                return fail(format!("network: {e}"));
            }
        }
    }
    let mut container: Container = match blocking(move || created.start()).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            if let (true, Some(net)) = (use_net, &inner.network) {
                net.detach(&name).await;
            }
            return fail(e.to_string());
        }
        None => return fail("start task panicked".into()),
    };
    tokio::spawn(read_stream(out_r, Stream::Stdout, svc.logs.clone()));
    tokio::spawn(read_stream(err_r, Stream::Stderr, svc.logs.clone()));
    let oom_before = container.cgroup().oom_kills();
    let pidfd = container.pidfd().try_clone_to_owned().ok().and_then(|fd| {
        // SAFETY: the AsyncFd owns this duplicate OwnedFd, which stays open until it is dropped.
        unsafe { AsyncFd::register(fd) }.ok()
    });
    let started_ms = inner.epoch.elapsed().as_millis() as u64;
    svc.update(|s| {
        s.state = State::Running;
        s.pid = Some(pid);
        push_bounded(&mut s.started_ms, started_ms);
        if spec.health.is_some() {
            s.health = Health::Unknown;
        }
    });
    svc.note(&format!("started, pid {pid}"));

    let target = health::Target {
        pid,
        netns: spec.network != spec::Network::Host && spec.rootfs != spec::RootfsSpec::Host,
        exec: container.exec_target().map_err(|e| e.to_string()),
    };
    let start = Instant::now();
    let mut failures = 0u32;
    let health_spec = spec.health.clone();
    let mut next_check = tokio::time::Instant::now()
        + Duration::from_millis(
            health_spec
                .as_ref()
                .map_or(u64::MAX / 4, |h| h.interval_ms.min(1000)),
        );
    let mut action: Option<(ExitReason, bool, String)> = None;
    loop {
        tokio::select! {
            r = async {
                match &pidfd {
                    Some(fd) => fd.readable().await.map(|mut g| g.clear_ready()),
                    None => std::future::pending().await,
                }
            } => {
                let _ = r;
                break;
            }
            c = ctl.recv() => {
                match c {
                    Some(Ctl::Restart) => action = Some((ExitReason::Restarted, false, "restart requested".into())),
                    Some(Ctl::Stop) | None => action = Some((ExitReason::Stopped, true, "stop requested".into())),
                }
                break;
            }
            _ = tokio::time::sleep_until(next_check), if health_spec.is_some() => {
                let Some(h) = &health_spec else { continue };
                next_check = tokio::time::Instant::now() + Duration::from_millis(h.interval_ms);
                match health::check(h, &target).await {
                    Ok(()) => {
                        failures = 0;
                        svc.update(|s| { s.health = Health::Healthy; s.last_health_error = None; });
                    }
                    Err(e) => {
                        let counts = start.elapsed() >= Duration::from_millis(h.start_period_ms);
                        if counts {
                            failures += 1;
                        }
                        let unhealthy = failures >= h.retries;
                        svc.update(|s| {
                            s.last_health_error = Some(e.clone());
                            if unhealthy { s.health = Health::Unhealthy; }
                        });
                        if unhealthy {
                            svc.note(&format!("unhealthy after {failures} failed checks: {e}"));
                            action = Some((ExitReason::Unhealthy, false, e));
                            break;
                        }
                    }
                }
            }
        }
    }
    let grace = Duration::from_millis(spec.stop_grace_ms);
    if action.is_some() {
        svc.update(|s| s.state = State::Stopping);
    }
    let stopping = action.is_some();
    let res = blocking(move || {
        let status = if stopping {
            container.stop(grace)
        } else {
            container.wait()
        };
        let oom = container.cgroup().oom_kills();
        let destroyed = container.destroy();
        (status, oom, destroyed)
    })
    .await;
    if let (true, Some(net)) = (use_net, &inner.network) {
        net.detach(&name).await;
    }
    let (status, oom_after, destroyed) = match res {
        Some(r) => r,
        None => {
            return RunEnd {
                reason: ExitReason::Exited,
                status: None,
                detail: "wait task panicked".into(),
                stop: false,
            }
        }
    };
    if let Err(e) = destroyed {
        svc.note(&format!("cleanup: {e}"));
    }
    let status = status.ok();
    let new_ooms = oom_after.saturating_sub(oom_before);
    if new_ooms > 0 {
        svc.update(|s| s.oom_kills += new_ooms);
    }
    match action {
        Some((reason, stop, detail)) => RunEnd {
            reason,
            status,
            detail,
            stop,
        },
        None if new_ooms > 0 => RunEnd {
            reason: ExitReason::OomKilled,
            status,
            detail: format!("killed by the OOM killer ({new_ooms} kills)"),
            stop: false,
        },
        None => RunEnd {
            reason: ExitReason::Exited,
            status,
            detail: String::new(),
            stop: false,
        },
    }
}

async fn run_service(inner: Arc<Inner>, svc: Arc<Service>, mut ctl: mpsc::UnboundedReceiver<Ctl>) {
    let sup = Supervisor {
        inner: inner.clone(),
    };
    let mut delay: Option<u64> = None;
    loop {
        svc.update(|s| s.state = State::Starting);
        let started = Instant::now();
        let end = run_once(&inner, &svc, &mut ctl).await;
        let at_ms = sup.now_ms();
        let msg = match (&end.status, end.reason) {
            (Some(ExitStatus::Exited(c)), r) => format!("{r:?}: exit code {c} {}", end.detail),
            (Some(ExitStatus::Signaled(sig)), r) => {
                format!("{r:?}: killed by signal {sig} {}", end.detail)
            }
            (None, r) => format!("{r:?}: {}", end.detail),
        };
        svc.note(msg.trim_end());
        let record = ExitRecord {
            at_ms,
            reason: end.reason,
            status: end.status,
            detail: end.detail.clone(),
        };
        svc.update(|s| {
            s.pid = None;
            s.last_exit = Some(record);
        });
        if end.stop {
            svc.update(|s| s.state = State::Stopped);
            return;
        }
        let spec = lock(&svc.spec).clone();
        let restart = end.reason == ExitReason::Restarted
            || match spec.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => {
                    !(end.reason == ExitReason::Exited && end.status == Some(ExitStatus::Exited(0)))
                }
                RestartPolicy::Never => false,
            };
        if !restart {
            svc.update(|s| s.state = State::Exited);
            return;
        }
        if end.reason != ExitReason::Restarted {
            if started.elapsed() >= Duration::from_millis(spec.backoff.reset_after_ms) {
                delay = None;
            }
            let d = spec.backoff.next(delay);
            delay = Some(d);
            svc.update(|s| {
                s.state = State::Backoff;
                push_bounded(&mut s.backoff_ms, d);
            });
            svc.note(&format!("restarting in {d} ms"));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(d)) => {}
                c = ctl.recv() => match c {
                    Some(Ctl::Restart) => {}
                    Some(Ctl::Stop) | None => {
                        svc.update(|s| s.state = State::Stopped);
                        return;
                    }
                },
            }
        }
        svc.update(|s| s.restarts += 1);
    }
}
