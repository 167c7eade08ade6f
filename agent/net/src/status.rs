//! What `GET /api/v1/network` shows: serialisable snapshot types.

use std::net::IpAddr;

use serde::Serialize;

use crate::dhcp::{DhcpState, Lease};

#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkStatus {
    pub interfaces: Vec<InterfaceStatus>,
    pub routes: Vec<RouteStatus>,
    /// Name servers as written to resolv.conf, in order.
    pub dns: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Why the last `apply` (or the boot config) was refused, if it was.
    pub config_error: Option<String>,
    /// Last reconcile failure (a netlink write the kernel refused).
    pub reconcile_error: Option<String>,
    /// Netlink writes made since start.
    pub netlink_writes: u64,
    /// Unix seconds of the last reconcile.
    pub reconciled_at: u64,
    pub containers: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub index: u32,
    pub mac: Option<String>,
    /// `None` for physical NICs, else veth, bridge, wireguard, …
    pub kind: Option<String>,
    pub carrier: bool,
    pub up: bool,
    pub mtu: u32,
    /// CIDR strings, e.g. `10.0.2.15/24`.
    pub addresses: Vec<String>,
    /// Whether nuvol manages this link (config or default DHCP).
    pub managed: bool,
    pub dhcp: Option<DhcpStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DhcpStatus {
    pub state: DhcpState,
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// CIDR, `0.0.0.0/0` for the default route.
    pub destination: String,
    pub gateway: Option<IpAddr>,
    pub interface: String,
    pub metric: u32,
    /// kernel, boot, static, dhcp, ra or a number.
    pub protocol: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    pub name: String,
    pub address: String,
    pub veth: String,
    pub published: Vec<crate::PublishedPort>,
}

pub(crate) fn proto_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        16 => "dhcp".into(),
        n => n.to_string(),
    }
}

pub(crate) fn mac_string(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
