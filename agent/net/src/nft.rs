//! nf_tables over netlink (`NETLINK_NETFILTER`), hand-built: the handful of
//! messages nuvol needs to own one table (`ip nuvol`): create it with its
//! chains and rules in one atomic batch, delete it, dump it to compare with
//! the desired state, and listen for changes made by others.
//!
//! No `nft` binary and no libnftnl: the agent is one static musl binary.
//! Messages are `nlmsghdr` + `nfgenmsg` + netlink attributes; integers in
//! nf_tables attributes are big-endian. Every reply is parsed with bounds
//! checks; a malformed reply is an error, never a panic.

use std::io;

use nuvol_rawnl::{
    attrs, errno_of, messages, Attrs, Msg, NlError, NlMsg, NlSocket, Socket, NETLINK_NETFILTER,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};

use crate::NetError;

/// The table nuvol owns; nothing else on the box is touched.
pub(crate) const TABLE: &str = "nuvol";

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;

/// `NFPROTO_IPV4`: the table's family (`ip`).
pub(crate) const FAMILY_IP: u8 = 2;

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
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

/// Netfilter hooks (`NF_INET_*`).
pub(crate) const HOOK_PREROUTING: u32 = 0;
pub(crate) const HOOK_FORWARD: u32 = 2;
pub(crate) const HOOK_OUTPUT: u32 = 3;
pub(crate) const HOOK_POSTROUTING: u32 = 4;

pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;

/// Registers (16-byte `NFT_REG_1..4`); 0 is the verdict register.
pub(crate) const REG_1: u32 = 1;
pub(crate) const REG_2: u32 = 2;

/// `NFT_META_*` keys.
pub(crate) const META_OIFNAME: u32 = 7;
pub(crate) const META_IIFNAME: u32 = 6;
pub(crate) const META_L4PROTO: u32 = 16;
/// `NFT_CT_*` keys.
pub(crate) const CT_STATE: u32 = 0;
pub(crate) const CT_STATUS: u32 = 2;
/// `NFT_PAYLOAD_*` bases.
pub(crate) const BASE_NETWORK: u32 = 1;
pub(crate) const BASE_TRANSPORT: u32 = 2;
/// `NFT_CMP_*`.
pub(crate) const CMP_EQ: u32 = 0;
pub(crate) const CMP_NEQ: u32 = 1;

/// One nf_tables expression (the subset nuvol uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Bitwise {
        reg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Cmp {
        sreg: u32,
        op: u32,
        data: Vec<u8>,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    Verdict(u32),
    /// DNAT to the address in `addr_reg` and port in `port_reg`.
    Dnat {
        addr_reg: u32,
        port_reg: u32,
    },
    Masquerade,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chain {
    pub name: &'static str,
    /// `nat` or `filter`.
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub chain: &'static str,
    pub exprs: Vec<Expr>,
    /// Shown by `nft list` as the rule's comment; also carries a hash of
    /// the rule so a dump can be compared with the desired state.
    pub comment: String,
}

/// The whole content of table `ip nuvol`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ruleset {
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
}

/// What a dump of the table shows, in the form the comparison needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    pub table: bool,
    /// (name, type, hook, priority, policy)
    pub chains: Vec<(String, String, u32, i32, u32)>,
    /// (chain, userdata) in kernel order.
    pub rules: Vec<(String, Vec<u8>)>,
}

// ---- encoding ----------------------------------------------------------

/// An nf_tables message: the netlink header and `nfgenmsg` (family,
/// version 0, resource id big-endian).
fn nfgen(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
    let r = res_id.to_be_bytes();
    Msg::new(ty, flags, seq, &[family, 0, r[0], r[1]])
}

fn nft_msg(msg: u16, flags: u16, seq: u32) -> Msg {
    nfgen(
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | flags,
        seq,
        FAMILY_IP,
        0,
    )
}

/// nf_tables attribute shapes: big-endian integers and `NFTA_DATA_VALUE`
/// nests.
trait NftAttrs {
    fn u32(&mut self, ty: u16, v: u32) -> &mut Self;
    fn data(&mut self, ty: u16, value: &[u8]) -> &mut Self;
}

