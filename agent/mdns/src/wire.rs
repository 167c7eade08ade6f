//! DNS message codec for mDNS (RFC 1035 wire format with the RFC 6762
//! cache-flush / unicast-response bits), bounded for untrusted input.
//!
//! Decoding never panics: every read is bounds-checked, compression pointers
//! must point strictly backwards (so loops are impossible) and are also
//! capped in number, names are capped at 255 bytes, sections at
//! [`MAX_RECORDS`] records and messages at [`MAX_MESSAGE`] bytes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Largest message accepted or produced (RFC 6762 §17: 9000 bytes).
pub const MAX_MESSAGE: usize = 9000;
/// Most records (questions + answers + authority + additional) in one message.
pub const MAX_RECORDS: usize = 256;
/// Most compression pointers followed while reading one name.
const MAX_POINTERS: usize = 64;
/// Most TXT strings kept from one TXT record.
const MAX_TXT_STRINGS: usize = 64;

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_NSEC: u16 = 47;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

/// Why a message was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("too many records")]
    TooManyRecords,
    #[error("bad name (label type, length or compression pointer)")]
    BadName,
    #[error("record data length does not match its type")]
    BadRdata,
}

/// A domain name as labels; comparisons ignore ASCII case (RFC 6762 §16).
#[derive(Clone, Default)]
pub struct Name(pub Vec<String>);

impl Name {
    /// Parse dotted text (`a.b.local`); a `\.` is not supported, labels are
    /// split on every dot. Use [`Name::from_labels`] for instance names.
    pub fn parse(s: &str) -> Name {
        Name(
            s.trim_end_matches('.')
                .split('.')
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// Build from labels (an instance label may contain dots and spaces).
    pub fn from_labels<I: IntoIterator<Item = S>, S: Into<String>>(labels: I) -> Name {
        Name(labels.into_iter().map(Into::into).collect())
    }

    /// `first` label followed by the labels of `rest`.
    pub fn prepend(first: &str, rest: &Name) -> Name {
        let mut v = Vec::with_capacity(rest.0.len() + 1);
        v.push(first.to_string());
        v.extend(rest.0.iter().cloned());
        Name(v)
    }

    /// Labels after the first one.
    pub fn parent(&self) -> Name {
        Name(self.0.iter().skip(1).cloned().collect())
    }

    /// Lower-cased dotted form, for map keys.
    pub fn key(&self) -> String {
        let mut s = String::new();
        for l in &self.0 {
            // escape so that label boundaries stay distinct ("a.b" vs "a","b")
            for c in l.chars() {
                if c == '.' || c == '\\' {
                    s.push('\\');
                }
                s.push(c.to_ascii_lowercase());
            }
            s.push('.');
        }
        s
    }

    /// Does this name end with `suffix` (case-insensitive)?
    pub fn ends_with(&self, suffix: &Name) -> bool {
        self.0.len() >= suffix.0.len()
            && self.0[self.0.len() - suffix.0.len()..]
                .iter()
                .zip(&suffix.0)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }

    fn wire_len(&self) -> usize {
        self.0.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }
}

impl PartialEq for Name {
    fn eq(&self, o: &Name) -> bool {
        self.0.len() == o.0.len()
            && self
                .0
                .iter()
                .zip(&o.0)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}
impl Eq for Name {}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.0 {
            write!(f, "{l}.")?;
        }
        Ok(())
    }
}
impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Record data of the types mDNS uses; others are kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(Name),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    Txt(Vec<Vec<u8>>),
    Other(Vec<u8>),
}

/// One resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    /// class without the cache-flush bit
    pub class: u16,
    pub cache_flush: bool,
    pub ttl: u32,
    pub rdata: RData,
}

impl Record {
    /// Same name, type, class and data (TTL and flush bit ignored).
    pub fn same_data(&self, o: &Record) -> bool {
        self.rtype == o.rtype
            && self.class == o.class
            && self.name == o.name
            && rdata_eq(&self.rdata, &o.rdata)
    }
}

/// RDATA equality with names compared case-insensitively.
pub fn rdata_eq(a: &RData, b: &RData) -> bool {
    match (a, b) {
        (RData::Ptr(x), RData::Ptr(y)) => x == y,
        (
            RData::Srv {
                priority: p1,
                weight: w1,
                port: o1,
                target: t1,
            },
            RData::Srv {
                priority: p2,
                weight: w2,
                port: o2,
                target: t2,
            },
        ) => p1 == p2 && w1 == w2 && o1 == o2 && t1 == t2,
        _ => a == b,
    }
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
    /// QU bit: the asker wants a unicast reply
    pub unicast: bool,
}

/// A whole message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

