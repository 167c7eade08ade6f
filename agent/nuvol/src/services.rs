//! The agent's services: every installed bundle runs as a supervised
//! container (`nuvol-supervisor` over `nuvol-container`), attached to the
//! `nuvol0` bridge through `nuvol-net` when the agent manages networking.
//!
//! - rootfs: the bundle's verified image, read-only, with an overlay upper
//!   on data (`<state>/services/NAME/upper`, reset when the version changes);
//! - volumes: the bundle store's volume directory (kept across upgrades);
//! - env, uid/gid, limits, health, restart policy: from the manifest.
//!
//! [`ServicesHandle::sync`] re-reads the store after an install, upgrade,
//! rollback or removal: new bundles start, a changed version is restarted on
//! its new image, removed bundles are stopped. A service stopped through the
//! API stays stopped across syncs until its version changes or it is started.
//! A bundle the store cannot read (broken) is not run and is listed with its
//! problem; the others run regardless.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nuvol_api::services::{BoxFuture, LocalService, Services};
use nuvol_bundle::Store;
use nuvol_container::CgroupRoot;
use nuvol_supervisor::{
    ExitReason, ExitRecord, Health, LogFollower, LogLine, NetworkHook, ServiceSpec, ServiceStatus,
    State, Supervisor, SupervisorError,
};

/// Where services' cgroups live on a box (cgroup v2 only, agent in the root cgroup).
pub const BOX_CGROUP: &str = "/sys/fs/cgroup/nuvol/services";

/// What the agent knows about one installed bundle.
#[derive(Debug, Clone)]
struct Known {
    /// `None` for a broken bundle (nothing of it could be read).
    version: Option<String>,
    digest: Option<String>,
    /// Why it is not running under the supervisor, if it is not.
    problem: Option<String>,
    /// Why it does not run yet though nothing is wrong (its cluster).
    waiting: Option<String>,
}

struct Inner {
    store: Arc<Store>,
    state_dir: PathBuf,
    sup: Result<Supervisor, String>,
    /// Whether the cgroup root is this agent's own (dev hosts) and goes at shutdown.
    owns_cgroup_root: bool,
    known: Mutex<BTreeMap<String, Known>>,
    ports: Arc<Mutex<BTreeMap<String, Vec<nuvol_bundle::manifest::Port>>>>,
    sync_lock: tokio::sync::Mutex<()>,
    /// This box in the overlay: `[cluster]` bundles wait for their cluster
    /// ([`crate::cluster`]); `None`: they run alone, as any other.
    cluster: Option<crate::cluster::Me>,
    /// Why each waiting cluster member waits (from the cluster task).
    cluster_notes: Mutex<BTreeMap<String, String>>,
}

/// The running services. Cheap to clone.
#[derive(Clone)]
pub struct ServicesHandle {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The cgroup root for services: the fixed box path when this process is in
/// the root of a pure cgroup v2 hierarchy (a box, under `nuvol init`), else a
/// sub-tree of this agent's own cgroup named after its pid (development
/// hosts, tests: several agents side by side never touch each other's).
fn cgroup_root() -> Result<(CgroupRoot, bool), String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let pure_v2_root = Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        && own.lines().count() == 1
        && own.trim() == "0::/";
    if pure_v2_root {
        CgroupRoot::v2(BOX_CGROUP)
            .map(|r| (r, false))
            .map_err(|e| e.to_string())
    } else {
        let root = CgroupRoot::detect(&format!("nuvol-agent-{}", std::process::id()))
            .map_err(|e| e.to_string())?;
        for d in root.dirs() {
            if let Some(parent) = d.parent() {
                remove_stale_agent_cgroups(parent);
            }
        }
        Ok((root, true))
    }
}

/// Remove the `nuvol-agent-<pid>` sub-trees that agents killed without a
/// chance to clean up (SIGKILL, a crash) left beside ours on a development
/// host: only those whose pid is gone, and only empty cgroups (the kernel
/// refuses to remove one with processes, which are then left alone).
fn remove_stale_agent_cgroups(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("nuvol-agent-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if rmdir_tree(&e.path()) {
            tracing::info!("removed the stale cgroup {}", e.path().display());
        }
    }
}

