//! The settings overlay at start: `<state-dir>/settings.toml` (written by
//! the panel and `PUT /api/v1/settings`) over the provisioning file, so the
//! keys changed on a running box stay changed after a restart.

use std::path::Path;
use std::time::Duration;

use nuvol_config::{overlay, Loaded, Settings};

/// Put the overlay's keys in force in `loaded.config` and return what the
/// API needs to show and change them. A value this agent refuses is
/// reported on the console and only that key is left out; an overlay that
/// is not TOML at all is reported and ignored (nuvol.toml alone is in force).
pub fn overlay(mut loaded: Loaded, state_dir: &Path) -> (Loaded, nuvol_api::settings::Setup) {
    let path = state_dir.join(overlay::SETTINGS_FILE);
    let settings = match Settings::load_keeping(&path) {
        Ok((s, refused)) => {
            // A value of a newer agent (after a rollback) costs its key only.
            for e in refused {
                tracing::error!("settings overlay: {e}");
                eprintln!("nuvol: SETTINGS PROBLEM: {}: {e}", path.display());
            }
            s
        }
        Err(e) => {
            tracing::error!("settings overlay: {e}; ignoring it");
            eprintln!("nuvol: SETTINGS PROBLEM: {e}; using nuvol.toml alone");
            Settings::default()
        }
    };
    let file_keys = if loaded.found && loaded.problem.is_none() {
        std::fs::read(&loaded.path)
            .ok()
            .filter(|b| b.len() as u64 <= nuvol_config::MAX_CONFIG_BYTES)
            .map(|b| overlay::keys_in_file(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    } else {
        Default::default()
    };
    let base = loaded.config.clone();
    loaded.config = settings.apply(&base);
    if settings != Settings::default() {
        tracing::info!("{}: in force over the provisioning file", path.display());
    }
    let setup = nuvol_api::settings::Setup {
        path,
        base,
        file_keys,
        overlay: settings,
    };
    (loaded, setup)
}

/// The connection idle time for tests: `NUVOL_TEST_IDLE_SECS`, honoured
/// only with `[debug] test_hooks = true`.
pub fn test_idle(cfg: &nuvol_config::Config) -> Option<Duration> {
    if !cfg.debug.test_hooks {
        return None;
    }
    std::env::var("NUVOL_TEST_IDLE_SECS")
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=3600).contains(s))
        .map(Duration::from_secs)
}
