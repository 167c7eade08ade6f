//! A small, bounded MessagePack codec that matches what HashiCorp's
//! go-msgpack (`codec.MsgpackHandle` with default settings) writes and reads.
//!
//! Quirks of that handle that matter on the wire:
//! - strings and `[]byte` are both written as the old "raw" family
//!   (fixraw `0xa0..=0xbf`, raw16 `0xda`, raw32 `0xdb`); there is no str8
//!   (`0xd9`) and no bin family on the way out. We accept all of them in.
//! - Go structs are maps keyed by field name, in declaration order;
//!   `omitempty` fields are skipped when empty; nil slices are `nil` (`0xc0`).
//! - unsigned integers use the smallest unsigned form; signed integers
//!   above 127 use the signed forms (`0xd1..=0xd3`). We accept any integer
//!   form wherever an integer is expected.
//! - `[]uint8` (for example memberlist's `Vsn`) is a raw string, not an array.

use thiserror::Error;

/// Deepest nesting accepted when decoding.
pub const MAX_DEPTH: usize = 16;
/// Most values (scalars, strings, arrays, maps and their entries) one
/// decode builds. A [`Value`] takes 32 bytes however small its encoding
/// (a `nil` is one byte), so without this a 4 MiB message of `nil`s would
/// take 128 MiB. Serf's largest legitimate value, the push/pull state of a
/// 4096-member table (its status times, left members and up to 512 buffered
/// events), stays under half of it.
pub const MAX_VALUES: usize = 32 * 1024;

/// A decoded MessagePack value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `nil`
    Nil,
    /// `true`/`false`
    Bool(bool),
    /// Any integer that fits i64 (negative ones always land here).
    Int(i64),
    /// A non-negative integer.
    Uint(u64),
    /// A float (32-bit floats are widened).
    F64(f64),
    /// raw/str/bin: bytes, interpreted by the reader.
    Bytes(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map, in wire order.
    Map(Vec<(Value, Value)>),
    /// An extension value (type, data).
    Ext(i8, Vec<u8>),
}

