//! DHCPv4 client (RFC 2131), one task per interface.
//!
//! States: INIT → SELECTING → REQUESTING → BOUND → RENEWING (T1) →
//! REBINDING (T2) → lease expiry back to INIT; INIT-REBOOT after a carrier
//! return or a restart with a saved lease. Retransmissions back off
//! exponentially (2, 4, 8, 16 s, ±0.5 s jitter, capped at 16 s while
//! looking for a server); NAK always restarts from INIT.
//!
//! The socket is a UDP socket on port 68 bound to the device
//! (`SO_BINDTODEVICE`) with `SO_BROADCAST`, so it works before the link has
//! an address: requests carry the broadcast flag and servers answer to
//! 255.255.255.255.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable, Encodable};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};

/// A lease as granted by the server, with wall-clock times (Unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Ipv4Net,
    pub server: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub mtu: Option<u16>,
    /// Option 121, `(destination, gateway)`.
    pub classless_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub lease_seconds: u32,
    pub obtained: u64,
    pub renew_at: u64,
    pub rebind_at: u64,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpState {
    Init,
    Selecting,
    Requesting,
    InitReboot,
    Bound,
    Renewing,
    Rebinding,
    NoCarrier,
    Stopped,
}

/// What the client tells the manager.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub ifindex: u32,
    pub state: DhcpState,
    pub lease: Option<Lease>,
}

/// What the manager tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Control {
    pub carrier: bool,
    /// Stop; send a RELEASE first when true.
    pub stop: Option<bool>,
}

pub(crate) struct Client {
    pub ifindex: u32,
    pub ifname: String,
    pub mac: [u8; 6],
    pub hostname: String,
    pub lease_file: PathBuf,
    pub reports: mpsc::UnboundedSender<Report>,
    pub control: watch::Receiver<Control>,
}

enum Outcome {
    Reply(v4::Message),
    Timeout,
    CarrierLost,
    Stop(bool),
}

const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
const MAX_PACKET: usize = 1500;

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Monotonic deadline for a wall-clock time.
fn deadline_for(unix: u64) -> Instant {
    let now = now_unix();
    Instant::now() + Duration::from_secs(unix.saturating_sub(now))
}

fn jitter(base: Duration) -> Duration {
    let j: u64 = rand_u32() as u64 % 1000;
    (base + Duration::from_millis(j)).saturating_sub(Duration::from_millis(500))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // getrandom(2) never fails for 4 bytes once the pool is initialised; a
    // failure only makes the xid and jitter predictable.
    // SAFETY: b is a valid 4-byte buffer.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    u32::from_ne_bytes(b)
}

/// UDP port 68 on one device, broadcast allowed.
pub(crate) fn open_socket(ifname: &str) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_BROADCAST] {
        // SAFETY: valid fd, pointer to a c_int of the given size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad ifname"));
    }
    // SAFETY: valid fd, name buffer of the given length.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let std_sock = std::net::UdpSocket::from(fd);
    bind_port_68(&std_sock)?;
    UdpSocket::from_std(std_sock)
}

