//! Serf's messages, carried inside memberlist user messages and push/pull
//! user state: join/leave intents, push/pull, user events, queries and
//! responses, relays, filters and tags.

use crate::msgpack::{decode_value, DecodeError, Value, Writer};
use std::collections::BTreeMap;

/// Serf message types (first byte of a memberlist user message).
pub mod ty {
    /// leave intent
    pub const LEAVE: u8 = 0;
    /// join intent
    pub const JOIN: u8 = 1;
    /// push/pull state
    pub const PUSH_PULL: u8 = 2;
    /// user event
    pub const USER_EVENT: u8 = 3;
    /// query
    pub const QUERY: u8 = 4;
    /// query response
    pub const QUERY_RESPONSE: u8 = 5;
    /// conflict response
    pub const CONFLICT_RESPONSE: u8 = 6;
    /// key request
    pub const KEY_REQUEST: u8 = 7;
    /// key response
    pub const KEY_RESPONSE: u8 = 8;
    /// relay
    pub const RELAY: u8 = 9;
}

/// Query flag: the sender wants acks.
pub const QUERY_FLAG_ACK: u32 = 1;
/// Query flag: do not re-gossip.
pub const QUERY_FLAG_NO_BROADCAST: u32 = 2;
/// Magic byte before msgpack-encoded tags in node metadata.
pub const TAG_MAGIC: u8 = 255;

/// Encode Serf tags as node metadata (protocol >= 3).
pub fn encode_tags(tags: &BTreeMap<String, String>) -> Vec<u8> {
    let mut w = Writer::with_type(TAG_MAGIC);
    w.map_len(tags.len());
    for (k, v) in tags {
        w.str(k).str(v);
    }
    w.into_bytes()
}

/// Decode node metadata into tags (old nodes: the whole meta is the role).
pub fn decode_tags(meta: &[u8]) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    if meta.first() != Some(&TAG_MAGIC) {
        tags.insert(
            "role".to_string(),
            String::from_utf8_lossy(meta).into_owned(),
        );
        return tags;
    }
    if let Ok(Value::Map(m)) = decode_value(&meta[1..]) {
        for (k, v) in m {
            if let (Some(k), Some(v)) = (k.as_string(), v.as_string()) {
                tags.insert(k, v);
            }
        }
    }
    tags
}

/// join or leave intent
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Intent {
    /// Lamport time
    pub ltime: u64,
    /// node
    pub node: String,
    /// prune (leave only)
    pub prune: bool,
}

impl Intent {
    /// Encode a join intent.
    pub fn encode_join(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::JOIN);
        w.map_len(2)
            .key("LTime")
            .uint(self.ltime)
            .key("Node")
            .str(&self.node);
        w.into_bytes()
    }
    /// Encode a leave intent.
    pub fn encode_leave(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::LEAVE);
        w.map_len(3)
            .key("LTime")
            .uint(self.ltime)
            .key("Node")
            .str(&self.node)
            .key("Prune")
            .bool(self.prune);
        w.into_bytes()
    }
    /// Decode either.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Intent {
            ltime: v.u64_field("LTime")?,
            node: v.string_field("Node")?,
            prune: v.bool_field("Prune")?,
        })
    }
}

/// user event
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserEvent {
    /// Lamport time
    pub ltime: u64,
    /// name
    pub name: String,
    /// payload
    pub payload: Vec<u8>,
    /// can coalesce
    pub cc: bool,
}

impl UserEvent {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::USER_EVENT);
        w.map_len(4)
            .key("LTime")
            .uint(self.ltime)
            .key("Name")
            .str(&self.name)
            .key("Payload")
            .raw(&self.payload)
            .key("CC")
            .bool(self.cc);
        w.into_bytes()
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(UserEvent {
            ltime: v.u64_field("LTime")?,
            name: v.string_field("Name")?,
            payload: v.bytes_field("Payload")?,
            cc: v.bool_field("CC")?,
        })
    }
}

/// Events seen at one Lamport time (push/pull event buffer entry).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventsAt {
    /// Lamport time
    pub ltime: u64,
    /// (name, payload)
    pub events: Vec<(String, Vec<u8>)>,
}

/// push/pull user state
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushPull {
    /// member clock
    pub ltime: u64,
    /// node -> status Lamport time
    pub status_ltimes: BTreeMap<String, u64>,
    /// left members
    pub left_members: Vec<String>,
    /// event clock
    pub event_ltime: u64,
    /// recent events
    pub events: Vec<EventsAt>,
    /// query clock
    pub query_ltime: u64,
}

