//! The few nf_tables netlink messages nuvol needs, written by hand: one
//! table (`ip nuvol`) replaced atomically in a single batch, a NAT
//! postrouting chain that masquerades the container subnet, and a NAT
//! prerouting chain with one DNAT rule per published port.
//!
//! Why by hand: the box has no `nft` binary and the agent is one static
//! musl binary, so libnftnl is out; `rustables` needs bindgen + libclang at
//! build time. The wire format is small and stable (see the kernel's
//! `include/uapi/linux/netfilter/nf_tables.h`); what is used here is about
//! a dozen attribute types.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::Protocol;

/// The one table nuvol owns; nothing else on the box is touched.
pub(crate) const TABLE: &str = "nuvol";

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFPROTO_IPV4: u8 = 2;

// Attribute numbers (nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;

const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_NAT_DNAT: u32 = 1;

/// One DNAT: `proto` traffic to `host_port` arriving on any interface but
/// the bridge goes to `addr:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dnat {
    pub proto: Protocol,
    pub host_port: u16,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// What the table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ruleset {
    pub subnet: Ipv4Net,
    pub bridge: String,
    pub dnat: Vec<Dnat>,
}

impl Ruleset {
    /// Rules the kernel should list for this ruleset.
    pub fn rule_count(&self) -> usize {
        1 + self.dnat.len()
    }
}

fn nerr(what: &str, e: impl std::fmt::Display) -> crate::NetError {
    crate::NetError::Nft(format!("{what}: {e}"))
}

/// A netlink attribute writer.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn raw(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = 4 + payload.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.raw(ty, &b)
    }
    fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.raw(ty, &v.to_be_bytes())
    }
    fn nest(&mut self, ty: u16, inner: &Attrs) -> &mut Self {
        self.raw(ty | NLA_F_NESTED, &inner.0)
    }
    fn data(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        let mut v = Attrs::default();
        v.raw(NFTA_DATA_VALUE, value);
        self.nest(ty, &v)
    }
}

fn expr(name: &str, data: Option<Attrs>) -> Attrs {
    let mut e = Attrs::default();
    e.str(NFTA_EXPR_NAME, name);
    if let Some(d) = data {
        e.nest(NFTA_EXPR_DATA, &d);
    }
    e
}

fn payload(base: u32, offset: u32, len: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, NFT_REG_1)
        .be32(2, base)
        .be32(3, offset)
        .be32(4, len);
    expr("payload", Some(d))
}

fn meta(key: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(2, key).be32(1, NFT_REG_1);
    expr("meta", Some(d))
}

fn cmp(op: u32, value: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, NFT_REG_1).be32(2, op).data(3, value);
    expr("cmp", Some(d))
}

fn bitwise_mask(mask: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, NFT_REG_1)
        .be32(2, NFT_REG_1)
        .be32(3, mask.len() as u32)
        .data(4, mask)
        .data(5, &vec![0u8; mask.len()]);
    expr("bitwise", Some(d))
}

fn immediate(reg: u32, value: &[u8]) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, reg).data(2, value);
    expr("immediate", Some(d))
}

fn ifname(name: &str) -> [u8; 16] {
    let mut b = [0u8; 16];
    let n = name.len().min(15);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

fn dnat_to(addr_reg: u32, port_reg: u32) -> Attrs {
    let mut d = Attrs::default();
    d.be32(1, NFT_NAT_DNAT)
        .be32(2, NFPROTO_IPV4 as u32)
        .be32(3, addr_reg)
        .be32(5, port_reg);
    expr("nat", Some(d))
}

/// A netlink message buffer for one batch.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    first_seq: u32,
}

impl Batch {
    fn new(seq: u32) -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            seq,
            first_seq: seq,
        };
        b.msg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            &Attrs::default(),
        );
        b
    }

    fn msg(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, attrs: &Attrs) {
        let len = 16 + 4 + attrs.0.len();
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(&attrs.0);
        self.seq = self.seq.wrapping_add(1);
    }

    fn nft(&mut self, cmd: u16, flags: u16, attrs: &Attrs) {
        self.msg(
            (NFNL_SUBSYS_NFTABLES << 8) | cmd,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            NFPROTO_IPV4,
            0,
            attrs,
        );
    }

    fn finish(mut self) -> (Vec<u8>, std::ops::Range<u32>) {
        // Acks are asked for the messages between begin and end.
        let acked = self.first_seq + 1..self.seq;
        self.msg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFNL_SUBSYS_NFTABLES,
            &Attrs::default(),
        );
        (self.buf, acked)
    }
}

fn table_attrs() -> Attrs {
    let mut a = Attrs::default();
    a.str(NFTA_TABLE_NAME, TABLE);
    a
}

