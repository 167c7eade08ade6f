//! `nuvol agent`: everything but PID 1, in one tokio process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use nuvol_status::{Collector, ConfigState, Identity, Status};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The provisioning file.
    #[arg(long, default_value = "/boot/nuvol.toml")]
    pub config: PathBuf,
    /// Where the agent keeps its state (node id, keys, bundles, logs).
    #[arg(long, default_value = "/data/nuvol")]
    pub state_dir: PathBuf,
    /// Address for the panel and API; default: every address on the
    /// configured panel port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address for HTTPS; default: every address on `[panel] https_port`,
    /// or none when `--listen` is given (a development run).
    #[arg(long)]
    pub https_listen: Option<SocketAddr>,
    /// Whether the agent configures links, addresses and routes. `auto`
    /// manages them only when started by `nuvol init` on a box, never on a
    /// development host.
    #[arg(long, value_enum, default_value_t = NetworkMode::Auto)]
    pub network: NetworkMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkMode {
    Auto,
    Manage,
    Off,
}

struct Node {
    collector: Mutex<Collector>,
    test_hooks: bool,
    net: Option<crate::net::Net>,
    admin_token: Option<String>,
    store: Option<Arc<nuvol_bundle::Store>>,
    upload_dir: PathBuf,
    under_init: bool,
    /// Where a factory reset request goes (the data partition's root,
    /// named by nuvol init); `None` on a development host.
    reset_dir: Option<PathBuf>,
    services: Option<crate::services::ServicesHandle>,
    discovery: Arc<crate::discovery::Discovery>,
    share: bool,
    /// Bumped when the store changes outside the API (provisioning).
    bundles_generation: std::sync::atomic::AtomicU64,
    /// The ids services with `[peers]` are known by (share index).
    peer_ids: Arc<crate::peers::PeerIds>,
    overlay: Option<crate::overlay::StatusSlot>,
    update: Arc<crate::update::Updater>,
    /// Keys of nuvol.toml this nuvol does not know (skipped): alerts.
    config_skipped: Vec<String>,
}

