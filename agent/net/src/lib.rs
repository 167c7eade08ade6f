//! nuvol networking: links, DHCPv4, static addresses and routes, DNS and
//! the container bridge, all through netlink (never `ip`).
//!
//! ```no_run
//! # async fn f(cfg: nuvol_config::NetworkConfig) -> Result<(), nuvol_net::NetError> {
//! let net = nuvol_net::start(cfg, nuvol_net::NetOptions::new("/etc/resolv.conf", "/var/lib/nuvol/net", "nuvol")).await?;
//! let status = net.status();          // serde::Serialize, for GET /api/v1/network
//! net.shutdown().await;               // DHCP RELEASE, stop tasks
//! # let _ = status; Ok(()) }
//! ```
//!
//! `start` returns at once; a manager task owns the state and reconciles
//! the kernel against the desired state on every netlink event, DHCP lease
//! change and `apply`. A reconcile that finds nothing to change makes no
//! netlink writes ([`NetHandle::netlink_writes`] counts them).

mod container;
mod dhcp;
mod fsutil;
mod kernel;
mod nat;
mod nft;
mod plan;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use nuvol_config::NetworkConfig;
use rtnetlink::MulticastGroup;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use container::{ContainerNet, BRIDGE};
pub use dhcp::{DhcpState, Lease};
pub use kernel::NlError;
pub use status::{ContainerStatus, DhcpStatus, InterfaceStatus, NetworkStatus, RouteStatus};

use kernel::{Addr, Kernel, KernelState};
use plan::Action;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("netlink: {what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: Box<kernel::NlError>,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A config `apply` refused; the message names the nuvol.toml key.
    #[error("{0}")]
    Config(String),
    /// The kernel refused part of a new config; the previous one is back.
    #[error("could not apply the new network config ({0}); keeping the previous one")]
    Rejected(String),
    #[error("nftables: {0}")]
    Nft(String),
    #[error("container network: {0}")]
    Container(String),
    /// A `publish` refused: port 0, a host port used twice, or reserved.
    #[error("published port: {0}")]
    Port(String),
    #[error("the network manager has stopped")]
    Stopped,
}

/// Where the network component keeps its files.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Written atomically whenever the name servers change.
    pub resolv_conf: PathBuf,
    /// DHCP leases (`lease-<iface>.json`), for INIT-REBOOT after a restart.
    pub state_dir: PathBuf,
    /// Sent as DHCP option 12.
    pub hostname: String,
    /// Host ports `publish` refuses: by default TCP 80 (the panel) and
    /// UDP 67/68 (DHCP). Add the panel's real port with
    /// [`NetOptions::reserve_port`].
    pub reserved_ports: Vec<(Proto, u16)>,
}

impl NetOptions {
    pub fn new(
        resolv_conf: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        hostname: impl Into<String>,
    ) -> Self {
        NetOptions {
            resolv_conf: resolv_conf.into(),
            state_dir: state_dir.into(),
            hostname: hostname.into(),
            reserved_ports: vec![(Proto::Tcp, 80), (Proto::Udp, 67), (Proto::Udp, 68)],
        }
    }