fn bind_port_68(s: &std::net::UdpSocket) -> io::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 68u16.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: valid fd and a sockaddr_in of the given size.
    let r = unsafe {
        libc::bind(
            s.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turn an ACK into a lease. `None` if the ACK lacks what a lease needs.
pub(crate) fn lease_from_ack(ack: &v4::Message, now: u64) -> Option<Lease> {
    let opts = ack.opts();
    let yiaddr = ack.yiaddr();
    if yiaddr.is_unspecified() || yiaddr.is_broadcast() || yiaddr.is_multicast() {
        return None;
    }
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => return None,
    };
    let lease_seconds = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => (*t).max(10),
        _ => return None,
    };
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => {
            let bits = u32::from(*m);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return None;
            }
            bits.leading_ones() as u8
        }
        // RFC 2131 leaves the mask optional; fall back to the class-less /24
        // guess most clients use.
        _ => 24,
    };
    let address = Ipv4Net::new(yiaddr, prefix).ok()?;
    let routers = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.iter().take(8).copied().collect(),
        _ => Vec::new(),
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(r)) => r.iter().take(8).copied().collect(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d))
            if !d.is_empty()
                && d.len() <= 253
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
        {
            Some(d.clone())
        }
        _ => None,
    };
    let mtu = match opts.get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(m)) if (576..=9216).contains(m) => Some(*m),
        _ => None,
    };
    let classless_routes = match opts.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) => r.iter().take(32).cloned().collect(),
        _ => Vec::new(),
    };
    let t1 = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) if *t < lease_seconds => *t,
        _ => lease_seconds / 2,
    };
    let t2 = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) if *t < lease_seconds && *t > t1 => *t,
        _ => (lease_seconds as u64 * 7 / 8) as u32,
    };
    let t2 = t2.max(t1);
    Some(Lease {
        address,
        server,
        routers,
        dns,
        domain,
        mtu,
        classless_routes,
        lease_seconds,
        obtained: now,
        renew_at: now + u64::from(t1),
        rebind_at: now + u64::from(t2),
        expires_at: now + u64::from(lease_seconds),
    })
}

impl Client {
    fn report(&self, state: DhcpState, lease: Option<&Lease>) {
        let _ = self.reports.send(Report {
            ifindex: self.ifindex,
            state,
            lease: lease.cloned(),
        });
    }

    fn load_lease(&self) -> Option<Lease> {
        let text = crate::fsutil::read_bounded(&self.lease_file, 64 * 1024).ok()?;
        let lease: Lease = serde_json::from_str(&text).ok()?;
        (lease.expires_at > now_unix() + 5).then_some(lease)
    }

    fn save_lease(&self, lease: Option<&Lease>) {
        let r = match lease {
            Some(l) => serde_json::to_vec_pretty(l)
                .map_err(io::Error::other)
                .and_then(|b| {
                    nuvol_durable::write_atomic(&self.lease_file, &b, nuvol_durable::Mode::Public)
                }),
            None => match std::fs::remove_file(&self.lease_file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = r {
            tracing::warn!(iface = %self.ifname, "cannot save DHCP lease: {e}");
        }
    }

    fn base_message(&self, xid: u32, mtype: MessageType, broadcast: bool) -> v4::Message {
        let mut m = v4::Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        if broadcast {
            m.set_flags(v4::Flags::default().set_broadcast());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(mtype));
        let mut cid = vec![1u8];
        cid.extend_from_slice(&self.mac);
        o.insert(DhcpOption::ClientIdentifier(cid));
        o.insert(DhcpOption::MaxMessageSize(MAX_PACKET as u16));
        if mtype != MessageType::Release {
            o.insert(DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
                OptionCode::DomainName,
                OptionCode::InterfaceMtu,
                OptionCode::ClasslessStaticRoute,
                OptionCode::AddressLeaseTime,
                OptionCode::Renewal,
                OptionCode::Rebinding,
            ]));
            if !self.hostname.is_empty() && self.hostname.len() <= 63 {
                o.insert(DhcpOption::Hostname(self.hostname.clone()));
            }
        }
        m
    }

