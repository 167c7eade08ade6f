//! memberlist's wire format: message types, their msgpack bodies, compound
//! messages, the CRC and label headers, LZW compression and AES-GCM
//! encryption (versions 0 and 1).

use crate::lzw;
use crate::msgpack::{decode_value, DecodeError, Value, Writer};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use thiserror::Error;

/// memberlist message types (the first byte of every message).
pub mod ty {
    /// ping
    pub const PING: u8 = 0;
    /// indirect ping request
    pub const INDIRECT_PING: u8 = 1;
    /// ack
    pub const ACK: u8 = 2;
    /// suspect
    pub const SUSPECT: u8 = 3;
    /// alive
    pub const ALIVE: u8 = 4;
    /// dead
    pub const DEAD: u8 = 5;
    /// push/pull state exchange (stream)
    pub const PUSH_PULL: u8 = 6;
    /// several messages in one packet
    pub const COMPOUND: u8 = 7;
    /// a delegate (Serf) message
    pub const USER: u8 = 8;
    /// LZW-compressed message
    pub const COMPRESS: u8 = 9;
    /// encrypted stream message
    pub const ENCRYPT: u8 = 10;
    /// nack
    pub const NACK: u8 = 11;
    /// CRC32-protected message
    pub const HAS_CRC: u8 = 12;
    /// error response (stream)
    pub const ERR: u8 = 13;
    /// label header
    pub const HAS_LABEL: u8 = 244;
}

/// Largest packet we read or write (memberlist's UDPBufferSize is 1400;
/// receivers use a 65536-byte buffer).
pub const MAX_PACKET: usize = 65_536;
/// Largest decompressed payload we accept.
pub const MAX_DECOMPRESSED: usize = 4 * 1024 * 1024;
/// Largest stream message we accept.
pub const MAX_STREAM: usize = 4 * 1024 * 1024;
/// Largest node metadata (Serf tags) memberlist allows.
pub const META_MAX: usize = 512;

/// Why a message was dropped.
#[derive(Debug, Error)]
pub enum WireError {
    /// msgpack problem.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// LZW problem.
    #[error("{0}")]
    Lzw(#[from] lzw::LzwError),
    /// Unknown compression algorithm.
    #[error("unknown compression algorithm {0}")]
    Algo(u64),
    /// CRC mismatch.
    #[error("crc mismatch")]
    Crc,
    /// Encryption problem.
    #[error("decryption failed")]
    Decrypt,
    /// Encryption is configured but the message is in the clear.
    #[error("message not encrypted")]
    NotEncrypted,
    /// Label mismatch.
    #[error("label mismatch")]
    Label,
    /// Framing problem.
    #[error("{0}")]
    Frame(&'static str),
}

fn ip_bytes(v: &[u8]) -> Vec<u8> {
    v.to_vec()
}

/// ping
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ping {
    /// sequence number
    pub seq_no: u32,
    /// intended recipient
    pub node: String,
    /// reply address (omitempty)
    pub source_addr: Vec<u8>,
    /// reply port (omitempty)
    pub source_port: u16,
    /// sender name (omitempty)
    pub source_node: String,
}

impl Ping {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::PING);
        let n = 2
            + usize::from(!self.source_addr.is_empty())
            + usize::from(self.source_port != 0)
            + usize::from(!self.source_node.is_empty());
        w.map_len(n)
            .key("SeqNo")
            .uint(u64::from(self.seq_no))
            .key("Node")
            .str(&self.node);
        if !self.source_addr.is_empty() {
            w.key("SourceAddr").raw(&self.source_addr);
        }
        if self.source_port != 0 {
            w.key("SourcePort").uint(u64::from(self.source_port));
        }
        if !self.source_node.is_empty() {
            w.key("SourceNode").str(&self.source_node);
        }
        w.into_bytes()
    }
    /// Decode a body.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Ping {
            seq_no: v.u32_field("SeqNo")?,
            node: v.string_field("Node")?,
            source_addr: ip_bytes(&v.bytes_field("SourceAddr")?),
            source_port: v.u16_field("SourcePort")?,
            source_node: v.string_field("SourceNode")?,
        })
    }
}

