//! Configuration of a gossip node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Timing profile, as memberlist's Default{LAN,WAN,Local}Config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// LAN (Serf's default)
    #[default]
    Lan,
    /// WAN (Cloudy ran `serf agent -profile=wan`)
    Wan,
    /// loopback / tests
    Local,
}

/// Protocol timing (all from the profile unless changed).
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// time between probes
    pub probe_interval: Duration,
    /// how long to wait for a direct ack
    pub probe_timeout: Duration,
    /// time between gossip rounds
    pub gossip_interval: Duration,
    /// nodes per gossip round
    pub gossip_nodes: usize,
    /// indirect probes
    pub indirect_checks: usize,
    /// retransmit multiplier
    pub retransmit_mult: usize,
    /// suspicion multiplier
    pub suspicion_mult: u32,
    /// max suspicion multiplier
    pub suspicion_max_mult: u32,
    /// time between anti-entropy push/pulls
    pub push_pull_interval: Duration,
    /// keep gossiping to dead nodes this long
    pub gossip_to_the_dead: Duration,
    /// TCP timeout
    pub tcp_timeout: Duration,
    /// time between reconnect attempts to failed members
    pub reconnect_interval: Duration,
    /// forget failed members after this long
    pub reconnect_timeout: Duration,
    /// forget left members after this long
    pub tombstone_timeout: Duration,
}

impl Timing {
    /// The timing of a profile.
    pub fn of(p: Profile) -> Timing {
        let lan = Timing {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            gossip_to_the_dead: Duration::from_secs(30),
            tcp_timeout: Duration::from_secs(10),
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
        };
        match p {
            Profile::Lan => lan,
            Profile::Wan => Timing {
                tcp_timeout: Duration::from_secs(30),
                suspicion_mult: 6,
                push_pull_interval: Duration::from_secs(60),
                probe_timeout: Duration::from_secs(3),
                probe_interval: Duration::from_secs(5),
                // memberlist: "gossip less frequently, but to an additional node"
                gossip_nodes: 4,
                gossip_interval: Duration::from_millis(500),
                gossip_to_the_dead: Duration::from_secs(60),
                ..lan
            },
            Profile::Local => Timing {
                tcp_timeout: Duration::from_secs(1),
                indirect_checks: 1,
                retransmit_mult: 2,
                suspicion_mult: 3,
                push_pull_interval: Duration::from_secs(15),
                probe_timeout: Duration::from_millis(200),
                probe_interval: Duration::from_secs(1),
                gossip_interval: Duration::from_millis(100),
                gossip_to_the_dead: Duration::from_secs(15),
                ..lan
            },
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// unique node name
    pub node_name: String,
    /// UDP and TCP bind address (Serf default port 7946; Cloudy used 5000)
    pub bind: SocketAddr,
    /// address announced to others (default: bind)
    pub advertise: Option<SocketAddr>,
    /// nodes to join at start
    pub join: Vec<SocketAddr>,
    /// Serf tags (encoded size must stay <= 512 bytes)
    pub tags: BTreeMap<String, String>,
    /// encryption keys, primary first (16, 24 or 32 bytes each)
    pub keys: Vec<Vec<u8>>,
    /// where Serf key queries (`serf keys`) persist the keyring; with
    /// encryption on and the file present, its keys replace `keys`
    pub keyring_file: Option<std::path::PathBuf>,
    /// memberlist label (not understood by Serf 0.9.4; leave empty there)
    pub label: String,
    /// timing
    pub timing: Timing,
    /// most members kept
    pub max_members: usize,
    /// most events queued for the application
    pub event_queue: usize,
}

impl Config {
    /// A config with defaults for the profile.
    pub fn new(node_name: impl Into<String>, bind: SocketAddr, profile: Profile) -> Config {
        Config {
            node_name: node_name.into(),
            bind,
            advertise: None,
            join: Vec::new(),
            tags: BTreeMap::new(),
            keys: Vec::new(),
            keyring_file: None,
            label: String::new(),
            timing: Timing::of(profile),
            max_members: 4096,
            event_queue: 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// memberlist's DefaultLANConfig, DefaultWANConfig (what Cloudy's
    /// `serf agent -profile=wan` runs) and DefaultLocalConfig.
    #[test]
    fn profiles_match_memberlist() {
        let t = Timing::of;
        let lan = t(Profile::Lan);
        let wan = t(Profile::Wan);
        let local = t(Profile::Local);
        let row = |x: &Timing| {
            (
                x.probe_interval.as_millis(),
                x.probe_timeout.as_millis(),
                x.gossip_interval.as_millis(),
                x.gossip_nodes,
                x.indirect_checks,
                x.retransmit_mult,
                x.suspicion_mult,
                x.suspicion_max_mult,
                x.push_pull_interval.as_secs(),
                x.gossip_to_the_dead.as_secs(),
                x.tcp_timeout.as_secs(),
            )
        };
        assert_eq!(row(&lan), (1000, 500, 200, 3, 3, 4, 4, 6, 30, 30, 10));
        assert_eq!(row(&wan), (5000, 3000, 500, 4, 3, 4, 6, 6, 60, 60, 30));
        assert_eq!(row(&local), (1000, 200, 100, 3, 1, 2, 3, 6, 15, 15, 1));
    }
}