/// rmdir a cgroup and its children, deepest first; false if any stayed.
fn rmdir_tree(dir: &Path) -> bool {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    std::fs::remove_dir(dir).is_ok()
}

/// Start the supervisor and (in a task) every installed bundle. Must be
/// called inside the agent's tokio runtime. Never fails: a supervisor that
/// cannot start (no cgroups) is reported per service and in the log.
pub fn start(
    store: Arc<Store>,
    state_dir: &Path,
    net: Option<crate::net::Net>,
    cluster: Option<crate::cluster::Me>,
    overlay_link: Option<String>,
) -> ServicesHandle {
    let ports = Arc::new(Mutex::new(BTreeMap::new()));
    let (sup, owns_cgroup_root) = match cgroup_root() {
        Ok((root, owned)) => match Supervisor::new(state_dir, root) {
            Ok(s) => {
                let s = match net {
                    Some(net) => s.with_network(Arc::new(NetHook {
                        net,
                        ports: ports.clone(),
                        overlay_link,
                    })),
                    None => s,
                };
                (Ok(s), owned)
            }
            Err(e) => (Err(format!("supervisor: {e}")), owned),
        },
        Err(e) => (Err(format!("cgroups: {e}")), false),
    };
    if let Err(e) = &sup {
        tracing::error!("services cannot run: {e}");
        eprintln!("nuvol: services cannot run: {e}");
    }
    let h = ServicesHandle {
        inner: Arc::new(Inner {
            store,
            state_dir: state_dir.to_path_buf(),
            sup,
            owns_cgroup_root,
            known: Mutex::new(BTreeMap::new()),
            ports,
            sync_lock: tokio::sync::Mutex::new(()),
            cluster,
            cluster_notes: Mutex::new(BTreeMap::new()),
        }),
    };
    let first = h.clone();
    tokio::spawn(async move { first.sync().await });
    h
}

