//! The settings overlay: `<state-dir>/settings.toml`, written by the panel,
//! `PUT /api/v1/settings` and `nuvol ctl settings set`, read over the
//! provisioning file at every start. For the few keys it holds, the
//! overlay wins over nuvol.toml:
//!
//! | key | value | applied |
//! |---|---|---|
//! | `hostname` | RFC 1123 name | at the next start of the agent (reboot) |
//! | `discovery.zone` | 1-63 of `[A-Za-z0-9._-]`, `""` = no zone | live (gossip tags) |
//! | `discovery.role` | `super-node` or `ordinary-node` | live (gossip tags) |
//! | `panel.allow_plain_http` | `true` / `false` | live |
//! | `admin.password` | stored as `[admin] password_hash` (argon2) | live |
//! | `overlay.enabled` | `true` / `false`: the community's WireGuard overlay | at the next start of the agent |
//!
//! The file has the same shape as nuvol.toml (`[discovery] zone = …`) and
//! the same rules: a value nuvol.toml would refuse is refused here, naming
//! the key.

use std::collections::BTreeSet;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Config, Role};

/// File name of the overlay under the agent's state directory.
pub const SETTINGS_FILE: &str = "settings.toml";
/// Largest overlay file read.
pub const MAX_SETTINGS_BYTES: u64 = 16 * 1024;
/// Shortest admin password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// Longest admin password accepted (argon2 input is bounded anyway).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// One changeable key: its dotted name and when a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingKey {
    pub key: &'static str,
    /// `"live"` or `"restart"` (next start of the agent).
    pub applies: &'static str,
    pub help: &'static str,
}

/// Every key the overlay may hold, in display order.
pub const KEYS: &[SettingKey] = &[
    SettingKey {
        key: "discovery.zone",
        applies: "live",
        help: "locality name announced in gossip; \"\" for none",
    },
    SettingKey {
        key: "discovery.role",
        applies: "live",
        help: "super-node or ordinary-node, announced in gossip",
    },
    SettingKey {
        key: "panel.allow_plain_http",
        applies: "live",
        help: "serve the whole panel over plain HTTP too (true/false)",
    },
    SettingKey {
        key: "admin.password",
        applies: "live",
        help: "admin password (at least 10 characters); replaces the console token",
    },
    SettingKey {
        key: "overlay.enabled",
        applies: "restart",
        help: "join the community's WireGuard overlay (needs [discovery] encrypt_key); applies at the next start of the agent",
    },
    SettingKey {
        key: "hostname",
        applies: "restart",
        help: "host name; applies at the next start of the agent (reboot)",
    },
];

/// Every typed value of the file: (section, key).
const LEAVES: [(Option<&str>, &str); 6] = [
    (None, "hostname"),
    (Some("discovery"), "zone"),
    (Some("discovery"), "role"),
    (Some("panel"), "allow_plain_http"),
    (Some("admin"), "password_hash"),
    (Some("overlay"), "enabled"),
];

/// Whether `key` is a changeable setting.
pub fn known_key(key: &str) -> bool {
    KEYS.iter().any(|k| k.key == key)
}

/// `[discovery]` keys of the overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Keys a newer agent wrote that this one does not know: kept as they
    /// are, so a rollback and the next save lose none of them.
    #[serde(flatten, skip_serializing_if = "toml::Table::is_empty")]
    pub extra: toml::Table,
}

/// `[panel]` keys of the overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PanelSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_plain_http: Option<bool>,
    /// Keys a newer agent wrote that this one does not know: kept as they
    /// are, so a rollback and the next save lose none of them.
    #[serde(flatten, skip_serializing_if = "toml::Table::is_empty")]
    pub extra: toml::Table,
}

/// `[overlay]` keys of the settings file (the community's WireGuard
/// overlay, not this file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverlaySettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Keys a newer agent wrote that this one does not know: kept as they
    /// are, so a rollback and the next save lose none of them.
    #[serde(flatten, skip_serializing_if = "toml::Table::is_empty")]
    pub extra: toml::Table,
}

impl OverlaySettings {
    fn is_unset(&self) -> bool {
        self.enabled.is_none() && self.extra.is_empty()
    }
}

