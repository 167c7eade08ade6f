//! Reading one memberlist stream message from a TCP connection, within the
//! stream budgets: every byte buffered is reserved from a budget shared by
//! all streams ([`STREAM_BYTES`]), a stream holds at most
//! [`wire::MAX_STREAM`] bytes, inbound streams are limited per source
//! address ([`STREAMS_PER_SOURCE`]) and in all ([`MAX_STREAMS`]), and msgpack
//! values are delimited by a resumable [`Scanner`], so a value trickled in
//! small pieces costs linear time. The deadline on a whole stream is the
//! caller's (`tcp_timeout`).

use super::source_key;
use crate::msgpack::{self, DecodeError, Scanner, Value, Writer};
use crate::wire::{self, ty, Framing, WireError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most inbound streams served at once (memberlist allows 128).
pub const MAX_STREAMS: usize = 32;
/// Most inbound streams served at once for one source address (an IPv4
/// address or an IPv6 /64).
pub const STREAMS_PER_SOURCE: usize = 4;
/// Most bytes all streams may buffer together (received messages, their
/// decryption or decompression, and our push/pull replies).
pub const STREAM_BYTES: usize = 2 * wire::MAX_STREAM;

/// Why a stream was given up.
#[derive(Debug)]
pub enum StreamError {
    /// malformed, wrong key or label, or closed early
    Wire(WireError),
    /// longer than [`wire::MAX_STREAM`]
    TooLarge,
    /// the shared [`STREAM_BYTES`] budget is spent
    Budget,
}

impl From<WireError> for StreamError {
    fn from(e: WireError) -> Self {
        StreamError::Wire(e)
    }
}

impl From<DecodeError> for StreamError {
    fn from(e: DecodeError) -> Self {
        StreamError::Wire(e.into())
    }
}

impl From<StreamError> for super::GossipError {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::Wire(w) => super::GossipError::Wire(w),
            StreamError::TooLarge => super::GossipError::Wire(WireError::Frame("stream too large")),
            StreamError::Budget => {
                super::GossipError::Wire(WireError::Frame("stream buffer budget spent"))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    inbound: usize,
    outgoing: usize,
    per_source: HashMap<IpAddr, usize>,
    bytes: usize,
}

/// The budgets all streams of a node share.
#[derive(Debug, Default)]
pub struct Streams {
    open: Mutex<Open>,
}

/// One stream's share of the budgets, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    streams: Arc<Streams>,
    /// inbound: the source it counts against
    source: Option<IpAddr>,
    reserved: usize,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit an inbound stream from `peer`, or `None` when it or all
    /// sources already have as many open as allowed.
    pub fn accept(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let key = source_key(peer);
        let mut o = self.lock();
        let mine = o.per_source.get(&key).copied().unwrap_or(0);
        if o.inbound >= MAX_STREAMS || mine >= STREAMS_PER_SOURCE {
            return None;
        }
        o.inbound += 1;
        *o.per_source.entry(key).or_default() += 1;
        Some(Ticket {
            streams: self.clone(),
            source: Some(key),
            reserved: 0,
        })
    }

    /// A stream we open ourselves (bytes budget only).
    pub fn outgoing(self: &Arc<Self>) -> Ticket {
        self.lock().outgoing += 1;
        Ticket {
            streams: self.clone(),
            source: None,
            reserved: 0,
        }
    }

    /// Streams open now, both ways.
    pub fn open(&self) -> usize {
        let o = self.lock();
        o.inbound + o.outgoing
    }

    /// Bytes reserved by all streams now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Ticket {
    /// Reserve `n` more bytes for this stream; false (nothing reserved)
    /// when that would pass [`wire::MAX_STREAM`] for this stream or
    /// [`STREAM_BYTES`] for all.
    pub fn reserve(&mut self, n: usize) -> Result<(), StreamError> {
        if self.reserved + n > 2 * wire::MAX_STREAM {
            // a message, its decoding and our reply: never more
            return Err(StreamError::TooLarge);
        }
        let mut o = self.streams.lock();
        if o.bytes + n > STREAM_BYTES {
            return Err(StreamError::Budget);
        }
        o.bytes += n;
        self.reserved += n;
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut o = self.streams.lock();
        o.bytes -= self.reserved;
        match self.source {
            Some(key) => {
                o.inbound -= 1;
                if let Some(n) = o.per_source.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        o.per_source.remove(&key);
                    }
                }
            }
            None => o.outgoing -= 1,
        }
    }
}