impl NftAttrs for Msg {
    fn u32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.be32(ty, v)
    }
    fn data(&mut self, ty: u16, value: &[u8]) -> &mut Msg {
        self.begin(ty).attr(NFTA_DATA_VALUE, value).end()
    }
}

fn encode_expr(b: &mut Msg, e: &Expr) {
    b.begin(NFTA_LIST_ELEM);
    match e {
        Expr::Meta { key, dreg } => {
            b.str(NFTA_EXPR_NAME, "meta").begin(NFTA_EXPR_DATA);
            b.u32(2, *key).u32(1, *dreg); // NFTA_META_KEY, NFTA_META_DREG
            b.end();
        }
        Expr::Ct { key, dreg } => {
            b.str(NFTA_EXPR_NAME, "ct").begin(NFTA_EXPR_DATA);
            b.u32(2, *key).u32(1, *dreg); // NFTA_CT_KEY, NFTA_CT_DREG
            b.end();
        }
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            b.str(NFTA_EXPR_NAME, "payload").begin(NFTA_EXPR_DATA);
            // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN
            b.u32(1, *dreg).u32(2, *base).u32(3, *offset).u32(4, *len);
            b.end();
        }
        Expr::Bitwise { reg, mask, xor } => {
            b.str(NFTA_EXPR_NAME, "bitwise").begin(NFTA_EXPR_DATA);
            // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR
            b.u32(1, *reg).u32(2, *reg).u32(3, mask.len() as u32);
            b.data(4, mask).data(5, xor);
            b.end();
        }
        Expr::Cmp { sreg, op, data } => {
            b.str(NFTA_EXPR_NAME, "cmp").begin(NFTA_EXPR_DATA);
            b.u32(1, *sreg).u32(2, *op).data(3, data); // SREG, OP, DATA
            b.end();
        }
        Expr::Immediate { dreg, data } => {
            b.str(NFTA_EXPR_NAME, "immediate").begin(NFTA_EXPR_DATA);
            b.u32(1, *dreg).data(2, data); // NFTA_IMMEDIATE_DREG, _DATA
            b.end();
        }
        Expr::Verdict(code) => {
            b.str(NFTA_EXPR_NAME, "immediate").begin(NFTA_EXPR_DATA);
            b.u32(1, 0); // the verdict register
            b.begin(2).begin(NFTA_DATA_VERDICT);
            b.u32(NFTA_VERDICT_CODE, *code);
            b.end().end().end();
        }
        Expr::Dnat { addr_reg, port_reg } => {
            b.str(NFTA_EXPR_NAME, "nat").begin(NFTA_EXPR_DATA);
            // NFTA_NAT_TYPE = NFT_NAT_DNAT, _FAMILY, _REG_ADDR_MIN, _REG_PROTO_MIN
            b.u32(1, 1).u32(2, u32::from(FAMILY_IP));
            b.u32(3, *addr_reg).u32(5, *port_reg);
            b.end();
        }
        Expr::Masquerade => {
            b.str(NFTA_EXPR_NAME, "masq");
        }
    }
    b.end();
}