impl ServicesHandle {
    /// Bring the running services in line with the store. Returns the
    /// problems met (also logged); one bad bundle never stops the others.
    pub async fn sync(&self) -> Vec<String> {
        let _one_at_a_time = self.inner.sync_lock.lock().await;
        let store = self.inner.store.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let list = store.list()?;
            let broken = list.broken;
            Ok::<_, nuvol_bundle::BundleError>((
                list.bundles
                    .into_iter()
                    .map(|b| {
                        let image = if b.state == "installed" {
                            store.image_path(&b.name).map_err(|e| e.to_string())
                        } else {
                            Err(format!("not run: {}", b.state))
                        };
                        let volumes = store.volume_path(&b.name, "");
                        (b, image, volumes)
                    })
                    .collect::<Vec<_>>(),
                broken,
            ))
        })
        .await;
        let (listed, broken) = match listed {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return vec![self.problem("bundle store", &e.to_string())],
            Err(e) => return vec![self.problem("bundle store", &e.to_string())],
        };
        let mut problems = Vec::new();
        let wanted: Vec<String> = listed
            .iter()
            .map(|(b, _, _)| b.name.clone())
            .chain(broken.iter().map(|x| x.name.clone()))
            .collect();
        for x in broken {
            let problem = format!("bundle broken: {}: {}", x.file.display(), x.problem);
            let before = lock(&self.inner.known).get(&x.name).cloned();
            if before.is_some_and(|k| k.problem.as_deref() == Some(problem.as_str())) {
                continue;
            }
            // Its files can no longer be trusted: whatever ran from it stops.
            self.stop_and_remove(&x.name).await;
            problems.push(self.problem(&x.name, &problem));
            lock(&self.inner.known).insert(
                x.name,
                Known {
                    version: None,
                    digest: None,
                    problem: Some(problem),
                    waiting: None,
                },
            );
        }
        for (b, image, volumes) in listed {
            let before = lock(&self.inner.known).get(&b.name).cloned();
            let is = |k: &Known| {
                k.digest.as_deref() == Some(b.digest.as_str())
                    && k.version.as_deref() == Some(b.version.as_str())
            };
            let same = before
                .as_ref()
                .is_some_and(|k| is(k) && k.problem.is_none() && k.waiting.is_none());
            if same {
                continue;
            }
            let version_changed = before.as_ref().is_some_and(|k| !is(k));
            let (problem, waiting) = match (image, self.cluster_env(&b.name, &b.manifest)) {
                (Ok(image), Ok(env)) => (
                    self.run_bundle(&b.name, &b.manifest, &image, volumes, version_changed, env)
                        .await
                        .err(),
                    None,
                ),
                (Ok(_), Err(why)) => {
                    self.stop_and_remove(&b.name).await;
                    (None, Some(why))
                }
                (Err(e), _) => {
                    self.stop_and_remove(&b.name).await;
                    (Some(e), None)
                }
            };
            if let Some(p) = &problem {
                problems.push(self.problem(&b.name, p));
            } else if let Some(w) = &waiting {
                tracing::info!(service = %b.name, "not started yet: {w}");
            } else {
                tracing::info!(service = %b.name, version = %b.version, "service started");
            }
            lock(&self.inner.known).insert(
                b.name.clone(),
                Known {
                    version: Some(b.version.clone()),
                    digest: Some(b.digest.clone()),
                    problem,
                    waiting,
                },
            );
        }
        let gone: Vec<String> = lock(&self.inner.known)
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        for name in gone {
            self.stop_and_remove(&name).await;
            lock(&self.inner.known).remove(&name);
            tracing::info!(service = %name, "service removed");
        }
        self.sweep_service_dirs(&wanted);
        problems
    }

    /// Remove `<state>/services/NAME` (logs, writable layer) of every
    /// service whose bundle is no longer in the store, also those removed
    /// while no agent ran: they would fill the stick, and a reinstall must
    /// not start over a stale layer. A broken bundle's directory stays.
    fn sweep_service_dirs(&self, wanted: &[String]) {
        let dir = self.inner.state_dir.join("services");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if wanted.contains(&name) || lock(&self.inner.known).contains_key(&name) {
                continue;
            }
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::info!(service = %name, "removed the data of a removed service"),
                Err(err) => tracing::warn!(service = %name, "remove {}: {err}", e.path().display()),
            }
        }
    }

    /// The environment a `[cluster]` bundle runs with, once its cluster is
    /// decided; `Err`: why it does not run yet (waiting, not trouble).
    /// Empty for other bundles and on a box outside the overlay.
    fn cluster_env(
        &self,
        name: &str,
        manifest: &nuvol_bundle::manifest::Manifest,
    ) -> Result<BTreeMap<String, String>, String> {
        let (Some(c), Some(_)) = (&manifest.cluster, &self.inner.cluster) else {
            return Ok(BTreeMap::new());
        };
        match crate::cluster::read(&self.inner.state_dir, name) {
            Ok(Some(d)) => Ok(c.env_for(&d.place())),
            Ok(None) => Err(format!(
                "cluster: {}",
                lock(&self.inner.cluster_notes)
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!(
                        "waiting for its cluster of {} boxes to be decided",
                        c.size
                    ))
            )),
            // Set aside as .bad: the cluster task decides again.
            Err(e) => Err(format!(
                "cluster: the decision could not be read ({e}); deciding again"
            )),
        }
    }

    /// Say why a cluster member waits (shown as its problem).
    pub fn set_cluster_note(&self, name: &str, note: &str) {
        let changed = lock(&self.inner.cluster_notes).insert(name.to_string(), note.to_string())
            != Some(note.to_string());
        if changed {
            tracing::info!(service = %name, "cluster: {note}");
            if let Some(k) = lock(&self.inner.known).get_mut(name) {
                if k.waiting.is_some() {
                    k.waiting = Some(format!("cluster: {note}"));
                }
            }
        }
    }

    fn problem(&self, what: &str, e: &str) -> String {
        let line = format!("service {what}: {e}");
        tracing::error!("{line}");
        eprintln!("nuvol: {line}");
        line
    }

    async fn run_bundle(
        &self,
        name: &str,
        manifest: &nuvol_bundle::manifest::Manifest,
        image: &Path,
        volumes: PathBuf,
        version_changed: bool,
        cluster_env: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let sup = self.inner.sup.as_ref().map_err(Clone::clone)?;
        let mut spec = ServiceSpec::from_manifest(manifest, image).map_err(|e| e.to_string())?;
        spec.env.extend(cluster_env);
        spec.writable_rootfs = true;
        spec.volumes_dir = Some(volumes);
        // A running older version goes first (SIGTERM, grace, SIGKILL).
        if sup.service_status(name).is_ok() {
            sup.stop(name).await.map_err(|e| e.to_string())?;
        }
        if version_changed {
            // The upper layer belongs to the image it was written over.
            let dir = self.inner.state_dir.join("services").join(name);
            for d in ["upper", "work"] {
                let p = dir.join(d);
                if let Err(e) = std::fs::remove_dir_all(&p) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(format!("reset {}: {e}", p.display()));
                    }
                }
            }
        }
        lock(&self.inner.ports).insert(name.to_string(), manifest.ports.clone());
        sup.add(spec).map_err(|e| e.to_string())?;
        sup.start(name).await.map_err(|e| e.to_string())
    }

    async fn stop_and_remove(&self, name: &str) {
        if let Ok(sup) = &self.inner.sup {
            if sup.service_status(name).is_ok() {
                if let Err(e) = sup.stop(name).await {
                    tracing::warn!(service = %name, "stop: {e}");
                }
                if let Err(e) = sup.remove(name) {
                    tracing::warn!(service = %name, "remove: {e}");
                }
            }
        }
        lock(&self.inner.ports).remove(name);
    }

    /// Wakes whenever a service is added or removed or its state or health
    /// changes (the supervisor's [`Supervisor::changes`]); `None` when
    /// services cannot run here.
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.sup.as_ref().ok().map(Supervisor::changes)
    }

    /// The supervisor's clock (ms) and the status of every service it runs;
    /// `None` when services cannot run here.
    pub fn snapshot(&self) -> Option<(u64, Vec<ServiceStatus>)> {
        let sup = self.inner.sup.as_ref().ok()?;
        Some((sup.now_ms(), sup.status()))
    }

    /// Stop every service (SIGTERM → grace → SIGKILL), dependents first.
    pub async fn shutdown(&self) {
        if let Ok(sup) = &self.inner.sup {
            if let Err(e) = sup.stop_all().await {
                tracing::warn!("stopping services: {e}");
            }
            if self.inner.owns_cgroup_root {
                let _ = sup.cgroups().remove();
            }
        }
    }
}

