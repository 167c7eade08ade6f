//! Raw netlink for the families `rtnetlink` does not speak (nf_tables,
//! generic netlink for WireGuard): a message builder, bounds-checked
//! parsers and a blocking request/reply socket.
//!
//! Blocking with a receive timeout is enough: the kernel handles a request
//! or one dump step inside `sendmsg`/`recvmsg`, so replies are already
//! queued when they are read.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

pub use netlink_sys::Socket;

pub const NETLINK_ROUTE: isize = 0;
pub const NETLINK_NETFILTER: isize = 12;
pub const NETLINK_GENERIC: isize = 16;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLA_F_NESTED: u16 = 0x8000;
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// Largest reply datagram read; a larger one is an error.
pub const RECV_BUF: usize = 256 * 1024;
/// How long a request waits for the kernel's answer.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(2);

const HDR: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// A socket call failed (`what` names it).
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (`what` names it).
    #[error("{what}: {}", io::Error::from_raw_os_error(*errno))]
    Kernel { what: String, errno: i32 },
    /// A reply that does not parse, or breaks a budget.
    #[error("{0}")]
    Malformed(String),
}

impl NlError {
    /// The kernel's errno, if the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink message under construction: header, fixed part, attributes
/// (with a stack of open nests, closed by `finish`).
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
    header: bool,
}

impl Msg {
    /// A message of type `ty` with `fixed` (the family header, e.g.
    /// `genlmsghdr` or `nfgenmsg`) after the netlink header.
    pub fn new(ty: u16, flags: u16, seq: u32, fixed: &[u8]) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        buf.extend_from_slice(fixed);
        Msg {
            buf,
            nests: Vec::new(),
            header: true,
        }
    }

    /// Attributes only, no header (a nested blob built on its own).
    pub fn attrs_only() -> Msg {
        Msg {
            buf: Vec::new(),
            nests: Vec::new(),
            header: false,
        }
    }

    pub fn attr(&mut self, ty: u16, v: &[u8]) -> &mut Msg {
        let len = (4 + v.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(v);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Msg {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// A big-endian u32 attribute (nf_tables' integers).
    pub fn be32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.attr(ty, &v.to_be_bytes())
    }

    /// Open a nested attribute; `end` closes it.
    pub fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The bytes, with open nests closed and the length set.
    pub fn finish(mut self) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        if self.header {
            let len = self.buf.len() as u32;
            self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        }
        self.buf
    }
}

/// One message of a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages in a receive buffer; a truncated one is an error.
pub fn messages(buf: &[u8]) -> Result<Vec<NlMsg<'_>>, NlError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + HDR <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < HDR || len > buf.len() - off {
            return Err(NlError::Malformed("truncated netlink message".into()));
        }
        out.push(NlMsg {
            ty: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            seq: u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]),
            payload: &buf[off + HDR..off + len],
        });
        off += align4(len);
    }
    Ok(out)
}

/// Netlink attributes as (type without flags, value).
pub type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// The attributes of `b`; stops at the first malformed one.
pub fn attrs(mut b: &[u8]) -> Attrs<'_> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// The (negative) errno of an `NLMSG_ERROR` payload; 0 is an ACK.
pub fn errno_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(-libc::EPROTO)
}