/// Why a buffer did not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the value does (a stream may supply more).
    #[error("truncated msgpack value")]
    Incomplete,
    /// A byte that starts no known value (`0xc1`).
    #[error("invalid msgpack marker {0:#04x}")]
    BadMarker(u8),
    /// Deeper than [`MAX_DEPTH`].
    #[error("msgpack nesting too deep")]
    TooDeep,
    /// A field had the wrong type or was missing.
    #[error("field {0}: wrong type or missing")]
    Field(&'static str),
    /// More than [`MAX_VALUES`] values.
    #[error("more than {MAX_VALUES} msgpack values")]
    TooMany,
    /// Other structural problem.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Value {
    /// Integer value as u64 (negative values are rejected).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(u) => Some(u),
            Value::Int(i) if i >= 0 => Some(i as u64),
            _ => None,
        }
    }
    /// Integer value as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Uint(u) => i64::try_from(u).ok(),
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
    /// Float value (integers are converted, as Go's decoder does).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(f) => Some(f),
            Value::Uint(u) => Some(u as f64),
            Value::Int(i) => Some(i as f64),
            _ => None,
        }
    }
    /// Bytes of a raw/str/bin value; `nil` reads as empty, an array of small
    /// integers reads as bytes (other encoders write `[]uint8` that way).
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Bytes(b) => Some(b.clone()),
            Value::Nil => Some(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_u64().and_then(|u| u8::try_from(u).ok()))
                .collect(),
            _ => None,
        }
    }
    /// UTF-8 (lossy) string of a raw value; `nil` reads as empty.
    pub fn as_string(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Nil => Some(String::new()),
            _ => None,
        }
    }
    /// Boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            Value::Nil => Some(false),
            _ => None,
        }
    }
    /// Look a field up by name in a map value (Go struct encoding).
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m
                .iter()
                .find(|(k, _)| matches!(k, Value::Bytes(b) if b == name.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    /// u64 field; absent reads as 0 (Go zero value).
    pub fn u64_field(&self, name: &'static str) -> Result<u64, DecodeError> {
        match self.field(name) {
            None | Some(Value::Nil) => Ok(0),
            Some(v) => v.as_u64().ok_or(DecodeError::Field(name)),
        }
    }
    /// i64 field; absent reads as 0.
    pub fn i64_field(&self, name: &'static str) -> Result<i64, DecodeError> {
        match self.field(name) {
            None | Some(Value::Nil) => Ok(0),
            Some(v) => v.as_i64().ok_or(DecodeError::Field(name)),
        }
    }
    /// u32 field; absent reads as 0.
    pub fn u32_field(&self, name: &'static str) -> Result<u32, DecodeError> {
        u32::try_from(self.u64_field(name)?).map_err(|_| DecodeError::Field(name))
    }
    /// u16 field; absent reads as 0.
    pub fn u16_field(&self, name: &'static str) -> Result<u16, DecodeError> {
        u16::try_from(self.u64_field(name)?).map_err(|_| DecodeError::Field(name))
    }
    /// u8 field; absent reads as 0.
    pub fn u8_field(&self, name: &'static str) -> Result<u8, DecodeError> {
        u8::try_from(self.u64_field(name)?).map_err(|_| DecodeError::Field(name))
    }
    /// bytes field; absent reads as empty.
    pub fn bytes_field(&self, name: &'static str) -> Result<Vec<u8>, DecodeError> {
        match self.field(name) {
            None => Ok(Vec::new()),
            Some(v) => v.as_bytes().ok_or(DecodeError::Field(name)),
        }
    }
    /// string field; absent reads as empty.
    pub fn string_field(&self, name: &'static str) -> Result<String, DecodeError> {
        match self.field(name) {
            None => Ok(String::new()),
            Some(v) => v.as_string().ok_or(DecodeError::Field(name)),
        }
    }
    /// bool field; absent reads as false.
    pub fn bool_field(&self, name: &'static str) -> Result<bool, DecodeError> {
        match self.field(name) {
            None => Ok(false),
            Some(v) => v.as_bool().ok_or(DecodeError::Field(name)),
        }
    }
    /// f64 field; absent reads as 0.
    pub fn f64_field(&self, name: &'static str) -> Result<f64, DecodeError> {
        match self.field(name) {
            None | Some(Value::Nil) => Ok(0.0),
            Some(v) => v.as_f64().ok_or(DecodeError::Field(name)),
        }
    }
    /// array field; absent or nil reads as empty.
    pub fn array_field(&self, name: &'static str) -> Result<&[Value], DecodeError> {
        match self.field(name) {
            None | Some(Value::Nil) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(DecodeError::Field(name)),
        }
    }
}

/// Decode one value from the front of `buf`; returns it and the bytes used.
pub fn decode(buf: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut r = Reader {
        buf,
        pos: 0,
        values: 0,
    };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// Decode a value that must fill `buf` exactly... or at least start it:
/// Go's decoder ignores trailing bytes, so do we.
pub fn decode_value(buf: &[u8]) -> Result<Value, DecodeError> {
    decode(buf).map(|(v, _)| v)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// values built so far (bounded by [`MAX_VALUES`])
    values: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
        if end > self.buf.len() {
            return Err(DecodeError::Incomplete);
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        let s = self.take(n)?;
        Ok(s.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.be(n)?).map_err(|_| DecodeError::Incomplete)
    }
    fn bytes(&mut self, n: usize) -> Result<Value, DecodeError> {
        Ok(Value::Bytes(self.take(n)?.to_vec()))
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        // every element takes at least one byte: bound the allocation by input
        if n > self.remaining() {
            return Err(DecodeError::Incomplete);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }
    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        if n.saturating_mul(2) > self.remaining() {
            return Err(DecodeError::Incomplete);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let val = self.value(depth + 1)?;
            v.push((k, val));
        }
        Ok(Value::Map(v))
    }
    fn ext(&mut self, n: usize) -> Result<Value, DecodeError> {
        let t = self.u8()? as i8;
        Ok(Value::Ext(t, self.take(n)?.to_vec()))
    }
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(DecodeError::TooMany);
        }
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Value::Uint(u64::from(m)),
            0x80..=0x8f => return self.map(usize::from(m & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(m & 0x0f), depth),
            0xa0..=0xbf => return self.bytes(usize::from(m & 0x1f)),
            0xc0 => Value::Nil,
            0xc1 => return Err(DecodeError::BadMarker(m)),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 | 0xd9 => {
                let n = self.len(1)?;
                return self.bytes(n);
            }
            0xc5 | 0xda => {
                let n = self.len(2)?;
                return self.bytes(n);
            }
            0xc6 | 0xdb => {
                let n = self.len(4)?;
                return self.bytes(n);
            }
            0xc7 => {
                let n = self.len(1)?;
                return self.ext(n);
            }
            0xc8 => {
                let n = self.len(2)?;
                return self.ext(n);
            }
            0xc9 => {
                let n = self.len(4)?;
                return self.ext(n);
            }
            0xca => Value::F64(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Value::F64(f64::from_bits(self.be(8)?)),
            0xcc => Value::Uint(self.be(1)?),
            0xcd => Value::Uint(self.be(2)?),
            0xce => Value::Uint(self.be(4)?),
            0xcf => Value::Uint(self.be(8)?),
            0xd0 => Value::Int(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd4 => return self.ext(1),
            0xd5 => return self.ext(2),
            0xd6 => return self.ext(4),
            0xd7 => return self.ext(8),
            0xd8 => return self.ext(16),
            0xdc => {
                let n = self.len(2)?;
                return self.array(n, depth);
            }
            0xdd => {
                let n = self.len(4)?;
                return self.array(n, depth);
            }
            0xde => {
                let n = self.len(2)?;
                return self.map(n, depth);
            }
            0xdf => {
                let n = self.len(4)?;
                return self.map(n, depth);
            }
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
        })
    }
}

/// Where one value ends in a buffer that grows at its end (a stream),
/// found without decoding it: each [`Scanner::scan`] resumes where the last
/// stopped, so a value that arrives in n pieces costs time linear in its
/// length, not n times it. Memory: one counter per open array or map
/// (at most [`MAX_DEPTH`]).
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// bytes of the value known complete so far
    pos: usize,
    /// items still to come in each open array or map, innermost last
    open: Vec<u64>,
    /// values seen so far (a value [`decode`] would refuse is refused as
    /// soon as it passes [`MAX_VALUES`], not when it ends)
    values: usize,
}

