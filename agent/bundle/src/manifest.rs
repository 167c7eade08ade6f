//! The bundle manifest: what the service is and how to run and announce it.
//!
//! TOML, unknown keys rejected, every string and list bounded. Parsed only
//! after the signature over it has verified (the fuzzer calls it directly).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::BundleError;

const MAX_STR: usize = 1024;
const MAX_LIST: usize = 64;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle name: 1-63 of `a-z 0-9 -`, starting with a letter.
    pub name: String,
    /// Version: 1-64 of `A-Z a-z 0-9 . + - ~ _`; compared numerically per dot-separated part.
    pub version: String,
    /// Who publishes it (free text; the key id is what is trusted).
    pub publisher: String,
    #[serde(default)]
    pub description: String,
    /// The CPU architecture its programs are built for (one of [`ARCHES`],
    /// Rust's names). `None`: not declared (arch-independent content, or a
    /// bundle signed before the field existed), installable anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// How to start the service.
    pub run: Run,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub health: Option<Health>,
    /// Services to announce (DNS-SD and gossip tags).
    #[serde(default)]
    pub announce: Vec<Announce>,
    /// Special file kinds the image needs; refused by default policy.
    #[serde(default)]
    pub privileges: Privileges,
    /// A service that spans boxes: how its members find each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// A service whose instances on other boxes are added as its peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Peers>,
}

/// Entrypoint, environment, user, restart policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// argv; `command[0]` is an absolute path inside the image.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Numeric uid the service runs as (0 is refused unless privileges.root).
    #[serde(default = "default_id")]
    pub uid: u32,
    #[serde(default = "default_id")]
    pub gid: u32,
    #[serde(default = "default_workdir")]
    pub workdir: String,
    #[serde(default)]
    pub restart: RestartPolicy,
}

fn default_id() -> u32 {
    65534
}
fn default_workdir() -> String {
    "/".into()
}

/// When the supervisor restarts the service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// A port the service listens on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Published only on the box's overlay address and only to packets
    /// that come through the overlay (WireGuard, from admitted boxes):
    /// for what only the community's boxes may reach. Not published at all
    /// while the overlay is off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlay_only: bool,
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// Persistent data: survives upgrade and rollback, removed only on purge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    /// Absolute, normalized mount path inside the container.
    pub path: String,
}

/// cgroup v2 limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// memory.max in MiB.
    pub memory_mb: u32,
    /// cpu.weight (1-10000).
    pub cpu_weight: u32,
    /// pids.max.
    pub pids: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory_mb: 128,
            cpu_weight: 100,
            pids: 128,
        }
    }
}

/// How the supervisor checks the service is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `http` (GET path on a declared port, 2xx = healthy), `tcp` (connect) or `command`.
    pub kind: HealthKind,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval_s: u32,
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_interval() -> u32 {
    30
}
fn default_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    3
}

/// Health check kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Http,
    Tcp,
    Command,
}

/// One DNS-SD service (and gossip tag set) to announce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// DNS-SD service type, e.g. `_http._tcp`.
    pub service_type: String,
    /// Instance name; default `<bundle name> on <host name>`.
    #[serde(default)]
    pub instance: Option<String>,
    pub port: u16,
    /// DNS-SD TXT records.
    #[serde(default)]
    pub txt: BTreeMap<String, String>,
    /// Gossip tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A service whose members are the boxes of the community overlay that
/// install the same bundle (docs/community-services.md). On a box with the
/// overlay on, the service does not start until its cluster is decided:
/// the first `size` boxes (by node name) that have the bundle form a new
/// one; a box that finds one running joins it (`join`). `env` is then
/// added to `run.env`, with `{node}` (this box's node name), `{addr}` (its
/// overlay IPv4 address), `{members}` (every member written as `member`,
/// joined by `separator`) and `{state}` (`new` or `existing`) filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Members of a new cluster (1-9).
    pub size: u8,
    /// One member in `{members}`, from `{node}` and `{addr}`.
    pub member: String,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// How a box joins a cluster that already runs; `None`: it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinKind>,
    /// The DNS-SD type a running member announces, where a join is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_service: Option<String>,
    /// Added to `run.env` when the service runs in its cluster.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_separator() -> String {
    ",".into()
}

