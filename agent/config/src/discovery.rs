//! `[discovery]`: Serf-compatible gossip and mDNS.
//!
//! ```toml
//! [discovery]
//! enabled = true                 # gossip on; set false to stay silent
//! bind = "0.0.0.0"               # address for gossip (UDP and TCP)
//! port = 7946                    # Serf's default; Cloudy nodes used 5000
//! # advertise = "10.1.2.3"       # address others reach us at (default: bind)
//! profile = "lan"                # "lan" (Serf default) or "wan" (Cloudy's -profile=wan)
//! join = ["10.0.0.1:7946", "10.0.0.2"]   # seeds, retried with backoff
//! # encrypt_key = "..."          # base64 of 16/24/32 bytes, as `serf keygen` prints
//!                                # (after `serf keys` rotations: <state>/gossip-keyring.json)
//! # zone = "barcelona"           # locality; ties in "nearest" prefer the same zone
//! role = "ordinary-node"         # or "super-node"
//! # node_name = "box1"           # default: the host name (+ node id if "nuvol")
//! mdns = true                    # also publish/browse with mDNS/DNS-SD
//! cloudy_compat = true           # also publish Cloudy's `services` tag
//! # tags = { owner = "ateneu" }  # extra Serf tags
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Serf's default gossip port.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Most `join` seeds.
pub const MAX_JOIN: usize = 64;
/// Most extra tags.
pub const MAX_TAGS: usize = 16;
/// Serf's limit on encoded tags; ours must leave room for services.
pub const MAX_TAG_BYTES: usize = 256;

/// Gossip timing profile (memberlist's defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GossipProfile {
    /// Serf's default: probe every 1 s, failure known in ~5-10 s.
    #[default]
    Lan,
    /// What Cloudy ran (`serf agent -profile=wan`): probe every 5 s.
    Wan,
}

/// The node's role in a community network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A well-connected node that serves others.
    SuperNode,
    /// Everyone else.
    #[default]
    OrdinaryNode,
}

impl Role {
    /// As written in the config and in the `role` tag.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::SuperNode => "super-node",
            Role::OrdinaryNode => "ordinary-node",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Run gossip at all. Default: true.
    pub enabled: bool,
    /// Address gossip binds to. Default: 0.0.0.0.
    pub bind: IpAddr,
    /// Gossip port (UDP and TCP). Default: 7946.
    pub port: u16,
    /// Address announced to others. Default: the bind address (or, when that
    /// is 0.0.0.0, the address the kernel picks).
    pub advertise: Option<IpAddr>,
    /// Timing profile. Default: lan.
    pub profile: GossipProfile,
    /// Seeds: `"ip:port"` or `"ip"` (port defaults to `port`).
    pub join: Vec<String>,
    /// Base64 key of 16, 24 or 32 bytes (`serf keygen`).
    pub encrypt_key: Option<String>,
    /// Locality name.
    pub zone: Option<String>,
    /// super-node or ordinary-node.
    pub role: Role,
    /// Gossip node name (unique in the cluster).
    pub node_name: Option<String>,
    /// Publish and browse with mDNS/DNS-SD too.
    pub mdns: bool,
    /// Also publish Cloudy's `services` tag.
    pub cloudy_compat: bool,
    /// Extra Serf tags.
    pub tags: BTreeMap<String, String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: true,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: DEFAULT_GOSSIP_PORT,
            advertise: None,
            profile: GossipProfile::Lan,
            join: Vec::new(),
            encrypt_key: None,
            zone: None,
            role: Role::OrdinaryNode,
            node_name: None,
            mdns: true,
            cloudy_compat: true,
            tags: BTreeMap::new(),
        }
    }
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl DiscoveryConfig {
    /// The bind address with the port.
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// The seeds as addresses (validated, so entries that do not parse were
    /// already refused).
    pub fn join_addrs(&self) -> Vec<SocketAddr> {
        self.join
            .iter()
            .filter_map(|j| parse_seed(j, self.port))
            .collect()
    }

    /// The decoded encryption key.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        self.encrypt_key.as_deref().and_then(|k| decode_key(k).ok())
    }

    /// The node name to use: `node_name`, else the host name; the default
    /// host name `nuvol` gets the first 8 characters of the node id so that
    /// unconfigured boxes do not collide.
    pub fn node_name_for(&self, hostname: &str, node_id: &str) -> String {
        if let Some(n) = &self.node_name {
            return n.clone();
        }
        if hostname == crate::DEFAULT_HOSTNAME {
            let id: String = node_id.chars().take(8).collect();
            if !id.is_empty() {
                return format!("{hostname}-{id}");
            }
        }
        hostname.to_string()
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("discovery.{k}"), m));
        if self.port == 0 {
            return err("port", "port 0 is not a port".into());
        }
        if self.advertise.is_some_and(|a| a.is_unspecified()) {
            return err("advertise", "0.0.0.0/:: cannot be announced".into());
        }
        if self.join.len() > MAX_JOIN {
            return err("join", format!("at most {MAX_JOIN} seeds"));
        }
        for j in &self.join {
            if parse_seed(j, self.port).is_none() {
                return err(
                    "join",
                    format!("{j:?} is not \"ip\" or \"ip:port\" (e.g. \"10.0.0.1:7946\")"),
                );
            }
        }
        if let Some(k) = &self.encrypt_key {
            if let Err(m) = decode_key(k) {
                return err("encrypt_key", m);
            }
        }
        if let Some(z) = &self.zone {
            if !name_ok(z, 63) {
                return err(
                    "zone",
                    format!("{z:?}: want 1-63 letters, digits, '-', '_' or '.'"),
                );
            }
        }
        if let Some(n) = &self.node_name {
            if !name_ok(n, 128) {
                return err(
                    "node_name",
                    format!("{n:?}: want 1-128 letters, digits, '-', '_' or '.'"),
                );
            }
        }
        if self.tags.len() > MAX_TAGS {
            return err("tags", format!("at most {MAX_TAGS} tags"));
        }
        let mut bytes = 0;
        for (k, v) in &self.tags {
            if !name_ok(k, 64) || k.starts_with("svc:") {
                return err(
                    "tags",
                    format!("tag name {k:?}: want 1-64 letters, digits, '-', '_' or '.'"),
                );
            }
            if matches!(k.as_str(), "zone" | "role" | "services") {
                return err(
                    "tags",
                    format!("tag {k:?} is set by nuvol (use discovery.{k} where it exists)"),
                );
            }
            if v.chars().any(char::is_control) {
                return err("tags", format!("tag {k:?}: control characters in value"));
            }
            bytes += k.len() + v.len() + 4;
        }
        if bytes > MAX_TAG_BYTES {
            return err(
                "tags",
                format!("tags take {bytes} bytes; at most {MAX_TAG_BYTES} (Serf's limit is 512 with services)"),
            );
        }
        Ok(())
    }
}