impl PushPull {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::PUSH_PULL);
        w.map_len(6)
            .key("LTime")
            .uint(self.ltime)
            .key("StatusLTimes");
        w.map_len(self.status_ltimes.len());
        for (k, v) in &self.status_ltimes {
            w.str(k).uint(*v);
        }
        w.key("LeftMembers").array_len(self.left_members.len());
        for m in &self.left_members {
            w.str(m);
        }
        w.key("EventLTime").uint(self.event_ltime).key("Events");
        w.array_len(self.events.len());
        for e in &self.events {
            w.map_len(2)
                .key("LTime")
                .uint(e.ltime)
                .key("Events")
                .array_len(e.events.len());
            for (n, p) in &e.events {
                w.map_len(2).key("Name").str(n).key("Payload").raw(p);
            }
        }
        w.key("QueryLTime").uint(self.query_ltime);
        w.into_bytes()
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        let mut status_ltimes = BTreeMap::new();
        match v.field("StatusLTimes") {
            Some(Value::Map(m)) => {
                for (k, t) in m {
                    let k = k.as_string().ok_or(DecodeError::Field("StatusLTimes"))?;
                    let t = t.as_u64().ok_or(DecodeError::Field("StatusLTimes"))?;
                    status_ltimes.insert(k, t);
                }
            }
            None | Some(Value::Nil) => {}
            Some(_) => return Err(DecodeError::Field("StatusLTimes")),
        }
        let left_members = v
            .array_field("LeftMembers")?
            .iter()
            .map(|m| m.as_string().ok_or(DecodeError::Field("LeftMembers")))
            .collect::<Result<_, _>>()?;
        let mut events = Vec::new();
        for e in v.array_field("Events")? {
            if *e == Value::Nil {
                continue;
            }
            let mut at = EventsAt {
                ltime: e.u64_field("LTime")?,
                events: Vec::new(),
            };
            for ev in e.array_field("Events")? {
                at.events
                    .push((ev.string_field("Name")?, ev.bytes_field("Payload")?));
            }
            events.push(at);
        }
        Ok(PushPull {
            ltime: v.u64_field("LTime")?,
            status_ltimes,
            left_members,
            event_ltime: v.u64_field("EventLTime")?,
            events,
            query_ltime: v.u64_field("QueryLTime")?,
        })
    }
}

/// query
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Lamport time
    pub ltime: u64,
    /// random id
    pub id: u32,
    /// reply address
    pub addr: Vec<u8>,
    /// reply port
    pub port: u16,
    /// source node
    pub source_node: String,
    /// encoded filters
    pub filters: Vec<Vec<u8>>,
    /// flags
    pub flags: u32,
    /// relay factor
    pub relay_factor: u8,
    /// timeout in nanoseconds
    pub timeout_ns: i64,
    /// name
    pub name: String,
    /// payload
    pub payload: Vec<u8>,
}

impl Query {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::QUERY);
        w.map_len(11)
            .key("LTime")
            .uint(self.ltime)
            .key("ID")
            .uint(u64::from(self.id))
            .key("Addr")
            .raw(&self.addr)
            .key("Port")
            .uint(u64::from(self.port))
            .key("SourceNode")
            .str(&self.source_node)
            .key("Filters");
        if self.filters.is_empty() {
            w.nil();
        } else {
            w.array_len(self.filters.len());
            for f in &self.filters {
                w.raw(f);
            }
        }
        w.key("Flags")
            .uint(u64::from(self.flags))
            .key("RelayFactor")
            .uint(u64::from(self.relay_factor))
            .key("Timeout")
            .int(self.timeout_ns)
            .key("Name")
            .str(&self.name)
            .key("Payload")
            .raw(&self.payload);
        w.into_bytes()
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(Query {
            ltime: v.u64_field("LTime")?,
            id: v.u32_field("ID")?,
            addr: v.bytes_field("Addr")?,
            port: v.u16_field("Port")?,
            source_node: v.string_field("SourceNode")?,
            filters: v
                .array_field("Filters")?
                .iter()
                .map(|f| f.as_bytes().ok_or(DecodeError::Field("Filters")))
                .collect::<Result<_, _>>()?,
            flags: v.u32_field("Flags")?,
            relay_factor: v.u8_field("RelayFactor")?,
            timeout_ns: v.i64_field("Timeout")?,
            name: v.string_field("Name")?,
            payload: v.bytes_field("Payload")?,
        })
    }
}

/// query response
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResponse {
    /// Lamport time of the query
    pub ltime: u64,
    /// query id
    pub id: u32,
    /// responder
    pub from: String,
    /// flags (ack)
    pub flags: u32,
    /// payload
    pub payload: Vec<u8>,
}