/// Join protocols the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    /// etcd's v3 JSON gateway: `POST /v3/cluster/member/add` on a member's
    /// client port, then start with the member list it answers.
    #[serde(rename = "etcd-v3")]
    EtcdV3,
    /// Follow a running member: `{members}` is that member alone (written
    /// as `member`, from its node name and overlay address) and `{state}`
    /// is `existing`; nothing is asked of it. For services whose members
    /// learn the rest from the one they follow (a Tahoe-LAFS storage node
    /// gets the grid's introducer fURL from a box already in the grid).
    #[serde(rename = "follow")]
    Follow,
}

/// A service that knows its peers by an id of its own (Syncthing's device
/// id): the agent learns this box's id from the service, publishes it in
/// the bundle share index, and adds the other boxes' ids to the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    /// The service's protocol for ids and peers.
    pub kind: PeersKind,
    /// The port of its REST API in the container.
    pub api_port: u16,
    /// Where its API key is, as `VOLUME/PATH` (a file of the bundle's volume).
    pub api_key_file: String,
    /// The port peers connect to (on the peer's overlay address).
    pub peer_port: u16,
}

/// Peer protocols the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeersKind {
    /// Syncthing's REST API: `GET /rest/system/status` (`myID`), `PUT
    /// /rest/config/devices/ID`, key from `config.xml`'s `<apikey>`.
    Syncthing,
}

impl Peers {
    /// The volume and the path inside it of the API key file.
    pub fn key_file(&self) -> Option<(&str, &str)> {
        self.api_key_file.split_once('/')
    }

    fn validate(&self, volumes: &[Volume]) -> Result<(), BundleError> {
        if self.api_port == 0 || self.peer_port == 0 {
            return Err(invalid("peers", "port 0"));
        }
        check_str("peers.api_key_file", &self.api_key_file)?;
        let Some((vol, rel)) = self.key_file() else {
            return Err(invalid("peers.api_key_file", "want VOLUME/PATH"));
        };
        if !volumes.iter().any(|v| v.name == vol) {
            return Err(invalid(
                "peers.api_key_file",
                format!("{vol:?} is not a volume of this bundle"),
            ));
        }
        if rel.is_empty()
            || rel.starts_with('/')
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(
                "peers.api_key_file",
                format!("{rel:?}: want a plain relative path"),
            ));
        }
        Ok(())
    }
}

/// The placeholders `[cluster]` strings may use.
pub const CLUSTER_PLACEHOLDERS: [&str; 4] = ["{node}", "{addr}", "{members}", "{state}"];

impl Cluster {
    fn validate(&self) -> Result<(), BundleError> {
        if !(1..=9).contains(&self.size) {
            return Err(invalid("cluster.size", "want 1..=9"));
        }
        check_str("cluster.member", &self.member)?;
        check_str("cluster.separator", &self.separator)?;
        check_map("cluster.env", &self.env)?;
        if !(self.member.contains("{node}") && self.member.contains("{addr}")) {
            return Err(invalid(
                "cluster.member",
                "must name the member by {node} and {addr}",
            ));
        }
        if self.member.contains("{members}") || self.member.contains("{state}") {
            return Err(invalid("cluster.member", "only {node} and {addr} here"));
        }
        for (k, v) in &self.env {
            let mut rest = v.clone();
            for p in CLUSTER_PLACEHOLDERS {
                rest = rest.replace(p, "");
            }
            if rest.contains('{') || rest.contains('}') {
                return Err(invalid(
                    "cluster.env",
                    format!(
                        "{k}: unknown placeholder in {v:?} (known: {})",
                        CLUSTER_PLACEHOLDERS.join(" ")
                    ),
                ));
            }
        }
        match (&self.join, &self.join_service) {
            (Some(_), None) => {
                return Err(invalid(
                    "cluster.join_service",
                    "a join needs the type to ask",
                ))
            }
            (_, Some(t)) => validate_service_type(t)?,
            (None, None) => {}
        }
        if self.join == Some(JoinKind::EtcdV3) && !self.member.starts_with("{node}=") {
            return Err(invalid(
                "cluster.member",
                "etcd-v3 members are written {node}=<peer URL>",
            ));
        }
        Ok(())
    }
}

/// What a box fills `[cluster]` placeholders with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlace {
    /// This box's node name.
    pub node: String,
    /// This box's overlay address.
    pub addr: std::net::IpAddr,
    /// Every member, written as `member` already.
    pub members: Vec<String>,
    /// `true`: the cluster runs already and this box joined it.
    pub existing: bool,
}