    /// Send `msg` to `dest` and wait until `deadline` for a reply with our
    /// xid and hardware address, retransmitting with exponential backoff.
    async fn exchange(
        &mut self,
        sock: &UdpSocket,
        msg: &v4::Message,
        dest: SocketAddrV4,
        deadline: Instant,
        (first_wait, max_wait): (Duration, Duration),
        accept: &[MessageType],
    ) -> Outcome {
        let bytes = match msg.to_vec() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(iface = %self.ifname, "cannot encode DHCP message: {e}");
                return Outcome::Timeout;
            }
        };
        let mut wait = first_wait;
        let mut buf = vec![0u8; MAX_PACKET + 64];
        loop {
            if let Err(e) = sock.send_to(&bytes, dest).await {
                tracing::debug!(iface = %self.ifname, "DHCP send to {dest}: {e}");
            }
            let resend = (Instant::now() + jitter(wait)).min(deadline);
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, _from)) = r else { continue };
                        let Ok(reply) = v4::Message::from_bytes(&buf[..n.min(buf.len())]) else { continue };
                        if reply.opcode() != v4::Opcode::BootReply
                            || reply.xid() != msg.xid()
                            || reply.chaddr().get(..6) != Some(&self.mac[..])
                        {
                            continue;
                        }
                        match reply.opts().msg_type() {
                            Some(t) if accept.contains(&t) => return Outcome::Reply(reply),
                            _ => continue,
                        }
                    }
                    _ = sleep_until(resend) => break,
                    c = self.control.changed() => {
                        let c = match c { Ok(()) => *self.control.borrow_and_update(), Err(_) => return Outcome::Stop(false) };
                        if let Some(release) = c.stop { return Outcome::Stop(release); }
                        if !c.carrier { return Outcome::CarrierLost; }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Outcome::Timeout;
            }
            wait = (wait * 2).min(max_wait);
        }
    }

    /// Wait until `until`, a carrier loss or a stop.
    async fn idle(&mut self, until: Instant) -> Outcome {
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Outcome::Timeout,
                c = self.control.changed() => {
                    let c = match c { Ok(()) => *self.control.borrow_and_update(), Err(_) => return Outcome::Stop(false) };
                    if let Some(release) = c.stop { return Outcome::Stop(release); }
                    if !c.carrier { return Outcome::CarrierLost; }
                }
            }
        }
    }

    async fn wait_carrier(&mut self, lease: &mut Option<Lease>) -> Option<bool> {
        loop {
            let c = *self.control.borrow_and_update();
            if let Some(release) = c.stop {
                return Some(release);
            }
            if c.carrier {
                return None;
            }
            let expiry = lease.as_ref().map(|l| deadline_for(l.expires_at));
            tokio::select! {
                r = self.control.changed() => if r.is_err() { return Some(false) },
                _ = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    tracing::info!(iface = %self.ifname, "DHCP lease expired while the link was down");
                    *lease = None;
                    self.save_lease(None);
                    self.report(DhcpState::NoCarrier, None);
                }
            }
        }
    }

    pub async fn run(mut self) {
        let sock = match open_socket(&self.ifname) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(iface = %self.ifname, "cannot open DHCP socket: {e}");
                self.report(DhcpState::Stopped, None);
                return;
            }
        };
        let mut lease = self.load_lease();
        let mut state = if lease.is_some() {
            DhcpState::InitReboot
        } else {
            DhcpState::Init
        };
        let release = loop {
            if !self.control.borrow().carrier || self.control.borrow().stop.is_some() {
                self.report(DhcpState::NoCarrier, lease.as_ref());
                if let Some(r) = self.wait_carrier(&mut lease).await {
                    break r;
                }
                state = if lease.is_some() {
                    DhcpState::InitReboot
                } else {
                    DhcpState::Init
                };
            }
            if let Some(l) = &lease {
                if now_unix() >= l.expires_at {
                    tracing::warn!(iface = %self.ifname, address = %l.address, "DHCP lease expired");
                    lease = None;
                    self.save_lease(None);
                    state = DhcpState::Init;
                }
            }
            let outcome = match state {
                DhcpState::Init | DhcpState::Selecting => {
                    if lease.is_some() {
                        lease = None;
                        self.save_lease(None);
                    }
                    self.report(DhcpState::Selecting, None);
                    let xid = rand_u32();
                    let msg = self.base_message(xid, MessageType::Discover, true);
                    let far = Instant::now() + Duration::from_secs(3600 * 24 * 365);
                    match self
                        .exchange(
                            &sock,
                            &msg,
                            BROADCAST,
                            far,
                            (Duration::from_secs(2), Duration::from_secs(16)),
                            &[MessageType::Offer],
                        )
                        .await
                    {
                        Outcome::Reply(offer) => {
                            let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                                Some(DhcpOption::ServerIdentifier(s)) => *s,
                                _ => continue,
                            };
                            let yiaddr = offer.yiaddr();
                            tracing::info!(iface = %self.ifname, %yiaddr, %server, "DHCP offer");
                            self.report(DhcpState::Requesting, None);
                            let mut req = self.base_message(xid, MessageType::Request, true);
                            req.opts_mut()
                                .insert(DhcpOption::RequestedIpAddress(yiaddr));
                            req.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                            let until = Instant::now() + Duration::from_secs(12);
                            self.exchange(
                                &sock,
                                &req,
                                BROADCAST,
                                until,
                                (Duration::from_secs(2), Duration::from_secs(8)),
                                &[MessageType::Ack, MessageType::Nak],
                            )
                            .await
                        }
                        o => o,
                    }
                }
                DhcpState::InitReboot => {
                    let Some(l) = lease.clone() else {
                        state = DhcpState::Init;
                        continue;
                    };
                    self.report(DhcpState::InitReboot, Some(&l));
                    let mut req = self.base_message(rand_u32(), MessageType::Request, true);
                    req.opts_mut()
                        .insert(DhcpOption::RequestedIpAddress(l.address.addr()));
                    let until = Instant::now() + Duration::from_secs(6);
                    let o = self
                        .exchange(
                            &sock,
                            &req,
                            BROADCAST,
                            until,
                            (Duration::from_secs(1), Duration::from_secs(4)),
                            &[MessageType::Ack, MessageType::Nak],
                        )
                        .await;
                    if let Outcome::Timeout = o {
                        // No answer: keep using the lease until its timers say
                        // otherwise (RFC 2131 3.7).
                        tracing::info!(iface = %self.ifname, "no answer to INIT-REBOOT; keeping the lease");
                        state = DhcpState::Bound;
                        continue;
                    }
                    o
                }
                DhcpState::Bound => {
                    let Some(l) = lease.clone() else {
                        state = DhcpState::Init;
                        continue;
                    };
                    self.report(DhcpState::Bound, Some(&l));
                    match self.idle(deadline_for(l.renew_at)).await {
                        Outcome::Timeout => {
                            state = DhcpState::Renewing;
                            continue;
                        }
                        o => o,
                    }
                }
                DhcpState::Renewing | DhcpState::Rebinding => {
                    let Some(l) = lease.clone() else {
                        state = DhcpState::Init;
                        continue;
                    };
                    let renewing = state == DhcpState::Renewing;
                    self.report(state, Some(&l));
                    let mut req = self.base_message(rand_u32(), MessageType::Request, !renewing);
                    req.set_ciaddr(l.address.addr());
                    let (dest, until) = if renewing {
                        (SocketAddrV4::new(l.server, 67), deadline_for(l.rebind_at))
                    } else {
                        (BROADCAST, deadline_for(l.expires_at))
                    };
                    // RFC 2131 4.4.5 retransmits after half the remaining
                    // time (at least 60 s). On a community network a
                    // server that comes back should be found quickly, so
                    // nuvol caps the interval at 16 s (and never goes
                    // below 1 s): one small packet per 16 s per link.
                    let remaining = until.saturating_duration_since(Instant::now());
                    let first =
                        (remaining / 2).clamp(Duration::from_secs(1), Duration::from_secs(16));
                    match self
                        .exchange(
                            &sock,
                            &req,
                            dest,
                            until,
                            (first, Duration::from_secs(16)),
                            &[MessageType::Ack, MessageType::Nak],
                        )
                        .await
                    {
                        Outcome::Timeout => {
                            if renewing {
                                tracing::info!(iface = %self.ifname, "no answer to RENEW by T2; rebinding");
                                state = DhcpState::Rebinding;
                            } else {
                                tracing::warn!(iface = %self.ifname, address = %l.address, "DHCP lease expired");
                                lease = None;
                                self.save_lease(None);
                                self.report(DhcpState::Init, None);
                                state = DhcpState::Init;
                            }
                            continue;
                        }
                        o => o,
                    }
                }
                DhcpState::NoCarrier | DhcpState::Stopped | DhcpState::Requesting => {
                    state = DhcpState::Init;
                    continue;
                }
            };
            match outcome {
                Outcome::Reply(reply) => match reply.opts().msg_type() {
                    Some(MessageType::Ack) => match lease_from_ack(&reply, now_unix()) {
                        Some(new) => {
                            if lease.as_ref().map(|l| l.address) != Some(new.address) {
                                tracing::info!(iface = %self.ifname, address = %new.address, server = %new.server, seconds = new.lease_seconds, "DHCP lease obtained");
                            } else {
                                tracing::debug!(iface = %self.ifname, address = %new.address, "DHCP lease extended");
                            }
                            self.save_lease(Some(&new));
                            lease = Some(new);
                            state = DhcpState::Bound;
                        }
                        None => {
                            tracing::warn!(iface = %self.ifname, "DHCP ACK without a usable lease; starting over");
                            state = DhcpState::Init;
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    },
                    _ => {
                        tracing::warn!(iface = %self.ifname, "DHCP NAK; starting over");
                        lease = None;
                        self.save_lease(None);
                        self.report(DhcpState::Init, None);
                        state = DhcpState::Init;
                    }
                },
                Outcome::Timeout => state = DhcpState::Init,
                Outcome::CarrierLost => {
                    tracing::info!(iface = %self.ifname, "carrier lost");
                }
                Outcome::Stop(release) => break release,
            }
        };
        if let (true, Some(l)) = (release, &lease) {
            let mut msg = self.base_message(rand_u32(), MessageType::Release, false);
            msg.set_ciaddr(l.address.addr());
            msg.opts_mut()
                .insert(DhcpOption::ServerIdentifier(l.server));
            if let Ok(b) = msg.to_vec() {
                match sock.send_to(&b, SocketAddrV4::new(l.server, 67)).await {
                    Ok(_) => {
                        tracing::info!(iface = %self.ifname, address = %l.address, "DHCP lease released")
                    }
                    Err(e) => tracing::warn!(iface = %self.ifname, "DHCP RELEASE: {e}"),
                }
            }
            self.save_lease(None);
        }
        self.report(DhcpState::Stopped, None);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(3600 * 24 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(opts: &[DhcpOption]) -> v4::Message {
        let mut m = v4::Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[1, 2, 3, 4, 5, 6],
        );
        m.set_opcode(v4::Opcode::BootReply);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        for o in opts {
            m.opts_mut().insert(o.clone());
        }
        m
    }

    #[test]
    fn ack_becomes_lease_with_default_timers() {
        let m = ack(&[
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)),
            DhcpOption::AddressLeaseTime(86400),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]),
            DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 2, 3)]),
        ]);
        let bytes = m.to_vec().unwrap();
        let back = v4::Message::from_bytes(&bytes).unwrap();
        let l = lease_from_ack(&back, 1000).unwrap();
        assert_eq!(l.address.to_string(), "10.0.2.15/24");
        assert_eq!(l.routers, vec![Ipv4Addr::new(10, 0, 2, 2)]);
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(l.renew_at, 1000 + 43200);
        assert_eq!(l.rebind_at, 1000 + 75600);
        assert_eq!(l.expires_at, 1000 + 86400);
    }

    #[test]
    fn ack_without_server_or_with_bad_mask_is_refused() {
        assert!(lease_from_ack(&ack(&[DhcpOption::AddressLeaseTime(60)]), 0).is_none());
        let m = ack(&[
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)),
            DhcpOption::AddressLeaseTime(60),
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 0, 255, 0)),
        ]);
        assert!(lease_from_ack(&m, 0).is_none());
    }

    #[test]
    fn bogus_timers_are_clamped() {
        let m = ack(&[
            DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)),
            DhcpOption::AddressLeaseTime(100),
            DhcpOption::Renewal(500),
            DhcpOption::Rebinding(20),
        ]);
        let l = lease_from_ack(&m, 0).unwrap();
        assert_eq!((l.renew_at, l.rebind_at, l.expires_at), (50, 87, 100));
    }

    #[test]
    fn garbage_does_not_decode_into_a_lease() {
        for n in 0..300usize {
            let junk: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
            if let Ok(m) = v4::Message::from_bytes(&junk) {
                let _ = lease_from_ack(&m, 0);
            }
        }
    }
}