impl nuvol_api::Node for Node {
    fn status(&self) -> Status {
        match self.collector.lock() {
            Ok(mut c) => c.collect(),
            Err(poisoned) => poisoned.into_inner().collect(),
        }
    }
    fn network(&self) -> Option<serde_json::Value> {
        let net = self.net.as_ref().and_then(crate::net::status_json);
        crate::overlay::with_status(net, self.overlay.as_ref())
    }
    fn metrics_extra(&self) -> String {
        crate::overlay::metrics(self.overlay.as_ref())
    }
    fn test_hooks(&self) -> bool {
        self.test_hooks
    }
    fn admin_token(&self) -> Option<String> {
        self.admin_token.clone()
    }
    fn bundle_store(&self) -> Option<(Arc<nuvol_bundle::Store>, PathBuf)> {
        self.store.clone().map(|s| (s, self.upload_dir.clone()))
    }
    fn reboot(&self) -> Result<bool, String> {
        if !self.under_init {
            return Ok(false);
        }
        nuvol_api::ask_init_to_reboot().map(|()| true)
    }
    fn alerts(&self) -> Vec<String> {
        self.reset_dir
            .as_deref()
            .and_then(nuvol_reset::given_up_alert)
            .into_iter()
            .chain(self.update.alerts())
            .chain(self.config_skipped.iter().cloned())
            .collect()
    }
    fn update_status(&self) -> Option<serde_json::Value> {
        Some(self.update.status())
    }
    fn update_offer(&self) -> Option<(PathBuf, serde_json::Value)> {
        self.update.offer()
    }
    fn update_upload_dir(&self) -> Option<PathBuf> {
        Some(self.update.upload_dir.clone())
    }
    fn update_apply(
        &self,
        file: &std::path::Path,
        allow_downgrade: bool,
    ) -> Result<serde_json::Value, nuvol_update::Refusal> {
        let running = crate::update::running_services(self.services.as_ref());
        self.update.apply(file, allow_downgrade, running)
    }
    fn update_check_head(
        &self,
        head: &[u8],
        allow_downgrade: bool,
    ) -> Result<(String, u64), nuvol_update::Refusal> {
        self.update.check_head(head, allow_downgrade)
    }
    fn factory_reset(&self, test_pause_secs: u32) -> Result<bool, String> {
        let Some(dir) = self.reset_dir.as_deref().filter(|_| self.under_init) else {
            return Ok(false);
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Durable before anything else: once this returns, a power cut
        // cannot lose the request.
        nuvol_reset::request(dir, nuvol_reset::Origin::Api, now, test_pause_secs)
            .map_err(|e| format!("recording the request: {e}"))?;
        eprintln!(
            "nuvol: factory reset requested: rebooting; the data partition is wiped at the next boot"
        );
        nuvol_api::ask_init_to_reboot().map(|()| true)
    }
    fn services(&self) -> Option<Arc<dyn nuvol_api::services::Services>> {
        self.services
            .clone()
            .map(|h| Arc::new(h) as Arc<dyn nuvol_api::services::Services>)
    }
    fn share_bundles(&self) -> bool {
        self.share
    }
    fn bundles_generation(&self) -> u64 {
        self.bundles_generation
            .load(std::sync::atomic::Ordering::SeqCst)
            .wrapping_add(self.peer_ids.generation())
    }
    fn peer_ids(&self) -> std::collections::BTreeMap<String, String> {
        self.peer_ids.get()
    }
    fn bundles_changed(&self) {
        self.bundles_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.services.clone() {
            tokio::spawn(async move { h.sync().await });
        }
        self.discovery.bundles_changed();
    }
    fn discovery(&self) -> Option<nuvol_catalog::DiscoveryHandle> {
        self.discovery.handle()
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::logging::init();
    let fd_limit = raise_fd_limit();
    let under_init = std::env::var_os("NUVOL_UNDER_INIT").is_some();
    let heartbeat = crate::heartbeat::take_from_env();
    let loaded = nuvol_config::load_or_default(&args.config);
    match &loaded.problem {
        Some(p) => {
            tracing::error!("provisioning file problem: {p}");
            // Loud on the console: this is what a volunteer looks at.
            eprintln!("nuvol: CONFIG PROBLEM: {p}; running with safe defaults");
        }
        None => tracing::info!("{loaded}"),
    }
    for s in &loaded.skipped {
        eprintln!("nuvol: CONFIG: {s}");
    }
    let (loaded, settings) = crate::settings::overlay(loaded, &args.state_dir);
    let run_dir = std::env::var_os("NUVOL_RUN_DIR")
        .map_or_else(|| PathBuf::from("/run/nuvol"), PathBuf::from);
    let fail = loaded.config.debug.fail_starts;
    let in_slot = loaded
        .config
        .debug
        .fail_starts_slot
        .as_deref()
        .is_none_or(running_in);
    if loaded.config.debug.test_hooks && fail > 0 && in_slot {
        // Test hook: fail the first `fail_starts` starts of this boot.
        let f = run_dir.join("debug-failed-starts");
        let n: u32 = std::fs::read_to_string(&f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if n < fail {
            let _ = std::fs::create_dir_all(&run_dir);
            let _ = std::fs::write(&f, (n + 1).to_string());
            anyhow::bail!(
                "test hook [debug] fail_starts: failing start {} of {fail}",
                n + 1
            );
        }
    }
    let identity = Identity::load_or_create(&args.state_dir, &run_dir)
        .with_context(|| format!("state directory {}", args.state_dir.display()))?;
    tracing::info!(node_id = %identity.node_id, boot = identity.boot_count, "identity");
    let node_id = identity.node_id.clone();
    let config_state = ConfigState {
        path: loaded.path.display().to_string(),
        found: loaded.found,
        problem: loaded.problem.clone(),
        skipped: loaded.skipped.clone(),
    };
    let admin_token = match crate::bundles::admin_token(&args.state_dir) {
        // [admin] credentials replace the console token.
        _ if loaded.config.admin.provisioned() => {
            eprintln!("nuvol: admin credentials from [admin] in the provisioning file");
            None
        }
        Ok(t) => {
            // The console is the one place the owner can read it on first boot.
            eprintln!(
                "nuvol: admin token: {t} (also in {})",
                args.state_dir.join(crate::bundles::TOKEN_FILE).display()
            );
            Some(t)
        }
        Err(e) => {
            tracing::error!("admin token: {e:#}; protected routes are closed");
            eprintln!("nuvol: no admin token ({e:#}); protected routes are closed");
            None
        }
    };
    let store = crate::bundles::open_store(&args.state_dir, &loaded.config.bundles);
    let update = Arc::new(crate::update::Updater::new(
        &loaded.config,
        &args.config,
        &args.state_dir,
        under_init,
    ));
    // The brown-out policy before anything else: a failed try is recorded
    // and armed again even if the rest of the start goes wrong.
    let trial = update.at_start();
    let manage_net = match args.network {
        NetworkMode::Manage => true,
        NetworkMode::Off => false,
        NetworkMode::Auto => under_init,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        if let Some(pipe) = heartbeat {
            tokio::spawn(crate::heartbeat::run(pipe));
        }
        let listen = args
            .listen
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], loaded.config.panel.port)));
        let listener =
            crate::api_setup::bind(listen).with_context(|| format!("listen on {listen}"))?;
        let local = listener.local_addr().context("local address")?;
        let no_net = loaded.config.debug.test_hooks
            && loaded
                .config
                .debug
                .no_network_slot
                .as_deref()
                .is_some_and(running_in);
        if no_net {
            eprintln!("nuvol: test hook [debug] no_network_slot: the network is left unconfigured");
        }
        let net = if manage_net && !no_net {
            Some(
                crate::net::start(
                    &loaded.config.network,
                    &args.state_dir,
                    loaded.config.hostname(),
                    local.port(),
                )
                .await,
            )
        } else {
            None
        };
        // The overlay's key and tags exist before gossip starts.
        let node_name = loaded
            .config
            .discovery
            .node_name_for(loaded.config.hostname(), &node_id);
        let overlay = crate::overlay::prepare(&loaded.config, &args.state_dir, &node_name);
        // Services that span boxes form their clusters over the overlay.
        let cluster_me = overlay.as_ref().map(|p| crate::cluster::Me {
            node: node_name.clone(),
            addr: std::net::IpAddr::V4(p.address4),
        });
        let services = store.clone().map(|s| {
            let link = overlay.as_ref().map(|p| p.cfg.interface.clone());
            crate::services::start(s, &args.state_dir, net.clone(), cluster_me.clone(), link)
        });
        let discovery = crate::discovery::spawn(
            crate::overlay::with_tags(loaded.config.discovery.clone(), overlay.as_ref()),
            loaded.config.hostname().to_string(),
            node_id,
            store.clone(),
            // The share (bundles, and the OS update this box offers).
            loaded
                .config
                .bundles
                .share
                .then(|| (local.port(), update.offer_file())),
            services.clone(),
            Some(args.state_dir.join(crate::discovery::KEYRING_FILE)),
        );
        let overlay = overlay.map(|p| crate::overlay::spawn(p, discovery.clone()));
        let peer_ids = Arc::new(crate::peers::PeerIds::default());
        if let (Some(store), Some(services), Some(me)) = (&store, &services, cluster_me) {
            crate::cluster::spawn(
                store.clone(),
                args.state_dir.clone(),
                services.clone(),
                discovery.clone(),
                me,
            );
            crate::peers::spawn(
                store.clone(),
                services.clone(),
                discovery.clone(),
                peer_ids.clone(),
            );
        }
        if loaded.config.discovery.enabled && loaded.config.discovery.mdns {
            crate::mdns_share::spawn(discovery.clone());
        }
        let node = Arc::new(Node {
            collector: Mutex::new(Collector::new(
                identity,
                env!("CARGO_PKG_VERSION"),
                config_state,
            )),
            test_hooks: loaded.config.debug.test_hooks,
            net: net.clone(),
            admin_token,
            store: store.clone(),
            upload_dir: crate::bundles::upload_dir(&args.state_dir),
            under_init,
            reset_dir: std::env::var_os(nuvol_init::RESET_DIR_ENV).map(PathBuf::from),
            services: services.clone(),
            discovery: discovery.clone(),
            share: loaded.config.bundles.share,
            bundles_generation: std::sync::atomic::AtomicU64::new(0),
            peer_ids,
            overlay,
            update: update.clone(),
            config_skipped: loaded.skipped.clone(),
        });
        if let Some(store) = store {
            let config_dir = args
                .config
                .parent()
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            let provisioning = crate::bundles::provision(
                store,
                loaded.config.bundles.clone(),
                config_dir,
                args.state_dir.clone(),
            );
            let services = services.clone();
            let discovery = discovery.clone();
            let node = node.clone();
            tokio::spawn(async move {
                provisioning.await;
                node.bundles_generation
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Run and announce what provisioning installed.
                discovery.bundles_changed();
                if let Some(s) = services {
                    s.sync().await;
                }
            });
        }
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let https = crate::api_setup::https_addr(args.listen, args.https_listen, &loaded.config);
        let (listeners, opts) =
            crate::api_setup::listeners(listener, https, &args.state_dir, &loaded.config).await;
        let opts = nuvol_api::Options {
            settings: Some(settings),
            idle: crate::settings::test_idle(&loaded.config),
            conn_limits: Some(nuvol_api::conns::Limits::for_fd_limit(fd_limit)),
            ..opts
        };
        let server = tokio::spawn(nuvol_api::serve_all(
            listeners,
            node.clone(),
            opts,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        announce_ready(local, net.is_some()).await;
        // The policy looks in a trial boot too (nothing while the trial
        // runs, then as usual once it is marked good).
        tokio::spawn(crate::update_policy::watch(
            update.clone(),
            node.clone(),
            update.policy.clone(),
        ));
        if trial {
            tokio::spawn(crate::update::watch_trial(
                update.clone(),
                local.port(),
                manage_net,
                services.clone(),
                loaded.config.discovery.enabled.then(|| discovery.clone()),
            ));
        } else {
            tokio::spawn(crate::update::boot_dir_watch(
                update.clone(),
                services.clone(),
            ));
        }
        tokio::spawn(crate::update_stick::stick_watch(update, services.clone()));
        wait_for_stop().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
        // Services first, together with the goodbyes: each service gets its
        // whole grace while gossip/mDNS say leave and HTTP drains, all
        // inside PID 1's grace for the agent.
        let stop_services = async {
            if let Some(s) = &services {
                s.shutdown().await;
            }
        };
        let drain = async {
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        };
        tokio::join!(stop_services, discovery.leave(), drain);
        // Services' last lines to their log files (the writer thread
        // would within a second; the process ends sooner).
        let _ = tokio::task::spawn_blocking(nuvol_supervisor::logs::flush_all).await;
        if let Some(net) = net {
            crate::net::shutdown(net).await;
        }
        Ok(())
    })
}