impl QueryResponse {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::QUERY_RESPONSE);
        w.map_len(5)
            .key("LTime")
            .uint(self.ltime)
            .key("ID")
            .uint(u64::from(self.id))
            .key("From")
            .str(&self.from)
            .key("Flags")
            .uint(u64::from(self.flags))
            .key("Payload");
        if self.payload.is_empty() {
            w.nil();
        } else {
            w.raw(&self.payload);
        }
        w.into_bytes()
    }
    /// Decode.
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        Ok(QueryResponse {
            ltime: v.u64_field("LTime")?,
            id: v.u32_field("ID")?,
            from: v.string_field("From")?,
            flags: v.u32_field("Flags")?,
            payload: v.bytes_field("Payload")?,
        })
    }
}

/// A query filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// only these nodes
    Nodes(Vec<String>),
    /// tag must match a regular expression
    Tag {
        /// tag name
        tag: String,
        /// Go regular expression
        expr: String,
    },
}

impl Filter {
    /// Decode one encoded filter.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (&t, rest) = buf
            .split_first()
            .ok_or(DecodeError::Invalid("empty filter"))?;
        let v = decode_value(rest)?;
        match t {
            0 => match v {
                Value::Array(a) => Ok(Filter::Nodes(
                    a.iter()
                        .map(|n| n.as_string().ok_or(DecodeError::Field("filter")))
                        .collect::<Result<_, _>>()?,
                )),
                Value::Nil => Ok(Filter::Nodes(Vec::new())),
                _ => Err(DecodeError::Field("filter")),
            },
            1 => Ok(Filter::Tag {
                tag: v.string_field("Tag")?,
                expr: v.string_field("Expr")?,
            }),
            _ => Err(DecodeError::Invalid("unknown filter type")),
        }
    }
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Filter::Nodes(n) => {
                let mut w = Writer::with_type(0);
                w.array_len(n.len());
                for x in n {
                    w.str(x);
                }
                w.into_bytes()
            }
            Filter::Tag { tag, expr } => {
                let mut w = Writer::with_type(1);
                w.map_len(2).key("Tag").str(tag).key("Expr").str(expr);
                w.into_bytes()
            }
        }
    }
}

/// A relay header: where to forward the message that follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Relay {
    /// destination IP
    pub ip: Vec<u8>,
    /// destination port
    pub port: u16,
    /// destination node
    pub name: String,
    /// the inner message (Serf type byte + body)
    pub inner: Vec<u8>,
}

impl Relay {
    /// Decode a relay body (after the type byte).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (v, used) = crate::msgpack::decode(buf)?;
        let addr = v.field("DestAddr").ok_or(DecodeError::Field("DestAddr"))?;
        Ok(Relay {
            ip: addr.bytes_field("IP")?,
            port: u16::try_from(addr.i64_field("Port")?).map_err(|_| DecodeError::Field("Port"))?,
            name: v.string_field("DestName")?,
            inner: buf[used..].to_vec(),
        })
    }
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::RELAY);
        w.map_len(2).key("DestAddr").map_len(3);
        w.key("IP")
            .raw(&self.ip)
            .key("Port")
            .int(i64::from(self.port))
            .key("Zone")
            .str("");
        w.key("DestName").str(&self.name);
        w.extend(&self.inner);
        w.into_bytes()
    }
}

/// Names of Serf's internal key queries (`serf keys`).
pub mod key_query {
    /// add a key to every ring
    pub const INSTALL: &str = "_serf_install-key";
    /// make a key the primary everywhere
    pub const USE: &str = "_serf_use-key";
    /// drop a key everywhere
    pub const REMOVE: &str = "_serf_remove-key";
    /// list every node's keys
    pub const LIST: &str = "_serf_list-keys";
}

/// The payload of a key query: the key type byte, then `{Key}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyRequest {
    /// raw key bytes (empty for a listing)
    pub key: Vec<u8>,
}

impl KeyRequest {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::KEY_REQUEST);
        w.map_len(1).key("Key").raw(&self.key);
        w.into_bytes()
    }
    /// Decode a query payload (type byte first; Serf does not check it).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let (_, body) = payload
            .split_first()
            .ok_or(DecodeError::Invalid("empty key request"))?;
        let v = decode_value(body)?;
        Ok(KeyRequest {
            key: v.bytes_field("Key")?,
        })
    }
}

/// One node's answer to a key query: the key response type byte, then
/// `{Result, Message, Keys, PrimaryKey}` (keys in standard base64).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyResponse {
    /// it worked
    pub result: bool,
    /// error or notice
    pub message: String,
    /// installed keys (listing only)
    pub keys: Vec<String>,
    /// the primary key (listing only)
    pub primary_key: String,
}

