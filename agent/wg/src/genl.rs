//! Kernel WireGuard over netlink, hand-built: create the link and its
//! address (`NETLINK_ROUTE`), set the device key and port, add, change and
//! remove peers, and read the peers back with their endpoints as the kernel
//! observed them and their last handshakes (`NETLINK_GENERIC`, family
//! `wireguard`). Every reply is parsed with bounds checks; a malformed reply
//! is an error, never a panic. Blocking sockets with a receive timeout: the
//! kernel answers inside `sendmsg`/`recvmsg`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nuvol_rawnl::{
    attrs, errno_of, Msg, NlError, NlSocket, NETLINK_GENERIC, NETLINK_ROUTE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};

use crate::{Key, WgError};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const WG_CMD_GET_DEVICE: u8 = 0;
const WG_CMD_SET_DEVICE: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
const WGDEVICE_A_PUBLIC_KEY: u16 = 4;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_FLAGS: u16 = 3;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGPEER_F_REMOVE_ME: u32 = 1;
const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

/// Most messages of one dump (a device with thousands of peers is a bug).
const MAX_DUMP_MSGS: usize = 10_000;
/// Most peers read back.
pub const MAX_PEERS: usize = 4096;

/// One peer as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public: Key,
    /// Where to send until the peer is heard from (the kernel then follows
    /// the peer's observed address); `None` leaves it as it is.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive in seconds (0: off).
    pub keepalive: u16,
    /// The peer's AllowedIPs, replacing any it had.
    pub allowed: Vec<(IpAddr, u8)>,
}

/// One peer as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    pub public: Key,
    /// The endpoint in use: the last address the peer was heard from (its
    /// observed address), or the configured one.
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed: Vec<(IpAddr, u8)>,
}

impl PeerState {
    /// Time since the last handshake, `None` if never.
    pub fn handshake_age(&self) -> Option<Duration> {
        self.last_handshake
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }
}

/// The device as the kernel sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub public: Option<Key>,
    pub listen_port: u16,
    pub peers: Vec<PeerState>,
}

impl From<NlError> for WgError {
    fn from(e: NlError) -> WgError {
        match e {
            NlError::Kernel { .. } => WgError::Kernel(e.to_string()),
            e => WgError::Netlink(e.to_string()),
        }
    }
}

