//! The part of an OCI runtime-spec `config.json` this runtime reads (see
//! [`super::SUPPORT`]). Unknown fields are skipped, as the spec requires;
//! fields that are only reported as ignored are read as [`IgnoredAny`], so
//! their presence is known without modelling them. Enumerations the runtime
//! acts on (namespace types, capability names) are checked here, so a bad
//! value is an error naming its place in the file.

use std::collections::BTreeMap;

use serde::de::{Deserializer, Error as _, IgnoredAny};
use serde::Deserialize;

use crate::spec::parse_capability;

/// The top level of `config.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub oci_version: String,
    pub root: Option<Root>,
    pub process: Option<Process>,
    pub hostname: Option<String>,
    pub mounts: Option<Vec<Mount>>,
    pub hooks: Option<IgnoredAny>,
    pub linux: Option<Linux>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Root {
    #[serde(default)]
    pub path: String,
    pub readonly: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub terminal: Option<bool>,
    pub user: User,
    pub args: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub cwd: String,
    pub capabilities: Option<Capabilities>,
    pub rlimits: Option<Vec<IgnoredAny>>,
    pub no_new_privileges: Option<bool>,
    pub oom_score_adj: Option<IgnoredAny>,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    pub additional_gids: Option<Vec<u32>>,
}

/// `process.capabilities`: every set is checked, only one is used.
#[derive(Debug, Default, Deserialize)]
pub struct Capabilities {
    pub bounding: Option<Vec<Cap>>,
    pub effective: Option<Vec<Cap>>,
    pub inheritable: Option<Vec<Cap>>,
    pub permitted: Option<Vec<Cap>>,
    pub ambient: Option<Vec<Cap>>,
}

/// A capability name known to the runtime (`CAP_` prefix optional, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub caps::Capability);

impl<'de> Deserialize<'de> for Cap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        parse_capability(&name).map(Cap).map_err(D::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub source: Option<String>,
    pub options: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub namespaces: Option<Vec<Namespace>>,
    pub uid_mappings: Option<Vec<IgnoredAny>>,
    pub gid_mappings: Option<Vec<IgnoredAny>>,
    pub resources: Option<Resources>,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
    pub seccomp: Option<IgnoredAny>,
    pub devices: Option<Vec<IgnoredAny>>,
    pub sysctl: Option<BTreeMap<String, String>>,
    pub intel_rdt: Option<IgnoredAny>,
    pub personality: Option<IgnoredAny>,
    pub rootfs_propagation: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub typ: NamespaceType,
    pub path: Option<String>,
}

/// The namespace types of the runtime spec, by their `config.json` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceType {
    Pid,
    Network,
    Mount,
    Ipc,
    Uts,
    User,
    Cgroup,
    Time,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
    pub pids: Option<Pids>,
    pub devices: Option<Vec<IgnoredAny>>,
    #[serde(rename = "blockIO")]
    pub block_io: Option<IgnoredAny>,
    pub hugepage_limits: Option<IgnoredAny>,
    pub network: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Memory {
    pub limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Cpu {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pids {
    #[serde(default)]
    pub limit: i64,
}

/// Parse `config.json`; an error names the field by its path
/// (`linux.namespaces[2].type: unknown variant ...`).
pub fn parse(text: &str) -> Result<Config, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        if e.path().iter().next().is_none() {
            e.inner().to_string()
        } else {
            format!("{}: {}", e.path(), e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(config)
}
