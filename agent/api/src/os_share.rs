//! OS updates between boxes of a community (docs/boot.md, "Update").
//!
//! A box whose running slot came from an update and was marked good keeps
//! that artefact and offers it beside its bundle share (public, plain HTTP
//! too, off with `[bundles] share = false`):
//!
//! | method and path | does |
//! |---|---|
//! | `GET /share/v1/os` | what it offers: version, arch, size, sha256 (of the file), key_id; 404 `no_os_offer` |
//! | `GET /share/v1/os.nvu` | the artefact, byte for byte (a download slot of the share) |
//!
//! Authenticated:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/update/offers` | what the share providers in the catalog offer, nearest first, each marked `newer` than what runs here or not |
//! | `POST /api/v1/update/fetch` (`{"node"}` or a form; `?allow_downgrade=1`) | download that node's artefact and apply it exactly as an upload |
//!
//! The peer is never trusted: its description only says what to download
//! and what size and SHA-256 to expect (`index_mismatch` otherwise); the
//! file is then checked like an upload, against this box's own
//! `[update] trusted_keys`, architecture and version order.
#![allow(clippy::result_large_err)] // handlers return ready-made error responses

use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::share::{download_permit, http_get, providers, PeerError, Provider, Sink};
use crate::{error, json, Ctx, Resp};

/// Largest description accepted from a peer.
const MAX_OFFER_BYTES: u64 = 4096;
/// Connect and answer time allowed for a peer's description.
const OFFER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest silence while downloading an artefact.
const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);

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
    fn sane(&self) -> bool {
        nuvol_update::artefact::Version::parse(&self.version).is_ok()
            && !self.arch.is_empty()
            && self.arch.len() <= 32
            && self.size > 0
            && self.size <= nuvol_update::artefact::MAX_ARTEFACT
            && self.sha256.len() == 64
            && self.sha256.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

/// Whether `path` is one of the public OS share routes.
pub fn owns(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/share/v1/os" | "/share/v1/os.nvu"
    )
}

/// Serve `GET /share/v1/os` and `GET /share/v1/os.nvu`.
pub async fn serve(ctx: &Ctx, req: &Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/');
    if let Some(r) = crate::share::refused(ctx, req) {
        return r;
    }
    let node = ctx.node.clone();
    // The first request hashes the artefact (once per file).
    let Ok(Some((file, meta))) = crate::bulk::spawn(move || node.update_offer()).await else {
        return error(
            StatusCode::NOT_FOUND,
            "no_os_offer",
            "this box offers no OS update: it runs no update marked good here",
        );
    };
    if path == "/share/v1/os" {
        return json(StatusCode::OK, &meta);
    }
    let permit = match download_permit(&ctx.share) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let f = match std::fs::File::open(&file) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                &format!("the artefact could not be read: {e}"),
            )
        }
    };
    let body = if *req.method() == Method::GET {
        crate::share::stream(Box::new(f), permit)
    } else {
        crate::full(Bytes::new())
    };
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", meta["size"].as_u64().unwrap_or(0))
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(crate::full(Bytes::new())))
}

