//! Container networking: the `nuvol0` bridge and one veth pair per
//! container, the container side created directly inside the container's
//! network namespace as `eth0`, with an address from
//! `[network.containers].subnet` and a default route via the bridge.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::kernel::{Kernel, KernelState, NlError};
use crate::nat::Forward;
use crate::plan::LinkPlan;
use crate::status::ContainerStatus;
use crate::{NetError, Netns, Proto, PublishedPort};

pub const BRIDGE: &str = "nuvol0";

/// What the supervisor gets back from `attach_container`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNet {
    /// The container's address with the subnet's prefix length.
    pub address: Ipv4Net,
    /// The bridge address, the container's default gateway.
    pub gateway: Ipv4Addr,
    /// Host-side veth name (the container side is `eth0`).
    pub veth: String,
}

#[derive(Default)]
pub(crate) struct Containers {
    attached: BTreeMap<String, ContainerNet>,
    published: BTreeMap<String, Vec<PublishedPort>>,
}

fn cerr(e: impl std::fmt::Display) -> NetError {
    NetError::Container(e.to_string())
}

fn nlerr(e: rtnetlink::Error) -> NetError {
    cerr(NlError(e))
}

/// The bridge's address: the subnet's first host.
pub(crate) fn bridge_addr(subnet: &Ipv4Net) -> Option<Ipv4Net> {
    let first = subnet.hosts().next()?;
    Ipv4Net::new(first, subnet.prefix_len()).ok()
}

/// Host-side veth name for a container: `nv` + 8 hex digits of a hash of
/// its name (FNV-1a), within IFNAMSIZ.
pub(crate) fn veth_name(name: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("nv{h:08x}")
}

impl Containers {
    pub fn is_empty(&self) -> bool {
        self.attached.is_empty()
    }

