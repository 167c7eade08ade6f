//! nuvol-gossip: HashiCorp memberlist + Serf wire-compatible gossip.
#![forbid(unsafe_code)]

pub mod config;
pub mod coordinate;
pub mod lzw;
pub mod msgpack;
pub mod node;
mod regex;
pub mod serf;
pub mod wire;

pub use config::{Config, Profile, Timing};
pub use node::{
    hops_from_ttl, Event, GossipError, Handle, Health, IncomingQuery, Member, StatsSnapshot, Status,
};