/// A blocking request/reply socket of one netlink protocol.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Open and bind a socket of protocol `proto` with a receive timeout.
    pub fn open(proto: isize) -> Result<NlSocket, NlError> {
        let io = |what| move |source| NlError::Io { what, source };
        let mut sock = Socket::new(proto).map_err(io("netlink socket"))?;
        sock.bind_auto().map_err(io("bind"))?;
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as _,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a correctly sized timeval.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io("SO_RCVTIMEO")(io::Error::last_os_error()));
        }
        Ok(NlSocket {
            sock,
            seq: std::process::id().wrapping_mul(7919),
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// The last sequence number handed out; a batch numbers its messages
    /// from here and then calls `advance_seqs` with how many it used.
    pub fn last_seq(&self) -> u32 {
        self.seq
    }

    pub fn advance_seqs(&mut self, n: u32) {
        self.seq = self.seq.wrapping_add(n);
    }

    pub fn send(&self, bytes: &[u8]) -> Result<(), NlError> {
        self.sock
            .send_to(bytes, &netlink_sys::SocketAddr::new(0, 0), 0)
            .map_err(|source| NlError::Io {
                what: "send",
                source,
            })?;
        Ok(())
    }

    /// Read one datagram and return its messages.
    pub fn recv(&mut self) -> Result<Vec<NlMsg<'_>>, NlError> {
        self.buf.clear();
        let (n, _) = self
            .sock
            .recv_from(&mut self.buf, libc::MSG_TRUNC)
            .map_err(|source| NlError::Io {
                what: "receive",
                source,
            })?;
        if n > RECV_BUF {
            return Err(NlError::Malformed(
                "netlink reply larger than the buffer".into(),
            ));
        }
        messages(&self.buf)
    }

    /// Send a request with `NLM_F_ACK` and wait for its ACK; `what` names
    /// it in errors.
    pub fn request(&mut self, bytes: &[u8], seq: u32, what: &str) -> Result<(), NlError> {
        self.send(bytes)?;
        for _ in 0..64 {
            for m in self.recv()? {
                if m.seq != seq || m.ty != NLMSG_ERROR {
                    continue;
                }
                return match errno_of(m.payload) {
                    0 => Ok(()),
                    e => Err(NlError::Kernel {
                        what: what.to_string(),
                        errno: -e,
                    }),
                };
            }
        }
        Err(NlError::Malformed(format!("{what}: no answer")))
    }

    /// Send a dump request and collect (type, payload) of its replies, at
    /// most `max` of them.
    pub fn dump(
        &mut self,
        bytes: &[u8],
        seq: u32,
        max: usize,
        what: &str,
    ) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        self.send(bytes)?;
        let mut out = Vec::new();
        loop {
            for m in self.recv()? {
                if m.seq != seq {
                    continue;
                }
                match m.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match errno_of(m.payload) {
                            0 => Ok(out),
                            e => Err(NlError::Kernel {
                                what: what.to_string(),
                                errno: -e,
                            }),
                        }
                    }
                    ty => out.push((ty, m.payload.to_vec())),
                }
                if out.len() > max {
                    return Err(NlError::Malformed(format!("{what}: too many replies")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_messages_parse_back() {
        let mut m = Msg::new(20, NLM_F_REQUEST | NLM_F_ACK, 7, &[1, 2, 3, 4]);
        m.str(3, "wg0").begin(8).be32(1, 0x0102_0304).attr(2, &[9]);
        let bytes = m.finish(); // the open nest is closed here
        assert_eq!(bytes.len() % 4, 0);
        let ms = messages(&bytes).unwrap();
        assert_eq!(ms.len(), 1);
        assert_eq!((ms[0].ty, ms[0].seq), (20, 7));
        assert_eq!(&ms[0].payload[..4], &[1, 2, 3, 4]);
        let a = attrs(&ms[0].payload[4..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (3, &b"wg0\0"[..]));
        assert_eq!(a[1].0, 8, "the nested flag is masked off");
        let inner = attrs(a[1].1);
        assert_eq!(inner, vec![(1, &[1u8, 2, 3, 4][..]), (2, &[9u8][..])]);
    }

    #[test]
    fn attrs_only_has_no_header() {
        let mut m = Msg::attrs_only();
        m.attr(1, &[0xaa; 3]);
        assert_eq!(m.finish(), vec![7, 0, 1, 0, 0xaa, 0xaa, 0xaa, 0]);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for n in 0..80u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            if let Ok(ms) = messages(&junk) {
                for m in ms {
                    let _ = attrs(m.payload);
                    let _ = errno_of(m.payload);
                }
            }
            let _ = attrs(&junk);
        }
        let mut bad = vec![0u8; 32];
        bad[0..4].copy_from_slice(&64u32.to_ne_bytes());
        assert!(messages(&bad).is_err());
        bad[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(messages(&bad).is_err());
        assert_eq!(errno_of(&[1]), -libc::EPROTO);
    }

    #[test]
    fn kernel_errors_name_the_request() {
        let e = NlError::Kernel {
            what: "set device".into(),
            errno: libc::EPERM,
        };
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().starts_with("set device: "));
    }

    /// A real kernel: dumping links over route netlink works and ends.
    #[test]
    fn dumps_links_from_the_kernel() {
        let mut s = NlSocket::open(NETLINK_ROUTE).unwrap();
        let seq = s.next_seq();
        // RTM_GETLINK with an ifinfomsg (16 bytes).
        let m = Msg::new(18, NLM_F_REQUEST | NLM_F_DUMP, seq, &[0; 16]);
        let links = s.dump(&m.finish(), seq, 10_000, "links").unwrap();
        assert!(!links.is_empty(), "at least lo");
        assert!(links.iter().all(|(ty, _)| *ty == 16)); // RTM_NEWLINK
    }
}