/// `"ip:port"`, `"[v6]:port"` or a bare IP (with `default_port`).
pub fn parse_seed(s: &str, default_port: u16) -> Option<SocketAddr> {
    if s.len() > 64 {
        return None;
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return (a.port() != 0).then_some(a);
    }
    s.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

fn decode_key(k: &str) -> Result<Vec<u8>, String> {
    if k.len() > 64 {
        return Err("too long for a key (want base64 of 16, 24 or 32 bytes)".into());
    }
    let b = base64::engine::general_purpose::STANDARD
        .decode(k.trim())
        .map_err(|e| format!("not base64 ({e}); make one with `serf keygen`"))?;
    if matches!(b.len(), 16 | 24 | 32) {
        Ok(b)
    } else {
        Err(format!(
            "key is {} bytes; AES needs 16, 24 or 32 (`serf keygen` makes 32)",
            b.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("n.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap().discovery;
        assert!(c.enabled && c.mdns && c.cloudy_compat);
        assert_eq!(c.bind_addr().to_string(), "0.0.0.0:7946");
        assert_eq!(c.role.as_str(), "ordinary-node");
        assert_eq!(
            c.node_name_for("nuvol", "0123456789abcdef"),
            "nuvol-01234567"
        );
        assert_eq!(c.node_name_for("box7", "0123456789abcdef"), "box7");
    }

    #[test]
    fn full_section() {
        let c = parse(
            "[discovery]\nport = 5000\nprofile = \"wan\"\nrole = \"super-node\"\nzone = \"bcn\"\n\
             join = [\"10.0.0.1:7946\", \"10.0.0.2\", \"[fd00::1]:5000\"]\n\
             encrypt_key = \"T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s=\"\n\
             node_name = \"box-1\"\ntags = { owner = \"ateneu\" }\n",
        )
        .unwrap()
        .discovery;
        assert_eq!(c.profile, super::GossipProfile::Wan);
        assert_eq!(c.role, super::Role::SuperNode);
        let j: Vec<String> = c.join_addrs().iter().map(|a| a.to_string()).collect();
        assert_eq!(j, ["10.0.0.1:7946", "10.0.0.2:5000", "[fd00::1]:5000"]);
        assert_eq!(c.key_bytes().map(|k| k.len()), Some(32));
        assert_eq!(c.node_name_for("nuvol", "ab"), "box-1");
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[discovery]\nport = 0\n", "discovery.port"),
            ("[discovery]\njoin = [\"nowhere\"]\n", "discovery.join"),
            (
                "[discovery]\nencrypt_key = \"c2hvcnQ=\"\n",
                "discovery.encrypt_key",
            ),
            (
                "[discovery]\nencrypt_key = \"!!!\"\n",
                "discovery.encrypt_key",
            ),
            ("[discovery]\nzone = \"a b\"\n", "discovery.zone"),
            ("[discovery]\nnode_name = \"\"\n", "discovery.node_name"),
            ("[discovery]\ntags = { zone = \"x\" }\n", "discovery.tags"),
            (
                "[discovery]\nadvertise = \"0.0.0.0\"\n",
                "discovery.advertise",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
        }
        let big = format!("[discovery]\ntags = {{ a = \"{}\" }}\n", "x".repeat(300));
        assert!(parse(&big).unwrap_err().contains("discovery.tags"));
        let e = parse("[discovery]\nrole = \"king\"\n").unwrap_err();
        assert!(e.contains(":2:"), "{e}");
        let e = parse("[discovery]\nprofle = \"wan\"\n").unwrap_err();
        assert!(e.contains("profle"), "{e}");
    }
}
