//! Getting an OS update from elsewhere: a community peer's offer
//! (`/share/v1/os`) or an `http://` URL. Used by `POST
//! /api/v1/update/fetch` and by the agent's `[update] policy` watcher.
//!
//! What comes is hostile until checked, and each source has a budget:
//!
//! - a peer's description: at most [`MAX_OFFER_BYTES`], [`OFFER_TIMEOUT`]
//!   to connect and answer; its download: at most the size it announced
//!   (itself at most the largest artefact), then its SHA-256 compared;
//! - a URL: first only the artefact's head (at most
//!   [`nuvol_update::artefact::MAX_HEAD`] bytes, the connection closed
//!   after), checked against this box's keys, architecture and version
//!   order before anything else is fetched; then at most the length that
//!   signed head describes;
//! - every transfer: [`DOWNLOAD_IDLE`] of silence at most and the
//!   minimum average rate of [`crate::peer_http`]; the disk room checked
//!   before the download starts.
//!
//! A downloaded artefact is then applied exactly as an upload: checked
//! completely against this box's own `[update] trusted_keys`.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use crate::peer_http::{get_url, http_get, Budget, HttpUrl, PeerError, Sink};
use crate::share::{providers, Provider};
use crate::{error, Node, Resp};
use nuvol_update::artefact::{Version, MAX_ARTEFACT, MAX_HEAD};
use nuvol_update::Refusal;

/// Largest description accepted from a peer.
pub const MAX_OFFER_BYTES: u64 = 4096;
/// Connect and answer time allowed for a description or a head.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence while downloading an artefact.
pub const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);

/// The budget of downloading a whole artefact of `size` bytes.
fn download(size: u64) -> Budget {
    Budget {
        max: size,
        timeout: OFFER_TIMEOUT * 3,
        idle: DOWNLOAD_IDLE,
    }
}

/// Why getting an update failed: an API error (status, stable code,
/// message).
#[derive(Debug)]
pub struct Fail {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Fail {
    fn new(status: StatusCode, code: &'static str, message: String) -> Fail {
        Fail {
            status,
            code,
            message,
        }
    }

