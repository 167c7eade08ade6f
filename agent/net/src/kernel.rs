//! The kernel side: dumps of links, addresses and routes, and the few writes
//! the reconciler makes. Every write goes through [`Kernel`] so it can be
//! counted (a reconcile with nothing to do must make zero writes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
    RouteVia,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::NetError;

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// `IFLA_INFO_KIND` (veth, bridge, wireguard, tun, …); `None` for
    /// physical devices.
    pub kind: Option<String>,
    pub ether: bool,
    pub loopback: bool,
    pub up: bool,
    pub carrier: bool,
    pub mtu: u32,
    pub master: Option<u32>,
}

impl Link {
    /// A real wired NIC: Ethernet with no link kind (so not a veth, bridge,
    /// tunnel, WireGuard or dummy device).
    pub fn is_wired(&self) -> bool {
        self.ether && !self.loopback && self.kind.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Addr {
    pub index: u32,
    pub net: IpNet,
}

/// A unicast route in the main table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Route {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub oif: u32,
    pub metric: u32,
    /// `RTPROT_*`: 2 kernel, 3 boot, 4 static, 16 dhcp …
    pub proto: u8,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct KernelState {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
}

impl KernelState {
    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
}

pub(crate) const PROTO_STATIC: u8 = 4;
pub(crate) const PROTO_DHCP: u8 = 16;

/// Netlink access with a write counter.
#[derive(Clone)]
pub(crate) struct Kernel {
    handle: Handle,
    writes: Arc<AtomicU64>,
    last: Arc<std::sync::Mutex<KernelState>>,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Netlink {
        what,
        source: Box::new(NlError(e)),
    }
}

/// An rtnetlink error, worded as rtnetlink words it except for an unexpected
/// reply, which is named by its header: rtnetlink's own `Display` dumps that
/// reply with `{:?}`, and so links the `Debug` code of every route-netlink
/// type into the binary (about 150 KB).
pub struct NlError(pub rtnetlink::Error);

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use rtnetlink::Error as E;
        match &self.0 {
            E::UnexpectedMessage(m) => write!(
                f,
                "Received an unexpected message (type {}, flags {:#x}, sequence {}, {} bytes)",
                m.header.message_type, m.header.flags, m.header.sequence_number, m.header.length
            ),
            E::NetlinkError(err) => write!(f, "Received a netlink error message {err}"),
            E::RequestFailed => write!(f, "A netlink request failed"),
            E::NamespaceError(err) => write!(f, "Namespace error {err}"),
            E::InvalidHardwareAddress(addr) => write!(
                f,
                "Received a link message (RTM_GETLINK, RTM_NEWLINK, \
                 RTM_SETLINK or RTMGETLINK) with an invalid hardware address \
                 attribute: {addr:?}."
            ),
            E::InvalidIp(addr) => write!(f, "Failed to parse an IP address: {addr:?}"),
            E::InvalidAddress(ip, mask) => write!(
                f,
                "Failed to parse a network address (IP and mask): {ip:?}/{mask:?}"
            ),
            E::InvalidNla(nla) => write!(f, "Attempting to set and Invalid NLA: {nla}"),
        }
    }
}

/// As `Display`: the derived `Debug` of rtnetlink's error would link what
/// `Display` avoids.
impl std::fmt::Debug for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NlError({:?})", self.to_string())
    }
}

impl std::error::Error for NlError {}

impl Kernel {
    pub fn new(handle: Handle, writes: Arc<AtomicU64>) -> Self {
        Kernel {
            handle,
            writes,
            last: Arc::default(),
        }
    }