impl Cluster {
    /// One member written as [`Cluster::member`] says.
    pub fn member_of(&self, node: &str, addr: std::net::IpAddr) -> String {
        self.member
            .replace("{node}", node)
            .replace("{addr}", &addr.to_string())
    }

    /// `env` with the placeholders filled in.
    pub fn env_for(&self, p: &ClusterPlace) -> BTreeMap<String, String> {
        let members = p.members.join(&self.separator);
        let state = if p.existing { "existing" } else { "new" };
        self.env
            .iter()
            .map(|(k, v)| {
                // One pass, so a filled-in value is never read as a placeholder.
                let mut out = String::new();
                let mut rest = v.as_str();
                while let Some(i) = rest.find('{') {
                    out.push_str(&rest[..i]);
                    let tail = &rest[i..];
                    let (with, len) = if tail.starts_with("{node}") {
                        (p.node.clone(), 6)
                    } else if tail.starts_with("{addr}") {
                        (p.addr.to_string(), 6)
                    } else if tail.starts_with("{members}") {
                        (members.clone(), 9)
                    } else if tail.starts_with("{state}") {
                        (state.to_string(), 7)
                    } else {
                        ("{".to_string(), 1)
                    };
                    out.push_str(&with);
                    rest = &tail[len..];
                }
                out.push_str(rest);
                (k.clone(), out)
            })
            .collect()
    }
}

/// Things the default policy forbids; a bundle must declare them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privileges {
    pub setuid: bool,
    pub devices: bool,
    pub root: bool,
}

/// What the box allows bundles to declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_setuid: bool,
    pub allow_devices: bool,
    pub allow_root: bool,
}

fn invalid(field: &str, message: impl Into<String>) -> BundleError {
    BundleError::ManifestInvalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A bundle name: 1-63 of `a-z 0-9 -`, starting with a letter, no trailing '-'.
pub fn validate_name(n: &str) -> Result<(), BundleError> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.as_bytes()[0].is_ascii_lowercase()
        && !n.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{n:?}: want 1-63 of a-z 0-9 '-', starting with a letter"),
        ))
    }
}

/// A version string: 1-64 of `A-Z a-z 0-9 . + - ~ _`.
pub fn validate_version(v: &str) -> Result<(), BundleError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "version",
            format!("{v:?}: want 1-64 of A-Z a-z 0-9 . + - ~ _"),
        ))
    }
}

/// Compare versions: split on `.`, `-`, `+`, `~`, `_`; numeric parts numerically, others as text.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<String> {
        s.split(['.', '-', '+', '~', '_'])
            .map(str::to_string)
            .collect()
    };
    let (pa, pb) = (split(a), split(b));
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).map(String::as_str).unwrap_or("");
        let y = pb.get(i).map(String::as_str).unwrap_or("");
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(p), Ok(q)) => p.cmp(&q),
            _ => x.cmp(y),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    std::cmp::Ordering::Equal
}

/// An absolute, normalized path: starts with '/', no `.`/`..`/empty parts, no NUL.
pub fn validate_abs_path(field: &str, p: &str) -> Result<(), BundleError> {
    if p.len() > MAX_STR || !p.starts_with('/') || p.contains('\0') {
        return Err(invalid(field, format!("{p:?} is not an absolute path")));
    }
    if p == "/" {
        return Ok(());
    }
    for part in p[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(BundleError::PathTraversal(p.to_string()));
        }
    }
    Ok(())
}

fn check_str(field: &str, s: &str) -> Result<(), BundleError> {
    if s.len() > MAX_STR {
        return Err(invalid(field, format!("longer than {MAX_STR} bytes")));
    }
    if s.contains('\0') {
        return Err(invalid(field, "contains NUL"));
    }
    Ok(())
}

fn check_map(field: &str, m: &BTreeMap<String, String>) -> Result<(), BundleError> {
    if m.len() > MAX_LIST {
        return Err(invalid(field, format!("more than {MAX_LIST} entries")));
    }
    for (k, v) in m {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(field, format!("bad key {k:?}")));
        }
        check_str(field, k)?;
        check_str(field, v)?;
    }
    Ok(())
}

fn check_label(field: &str, s: &str) -> Result<(), BundleError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{s:?}: want 1-63 of A-Z a-z 0-9 - _"),
        ))
    }
}

/// The architectures a bundle may declare: `std::env::consts::ARCH` of the
/// boxes nuvol runs on.
pub const ARCHES: [&str; 3] = ["x86_64", "aarch64", "arm"];