    pub fn resp(&self) -> Resp {
        error(self.status, self.code, &self.message)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<Refusal> for Fail {
    fn from(r: Refusal) -> Fail {
        Fail::new(
            StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.code(),
            r.to_string(),
        )
    }
}

fn failed(from: &str, m: impl std::fmt::Display) -> Fail {
    Fail::new(
        StatusCode::BAD_GATEWAY,
        "fetch_failed",
        format!("{from}: {m}"),
    )
}

/// What a peer says it offers.
#[derive(Debug, Clone, Deserialize)]
pub struct OsOffer {
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub sha256: String,
}

impl OsOffer {
    /// Whether a peer's description is well-formed.
    pub fn sane(&self) -> bool {
        Version::parse(&self.version).is_ok()
            && !self.arch.is_empty()
            && self.arch.len() <= 32
            && self.size > 0
            && self.size <= MAX_ARTEFACT
            && self.sha256.len() == 64
            && self.sha256.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Ask one provider what it offers (`None`: nothing).
pub async fn ask(p: &Provider) -> Result<Option<OsOffer>, String> {
    let mut buf = Vec::new();
    match http_get(
        p.addr,
        p.port,
        "/share/v1/os",
        Budget::small(MAX_OFFER_BYTES, OFFER_TIMEOUT),
        &mut Sink::Memory(&mut buf),
    )
    .await
    {
        Ok(()) => {}
        Err(e) => {
            let m = e.to_string();
            return if m.contains("no_os_offer") || m.contains("sharing_off") {
                Ok(None)
            } else {
                Err(m)
            };
        }
    }
    let o: OsOffer = serde_json::from_slice(&buf).map_err(|e| format!("not an offer: {e}"))?;
    if !o.sane() {
        return Err("its offer is malformed".into());
    }
    Ok(Some(o))
}

/// The version running here, as the updater reports it.
pub fn running_version(node: &dyn Node) -> Option<Version> {
    node.update_status()
        .and_then(|s| s["running_version"].as_str().map(str::to_string))
        .and_then(|v| Version::parse(&v).ok())
}

/// One peer's offer, as listed.
#[derive(Debug, Clone)]
pub struct PeerOffer {
    pub provider: Provider,
    pub offer: OsOffer,
    /// Newer than what runs here, and for this architecture.
    pub newer: bool,
}

/// What the catalog's share providers offer, nearest first (asked all at
/// once), and the providers that could not say.
pub async fn peer_offers(node: &dyn Node) -> Result<(Vec<PeerOffer>, Vec<(String, String)>), Fail> {
    let Some(d) = node.discovery() else {
        return Err(Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "discovery_off",
            "discovery is not running, so no other box can be found".into(),
        ));
    };
    let running = running_version(node);
    let mut ask_all = tokio::task::JoinSet::new();
    for (i, p) in providers(&d).into_iter().enumerate() {
        ask_all.spawn(async move {
            let r = ask(&p).await;
            (i, p, r)
        });
    }
    let mut got = Vec::new();
    while let Some(j) = ask_all.join_next().await {
        if let Ok(x) = j {
            got.push(x);
        }
    }
    got.sort_by_key(|(i, _, _)| *i);
    let (mut offers, mut errors) = (Vec::new(), Vec::new());
    for (_, p, r) in got {
        match r {
            Ok(Some(o)) => {
                let newer = match (&running, Version::parse(&o.version)) {
                    (Some(run), Ok(v)) => v > *run,
                    _ => false,
                } && o.arch == nuvol_update::ARCH;
                offers.push(PeerOffer {
                    provider: p,
                    offer: o,
                    newer,
                });
            }
            Ok(None) => {}
            Err(m) => errors.push((p.node, m)),
        }
    }
    Ok((offers, errors))
}

/// Where downloads go, or 501 `update_unavailable` when this box cannot
/// update (not booted from a nuvol slot).
pub fn upload_dir(node: &dyn Node) -> Result<std::path::PathBuf, Fail> {
    let status = node.update_status();
    match node.update_upload_dir() {
        Some(d) if status.as_ref().is_some_and(|s| s["available"] == true) => Ok(d),
        _ => Err(Fail::new(
            StatusCode::NOT_IMPLEMENTED,
            "update_unavailable",
            status
                .as_ref()
                .and_then(|s| s["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| "this agent cannot update its OS".into()),
        )),
    }
}

/// A file in `dir` to download into, after checking that `size` fits.
fn prepare(dir: &std::path::Path, size: u64) -> Result<crate::bundles::Upload, Fail> {
    // Creates `dir` when missing, so its room can be measured.
    let upload = crate::bundles::new_upload(dir).map_err(|_| {
        Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            format!("{}: cannot create a file", dir.display()),
        )
    })?;
    if let Err(e) = nuvol_bundle::space::ensure(dir, nuvol_bundle::space::needed_to_receive(size)) {
        return Err(Fail::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            e.to_string(),
        ));
    }
    Ok(upload)
}

/// Download into `w` what `get` fetches; at most `size` bytes. Returns
/// the bytes written and their SHA-256.
async fn finish(
    from: &str,
    size: u64,
    r: Result<(), PeerError>,
    w: crate::filewrite::BlockingWriter,
) -> Result<(u64, String), Fail> {
    match r {
        Ok(()) => {}
        Err(PeerError::Write(e)) => {
            return Err(Fail::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                format!("writing the download: {e}"),
            ))
        }
        Err(PeerError::TooLarge(_)) => {
            return Err(Fail::new(
                StatusCode::BAD_GATEWAY,
                "index_mismatch",
                format!("{from} sent more than the {size} bytes it announced"),
            ))
        }
        Err(PeerError::Failed(m)) => return Err(failed(from, m)),
    }
    let written = w
        .finish()
        .await
        .map_err(|e| failed(from, format!("writing the download: {e}")))?;
    Ok((written.bytes, written.sha256.unwrap_or_default()))
}

/// Apply a downloaded file (on the blocking pool; the file is removed
/// after).
async fn apply(
    node: &Arc<dyn Node>,
    upload: crate::bundles::Upload,
    allow_downgrade: bool,
) -> Result<serde_json::Value, Fail> {
    crate::update::apply_file(node, upload, allow_downgrade)
        .await
        .map_err(Fail::from)
}

/// Download the artefact peer `name` offers and apply it.
pub async fn fetch_from_peer(
    node: &Arc<dyn Node>,
    name: &str,
    allow_downgrade: bool,
) -> Result<serde_json::Value, Fail> {
    let dir = upload_dir(node.as_ref())?;
    let Some(d) = node.discovery() else {
        return Err(Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "discovery_off",
            "discovery is not running, so no other box can be found".into(),
        ));
    };
    let Some(p) = providers(&d).into_iter().find(|p| p.node == name) else {
        return Err(Fail::new(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            format!("{name} is not a share provider in the catalog (GET /api/v1/update/offers)"),
        ));
    };
    let offer = match ask(&p).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return Err(Fail::new(
                StatusCode::NOT_FOUND,
                "not_offered",
                format!("{name} offers no OS update"),
            ))
        }
        Err(m) => return Err(failed(name, m)),
    };
    // Refused before downloading what this box cannot run.
    if offer.arch != nuvol_update::ARCH {
        return Err(Refusal::WrongArch {
            got: offer.arch,
            want: nuvol_update::ARCH.into(),
        }
        .into());
    }
    let upload = prepare(&dir, offer.size)?;
    let mut w = crate::filewrite::BlockingWriter::create(upload.path(), true);
    let r = http_get(
        p.addr,
        p.port,
        "/share/v1/os.nvu",
        download(offer.size),
        &mut Sink::File(&mut w),
    )
    .await;
    let (bytes, sha) = finish(name, offer.size, r, w).await?;
    if bytes != offer.size || sha != offer.sha256.to_ascii_lowercase() {
        return Err(Fail::new(
            StatusCode::BAD_GATEWAY,
            "index_mismatch",
            format!(
                "{name} announced {} bytes with SHA-256 {} but sent {bytes} bytes with SHA-256 {sha}; nothing was kept",
                offer.size, offer.sha256
            ),
        ));
    }
    tracing::info!(node = %name, version = %offer.version, "OS update fetched from a peer; checking");
    let mut v = apply(node, upload, allow_downgrade).await?;
    v["from"] = json!(name);
    Ok(v)
}