impl Message {
    /// QR bit set: a response.
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Read a name at the cursor, following backward compression pointers.
    fn name(&mut self) -> Result<Name, WireError> {
        let mut labels = Vec::new();
        let mut total = 1usize;
        let mut pos = self.pos;
        // where the cursor resumes after the first pointer
        let mut resume = None;
        let mut pointers = 0;
        // every pointer must jump strictly before the start of the label
        // sequence it was found in: no loop can then exist
        let mut floor = pos;
        loop {
            let len = *self.buf.get(pos).ok_or(WireError::Truncated)?;
            match len & 0xC0 {
                0x00 => {
                    if len == 0 {
                        pos += 1;
                        break;
                    }
                    let l = len as usize;
                    let s = self
                        .buf
                        .get(pos + 1..pos + 1 + l)
                        .ok_or(WireError::Truncated)?;
                    total += l + 1;
                    if total > 255 {
                        return Err(WireError::BadName);
                    }
                    labels.push(String::from_utf8_lossy(s).into_owned());
                    pos += 1 + l;
                }
                0xC0 => {
                    let lo = *self.buf.get(pos + 1).ok_or(WireError::Truncated)?;
                    let target = (((len & 0x3F) as usize) << 8) | lo as usize;
                    pointers += 1;
                    if target >= floor || pointers > MAX_POINTERS {
                        return Err(WireError::BadName);
                    }
                    if resume.is_none() {
                        resume = Some(pos + 2);
                    }
                    floor = target;
                    pos = target;
                }
                _ => return Err(WireError::BadName),
            }
        }
        self.pos = resume.unwrap_or(pos);
        Ok(Name(labels))
    }

    fn question(&mut self) -> Result<Question, WireError> {
        let name = self.name()?;
        let qtype = self.u16()?;
        let c = self.u16()?;
        Ok(Question {
            name,
            qtype,
            qclass: c & 0x7FFF,
            unicast: c & 0x8000 != 0,
        })
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let c = self.u16()?;
        let ttl = self.u32()?;
        let len = self.u16()? as usize;
        let start = self.pos;
        let end = start.checked_add(len).ok_or(WireError::Truncated)?;
        if end > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let rdata = match rtype {
            TYPE_A => {
                let b: [u8; 4] = self
                    .bytes(len)?
                    .try_into()
                    .map_err(|_| WireError::BadRdata)?;
                RData::A(Ipv4Addr::from(b))
            }
            TYPE_AAAA => {
                let b: [u8; 16] = self
                    .bytes(len)?
                    .try_into()
                    .map_err(|_| WireError::BadRdata)?;
                RData::Aaaa(Ipv6Addr::from(b))
            }
            TYPE_PTR => RData::Ptr(self.name()?),
            TYPE_SRV => {
                let priority = self.u16()?;
                let weight = self.u16()?;
                let port = self.u16()?;
                RData::Srv {
                    priority,
                    weight,
                    port,
                    target: self.name()?,
                }
            }
            TYPE_TXT => {
                let mut v = Vec::new();
                while self.pos < end {
                    let l = self.u8()? as usize;
                    if self.pos + l > end {
                        return Err(WireError::BadRdata);
                    }
                    let s = self.bytes(l)?;
                    if v.len() < MAX_TXT_STRINGS {
                        v.push(s.to_vec());
                    }
                }
                RData::Txt(v)
            }
            _ => RData::Other(self.bytes(len)?.to_vec()),
        };
        if self.pos != end {
            return Err(WireError::BadRdata);
        }
        Ok(Record {
            name,
            rtype,
            class: c & 0x7FFF,
            cache_flush: c & 0x8000 != 0,
            ttl,
            rdata,
        })
    }
}

/// Decode a message; any defect rejects the whole message.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge);
    }
    let mut r = Reader { buf, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let counts = [
        r.u16()? as usize,
        r.u16()? as usize,
        r.u16()? as usize,
        r.u16()? as usize,
    ];
    if counts.iter().sum::<usize>() > MAX_RECORDS {
        return Err(WireError::TooManyRecords);
    }
    let mut m = Message {
        id,
        flags,
        ..Message::default()
    };
    for _ in 0..counts[0] {
        m.questions.push(r.question()?);
    }
    for _ in 0..counts[1] {
        m.answers.push(r.record()?);
    }
    for _ in 0..counts[2] {
        m.authority.push(r.record()?);
    }
    for _ in 0..counts[3] {
        m.additional.push(r.record()?);
    }
    Ok(m)
}

/// Message writer with name compression.
struct Writer {
    buf: Vec<u8>,
    /// (lower-cased suffix key, offset) of names already written
    names: Vec<(String, u16)>,
}

