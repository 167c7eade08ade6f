//! `nuvol.toml`, the provisioning file on the boot partition.
//!
//! Every key is optional: an empty file (or no file at all) gives a box that
//! takes DHCP on every wired NIC and serves its panel on port 80. A file that
//! does not parse never stops the box: [`load_or_default`] falls back to the
//! defaults and returns the problem (file, line, column, message) so the agent
//! can show it on the console and on the status page.
//!
//! **Versions.** The format has a number, [`FORMAT`]; a file may say which it
//! was written for (`format = N`, top level). New formats only add keys, never
//! rename one or change its type. [`Config::parse`] is strict (an unknown key
//! is an error, so a typo is reported). At boot, [`load_or_default`] reads
//! leniently: a key this nuvol does not know is skipped and reported
//! ([`Loaded::skipped`]), everything else applies. So a box that an OS
//! update rolled back to an older nuvol keeps its network and credentials
//! even when the file already uses keys of the newer one, and a typo costs
//! one key, not the whole file.

mod admin;
mod bundles;
mod discovery;
mod mesh;
mod network;
pub mod overlay;
mod update;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use admin::AdminConfig;
pub use bundles::{BundleSource, BundlesConfig};
pub use discovery::{DiscoveryConfig, GossipProfile, Role, DEFAULT_GOSSIP_PORT};
pub use mesh::{OverlayConfig, DEFAULT_OVERLAY_PORT};
pub use network::{InterfaceConfig, NetworkConfig, RouteConfig};
pub use overlay::{SettingError, Settings, SETTINGS_FILE};
pub use update::{UpdateConfig, UpdatePolicy, Window};

/// The `nuvol.toml` format this nuvol reads (see the module's "Versions").
pub const FORMAT: u32 = 1;

/// Most unknown keys skipped before the file counts as not a config file.
const MAX_SKIPPED: usize = 64;

/// Largest provisioning file accepted; anything bigger is not a config file.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The whole provisioning file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The format the file was written for (default: 1, the first).
    pub format: Option<u32>,
    /// Host name of the box. Default: `nuvol`.
    pub hostname: Option<String>,
    /// The web panel and JSON API.
    pub panel: PanelConfig,
    /// Links, addresses, routes and DNS.
    pub network: NetworkConfig,
    /// Signed service bundles to trust and install unattended.
    pub bundles: BundlesConfig,
    /// Signed OS updates: the publisher keys trusted for them.
    pub update: UpdateConfig,
    /// Serf-compatible gossip and mDNS discovery.
    pub discovery: DiscoveryConfig,
    /// The community's WireGuard overlay (opt-in).
    pub overlay: OverlayConfig,
    /// Switches for testing; never set these on a box in service.
    pub debug: DebugConfig,
    /// Provisioned admin credentials (password hash, API keys).
    pub admin: AdminConfig,
}

/// `[debug]`: test hooks, off by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Enables `POST /api/v1/debug/kill` (the agent SIGKILLs itself), used by
    /// the boot tests to check that PID 1 restarts the agent.
    pub test_hooks: bool,
    /// With `test_hooks`: the agent exits with an error at its first N
    /// starts of each boot (counted in the run directory), so PID 1's
    /// rescue shell after three failed starts can be tested. Default: 0.
    pub fail_starts: u32,
    /// With `fail_starts`: fail only when running from this A/B slot, so
    /// an update's trial can be made to fail while the old slot works.
    pub fail_starts_slot: Option<String>,
    /// With `test_hooks`: the agent leaves the network unconfigured when
    /// running from this A/B slot (an update whose network never comes up).
    pub no_network_slot: Option<String>,
    /// With `test_hooks`: seconds an OS update's trial may stay unhealthy
    /// after its settling time before the agent reboots (default 600).
    pub update_unhealthy_secs: Option<u32>,
    /// With `test_hooks`: seconds a tried OS slot runs healthy before it
    /// is marked good (default: [`UPDATE_SETTLE_SECS`]).
    pub update_settle_secs: Option<u32>,
    /// With `test_hooks`: milliseconds the agent pauses after each durable
    /// write of an OS update (slot files, record, try, default), so the
    /// power-cut test's cuts land between writes. Default: 0.
    pub update_step_pause_ms: u32,
    /// With `test_hooks`: seconds between looks for newer OS updates
    /// (`[update] policy` notify/auto) instead of `check_hours`.
    pub update_check_secs: Option<u32>,
}