/// indirect ping request
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndirectPing {
    /// sequence number
    pub seq_no: u32,
    /// target address
    pub target: Vec<u8>,
    /// target port
    pub port: u16,
    /// target name
    pub node: String,
    /// want a nack
    pub nack: bool,
    /// reply address
    pub source_addr: Vec<u8>,
    /// reply port
    pub source_port: u16,
    /// sender name
    pub source_node: String,
}

impl IndirectPing {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::INDIRECT_PING);
        let n = 5
            + usize::from(!self.source_addr.is_empty())
            + usize::from(self.source_port != 0)
            + usize::from(!self.source_node.is_empty());
        w.map_len(n)
            .key("SeqNo")
            .uint(u64::from(self.seq_no))
            .key("Target")
            .raw(&self.target)
            .key("Port")
            .uint(u64::from(self.port))
            .key("Node")
            .str(&self.node)
            .key("Nack")
            .bool(self.nack);
        if !self.source_addr.is_empty() {
            w.key("SourceAddr").raw(&self.source_addr);
        }
        if self.source_port != 0 {
            w.key("SourcePort").uint(u64::from(self.source_port));
        }
        if !self.source_node.is_empty() {
            w.key("SourceNode").str(&self.source_node);
        }
        w.into_bytes()
    }
    /// Decode a body.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(IndirectPing {
            seq_no: v.u32_field("SeqNo")?,
            target: v.bytes_field("Target")?,
            port: v.u16_field("Port")?,
            node: v.string_field("Node")?,
            nack: v.bool_field("Nack")?,
            source_addr: v.bytes_field("SourceAddr")?,
            source_port: v.u16_field("SourcePort")?,
            source_node: v.string_field("SourceNode")?,
        })
    }
}

/// ack (payload carries Serf's Vivaldi coordinate)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ack {
    /// sequence number
    pub seq_no: u32,
    /// delegate payload
    pub payload: Vec<u8>,
}

impl Ack {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::ACK);
        w.map_len(2)
            .key("SeqNo")
            .uint(u64::from(self.seq_no))
            .key("Payload");
        if self.payload.is_empty() {
            w.nil();
        } else {
            w.raw(&self.payload);
        }
        w.into_bytes()
    }
    /// Decode a body.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Ack {
            seq_no: v.u32_field("SeqNo")?,
            payload: v.bytes_field("Payload")?,
        })
    }
}

/// nack
pub fn encode_nack(seq_no: u32) -> Vec<u8> {
    let mut w = Writer::with_type(ty::NACK);
    w.map_len(1).key("SeqNo").uint(u64::from(seq_no));
    w.into_bytes()
}

/// suspect or dead (same fields)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Accusation {
    /// incarnation
    pub incarnation: u32,
    /// accused node
    pub node: String,
    /// accuser
    pub from: String,
}

impl Accusation {
    /// Encode with the given type byte (SUSPECT or DEAD).
    pub fn encode(&self, t: u8) -> Vec<u8> {
        let mut w = Writer::with_type(t);
        w.map_len(3)
            .key("Incarnation")
            .uint(u64::from(self.incarnation))
            .key("Node")
            .str(&self.node)
            .key("From")
            .str(&self.from);
        w.into_bytes()
    }
    /// Decode a body.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Accusation {
            incarnation: v.u32_field("Incarnation")?,
            node: v.string_field("Node")?,
            from: v.string_field("From")?,
        })
    }
}

/// alive
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alive {
    /// incarnation
    pub incarnation: u32,
    /// name
    pub node: String,
    /// IP (4 or 16 bytes)
    pub addr: Vec<u8>,
    /// port
    pub port: u16,
    /// metadata (Serf tags)
    pub meta: Vec<u8>,
    /// pmin, pmax, pcur, dmin, dmax, dcur
    pub vsn: Vec<u8>,
}