    pub fn status(&self) -> Vec<ContainerStatus> {
        self.attached
            .iter()
            .map(|(n, c)| ContainerStatus {
                name: n.clone(),
                address: c.address.to_string(),
                veth: c.veth.clone(),
                published: self.published.get(n).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Replace `name`'s published ports; returns the previous set. Refuses
    /// (changing nothing) port 0, a host port+protocol given twice, used by
    /// another container or reserved for the host.
    pub fn set_published(
        &mut self,
        name: &str,
        mut ports: Vec<PublishedPort>,
        reserved: &[(Proto, u16)],
    ) -> Result<Vec<PublishedPort>, NetError> {
        let perr = |m: String| Err(NetError::Port(m));
        if !self.attached.contains_key(name) {
            return perr(format!("no container {name:?} attached"));
        }
        if ports.len() > 1024 {
            return perr(format!("{} ports for {name:?}; at most 1024", ports.len()));
        }
        ports.sort();
        ports.dedup();
        for (i, p) in ports.iter().enumerate() {
            if p.host_port == 0 || p.container_port == 0 {
                return perr(format!("{} port 0 for {name:?} is not a port", p.proto));
            }
            if reserved.contains(&(p.proto, p.host_port)) {
                return perr(format!(
                    "{} {} is reserved for the host (panel or DHCP)",
                    p.proto, p.host_port
                ));
            }
            if let Some(q) = ports[i + 1..]
                .iter()
                .find(|q| q.proto == p.proto && q.host_port == p.host_port)
            {
                return perr(format!(
                    "host {} {} given twice for {name:?} (to {} and {})",
                    p.proto, p.host_port, p.container_port, q.container_port
                ));
            }
            if let Some((other, _)) = self.published.iter().find(|(n, ps)| {
                n.as_str() != name
                    && ps
                        .iter()
                        .any(|q| q.proto == p.proto && q.host_port == p.host_port)
            }) {
                return perr(format!(
                    "host {} {} is already published by {other:?}",
                    p.proto, p.host_port
                ));
            }
        }
        let previous = if ports.is_empty() {
            self.published.remove(name)
        } else {
            self.published.insert(name.to_string(), ports)
        };
        Ok(previous.unwrap_or_default())
    }

    pub fn restore_published(&mut self, name: &str, previous: Vec<PublishedPort>) {
        if previous.is_empty() {
            self.published.remove(name);
        } else {
            self.published.insert(name.to_string(), previous);
        }
    }

    /// Every published port with the container address it goes to.
    pub fn forwards(&self) -> Vec<Forward> {
        let mut out = Vec::new();
        for (name, ports) in &self.published {
            if let Some(c) = self.attached.get(name) {
                for p in ports {
                    out.push(Forward {
                        container: name.clone(),
                        address: c.address.addr(),
                        port: p.clone(),
                    });
                }
            }
        }
        out
    }

    /// The bridge's desired state while containers exist: up, with its
    /// address. The host-side veths are kept up too.
    pub fn plan(&self, subnet: &Ipv4Net, st: &KernelState) -> Vec<(u32, LinkPlan)> {
        if self.attached.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let (Some(br), Some(addr)) = (
            st.links.iter().find(|l| l.name == BRIDGE),
            bridge_addr(subnet),
        ) {
            let mut p = LinkPlan {
                name: BRIDGE.into(),
                ..LinkPlan::default()
            };
            p.addrs.insert(IpNet::V4(addr));
            out.push((br.index, p));
        }
        for c in self.attached.values() {
            if let Some(l) = st.links.iter().find(|l| l.name == c.veth) {
                out.push((
                    l.index,
                    LinkPlan {
                        name: c.veth.clone(),
                        ..LinkPlan::default()
                    },
                ));
            }
        }
        out
    }

    async fn ensure_bridge(&self, kernel: &Kernel) -> Result<u32, NetError> {
        let st = kernel.snapshot().await?;
        if let Some(l) = st.links.iter().find(|l| l.name == BRIDGE) {
            return Ok(l.index);
        }
        tracing::info!("creating bridge {BRIDGE}");
        kernel.note_write();
        kernel
            .handle()
            .link()
            .add(LinkBridge::new(BRIDGE).build())
            .execute()
            .await
            .map_err(nlerr)?;
        let st = kernel.snapshot().await?;
        st.links
            .iter()
            .find(|l| l.name == BRIDGE)
            .map(|l| l.index)
            .ok_or_else(|| cerr("bridge vanished after creation"))
    }

    fn allocate(&self, subnet: &Ipv4Net) -> Option<Ipv4Net> {
        let gw = bridge_addr(subnet)?.addr();
        subnet
            .hosts()
            .filter(|a| *a != gw)
            .find(|a| !self.attached.values().any(|c| c.address.addr() == *a))
            .and_then(|a| Ipv4Net::new(a, subnet.prefix_len()).ok())
    }

    pub async fn attach(
        &mut self,
        kernel: &Kernel,
        subnet: &Ipv4Net,
        name: &str,
        netns: Netns,
    ) -> Result<ContainerNet, NetError> {
        if name.is_empty() || name.len() > 255 {
            return Err(cerr("container name must be 1..=255 bytes"));
        }
        if let Some(c) = self.attached.get(name) {
            return Ok(c.clone());
        }
        let ns_file = match netns {
            Netns::File(f) => f,
            Netns::Pid(pid) => File::open(format!("/proc/{pid}/ns/net"))?,
        };
        let address = self
            .allocate(subnet)
            .ok_or_else(|| cerr(format!("no free address left in {subnet}")))?;
        let gateway = bridge_addr(subnet)
            .ok_or_else(|| cerr("subnet too small"))?
            .addr();
        let bridge = self.ensure_bridge(kernel).await?;
        let veth = veth_name(name);
        // The peer is born inside the container's namespace as eth0.
        let peer = LinkUnspec::new_with_name("eth0")
            .setns_by_fd(ns_file.as_raw_fd())
            .build();
        let msg = LinkVeth::new(&veth, "eth0")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        kernel.note_write();
        kernel
            .handle()
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| cerr(format!("create veth {veth}: {}", NlError(e))))?;
        let index = kernel
            .snapshot()
            .await?
            .links
            .iter()
            .find(|l| l.name == veth)
            .map(|l| l.index)
            .ok_or_else(|| cerr("veth vanished after creation"))?;
        let setup = async {
            kernel.set_master(index, bridge).await?;
            kernel.set_up(index).await?;
            configure_inside(ns_file, address, gateway).await
        };
        if let Err(e) = setup.await {
            kernel.note_write();
            let _ = kernel.handle().link().del(index).execute().await;
            return Err(e);
        }
        if let Err(e) = ensure_forwarding() {
            tracing::warn!("{e}");
        }
        tracing::info!(container = name, %address, %veth, "container attached");
        let c = ContainerNet {
            address,
            gateway,
            veth,
        };
        self.attached.insert(name.to_string(), c.clone());
        Ok(c)
    }

    pub async fn detach(&mut self, kernel: &Kernel, name: &str) -> Result<(), NetError> {
        let Some(c) = self.attached.remove(name) else {
            return Err(cerr(format!("no container {name:?} attached")));
        };
        self.published.remove(name);
        let st = kernel.snapshot().await?;
        if let Some(l) = st.links.iter().find(|l| l.name == c.veth) {
            kernel.note_write();
            kernel
                .handle()
                .link()
                .del(l.index)
                .execute()
                .await
                .map_err(nlerr)?;
        }
        tracing::info!(container = name, "container detached");
        Ok(())
    }
}

/// Switch IPv4 forwarding on (in the current network namespace) unless it
/// already is; returns whether it wrote.
pub(crate) fn ensure_forwarding() -> Result<bool, NetError> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    let on = crate::fsutil::read_bounded(std::path::Path::new(p), 16)
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if on {
        return Ok(false);
    }
    std::fs::write(p, "1\n").map_err(|e| cerr(format!("cannot enable IPv4 forwarding: {e}")))?;
    Ok(true)
}

/// Inside the container's namespace (on a thread of its own, since
/// `setns` is per thread): lo and eth0 up, the address, the default route.
async fn configure_inside(ns: File, address: Ipv4Net, gw: Ipv4Addr) -> Result<(), NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nuvol-netns".into())
        .spawn(move || {
            let r = (|| {
                // SAFETY: valid fd; CLONE_NEWNET only changes this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(NetError::Io(std::io::Error::last_os_error()));
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let (conn, h, _) = rtnetlink::new_connection()?;
                    let task = tokio::spawn(conn);
                    let r = async {
                        let mut links = h.link().get().execute();
                        while let Some(m) = links.try_next().await.map_err(nlerr)? {
                            let l = crate::kernel::parse_link(&m);
                            if l.loopback || l.name == "eth0" {
                                let msg = LinkUnspec::new_with_index(l.index).up().build();
                                h.link().set(msg).execute().await.map_err(nlerr)?;
                                if l.name == "eth0" {
                                    h.address()
                                        .add(
                                            l.index,
                                            IpAddr::V4(address.addr()),
                                            address.prefix_len(),
                                        )
                                        .execute()
                                        .await
                                        .map_err(nlerr)?;
                                    let route = RouteMessageBuilder::<Ipv4Addr>::new()
                                        .gateway(gw)
                                        .output_interface(l.index)
                                        .build();
                                    h.route().add(route).execute().await.map_err(nlerr)?;
                                }
                            }
                        }
                        Ok::<(), NetError>(())
                    }
                    .await;
                    task.abort();
                    r
                })
            })();
            let _ = tx.send(r);
        })?;
    rx.await.map_err(|_| cerr("netns thread died"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        let subnet: Ipv4Net = "10.88.0.0/29".parse().unwrap();
        assert_eq!(bridge_addr(&subnet).unwrap().to_string(), "10.88.0.1/29");
        let mut c = Containers::default();
        let mut got = Vec::new();
        while let Some(a) = c.allocate(&subnet) {
            got.push(a.to_string());
            c.attached.insert(
                got.len().to_string(),
                ContainerNet {
                    address: a,
                    gateway: "10.88.0.1".parse().unwrap(),
                    veth: String::new(),
                },
            );
        }
        assert_eq!(got.first().map(String::as_str), Some("10.88.0.2/29"));
        assert_eq!(got.len(), 5); // .2 ..= .6
        assert_eq!(veth_name("web").len(), 10);
        assert_ne!(veth_name("web"), veth_name("db"));
    }
}