/// FNV-1a 64 over the rule's chain, expressions and comment text.
fn rule_hash(chain: &str, exprs: &[u8], comment: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in chain
        .bytes()
        .chain([0])
        .chain(exprs.iter().copied())
        .chain(comment.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn encoded_exprs(exprs: &[Expr]) -> Vec<u8> {
    let mut b = Msg::attrs_only();
    for e in exprs {
        encode_expr(&mut b, e);
    }
    b.finish()
}

/// The rule's userdata: a libnftnl-style comment TLV (type 0, length,
/// NUL-terminated text) so `nft list` shows it, with a hash of the rule.
pub(crate) fn userdata(r: &Rule) -> Vec<u8> {
    let exprs = encoded_exprs(&r.exprs);
    let h = rule_hash(r.chain, &exprs, &r.comment);
    let mut text = format!("nuvol {h:016x} {}", r.comment);
    // NFT_USERDATA_MAXLEN is 256; the TLV length is one byte.
    let mut cut = text.len().min(240);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    let mut v = vec![0u8, (text.len() + 1) as u8];
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    v
}

fn batch_begin(seq: u32) -> Vec<u8> {
    nfgen(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish()
}

fn batch_end(seq: u32) -> Vec<u8> {
    nfgen(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    )
    .finish()
}

/// One batch message with what it is for (error reporting).
struct Part {
    bytes: Vec<u8>,
    what: String,
}

/// The messages that replace the table with `rs` (or delete it when `rs`
/// is `None`). Adding the table first makes the delete succeed whether or
/// not it existed; the kernel applies the batch as one transaction.
fn build_batch(rs: Option<&Ruleset>, seq0: u32) -> (Vec<u8>, Vec<(u32, String)>) {
    let mut parts = Vec::new();
    let mut seq = seq0;
    let mut next = || {
        seq = seq.wrapping_add(1);
        seq
    };
    let s = next();
    let mut b = nft_msg(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, s);
    b.str(NFTA_TABLE_NAME, TABLE);
    parts.push((
        s,
        Part {
            bytes: b.finish(),
            what: format!("add table ip {TABLE}"),
        },
    ));
    let s = next();
    let mut b = nft_msg(NFT_MSG_DELTABLE, NLM_F_ACK, s);
    b.str(NFTA_TABLE_NAME, TABLE);
    parts.push((
        s,
        Part {
            bytes: b.finish(),
            what: format!("delete table ip {TABLE}"),
        },
    ));
    if let Some(rs) = rs {
        let s = next();
        let mut b = nft_msg(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK, s);
        b.str(NFTA_TABLE_NAME, TABLE);
        parts.push((
            s,
            Part {
                bytes: b.finish(),
                what: format!("add table ip {TABLE}"),
            },
        ));
        for c in &rs.chains {
            let s = next();
            let mut b = nft_msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, s);
            b.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, c.name);
            b.begin(NFTA_CHAIN_HOOK)
                .u32(NFTA_HOOK_HOOKNUM, c.hook)
                .u32(NFTA_HOOK_PRIORITY, c.priority as u32)
                .end();
            b.u32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                .str(NFTA_CHAIN_TYPE, c.kind);
            parts.push((
                s,
                Part {
                    bytes: b.finish(),
                    what: format!("add chain {} ({} hook {})", c.name, c.kind, c.hook),
                },
            ));
        }
        for r in &rs.rules {
            let s = next();
            let mut b = nft_msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, s);
            b.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, r.chain);
            b.begin(NFTA_RULE_EXPRESSIONS);
            for e in &r.exprs {
                encode_expr(&mut b, e);
            }
            b.end();
            b.attr(NFTA_RULE_USERDATA, &userdata(r));
            parts.push((
                s,
                Part {
                    bytes: b.finish(),
                    what: format!("add rule in {}: {}", r.chain, r.comment),
                },
            ));
        }
    }
    let mut out = batch_begin(seq0);
    let mut acks = Vec::new();
    for (s, p) in parts {
        out.extend_from_slice(&p.bytes);
        acks.push((s, p.what));
    }
    out.extend_from_slice(&batch_end(next()));
    (out, acks)
}

// ---- decoding ----------------------------------------------------------

fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn attr_be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// The attributes of an nf_tables message (after the 4-byte nfgenmsg), or
/// `None` if it is not an nf_tables message of family `ip`.
fn nft_attrs<'a>(m: &NlMsg<'a>) -> Option<(u16, Attrs<'a>)> {
    if m.ty >> 8 != NFNL_SUBSYS_NFTABLES || m.payload.len() < 4 || m.payload[0] != FAMILY_IP {
        return None;
    }
    Some((m.ty & 0xff, attrs(&m.payload[4..])))
}

fn errno_text(e: i32) -> String {
    io::Error::from_raw_os_error(-e).to_string()
}

// ---- the socket --------------------------------------------------------