impl Alive {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::ALIVE);
        w.map_len(6)
            .key("Incarnation")
            .uint(u64::from(self.incarnation))
            .key("Node")
            .str(&self.node)
            .key("Addr")
            .raw(&self.addr)
            .key("Port")
            .uint(u64::from(self.port))
            .key("Meta")
            .raw(&self.meta)
            .key("Vsn")
            .raw(&self.vsn);
        w.into_bytes()
    }
    /// Decode a body.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Alive {
            incarnation: v.u32_field("Incarnation")?,
            node: v.string_field("Node")?,
            addr: v.bytes_field("Addr")?,
            port: v.u16_field("Port")?,
            meta: v.bytes_field("Meta")?,
            vsn: v.bytes_field("Vsn")?,
        })
    }
}

/// push/pull header
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushPullHeader {
    /// number of node states that follow
    pub nodes: i64,
    /// length of the user state after them
    pub user_state_len: i64,
    /// is this a join
    pub join: bool,
}

impl PushPullHeader {
    /// Encode (no type byte).
    pub fn encode(&self, w: &mut Writer) {
        w.map_len(3)
            .key("Nodes")
            .int(self.nodes)
            .key("UserStateLen")
            .int(self.user_state_len)
            .key("Join")
            .bool(self.join);
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(PushPullHeader {
            nodes: v.i64_field("Nodes")?,
            user_state_len: v.i64_field("UserStateLen")?,
            join: v.bool_field("Join")?,
        })
    }
}

/// memberlist node states
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// alive
    Alive = 0,
    /// suspect
    Suspect = 1,
    /// dead
    Dead = 2,
    /// left
    Left = 3,
}

impl NodeState {
    fn from_i64(i: i64) -> Option<NodeState> {
        Some(match i {
            0 => NodeState::Alive,
            1 => NodeState::Suspect,
            2 => NodeState::Dead,
            3 => NodeState::Left,
            _ => return None,
        })
    }
}

/// one node in a push/pull
#[derive(Debug, Clone, PartialEq)]
pub struct PushNodeState {
    /// name
    pub name: String,
    /// IP
    pub addr: Vec<u8>,
    /// port
    pub port: u16,
    /// metadata
    pub meta: Vec<u8>,
    /// incarnation
    pub incarnation: u32,
    /// state
    pub state: NodeState,
    /// versions
    pub vsn: Vec<u8>,
}

impl PushNodeState {
    /// Encode (no type byte).
    pub fn encode(&self, w: &mut Writer) {
        w.map_len(7)
            .key("Name")
            .str(&self.name)
            .key("Addr")
            .raw(&self.addr)
            .key("Port")
            .uint(u64::from(self.port))
            .key("Meta")
            .raw(&self.meta)
            .key("Incarnation")
            .uint(u64::from(self.incarnation))
            .key("State")
            .int(self.state as i64)
            .key("Vsn")
            .raw(&self.vsn);
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(PushNodeState {
            name: v.string_field("Name")?,
            addr: v.bytes_field("Addr")?,
            port: v.u16_field("Port")?,
            meta: v.bytes_field("Meta")?,
            incarnation: v.u32_field("Incarnation")?,
            state: NodeState::from_i64(v.i64_field("State")?).ok_or(DecodeError::Field("State"))?,
            vsn: v.bytes_field("Vsn")?,
        })
    }
}

/// Build a compound message (at most 255 parts; each part < 64 KiB).
pub fn compound(parts: &[Vec<u8>]) -> Vec<u8> {
    let parts = &parts[..parts.len().min(255)];
    let mut out =
        Vec::with_capacity(2 + parts.len() * 2 + parts.iter().map(Vec::len).sum::<usize>());
    out.push(ty::COMPOUND);
    out.push(parts.len() as u8);
    for p in parts {
        out.extend_from_slice(&(p.len().min(0xffff) as u16).to_be_bytes());
    }
    for p in parts {
        out.extend_from_slice(&p[..p.len().min(0xffff)]);
    }
    out
}