/// A status for a bundle the supervisor does not run (`problem`: why it
/// cannot; `None` for one that waits).
fn not_running(name: &str, problem: Option<&str>) -> ServiceStatus {
    ServiceStatus {
        name: name.to_string(),
        state: State::Stopped,
        pid: None,
        health: Health::None,
        last_health_error: None,
        restarts: 0,
        oom_kills: 0,
        last_exit: problem.map(|p| ExitRecord {
            at_ms: 0,
            reason: ExitReason::StartFailed,
            status: None,
            detail: p.to_string(),
        }),
        started_ms: Vec::new(),
        backoff_ms: Vec::new(),
        memory_bytes: 0,
        cpu_usec: 0,
        processes: 0,
        forks_refused: 0,
        address: None,
    }
}

fn sup_err(e: &str) -> SupervisorError {
    SupervisorError::Io {
        what: "services".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Services for ServicesHandle {
    fn list(&self) -> Vec<LocalService> {
        let known = lock(&self.inner.known).clone();
        let ports = lock(&self.inner.ports).clone();
        let ports_of = |name: &str| ports.get(name).cloned().unwrap_or_default();
        let mut out: BTreeMap<String, LocalService> = BTreeMap::new();
        if let Ok(sup) = &self.inner.sup {
            let now_ms = Some(sup.now_ms());
            for st in sup.status() {
                let k = known.get(&st.name);
                out.insert(
                    st.name.clone(),
                    LocalService {
                        version: k.and_then(|k| k.version.clone()),
                        digest: k.and_then(|k| k.digest.clone()),
                        problem: k.and_then(|k| k.problem.clone()),
                        waiting: None,
                        now_ms,
                        ports: ports_of(&st.name),
                        status: st,
                    },
                );
            }
        }
        for (name, k) in known {
            if out.contains_key(&name) {
                continue;
            }
            let status = match (&k.problem, &k.waiting) {
                (Some(p), _) => not_running(&name, Some(p)),
                (None, Some(_)) => not_running(&name, None),
                (None, None) => continue,
            };
            out.insert(
                name.clone(),
                LocalService {
                    status,
                    version: k.version.clone(),
                    digest: k.digest.clone(),
                    problem: k.problem.clone(),
                    waiting: k.waiting.clone(),
                    now_ms: None,
                    ports: ports_of(&name),
                },
            );
        }
        out.into_values().collect()
    }

    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>> {
        Box::pin(async move {
            match &self.inner.sup {
                Ok(s) => s.start(name).await,
                Err(e) => Err(sup_err(e)),
            }
        })
    }

    fn stop<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>> {
        Box::pin(async move {
            match &self.inner.sup {
                Ok(s) => s.stop(name).await,
                Err(e) => Err(sup_err(e)),
            }
        })
    }

    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>> {
        Box::pin(async move {
            match &self.inner.sup {
                Ok(s) => s.restart(name).await,
                Err(e) => Err(sup_err(e)),
            }
        })
    }

    fn logs(&self, name: &str) -> Result<Vec<LogLine>, SupervisorError> {
        match &self.inner.sup {
            Ok(s) => s.logs(name),
            Err(e) => Err(sup_err(e)),
        }
    }

    fn follow(&self, name: &str) -> Result<LogFollower, SupervisorError> {
        match &self.inner.sup {
            Ok(s) => s.follow(name),
            Err(e) => Err(sup_err(e)),
        }
    }
}

/// Containers on the `nuvol0` bridge through the agent's network manager.
struct NetHook {
    net: crate::net::Net,
    /// Each service's declared ports, for publishing.
    ports: Arc<Mutex<BTreeMap<String, Vec<nuvol_bundle::manifest::Port>>>>,
    /// The overlay's WireGuard link, where `overlay_only` ports go (`None`:
    /// the overlay is off and they are not published).
    overlay_link: Option<String>,
}

impl NetworkHook for NetHook {
    fn attach<'a>(
        &'a self,
        service: &'a str,
        pid: i32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let h = self
                .net
                .get()
                .ok_or_else(|| "the network manager is not running".to_string())?;
            let pid = u32::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
            let cn = h
                .attach_container(service, nuvol_net::Netns::Pid(pid))
                .await
                .map_err(|e| e.to_string())?;
            let ports = lock(&self.ports).get(service).cloned().unwrap_or_default();
            publish_ports(h, service, &ports, self.overlay_link.as_deref()).await;
            Ok(cn.address.to_string())
        })
    }

    fn detach<'a>(
        &'a self,
        service: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Some(h) = self.net.get() {
                if let Err(e) = h.detach_container(service).await {
                    tracing::warn!(service, "detach network: {e}");
                }
            }
        })
    }
}