fn chain(name: &str, hook: u32, priority: i32) -> Attrs {
    let mut h = Attrs::default();
    h.be32(NFTA_HOOK_HOOKNUM, hook)
        .be32(NFTA_HOOK_PRIORITY, priority as u32);
    let mut a = Attrs::default();
    a.str(NFTA_CHAIN_TABLE, TABLE)
        .str(NFTA_CHAIN_NAME, name)
        .nest(NFTA_CHAIN_HOOK, &h)
        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .str(NFTA_CHAIN_TYPE, "nat");
    a
}

fn rule(chain: &str, exprs: &[Attrs]) -> Attrs {
    let mut list = Attrs::default();
    for e in exprs {
        list.nest(NFTA_LIST_ELEM, e);
    }
    let mut a = Attrs::default();
    a.str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, chain)
        .nest(NFTA_RULE_EXPRESSIONS, &list);
    a
}

/// The batch that replaces the table with `rs` (add, delete, re-create:
/// the standard atomic replace; the add makes the delete valid when the
/// table does not exist yet).
fn replace_batch(rs: &Ruleset, seq: u32) -> (Vec<u8>, std::ops::Range<u32>) {
    let mut b = Batch::new(seq);
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs());
    b.nft(NFT_MSG_DELTABLE, 0, &table_attrs());
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs());
    b.nft(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        &chain("postrouting", NF_INET_POST_ROUTING, 100),
    );
    b.nft(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        &chain("prerouting", NF_INET_PRE_ROUTING, -100),
    );
    // ip saddr <subnet> oifname != <bridge> masquerade
    let net = rs.subnet.network().octets();
    let mask = rs.subnet.netmask().octets();
    b.nft(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        &rule(
            "postrouting",
            &[
                payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
                bitwise_mask(&mask),
                cmp(NFT_CMP_EQ, &net),
                meta(NFT_META_OIFNAME),
                cmp(NFT_CMP_NEQ, &ifname(&rs.bridge)),
                expr("masq", None),
            ],
        ),
    );
    // iifname != <bridge> meta l4proto <p> th dport <host_port> dnat to <addr>:<port>
    for d in &rs.dnat {
        let proto = match d.proto {
            Protocol::Tcp => 6u8,
            Protocol::Udp => 17u8,
        };
        b.nft(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            &rule(
                "prerouting",
                &[
                    meta(NFT_META_IIFNAME),
                    cmp(NFT_CMP_NEQ, &ifname(&rs.bridge)),
                    meta(NFT_META_L4PROTO),
                    cmp(NFT_CMP_EQ, &[proto]),
                    payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
                    cmp(NFT_CMP_EQ, &d.host_port.to_be_bytes()),
                    immediate(NFT_REG_1, &d.addr.octets()),
                    immediate(NFT_REG_2, &d.port.to_be_bytes()),
                    dnat_to(NFT_REG_1, NFT_REG_2),
                ],
            ),
        );
    }
    b.finish()
}