/// Split a compound body (after the type byte). Truncated parts are dropped.
pub fn split_compound(buf: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let (&n, rest) = buf
        .split_first()
        .ok_or(WireError::Frame("empty compound"))?;
    let n = usize::from(n);
    if rest.len() < n * 2 {
        return Err(WireError::Frame("truncated compound lengths"));
    }
    let (lens, mut body) = rest.split_at(n * 2);
    let mut parts = Vec::with_capacity(n);
    for l in lens.chunks_exact(2) {
        let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
        if body.len() < l {
            break;
        }
        let (p, r) = body.split_at(l);
        parts.push(p);
        body = r;
    }
    Ok(parts)
}

/// Wrap a message in a compressMsg.
pub fn compress(msg: &[u8]) -> Vec<u8> {
    let c = lzw::compress(msg);
    let mut w = Writer::with_type(ty::COMPRESS);
    w.map_len(2).key("Algo").uint(0).key("Buf").raw(&c);
    w.into_bytes()
}

/// Unwrap a compressMsg body (after the type byte).
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let v = decode_value(body)?;
    decompress_value(&v)
}

/// Unwrap a decoded compress struct.
pub fn decompress_value(v: &Value) -> Result<Vec<u8>, WireError> {
    let algo = v.u64_field("Algo")?;
    if algo != 0 {
        return Err(WireError::Algo(algo));
    }
    let buf = v.bytes_field("Buf")?;
    Ok(lzw::decompress(&buf, MAX_DECOMPRESSED)?)
}

/// Prefix a CRC32 (IEEE) header.
pub fn with_crc(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(ty::HAS_CRC);
    out.extend_from_slice(&crc32fast::hash(msg).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Prefix a label header (nothing for an empty label).
pub fn with_label(label: &str, msg: Vec<u8>) -> Vec<u8> {
    if label.is_empty() {
        return msg;
    }
    let mut out = Vec::with_capacity(msg.len() + 2 + label.len());
    out.push(ty::HAS_LABEL);
    out.push(label.len().min(255) as u8);
    out.extend_from_slice(&label.as_bytes()[..label.len().min(255)]);
    out.extend_from_slice(&msg);
    out
}

/// Split a label header off a packet.
pub fn strip_label(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    if buf.first() != Some(&ty::HAS_LABEL) {
        return Ok((buf, &[]));
    }
    let n = usize::from(*buf.get(1).ok_or(WireError::Frame("truncated label"))?);
    if n == 0 || buf.len() < 2 + n {
        return Err(WireError::Frame("bad label"));
    }
    Ok((&buf[2 + n..], &buf[2..2 + n]))
}

/// An AES-GCM key ring (16, 24 or 32-byte keys); the first key (the
/// primary) encrypts, any key decrypts. Clones share the ring, so Serf's
/// key queries change it for every user at once.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: std::sync::Arc<std::sync::RwLock<Vec<Vec<u8>>>>,
    /// encryption is on for the life of the ring (it started with keys)
    enabled: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys().len())
    }
}

/// Most keys a ring holds.
pub const MAX_KEYS: usize = 16;

/// Why a key ring change was refused (the messages memberlist gives).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyringError {
    /// not 16, 24 or 32 bytes
    #[error("key size must be 16, 24 or 32 bytes")]
    Size,
    /// `use` of a key not in the ring
    #[error("requested key is not in the keyring")]
    NotInRing,
    /// `remove` of the primary key
    #[error("removing the primary key is not allowed")]
    Primary,
    /// more than [`MAX_KEYS`]
    #[error("keyring is full ({MAX_KEYS} keys)")]
    Full,
}

const NONCE: usize = 12;
const TAG: usize = 16;