/// Publish a service's declared ports on the host (DNAT to the container):
/// each manifest port on the same host port; an `overlay_only` one only via
/// the overlay's link, and not at all while the overlay is off. A port
/// another service or the panel already holds is refused by `nuvol-net`;
/// the service then runs reachable on its container address only, and the
/// log says why.
async fn publish_ports(
    net: &nuvol_net::NetHandle,
    service: &str,
    ports: &[nuvol_bundle::manifest::Port],
    overlay_link: Option<&str>,
) {
    let published: Vec<nuvol_net::PublishedPort> = ports
        .iter()
        .filter(|p| {
            let off = p.overlay_only && overlay_link.is_none();
            if off {
                tracing::info!(
                    service,
                    port = p.port,
                    "port {} is for the overlay only, which is off: not published",
                    p.name
                );
            }
            !off
        })
        .map(|p| nuvol_net::PublishedPort {
            proto: match p.protocol {
                nuvol_bundle::manifest::Protocol::Tcp => nuvol_net::Proto::Tcp,
                nuvol_bundle::manifest::Protocol::Udp => nuvol_net::Proto::Udp,
            },
            host_port: p.port,
            container_port: p.port,
            only_via: p
                .overlay_only
                .then(|| overlay_link.map(str::to_string))
                .flatten(),
        })
        .collect();
    if published.is_empty() {
        return;
    }
    match net.publish(service, &published).await {
        Ok(()) => tracing::info!(
            service,
            ports = published.len(),
            "ports published on the host"
        ),
        Err(e) => tracing::error!(service, "ports NOT published on the host: {e}"),
    }
}