    /// Keep `port` for the host: `publish` refuses it (e.g. the panel's).
    pub fn reserve_port(mut self, proto: Proto, port: u16) -> Self {
        if !self.reserved_ports.contains(&(proto, port)) {
            self.reserved_ports.push((proto, port));
        }
        self
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port of the host forwarded to a container (DNAT on every address of
/// the host except the container bridge).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PublishedPort {
    pub proto: Proto,
    pub host_port: u16,
    pub container_port: u16,
    /// Only on the addresses of this link, and only for packets that come in
    /// through it (and from the host itself): a port for the overlay's
    /// members, never on the LAN. `None`: every host address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_via: Option<String>,
}

/// A container's network namespace: the PID of a process in it, or an
/// open `/proc/<pid>/ns/net` (or bind-mounted netns) file.
#[derive(Debug)]
pub enum Netns {
    Pid(u32),
    File(std::fs::File),
}

enum Command {
    Apply(NetworkConfig, oneshot::Sender<Result<(), NetError>>),
    Reconcile(oneshot::Sender<Result<u64, NetError>>),
    Attach(
        String,
        Netns,
        oneshot::Sender<Result<ContainerNet, NetError>>,
    ),
    Detach(String, oneshot::Sender<Result<(), NetError>>),
    Publish(
        String,
        Vec<PublishedPort>,
        oneshot::Sender<Result<(), NetError>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

/// The running network component.
pub struct NetHandle {
    cmd: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<NetworkStatus>>,
    writes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Start managing the network. Returns once the netlink sockets are open;
/// links, DHCP and resolv.conf are handled by spawned tasks on the current
/// runtime (a current-thread runtime is fine). An invalid `cfg` is
/// reported in [`NetworkStatus::config_error`] and replaced by the default
/// (DHCPv4 on every wired NIC), so a typo never takes the box off the
/// network.
pub async fn start(cfg: NetworkConfig, opts: NetOptions) -> Result<NetHandle, NetError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn_task = tokio::spawn(conn);
    let (mut mconn, _mhandle, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])?;
    // Large receive buffer: a burst of events must not overflow (ENOBUFS
    // would only cost a full re-dump, but avoid it anyway).
    {
        use rtnetlink::sys::AsyncSocket;
        let _ = mconn.socket_mut().socket_mut().set_rx_buf_sz(1 << 20);
    }
    let mconn_task = tokio::spawn(mconn);
    let writes = Arc::new(AtomicU64::new(0));
    let status = Arc::new(Mutex::new(NetworkStatus::default()));
    let (cfg, config_error) = match cfg.check() {
        Ok(()) => (cfg, None),
        Err(e) => {
            tracing::error!("network config refused, using DHCP on every wired NIC: {e}");
            (NetworkConfig::default(), Some(e))
        }
    };
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (dhcp_tx, dhcp_rx) = mpsc::unbounded_channel();
    let kernel = Kernel::new(handle, writes.clone());
    // nf_tables change notifications: someone flushing the NAT table gets
    // it re-applied at once rather than at the next periodic check.
    let nft_events = match nft::NftEvents::open() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::warn!("no nftables notifications ({e}); relying on the periodic check");
            None
        }
    };
    let mgr = Manager {
        nft: None,
        nft_events,
        kernel,
        cfg,
        opts,
        config_error,
        reconcile_error: None,
        leases: BTreeMap::new(),
        dhcp_states: BTreeMap::new(),
        clients: HashMap::new(),
        owned: BTreeSet::new(),
        last_resolv: None,
        containers: container::Containers::default(),
        status: status.clone(),
        dhcp_tx,
        aux_tasks: vec![conn_task, mconn_task],
    };
    let task = tokio::spawn(mgr.run(cmd_rx, dhcp_rx, events));
    Ok(NetHandle {
        cmd: cmd_tx,
        status,
        writes,
        task,
    })
}

impl NetHandle {
    /// A snapshot for `GET /api/v1/network`, refreshed after every reconcile.
    pub fn status(&self) -> NetworkStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.netlink_writes = self.netlink_writes();
        s
    }

    /// Netlink writes (link, address, route, nftables changes) since start.
    pub fn netlink_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NetError>>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Make `cfg` the desired state. A config that fails validation, names
    /// an interface that does not exist, or that the kernel refuses leaves
    /// the previous one in force and returns the reason.
    pub async fn apply(&self, cfg: NetworkConfig) -> Result<(), NetError> {
        self.call(|tx| Command::Apply(cfg, tx)).await
    }

    /// Reconcile now; returns the number of netlink writes it made.
    pub async fn reconcile(&self) -> Result<u64, NetError> {
        self.call(Command::Reconcile).await
    }

    /// Give the container `name` a veth on the `nuvol0` bridge (created on
    /// first use), with an address from `[network.containers].subnet` and a
    /// default route via the bridge; the container side is `eth0`.
    /// Attaching an attached name returns its existing network.
    pub async fn attach_container(
        &self,
        name: &str,
        netns: Netns,
    ) -> Result<ContainerNet, NetError> {
        self.call(|tx| Command::Attach(name.to_string(), netns, tx))
            .await
    }

    /// Remove the container's veth, its published ports, and free its
    /// address.
    pub async fn detach_container(&self, name: &str) -> Result<(), NetError> {
        self.call(|tx| Command::Detach(name.to_string(), tx)).await
    }