/// How long a tried OS slot must run healthy before it becomes the default.
pub const UPDATE_SETTLE_SECS: u32 = 120;

impl DebugConfig {
    /// The settling time of an OS update's trial (the test hook only with
    /// `test_hooks`).
    pub fn update_settle_secs(&self) -> u32 {
        match self.update_settle_secs {
            Some(s) if self.test_hooks => s.clamp(1, 3600),
            _ => UPDATE_SETTLE_SECS,
        }
    }

    /// How long an OS update's trial may stay unhealthy after settling
    /// (the test hook only with `test_hooks`).
    pub fn update_unhealthy(&self) -> std::time::Duration {
        let s = match self.update_unhealthy_secs {
            Some(s) if self.test_hooks => s.clamp(5, 3600),
            _ => 600,
        };
        std::time::Duration::from_secs(u64::from(s))
    }

    /// Seconds between looks for newer OS updates: the test hook only
    /// with `test_hooks` (at least 5 s), else `check_hours`.
    pub fn update_check_secs(&self, check_hours: u32) -> u64 {
        match self.update_check_secs {
            Some(s) if self.test_hooks => u64::from(s.clamp(5, 86_400)),
            _ => u64::from(check_hours.clamp(1, 168)) * 3600,
        }
    }

    /// The pause after each durable write of an OS update (test hook).
    pub fn update_step_pause(&self) -> std::time::Duration {
        let ms = if self.test_hooks {
            self.update_step_pause_ms.min(10_000)
        } else {
            0
        };
        std::time::Duration::from_millis(u64::from(ms))
    }
}

/// Where the panel listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PanelConfig {
    /// TCP port of the panel on every address. Default: 80.
    pub port: u16,
    /// TCP port of the HTTPS panel. Default: 443.
    pub https_port: u16,
    /// Serve everything over plain HTTP too (a trusted LAN). Default: only
    /// the read-only status page; the rest redirects to HTTPS.
    pub allow_plain_http: bool,
    /// The HTTPS port clients reach the box at, when a port forward makes
    /// it differ from `https_port` (`make qemu`: host 8443 to guest 443).
    /// Plain HTTP redirects name this port. Default: `https_port`.
    pub public_https_port: Option<u16>,
}

impl Default for PanelConfig {
    fn default() -> Self {
        PanelConfig {
            port: 80,
            https_port: 443,
            allow_plain_http: false,
            public_https_port: None,
        }
    }
}

/// Default host name when the file names none.
pub const DEFAULT_HOSTNAME: &str = "nuvol";

