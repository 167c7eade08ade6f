//! `[admin]`: credentials provisioned in nuvol.toml instead of the admin
//! token the box makes on first boot.
//!
//! ```toml
//! [admin]
//! # argon2 PHC string of the panel password (make one with
//! # `nuvol ctl hash-password`). With it, the console token is not used.
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! # API keys for provisioning scripts and `nuvol ctl`: "sha256:<hex of the
//! # key's SHA-256>" or an argon2 PHC string of the key.
//! api_keys = ["sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"]
//! ```
//! Setting either turns the console admin token off.

use serde::{Deserialize, Serialize};

/// Most entries in `api_keys`.
pub const MAX_API_KEYS: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// argon2 PHC string of the admin password.
    pub password_hash: Option<String>,
    /// Hashed API keys: `sha256:<64 hex>` or argon2 PHC strings.
    pub api_keys: Vec<String>,
}

fn check_phc(s: &str) -> Result<(), String> {
    let ok =
        (s.starts_with("$argon2id$") || s.starts_with("$argon2i$") || s.starts_with("$argon2d$"))
            && s.len() <= 512
            && s.split('$').count() == 6;
    if !ok {
        return Err("not an argon2 PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)".into());
    }
    let m = s
        .split('$')
        .flat_map(|p| p.split(','))
        .find_map(|kv| kv.strip_prefix("m="))
        .and_then(|m| m.parse::<u32>().ok());
    match m {
        Some(m) if m <= 256 * 1024 => Ok(()),
        Some(m) => Err(format!(
            "m={m} KiB is more memory than a box can spare (at most 262144)"
        )),
        None => Err("the m= (memory) parameter is missing".into()),
    }
}

impl AdminConfig {
    /// Whether anything here replaces the console admin token.
    pub fn provisioned(&self) -> bool {
        self.password_hash.is_some() || !self.api_keys.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(h) = &self.password_hash {
            check_phc(h).map_err(|m| ("admin.password_hash".to_string(), m))?;
        }
        if self.api_keys.len() > MAX_API_KEYS {
            return Err((
                "admin.api_keys".into(),
                format!("at most {MAX_API_KEYS} keys"),
            ));
        }
        for (i, k) in self.api_keys.iter().enumerate() {
            let key = format!("admin.api_keys[{i}]");
            if let Some(h) = k.strip_prefix("sha256:") {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err((key, "sha256: must be followed by 64 hex digits".into()));
                }
            } else {
                check_phc(k).map_err(|m| (key, m))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    #[test]
    fn admin_section() {
        let p = Path::new("n.toml");
        let ok = "[admin]\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\"\napi_keys = [\"sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\"]\n";
        let c = Config::parse(ok, p).unwrap();
        assert!(c.admin.provisioned());
        let e = Config::parse("[admin]\npassword_hash = \"hunter2\"\n", p).unwrap_err();
        assert!(e.to_string().contains("admin.password_hash"), "{e}");
        let e = Config::parse("[admin]\napi_keys = [\"sha256:12\"]\n", p).unwrap_err();
        assert!(e.to_string().contains("admin.api_keys[0]"), "{e}");
        let big = "[admin]\npassword_hash = \"$argon2id$v=19$m=4194304,t=2,p=1$c2FsdA$aGFzaA\"\n";
        assert!(Config::parse(big, p)
            .unwrap_err()
            .to_string()
            .contains("memory"));
        let c = Config::parse("[panel]\nhttps_port = 8443\nallow_plain_http = true\n", p).unwrap();
        assert_eq!((c.panel.https_port, c.panel.allow_plain_http), (8443, true));
        assert!(!Config::default().admin.provisioned());
        assert_eq!(Config::default().panel.https_port, 443);
    }
}
