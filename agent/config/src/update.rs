//! `[update]`: OS publisher keys and the update policy (docs/boot.md,
//! "Update").

use serde::{Deserialize, Serialize};

use crate::bundles::validate_keys;

/// `[update]`: who may publish OS updates for this box, and whether it
/// looks for them by itself.
///
/// ```toml
/// [update]
/// # OS publisher keys, trusted for updates only (not for bundles): the
/// # base64 line of a signify/minisign/nuvol public key file.
/// trusted_keys = ["RWQ..."]
/// # manual (default): only what a human applies. notify: look for newer
/// # updates (community peers, `url`) and say so on the dashboard.
/// # auto: as notify, and apply the newest one and reboot into it, inside
/// # `window` when one is set.
/// policy = "auto"
/// window = "02:00-05:00"   # UTC, may wrap midnight ("23:00-01:00")
/// url = "http://10.1.2.3/nuvol/nuvol-x86_64-latest.nvu"
/// check_hours = 6
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Base64 public keys (`"Ed" ‖ key id ‖ key`, 56 characters).
    pub trusted_keys: Vec<String>,
    pub policy: UpdatePolicy,
    /// `HH:MM-HH:MM` in UTC: when `auto` may apply and reboot.
    pub window: Option<String>,
    /// An `http://` URL of an artefact, looked at besides the community.
    pub url: Option<String>,
    /// Hours between looks (1..=168). Default: 6.
    pub check_hours: u32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            trusted_keys: Vec::new(),
            policy: UpdatePolicy::Manual,
            window: None,
            url: None,
            check_hours: 6,
        }
    }
}

/// What the box does about OS updates by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePolicy {
    /// Nothing: a human applies updates.
    #[default]
    Manual,
    /// Look for newer updates and show them.
    Notify,
    /// Look, and apply the newest in the window.
    Auto,
}

impl UpdatePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdatePolicy::Manual => "manual",
            UpdatePolicy::Notify => "notify",
            UpdatePolicy::Auto => "auto",
        }
    }
}

/// A daily time window in UTC, minutes since midnight: `start..end`,
/// wrapping midnight when `end < start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u32,
    pub end: u32,
}

impl Window {
    /// Parse `HH:MM-HH:MM`.
    pub fn parse(s: &str) -> Result<Window, String> {
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let bad = || format!("{s:?}: want HH:MM-HH:MM in UTC, e.g. \"02:00-05:00\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{s:?}: the window is empty (start = end)"));
        }
        Ok(Window { start, end })
    }

    /// Whether `minute` (since midnight UTC) is inside.
    pub fn contains(&self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl UpdateConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("update.{k}"), m));
        validate_keys(&self.trusted_keys).map_err(|m| ("update.trusted_keys".to_string(), m))?;
        if let Some(w) = &self.window {
            if let Err(m) = Window::parse(w) {
                return err("window", m);
            }
        }
        if let Some(u) = &self.url {
            let ok = u.len() <= 1024 && !u.bytes().any(|b| b.is_ascii_control() || b == b' ');
            if !ok || !u.starts_with("http://") || u.len() <= "http://".len() {
                let why = if u.starts_with("https://") {
                    "https is not supported; use http:// (the artefact is signed and checked against trusted_keys, so the transport need not be trusted)"
                } else {
                    "want an http:// URL of an update artefact (at most 1024 characters)"
                };
                return err("url", format!("{u:?}: {why}"));
            }
        }
        if !(1..=168).contains(&self.check_hours) {
            return err(
                "check_hours",
                format!("{}: between 1 and 168 hours", self.check_hours),
            );
        }
        if self.policy != UpdatePolicy::Manual && self.trusted_keys.is_empty() {
            return err(
                "policy",
                format!(
                    "{:?} needs at least one key in [update] trusted_keys: no update could ever be accepted",
                    self.policy.as_str()
                ),
            );
        }
        Ok(())
    }

    /// The window, when one is set (validated at load).
    pub fn window(&self) -> Option<Window> {
        self.window.as_deref().and_then(|w| Window::parse(w).ok())
    }
}

#[cfg(test)]
mod update_tests {
    use super::*;
    use crate::{Config, ConfigError};
    use std::path::Path;

    #[test]
    fn windows_parse_and_wrap_midnight() {
        let w = Window::parse("02:00-05:30").unwrap();
        assert_eq!((w.start, w.end), (120, 330));
        assert!(w.contains(120) && w.contains(329));
        assert!(!w.contains(330) && !w.contains(0) && !w.contains(1439));
        let n = Window::parse("23:00-01:00").unwrap();
        assert!(n.contains(23 * 60) && n.contains(0) && n.contains(59));
        assert!(!n.contains(60) && !n.contains(12 * 60));
        for bad in [
            "",
            "2-5",
            "02:00",
            "24:00-01:00",
            "02:60-03:00",
            "02:00-02:00",
            "2:00-5:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn update_policy_is_checked() {
        let key = format!("RW{}", "A".repeat(54));
        let ok = format!(
            "[update]\ntrusted_keys = [\"{key}\"]\npolicy = \"auto\"\nwindow = \"22:00-04:00\"\nurl = \"http://10.0.0.1/os.nvu\"\ncheck_hours = 24\n"
        );
        let c = Config::parse(&ok, Path::new("nuvol.toml")).unwrap();
        assert_eq!(c.update.policy, UpdatePolicy::Auto);
        assert_eq!(
            c.update.window(),
            Some(Window {
                start: 1320,
                end: 240
            })
        );
        let d = Config::parse("", Path::new("nuvol.toml")).unwrap();
        assert_eq!(d.update.policy, UpdatePolicy::Manual);
        assert_eq!(d.update.check_hours, 6);
        for (text, key) in [
            (
                "[update]\npolicy = \"notify\"\n".to_string(),
                "update.policy",
            ),
            (
                format!("[update]\ntrusted_keys = [\"{key}\"]\nwindow = \"soon\"\n"),
                "update.window",
            ),
            (
                format!("[update]\ntrusted_keys = [\"{key}\"]\nurl = \"https://m/a.nvu\"\n"),
                "update.url",
            ),
            (
                format!("[update]\ntrusted_keys = [\"{key}\"]\nurl = \"ftp://m/a.nvu\"\n"),
                "update.url",
            ),
            (
                format!("[update]\ntrusted_keys = [\"{key}\"]\ncheck_hours = 0\n"),
                "update.check_hours",
            ),
        ] {
            match Config::parse(&text, Path::new("nuvol.toml")) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            Config::parse(
                "[update]\npolicy = \"sometimes\"\n",
                Path::new("nuvol.toml")
            ),
            Err(ConfigError::Syntax { .. })
        ));
    }
}