impl Keyring {
    /// A ring from keys (primary first). Keys must be 16, 24 or 32 bytes;
    /// at most [`MAX_KEYS`].
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, WireError> {
        if keys.iter().any(|k| ![16, 24, 32].contains(&k.len())) {
            return Err(WireError::Frame("key must be 16, 24 or 32 bytes"));
        }
        if keys.len() > MAX_KEYS {
            return Err(WireError::Frame("more than 16 keys"));
        }
        let mut ring: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for k in keys {
            if !ring.contains(&k) {
                ring.push(k);
            }
        }
        Ok(Keyring {
            enabled: !ring.is_empty(),
            keys: std::sync::Arc::new(std::sync::RwLock::new(ring)),
        })
    }
    /// Is encryption on? (A ring that started with keys never becomes
    /// empty: the primary key cannot be removed.)
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    /// The keys, primary first.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Vec<u8>>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }
    /// Add a key for decryption (nothing if it is already there), as
    /// memberlist's `AddKey`.
    pub fn install(&self, key: &[u8]) -> Result<(), KeyringError> {
        if ![16, 24, 32].contains(&key.len()) {
            return Err(KeyringError::Size);
        }
        let mut k = self.write();
        if k.iter().any(|x| x == key) {
            return Ok(());
        }
        if k.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        k.push(key.to_vec());
        Ok(())
    }
    /// Make an installed key the primary, as memberlist's `UseKey`.
    pub fn use_key(&self, key: &[u8]) -> Result<(), KeyringError> {
        let mut k = self.write();
        let i = k
            .iter()
            .position(|x| x == key)
            .ok_or(KeyringError::NotInRing)?;
        let key = k.remove(i);
        k.insert(0, key);
        Ok(())
    }
    /// Drop a key (nothing if it is not there); never the primary, as
    /// memberlist's `RemoveKey`.
    pub fn remove(&self, key: &[u8]) -> Result<(), KeyringError> {
        let mut k = self.write();
        if k.first().is_some_and(|p| p == key) {
            return Err(KeyringError::Primary);
        }
        k.retain(|x| x != key);
        Ok(())
    }
    fn seal(key: &[u8], nonce: &[u8], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let n = Nonce::from_slice(nonce);
        let p = Payload { msg, aad };
        match key.len() {
            16 => Aes128Gcm::new_from_slice(key).ok()?.encrypt(n, p).ok(),
            24 => AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
                .ok()?
                .encrypt(n, p)
                .ok(),
            32 => Aes256Gcm::new_from_slice(key).ok()?.encrypt(n, p).ok(),
            _ => None,
        }
    }
    fn open(key: &[u8], nonce: &[u8], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let n = Nonce::from_slice(nonce);
        let p = Payload { msg, aad };
        match key.len() {
            16 => Aes128Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
            24 => AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(key)
                .ok()?
                .decrypt(n, p)
                .ok(),
            32 => Aes256Gcm::new_from_slice(key).ok()?.decrypt(n, p).ok(),
            _ => None,
        }
    }
    /// Encrypt with the primary key, version 1 (no padding):
    /// `[vsn][nonce 12][ciphertext+tag]`.
    pub fn encrypt(&self, msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, WireError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let key = keys.first().ok_or(WireError::Frame("no key"))?;
        let mut nonce = [0u8; NONCE];
        rand::fill(&mut nonce);
        let ct = Self::seal(key, &nonce, msg, aad).ok_or(WireError::Decrypt)?;
        let mut out = Vec::with_capacity(1 + NONCE + ct.len());
        out.push(1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }
    /// Length of an encryption of `n` bytes (version 1).
    pub fn encrypted_len(n: usize) -> usize {
        1 + NONCE + n + TAG
    }
    /// Decrypt versions 0 (PKCS7 padded) and 1 with any key of the ring.
    pub fn decrypt(&self, msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, WireError> {
        let (&vsn, rest) = msg.split_first().ok_or(WireError::Decrypt)?;
        if vsn > 1 || rest.len() < NONCE + TAG {
            return Err(WireError::Decrypt);
        }
        let (nonce, ct) = rest.split_at(NONCE);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        for k in keys.iter() {
            if let Some(mut plain) = Self::open(k, nonce, ct, aad) {
                if vsn == 0 {
                    let pad = usize::from(*plain.last().ok_or(WireError::Decrypt)?);
                    if pad == 0 || pad > 16 || pad > plain.len() {
                        return Err(WireError::Decrypt);
                    }
                    plain.truncate(plain.len() - pad);
                }
                return Ok(plain);
            }
        }
        Err(WireError::Decrypt)
    }
}

/// Everything needed to frame packets for one cluster.
#[derive(Debug, Clone, Default)]
pub struct Framing {
    /// keyring (empty: clear text)
    pub keyring: Keyring,
    /// memberlist label (empty: none; Serf 0.9.4 predates labels)
    pub label: String,
    /// compress outgoing packets when it helps
    pub compress: bool,
}

impl Framing {
    /// Frame an outgoing packet: compress, CRC (if the peer speaks
    /// protocol 5), encrypt, label.
    pub fn seal_packet(&self, msg: &[u8], peer_crc: bool) -> Result<Vec<u8>, WireError> {
        let mut m = msg.to_vec();
        if self.compress && m.len() > 64 {
            let c = compress(&m);
            if c.len() < m.len() {
                m = c;
            }
        }
        if peer_crc {
            m = with_crc(&m);
        }
        if self.keyring.enabled() {
            m = self.keyring.encrypt(&m, self.label.as_bytes())?;
        }
        Ok(with_label(&self.label, m))
    }
    /// Unframe an incoming packet: label, decryption, CRC. Returns the
    /// message (starting with its type byte).
    pub fn open_packet(&self, buf: &[u8]) -> Result<Vec<u8>, WireError> {
        let (buf, label) = strip_label(buf)?;
        if label != self.label.as_bytes() {
            return Err(WireError::Label);
        }
        let plain = if self.keyring.enabled() {
            self.keyring.decrypt(buf, label)?
        } else {
            buf.to_vec()
        };
        if plain.len() >= 5 && plain[0] == ty::HAS_CRC {
            let want = u32::from_be_bytes([plain[1], plain[2], plain[3], plain[4]]);
            if crc32fast::hash(&plain[5..]) != want {
                return Err(WireError::Crc);
            }
            return Ok(plain[5..].to_vec());
        }
        Ok(plain)
    }
    /// Frame an outgoing stream message.
    pub fn seal_stream(&self, msg: &[u8]) -> Result<Vec<u8>, WireError> {
        let m = if self.compress {
            compress(msg)
        } else {
            msg.to_vec()
        };
        let body = if self.keyring.enabled() {
            let len = Keyring::encrypted_len(m.len()) as u32;
            let mut hdr = vec![ty::ENCRYPT];
            hdr.extend_from_slice(&len.to_be_bytes());
            let mut aad = hdr.clone();
            aad.extend_from_slice(self.label.as_bytes());
            let ct = self.keyring.encrypt(&m, &aad)?;
            hdr.extend_from_slice(&ct);
            hdr
        } else {
            m
        };
        Ok(with_label(&self.label, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_matches_go_encoding() {
        // bytes go-msgpack writes for ping{SeqNo: 1, Node: "a"} (omitempty
        // fields absent): type 0, fixmap 2, "SeqNo" 1, "Node" "a"
        let p = Ping {
            seq_no: 1,
            node: "a".into(),
            ..Default::default()
        };
        let want: Vec<u8> = [
            &[0u8, 0x82, 0xa5][..],
            b"SeqNo",
            &[0x01, 0xa4],
            b"Node",
            &[0xa1, b'a'],
        ]
        .concat();
        assert_eq!(p.encode(), want);
        let v = decode_value(&want[1..]).unwrap();
        assert_eq!(Ping::decode(&v).unwrap(), p);
    }

    #[test]
    fn alive_roundtrip_and_compound() {
        let a = Alive {
            incarnation: 7,
            node: "n1".into(),
            addr: vec![127, 0, 0, 1],
            port: 7946,
            meta: vec![0xff, 0x80],
            vsn: vec![1, 5, 2, 2, 5, 4],
        };
        let m = a.encode();
        let c = compound(&[m.clone(), Ping::default().encode()]);
        let parts = split_compound(&c[1..]).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], &m[..]);
        assert_eq!(
            Alive::decode(&decode_value(&parts[0][1..]).unwrap()).unwrap(),
            a
        );
        // a truncated compound drops the cut part only
        let parts = split_compound(&c[1..c.len() - 1]).unwrap();
        assert_eq!(parts.len(), 1);
    }

    #[test]
    fn packet_framing_roundtrip_with_key_and_label() {
        for key_len in [16, 24, 32] {
            let f = Framing {
                keyring: Keyring::new(vec![vec![7u8; key_len]]).unwrap(),
                label: "lab".into(),
                compress: true,
            };
            let msg = vec![ty::USER; 300];
            let p = f.seal_packet(&msg, true).unwrap();
            assert_eq!(p[0], ty::HAS_LABEL);
            let opened = f.open_packet(&p).unwrap();
            // compression may have wrapped it
            let inner = if opened[0] == ty::COMPRESS {
                decompress(&opened[1..]).unwrap()
            } else {
                opened
            };
            assert_eq!(inner, msg);
            // another key cannot read it
            let g = Framing {
                keyring: Keyring::new(vec![vec![8u8; key_len]]).unwrap(),
                ..f.clone()
            };
            assert!(g.open_packet(&p).is_err());
        }
    }

    #[test]
    fn crc_detects_corruption() {
        let f = Framing::default();
        let mut p = f.seal_packet(&Ping::default().encode(), true).unwrap();
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(matches!(f.open_packet(&p), Err(WireError::Crc)));
    }

    #[test]
    fn keyring_changes_follow_memberlist() {
        let (a, b) = (vec![1u8; 16], vec![2u8; 32]);
        let ring = Keyring::new(vec![a.clone()]).unwrap();
        let shared = ring.clone();
        assert_eq!(ring.install(&[0; 5]), Err(KeyringError::Size));
        ring.install(&b).unwrap();
        ring.install(&b).unwrap();
        assert_eq!(shared.keys(), vec![a.clone(), b.clone()]);
        // encrypted with the primary, readable by a ring holding either
        let old = ring.encrypt(b"x", b"").unwrap();
        assert_eq!(ring.use_key(&[3; 16]), Err(KeyringError::NotInRing));
        ring.use_key(&b).unwrap();
        assert_eq!(shared.keys(), vec![b.clone(), a.clone()]);
        let new = shared.encrypt(b"y", b"").unwrap();
        let only_b = Keyring::new(vec![b.clone()]).unwrap();
        assert_eq!(only_b.decrypt(&new, b"").unwrap(), b"y");
        assert!(only_b.decrypt(&old, b"").is_err());
        assert_eq!(ring.remove(&b), Err(KeyringError::Primary));
        ring.remove(&a).unwrap();
        ring.remove(&a).unwrap();
        assert_eq!(ring.keys(), vec![b.clone()]);
        for i in 1..MAX_KEYS {
            ring.install(&[i as u8 + 10; 24]).unwrap();
        }
        assert_eq!(ring.install(&[99; 24]), Err(KeyringError::Full));
        assert!(ring.enabled());
        assert!(!Keyring::new(Vec::new()).unwrap().enabled());
    }

    #[test]
    fn decrypts_version0_padding() {
        // build a version-0 message the way memberlist 0.2 does: PKCS7 pad,
        // then seal
        let key = vec![3u8; 16];
        let ring = Keyring::new(vec![key.clone()]).unwrap();
        let msg = b"hello".to_vec();
        let mut padded = msg.clone();
        let pad = 16 - padded.len() % 16;
        padded.extend(std::iter::repeat_n(pad as u8, pad));
        let nonce = [9u8; 12];
        let ct = Keyring::seal(&key, &nonce, &padded, b"").unwrap();
        let mut wire = vec![0u8];
        wire.extend_from_slice(&nonce);
        wire.extend_from_slice(&ct);
        assert_eq!(ring.decrypt(&wire, b"").unwrap(), msg);
    }
}