impl Config {
    /// The host name to set: the configured one or [`DEFAULT_HOSTNAME`].
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(DEFAULT_HOSTNAME)
    }

    /// Parse a provisioning file's text. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })?;
        Ok(cfg)
    }

    /// Parse like [`Config::parse`], but skip the keys this nuvol does not
    /// know (returned as messages, in the order found) instead of refusing
    /// the file. Other errors (syntax, types, values) still refuse it.
    ///
    /// Each round parses strictly; an unknown key's line tells its table
    /// (the header above it), the key is removed from the file's table and
    /// the rest written back and parsed again. A key whose place cannot be
    /// told that way (an inline table, a quoted dotted key) refuses the file
    /// as before.
    pub fn parse_skipping(text: &str, path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let declared = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("format").and_then(toml::Value::as_integer))
            .filter(|f| *f > i64::from(FORMAT));
        let mut cur = text.to_string();
        let mut skipped = Vec::new();
        loop {
            let err = match Config::parse(&cur, path) {
                Ok(c) => return Ok((c, skipped)),
                Err(e) => e,
            };
            let first = cur == text;
            // Lines of a rewritten file are not the user's: no line then.
            let plain = |e: ConfigError| match e {
                ConfigError::Syntax { path, message, .. } if !first => ConfigError::Syntax {
                    path,
                    line: 0,
                    column: 0,
                    message,
                },
                e => e,
            };
            let ConfigError::Syntax { line, message, .. } = &err else {
                return Err(plain(err));
            };
            let field = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next());
            let (Some(field), true) = (field, skipped.len() < MAX_SKIPPED) else {
                return Err(plain(err));
            };
            let Some(at) = key_at(&cur, *line, field) else {
                return Err(plain(err));
            };
            let Ok(mut table) = cur.parse::<toml::Table>() else {
                return Err(plain(err));
            };
            if !remove_key(&mut table, &at) {
                return Err(plain(err));
            }
            let Ok(rest) = toml::to_string(&table) else {
                return Err(plain(err));
            };
            let why = match declared {
                Some(f) => format!(
                    "the file is for nuvol.toml format {f}; this nuvol {} reads format {FORMAT}",
                    env!("CARGO_PKG_VERSION")
                ),
                None => "a typo, or a key of a newer nuvol".to_string(),
            };
            let place = if first {
                format!("{}:{line}", path.display())
            } else {
                path.display().to_string()
            };
            skipped.push(format!(
                "{place}: key `{}` is not known to this nuvol ({why}): skipped",
                key_name(&at)
            ));
            cur = rest;
        }
    }

    /// Read and parse a provisioning file (strictly).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_skipping(path, false).map(|(c, _)| c)
    }

    /// Read and parse a provisioning file; `skip`: leniently
    /// ([`Config::parse_skipping`]).
    pub fn load_skipping(path: &Path, skip: bool) -> Result<(Config, Vec<String>), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        if skip {
            Config::parse_skipping(&text, path)
        } else {
            Config::parse(&text, path).map(|c| (c, Vec::new()))
        }
    }

    /// Checks that serde cannot express. Returns the dotted key and the problem.
    fn validate(&self) -> Result<(), (String, String)> {
        if self.format == Some(0) {
            return Err((
                "format".into(),
                format!("formats count from 1 (this nuvol reads {FORMAT})"),
            ));
        }
        if let Some(h) = &self.hostname {
            validate_hostname(h).map_err(|m| ("hostname".to_string(), m))?;
        }
        if self.panel.port == 0 {
            return Err(("panel.port".into(), "port 0 is not a port".into()));
        }
        if self.panel.https_port == 0 {
            return Err(("panel.https_port".into(), "port 0 is not a port".into()));
        }
        if self.panel.public_https_port == Some(0) {
            return Err((
                "panel.public_https_port".into(),
                "port 0 is not a port".into(),
            ));
        }
        self.admin.validate()?;
        self.network.validate()?;
        self.discovery.validate()?;
        self.overlay
            .validate(self.discovery.encrypt_key.is_some())?;
        self.bundles.validate()?;
        self.update.validate()
    }
}

/// RFC 1123 host name: 1..=63 chars of letters, digits and inner hyphens.
pub fn validate_hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a valid host name (1-63 letters, digits or inner '-')"
        ))
    }
}

/// What went wrong with the provisioning file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: file is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// Line of the problem (1-based) where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
}

/// The outcome of loading the file at boot: the config in force and, if the
/// file was bad, why the defaults are in force instead.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub problem: Option<String>,
    /// False when no file existed (defaults in force, nothing wrong).
    pub found: bool,
    /// Keys of the file this nuvol does not know, skipped (the rest is in
    /// force): one message each.
    pub skipped: Vec<String>,
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.problem, self.found) {
            (Some(p), _) => write!(f, "{p}; running with safe defaults"),
            (None, true) => write!(f, "{}: loaded", self.path.display()),
            (None, false) => write!(f, "{}: not found; using defaults", self.path.display()),
        }
    }
}

/// Load the provisioning file; a missing file means defaults, a bad one means
/// defaults plus a problem. Never fails: the box must boot regardless.
pub fn load_or_default(path: &Path) -> Loaded {
    match Config::load_skipping(path, true) {
        Ok((config, skipped)) => Loaded {
            config,
            path: path.to_path_buf(),
            problem: None,
            found: true,
            skipped,
        },
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Loaded {
                config: Config::default(),
                path: path.to_path_buf(),
                problem: None,
                found: false,
                skipped: Vec::new(),
            }
        }
        Err(e) => Loaded {
            config: Config::default(),
            path: path.to_path_buf(),
            problem: Some(e.to_string()),
            found: true,
            skipped: Vec::new(),
        },
    }
}

