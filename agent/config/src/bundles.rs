//! `[bundles]`: signed service bundles installed unattended at boot.
//!
//! ```toml
//! [bundles]
//! # Publisher keys to trust: the base64 line of a signify/minisign/nuvol
//! # public key file ("RWQ..."). Added to the keyring on the data partition.
//! trusted_keys = ["RWQeg2D4vKnpUiKlqHB5P961Whh/7kK2j6Gzq1AUMnZWOMM0Hco9miVF"]
//! # Bundles to install if missing or older: a file on the boot partition
//! # (relative to nuvol.toml) or an http:// URL on the community network
//! # (retried with backoff until the network is up).
//! install = ["bundles/syncthing.nvb", "http://10.1.2.3/bundles/etcd.nvb"]
//! # What bundles may declare (all off by default).
//! allow_setuid = false
//! allow_devices = false
//! allow_root = false
//! # Offer the installed (signed) bundles to other boxes of the community:
//! # GET /share/v1/bundles and the gossip tag svc:nuvol.bundles. Default: true.
//! share = true
//! ```
//! Every bundle is verified against the keyring before anything in it is
//! used, wherever it came from.

use serde::{Deserialize, Serialize};

/// Most entries in `trusted_keys` or `install`.
pub const MAX_BUNDLE_ENTRIES: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundlesConfig {
    /// Base64 public keys (`"Ed" ‖ key id ‖ key`, 56 characters).
    pub trusted_keys: Vec<String>,
    /// Bundle files (relative to nuvol.toml's directory) or http:// URLs.
    pub install: Vec<String>,
    /// Let bundles that declare setuid files install.
    pub allow_setuid: bool,
    /// Let bundles that declare device nodes install.
    pub allow_devices: bool,
    /// Let bundles that declare `privileges.root` run as uid 0.
    pub allow_root: bool,
    /// Offer installed bundles to other boxes (`/share/v1/bundles`, gossip
    /// tag `svc:nuvol.bundles`). Default: true.
    pub share: bool,
}

impl Default for BundlesConfig {
    fn default() -> Self {
        BundlesConfig {
            trusted_keys: Vec::new(),
            install: Vec::new(),
            allow_setuid: false,
            allow_devices: false,
            allow_root: false,
            share: true,
        }
    }
}

/// Where a bundle named in `install` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource<'a> {
    /// A path relative to the directory holding nuvol.toml.
    File(&'a str),
    /// An http:// URL (https:// is recognised only to be refused clearly).
    Url(&'a str),
}

impl BundlesConfig {
    /// Classify an `install` entry.
    pub fn source(entry: &str) -> BundleSource<'_> {
        if entry.starts_with("http://") || entry.starts_with("https://") {
            BundleSource::Url(entry)
        } else {
            BundleSource::File(entry)
        }
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("bundles.{k}"), m));
        validate_keys(&self.trusted_keys).map_err(|m| ("bundles.trusted_keys".to_string(), m))?;
        if self.install.len() > MAX_BUNDLE_ENTRIES {
            return err("install", format!("at most {MAX_BUNDLE_ENTRIES} bundles"));
        }
        for e in &self.install {
            if e.is_empty() || e.len() > 1024 || e.contains('\0') {
                return err("install", format!("{e:?} is not a file name or URL"));
            }
            if let BundleSource::File(p) = BundlesConfig::source(e) {
                if p.starts_with('/') || p.split('/').any(|c| c == "..") {
                    return err(
                        "install",
                        format!("{p:?}: give a path relative to nuvol.toml, without '..'"),
                    );
                }
                if p.contains("://") {
                    return err("install", format!("{p:?}: only http:// URLs"));
                }
            }
            if e.starts_with("https://") {
                return err(
                    "install",
                    format!("{e:?}: https is not supported for downloads; use http:// (every bundle is verified against trusted_keys, so the transport need not be trusted)"),
                );
            }
        }
        Ok(())
    }
}

/// Check a `trusted_keys` list (`[bundles]`, `[update]`): at most
/// [`MAX_BUNDLE_ENTRIES`] public key lines.
pub(crate) fn validate_keys(keys: &[String]) -> Result<(), String> {
    if keys.len() > MAX_BUNDLE_ENTRIES {
        return Err(format!("at most {MAX_BUNDLE_ENTRIES} keys"));
    }
    for k in keys {
        let ok = k.len() == 56
            && k.starts_with("RW")
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if !ok {
            return Err(format!(
                "{k:?} is not an ed25519 public key line (56 base64 characters starting \"RW\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};
    use std::path::Path;

    #[test]
    fn parses_bundles_section() {
        let c = Config::parse(
            r#"
[bundles]
trusted_keys = ["RWQeg2D4vKnpUiKlqHB5P961Whh/7kK2j6Gzq1AUMnZWOMM0Hco9miVF"]
install = ["bundles/web.nvb", "http://10.0.0.1/etcd.nvb"]
allow_root = true
"#,
            Path::new("nuvol.toml"),
        )
        .unwrap();
        assert_eq!(c.bundles.install.len(), 2);
        assert!(c.bundles.allow_root);
        assert!(!c.bundles.allow_setuid);
        assert!(c.bundles.share, "sharing is on by default");
        let c = Config::parse("[bundles]\nshare = false\n", Path::new("nuvol.toml")).unwrap();
        assert!(!c.bundles.share);
        assert!(Config::default().bundles.share);
    }

    #[test]
    fn rejects_bad_entries() {
        for (text, key) in [
            (
                "[bundles]\ntrusted_keys = [\"nope\"]\n",
                "bundles.trusted_keys",
            ),
            (
                "[bundles]\ninstall = [\"../etc/x.nvb\"]\n",
                "bundles.install",
            ),
            ("[bundles]\ninstall = [\"/abs.nvb\"]\n", "bundles.install"),
            (
                "[bundles]\ninstall = [\"ftp://x/y.nvb\"]\n",
                "bundles.install",
            ),
        ] {
            match Config::parse(text, Path::new("nuvol.toml")) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // A wrong type points at the key's line and column, like every key.
        match Config::parse("[bundles]\nshare = \"yes\"\n", Path::new("nuvol.toml")) {
            Err(ConfigError::Syntax { line, message, .. }) => {
                assert_eq!(line, 2, "{message}");
                assert!(message.contains("boolean"), "{message}");
            }
            other => panic!("share = \"yes\": {other:?}"),
        }
        assert!(matches!(
            Config::parse("[bundles]\nsurprise = 1\n", Path::new("nuvol.toml")),
            Err(ConfigError::Syntax { .. })
        ));
    }
}