fn delete_batch(seq: u32) -> (Vec<u8>, std::ops::Range<u32>) {
    let mut b = Batch::new(seq);
    // Add first so the delete never fails on a missing table.
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, &table_attrs());
    b.nft(NFT_MSG_DELTABLE, 0, &table_attrs());
    b.finish()
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open() -> Result<Socket, crate::NetError> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(nerr("socket", io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: valid fd and a properly sized timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Ok(Socket { fd, seq })
    }

    fn send(&self, buf: &[u8]) -> Result<(), crate::NetError> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd, buffer and address.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(nerr("send", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Receive messages, calling `f(type, seq, payload)` for each, until
    /// `done(state)` says so. Errors from the kernel end it with Err.
    fn recv_until(
        &self,
        mut f: impl FnMut(u16, u32, &[u8]) -> Result<bool, crate::NetError>,
    ) -> Result<(), crate::NetError> {
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if std::time::Instant::now() > deadline {
                return Err(nerr("receive", "no answer from the kernel"));
            }
            // SAFETY: valid fd and buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(nerr("receive", io::Error::last_os_error()));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < 16 || len > rest.len() {
                    return Err(nerr("receive", "malformed netlink message"));
                }
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if f(ty, seq, &rest[16..len])? {
                    return Ok(());
                }
                let advance = ((len + 3) & !3).min(rest.len());
                rest = &rest[advance..];
            }
        }
    }

    /// Send a batch and wait for an ack of every message in it.
    fn transact(
        &mut self,
        (buf, acked): (Vec<u8>, std::ops::Range<u32>),
    ) -> Result<(), crate::NetError> {
        self.seq = acked.end.wrapping_add(1);
        self.send(&buf)?;
        let mut pending = acked.len();
        self.recv_until(|ty, seq, body| {
            if ty != NLMSG_ERROR || !acked.contains(&seq) {
                return Ok(false);
            }
            let code = body
                .get(..4)
                .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
            if code != 0 {
                return Err(nerr(
                    "the kernel refused the nuvol table",
                    io::Error::from_raw_os_error(-code),
                ));
            }
            pending -= 1;
            Ok(pending == 0)
        })
    }

    /// Replace the `ip nuvol` table with `rs`, atomically.
    pub fn replace(&mut self, rs: &Ruleset) -> Result<(), crate::NetError> {
        let b = replace_batch(rs, self.seq);
        self.transact(b)
    }

    /// Delete the `ip nuvol` table (no error if it is not there).
    pub fn delete(&mut self) -> Result<(), crate::NetError> {
        let b = delete_batch(self.seq);
        self.transact(b)
    }

    /// How many rules the `ip nuvol` table holds; `None` if it does not exist.
    pub fn rule_count(&mut self) -> Result<Option<usize>, crate::NetError> {
        // Does the table exist?
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(2);
        self.send(&request(
            NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            &table_attrs(),
        ))?;
        let mut exists = None;
        self.recv_until(|ty, s, body| {
            if s != seq {
                return Ok(false);
            }
            if ty == NLMSG_ERROR {
                let code = body
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code == -libc::ENOENT {
                    exists = Some(false);
                } else if code != 0 {
                    return Err(nerr("get table", io::Error::from_raw_os_error(-code)));
                } else if exists.is_none() {
                    exists = Some(true);
                }
                return Ok(true);
            }
            exists = Some(true);
            Ok(false)
        })?;
        if exists != Some(true) {
            return Ok(None);
        }
        let mut attrs = Attrs::default();
        attrs.str(NFTA_RULE_TABLE, TABLE);
        self.send(&request(
            NFT_MSG_GETRULE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq + 1,
            &attrs,
        ))?;
        let mut count = 0;
        self.recv_until(|ty, s, body| {
            if s != seq + 1 {
                return Ok(false);
            }
            match ty {
                NLMSG_DONE => Ok(true),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code == 0 {
                        Ok(true)
                    } else {
                        Err(nerr("list rules", io::Error::from_raw_os_error(-code)))
                    }
                }
                _ => {
                    // Dumps may ignore the table filter on old kernels:
                    // count only rules of our table.
                    if body.len() > 4 && find_str_attr(&body[4..], NFTA_RULE_TABLE) == Some(TABLE) {
                        count += 1;
                    }
                    Ok(false)
                }
            }
        })?;
        Ok(Some(count))
    }
}

/// One nf_tables request outside a batch (reads).
fn request(cmd: u16, flags: u16, seq: u32, attrs: &Attrs) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + attrs.0.len());
    b.extend_from_slice(&((20 + attrs.0.len()) as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | cmd).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[NFPROTO_IPV4, 0, 0, 0]);
    b.extend_from_slice(&attrs.0);
    b
}

/// The string value of top-level attribute `ty` in `attrs`.
fn find_str_attr(mut attrs: &[u8], ty: u16) -> Option<&str> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let t = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if t == ty {
            let v = &attrs[4..len];
            let v = v.strip_suffix(&[0]).unwrap_or(v);
            return std::str::from_utf8(v).ok();
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut a = Attrs::default();
        a.str(1, "nuvol");
        // 4 header + 6 bytes ("nuvol\0"), padded to 12.
        assert_eq!(a.0.len(), 12);
        assert_eq!(u16::from_ne_bytes([a.0[0], a.0[1]]), 10);
        let mut outer = Attrs::default();
        outer.nest(4, &a);
        assert_eq!(
            u16::from_ne_bytes([outer.0[2], outer.0[3]]),
            4 | NLA_F_NESTED
        );
        assert_eq!(find_str_attr(&a.0, 1), Some("nuvol"));
        assert_eq!(find_str_attr(&a.0, 2), None);
        // Truncated or lying lengths are not followed.
        assert_eq!(find_str_attr(&[40, 0, 1, 0, b'x'], 1), None);
    }

    #[test]
    fn batch_acks_cover_the_messages_between_begin_and_end() {
        let rs = Ruleset {
            subnet: "10.88.0.0/24".parse().unwrap(),
            bridge: "nuvol0".into(),
            dnat: vec![Dnat {
                proto: Protocol::Tcp,
                host_port: 8080,
                addr: "10.88.0.2".parse().unwrap(),
                port: 80,
            }],
        };
        let (buf, acked) = replace_batch(&rs, 100);
        // begin, newtable, deltable, newtable, 2 chains, masq rule, 1 dnat, end.
        assert_eq!(acked, 101..108);
        let mut n = 0;
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert_eq!(len % 4, 0);
            rest = &rest[len..];
            n += 1;
        }
        assert_eq!(n, 9);
        assert_eq!(rs.rule_count(), 2);
    }
}
