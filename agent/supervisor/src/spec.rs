//! A service as the supervisor sees it. Maps 1:1 onto the bundle manifest's
//! run/ports/volumes/resources/health fields ([`ServiceSpec::from_manifest`])
//! and can also be written by hand in TOML for the agent's own helpers and tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SupervisorError};

const MAX_LIST: usize = 64;
const MAX_STR: usize = 4096;

/// When a service is restarted after it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RootfsSpec {
    /// A verified bundle's squashfs image.
    Image { path: PathBuf },
    /// A directory (recipes under development, tests, OCI-style layouts).
    Dir { path: PathBuf },
    /// The host's own root: for the agent's non-container helpers (still in
    /// their own pid namespace and cgroup, with the host's network).
    Host,
}

/// Network of the service's container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    None,
    Host,
    #[default]
    Private,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// Persistent data, bind-mounted from `data/services/<service>/volumes/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    pub name: String,
    pub path: String,
}

/// Resource limits. Signed so that a negative value is refused with a clear
/// message rather than a parse error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// memory.max in MiB.
    pub memory_mb: Option<i64>,
    /// cpu.weight, 1..=10000 (100 = default share).
    pub cpu_weight: Option<i64>,
    /// cpu.max as a percentage of one CPU (e.g. 50).
    pub cpu_percent: Option<i64>,
    /// pids.max.
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Http,
    Tcp,
    Exec,
}

/// A health check; `retries` consecutive failures restart the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub kind: HealthKind,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Failures during this time after a start do not count.
    #[serde(default)]
    pub start_period_ms: u64,
}

fn default_interval() -> u64 {
    30_000
}
fn default_timeout() -> u64 {
    5_000
}
fn default_retries() -> u32 {
    3
}

/// Exponential backoff between restarts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSpec {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub factor: f64,
    /// A run at least this long resets the delay to `initial_ms`.
    pub reset_after_ms: u64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            initial_ms: 1_000,
            max_ms: 60_000,
            factor: 2.0,
            reset_after_ms: 60_000,
        }
    }
}

impl BackoffSpec {
    /// The delay after `prev` (None = first restart).
    pub fn next(&self, prev: Option<u64>) -> u64 {
        match prev {
            None => self.initial_ms.min(self.max_ms),
            Some(p) => ((p as f64 * self.factor) as u64)
                .clamp(self.initial_ms.min(self.max_ms), self.max_ms),
        }
    }
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub rootfs: RootfsSpec,
    /// Entrypoint and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "nobody")]
    pub uid: u32,
    #[serde(default = "nobody")]
    pub gid: u32,
    /// Running as uid 0 must be declared.
    #[serde(default)]
    pub allow_root: bool,
    #[serde(default = "slash")]
    pub workdir: String,
    /// Writes to `/` go to an overlay upper directory on data (else `/` is read-only).
    #[serde(default)]
    pub writable_rootfs: bool,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Where the volumes live (each in `<volumes_dir>/<volume name>`);
    /// default `data/services/<service>/volumes`. The agent points this at
    /// the bundle store's volume directory, so volumes outlive upgrades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub backoff: BackoffSpec,
    /// Capabilities kept (names like `CAP_NET_BIND_SERVICE` or `net_bind_service`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub network: Network,
    /// Services that must be running (and healthy, if they have a check) first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// SIGTERM → this long → SIGKILL.
    #[serde(default = "default_grace")]
    pub stop_grace_ms: u64,
}

fn nobody() -> u32 {
    65534
}
fn slash() -> String {
    "/".into()
}
fn default_grace() -> u64 {
    10_000
}

fn abs_path(svc: &str, field: &str, p: &str) -> Result<()> {
    if !p.starts_with('/')
        || p.split('/').any(|c| c == "..")
        || p.len() > MAX_STR
        || p.contains('\0')
    {
        return Err(SupervisorError::invalid(
            svc,
            format!("{field}: {p:?} must be an absolute path without `..`"),
        ));
    }
    Ok(())
}

fn simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_lowercase()
}

