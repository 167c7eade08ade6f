//! Interfaces (getifaddrs) and per-interface multicast sockets.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

pub const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
pub const MDNS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);
pub const MDNS_PORT: u16 = 5353;

/// One usable interface and its addresses.
#[derive(Debug, Clone, Default)]
pub struct IfInfo {
    pub name: String,
    pub index: u32,
    pub up_multicast: bool,
    pub loopback: bool,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// All interfaces with their addresses.
pub fn interfaces() -> io::Result<Vec<IfInfo>> {
    let mut out: Vec<IfInfo> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let pos = match out.iter().position(|i| i.name == name) {
            Some(p) => p,
            None => {
                let c = std::ffi::CString::new(name.clone()).unwrap_or_default();
                // SAFETY: c is a valid C string.
                let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
                out.push(IfInfo {
                    name,
                    index,
                    ..IfInfo::default()
                });
                out.len() - 1
            }
        };
        let i = &mut out[pos];
        let f = ifa.ifa_flags;
        i.up_multicast = f & libc::IFF_UP as u32 != 0
            && f & libc::IFF_RUNNING as u32 != 0
            && f & libc::IFF_MULTICAST as u32 != 0;
        i.loopback = f & libc::IFF_LOOPBACK as u32 != 0;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: family is AF_INET so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                i.v4.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            libc::AF_INET6 => {
                // SAFETY: family is AF_INET6 so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                i.v6.push(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
            }
            _ => {}
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Is `i` served under `filter` (`None`: up, multicast, non-loopback)? It
/// needs an IPv4 or IPv6 address either way. Without a filter, an
/// interface with only IPv6 addresses that is enslaved to a bridge or bond
/// (container veths, bridge ports: they all have link-local addresses) is
/// left to its master.
pub fn eligible(i: &IfInfo, filter: Option<&[String]>) -> bool {
    match filter {
        Some(names) => names.contains(&i.name) && (!i.v4.is_empty() || !i.v6.is_empty()),
        None => {
            i.up_multicast
                && !i.loopback
                && (!i.v4.is_empty() || (!i.v6.is_empty() && !enslaved(&i.name)))
        }
    }
}

/// Does the interface have a master (bridge port, bond slave)?
fn enslaved(name: &str) -> bool {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return false;
    }
    std::path::Path::new("/sys/class/net")
        .join(name)
        .join("master")
        .exists()
}

/// A UDP socket on 0.0.0.0:5353 bound to one device, joined to 224.0.0.251
/// there, sending multicast out of it with TTL 255 and no loopback.
pub fn mdns_socket(i: &IfInfo) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind_device(Some(i.name.as_bytes()))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    s.join_multicast_v4_n(&MDNS_V4, &InterfaceIndexOrAddress::Index(i.index))?;
    set_multicast_if_index(&s, i.index)?;
    s.set_multicast_loop_v4(false)?;
    s.set_multicast_ttl_v4(255)?;
    s.set_ttl_v4(255)?;
    // the received TTL gives the hop count (RFC 6762 §11: sent with 255)
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv4RecvTtl, &true);
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The IPv6 twin: `[::]:5353` (`IPV6_V6ONLY`) bound to one device, joined
/// to ff02::fb there, multicast out of it with hop limit 255, no loopback.
pub fn mdns_socket_v6(i: &IfInfo) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind_device(Some(i.name.as_bytes()))?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, MDNS_PORT, 0, 0)).into())?;
    s.join_multicast_v6(&MDNS_V6, i.index)?;
    s.set_multicast_if_v6(i.index)?;
    s.set_multicast_loop_v6(false)?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv6RecvHopLimit, &true);
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// One non-blocking `recvmsg`: length, source and the IP TTL / IPv6 hop
/// limit the kernel reported (`None` if it did not).
pub fn recv_with_ttl(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(i32, i32);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut ttl = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) = c {
                ttl = u8::try_from(t).ok();
            }
        }
    }
    let from = msg.address.and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    });
    match from {
        Some(f) => Ok((msg.bytes, f, ttl)),
        None => Err(io::Error::other("datagram without a source address")),
    }
}

/// IP_MULTICAST_IF by interface index (`ip_mreqn` with no address), so the
/// source address follows the interface's addresses as they change.
fn set_multicast_if_index(s: &Socket, index: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    // SAFETY: setsockopt with a properly sized, initialised ip_mreqn.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Is `ip` one of `i`'s addresses?
pub fn is_own(i: &IfInfo, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => i.v4.contains(&a),
        IpAddr::V6(a) => i.v6.contains(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_only_interfaces_are_eligible() {
        let mut i = IfInfo {
            name: "nuvol-test-none0".into(),
            index: 99,
            up_multicast: true,
            loopback: false,
            v4: Vec::new(),
            v6: Vec::new(),
        };
        assert!(!eligible(&i, None), "no address at all");
        i.v6.push("fe80::1".parse().unwrap());
        assert!(eligible(&i, None));
        assert!(eligible(&i, Some(&["nuvol-test-none0".to_string()])));
        assert!(!eligible(&i, Some(&["eth0".to_string()])));
        i.loopback = true;
        assert!(!eligible(&i, None));
    }
}