impl Writer {
    fn name(&mut self, n: &Name) {
        for i in 0..n.0.len() {
            let suffix = Name(n.0[i..].to_vec()).key();
            if let Some((_, off)) = self.names.iter().find(|(k, _)| *k == suffix) {
                self.buf.extend_from_slice(&(0xC000 | *off).to_be_bytes());
                return;
            }
            if self.buf.len() < 0x3FFF {
                self.names.push((suffix, self.buf.len() as u16));
            }
            let l = n.0[i].as_bytes();
            let l = &l[..l.len().min(63)];
            self.buf.push(l.len() as u8);
            self.buf.extend_from_slice(l);
        }
        self.buf.push(0);
    }

    fn record(&mut self, r: &Record) {
        self.name(&r.name);
        self.buf.extend_from_slice(&r.rtype.to_be_bytes());
        let c = r.class | if r.cache_flush { 0x8000 } else { 0 };
        self.buf.extend_from_slice(&c.to_be_bytes());
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.rdata {
            RData::A(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Ptr(n) => self.name(n),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 6762 §18.14: compression in SRV target is allowed
                self.name(target);
            }
            RData::Txt(strings) => {
                if strings.is_empty() {
                    self.buf.push(0);
                }
                for s in strings {
                    let s = &s[..s.len().min(255)];
                    self.buf.push(s.len() as u8);
                    self.buf.extend_from_slice(s);
                }
            }
            RData::Other(b) => self.buf.extend_from_slice(b),
        }
        let len = (self.buf.len() - len_at - 2) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

/// Encode a message.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut w = Writer {
        buf: Vec::with_capacity(512),
        names: Vec::new(),
    };
    w.buf.extend_from_slice(&m.id.to_be_bytes());
    w.buf.extend_from_slice(&m.flags.to_be_bytes());
    for n in [
        m.questions.len(),
        m.answers.len(),
        m.authority.len(),
        m.additional.len(),
    ] {
        w.buf
            .extend_from_slice(&(n.min(u16::MAX as usize) as u16).to_be_bytes());
    }
    for q in &m.questions {
        w.name(&q.name);
        w.buf.extend_from_slice(&q.qtype.to_be_bytes());
        let c = q.qclass | if q.unicast { 0x8000 } else { 0 };
        w.buf.extend_from_slice(&c.to_be_bytes());
    }
    for r in m.answers.iter().chain(&m.authority).chain(&m.additional) {
        w.record(r);
    }
    w.buf
}

/// Upper bound of a record's encoded size (no compression).
pub fn record_size_hint(r: &Record) -> usize {
    let rd = match &r.rdata {
        RData::A(_) => 4,
        RData::Aaaa(_) => 16,
        RData::Ptr(n) => n.wire_len(),
        RData::Srv { target, .. } => 6 + target.wire_len(),
        RData::Txt(s) => s.iter().map(|x| x.len() + 1).sum::<usize>().max(1),
        RData::Other(b) => b.len(),
    };
    r.name.wire_len() + 10 + rd
}

/// Encode TXT key/values as DNS-SD strings (`key=value`, or `key` alone
/// for an empty value would lose the `=`: we always write `key=value`).
pub fn txt_strings(txt: &std::collections::BTreeMap<String, String>) -> Vec<Vec<u8>> {
    txt.iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .filter(|s| s.len() <= 255)
        .collect()
}