impl ServiceSpec {
    /// Parse and validate a TOML service description.
    pub fn from_toml(text: &str) -> Result<Self> {
        if text.len() > 256 * 1024 {
            return Err(SupervisorError::Parse(
                "service file larger than 256 KiB".into(),
            ));
        }
        let s: ServiceSpec =
            toml::from_str(text).map_err(|e| SupervisorError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Convert a verified bundle's manifest; `image` is the bundle's squashfs.
    pub fn from_manifest(m: &nuvol_bundle::manifest::Manifest, image: &Path) -> Result<Self> {
        use nuvol_bundle::manifest as b;
        let restart = match m.run.restart {
            b::RestartPolicy::Always => RestartPolicy::Always,
            b::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
            b::RestartPolicy::Never => RestartPolicy::Never,
        };
        let health = m.health.as_ref().map(|h| HealthSpec {
            kind: match h.kind {
                b::HealthKind::Http => HealthKind::Http,
                b::HealthKind::Tcp => HealthKind::Tcp,
                b::HealthKind::Command => HealthKind::Exec,
            },
            port: h.port,
            path: h.path.clone(),
            command: h.command.clone(),
            interval_ms: u64::from(h.interval_s) * 1000,
            timeout_ms: u64::from(h.timeout_s) * 1000,
            retries: h.retries,
            start_period_ms: u64::from(h.interval_s) * 1000,
        });
        let ports: Vec<PortSpec> = m
            .ports
            .iter()
            .map(|p| PortSpec {
                name: p.name.clone(),
                port: p.port,
                protocol: format!("{:?}", p.protocol).to_ascii_lowercase(),
            })
            .collect();
        // Binding a port below 1024 needs the one capability; nothing else is kept.
        let capabilities = if ports.iter().any(|p| p.port < 1024) {
            vec!["CAP_NET_BIND_SERVICE".to_string()]
        } else {
            Vec::new()
        };
        let s = ServiceSpec {
            name: m.name.clone(),
            rootfs: RootfsSpec::Image {
                path: image.to_path_buf(),
            },
            command: m.run.command.clone(),
            env: m.run.env.clone(),
            uid: m.run.uid,
            gid: m.run.gid,
            allow_root: m.privileges.root,
            workdir: m.run.workdir.clone(),
            writable_rootfs: false,
            ports,
            volumes: m
                .volumes
                .iter()
                .map(|v| VolumeSpec {
                    name: v.name.clone(),
                    path: v.path.clone(),
                })
                .collect(),
            volumes_dir: None,
            limits: LimitsSpec {
                memory_mb: Some(i64::from(m.resources.memory_mb)),
                cpu_weight: Some(i64::from(m.resources.cpu_weight)),
                cpu_percent: None,
                pids: Some(i64::from(m.resources.pids)),
            },
            health,
            restart,
            backoff: BackoffSpec::default(),
            capabilities,
            network: Network::Private,
            depends_on: Vec::new(),
            stop_grace_ms: default_grace(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Refuse anything unusable, naming the field.
    pub fn validate(&self) -> Result<()> {
        let n = self.name.as_str();
        if !simple_name(n) {
            return Err(SupervisorError::invalid(
                n,
                "name must be 1-63 of a-z 0-9 - _ starting with a letter",
            ));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(SupervisorError::invalid(n, "command: missing entrypoint"));
        }
        if self.command.len() > 256
            || self
                .command
                .iter()
                .any(|a| a.len() > MAX_STR || a.contains('\0'))
        {
            return Err(SupervisorError::invalid(
                n,
                "command: too many or too long arguments",
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty()
                || k.contains('=')
                || k.contains('\0')
                || v.contains('\0')
                || v.len() > MAX_STR
            {
                return Err(SupervisorError::invalid(
                    n,
                    format!("env: bad variable {k:?}"),
                ));
            }
        }
        if self.env.len() > 256 {
            return Err(SupervisorError::invalid(n, "env: more than 256 variables"));
        }
        if self.uid == 0 && !self.allow_root {
            return Err(SupervisorError::invalid(
                n,
                "uid: 0 (root) must be declared with allow_root = true",
            ));
        }
        abs_path(n, "workdir", &self.workdir)?;
        match &self.rootfs {
            RootfsSpec::Image { path } | RootfsSpec::Dir { path } => {
                if !path.is_absolute() {
                    return Err(SupervisorError::invalid(n, "rootfs: path must be absolute"));
                }
            }
            RootfsSpec::Host => {
                if self.writable_rootfs {
                    return Err(SupervisorError::invalid(
                        n,
                        "writable_rootfs: not possible with the host rootfs",
                    ));
                }
            }
        }
        if self.ports.len() > MAX_LIST
            || self.volumes.len() > MAX_LIST
            || self.depends_on.len() > MAX_LIST
        {
            return Err(SupervisorError::invalid(
                n,
                format!("ports/volumes/depends_on: more than {MAX_LIST}"),
            ));
        }
        for p in &self.ports {
            if p.port == 0 || !(p.protocol == "tcp" || p.protocol == "udp") {
                return Err(SupervisorError::invalid(
                    n,
                    format!("ports: {:?} needs a port 1-65535 and tcp or udp", p.name),
                ));
            }
        }
        for v in &self.volumes {
            if !simple_name(&v.name) {
                return Err(SupervisorError::invalid(
                    n,
                    format!("volumes: bad volume name {:?}", v.name),
                ));
            }
            abs_path(n, "volumes.path", &v.path)?;
        }
        let l = &self.limits;
        for (field, v) in [
            ("memory_mb", l.memory_mb),
            ("cpu_weight", l.cpu_weight),
            ("cpu_percent", l.cpu_percent),
            ("pids", l.pids),
        ] {
            if let Some(v) = v {
                if v <= 0 {
                    return Err(SupervisorError::invalid(
                        n,
                        format!("limits.{field}: must be positive, got {v}"),
                    ));
                }
            }
        }
        if l.memory_mb.is_some_and(|m| m > 1 << 30) {
            return Err(SupervisorError::invalid(
                n,
                "limits.memory_mb: absurdly large",
            ));
        }
        if l.cpu_weight.is_some_and(|w| w > 10_000) {
            return Err(SupervisorError::invalid(
                n,
                "limits.cpu_weight: must be 1..=10000",
            ));
        }
        if l.cpu_percent.is_some_and(|c| c > 100_000) {
            return Err(SupervisorError::invalid(n, "limits.cpu_percent: too large"));
        }
        for c in &self.capabilities {
            nuvol_container::spec::parse_capability(c)
                .map_err(|e| SupervisorError::invalid(n, format!("capabilities: {e}")))?;
        }
        if let Some(h) = &self.health {
            match h.kind {
                HealthKind::Http | HealthKind::Tcp if h.port.is_none() => {
                    return Err(SupervisorError::invalid(
                        n,
                        "health: http and tcp checks need a port",
                    ))
                }
                HealthKind::Exec if h.command.is_empty() => {
                    return Err(SupervisorError::invalid(
                        n,
                        "health: exec check needs a command",
                    ))
                }
                _ => {}
            }
            if let Some(p) = &h.path {
                if !p.starts_with('/')
                    || p.len() > 1024
                    || p.bytes().any(|b| b.is_ascii_control() || b == b' ')
                {
                    return Err(SupervisorError::invalid(
                        n,
                        "health.path: must be an absolute URL path",
                    ));
                }
            }
            if h.interval_ms < 10 || h.timeout_ms < 10 || h.retries == 0 {
                return Err(SupervisorError::invalid(
                    n,
                    "health: interval_ms and timeout_ms >= 10, retries >= 1",
                ));
            }
        }
        let b = &self.backoff;
        if b.initial_ms == 0 || b.max_ms < b.initial_ms || !(b.factor >= 1.0 && b.factor <= 16.0) {
            return Err(SupervisorError::invalid(
                n,
                "backoff: need 0 < initial_ms <= max_ms and 1 <= factor <= 16",
            ));
        }
        for d in &self.depends_on {
            if d == &self.name {
                return Err(SupervisorError::invalid(
                    n,
                    "depends_on: a service cannot depend on itself",
                ));
            }
        }
        Ok(())
    }

    /// The container spec for this service; `data` is the service's data directory.
    pub fn container_spec(&self, id: &str, data: &Path) -> Result<nuvol_container::ContainerSpec> {
        use nuvol_container::{
            spec, ContainerSpec, Mount, NetworkMode, RootSource, RootWrite, Rootfs,
        };
        let source = match &self.rootfs {
            RootfsSpec::Image { path } => RootSource::SquashfsImage(path.clone()),
            RootfsSpec::Dir { path } => RootSource::Dir(path.clone()),
            RootfsSpec::Host => RootSource::Dir(PathBuf::from("/")),
        };
        let write = if self.writable_rootfs {
            RootWrite::Overlay {
                upper: data.join("upper"),
                work: data.join("work"),
            }
        } else {
            RootWrite::ReadOnly
        };
        let mut c = ContainerSpec::new(id, Rootfs { source, write }, self.command.clone());
        c.hostname = Some(self.name.clone());
        let path = self.env.get("PATH").cloned();
        c.env = Vec::new();
        if path.is_none() {
            c.env
                .push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        c.env
            .extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        c.cwd = self.workdir.clone();
        c.uid = self.uid;
        c.gid = self.gid;
        c.capabilities = self
            .capabilities
            .iter()
            .map(|n| spec::parse_capability(n))
            .collect::<Result<Vec<_>, _>>()?;
        c.network = match self.network {
            Network::None => NetworkMode::None,
            Network::Host => NetworkMode::Host,
            Network::Private => NetworkMode::Private,
        };
        if self.rootfs == RootfsSpec::Host {
            // A helper: the host's filesystem as it is, its own /proc, the host network.
            c.mounts = vec![Mount {
                destination: "/proc".into(),
                fstype: "proc".into(),
                source: "proc".into(),
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: String::new(),
            }];
            c.masked_paths = Vec::new();
            c.readonly_paths = Vec::new();
            c.network = NetworkMode::Host;
            c.hostname = None;
        }
        for v in &self.volumes {
            let src = match &self.volumes_dir {
                Some(d) => d.join(&v.name),
                None => data.join("volumes").join(&v.name),
            };
            std::fs::create_dir_all(&src).map_err(SupervisorError::io(format!(
                "create volume {}",
                src.display()
            )))?;
            // The service owns its volume (it runs as its own uid, the store made it as root).
            std::os::unix::fs::chown(&src, Some(self.uid), Some(self.gid)).map_err(
                SupervisorError::io(format!("chown volume {}", src.display())),
            )?;
            c.mounts.push(Mount {
                destination: v.path.clone(),
                fstype: "bind".into(),
                source: src.to_string_lossy().into_owned(),
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: String::new(),
            });
        }
        let l = &self.limits;
        c.limits.memory_max = l.memory_mb.map(|m| (m as u64) << 20);
        c.limits.cpu_weight = l.cpu_weight.map(|w| w as u64);
        c.limits.cpu_max = l.cpu_percent.map(|p| (p as u64 * 1000, 100_000));
        c.limits.pids_max = l.pids.map(|p| p as u64);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "web"
rootfs = { dir = { path = "/srv/web" } }
command = ["/bin/httpd", "-f"]
limits = { memory_mb = 64, pids = 32 }
capabilities = ["net_bind_service"]
"#;

    #[test]
    fn good_service_parses() {
        let s = ServiceSpec::from_toml(GOOD).unwrap();
        assert_eq!(s.uid, 65534);
        assert_eq!(s.restart, RestartPolicy::Always);
        let c = s.container_spec("web", Path::new("/tmp/d")).unwrap();
        assert_eq!(c.limits.memory_max, Some(64 << 20));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_manifests_are_refused_with_clear_errors() {
        let e = ServiceSpec::from_toml(&GOOD.replace("command = [\"/bin/httpd\", \"-f\"]", ""))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": command: missing entrypoint"
        );
        let e =
            ServiceSpec::from_toml(&GOOD.replace("memory_mb = 64", "memory_mb = -5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": limits.memory_mb: must be positive, got -5"
        );
        let e = ServiceSpec::from_toml(&GOOD.replace("pids = 32", "pids = -1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": limits.pids: must be positive, got -1"
        );
        let e =
            ServiceSpec::from_toml(&GOOD.replace("net_bind_service", "cap_teleport")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service \"web\": capabilities: unknown capability \"cap_teleport\""
        );
        let e = ServiceSpec::from_toml(&format!("{GOOD}uid = 0\n")).unwrap_err();
        assert!(e.to_string().contains("allow_root"), "{e}");
        let e = ServiceSpec::from_toml(&format!("{GOOD}bogus = 1\n")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e =
            ServiceSpec::from_toml(&format!("{GOOD}health = {{ kind = \"http\" }}\n")).unwrap_err();
        assert!(e.to_string().contains("need a port"), "{e}");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = BackoffSpec {
            initial_ms: 100,
            max_ms: 450,
            factor: 2.0,
            reset_after_ms: 1000,
        };
        let mut d = None;
        let mut seq = Vec::new();
        for _ in 0..5 {
            let n = b.next(d);
            seq.push(n);
            d = Some(n);
        }
        assert_eq!(seq, [100, 200, 400, 450, 450]);
    }

    #[test]
    fn bundle_manifest_converts() {
        let toml = r#"
name = "hello"
version = "1.0"
publisher = "test"
[run]
command = ["/bin/hello", "--serve"]
uid = 1000
gid = 1000
[[ports]]
name = "http"
port = 80
[[volumes]]
name = "state"
path = "/var/lib/hello"
[resources]
memory_mb = 32
cpu_weight = 50
pids = 16
[health]
kind = "http"
port = 80
path = "/health"
"#;
        let m = nuvol_bundle::manifest::Manifest::parse(toml.as_bytes()).unwrap();
        let s = ServiceSpec::from_manifest(&m, Path::new("/data/bundles/hello.squashfs")).unwrap();
        assert_eq!(s.command, ["/bin/hello", "--serve"]);
        assert_eq!(s.uid, 1000);
        assert_eq!(s.limits.memory_mb, Some(32));
        assert_eq!(s.capabilities, ["CAP_NET_BIND_SERVICE"]);
        assert_eq!(s.health.as_ref().unwrap().kind, HealthKind::Http);
        assert_eq!(s.volumes[0].path, "/var/lib/hello");
        assert_eq!(
            s.rootfs,
            RootfsSpec::Image {
                path: "/data/bundles/hello.squashfs".into()
            }
        );
    }
}