    /// Set the host ports forwarded to an attached container, replacing
    /// its previous set (empty: none). Refused (nothing changes) for port
    /// 0, a host port+protocol used twice or by another container, or a
    /// reserved port ([`NetOptions::reserved_ports`], the panel's). The
    /// nftables table is rewritten in one atomic batch before this returns.
    pub async fn publish(&self, container: &str, ports: &[PublishedPort]) -> Result<(), NetError> {
        self.call(|tx| Command::Publish(container.to_string(), ports.to_vec(), tx))
            .await
    }

    /// Release DHCP leases and stop every task.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        self.task.abort();
    }
}

struct ClientHandle {
    control: watch::Sender<dhcp::Control>,
    task: JoinHandle<()>,
}

struct Manager {
    /// nf_tables request socket, opened on first use.
    nft: Option<nft::Nft>,
    nft_events: Option<nft::NftEvents>,
    kernel: Kernel,
    cfg: NetworkConfig,
    opts: NetOptions,
    config_error: Option<String>,
    reconcile_error: Option<String>,
    leases: BTreeMap<u32, Lease>,
    dhcp_states: BTreeMap<u32, DhcpState>,
    clients: HashMap<u32, ClientHandle>,
    owned: BTreeSet<Addr>,
    last_resolv: Option<String>,
    containers: container::Containers,
    status: Arc<Mutex<NetworkStatus>>,
    dhcp_tx: mpsc::UnboundedSender<dhcp::Report>,
    aux_tasks: Vec<JoinHandle<()>>,
}

type Events = futures::channel::mpsc::UnboundedReceiver<(
    rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
    rtnetlink::sys::SocketAddr,
)>;