/// A request/reply socket for nf_tables. Blocking with a receive timeout:
/// the kernel handles a batch or a dump step synchronously inside
/// `sendmsg`/`recvmsg`, so replies are already queued when read.
pub(crate) struct Nft {
    nl: NlSocket,
}

fn io_nft(what: &str) -> impl FnOnce(io::Error) -> NetError + '_ {
    move |e| NetError::Nft(format!("{what}: {e}"))
}

fn nl_nft(e: NlError) -> NetError {
    NetError::Nft(e.to_string())
}

const RECV_BUF: usize = nuvol_rawnl::RECV_BUF;
const MAX_DUMP_MSGS: usize = 100_000;

impl Nft {
    pub fn open() -> Result<Nft, NetError> {
        Ok(Nft {
            nl: NlSocket::open(NETLINK_NETFILTER).map_err(nl_nft)?,
        })
    }

    /// Replace table `ip nuvol` with `rs`, or delete it (`None`), in one
    /// atomic batch: all of it happens or none of it.
    pub fn apply(&mut self, rs: Option<&Ruleset>) -> Result<(), NetError> {
        let (bytes, acks) = build_batch(rs, self.nl.last_seq());
        self.nl.advance_seqs(acks.len() as u32 + 2);
        self.nl.send(&bytes).map_err(nl_nft)?;
        let mut pending: Vec<(u32, String)> = acks;
        while !pending.is_empty() {
            for m in self.nl.recv().map_err(nl_nft)? {
                if m.ty != NLMSG_ERROR {
                    continue;
                }
                let Some(i) = pending.iter().position(|(s, _)| *s == m.seq) else {
                    continue; // a stale reply of an earlier request
                };
                let (_, what) = pending.swap_remove(i);
                let e = errno_of(m.payload);
                if e != 0 {
                    return Err(NetError::Nft(format!("{what}: {}", errno_text(e))));
                }
            }
        }
        Ok(())
    }

    /// Dump one kind of object (tables, chains, rules) of family `ip`;
    /// returns what `each` makes of the replies' attribute lists.
    fn dump<T>(
        &mut self,
        msg: u16,
        filter_table: bool,
        mut each: impl FnMut(Vec<(u16, &[u8])>) -> Option<T>,
    ) -> Result<Vec<T>, NetError> {
        let seq = self.nl.next_seq();
        let mut b = nft_msg(msg, NLM_F_DUMP, seq);
        if filter_table {
            b.str(1, TABLE); // NFTA_CHAIN_TABLE / NFTA_RULE_TABLE
        }
        let replies = match self.nl.dump(&b.finish(), seq, MAX_DUMP_MSGS, "dump") {
            Ok(r) => r,
            // Filtered on a table that does not exist.
            Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
            Err(e) => return Err(nl_nft(e)),
        };
        Ok(replies
            .iter()
            .filter_map(|(ty, payload)| {
                let m = NlMsg {
                    ty: *ty,
                    seq,
                    payload,
                };
                nft_attrs(&m).and_then(|(_, a)| each(a))
            })
            .collect())
    }

    /// Whether table `ip nuvol` exists.
    pub fn table_exists(&mut self) -> Result<bool, NetError> {
        let names = self.dump(NFT_MSG_GETTABLE, false, |a| {
            a.iter()
                .find(|(t, _)| *t == NFTA_TABLE_NAME)
                .map(|(_, v)| attr_str(v))
        })?;
        Ok(names.iter().any(|n| n == TABLE))
    }