/// `[admin]` keys of the overlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// argon2 PHC string of the admin password set through the API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Keys a newer agent wrote that this one does not know: kept as they
    /// are, so a rollback and the next save lose none of them.
    #[serde(flatten, skip_serializing_if = "toml::Table::is_empty")]
    pub extra: toml::Table,
}

/// The overlay file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub panel: PanelSettings,
    pub discovery: DiscoverySettings,
    pub admin: AdminSettings,
    #[serde(skip_serializing_if = "OverlaySettings::is_unset")]
    pub overlay: OverlaySettings,
    /// Keys a newer agent wrote that this one does not know: kept as they
    /// are, so a rollback and the next save lose none of them.
    #[serde(flatten, skip_serializing_if = "toml::Table::is_empty")]
    pub extra: toml::Table,
}

/// What went wrong with a setting or the overlay file.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("unknown setting `{0}` (known: hostname, discovery.zone, discovery.role, panel.allow_plain_http, admin.password, overlay.enabled)")]
    Unknown(String),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SettingError {
    /// Stable machine code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            SettingError::Unknown(_) => "unknown_setting",
            SettingError::Invalid { .. } => "invalid_setting",
            SettingError::File { .. } => "bad_settings_file",
            SettingError::Io { .. } => "io_error",
        }
    }

    /// The key the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            SettingError::Unknown(k) => Some(k),
            SettingError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> SettingError {
    SettingError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

impl Settings {
    /// Read the overlay; a missing file is an empty overlay.
    pub fn load(path: &Path) -> Result<Settings, SettingError> {
        let (s, refused) = Settings::load_keeping(path)?;
        match refused.into_iter().next() {
            None => Ok(s),
            Some(e) => Err(SettingError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }

    /// Read the overlay as [`Settings::load`], except that a value this
    /// agent refuses (a role or a hostname a newer agent allows, after a
    /// rollback) costs only its own key: it is not in force, it is kept as
    /// written (in `extra`, so the next save writes it back), and it is
    /// returned with why. Every other key is in force. Only a file that is
    /// not TOML at all, too big or unreadable is refused whole.
    pub fn load_keeping(path: &Path) -> Result<(Settings, Vec<SettingError>), SettingError> {
        let io = |source| SettingError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Settings::default(), Vec::new()))
            }
            Err(e) => return Err(io(e)),
        };
        if meta.len() > MAX_SETTINGS_BYTES {
            return Err(SettingError::File {
                path: path.to_path_buf(),
                message: format!("more than {MAX_SETTINGS_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Settings::parse_keeping(&text).map_err(|message| SettingError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    /// The text's settings with each refused value set aside (see
    /// [`Settings::load_keeping`]); `Err` only for text that is not TOML.
    fn parse_keeping(text: &str) -> Result<(Settings, Vec<SettingError>), String> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        let mut refused = Vec::new();
        let mut aside: Vec<(Option<&str>, &str, toml::Value)> = Vec::new();
        for (section, key) in LEAVES {
            let name = section.map_or(key.to_string(), |s| format!("{s}.{key}"));
            let value = match section {
                None => table.get(key),
                Some(s) => table
                    .get(s)
                    .and_then(|t| t.as_table())
                    .and_then(|t| t.get(key)),
            };
            let Some(value) = value.cloned() else {
                continue;
            };
            // The value alone, read and checked as this agent would.
            let mut alone = toml::Table::new();
            match section {
                None => {
                    alone.insert(key.to_string(), value.clone());
                }
                Some(s) => {
                    let mut t = toml::Table::new();
                    t.insert(key.to_string(), value.clone());
                    alone.insert(s.to_string(), toml::Value::Table(t));
                }
            }
            let why = match toml::Value::Table(alone).try_into::<Settings>() {
                Ok(one) => one.validate().err().map(|e| e.to_string()),
                Err(e) => Some(e.message().trim().to_string()),
            };
            if let Some(why) = why {
                match section {
                    None => table.remove(key),
                    Some(s) => table
                        .get_mut(s)
                        .and_then(|t| t.as_table_mut())
                        .and_then(|t| t.remove(key)),
                };
                refused.push(invalid(
                    &name,
                    format!("{why}; kept in the file, not in force"),
                ));
                aside.push((section, key, value));
            }
        }
        // A section that is not a table at all is refused whole.
        let mut s: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
        for (section, key, value) in aside {
            let extra = match section {
                None => &mut s.extra,
                Some("discovery") => &mut s.discovery.extra,
                Some("panel") => &mut s.panel.extra,
                Some("admin") => &mut s.admin.extra,
                Some(_) => &mut s.overlay.extra,
            };
            extra.insert(key.to_string(), value);
        }
        Ok((s, refused))
    }

    /// Write the overlay atomically (temp file, fsync, rename, fsync of the
    /// directory), mode 0600: it may hold the password hash.
    pub fn save(&self, path: &Path) -> Result<(), SettingError> {
        let this = self;
        let text = toml::to_string(this).map_err(|e| SettingError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# Written by the nuvol agent (panel settings, PUT /api/v1/settings).\n\
             # Keys here win over nuvol.toml.\n{text}"
        );
        nuvol_durable::write_atomic(path, text.as_bytes(), nuvol_durable::Mode::Private).map_err(
            |source| SettingError::Io {
                path: path.to_path_buf(),
                source,
            },
        )
    }

    /// `base` (nuvol.toml) with the overlay's keys in force.
    pub fn apply(&self, base: &Config) -> Config {
        let mut c = base.clone();
        if let Some(h) = &self.hostname {
            c.hostname = Some(h.clone());
        }
        if let Some(z) = &self.discovery.zone {
            c.discovery.zone = (!z.is_empty()).then(|| z.clone());
        }
        if let Some(r) = self.discovery.role {
            c.discovery.role = r;
        }
        if let Some(p) = self.panel.allow_plain_http {
            c.panel.allow_plain_http = p;
        }
        if let Some(h) = &self.admin.password_hash {
            c.admin.password_hash = Some(h.clone());
        }
        if let Some(e) = self.overlay.enabled {
            c.overlay.enabled = e;
        }
        c
    }

    /// Whether the overlay sets `key`.
    pub fn sets(&self, key: &str) -> bool {
        match key {
            "hostname" => self.hostname.is_some(),
            "discovery.zone" => self.discovery.zone.is_some(),
            "discovery.role" => self.discovery.role.is_some(),
            "panel.allow_plain_http" => self.panel.allow_plain_http.is_some(),
            "admin.password" => self.admin.password_hash.is_some(),
            "overlay.enabled" => self.overlay.enabled.is_some(),
            _ => false,
        }
    }

    /// Set `key` from its text form, or drop it from the overlay with
    /// `None` (nuvol.toml's value, or the default, is in force again).
    /// `admin.password` is set with [`Settings::set_password_hash`] (it
    /// needs hashing); here it can only be dropped.
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<(), SettingError> {
        self.set_typed(key, value)?;
        self.forget_kept(key);
        Ok(())
    }

    /// Drop a value kept aside from the file (refused when it was read):
    /// the key is this agent's now, set or dropped.
    fn forget_kept(&mut self, key: &str) {
        if !known_key(key) {
            return;
        }
        let (section, leaf) = match key.split_once('.') {
            Some(("admin", _)) => (Some("admin"), "password_hash"),
            Some((s, l)) => (Some(s), l),
            None => (None, key),
        };
        let extra = match section {
            None => &mut self.extra,
            Some("discovery") => &mut self.discovery.extra,
            Some("panel") => &mut self.panel.extra,
            Some("admin") => &mut self.admin.extra,
            Some(_) => &mut self.overlay.extra,
        };
        extra.remove(leaf);
    }

    fn set_typed(&mut self, key: &str, value: Option<&str>) -> Result<(), SettingError> {
        let v = value.map(str::trim);
        match key {
            "hostname" => {
                if let Some(h) = v {
                    crate::validate_hostname(h).map_err(|m| invalid(key, m))?;
                }
                self.hostname = v.map(str::to_string);
            }
            "discovery.zone" => {
                if let Some(z) = v.filter(|z| !z.is_empty()) {
                    let d = crate::DiscoveryConfig {
                        zone: Some(z.to_string()),
                        ..Default::default()
                    };
                    d.validate().map_err(|(k, m)| invalid(&k, m))?;
                }
                self.discovery.zone = v.map(str::to_string);
            }
            "discovery.role" => {
                self.discovery.role = match v {
                    None => None,
                    Some("super-node") => Some(Role::SuperNode),
                    Some("ordinary-node") => Some(Role::OrdinaryNode),
                    Some(x) => {
                        return Err(invalid(
                            key,
                            format!("{x:?}: want \"super-node\" or \"ordinary-node\""),
                        ))
                    }
                }
            }
            "panel.allow_plain_http" => {
                self.panel.allow_plain_http = match v {
                    None => None,
                    Some("true" | "1" | "yes" | "on") => Some(true),
                    Some("false" | "0" | "no" | "off") => Some(false),
                    Some(x) => return Err(invalid(key, format!("{x:?}: want true or false"))),
                }
            }
            "overlay.enabled" => {
                self.overlay.enabled = match v {
                    None => None,
                    Some("true" | "1" | "yes" | "on") => Some(true),
                    Some("false" | "0" | "no" | "off") => Some(false),
                    Some(x) => return Err(invalid(key, format!("{x:?}: want true or false"))),
                }
            }
            "admin.password" => {
                if v.is_some() {
                    return Err(invalid(key, "set a password with set_password_hash"));
                }
                self.admin.password_hash = None;
            }
            _ => return Err(SettingError::Unknown(key.to_string())),
        }
        Ok(())
    }

    /// Store the hash of a new admin password (see [`check_password`]).
    pub fn set_password_hash(&mut self, phc: String) -> Result<(), SettingError> {
        let a = crate::AdminConfig {
            password_hash: Some(phc.clone()),
            api_keys: Vec::new(),
        };
        a.validate()
            .map_err(|(_, m)| invalid("admin.password", m))?;
        self.admin.password_hash = Some(phc);
        self.forget_kept("admin.password");
        Ok(())
    }

    /// The checks of nuvol.toml, on the overlay's keys.
    pub fn validate(&self) -> Result<(), SettingError> {
        let mut probe = Settings::default();
        if let Some(h) = &self.hostname {
            probe.set("hostname", Some(h))?;
        }
        if let Some(z) = &self.discovery.zone {
            probe.set("discovery.zone", Some(z))?;
        }
        if let Some(h) = &self.admin.password_hash {
            probe.set_password_hash(h.clone())?;
        }
        Ok(())
    }
}

/// The rules for a new admin password.
pub fn check_password(pw: &str) -> Result<(), SettingError> {
    let n = pw.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(invalid(
            "admin.password",
            format!("too short: at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if pw.len() > MAX_PASSWORD_LEN {
        return Err(invalid(
            "admin.password",
            format!("too long: at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    if pw.chars().any(char::is_control) {
        return Err(invalid(
            "admin.password",
            "control characters are not allowed",
        ));
    }
    Ok(())
}

/// The dotted keys (among [`KEYS`], with `admin.password` for
/// `admin.password_hash`) that the provisioning file's text sets, so the
/// API can say where a value comes from. A file that does not parse sets
/// nothing (the defaults are in force).
pub fn keys_in_file(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(t) = text.parse::<toml::Table>() else {
        return out;
    };
    for k in KEYS {
        let path: Vec<&str> = match k.key {
            "admin.password" => vec!["admin", "password_hash"],
            other => other.split('.').collect(),
        };
        let mut cur: Option<&toml::Value> = None;
        let mut table = Some(&t);
        for p in &path {
            cur = table.and_then(|tb| tb.get(*p));
            table = cur.and_then(toml::Value::as_table);
        }
        if cur.is_some() {
            out.insert(k.key.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_validates_and_names_the_key() {
        let mut s = Settings::default();
        s.set("discovery.zone", Some("north")).unwrap();
        s.set("discovery.role", Some("super-node")).unwrap();
        s.set("panel.allow_plain_http", Some("true")).unwrap();
        s.set("hostname", Some("box-1")).unwrap();
        let e = s.set("discovery.zone", Some("no spaces")).unwrap_err();
        assert_eq!(e.key(), Some("discovery.zone"), "{e}");
        let e = s.set("discovery.role", Some("king")).unwrap_err();
        assert!(e.to_string().contains("discovery.role"), "{e}");
        let e = s.set("panel.allow_plain_http", Some("maybe")).unwrap_err();
        assert_eq!(e.code(), "invalid_setting");
        let e = s.set("hostname", Some("a_b")).unwrap_err();
        assert_eq!(e.key(), Some("hostname"));
        let e = s.set("panel.port", Some("81")).unwrap_err();
        assert_eq!(e.code(), "unknown_setting");
        assert!(check_password("short").is_err());
        assert!(check_password("long enough!").is_ok());
        let e = s.set_password_hash("plain".into()).unwrap_err();
        assert_eq!(e.key(), Some("admin.password"));
        // Failed sets changed nothing.
        assert_eq!(s.discovery.zone.as_deref(), Some("north"));
    }

    #[test]
    fn overlay_wins_and_round_trips() {
        let base = Config::parse(
            "hostname = \"a\"\n[discovery]\nzone = \"south\"\n[panel]\nallow_plain_http = true\n",
            Path::new("n.toml"),
        )
        .unwrap();
        let mut s = Settings::default();
        s.set("discovery.zone", Some("")).unwrap();
        s.set("panel.allow_plain_http", Some("false")).unwrap();
        s.set_password_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into())
            .unwrap();
        let c = s.apply(&base);
        assert_eq!(c.discovery.zone, None, "\"\" clears the zone");
        assert!(!c.panel.allow_plain_http);
        assert_eq!(c.hostname(), "a", "keys the overlay lacks stay");
        assert!(c.admin.provisioned());
        let dir = std::env::temp_dir().join(format!("nuvol-overlay-{}", std::process::id()));
        let path = dir.join(SETTINGS_FILE);
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        s.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Settings::load(&path).unwrap(), s);
        s.set("panel.allow_plain_http", None).unwrap();
        assert!(!s.sets("panel.allow_plain_http"));
        std::fs::write(&path, "[panel]\nallow_plain_http = 8\n").unwrap();
        assert_eq!(
            Settings::load(&path).unwrap_err().code(),
            "bad_settings_file"
        );
        std::fs::write(&path, "[discovery]\nzone = \"a b\"\n").unwrap();
        assert!(Settings::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overlay_switch_is_a_setting_applied_at_restart() {
        let mut s = Settings::default();
        s.set("overlay.enabled", Some("on")).unwrap();
        assert!(s.sets("overlay.enabled"));
        assert!(s.apply(&Config::default()).overlay.enabled);
        let text = toml::to_string(&s).unwrap();
        assert!(
            text.contains("[overlay]") && text.contains("enabled = true"),
            "{text}"
        );
        let e = s
            .set("overlay.enabled", Some("maybe"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("overlay.enabled") && e.contains("true or false"),
            "{e}"
        );
        s.set("overlay.enabled", None).unwrap();
        assert!(!s.sets("overlay.enabled"));
        assert!(!toml::to_string(&s).unwrap().contains("overlay"));
        let k = KEYS.iter().find(|k| k.key == "overlay.enabled").unwrap();
        assert_eq!(k.applies, "restart");
        assert!(keys_in_file("[overlay]\nenabled = true\n").contains("overlay.enabled"));
    }

    /// After an update the newer agent may have written keys this one does
    /// not know; after a rollback this agent reads them. They must neither
    /// cost the keys it knows nor be lost when it saves the overlay.
    #[test]
    fn a_value_this_agent_refuses_costs_only_its_key() {
        let dir = std::env::temp_dir().join(format!("nuvol-overlay-keep-{}", std::process::id()));
        let path = dir.join(SETTINGS_FILE);
        std::fs::create_dir_all(&dir).unwrap();
        // After a rollback: a newer agent allowed a third role and a zone
        // this one finds too long; the password hash and the rest stand.
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
        let long_zone = "z".repeat(100);
        std::fs::write(
            &path,
            format!(
                "[discovery]\nrole = \"relay-node\"\nzone = \"{long_zone}\"\n\
                 [panel]\nallow_plain_http = true\n\
                 [admin]\npassword_hash = \"{hash}\"\n"
            ),
        )
        .unwrap();
        assert!(Settings::load(&path).is_err(), "the strict reader refuses");
        let (mut s, refused) = Settings::load_keeping(&path).unwrap();
        let keys: Vec<_> = refused.iter().filter_map(|e| e.key()).collect();
        assert_eq!(keys, ["discovery.zone", "discovery.role"], "{refused:?}");
        assert!(
            refused[1].to_string().contains("relay-node"),
            "{}",
            refused[1]
        );
        assert_eq!(s.panel.allow_plain_http, Some(true));
        assert_eq!(s.admin.password_hash.as_deref(), Some(hash));
        assert_eq!(
            (s.discovery.role, s.discovery.zone.as_deref()),
            (None, None)
        );
        // Saved again, the refused values are written back as they were.
        s.save(&path).unwrap();
        let back: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["discovery"]["role"].as_str(), Some("relay-node"));
        assert_eq!(back["discovery"]["zone"].as_str(), Some(long_zone.as_str()));
        // A role set here replaces the kept one: one key, this agent's.
        s.set("discovery.role", Some("super-node")).unwrap();
        s.save(&path).unwrap();
        let (again, refused) = Settings::load_keeping(&path).unwrap();
        assert_eq!(again.discovery.role, Some(Role::SuperNode));
        assert_eq!(refused.len(), 1, "{refused:?}");
        // Dropping the zone drops the kept value too.
        let mut again = again;
        again.set("discovery.zone", None).unwrap();
        again.save(&path).unwrap();
        let (_, refused) = Settings::load_keeping(&path).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        // Not TOML at all: refused whole, naming the file.
        std::fs::write(&path, "[discovery\n").unwrap();
        let e = Settings::load_keeping(&path).unwrap_err();
        assert_eq!(e.code(), "bad_settings_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_of_a_newer_agent_are_read_and_kept() {
        let dir = std::env::temp_dir().join(format!("nuvol-overlay-new-{}", std::process::id()));
        let path = dir.join(SETTINGS_FILE);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            &path,
            "hostname = \"roof\"\ntimezone = \"Europe/Madrid\"\n\
             [discovery]\nzone = \"north\"\nweight = 3\n\
             [panel]\nallow_plain_http = true\ntheme = \"dark\"\n\
             [mesh]\nmtu = 1380\n",
        )
        .unwrap();
        let mut s = Settings::load(&path).unwrap();
        assert_eq!(s.hostname.as_deref(), Some("roof"));
        assert_eq!(s.discovery.zone.as_deref(), Some("north"));
        assert_eq!(s.panel.allow_plain_http, Some(true));
        let c = s.apply(&Config::default());
        assert_eq!(c.discovery.zone.as_deref(), Some("north"));
        // A change through this agent keeps every unknown key.
        s.set("discovery.role", Some("super-node")).unwrap();
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(back["timezone"].as_str(), Some("Europe/Madrid"), "{text}");
        assert_eq!(back["discovery"]["weight"].as_integer(), Some(3), "{text}");
        assert_eq!(
            back["discovery"]["role"].as_str(),
            Some("super-node"),
            "{text}"
        );
        assert_eq!(back["panel"]["theme"].as_str(), Some("dark"), "{text}");
        assert_eq!(back["mesh"]["mtu"].as_integer(), Some(1380), "{text}");
        assert_eq!(Settings::load(&path).unwrap(), s);
        // An older agent's file (fewer keys) reads as before.
        std::fs::write(&path, "[panel]\nallow_plain_http = false\n").unwrap();
        let s = Settings::load(&path).unwrap();
        assert_eq!(s.panel.allow_plain_http, Some(false));
        assert!(s.extra.is_empty() && s.discovery.zone.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_in_file_finds_provisioned_keys() {
        let k =
            keys_in_file("[discovery]\nrole = \"super-node\"\n[admin]\npassword_hash = \"x\"\n");
        assert!(k.contains("discovery.role") && k.contains("admin.password"));
        assert!(!k.contains("discovery.zone") && !k.contains("hostname"));
        assert!(keys_in_file("not = = toml").is_empty());
    }
}