/// Whether this boot runs from A/B slot `slot` (`nuvol.slot=` on the
/// kernel command line), for the test hooks limited to one slot.
fn running_in(slot: &str) -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w.strip_prefix("nuvol.slot=") == Some(slot))
}

/// Most file descriptors the agent asks for (the soft `RLIMIT_NOFILE`),
/// when the hard limit allows.
pub const FD_LIMIT: libc::rlim_t = 65536;

/// Raise the soft fd limit from the 1024 default to the hard limit, at most
/// [`FD_LIMIT`]: the panel's connections, containers' pipes, gossip and
/// state writes all need fds. Returns the soft limit in force.
// `rlim_t` is 32 bits with 32-bit ARM's glibc; u64 on musl and on 64-bit targets.
#[allow(clippy::useless_conversion)]
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let want = lim.rlim_max.min(FD_LIMIT);
    if lim.rlim_cur < want {
        let new = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the rlimit we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            tracing::info!(from = lim.rlim_cur, to = want, "fd limit raised");
            return want.into();
        }
        tracing::warn!(
            "could not raise the fd limit from {}: {}",
            lim.rlim_cur,
            std::io::Error::last_os_error()
        );
    }
    lim.rlim_cur.into()
}

/// Print the ready line with the URL(s) the panel is reachable at. On a box,
/// wait (briefly) for a routable address so the URL is one people can use.
async fn announce_ready(local: SocketAddr, wait_for_address: bool) {
    let urls = |port: u16| -> Vec<String> {
        nuvol_status::interfaces()
            .into_iter()
            .filter(|i| i.name != "lo")
            .flat_map(|i| i.addresses)
            .filter_map(|a| a.split('/').next().map(str::to_string))
            .filter(|a| !a.starts_with("fe80"))
            .map(|a| {
                if a.contains(':') {
                    format!("http://[{a}]:{port}/")
                } else {
                    format!("http://{a}:{port}/")
                }
            })
            .collect()
    };
    let mut list = Vec::new();
    if local.ip().is_unspecified() {
        for _ in 0..if wait_for_address { 200 } else { 1 } {
            list = urls(local.port());
            if !list.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if list.is_empty() {
        list.push(format!("http://{local}/"));
    }
    let line = format!("nuvol: ready: panel at {}", list.join(" "));
    tracing::info!("{line}");
    eprintln!("{line}");
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can still be stopped by SIGKILL from init.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
