//! nuvol-gossip: HashiCorp memberlist + Serf wire-compatible gossip.
#![forbid(unsafe_code)]

pub mod coordinate;
pub mod lzw;
pub mod msgpack;
pub mod serf;
pub mod wire;
