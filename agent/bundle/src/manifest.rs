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

    #[test]
    fn version_order() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("1.10", "1.9"), Greater);
        assert_eq!(compare_versions("1.19.2-1", "1.19.2-2"), Less);
        assert_eq!(compare_versions("2", "2.0"), Less);
        assert_eq!(compare_versions("3.4", "3.4"), Equal);
    }
}