impl Manager {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Command>,
        mut reports: mpsc::UnboundedReceiver<dhcp::Report>,
        mut events: Events,
    ) {
        let _ = self.reconcile().await;
        loop {
            let mut dirty = false;
            tokio::select! {
                c = cmds.recv() => match c {
                    None => break,
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.command(c).await,
                },
                r = reports.recv() => if let Some(r) = r {
                    self.report(r);
                    dirty = true;
                },
                e = events.next() => {
                    if e.is_none() {
                        tracing::error!("netlink event socket closed");
                        break;
                    }
                    dirty = true;
                }
                r = nft_changed(&mut self.nft_events) => {
                    if let Err(e) = r {
                        tracing::warn!("nftables notifications stopped: {e}");
                        self.nft_events = None;
                    }
                    dirty = true;
                }
                _ = tokio::time::sleep(Duration::from_secs(60)) => dirty = true,
            }
            if dirty {
                // Coalesce a burst (our own writes echo back as events).
                tokio::time::sleep(Duration::from_millis(5)).await;
                while let Some(Some(_)) = events.next().now_or_never() {}
                while let Ok(r) = reports.try_recv() {
                    self.report(r);
                }
                let _ = self.reconcile().await;
            }
        }
        self.shutdown().await;
    }

    fn report(&mut self, r: dhcp::Report) {
        self.dhcp_states.insert(r.ifindex, r.state);
        match r.lease {
            Some(l) => {
                self.leases.insert(r.ifindex, l);
            }
            None => {
                self.leases.remove(&r.ifindex);
            }
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Apply(cfg, tx) => {
                let r = self.apply(cfg).await;
                let _ = tx.send(r);
            }
            Command::Reconcile(tx) => {
                let _ = tx.send(self.reconcile().await);
            }
            Command::Attach(name, ns, tx) => {
                let subnet = self.cfg.containers.subnet;
                let r = self
                    .containers
                    .attach(&self.kernel, &subnet, &name, ns)
                    .await;
                // Bridge address and link states settle in this reconcile.
                let _ = self.reconcile().await;
                let _ = tx.send(r);
            }
            Command::Detach(name, tx) => {
                let r = self.containers.detach(&self.kernel, &name).await;
                let _ = self.reconcile().await;
                let _ = tx.send(r);
            }
            Command::Publish(name, ports, tx) => {
                let r = self.publish(&name, ports).await;
                self.publish_status();
                let _ = tx.send(r);
            }
            Command::Shutdown(_) => {}
        }
    }

    async fn publish(&mut self, name: &str, ports: Vec<PublishedPort>) -> Result<(), NetError> {
        let previous = self
            .containers
            .set_published(name, ports, &self.opts.reserved_ports)?;
        let st = self.kernel.snapshot().await?;
        if let Err(e) = self.sync_nat(&st) {
            tracing::error!(
                container = name,
                "publishing ports failed ({e}); keeping the previous ones"
            );
            self.containers.restore_published(name, previous);
            if let Err(e2) = self.sync_nat(&st) {
                tracing::warn!("restoring the previous NAT table: {e2}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// The NAT table's desired content: `None` while no container is
    /// attached (the table is then removed).
    fn nat_spec(&self, st: &KernelState) -> Option<nat::NatSpec> {
        if self.containers.is_empty() {
            return None;
        }
        let host_addrs = st
            .addrs
            .iter()
            .filter_map(|a| {
                let l = st
                    .link(a.index)
                    .filter(|l| !l.loopback && l.name != BRIDGE)?;
                match a.net.addr() {
                    std::net::IpAddr::V4(v) if !v.is_loopback() => Some((v, l.name.clone())),
                    _ => None,
                }
            })
            .collect();
        Some(nat::NatSpec {
            subnet: self.cfg.containers.subnet,
            bridge: BRIDGE.to_string(),
            host_addrs,
            forwards: self.containers.forwards(),
        })
    }

    /// Bring table `ip nuvol` and IPv4 forwarding to the desired state:
    /// reads only (dumps) when they already are.
    fn sync_nat(&mut self, st: &KernelState) -> Result<(), NetError> {
        let want = self.nat_spec(st).map(|s| nat::ruleset(&s));
        if want.is_some() && container::ensure_forwarding()? {
            tracing::info!("IPv4 forwarding switched on");
            self.kernel.note_write();
        }
        if self.nft.is_none() {
            if want.is_none() {
                // Nothing wanted: only look for a stale table (a previous
                // run that died) if nf_tables is there at all.
                match nft::Nft::open() {
                    Ok(n) => self.nft = Some(n),
                    Err(_) => return Ok(()),
                }
            } else {
                self.nft = Some(nft::Nft::open()?);
            }
        }
        let Some(n) = self.nft.as_mut() else {
            return Ok(());
        };
        match &want {
            None => match n.table_exists() {
                Ok(true) => {
                    tracing::info!("removing nftables table ip {}", nft::TABLE);
                    self.kernel.note_write();
                    n.apply(None)?;
                }
                Ok(false) => {}
                // No nf_tables in this kernel and nothing wanted: fine.
                Err(e) => tracing::debug!("nftables: {e}"),
            },
            Some(rs) => {
                let obs = n.observe()?;
                if !nft::matches(&obs, rs) {
                    tracing::info!(
                        rules = rs.rules.len(),
                        existed = obs.table,
                        "writing nftables table ip {} (NAT, published ports)",
                        nft::TABLE
                    );
                    self.kernel.note_write();
                    n.apply(Some(rs))?;
                }
            }
        }
        Ok(())
    }

    async fn apply(&mut self, cfg: NetworkConfig) -> Result<(), NetError> {
        if let Err(e) = cfg.check() {
            tracing::error!("network config refused: {e}");
            self.config_error = Some(e.clone());
            self.publish_status();
            return Err(NetError::Config(e));
        }
        let st = self.kernel.snapshot().await?;
        if let Some(e) = plan::unknown_interfaces(&cfg, &st) {
            tracing::error!("network config refused: {e}");
            self.config_error = Some(e.clone());
            self.publish_status();
            return Err(NetError::Config(e));
        }
        if cfg.containers != self.cfg.containers && !self.containers.is_empty() {
            let e = "network.containers.subnet: cannot change while containers are attached"
                .to_string();
            self.config_error = Some(e.clone());
            self.publish_status();
            return Err(NetError::Config(e));
        }
        let old = std::mem::replace(&mut self.cfg, cfg);
        tracing::info!("applying new network config");
        match self.reconcile().await {
            Ok(_) => {
                self.config_error = None;
                self.publish_status();
                Ok(())
            }
            Err(e) => {
                tracing::error!("new network config failed ({e}); restoring the previous one");
                self.cfg = old;
                let _ = self.reconcile().await;
                let msg = e.to_string();
                self.config_error = Some(msg.clone());
                self.publish_status();
                Err(NetError::Rejected(msg))
            }
        }
    }

    /// Bring the kernel to the desired state. Returns the writes made.
    async fn reconcile(&mut self) -> Result<u64, NetError> {
        let before = self.kernel.writes();
        let r = self.reconcile_inner().await;
        self.reconcile_error = r.as_ref().err().map(|e| e.to_string());
        if let Err(e) = &r {
            tracing::warn!("reconcile: {e}");
        }
        self.publish_status();
        r.map(|()| self.kernel.writes() - before)
    }

    async fn reconcile_inner(&mut self) -> Result<(), NetError> {
        let st = self.kernel.snapshot().await?;
        // Leases of links that went away.
        self.leases.retain(|i, _| st.link(*i).is_some());
        self.sync_dhcp_clients(&st);
        let mut plan = plan::plan(&self.cfg, &st, &self.leases);
        for (index, p) in self.containers.plan(&self.cfg.containers.subnet, &st) {
            plan.entry(index).or_insert(p);
        }
        let acts = plan::diff(&plan, &st, &self.owned, &[]);
        let mut first_err = None;
        for a in acts {
            let name = |i: u32| st.link(i).map(|l| l.name.clone()).unwrap_or_default();
            let r = match &a {
                Action::Up(i) => {
                    tracing::info!(iface = %name(*i), "setting link up");
                    self.kernel.set_up(*i).await
                }
                Action::Mtu(i, m) => {
                    tracing::info!(iface = %name(*i), mtu = m, "setting MTU");
                    self.kernel.set_mtu(*i, *m).await
                }
                Action::AddAddr(ad) => {
                    tracing::info!(iface = %name(ad.index), address = %ad.net, "adding address");
                    let r = self.kernel.add_addr(ad).await;
                    if r.is_ok() {
                        self.owned.insert(ad.clone());
                    }
                    r
                }
                Action::DelAddr(ad) => {
                    tracing::info!(iface = %name(ad.index), address = %ad.net, "removing address");
                    self.owned.remove(ad);
                    self.kernel.del_addr(ad).await
                }
                Action::AddRoute(r) => {
                    tracing::info!(iface = %name(r.oif), route = %kernel::describe(r), "adding route");
                    self.kernel.add_route(r).await
                }
                Action::DelRoute(r) => {
                    tracing::info!(iface = %name(r.oif), route = %kernel::describe(r), "removing route");
                    self.kernel.del_route(r).await
                }
            };
            if let Err(e) = r {
                tracing::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
        let (text, _, _) = plan::resolv_conf(&self.cfg, &self.leases);
        if self.last_resolv.as_deref() != Some(text.as_str()) {
            let on_disk = fsutil::read_bounded(&self.opts.resolv_conf, 64 * 1024).ok();
            if on_disk.as_deref() != Some(text.as_str()) {
                tracing::info!(path = %self.opts.resolv_conf.display(), "writing resolv.conf");
                if let Err(e) = nuvol_durable::write_atomic(
                    &self.opts.resolv_conf,
                    text.as_bytes(),
                    nuvol_durable::Mode::Public,
                ) {
                    tracing::warn!("cannot write {}: {e}", self.opts.resolv_conf.display());
                    first_err.get_or_insert(NetError::Io(e));
                } else {
                    self.last_resolv = Some(text);
                }
            } else {
                self.last_resolv = Some(text);
            }
        }
        if let Err(e) = self.sync_nat(&st) {
            tracing::warn!("{e}");
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync_dhcp_clients(&mut self, st: &KernelState) {
        let mut wanted = BTreeMap::new();
        for link in &st.links {
            if let Some(ic) = plan::match_config(&self.cfg, link) {
                if ic.dhcp() {
                    wanted.insert(link.index, link);
                }
            }
        }
        // Stop clients whose link vanished or no longer wants DHCP.
        let gone: Vec<u32> = self
            .clients
            .keys()
            .filter(|i| !wanted.contains_key(i))
            .copied()
            .collect();
        for i in gone {
            if let Some(c) = self.clients.remove(&i) {
                tracing::info!(ifindex = i, "stopping DHCP client");
                let _ = c.control.send(dhcp::Control {
                    carrier: false,
                    stop: Some(st.link(i).is_some()),
                });
                self.dhcp_states.remove(&i);
                self.leases.remove(&i);
                // The task sends its RELEASE and ends on its own.
                drop(c.task);
            }
        }
        for (index, link) in wanted {
            let carrier = link.up && link.carrier;
            if let Some(c) = self.clients.get(&index) {
                c.control.send_if_modified(|ctl| {
                    let changed = ctl.carrier != carrier;
                    ctl.carrier = carrier;
                    changed
                });
                if !c.task.is_finished() {
                    continue;
                }
            }
            let Some(mac) = link.mac else { continue };
            tracing::info!(iface = %link.name, "starting DHCP client");
            let (ctl_tx, ctl_rx) = watch::channel(dhcp::Control {
                carrier,
                stop: None,
            });
            let client = dhcp::Client {
                ifindex: index,
                ifname: link.name.clone(),
                mac,
                hostname: self.opts.hostname.clone(),
                lease_file: self
                    .opts
                    .state_dir
                    .join(format!("lease-{}.json", link.name)),
                reports: self.dhcp_tx.clone(),
                control: ctl_rx,
            };
            let task = tokio::spawn(client.run());
            self.clients.insert(
                index,
                ClientHandle {
                    control: ctl_tx,
                    task,
                },
            );
        }
    }

    fn publish_status(&self) {
        let st = self.last_snapshot_status();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *s = st;
    }

    fn last_snapshot_status(&self) -> NetworkStatus {
        // Built from the kernel state cached by the most recent reconcile.
        let st = self.kernel.cached();
        let (_, dns, search) = plan::resolv_conf(&self.cfg, &self.leases);
        let name = |i: u32| {
            st.link(i)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| i.to_string())
        };
        let interfaces = st
            .links
            .iter()
            .map(|l| InterfaceStatus {
                name: l.name.clone(),
                index: l.index,
                mac: l.mac.as_ref().map(status::mac_string),
                kind: l.kind.clone(),
                carrier: l.carrier,
                up: l.up,
                mtu: l.mtu,
                addresses: st
                    .addrs
                    .iter()
                    .filter(|a| a.index == l.index)
                    .map(|a| a.net.to_string())
                    .collect(),
                managed: plan::match_config(&self.cfg, l).is_some(),
                dhcp: self.dhcp_states.get(&l.index).map(|s| DhcpStatus {
                    state: *s,
                    lease: self.leases.get(&l.index).cloned(),
                }),
            })
            .collect();
        let routes = st
            .routes
            .iter()
            .filter(|r| r.proto != 2 || r.dst.prefix_len() > 0)
            .filter(|r| !(r.dst.addr().is_ipv6() && r.dst.addr().is_multicast()))
            .map(|r| RouteStatus {
                destination: r.dst.to_string(),
                gateway: r.via,
                interface: name(r.oif),
                metric: r.metric,
                protocol: status::proto_name(r.proto),
            })
            .collect();
        NetworkStatus {
            interfaces,
            routes,
            dns,
            search,
            config_error: self.config_error.clone(),
            reconcile_error: self.reconcile_error.clone(),
            netlink_writes: self.kernel.writes(),
            reconciled_at: dhcp::now_unix(),
            containers: self.containers.status(),
        }
    }

    async fn shutdown(&mut self) {
        let mut tasks = Vec::new();
        for (_, c) in self.clients.drain() {
            let _ = c.control.send(dhcp::Control {
                carrier: false,
                stop: Some(true),
            });
            tasks.push(c.task);
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        for t in self.aux_tasks.drain(..) {
            t.abort();
        }
        if let Some(n) = self.nft.as_mut() {
            if n.table_exists().unwrap_or(false) {
                tracing::info!("removing nftables table ip {}", nft::TABLE);
                self.kernel.note_write();
                if let Err(e) = n.apply(None) {
                    tracing::warn!("{e}");
                }
            }
        }
        tracing::info!("network manager stopped");
    }
}

/// Wait for a change to our nftables table; never resolves without a socket.
async fn nft_changed(ev: &mut Option<nft::NftEvents>) -> Result<(), NetError> {
    match ev {
        Some(e) => e.changed().await,
        None => futures::future::pending().await,
    }
}
