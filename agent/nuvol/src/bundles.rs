//! The agent's side of signed bundles: the admin token that guards the API,
//! the store on the data partition, and unattended installs named in
//! `nuvol.toml` `[bundles]`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nuvol_bundle::{Policy, ProvisionReport, Store, StoreOptions};
use nuvol_config::{BundleSource, BundlesConfig};

/// Largest bundle fetched from a URL (the API upload limit too).
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// File (under the state directory) holding the admin token.
pub const TOKEN_FILE: &str = "admin-token";

/// The admin token: 32 random bytes as 64 hex characters, made on first
/// start and kept (mode 0600) in `<state_dir>/admin-token`. A file holding
/// anything else is replaced, so a damaged token never locks the owner out
/// for good: the new one is printed on the console.
pub fn admin_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let t = s.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(t.to_ascii_lowercase());
        }
        tracing::warn!("{} is not a token; making a new one", path.display());
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom")?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    nuvol_durable::write_atomic(&path, token.as_bytes(), nuvol_durable::Mode::Private)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Open the bundle store under the state directory with the policy from
/// `[bundles]`; `None` (logged) when the store cannot be opened, so the rest
/// of the agent keeps running.
pub fn open_store(state_dir: &Path, cfg: &BundlesConfig) -> Option<Arc<Store>> {
    let opts = StoreOptions {
        policy: Policy {
            allow_setuid: cfg.allow_setuid,
            allow_devices: cfg.allow_devices,
            allow_root: cfg.allow_root,
        },
        scan_image: true,
    };
    match Store::open_with(state_dir, opts) {
        Ok(s) => {
            // Trust `trusted_keys` before the API serves anything: an upload
            // or a fetch from a peer right after start must not be refused
            // for a key the config names (provisioning runs later).
            let report = s.provision(&cfg.trusted_keys, &[]);
            log_report(&report);
            Some(Arc::new(s))
        }
        Err(e) => {
            tracing::error!("bundle store in {}: {e}", state_dir.display());
            eprintln!("nuvol: bundle store unavailable: {e}");
            None
        }
    }
}

/// Directory for uploads and downloads, on the same filesystem as the store
/// so an install is a rename.
pub fn upload_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("bundles").join("tmp")
}

/// Install what `[bundles]` names: files on the boot partition at once,
/// URLs as soon as the network lets us fetch them (retried with backoff).
/// Runs until every entry has been tried to completion; errors are logged
/// and printed on the console, never fatal.
pub async fn provision(
    store: Arc<Store>,
    cfg: BundlesConfig,
    config_dir: PathBuf,
    state_dir: PathBuf,
) {
    let mut files = Vec::new();
    let mut urls = Vec::new();
    for entry in &cfg.install {
        match BundlesConfig::source(entry) {
            BundleSource::File(f) => files.push(config_dir.join(f)),
            BundleSource::Url(u) => urls.push(u.to_string()),
        }
    }
    // `trusted_keys` were added by `open_store`.
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.provision(&[], &files)).await {
        Ok(report) => log_report(&report),
        Err(e) => tracing::error!("provisioning task: {e}"),
    }
    for url in urls {
        let dest = upload_dir(&state_dir).join(format!(
            "download-{}.nvb",
            std::process::id() as u64 * 1000 + fastrand_u16() as u64
        ));
        let mut delay = Duration::from_secs(2);
        let fetched = loop {
            match crate::fetch::download(&url, &dest, MAX_DOWNLOAD_BYTES).await {
                Ok(()) => break true,
                Err(e @ crate::fetch::FetchError::Permanent(_)) => {
                    report_failure(&url, &e.to_string());
                    break false;
                }
                Err(e) => {
                    tracing::warn!(%url, "download failed, retrying in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(300));
                }
            }
        };
        if fetched {
            let s = store.clone();
            let file = dest.clone();
            match tokio::task::spawn_blocking(move || s.provision(&[], &[file])).await {
                Ok(mut report) => {
                    for r in &mut report.results {
                        r.0 = PathBuf::from(&url);
                    }
                    log_report(&report);
                }
                Err(e) => tracing::error!("provisioning task: {e}"),
            }
        }
        let _ = std::fs::remove_file(&dest);
    }
}

fn fastrand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u16::from_le_bytes(b)
}

fn report_failure(what: &str, why: &str) {
    tracing::error!("bundle {what}: {why}");
    eprintln!("nuvol: bundle {what}: NOT INSTALLED: {why}");
}

fn log_report(report: &ProvisionReport) {
    for e in &report.key_errors {
        tracing::error!("[bundles] trusted_keys: {e}");
        eprintln!("nuvol: [bundles] trusted_keys: {e}");
    }
    for (what, r) in &report.results {
        match r {
            Ok(outcome) => tracing::info!("bundle {}: {outcome:?}", what.display()),
            Err(e) => report_failure(&what.display().to_string(), &e.to_string()),
        }
    }
}
