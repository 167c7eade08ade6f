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
//! | `POST /api/v1/update/fetch` (`{"node"}` or `{"url"}`, or a form; `?allow_downgrade=1`) | download that node's artefact, or the one at an `http://` URL, and apply it exactly as an upload ([`crate::os_fetch`]) |
//!
//! The peer is never trusted: its description only says what to download
//! and what size and SHA-256 to expect (`index_mismatch` otherwise); the
//! file is then checked like an upload, against this box's own
//! `[update] trusted_keys`, architecture and version order.
#![allow(clippy::result_large_err)] // handlers return ready-made error responses

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::os_fetch::{fetch_from_peer, fetch_from_url, peer_offers, running_version, upload_dir};
use crate::share::download_permit;
use crate::{error, json, Ctx, Resp};

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

/// `GET /api/v1/update/offers`.
pub async fn offers(ctx: &Ctx) -> Resp {
    let (offers, errors) = match peer_offers(ctx.node.as_ref()).await {
        Ok(x) => x,
        Err(f) => return f.resp(),
    };
    let offers: Vec<_> = offers
        .into_iter()
        .map(|o| {
            json!({
                "node": o.provider.node,
                "version": o.offer.version,
                "arch": o.offer.arch,
                "size": o.offer.size,
                "sha256": o.offer.sha256,
                "newer": o.newer,
            })
        })
        .collect();
    let errors: Vec<_> = errors
        .into_iter()
        .map(|(node, e)| json!({ "node": node, "error": e }))
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "running_version": running_version(ctx.node.as_ref()).map(|v| v.to_string()),
            "offers": offers,
            "errors": errors,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchReq {
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// `POST /api/v1/update/fetch`: download a peer's artefact, or the one at
/// a URL, then apply it.
pub async fn fetch(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let allow_downgrade =
        crate::parse::form_get(req.uri().query().unwrap_or(""), "allow_downgrade")
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"));
    let form = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    // Refused before the body is read where there is nothing to update.
    if let Err(f) = upload_dir(ctx.node.as_ref()) {
        return f.resp();
    }
    let body = match crate::small_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let r = if form {
        let text = String::from_utf8_lossy(&body);
        FetchReq {
            node: crate::parse::form_get(&text, "node"),
            url: crate::parse::form_get(&text, "url"),
        }
    } else {
        match serde_json::from_slice::<FetchReq>(&body) {
            Ok(r) => r,
            Err(_) => FetchReq {
                node: None,
                url: None,
            },
        }
    };
    let some = |s: Option<String>| s.filter(|n| !n.is_empty());
    let result = match (some(r.node), some(r.url)) {
        (Some(node), None) if node.len() <= 256 => {
            fetch_from_peer(&ctx.node, &node, allow_downgrade).await
        }
        (None, Some(url)) => fetch_from_url(&ctx.node, &url, allow_downgrade).await,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "want {\"node\": \"...\"} (a node from GET /api/v1/update/offers) or {\"url\": \"http://...\"}",
            )
        }
    };
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(f) => {
            tracing::warn!("update fetch refused: {f}");
            f.resp()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_only_the_os_share() {
        assert!(owns("/share/v1/os") && owns("/share/v1/os.nvu"));
        assert!(owns("/share/v1/os/"));
        assert!(!owns("/share/v1/bundles") && !owns("/share/v1/os/x"));
    }
}