    /// The table's chains and rules as the kernel has them.
    pub fn observe(&mut self) -> Result<Observed, NetError> {
        let mut o = Observed {
            table: self.table_exists()?,
            ..Observed::default()
        };
        if !o.table {
            return Ok(o);
        }
        o.chains = self.dump(NFT_MSG_GETCHAIN, true, |a| {
            let mut table = String::new();
            let mut c = (String::new(), String::new(), u32::MAX, 0i32, u32::MAX);
            for (t, v) in a {
                match t {
                    NFTA_CHAIN_TABLE => table = attr_str(v),
                    NFTA_CHAIN_NAME => c.0 = attr_str(v),
                    NFTA_CHAIN_TYPE => c.1 = attr_str(v),
                    NFTA_CHAIN_POLICY => c.4 = attr_be32(v).unwrap_or(u32::MAX),
                    NFTA_CHAIN_HOOK => {
                        for (ht, hv) in attrs(v) {
                            match ht {
                                NFTA_HOOK_HOOKNUM => c.2 = attr_be32(hv).unwrap_or(u32::MAX),
                                NFTA_HOOK_PRIORITY => c.3 = attr_be32(hv).unwrap_or(0) as i32,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            (table == TABLE).then_some(c)
        })?;
        o.rules = self.dump(NFT_MSG_GETRULE, true, |a| {
            let mut table = String::new();
            let mut chain = String::new();
            let mut ud = Vec::new();
            for (t, v) in a {
                match t {
                    NFTA_RULE_TABLE => table = attr_str(v),
                    NFTA_RULE_CHAIN => chain = attr_str(v),
                    NFTA_RULE_USERDATA => ud = v.to_vec(),
                    _ => {}
                }
            }
            (table == TABLE).then_some((chain, ud))
        })?;
        Ok(o)
    }
}

/// What a dump must show for the table to hold exactly `rs`.
pub(crate) fn expected(rs: &Ruleset) -> Observed {
    let mut chains: Vec<_> = rs
        .chains
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.kind.to_string(),
                c.hook,
                c.priority,
                NF_ACCEPT,
            )
        })
        .collect();
    chains.sort();
    Observed {
        table: true,
        chains,
        rules: rs
            .rules
            .iter()
            .map(|r| (r.chain.to_string(), userdata(r)))
            .collect(),
    }
}

/// Whether the kernel's table matches `rs`: same chains, and in each chain
/// the same rules in the same order.
pub(crate) fn matches(obs: &Observed, rs: &Ruleset) -> bool {
    let want = expected(rs);
    let mut chains = obs.chains.clone();
    chains.sort();
    if !obs.table || chains != want.chains {
        return false;
    }
    for c in &rs.chains {
        let got: Vec<_> = obs.rules.iter().filter(|(ch, _)| ch == c.name).collect();
        let exp: Vec<_> = want.rules.iter().filter(|(ch, _)| ch == c.name).collect();
        if got != exp {
            return false;
        }
    }
    obs.rules.len() == want.rules.len()
}

/// Subscribed to nf_tables change notifications; reports changes that
/// touch table `ip nuvol` (someone flushed or edited it).
pub(crate) struct NftEvents {
    fd: tokio::io::unix::AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl NftEvents {
    pub fn open() -> Result<NftEvents, NetError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io_nft("netlink socket"))?;
        sock.bind_auto().map_err(io_nft("bind"))?;
        sock.add_membership(NFNLGRP_NFTABLES)
            .map_err(io_nft("join nftables group"))?;
        sock.set_non_blocking(true)
            .map_err(io_nft("non-blocking"))?;
        let _ = sock.set_rx_buf_sz(1 << 20);
        Ok(NftEvents {
            // SAFETY: the Socket owns its fd and is neither replaced nor
            // closed while the AsyncFd holds it.
            fd: unsafe { tokio::io::unix::AsyncFd::register(sock) }
                .map_err(|e| NetError::Nft(format!("register: {e}")))?,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Wait until an event about our table arrives (or events were lost).
    pub async fn changed(&mut self) -> Result<(), NetError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(io_nft("wait"))?;
            let mut relevant = false;
            loop {
                self.buf.clear();
                match guard
                    .get_inner()
                    .recv_from(&mut self.buf, libc::MSG_DONTWAIT)
                {
                    Ok(_) => {
                        if let Ok(ms) = messages(&self.buf) {
                            relevant |= ms.iter().any(touches_our_table);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        break;
                    }
                    // ENOBUFS: events were dropped; check to be safe.
                    Err(_) => relevant = true,
                }
            }
            if relevant {
                return Ok(());
            }
        }
    }
}

fn touches_our_table(m: &NlMsg<'_>) -> bool {
    let Some((msg, a)) = nft_attrs(m) else {
        return false;
    };
    matches!(
        msg,
        NFT_MSG_NEWTABLE
            | NFT_MSG_DELTABLE
            | NFT_MSG_NEWCHAIN
            | NFT_MSG_DELCHAIN
            | NFT_MSG_NEWRULE
            | NFT_MSG_DELRULE
    ) && a.iter().any(|(t, v)| *t == 1 && attr_str(v) == TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs() -> Ruleset {
        Ruleset {
            chains: vec![Chain {
                name: "postrouting",
                kind: "nat",
                hook: HOOK_POSTROUTING,
                priority: 100,
            }],
            rules: vec![Rule {
                chain: "postrouting",
                exprs: vec![
                    Expr::Meta {
                        key: META_OIFNAME,
                        dreg: REG_1,
                    },
                    Expr::Masquerade,
                ],
                comment: "masquerade".into(),
            }],
        }
    }

    #[test]
    fn batch_is_well_formed() {
        let (bytes, acks) = build_batch(Some(&rs()), 100);
        // begin, add table, delete table, add table, chain, rule, end
        let ms = messages(&bytes).unwrap();
        assert_eq!(ms.len(), 7);
        assert_eq!(acks.len(), 5);
        assert_eq!(ms[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(ms[6].ty, NFNL_MSG_BATCH_END);
        assert_eq!(ms[1].ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE);
        assert_eq!(ms[2].ty, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE);
        let (_, a) = nft_attrs(&ms[4]).unwrap();
        let hook = a.iter().find(|(t, _)| *t == NFTA_CHAIN_HOOK).unwrap().1;
        let h = attrs(hook);
        assert_eq!(attr_be32(h[0].1), Some(HOOK_POSTROUTING));
        assert_eq!(attr_be32(h[1].1), Some(100));
        let (_, a) = nft_attrs(&ms[5]).unwrap();
        let ud = a.iter().find(|(t, _)| *t == NFTA_RULE_USERDATA).unwrap().1;
        assert_eq!(ud[0], 0);
        assert_eq!(ud[1] as usize, ud.len() - 2);
        assert!(attr_str(&ud[2..]).starts_with("nuvol "));
        // Deleting: begin, add table, delete table, end.
        let (bytes, acks) = build_batch(None, 1);
        assert_eq!(messages(&bytes).unwrap().len(), 4);
        assert_eq!(acks.len(), 2);
    }

    #[test]
    fn comparison_notices_any_difference() {
        let r = rs();
        let mut obs = expected(&r);
        assert!(matches(&obs, &r));
        obs.rules.clear();
        assert!(!matches(&obs, &r));
        let mut obs = expected(&r);
        obs.chains[0].4 = NF_DROP;
        assert!(!matches(&obs, &r));
        let mut obs = expected(&r);
        obs.rules.push(obs.rules[0].clone());
        assert!(!matches(&obs, &r));
        let mut r2 = r.clone();
        r2.rules[0].exprs.pop();
        assert!(!matches(&expected(&r), &r2));
        assert!(!matches(&Observed::default(), &r));
    }

    #[test]
    fn long_comments_are_cut_on_a_char_boundary() {
        let mut r = rs().rules[0].clone();
        r.comment = "é".repeat(300);
        let ud = userdata(&r);
        assert!(ud.len() <= 256);
        assert_eq!(ud[1] as usize, ud.len() - 2);
        assert!(std::str::from_utf8(&ud[2..ud.len() - 1]).is_ok());
    }

    #[test]
    fn garbage_replies_do_not_panic() {
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = messages(&junk).map(|ms| {
                for m in ms {
                    let _ = nft_attrs(&m);
                    let _ = touches_our_table(&m);
                    let _ = errno_of(m.payload);
                }
            });
            let _ = attrs(&junk);
        }
        let mut bad = vec![0u8; 32];
        bad[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
    }
}