fn u16_of(v: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?))
}
fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}
fn i64_of(v: &[u8]) -> Option<i64> {
    Some(i64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}
fn key_of(v: &[u8]) -> Option<Key> {
    Some(Key(v.get(..32)?.try_into().ok()?))
}

/// `struct sockaddr_in` / `sockaddr_in6` as the kernel wants them.
fn sockaddr(a: &SocketAddr) -> Vec<u8> {
    let mut v = Vec::with_capacity(28);
    match a {
        SocketAddr::V4(a) => {
            v.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            v.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.flowinfo().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
    v
}

fn parse_sockaddr(v: &[u8]) -> Option<SocketAddr> {
    let fam = u16_of(v)? as i32;
    let port = u16::from_be_bytes(v.get(2..4)?.try_into().ok()?);
    if fam == libc::AF_INET {
        let ip: [u8; 4] = v.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
    } else if fam == libc::AF_INET6 {
        let ip: [u8; 16] = v.get(8..24)?.try_into().ok()?;
        Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
    } else {
        None
    }
}

fn parse_allowed(v: &[u8]) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for (_, one) in attrs(v) {
        let (mut fam, mut ip, mut mask) = (0u16, None, 0u8);
        for (t, x) in attrs(one) {
            match t {
                WGALLOWEDIP_A_FAMILY => fam = u16_of(x).unwrap_or(0),
                WGALLOWEDIP_A_IPADDR => ip = Some(x),
                WGALLOWEDIP_A_CIDR_MASK => mask = x.first().copied().unwrap_or(0),
                _ => {}
            }
        }
        let ip = match (fam as i32, ip) {
            (libc::AF_INET, Some(x)) if x.len() == 4 => {
                IpAddr::V4(Ipv4Addr::new(x[0], x[1], x[2], x[3]))
            }
            (libc::AF_INET6, Some(x)) if x.len() == 16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(x);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => continue,
        };
        out.push((ip, mask));
    }
    out
}

fn parse_peer(v: &[u8]) -> Option<PeerState> {
    let mut p = PeerState {
        public: Key([0; 32]),
        endpoint: None,
        last_handshake: None,
        rx_bytes: 0,
        tx_bytes: 0,
        allowed: Vec::new(),
    };
    let mut have_key = false;
    for (t, x) in attrs(v) {
        match t {
            WGPEER_A_PUBLIC_KEY => {
                p.public = key_of(x)?;
                have_key = true;
            }
            WGPEER_A_ENDPOINT => p.endpoint = parse_sockaddr(x),
            WGPEER_A_LAST_HANDSHAKE_TIME => {
                let sec = i64_of(x).unwrap_or(0);
                let nsec = x.get(8..).and_then(i64_of).unwrap_or(0);
                if sec > 0 {
                    p.last_handshake = Some(
                        UNIX_EPOCH
                            + Duration::from_secs(sec as u64)
                            + Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64),
                    );
                }
            }
            WGPEER_A_RX_BYTES => p.rx_bytes = u64_of(x).unwrap_or(0),
            WGPEER_A_TX_BYTES => p.tx_bytes = u64_of(x).unwrap_or(0),
            WGPEER_A_ALLOWEDIPS => p.allowed = parse_allowed(x),
            _ => {}
        }
    }
    have_key.then_some(p)
}

/// Kernel WireGuard: the generic netlink family and a route socket.
pub struct Wg {
    genl: NlSocket,
    family: u16,
}

impl Wg {
    /// Open the sockets and look up the `wireguard` family (the kernel must
    /// have WireGuard built in or loaded).
    pub fn open() -> Result<Wg, WgError> {
        let mut genl = NlSocket::open(NETLINK_GENERIC)?;
        let seq = genl.next_seq();
        let mut m = Msg::new(
            GENL_ID_CTRL,
            NLM_F_REQUEST,
            seq,
            &[CTRL_CMD_GETFAMILY, 1, 0, 0],
        );
        m.str(CTRL_ATTR_FAMILY_NAME, "wireguard");
        genl.send(&m.finish())?;
        for _ in 0..64 {
            let mut family = None;
            for r in genl.recv()? {
                if r.seq != seq {
                    continue;
                }
                if r.ty == NLMSG_ERROR {
                    let e = errno_of(r.payload);
                    return Err(WgError::Kernel(format!(
                        "no wireguard in this kernel: {}",
                        io::Error::from_raw_os_error(-e)
                    )));
                }
                family = r
                    .payload
                    .get(4..)
                    .map(attrs)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
                    .and_then(|(_, v)| u16_of(v));
                if family.is_some() {
                    break;
                }
            }
            if let Some(family) = family {
                return Ok(Wg { genl, family });
            }
        }
        Err(WgError::Netlink("wireguard family: no answer".into()))
    }

    fn wg_msg(&mut self, cmd: u8, flags: u16) -> (Msg, u32) {
        let seq = self.genl.next_seq();
        (Msg::new(self.family, flags, seq, &[cmd, 1, 0, 0]), seq)
    }

    /// Set the device's private key and listen port.
    pub fn set_device(&mut self, ifname: &str, private: &Key, port: u16) -> Result<(), WgError> {
        let (mut m, seq) = self.wg_msg(WG_CMD_SET_DEVICE, NLM_F_REQUEST | NLM_F_ACK);
        m.str(WGDEVICE_A_IFNAME, ifname)
            .attr(WGDEVICE_A_PRIVATE_KEY, &private.0)
            .attr(WGDEVICE_A_LISTEN_PORT, &port.to_ne_bytes());
        Ok(self.genl.request(&m.finish(), seq, "set device")?)
    }

    /// Add a peer or change it: AllowedIPs are replaced, the endpoint set
    /// when given.
    pub fn set_peer(&mut self, ifname: &str, p: &PeerConfig) -> Result<(), WgError> {
        let (mut m, seq) = self.wg_msg(WG_CMD_SET_DEVICE, NLM_F_REQUEST | NLM_F_ACK);
        m.str(WGDEVICE_A_IFNAME, ifname).begin(WGDEVICE_A_PEERS);
        m.begin(0)
            .attr(WGPEER_A_PUBLIC_KEY, &p.public.0)
            .attr(WGPEER_A_FLAGS, &WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes())
            .attr(
                WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL,
                &p.keepalive.to_ne_bytes(),
            );
        if let Some(e) = &p.endpoint {
            m.attr(WGPEER_A_ENDPOINT, &sockaddr(e));
        }
        m.begin(WGPEER_A_ALLOWEDIPS);
        for (ip, mask) in &p.allowed {
            m.begin(0);
            match ip {
                IpAddr::V4(a) => m
                    .attr(WGALLOWEDIP_A_FAMILY, &(libc::AF_INET as u16).to_ne_bytes())
                    .attr(WGALLOWEDIP_A_IPADDR, &a.octets()),
                IpAddr::V6(a) => m
                    .attr(WGALLOWEDIP_A_FAMILY, &(libc::AF_INET6 as u16).to_ne_bytes())
                    .attr(WGALLOWEDIP_A_IPADDR, &a.octets()),
            };
            m.attr(WGALLOWEDIP_A_CIDR_MASK, &[*mask]).end();
        }
        Ok(self.genl.request(&m.finish(), seq, "set peer")?)
    }

    /// Remove a peer.
    pub fn remove_peer(&mut self, ifname: &str, public: &Key) -> Result<(), WgError> {
        let (mut m, seq) = self.wg_msg(WG_CMD_SET_DEVICE, NLM_F_REQUEST | NLM_F_ACK);
        m.str(WGDEVICE_A_IFNAME, ifname)
            .begin(WGDEVICE_A_PEERS)
            .begin(0)
            .attr(WGPEER_A_PUBLIC_KEY, &public.0)
            .attr(WGPEER_A_FLAGS, &WGPEER_F_REMOVE_ME.to_ne_bytes());
        Ok(self.genl.request(&m.finish(), seq, "remove peer")?)
    }

    /// The device and its peers as the kernel has them now.
    pub fn device(&mut self, ifname: &str) -> Result<Device, WgError> {
        let (mut m, seq) = self.wg_msg(WG_CMD_GET_DEVICE, NLM_F_REQUEST | NLM_F_DUMP);
        m.str(WGDEVICE_A_IFNAME, ifname);
        let parts = self
            .genl
            .dump(&m.finish(), seq, MAX_DUMP_MSGS, "get device")?;
        let mut d = Device::default();
        for (_, p) in &parts {
            let Some(body) = p.get(4..) else { continue };
            for (t, v) in attrs(body) {
                match t {
                    WGDEVICE_A_PUBLIC_KEY => d.public = key_of(v),
                    WGDEVICE_A_LISTEN_PORT => d.listen_port = u16_of(v).unwrap_or(0),
                    WGDEVICE_A_PEERS => {
                        for (_, one) in attrs(v) {
                            if d.peers.len() >= MAX_PEERS {
                                break;
                            }
                            let Some(peer) = parse_peer(one) else {
                                continue;
                            };
                            // A peer split across two messages continues
                            // with its AllowedIPs.
                            match d.peers.iter_mut().find(|x| x.public == peer.public) {
                                Some(x) => x.allowed.extend(peer.allowed),
                                None => d.peers.push(peer),
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(d)
    }
}

fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Create WireGuard link `ifname` (if missing) with `mtu`, give it
/// `addrs` (address, prefix length; no duplicate address detection: the
/// addresses are derived from a key) and bring it up.
pub fn ensure_link(ifname: &str, mtu: u32, addrs: &[(IpAddr, u8)]) -> Result<u32, WgError> {
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(WgError::Kernel(format!("bad interface name {ifname:?}")));
    }
    let mut nl = NlSocket::open(NETLINK_ROUTE)?;
    if ifindex(ifname).is_none() {
        let seq = nl.next_seq();
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            seq,
            &[0u8; 16],
        );
        m.str(IFLA_IFNAME, ifname)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .begin(IFLA_LINKINFO)
            .str(IFLA_INFO_KIND, "wireguard")
            .end();
        nl.request(&m.finish(), seq, "create the WireGuard link")?;
    }
    let index = ifindex(ifname)
        .ok_or_else(|| WgError::Kernel(format!("{ifname} vanished after create")))?;
    // Addresses (replace: idempotent).
    for (addr, prefix_len) in addrs {
        let seq = nl.next_seq();
        let (fam, bytes) = match addr {
            IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
        };
        let mut fixed = vec![fam as u8, *prefix_len, 0, 0];
        fixed.extend_from_slice(&index.to_ne_bytes());
        let mut m = Msg::new(
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            seq,
            &fixed,
        );
        m.attr(IFA_LOCAL, &bytes)
            .attr(IFA_ADDRESS, &bytes)
            .attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
        nl.request(&m.finish(), seq, &format!("overlay address {addr}"))?;
    }
    // Up.
    let seq = nl.next_seq();
    let mut fixed = vec![0u8; 16];
    fixed[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    fixed[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    fixed[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    let m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, &fixed);
    nl.request(&m.finish(), seq, "bring the WireGuard link up")?;
    Ok(index)
}

/// Route the host `dst` through link `ifname` (main table, replacing any
/// route to exactly `dst`), or remove that route (`add = false`; a missing
/// route is not an error).
pub fn host_route(ifname: &str, dst: IpAddr, add: bool) -> Result<(), WgError> {
    let index = ifindex(ifname).ok_or_else(|| WgError::Kernel(format!("no link {ifname}")))?;
    let mut nl = NlSocket::open(NETLINK_ROUTE)?;
    let seq = nl.next_seq();
    let (fam, len, bytes) = match dst {
        IpAddr::V4(a) => (libc::AF_INET, 32u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6, 128u8, a.octets().to_vec()),
    };
    let fixed = [
        fam as u8,
        len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_LINK,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    let (ty, flags) = if add {
        (
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
    };
    let mut m = Msg::new(ty, flags, seq, &fixed);
    m.attr(RTA_DST, &bytes).attr(RTA_OIF, &index.to_ne_bytes());
    match nl.request(&m.finish(), seq, &format!("route {dst} via {ifname}")) {
        Err(e) if !add && e.errno() == Some(libc::ESRCH) => Ok(()),
        r => Ok(r?),
    }
}

/// Delete link `ifname` if it exists.
pub fn delete_link(ifname: &str) -> Result<(), WgError> {
    let Some(index) = ifindex(ifname) else {
        return Ok(());
    };
    let mut nl = NlSocket::open(NETLINK_ROUTE)?;
    let seq = nl.next_seq();
    let mut fixed = vec![0u8; 16];
    fixed[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    let m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, &fixed);
    Ok(nl.request(&m.finish(), seq, "delete the WireGuard link")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuvol_rawnl::messages;

    #[test]
    fn sockaddrs_round_trip() {
        for a in ["10.1.2.3:51820", "[fd00::1]:7"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(parse_sockaddr(&sockaddr(&a)), Some(a));
        }
        assert_eq!(parse_sockaddr(&[1, 2]), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }

    #[test]
    fn peer_message_parses_back() {
        // Build a peer the way the kernel nests it and parse it.
        let mut m = Msg::new(0, 0, 0, &[]);
        m.attr(WGPEER_A_PUBLIC_KEY, &[7; 32])
            .attr(
                WGPEER_A_ENDPOINT,
                &sockaddr(&"192.0.2.1:4000".parse().unwrap()),
            )
            .attr(WGPEER_A_LAST_HANDSHAKE_TIME, &{
                let mut v = 1_700_000_000i64.to_ne_bytes().to_vec();
                v.extend_from_slice(&5i64.to_ne_bytes());
                v
            })
            .attr(WGPEER_A_RX_BYTES, &100u64.to_ne_bytes())
            .begin(WGPEER_A_ALLOWEDIPS)
            .begin(0)
            .attr(WGALLOWEDIP_A_FAMILY, &(libc::AF_INET6 as u16).to_ne_bytes())
            .attr(
                WGALLOWEDIP_A_IPADDR,
                &"fd00::9".parse::<Ipv6Addr>().unwrap().octets(),
            )
            .attr(WGALLOWEDIP_A_CIDR_MASK, &[128])
            .end()
            .end();
        let b = m.finish();
        let p = parse_peer(&b[16..]).expect("peer");
        assert_eq!(p.public, Key([7; 32]));
        assert_eq!(p.endpoint, Some("192.0.2.1:4000".parse().unwrap()));
        assert_eq!(p.rx_bytes, 100);
        assert_eq!(p.allowed, vec![("fd00::9".parse().unwrap(), 128)]);
        assert!(p.last_handshake.is_some());
        // Truncated input: no panic, no key, no peer.
        for cut in 0..b.len() - 16 {
            let _ = parse_peer(&b[16..16 + cut]);
        }
        assert!(parse_peer(&[]).is_none());
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(messages(&[40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(messages(&[]).unwrap().is_empty());
        let _ = attrs(&[255, 255, 1, 0, 0]);
    }

    #[test]
    fn no_wireguard_is_a_clear_error_or_works() {
        // This host's kernel may lack WireGuard: either way no panic, and a
        // missing link is an error that names what failed.
        match Wg::open() {
            Ok(mut wg) => {
                let e = wg.device("nvwg-missing0").unwrap_err().to_string();
                assert!(e.contains("get device"), "{e}");
            }
            Err(e) => assert!(e.to_string().contains("wireguard"), "{e}"),
        }
    }
}