/// What the artefact at `url` is, judged by its signed head alone (the
/// rest is not downloaded): (version, length of the file).
pub async fn probe_url(
    node: &dyn Node,
    url: &str,
    allow_downgrade: bool,
) -> Result<(String, u64), Fail> {
    let u =
        HttpUrl::parse(url).map_err(|m| Fail::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let mut head = Vec::new();
    get_url(
        &u,
        Budget::small(MAX_HEAD as u64, OFFER_TIMEOUT),
        &mut Sink::Head(&mut head, nuvol_update::artefact::head_len),
    )
    .await
    .map_err(|e| failed(url, e))?;
    node.update_check_head(&head, allow_downgrade)
        .map_err(Fail::from)
}

/// Download the artefact at `url` (its head checked first) and apply it.
pub async fn fetch_from_url(
    node: &Arc<dyn Node>,
    url: &str,
    allow_downgrade: bool,
) -> Result<serde_json::Value, Fail> {
    let dir = upload_dir(node.as_ref())?;
    let (version, size) = probe_url(node.as_ref(), url, allow_downgrade).await?;
    let u =
        HttpUrl::parse(url).map_err(|m| Fail::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let upload = prepare(&dir, size)?;
    let mut w = crate::filewrite::BlockingWriter::create(upload.path(), true);
    let r = get_url(&u, download(size), &mut Sink::File(&mut w)).await;
    let (bytes, _) = finish(url, size, r, w).await?;
    if bytes != size {
        return Err(Fail::new(
            StatusCode::BAD_GATEWAY,
            "fetch_failed",
            format!(
                "{url}: the signed head describes {size} bytes but {bytes} came; nothing was kept"
            ),
        ));
    }
    tracing::info!(%url, %version, "OS update downloaded; checking");
    let mut v = apply(node, upload, allow_downgrade).await?;
    v["from"] = json!(url);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> OsOffer {
        OsOffer {
            version: "1.2.3".into(),
            arch: "x86_64".into(),
            size: 1000,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn peer_offers_are_checked() {
        assert!(offer().sane());
        for bad in [
            OsOffer {
                version: "one".into(),
                ..offer()
            },
            OsOffer {
                arch: String::new(),
                ..offer()
            },
            OsOffer { size: 0, ..offer() },
            OsOffer {
                size: u64::MAX,
                ..offer()
            },
            OsOffer {
                sha256: "zz".repeat(32),
                ..offer()
            },
        ] {
            assert!(!bad.sane(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_become_api_errors() {
        let f = Fail::from(Refusal::NotNewer {
            version: "1".into(),
            running: "2".into(),
        });
        assert_eq!((f.status.as_u16(), f.code), (409, "update_not_newer"));
    }
}