/// The head of one value: its header length, the bytes of its body
/// (strings, extensions, scalars) and how many values it contains.
fn head(buf: &[u8]) -> Result<Option<(usize, usize, u64)>, DecodeError> {
    let Some(&m) = buf.first() else {
        return Ok(None);
    };
    let be = |n: usize| -> Option<u64> {
        let b = buf.get(1..1 + n)?;
        Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
    };
    // (header bytes after the marker, body bytes, children)
    let sized = |n: usize, f: &dyn Fn(u64) -> (usize, u64)| -> Option<(usize, usize, u64)> {
        let len = be(n)?;
        let (body, children) = f(len);
        Some((1 + n, body, children))
    };
    let body = |len: u64| (usize::try_from(len).unwrap_or(usize::MAX), 0);
    let ext = |len: u64| {
        (
            usize::try_from(len).unwrap_or(usize::MAX).saturating_add(1),
            0,
        )
    };
    Ok(match m {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => Some((1, 0, 0)),
        0x80..=0x8f => Some((1, 0, 2 * u64::from(m & 0x0f))),
        0x90..=0x9f => Some((1, 0, u64::from(m & 0x0f))),
        0xa0..=0xbf => Some((1, usize::from(m & 0x1f), 0)),
        0xc1 => return Err(DecodeError::BadMarker(m)),
        0xc4 | 0xd9 => sized(1, &body),
        0xc5 | 0xda => sized(2, &body),
        0xc6 | 0xdb => sized(4, &body),
        0xc7 => sized(1, &ext),
        0xc8 => sized(2, &ext),
        0xc9 => sized(4, &ext),
        0xca => Some((1, 4, 0)),
        0xcb => Some((1, 8, 0)),
        0xcc | 0xd0 => Some((1, 1, 0)),
        0xcd | 0xd1 => Some((1, 2, 0)),
        0xce | 0xd2 => Some((1, 4, 0)),
        0xcf | 0xd3 => Some((1, 8, 0)),
        0xd4 => Some((1, 2, 0)),
        0xd5 => Some((1, 3, 0)),
        0xd6 => Some((1, 5, 0)),
        0xd7 => Some((1, 9, 0)),
        0xd8 => Some((1, 17, 0)),
        0xdc => sized(2, &|n| (0, n)),
        0xdd => sized(4, &|n| (0, n)),
        0xde => sized(2, &|n| (0, 2 * n)),
        0xdf => sized(4, &|n| (0, 2 * n)),
    })
}