impl KeyResponse {
    /// Encode with type byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_type(ty::KEY_RESPONSE);
        w.map_len(4)
            .key("Result")
            .bool(self.result)
            .key("Message")
            .str(&self.message)
            .key("Keys");
        if self.keys.is_empty() {
            w.nil();
        } else {
            w.array_len(self.keys.len());
            for k in &self.keys {
                w.str(k);
            }
        }
        w.key("PrimaryKey").str(&self.primary_key);
        w.into_bytes()
    }
    /// Decode a response payload (type byte first).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let (&t, body) = payload
            .split_first()
            .ok_or(DecodeError::Invalid("empty key response"))?;
        if t != ty::KEY_RESPONSE {
            return Err(DecodeError::Invalid("not a key response"));
        }
        let v = decode_value(body)?;
        Ok(KeyResponse {
            result: v.bool_field("Result")?,
            message: v.string_field("Message")?,
            keys: v
                .array_field("Keys")?
                .iter()
                .map(|k| k.as_string().ok_or(DecodeError::Field("Keys")))
                .collect::<Result<_, _>>()?,
            primary_key: v.string_field("PrimaryKey")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_roundtrip_and_legacy_role() {
        let mut t = BTreeMap::new();
        t.insert("role".to_string(), "web".to_string());
        t.insert("zone".to_string(), "super".to_string());
        let m = encode_tags(&t);
        assert_eq!(m[0], 255);
        assert_eq!(decode_tags(&m), t);
        assert_eq!(
            decode_tags(b"db").get("role").map(String::as_str),
            Some("db")
        );
    }

    #[test]
    fn pushpull_roundtrip() {
        let mut pp = PushPull {
            ltime: 5,
            event_ltime: 9,
            query_ltime: 2,
            ..Default::default()
        };
        pp.status_ltimes.insert("a".into(), 3);
        pp.left_members.push("b".into());
        pp.events.push(EventsAt {
            ltime: 8,
            events: vec![("deploy".into(), b"x".to_vec())],
        });
        let e = pp.encode();
        assert_eq!(
            PushPull::decode(&decode_value(&e[1..]).unwrap()).unwrap(),
            pp
        );
    }

    #[test]
    fn key_messages_match_go() {
        // go-msgpack for keyRequest{Key: []byte{1, 2}}: type 7, fixmap 1,
        // "Key", raw 2
        let r = KeyRequest { key: vec![1, 2] };
        let want: Vec<u8> = [&[7u8, 0x81, 0xa3][..], b"Key", &[0xa2, 1, 2]].concat();
        assert_eq!(r.encode(), want);
        assert_eq!(KeyRequest::decode(&want).unwrap(), r);
        // a listing sends an empty key
        assert_eq!(
            KeyRequest::decode(&KeyRequest::default().encode())
                .unwrap()
                .key,
            b""
        );
        assert!(KeyRequest::decode(&[]).is_err());
        let resp = KeyResponse {
            result: true,
            message: String::new(),
            keys: vec!["AAAA".into(), "BBBB".into()],
            primary_key: "AAAA".into(),
        };
        let e = resp.encode();
        assert_eq!(e[0], ty::KEY_RESPONSE);
        assert_eq!(KeyResponse::decode(&e).unwrap(), resp);
        // nil key list, as Go writes for a failure
        let fail = KeyResponse {
            message: "No keyring to modify (encryption not enabled)".into(),
            ..Default::default()
        };
        assert_eq!(KeyResponse::decode(&fail.encode()).unwrap(), fail);
        assert!(KeyResponse::decode(&e[1..]).is_err());
    }

    #[test]
    fn query_relay_filter_roundtrip() {
        let q = Query {
            ltime: 1,
            id: 99,
            addr: vec![127, 0, 0, 1],
            port: 7946,
            source_node: "go".into(),
            filters: vec![Filter::Tag {
                tag: "role".into(),
                expr: "^w".into(),
            }
            .encode()],
            flags: QUERY_FLAG_ACK,
            relay_factor: 0,
            timeout_ns: 1_000_000_000,
            name: "ping".into(),
            payload: b"p".to_vec(),
        };
        let e = q.encode();
        let d = Query::decode(&decode_value(&e[1..]).unwrap()).unwrap();
        assert_eq!(d, q);
        assert_eq!(
            Filter::decode(&d.filters[0]).unwrap(),
            Filter::Tag {
                tag: "role".into(),
                expr: "^w".into()
            }
        );
        let r = Relay {
            ip: vec![10, 0, 0, 1],
            port: 5000,
            name: "x".into(),
            inner: vec![5, 0x80],
        };
        assert_eq!(Relay::decode(&r.encode()[1..]).unwrap(), r);
    }
}