/// One step of a key's place: a table key, or an index in an array of
/// tables.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The dotted name of a key's place (`network.interface[0].mtu`).
fn key_name(at: &[Seg]) -> String {
    let mut s = String::new();
    for seg in at {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The dotted parts of a bare key or header name; `None` for quoted ones.
fn bare_parts(name: &str) -> Option<Vec<String>> {
    name.split('.')
        .map(|p| {
            let p = p.trim();
            (!p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            .then(|| p.to_string())
        })
        .collect()
}

/// A header line's name and whether it is an array of tables.
fn header(line: &str) -> Option<(String, bool)> {
    let l = line.trim();
    let l = l.split('#').next()?.trim();
    if let Some(n) = l.strip_prefix("[[").and_then(|x| x.strip_suffix("]]")) {
        return Some((n.trim().to_string(), true));
    }
    let n = l.strip_prefix('[')?.strip_suffix(']')?;
    Some((n.trim().to_string(), false))
}

/// Where the unknown key `field` reported at `line` (1-based) sits: the
/// table of the nearest header above (the n-th of an array of tables), then
/// the key's own dotted parts; or a header line itself.
fn key_at(text: &str, line: usize, field: &str) -> Option<Vec<Seg>> {
    let lines: Vec<&str> = text.lines().collect();
    let here = *lines.get(line.checked_sub(1)?)?;
    let mut at = Vec::new();
    if let Some((name, _)) = header(here) {
        // A whole unknown table: `[future]`, `[update.future]`.
        at.extend(bare_parts(&name)?.into_iter().map(Seg::Key));
    } else {
        let above = (0..line - 1)
            .rev()
            .find_map(|i| header(lines[i]).map(|h| (i, h)));
        if let Some((i, (name, array))) = above {
            at.extend(bare_parts(&name)?.into_iter().map(Seg::Key));
            if array {
                let n = lines[..=i]
                    .iter()
                    .filter(|l| header(l) == Some((name.clone(), true)))
                    .count();
                at.push(Seg::Index(n.checked_sub(1)?));
            }
        }
        let (key, _) = here.split_once('=')?;
        at.extend(bare_parts(key)?.into_iter().map(Seg::Key));
    }
    (at.last() == Some(&Seg::Key(field.to_string()))).then_some(at)
}

/// Remove the key at `at` from `table`; false when there is none.
fn remove_key(table: &mut toml::Table, at: &[Seg]) -> bool {
    let Some((Seg::Key(last), init)) = at.split_last() else {
        return false;
    };
    let mut t = table;
    let mut i = 0;
    while i < init.len() {
        let Seg::Key(k) = &init[i] else {
            return false;
        };
        let v = match (t.get_mut(k), init.get(i + 1)) {
            (Some(toml::Value::Array(a)), Some(Seg::Index(n))) => {
                i += 1;
                a.get_mut(*n)
            }
            (v, _) => v,
        };
        let Some(toml::Value::Table(next)) = v else {
            return false;
        };
        t = next;
        i += 1;
    }
    t.remove(last).is_some()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/boot/nuvol.toml")
    }

    /// What a box provisioned for this format needs to keep across an OS
    /// update and its rollback: a static address, its credentials.
    const KEEP: &str = "hostname = \"roof-1\"\n\
        [network]\n\
        [[network.interface]]\n\
        name = \"eth0\"\n\
        addresses = [\"10.1.2.3/24\"]\n\
        [admin]\n\
        api_keys = [\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n";

    #[test]
    fn a_rollback_keeps_the_file_of_a_newer_format() {
        // Written for a newer nuvol: a key in a known section, a key in an
        // array of tables, a whole new section.
        let keep = KEEP.replace(
            "addresses = [\"10.1.2.3/24\"]\n",
            "addresses = [\"10.1.2.3/24\"]\nfuture_in_interface = 1\n",
        );
        let newer =
            format!("format = 2\n{keep}[update]\nfuture_policy = \"x\"\n[future]\nthing = true\n");
        // Strict parsing refuses it (that is what a typo looks like)...
        assert!(matches!(
            Config::parse(&newer, p()),
            Err(ConfigError::Syntax { .. })
        ));
        // ...the boot reads it, skipping what it does not know.
        let (c, skipped) = Config::parse_skipping(&newer, p()).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("roof-1"));
        assert_eq!(c.network.interfaces[0].addresses.len(), 1);
        assert!(c.admin.provisioned());
        assert_eq!(skipped.len(), 3, "{skipped:#?}");
        for key in [
            "network.interface[0].future_in_interface",
            "update.future_policy",
            "future",
        ] {
            assert!(
                skipped
                    .iter()
                    .any(|s| s.contains(&format!("`{key}`")) && s.contains("format 2")),
                "{key}: {skipped:#?}"
            );
        }
        // The file of this format (or an older one, without `format`)
        // reads strictly, with nothing skipped: the update direction.
        let (c, skipped) = Config::parse_skipping(KEEP, p()).unwrap();
        assert!(skipped.is_empty() && c.format.is_none());
        assert_eq!(Config::parse(KEEP, p()).unwrap(), c);
    }

    #[test]
    fn a_typo_costs_one_key_not_the_file() {
        let text = format!("{KEEP}[update]\npolcy = \"auto\"\n");
        let (c, skipped) = Config::parse_skipping(&text, p()).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("roof-1"));
        assert_eq!(skipped.len(), 1, "{skipped:#?}");
        assert!(skipped[0].contains("`update.polcy`") && skipped[0].contains("typo"));
        // Wrong types and values still refuse the file (safe defaults).
        for bad in [
            "[panel]\nport = \"x\"\n",
            "format = 0\n",
            "[panel]\nport = 0\nbogus = 1\n",
        ] {
            assert!(Config::parse_skipping(bad, p()).is_err(), "{bad}");
        }
        // At most 64 unknown keys: past that it is not a config file.
        let many: String = (0..65).map(|i| format!("k{i} = 1\n")).collect();
        assert!(Config::parse_skipping(&many, p()).is_err());
        let dir = std::env::temp_dir().join(format!("nuvol-config-skip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("nuvol.toml");
        std::fs::write(&f, &text).unwrap();
        let l = load_or_default(&f);
        assert!(l.problem.is_none() && l.skipped.len() == 1, "{l:?}");
        assert_eq!(l.config.hostname.as_deref(), Some("roof-1"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", p()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.hostname(), "nuvol");
        assert_eq!(c.panel.port, 80);
    }

    #[test]
    fn shipped_default_file_parses() {
        let text = include_str!("../../../image/nuvol.toml");
        let c = Config::parse(text, p()).unwrap();
        assert_eq!(c.hostname(), "nuvol");
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = Config::parse("hostname = \"a\"\n\nhostnme = \"b\"\n", p()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.line(), Some(3), "{msg}");
        assert!(msg.starts_with("/boot/nuvol.toml:3:1:"), "{msg}");
        assert!(msg.contains("hostnme"), "{msg}");
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = Config::parse("[panel]\nport = = 8\n", p()).unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn bad_hostname_names_key() {
        let err = Config::parse("hostname = \"no_underscores\"\n", p()).unwrap_err();
        assert!(err.to_string().contains("key `hostname`"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = Config::parse("[panel]\nport = \"eighty\"\n", p()).unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn load_or_default_never_fails() {
        let dir = std::env::temp_dir().join(format!("nuvol-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = load_or_default(&dir.join("none.toml"));
        assert!(!missing.found && missing.problem.is_none());
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "panel = [").unwrap();
        let l = load_or_default(&bad);
        assert!(l.found);
        assert_eq!(l.config, Config::default());
        assert!(l.problem.unwrap().contains("bad.toml:1:"));
        std::fs::write(&bad, [0xffu8, 0xfe]).unwrap();
        assert!(load_or_default(&bad).problem.unwrap().contains("UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
