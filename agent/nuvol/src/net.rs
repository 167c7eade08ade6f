//! Bridge between the agent and its network manager.
//!
//! Until `nuvol-net` lands this only brings loopback up, so the agent is
//! honest about what it manages: `GET /api/v1/network` reports 503.

pub struct Net;

pub async fn start(_cfg: &nuvol_config::NetworkConfig) -> Net {
    Net
}

pub async fn shutdown(_net: Net) {}