/// Ask one provider what it offers (`None`: nothing).
async fn ask(p: &Provider) -> Result<Option<OsOffer>, String> {
    let mut buf = Vec::new();
    match http_get(
        p.addr,
        p.port,
        "/share/v1/os",
        MAX_OFFER_BYTES,
        OFFER_TIMEOUT,
        OFFER_TIMEOUT,
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

fn running_version(ctx: &Ctx) -> Option<nuvol_update::artefact::Version> {
    ctx.node
        .update_status()
        .and_then(|s| s["running_version"].as_str().map(str::to_string))
        .and_then(|v| nuvol_update::artefact::Version::parse(&v).ok())
}

fn no_discovery() -> Resp {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "discovery_off",
        "discovery is not running, so no other box can be found",
    )
}

/// `GET /api/v1/update/offers`.
pub async fn offers(ctx: &Ctx) -> Resp {
    let Some(d) = ctx.node.discovery() else {
        return no_discovery();
    };
    let list = providers(&d);
    let running = running_version(ctx);
    let mut ask_all = tokio::task::JoinSet::new();
    for (i, p) in list.into_iter().enumerate() {
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
                let newer = match (&running, nuvol_update::artefact::Version::parse(&o.version)) {
                    (Some(run), Ok(v)) => v > *run,
                    _ => false,
                };
                offers.push(json!({
                    "node": p.node,
                    "version": o.version,
                    "arch": o.arch,
                    "size": o.size,
                    "sha256": o.sha256,
                    "newer": newer && o.arch == nuvol_update::ARCH,
                }));
            }
            Ok(None) => {}
            Err(m) => errors.push(json!({ "node": p.node, "error": m })),
        }
    }
    json(
        StatusCode::OK,
        &json!({
            "running_version": running.map(|v| v.to_string()),
            "offers": offers,
            "errors": errors,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchReq {
    node: String,
}

/// `POST /api/v1/update/fetch`: download a peer's artefact, then apply it.
pub async fn fetch(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let allow_downgrade =
        crate::parse::form_get(req.uri().query().unwrap_or(""), "allow_downgrade")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"));
    let form = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let dir = match crate::update::upload_dir(ctx) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let body = match crate::small_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let node = if form {
        crate::parse::form_get(&String::from_utf8_lossy(&body), "node")
    } else {
        serde_json::from_slice::<FetchReq>(&body)
            .ok()
            .map(|r| r.node)
    };
    let Some(node) = node.filter(|n| !n.is_empty() && n.len() <= 256) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "want {\"node\": \"...\"}: a node name from GET /api/v1/update/offers",
        );
    };
    let Some(d) = ctx.node.discovery() else {
        return no_discovery();
    };
    let Some(p) = providers(&d).into_iter().find(|p| p.node == node) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            &format!("{node} is not a share provider in the catalog (GET /api/v1/update/offers)"),
        );
    };
    let offer = match ask(&p).await {
        Ok(Some(o)) => o,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_offered",
                &format!("{node} offers no OS update"),
            )
        }
        Err(m) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                &format!("{node}: {m}"),
            )
        }
    };
    // Refused before downloading what this box cannot run.
    if offer.arch != nuvol_update::ARCH {
        return crate::update::refusal(&nuvol_update::Refusal::WrongArch {
            got: offer.arch,
            want: nuvol_update::ARCH.into(),
        });
    }
    let upload = match crate::bundles::new_upload(&dir) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if let Err(r) = crate::bundles::check_room(&dir, offer.size) {
        return r;
    }
    let mut w = crate::filewrite::BlockingWriter::create(upload.path(), true);
    let r = http_get(
        p.addr,
        p.port,
        "/share/v1/os.nvu",
        offer.size,
        OFFER_TIMEOUT * 3,
        DOWNLOAD_IDLE,
        &mut Sink::File(&mut w),
    )
    .await;
    let failed = |m: String| {
        error(
            StatusCode::BAD_GATEWAY,
            "fetch_failed",
            &format!("{node}: {m}"),
        )
    };
    match r {
        Ok(()) => {}
        Err(PeerError::Write(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                &format!("writing the download: {e}"),
            )
        }
        Err(PeerError::TooLarge(_)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "index_mismatch",
                &format!(
                    "{node} sent more than the {} bytes it announced",
                    offer.size
                ),
            )
        }
        Err(PeerError::Failed(m)) => return failed(m),
    }
    let written = match w.finish().await {
        Ok(x) => x,
        Err(e) => return failed(format!("writing the download: {e}")),
    };
    let sha = written.sha256.unwrap_or_default();
    if written.bytes != offer.size || sha != offer.sha256.to_ascii_lowercase() {
        return error(
            StatusCode::BAD_GATEWAY,
            "index_mismatch",
            &format!(
                "{node} announced {} bytes with SHA-256 {} but sent {} bytes with SHA-256 {sha}; nothing was kept",
                offer.size, offer.sha256, written.bytes
            ),
        );
    }
    tracing::info!(%node, version = %offer.version, "OS update fetched from a peer; checking");
    let r = crate::update::apply_file(ctx, upload, allow_downgrade).await;
    crate::update::answer(r, Some(&node))
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
    fn owns_only_the_os_share() {
        assert!(owns("/share/v1/os") && owns("/share/v1/os.nvu"));
        assert!(owns("/share/v1/os/"));
        assert!(!owns("/share/v1/bundles") && !owns("/share/v1/os/x"));
    }
}