    /// The state seen by the most recent [`Kernel::snapshot`].
    pub fn cached(&self) -> KernelState {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn snapshot(&self) -> Result<KernelState, NetError> {
        let mut st = KernelState::default();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(nl("link dump"))? {
            st.links.push(parse_link(&m));
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs.try_next().await.map_err(nl("address dump"))? {
            if let Some(a) = parse_addr(&m) {
                st.addrs.push(a);
            }
        }
        for v6 in [false, true] {
            let msg = if v6 {
                RouteMessageBuilder::<Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<Ipv4Addr>::new().build()
            };
            let mut routes = self.handle.route().get(msg).execute();
            while let Some(m) = routes.try_next().await.map_err(nl("route dump"))? {
                if let Some(r) = parse_route(&m) {
                    st.routes.push(r);
                }
            }
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = st.clone();
        Ok(st)
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetError> {
        self.count();
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("set link {index} up")))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetError> {
        self.count();
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("set link {index} mtu {mtu}")))
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), NetError> {
        self.count();
        let msg = LinkUnspec::new_with_index(index).controller(master).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("attach link {index} to {master}")))
    }

    pub async fn add_addr(&self, a: &Addr) -> Result<(), NetError> {
        self.count();
        self.handle
            .address()
            .add(a.index, a.net.addr(), a.net.prefix_len())
            .execute()
            .await
            .map_err(nl(format!("add address {} on link {}", a.net, a.index)))
    }

    pub async fn del_addr(&self, a: &Addr) -> Result<(), NetError> {
        self.count();
        let mut msg = AddressMessage::default();
        msg.header.index = a.index;
        msg.header.prefix_len = a.net.prefix_len();
        msg.header.family = family(&a.net.addr());
        if a.net.addr().is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(a.net.addr()));
        }
        msg.attributes.push(AddressAttribute::Address(a.net.addr()));
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(nl(format!("delete address {} on link {}", a.net, a.index)))
    }

    pub async fn add_route(&self, r: &Route) -> Result<(), NetError> {
        self.count();
        self.handle
            .route()
            .add(route_message(r))
            .execute()
            .await
            .map_err(nl(format!("add route {}", describe(r))))
    }

    pub async fn del_route(&self, r: &Route) -> Result<(), NetError> {
        self.count();
        self.handle
            .route()
            .del(route_message(r))
            .execute()
            .await
            .map_err(nl(format!("delete route {}", describe(r))))
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Count a write made directly through [`Kernel::handle`].
    pub fn note_write(&self) {
        self.count();
    }
}

fn family(a: &IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

pub(crate) fn describe(r: &Route) -> String {
    match r.via {
        Some(v) => format!("{} via {} dev #{} metric {}", r.dst, v, r.oif, r.metric),
        None => format!("{} dev #{} metric {}", r.dst, r.oif, r.metric),
    }
}

fn route_message(r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(&r.dst.addr());
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(r.proto);
    m.header.kind = RouteType::Unicast;
    m.header.scope = if r.via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if r.dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
    }
    match r.via {
        Some(IpAddr::V4(g)) if r.dst.addr().is_ipv4() => m
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(g))),
        Some(IpAddr::V6(g)) if r.dst.addr().is_ipv6() => m
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet6(g))),
        Some(IpAddr::V6(g)) => m.attributes.push(RouteAttribute::Via(RouteVia::Inet6(g))),
        Some(IpAddr::V4(g)) => m.attributes.push(RouteAttribute::Via(RouteVia::Inet(g))),
        None => {}
    }
    m.attributes.push(RouteAttribute::Oif(r.oif));
    m.attributes.push(RouteAttribute::Priority(r.metric));
    m
}

pub(crate) fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: None,
        kind: None,
        ether: m.header.link_layer_type == LinkLayerType::Ether,
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        mtu: 0,
        master: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(b);
                l.mac = Some(mac);
            }
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(v) => l.master = Some(*v),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(kind_name(k));
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

pub(crate) fn parse_addr(m: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some(Addr {
        index: m.header.index,
        net,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

pub(crate) fn parse_route(m: &RouteMessage) -> Option<Route> {
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = None;
    let mut via = None;
    let mut oif = 0;
    let mut metric = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => via = route_ip(g),
            RouteAttribute::Via(RouteVia::Inet(g)) => via = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => via = Some(IpAddr::V6(*g)),
            RouteAttribute::Oif(o) => oif = *o,
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let v6 = m.header.address_family == AddressFamily::Inet6;
    let dst = dst.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(Route {
        dst,
        via,
        oif,
        metric,
        proto: u8::from(m.header.protocol),
    })
}

#[cfg(test)]
mod tests {
    use super::NlError;
    use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};

    #[test]
    fn nl_error_words_errors_as_rtnetlink_does() {
        use rtnetlink::Error as E;
        let same = [
            E::RequestFailed,
            E::NamespaceError("no such netns".into()),
            E::InvalidHardwareAddress(vec![1, 2, 3]),
            E::InvalidIp(vec![10, 0]),
            E::InvalidAddress(vec![10, 0, 0, 1], vec![255]),
            E::InvalidNla("IFLA_MTU".into()),
        ];
        for e in same {
            assert_eq!(NlError(e.clone()).to_string(), e.to_string());
        }
    }

    #[test]
    fn nl_error_names_an_unexpected_reply_by_its_header() {
        // Non-exhaustive: built field by field.
        let mut header = NetlinkHeader::default();
        header.length = 32;
        header.message_type = 16;
        header.flags = 0x2;
        header.sequence_number = 7;
        let m = NetlinkMessage::new(header, NetlinkPayload::Noop);
        let s = NlError(rtnetlink::Error::UnexpectedMessage(m)).to_string();
        assert_eq!(
            s,
            "Received an unexpected message (type 16, flags 0x2, sequence 7, 32 bytes)"
        );
    }
}