/// The bytes read from a stream so far and where decoding stands.
pub(super) struct StreamBuf<'a> {
    buf: Vec<u8>,
    pos: usize,
    ticket: &'a mut Ticket,
}

impl StreamBuf<'_> {
    /// Read until `need` bytes are buffered past `pos`.
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        s: &mut R,
        need: usize,
    ) -> Result<(), StreamError> {
        while self.buf.len() - self.pos < need {
            if self.buf.len() >= wire::MAX_STREAM {
                return Err(StreamError::TooLarge);
            }
            let mut chunk = [0u8; 8192];
            let want = chunk.len().min(wire::MAX_STREAM - self.buf.len());
            let n = s
                .read(&mut chunk[..want])
                .await
                .map_err(|_| WireError::Frame("read"))?;
            if n == 0 {
                return Err(WireError::Frame("eof").into());
            }
            if self.buf.len() + n > self.buf.capacity() {
                // grow by doubling, and reserve what the growth takes
                let cap = self.buf.capacity();
                let new_cap = (2 * cap).clamp(self.buf.len() + n, wire::MAX_STREAM);
                self.ticket.reserve(new_cap - cap)?;
                self.buf.reserve_exact(new_cap - self.buf.len());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    async fn bytes<R: AsyncRead + Unpin>(
        &mut self,
        s: &mut R,
        n: usize,
    ) -> Result<Vec<u8>, StreamError> {
        if n > wire::MAX_STREAM {
            return Err(StreamError::TooLarge);
        }
        self.fill(s, n).await?;
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    /// Read past one msgpack value; its bytes.
    async fn skip<R: AsyncRead + Unpin>(&mut self, s: &mut R) -> Result<&[u8], StreamError> {
        let mut sc = Scanner::new();
        loop {
            match sc.scan(&self.buf[self.pos..])? {
                Some(len) => {
                    let start = self.pos;
                    self.pos += len;
                    return Ok(&self.buf[start..self.pos]);
                }
                None => {
                    let have = self.buf.len() - self.pos;
                    self.fill(s, have + 1).await?;
                }
            }
        }
    }

    /// Read and decode one msgpack value.
    async fn value<R: AsyncRead + Unpin>(&mut self, s: &mut R) -> Result<Value, StreamError> {
        let raw = self.skip(s).await?;
        Ok(msgpack::decode(raw)?.0)
    }
}

/// Read one stream message: its type and the plain bytes after it.
pub(super) async fn read_stream<R: AsyncRead + Unpin>(
    framing: &Framing,
    s: &mut R,
    ticket: &mut Ticket,
) -> Result<(u8, Vec<u8>), StreamError> {
    let mut sb = StreamBuf {
        buf: Vec::new(),
        pos: 0,
        ticket,
    };
    let mut t = sb.bytes(s, 1).await?[0];
    let mut label = Vec::new();
    if t == ty::HAS_LABEL {
        let n = usize::from(sb.bytes(s, 1).await?[0]);
        label = sb.bytes(s, n).await?;
        t = sb.bytes(s, 1).await?[0];
    }
    if label != framing.label.as_bytes() {
        return Err(WireError::Label.into());
    }
    let mut plain: Vec<u8>;
    if t == ty::ENCRYPT {
        if !framing.keyring.enabled() {
            return Err(WireError::Decrypt.into());
        }
        let lenb = sb.bytes(s, 4).await?;
        let len = u32::from_be_bytes([lenb[0], lenb[1], lenb[2], lenb[3]]) as usize;
        if len > wire::MAX_STREAM {
            return Err(StreamError::TooLarge);
        }
        let ct = sb.bytes(s, len).await?;
        let mut aad = vec![ty::ENCRYPT];
        aad.extend_from_slice(&lenb);
        aad.extend_from_slice(&label);
        sb.ticket.reserve(ct.len())?;
        plain = framing.keyring.decrypt(&ct, &aad)?;
    } else if framing.keyring.enabled() {
        return Err(WireError::NotEncrypted.into());
    } else {
        // clear text: the message is self-delimiting msgpack; read values
        // as the caller needs them. Collect the whole message here.
        plain = vec![t];
        if t == ty::COMPRESS {
            let v = sb.value(s).await?;
            plain = wire::decompress_value(&v)?;
            sb.ticket.reserve(plain.len())?;
        } else if t == ty::PUSH_PULL {
            let hv = sb.value(s).await?;
            let h = wire::PushPullHeader::decode(&hv)?;
            // try_from, not `as`: a 32-bit usize would read 2^32 + n as n.
            let state_len = usize::try_from(h.user_state_len)
                .ok()
                .filter(|&n| n <= wire::MAX_STREAM && (0..=65_536).contains(&h.nodes))
                .ok_or(WireError::Frame("push/pull header out of range"))?;
            let start = sb.pos;
            for _ in 0..h.nodes {
                sb.skip(s).await?;
            }
            sb.fill(s, state_len).await?;
            let end = sb.pos + state_len;
            let mut w = Writer::new();
            h.encode(&mut w);
            w.extend(&sb.buf[start..end]);
            return Ok((ty::PUSH_PULL, w.into_bytes()));
        } else if t == ty::USER {
            let hv = sb.value(s).await?;
            let n = hv.i64_field("UserMsgLen")?;
            if !(0..=wire::MAX_STREAM as i64).contains(&n) {
                return Err(StreamError::TooLarge);
            }
            let b = sb.bytes(s, n as usize).await?;
            return Ok((ty::USER, b));
        } else {
            let v = sb.skip(s).await?.to_vec();
            plain.extend_from_slice(&v);
        }
    }
    if plain.first() == Some(&ty::COMPRESS) {
        plain = wire::decompress(&plain[1..])?;
        sb.ticket.reserve(plain.len())?;
    }
    let (&t, rest) = plain
        .split_first()
        .ok_or(WireError::Frame("empty stream"))?;
    if t == ty::USER {
        let (hv, used) = msgpack::decode(rest)?;
        let body = &rest[used..];
        let n = usize::try_from(hv.i64_field("UserMsgLen")?)
            .ok()
            .filter(|&n| n <= body.len())
            .ok_or(WireError::Frame("user msg length"))?;
        return Ok((ty::USER, body[..n].to_vec()));
    }
    Ok((t, rest.to_vec()))
}

/// Read one stream message from `r` within a budget of its own: its type
/// and the plain bytes after it. For the fuzzer and tests; the node reads
/// through [`read_stream`] with the budgets it shares.
pub async fn read_stream_message<R: AsyncRead + Unpin>(
    framing: &Framing,
    r: &mut R,
) -> Result<(u8, Vec<u8>), super::GossipError> {
    let streams = Arc::new(Streams::default());
    let mut ticket = streams.outgoing();
    Ok(read_stream(framing, r, &mut ticket).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_share_the_budgets_and_give_them_back() {
        let s = Arc::new(Streams::default());
        let a = IpAddr::from([10, 0, 0, 1]);
        let mut held: Vec<Ticket> = (0..STREAMS_PER_SOURCE)
            .map(|_| s.accept(a).expect("within the per-source limit"))
            .collect();
        assert!(s.accept(a).is_none(), "one source over its limit");
        // an IPv6 /64 is one source
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        for i in 0..STREAMS_PER_SOURCE as u16 {
            held.push(s.accept(v6(i + 1)).expect("v6"));
        }
        assert!(s.accept(v6(99)).is_none());
        for i in 0..(MAX_STREAMS - 2 * STREAMS_PER_SOURCE) {
            held.push(s.accept(IpAddr::from([10, 1, 0, i as u8])).expect("others"));
        }
        assert!(s.accept(IpAddr::from([10, 2, 0, 1])).is_none(), "all full");
        let mut out = s.outgoing();
        assert_eq!(s.open(), MAX_STREAMS + 1);
        // bytes: one stream up to twice MAX_STREAM, all up to STREAM_BYTES
        held[0].reserve(wire::MAX_STREAM).expect("one");
        assert!(matches!(
            held[1].reserve(STREAM_BYTES - wire::MAX_STREAM + 1),
            Err(StreamError::Budget)
        ));
        out.reserve(STREAM_BYTES - wire::MAX_STREAM).expect("rest");
        assert_eq!(s.bytes(), STREAM_BYTES);
        drop(out);
        assert!(matches!(
            held[0].reserve(wire::MAX_STREAM + 1),
            Err(StreamError::TooLarge)
        ));
        held.clear();
        assert_eq!((s.open(), s.bytes()), (0, 0));
        assert!(s.accept(a).is_some());
    }
}
