//! `[overlay]`: the community's WireGuard overlay (opt-in per box).
//!
//! ```toml
//! [overlay]
//! enabled = false        # join the overlay (needs [discovery] encrypt_key)
//! port = 51820           # WireGuard's UDP port
//! interface = "nv0"      # the WireGuard link
//! keepalive = 25         # seconds; keeps NAT mappings open (0: off)
//! relay = true           # a super node forwards for boxes that cannot
//!                        # reach each other directly (ignored elsewhere)
//! ```
//!
//! The section is called `[overlay]` because that is what people know it
//! as; the settings file (`overlay.rs`, changes made in the panel) is a
//! different thing.

use serde::{Deserialize, Serialize};

/// WireGuard's usual port.
pub const DEFAULT_OVERLAY_PORT: u16 = 51820;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayConfig {
    /// Join the overlay. Default: false (opt-in, as in Cloudy).
    pub enabled: bool,
    /// UDP port of WireGuard. Default: 51820.
    pub port: u16,
    /// Name of the WireGuard link. Default: `nv0`.
    pub interface: String,
    /// Persistent keepalive in seconds (0: off). Default: 25.
    pub keepalive: u16,
    /// On a super node: forward between boxes that cannot reach each other.
    /// Default: true.
    pub relay: bool,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig {
            enabled: false,
            port: DEFAULT_OVERLAY_PORT,
            interface: "nv0".into(),
            keepalive: 25,
            relay: true,
        }
    }
}

impl OverlayConfig {
    pub(crate) fn validate(&self, has_key: bool) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("overlay.{k}"), m));
        if self.port == 0 {
            return err("port", "port 0 is not a port".into());
        }
        let i = &self.interface;
        if i.is_empty()
            || i.len() > 15
            || !i
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return err(
                "interface",
                format!("{i:?}: want 1-15 letters, digits, '-' or '_'"),
            );
        }
        if self.enabled && !has_key {
            return err(
                "enabled",
                "the overlay admits members by the community's shared secret: set [discovery] encrypt_key".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(t, Path::new("/boot/nuvol.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_parses() {
        let c = parse("").unwrap();
        assert!(!c.overlay.enabled);
        assert_eq!(
            (c.overlay.port, c.overlay.interface.as_str()),
            (51820, "nv0")
        );
        let c = parse(
            "[discovery]\nencrypt_key = \"MDEyMzQ1Njc4OWFiY2RlZg==\"\n[overlay]\nenabled = true\nport = 51999\nkeepalive = 10\n",
        )
        .unwrap();
        assert!(c.overlay.enabled);
        assert_eq!((c.overlay.port, c.overlay.keepalive), (51999, 10));
    }

    #[test]
    fn bad_overlay_settings_are_named() {
        let e = parse("[overlay]\nenabled = true\n").unwrap_err();
        assert!(
            e.contains("overlay.enabled") && e.contains("encrypt_key"),
            "{e}"
        );
        let e = parse("[overlay]\ninterface = \"a very long name!\"\n").unwrap_err();
        assert!(e.contains("overlay.interface"), "{e}");
        let e = parse("[overlay]\nport = 0\n").unwrap_err();
        assert!(e.contains("overlay.port"), "{e}");
        let e = parse("[overlay]\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }
}