/// Decode DNS-SD TXT strings into a map (RFC 6763 §6.4: first occurrence
/// of a key wins; a string without `=` is a boolean attribute, value "").
pub fn txt_map(strings: &[Vec<u8>]) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for s in strings {
        if s.is_empty() {
            continue;
        }
        let s = String::from_utf8_lossy(s);
        let (k, v) = match s.split_once('=') {
            Some((k, v)) => (k, v),
            None => (&*s, ""),
        };
        if k.is_empty() {
            continue;
        }
        m.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, rdata: RData, rtype: u16) -> Record {
        Record {
            name: Name::parse(name),
            rtype,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 120,
            rdata,
        }
    }

    fn sample() -> Message {
        Message {
            id: 0,
            flags: 0x8400,
            questions: vec![Question {
                name: Name::parse("_http._tcp.local"),
                qtype: TYPE_PTR,
                qclass: 1,
                unicast: true,
            }],
            answers: vec![
                rec(
                    "_http._tcp.local",
                    RData::Ptr(Name::from_labels(["my box (2)", "_http", "_tcp", "local"])),
                    TYPE_PTR,
                ),
                rec(
                    "x._http._tcp.local",
                    RData::Srv {
                        priority: 0,
                        weight: 0,
                        port: 80,
                        target: Name::parse("host.local"),
                    },
                    TYPE_SRV,
                ),
                rec(
                    "x._http._tcp.local",
                    RData::Txt(vec![b"a=1".to_vec(), b"b".to_vec()]),
                    TYPE_TXT,
                ),
                rec("host.local", RData::A(Ipv4Addr::new(10, 0, 0, 1)), TYPE_A),
                rec("host.local", RData::Aaaa(Ipv6Addr::LOCALHOST), TYPE_AAAA),
            ],
            authority: vec![],
            additional: vec![rec("host.local", RData::Other(vec![1, 2, 3]), TYPE_NSEC)],
        }
    }

    #[test]
    fn round_trip_with_compression() {
        let m = sample();
        let b = encode(&m);
        let d = decode(&b).unwrap();
        assert_eq!(d, m);
        // compression actually used: "local" appears once
        assert_eq!(b.windows(5).filter(|w| w == b"local").count(), 1);
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let b = encode(&sample());
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn compression_loop_rejected() {
        // header: 1 question; name is a pointer to itself at offset 12
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(decode(&b), Err(WireError::BadName));
        // two labels pointing at each other: label "a" then pointer forward
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[1, b'a', 0xC0, 16, 0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(decode(&b), Err(WireError::BadName));
    }

    #[test]
    fn overlong_name_rejected() {
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            b.push(63);
            b.extend_from_slice(&[b'x'; 63]);
        }
        b.push(0);
        b.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(decode(&b), Err(WireError::BadName));
    }

    #[test]
    fn oversized_and_counts_rejected() {
        assert_eq!(
            decode(&vec![0u8; MAX_MESSAGE + 1]),
            Err(WireError::TooLarge)
        );
        let b = [0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&b), Err(WireError::TooManyRecords));
    }

    #[test]
    fn bad_rdata_lengths_rejected() {
        let mut m = sample();
        m.answers = vec![rec("h.local", RData::Other(vec![1, 2, 3]), TYPE_A)];
        m.questions.clear();
        m.additional.clear();
        assert_eq!(decode(&encode(&m)), Err(WireError::BadRdata));
        // TXT string running past rdlength
        m.answers = vec![rec("h.local", RData::Other(vec![5, b'a']), TYPE_TXT)];
        assert_eq!(decode(&encode(&m)), Err(WireError::BadRdata));
        // PTR whose name ends before rdlength
        m.answers = vec![rec("h.local", RData::Other(vec![0, 0]), TYPE_PTR)];
        assert_eq!(decode(&encode(&m)), Err(WireError::BadRdata));
    }

    #[test]
    fn reserved_label_type_rejected() {
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0x40, 0, 1, 0, 1]);
        assert_eq!(decode(&b), Err(WireError::BadName));
    }

    #[test]
    fn txt_map_rules() {
        let m = txt_map(&[
            b"a=1".to_vec(),
            b"a=2".to_vec(),
            b"flag".to_vec(),
            b"=x".to_vec(),
            vec![],
        ]);
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("flag").map(String::as_str), Some(""));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn fuzz_seeds_decode() {
        let r = decode(include_bytes!("../../../fuzz/corpus/mdns_packet/response")).unwrap();
        assert_eq!(r.answers.len(), 4);
        assert_eq!(
            r.answers[0].rdata,
            RData::Ptr(Name::from_labels(["web site", "_http", "_tcp", "local"]))
        );
        match &r.answers[1].rdata {
            RData::Srv { port, target, .. } => {
                assert_eq!(*port, 80);
                assert_eq!(*target, Name::parse("host.local"));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(r.answers[3].name, Name::parse("host.local"));
        let p = decode(include_bytes!("../../../fuzz/corpus/mdns_packet/probe")).unwrap();
        assert!(p.questions[0].unicast);
        assert_eq!(p.authority[0].name, Name::parse("host.local"));
        assert_eq!(
            decode(include_bytes!("../../../fuzz/corpus/mdns_packet/query"))
                .unwrap()
                .questions
                .len(),
            1
        );
    }

    #[test]
    fn dotted_labels_are_not_confused_with_label_boundaries() {
        let a = Name::from_labels(["x.y", "_http", "_tcp", "local"]);
        let b = Name::from_labels(["x", "y", "_http", "_tcp", "local"]);
        assert_ne!(a.key(), b.key());
        let m = Message {
            answers: vec![
                Record {
                    name: a.clone(),
                    rtype: TYPE_PTR,
                    class: 1,
                    cache_flush: false,
                    ttl: 1,
                    rdata: RData::Ptr(b.clone()),
                },
                Record {
                    name: b.clone(),
                    rtype: TYPE_PTR,
                    class: 1,
                    cache_flush: false,
                    ttl: 1,
                    rdata: RData::Ptr(a.clone()),
                },
            ],
            ..Message::default()
        };
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn names_compare_case_insensitively() {
        assert_eq!(Name::parse("Host.LOCAL."), Name::parse("host.local"));
        assert!(Name::parse("a._http._tcp.local").ends_with(&Name::parse("_TCP.local")));
    }
}