impl Scanner {
    /// A scanner for a value starting at the front of the buffers it sees.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Look at `buf` (the same bytes as last time, perhaps with more at
    /// the end): `Ok(Some(n))` when the value is complete in its first `n`
    /// bytes, `Ok(None)` while more are needed. Errors as [`decode`] would
    /// for a bad marker or nesting deeper than [`MAX_DEPTH`].
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        loop {
            let Some((hdr, body, children)) = head(buf.get(self.pos..).unwrap_or(&[]))? else {
                return Ok(None);
            };
            if self.open.len() > MAX_DEPTH {
                return Err(DecodeError::TooDeep);
            }
            let end = self.pos.saturating_add(hdr).saturating_add(body);
            if end > buf.len() {
                return Ok(None);
            }
            self.values += 1;
            if self.values > MAX_VALUES {
                return Err(DecodeError::TooMany);
            }
            self.pos = end;
            if children > 0 {
                self.open.push(children);
                continue;
            }
            // one value complete: close the arrays and maps it completes
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Writes MessagePack the way go-msgpack's default handle does.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    /// A writer whose output starts with a message-type byte.
    pub fn with_type(t: u8) -> Self {
        Writer { buf: vec![t] }
    }
    /// Map header.
    pub fn map_len(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.buf.push(0x80 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xde);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdf);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self
    }
    /// Array header.
    pub fn array_len(&mut self, n: usize) -> &mut Self {
        if n < 16 {
            self.buf.push(0x90 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xdc);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdd);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self
    }
    /// A raw string (used for both Go strings and `[]byte`).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len();
        if n < 32 {
            self.buf.push(0xa0 | n as u8);
        } else if n <= 0xffff {
            self.buf.push(0xda);
            self.buf.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.buf.push(0xdb);
            self.buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(b);
        self
    }
    /// A string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.raw(s.as_bytes())
    }
    /// `nil`
    pub fn nil(&mut self) -> &mut Self {
        self.buf.push(0xc0);
        self
    }
    /// A boolean.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.buf.push(if b { 0xc3 } else { 0xc2 });
        self
    }
    /// An unsigned integer, smallest form.
    pub fn uint(&mut self, u: u64) -> &mut Self {
        if u < 128 {
            self.buf.push(u as u8);
        } else if u <= 0xff {
            self.buf.extend_from_slice(&[0xcc, u as u8]);
        } else if u <= 0xffff {
            self.buf.push(0xcd);
            self.buf.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= 0xffff_ffff {
            self.buf.push(0xce);
            self.buf.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            self.buf.push(0xcf);
            self.buf.extend_from_slice(&u.to_be_bytes());
        }
        self
    }
    /// A signed integer, in the forms go-msgpack uses for Go `int`.
    pub fn int(&mut self, i: i64) -> &mut Self {
        if (-32..=127).contains(&i) {
            self.buf.push(i as i8 as u8);
        } else if (i64::from(i8::MIN)..=i64::from(i8::MAX)).contains(&i) {
            self.buf.extend_from_slice(&[0xd0, i as i8 as u8]);
        } else if (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&i) {
            self.buf.push(0xd1);
            self.buf.extend_from_slice(&(i as i16).to_be_bytes());
        } else if (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&i) {
            self.buf.push(0xd2);
            self.buf.extend_from_slice(&(i as i32).to_be_bytes());
        } else {
            self.buf.push(0xd3);
            self.buf.extend_from_slice(&i.to_be_bytes());
        }
        self
    }
    /// A float64.
    pub fn f64(&mut self, f: f64) -> &mut Self {
        self.buf.push(0xcb);
        self.buf.extend_from_slice(&f.to_bits().to_be_bytes());
        self
    }
    /// A Go struct field name.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.str(k)
    }
    /// Append already-encoded bytes.
    pub fn extend(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_scalars() {
        for u in [
            0u64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut w = Writer::new();
            w.uint(u);
            assert_eq!(decode_value(&w.buf).unwrap().as_u64(), Some(u));
        }
        for i in [
            -1i64,
            -32,
            -33,
            -128,
            -129,
            127,
            128,
            32767,
            32768,
            i64::MIN,
            i64::MAX,
        ] {
            let mut w = Writer::new();
            w.int(i);
            assert_eq!(decode_value(&w.buf).unwrap().as_i64(), Some(i), "{i}");
        }
        let mut w = Writer::new();
        w.f64(1.5);
        assert_eq!(decode_value(&w.buf).unwrap().as_f64(), Some(1.5));
    }

    #[test]
    fn go_style_int_encoding() {
        // go-msgpack writes Go int 300 as int16
        let mut w = Writer::new();
        w.int(300);
        assert_eq!(w.buf, vec![0xd1, 0x01, 0x2c]);
        // and a 40-byte string as raw16, not str8
        let mut w = Writer::new();
        w.raw(&[b'x'; 40]);
        assert_eq!(&w.buf[..3], &[0xda, 0x00, 40]);
    }

    #[test]
    fn truncation_is_incomplete() {
        let mut w = Writer::new();
        w.map_len(2).key("SeqNo").uint(7).key("Node").str("abc");
        for cut in 0..w.buf.len() {
            assert_eq!(
                decode(&w.buf[..cut]),
                Err(DecodeError::Incomplete),
                "cut {cut}"
            );
        }
        let v = decode_value(&w.buf).unwrap();
        assert_eq!(v.u32_field("SeqNo").unwrap(), 7);
        assert_eq!(v.string_field("Node").unwrap(), "abc");
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // array claiming 4 billion entries in a 5-byte buffer
        assert_eq!(
            decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(
            decode(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Incomplete)
        );
        assert_eq!(
            decode(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Incomplete)
        );
        let deep = vec![0x91u8; 100];
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        assert_eq!(decode(&[0xc1]), Err(DecodeError::BadMarker(0xc1)));
    }

    #[test]
    fn many_small_values_are_refused_before_they_take_memory() {
        // an array of 100,000 nils: 100 KB that would be 3 MB of values
        let mut w = Writer::new();
        w.array_len(100_000);
        w.buf.extend(std::iter::repeat_n(0xc0, 100_000));
        assert_eq!(decode(&w.buf), Err(DecodeError::TooMany));
        let mut w = Writer::new();
        w.array_len(MAX_VALUES - 1);
        w.buf.extend(std::iter::repeat_n(0xc0, MAX_VALUES - 1));
        assert!(decode(&w.buf).is_ok());
    }

    fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.map_len(5)
            .key("a")
            .array_len(3)
            .uint(300)
            .int(-70_000)
            .f64(1.5)
            .key("b")
            .raw(&[7; 40])
            .key("c")
            .map_len(0)
            .key("d")
            .array_len(2)
            .array_len(0)
            .map_len(1)
            .key("x")
            .nil()
            .key("e")
            .raw(&vec![1; 70_000]);
        w.buf.extend_from_slice(&[0xd4, 1, 2, 0xc7, 2, 9, 1, 2]);
        w.buf.extend_from_slice(&[0xcf, 0, 0, 0, 0, 0, 0, 0, 1]);
        w.into_bytes()
    }

    #[test]
    fn scanner_finds_the_end_whatever_the_pieces() {
        let buf = sample();
        let (_, want) = decode(&buf).unwrap();
        // all at once, then byte by byte, then in uneven pieces
        assert_eq!(Scanner::new().scan(&buf), Ok(Some(want)));
        let mut sc = Scanner::new();
        let mut got = None;
        for n in 0..=buf.len() {
            if let Some(end) = sc.scan(&buf[..n]).unwrap() {
                got = Some((n, end));
                break;
            }
        }
        assert_eq!(got, Some((want, want)));
        let mut sc = Scanner::new();
        let mut n = 0;
        let mut step = 1;
        let end = loop {
            if let Some(e) = sc.scan(&buf[..n.min(buf.len())]).unwrap() {
                break e;
            }
            n += step;
            step = step * 3 % 1013 + 1;
        };
        assert_eq!(end, want);
        // every value of the tail alone
        for v in [
            &[0xd4u8, 1, 2][..],
            &[0xc7, 2, 9, 1, 2],
            &[0xcf, 0, 0, 0, 0, 0, 0, 0, 1],
        ] {
            assert_eq!(Scanner::new().scan(v), Ok(Some(v.len())), "{v:?}");
            assert_eq!(Scanner::new().scan(&v[..v.len() - 1]), Ok(None), "{v:?}");
        }
    }

    #[test]
    fn scanner_errors_like_decode() {
        let deep = vec![0x91u8; 100];
        assert_eq!(Scanner::new().scan(&deep), Err(DecodeError::TooDeep));
        assert_eq!(decode(&deep[..17]), Err(DecodeError::Incomplete));
        let ok_depth = [vec![0x91u8; MAX_DEPTH], vec![0xc0]].concat();
        assert!(decode(&ok_depth).is_ok());
        assert_eq!(Scanner::new().scan(&ok_depth), Ok(Some(ok_depth.len())));
        assert_eq!(
            Scanner::new().scan(&[0x92, 0xc1]),
            Err(DecodeError::BadMarker(0xc1))
        );
        // a claimed 4 GiB string only waits
        assert_eq!(
            Scanner::new().scan(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Ok(None)
        );
    }
}