impl Manifest {
    /// Refuse a bundle built for another architecture than `here` (a box's
    /// `std::env::consts::ARCH`); one that declares none passes.
    pub fn check_arch(&self, here: &str) -> Result<(), BundleError> {
        match &self.arch {
            Some(a) if a != here => Err(BundleError::WrongArch {
                name: self.name.clone(),
                bundle: a.clone(),
                host: here.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Parse and validate manifest bytes.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        if bytes.len() > crate::format::MAX_MANIFEST_LEN as usize {
            return Err(BundleError::ManifestTooLarge {
                size: bytes.len() as u64,
                limit: crate::format::MAX_MANIFEST_LEN.into(),
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| BundleError::Manifest(format!("not UTF-8: {e}")))?;
        let m: Manifest =
            toml::from_str(text).map_err(|e| BundleError::Manifest(e.message().to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// Serialize to TOML.
    pub fn to_toml(&self) -> Result<String, BundleError> {
        toml::to_string(self).map_err(|e| BundleError::Manifest(e.to_string()))
    }

    /// Check everything serde cannot.
    pub fn validate(&self) -> Result<(), BundleError> {
        validate_name(&self.name)?;
        validate_version(&self.version)?;
        check_str("publisher", &self.publisher)?;
        if self.publisher.is_empty() {
            return Err(invalid("publisher", "empty"));
        }
        if self.description.len() > 4 * MAX_STR {
            return Err(invalid("description", "too long"));
        }
        if let Some(a) = &self.arch {
            if !ARCHES.contains(&a.as_str()) {
                return Err(invalid(
                    "arch",
                    format!("{a:?} is not one of {}", ARCHES.join(", ")),
                ));
            }
        }
        let r = &self.run;
        if r.command.is_empty() || r.command.len() > MAX_LIST {
            return Err(invalid(
                "run.command",
                format!("want 1-{MAX_LIST} arguments"),
            ));
        }
        validate_abs_path("run.command", &r.command[0])?;
        for a in &r.command {
            check_str("run.command", a)?;
        }
        check_map("run.env", &r.env)?;
        validate_abs_path("run.workdir", &r.workdir)?;
        if (r.uid == 0 || r.gid == 0) && !self.privileges.root {
            return Err(invalid(
                "run.uid",
                "running as root must be declared with privileges.root = true",
            ));
        }
        if self.ports.len() > MAX_LIST {
            return Err(invalid("ports", "too many"));
        }
        for p in &self.ports {
            check_label("ports.name", &p.name)?;
            if p.port == 0 {
                return Err(invalid("ports.port", "port 0"));
            }
        }
        if self.volumes.len() > MAX_LIST {
            return Err(invalid("volumes", "too many"));
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &self.volumes {
            check_label("volumes.name", &v.name)?;
            if !names.insert(&v.name) {
                return Err(invalid("volumes.name", format!("{:?} twice", v.name)));
            }
            validate_abs_path("volumes.path", &v.path)?;
            if v.path == "/" {
                return Err(invalid("volumes.path", "cannot mount a volume on /"));
            }
        }
        let res = &self.resources;
        if res.memory_mb == 0 || res.memory_mb > 1 << 20 {
            return Err(invalid("resources.memory_mb", "want 1..=1048576"));
        }
        if !(1..=10000).contains(&res.cpu_weight) {
            return Err(invalid("resources.cpu_weight", "want 1..=10000"));
        }
        if res.pids == 0 || res.pids > 1 << 22 {
            return Err(invalid("resources.pids", "want 1..=4194304"));
        }
        if let Some(h) = &self.health {
            match h.kind {
                HealthKind::Http | HealthKind::Tcp => {
                    if h.port.unwrap_or(0) == 0 {
                        return Err(invalid("health.port", "http/tcp checks need a port"));
                    }
                }
                HealthKind::Command => {
                    if h.command.is_empty() || h.command.len() > MAX_LIST {
                        return Err(invalid("health.command", "want 1-64 arguments"));
                    }
                    validate_abs_path("health.command", &h.command[0])?;
                }
            }
            if let Some(p) = &h.path {
                check_str("health.path", p)?;
                if !p.starts_with('/') {
                    return Err(invalid("health.path", "must start with '/'"));
                }
            }
            if h.interval_s == 0 || h.timeout_s == 0 || h.timeout_s > h.interval_s.max(1) * 10 {
                return Err(invalid("health", "bad interval/timeout"));
            }
            if h.retries > 100 {
                return Err(invalid("health.retries", "at most 100"));
            }
        }
        if self.announce.len() > MAX_LIST {
            return Err(invalid("announce", "too many"));
        }
        for a in &self.announce {
            validate_service_type(&a.service_type)?;
            if a.port == 0 {
                return Err(invalid("announce.port", "port 0"));
            }
            if let Some(i) = &a.instance {
                if i.is_empty() || i.len() > 63 {
                    return Err(invalid("announce.instance", "want 1-63 bytes"));
                }
                check_str("announce.instance", i)?;
            }
            check_map("announce.txt", &a.txt)?;
            // DNS-SD: each TXT string "key=value" is at most 255 bytes.
            for (k, v) in &a.txt {
                if k.len() + 1 + v.len() > 255 {
                    return Err(invalid(
                        "announce.txt",
                        format!("{k:?} longer than 255 bytes"),
                    ));
                }
            }
            check_map("announce.tags", &a.tags)?;
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if let Some(p) = &self.peers {
            p.validate(&self.volumes)?;
        }
        Ok(())
    }

    /// Refuse privileges the box's policy does not allow.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), BundleError> {
        let p = &self.privileges;
        if p.setuid && !policy.allow_setuid {
            return Err(invalid(
                "privileges.setuid",
                "not allowed by this box's policy",
            ));
        }
        if p.devices && !policy.allow_devices {
            return Err(invalid(
                "privileges.devices",
                "not allowed by this box's policy",
            ));
        }
        if p.root && !policy.allow_root {
            return Err(invalid(
                "privileges.root",
                "not allowed by this box's policy",
            ));
        }
        Ok(())
    }
}

/// `_service._tcp` / `_service._udp` (RFC 6763 §7: service name 1-15 chars).
pub fn validate_service_type(t: &str) -> Result<(), BundleError> {
    let bad = || {
        invalid(
            "announce.service_type",
            format!("{t:?}: want _name._tcp or _name._udp"),
        )
    };
    let (svc, proto) = t.rsplit_once('.').ok_or_else(bad)?;
    if proto != "_tcp" && proto != "_udp" {
        return Err(bad());
    }
    let name = svc.strip_prefix('_').ok_or_else(bad)?;
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
name = "web"
version = "1.2.3"
publisher = "test"
[run]
command = ["/bin/httpd", "-f"]
[[ports]]
name = "http"
port = 8080
[[volumes]]
name = "data"
path = "/srv/data"
[[announce]]
service_type = "_http._tcp"
port = 8080
txt = { path = "/" }
"#;

    #[test]
    fn parses_example() {
        let m = Manifest::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(m.name, "web");
        assert_eq!(m.run.uid, 65534);
        let again = Manifest::parse(m.to_toml().unwrap().as_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn rejects_traversal_and_unknown_keys() {
        let t = EXAMPLE.replace("/srv/data", "/srv/../etc");
        assert!(matches!(
            Manifest::parse(t.as_bytes()),
            Err(BundleError::PathTraversal(_))
        ));
        let t = format!("{EXAMPLE}\nsurprise = 1\n");
        assert!(matches!(
            Manifest::parse(t.as_bytes()),
            Err(BundleError::Manifest(_))
        ));
        let t = EXAMPLE.replace("_http._tcp", "http");
        assert!(Manifest::parse(t.as_bytes()).is_err());
    }

    #[test]
    fn root_needs_declaration_and_policy() {
        let t = EXAMPLE.replace("[run]\n", "[run]\nuid = 0\n");
        assert!(Manifest::parse(t.as_bytes()).is_err());
        let t = format!("{}\n[privileges]\nroot = true\n", t);
        let m = Manifest::parse(t.as_bytes()).unwrap();
        assert!(m.check_policy(&Policy::default()).is_err());
        m.check_policy(&Policy {
            allow_root: true,
            ..Policy::default()
        })
        .unwrap();
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let t = format!("name = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(Manifest::parse(&t.as_bytes()[..60_000]).is_err());
    }

    const ETCD: &str = r#"
[cluster]
size = 3
member = "{node}=http://{addr}:2380"
join = "etcd-v3"
join_service = "_etcd-client._tcp"
env = { ETCD_NAME = "{node}", ETCD_INITIAL_CLUSTER = "{members}", ETCD_INITIAL_CLUSTER_STATE = "{state}" }
"#;

    #[test]
    fn cluster_env_is_filled_in() {
        let m = Manifest::parse(format!("{EXAMPLE}{ETCD}").as_bytes()).unwrap();
        let c = m.cluster.clone().unwrap();
        let addr = "100.64.0.7".parse().unwrap();
        assert_eq!(c.member_of("box1", addr), "box1=http://100.64.0.7:2380");
        let env = c.env_for(&ClusterPlace {
            node: "box1".into(),
            addr,
            // A member text holding a placeholder is not filled in again.
            members: vec!["box1=http://a".into(), "{state}=http://b".into()],
            existing: true,
        });
        assert_eq!(env["ETCD_NAME"], "box1");
        assert_eq!(
            env["ETCD_INITIAL_CLUSTER"],
            "box1=http://a,{state}=http://b"
        );
        assert_eq!(env["ETCD_INITIAL_CLUSTER_STATE"], "existing");
        let again = Manifest::parse(m.to_toml().unwrap().as_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn a_follower_cluster_and_overlay_ports_read_and_write_back() {
        let t = format!(
            "{EXAMPLE}{}",
            r#"
[[ports]]
name = "grid"
port = 3459
overlay_only = true

[cluster]
size = 1
member = "{node}={addr}"
join = "follow"
join_service = "_tahoe-grid._tcp"
"#
        );
        let m = Manifest::parse(t.as_bytes()).unwrap();
        assert_eq!(m.cluster.as_ref().unwrap().join, Some(JoinKind::Follow));
        let grid = m.ports.iter().find(|p| p.name == "grid").unwrap();
        assert!(grid.overlay_only);
        assert!(m
            .ports
            .iter()
            .filter(|p| p.name != "grid")
            .all(|p| !p.overlay_only));
        let back = m.to_toml().unwrap();
        assert_eq!(back.matches("overlay_only").count(), 1, "{back}");
        assert_eq!(Manifest::parse(back.as_bytes()).unwrap(), m);
        let bad = t.replace("\"follow\"", "\"gossip\"");
        assert!(Manifest::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn bad_clusters_are_named() {
        let bad = |from: &str, to: &str, field: &str| {
            let t = format!("{EXAMPLE}{}", ETCD.replace(from, to));
            match Manifest::parse(t.as_bytes()) {
                Err(BundleError::ManifestInvalid { field: f, .. }) => assert_eq!(f, field, "{to}"),
                other => panic!("{to}: {other:?}"),
            }
        };
        bad("size = 3", "size = 0", "cluster.size");
        bad("size = 3", "size = 10", "cluster.size");
        bad(
            "{node}=http://{addr}:2380",
            "http://{addr}:2380",
            "cluster.member",
        );
        bad(
            "{node}=http://{addr}:2380",
            "{addr}={node}",
            "cluster.member",
        );
        bad("\"{members}\"", "\"{everyone}\"", "cluster.env");
        bad(
            "join_service = \"_etcd-client._tcp\"\n",
            "",
            "cluster.join_service",
        );
        let t = format!("{EXAMPLE}{}", ETCD.replace("etcd-v3", "zookeeper"));
        assert!(Manifest::parse(t.as_bytes()).is_err());
    }

    #[test]
    fn peers_are_checked() {
        let peers = |file: &str| {
            format!("{EXAMPLE}\n[peers]\nkind = \"syncthing\"\napi_port = 8384\napi_key_file = \"{file}\"\npeer_port = 22000\n")
        };
        let m = Manifest::parse(peers("data/config.xml").as_bytes()).unwrap();
        assert_eq!(m.peers.unwrap().key_file(), Some(("data", "config.xml")));
        for bad in [
            "config.xml",
            "other/config.xml",
            "data/../etc/passwd",
            "data//x",
            "data/",
        ] {
            match Manifest::parse(peers(bad).as_bytes()) {
                Err(BundleError::ManifestInvalid { field, .. }) => {
                    assert_eq!(field, "peers.api_key_file", "{bad}")
                }
                Err(BundleError::PathTraversal(_)) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn version_order() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10", "1.9"), Greater);
        assert_eq!(compare_versions("1.19.2-1", "1.19.2-2"), Less);
        assert_eq!(compare_versions("2", "2.0"), Less);
        assert_eq!(compare_versions("3.4", "3.4"), Equal);
    }
}
