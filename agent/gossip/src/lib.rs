//! nuvol-gossip: HashiCorp memberlist + Serf wire-compatible gossip.
#![forbid(unsafe_code)]

pub mod lzw;
pub mod msgpack;
