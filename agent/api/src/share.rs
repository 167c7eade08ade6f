//! Bundles shared between boxes of a community.
//!
//! Public (no credentials; they only hand out already-signed bytes, and are
//! served over plain HTTP even when HTTPS is on, since the signature, not
//! the transport, is what a peer trusts):
//!
//! | method and path | does |
//! |---|---|
//! | `GET /share/v1/bundles` | index of the installed bundles: name, version, publisher, publisher_key_id, digest, sha256 (of the file), size |
//! | `GET /share/v1/bundles/NAME.nvb` | the signed bundle file, byte for byte as installed (at most [`MAX_DOWNLOADS`] at once, else 503 `busy`) |
//!
//! Both are 404 `sharing_off` when `[bundles] share = false`; an unknown or
//! revoked bundle is 404 `unknown_bundle`.
//!
//! Authenticated:
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/community/bundles[?refresh=1]` | what the providers in the catalog (type [`SERVICE_TYPE`]) offer, with our installed version and whether we trust the publisher key; per-provider errors |
//! | `POST /api/v1/bundles/fetch` (`{"node", "name"}` or a form) | download from that node into a pending upload, checked against its index; the usual confirm step installs it |
//!
//! The peer is never trusted: its index only says what to download and
//! what size and SHA-256 to expect (`index_mismatch` otherwise); the file
//! then goes through exactly the verification of an upload, against this
//! box's own keyring.
#![allow(clippy::result_large_err)] // handlers return ready-made error responses

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use nuvol_bundle::{BundleError, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::peer_http::{http_get, Budget, PeerError, Sink};
use crate::{error, Ctx, Resp};

/// The DNS-SD type nuvol boxes announce their share under.
pub const SERVICE_TYPE: &str = "_nuvol-bundles._tcp";
/// The gossip service name (tag `svc:nuvol.bundles`).
pub const SERVICE_NAME: &str = "nuvol.bundles";
/// Most bundle downloads served at once.
pub const MAX_DOWNLOADS: usize = 8;
/// Largest index accepted from a peer.
pub const MAX_INDEX_BYTES: usize = 256 * 1024;
/// Most entries read from one peer's index.
pub const MAX_INDEX_ENTRIES: usize = 256;
/// How long a peer's index is reused.
pub const INDEX_TTL: Duration = Duration::from_secs(60);
/// Longest our own index is served from the cache, even with no change
/// seen (a safety net for changes made behind the agent's back).
pub const OWN_INDEX_TTL: Duration = Duration::from_secs(300);
/// Connect and answer time allowed for a peer's index.
pub const INDEX_TIMEOUT: Duration = Duration::from_secs(3);
/// Most providers asked at once.
pub const MAX_PROVIDERS: usize = 32;
/// Longest silence while downloading a bundle from a peer.
const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);
const CHUNK: usize = 64 * 1024;

/// One entry of a share index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    /// The manifest's publisher (free text).
    pub publisher: String,
    /// Key id of the signing key.
    pub publisher_key_id: String,
    /// SHA-256 of the image (what the store calls the bundle's digest).
    pub digest: String,
    /// SHA-256 of the whole `.nvb` file.
    pub sha256: String,
    /// Size of the `.nvb` file in bytes.
    pub size: u64,
    /// The architecture its manifest declares (`None`: any). A peer's word,
    /// used only to skip a download this box would refuse; the installing
    /// store reads the signed manifest itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The id the bundle's running service is known by to its peers
    /// (`[peers]` in its manifest: Syncthing's device id). A peer's word,
    /// checked by whoever uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<String>,
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl IndexEntry {
    /// Whether a peer's entry is well-formed (anything else is dropped).
    fn sane(&self) -> bool {
        nuvol_bundle::manifest::validate_name(&self.name).is_ok()
            && !self.version.is_empty()
            && self.version.len() <= 128
            && self.publisher.len() <= 1024
            && is_hex(&self.publisher_key_id, 16)
            && is_hex(&self.digest, 64)
            && is_hex(&self.sha256, 64)
            && self.size > 0
            && self.size <= crate::bundles::MAX_UPLOAD
            && self
                .arch
                .as_deref()
                .is_none_or(|a| nuvol_bundle::manifest::ARCHES.contains(&a))
    }

    /// Whether this box can run it (by the peer's word: see [`IndexEntry::arch`]).
    fn runs_here(&self) -> bool {
        self.arch
            .as_deref()
            .is_none_or(|a| a == std::env::consts::ARCH)
    }
}

/// What one provider offered when last asked.
#[derive(Debug, Clone)]
struct Offer {
    addr: IpAddr,
    port: u16,
    at: Instant,
    result: Result<Vec<IndexEntry>, String>,
}

/// Our own index as served, and what it was computed for.
#[derive(Debug)]
struct CachedIndex {
    /// (API changes, [`crate::Node::bundles_generation`]) when computed.
    generation: (u64, u64),
    at: Instant,
    body: Bytes,
}

/// Share state kept by the server.
#[derive(Debug)]
pub struct Share {
    downloads: Arc<tokio::sync::Semaphore>,
    /// File SHA-256 by `name/digest` (the file of one version never changes).
    sha: Mutex<HashMap<String, String>>,
    /// Peers' indexes by node name.
    offers: Mutex<HashMap<String, Offer>>,
    /// Our index; the async lock makes its computation single-flight:
    /// concurrent requests wait for the one in progress and get its answer.
    index: tokio::sync::Mutex<Option<CachedIndex>>,
    /// Bumped by every change of bundles or keys through the API.
    generation: AtomicU64,
    /// How many times the index was computed.
    computations: AtomicU64,
}

impl Default for Share {
    fn default() -> Self {
        Share {
            downloads: Arc::new(tokio::sync::Semaphore::new(MAX_DOWNLOADS)),
            sha: Mutex::new(HashMap::new()),
            offers: Mutex::new(HashMap::new()),
            index: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            computations: AtomicU64::new(0),
        }
    }
}

impl Share {
    /// The store or keyring changed: the next index request recomputes.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times our index was computed (`/metrics`).
    pub fn index_computations(&self) -> u64 {
        self.computations.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `path` is one of the public share routes.
pub fn owns(path: &str) -> bool {
    path == "/share/v1/bundles" || path.starts_with("/share/v1/bundles/")
}

/// Our own index: the installed bundles whose signature still verifies.
pub fn index(
    store: &Store,
    share: &Share,
    peer_ids: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<IndexEntry>, BundleError> {
    let mut out = Vec::new();
    for b in store.list()?.bundles {
        if b.state != "installed" {
            continue;
        }
        let Ok(e) = store.export(&b.name) else {
            continue;
        };
        let key = format!("{}/{}", b.name, e.bundle.digest);
        let size = e.len;
        let cached = lock(&share.sha).get(&key).cloned();
        let sha = match cached {
            Some(s) => s,
            None => {
                let s = e.file_sha256()?;
                let mut c = lock(&share.sha);
                if c.len() > 1024 {
                    c.clear();
                }
                c.insert(key, s.clone());
                s
            }
        };
        out.push(IndexEntry {
            peer_id: peer_ids.get(&b.name).cloned(),
            name: b.name,
            version: b.version,
            publisher: b.publisher,
            publisher_key_id: b.publisher_key_id,
            digest: b.digest,
            sha256: sha,
            size,
            arch: b.manifest.arch,
        });
    }
    Ok(out)
}

/// Our index as JSON: from the cache while no bundle or key changed (and
/// for at most [`OWN_INDEX_TTL`]), else computed once on the blocking pool
/// while concurrent requests wait for it.
async fn cached_index(ctx: &Arc<Ctx>, store: Arc<Store>) -> Result<Bytes, Resp> {
    let mut slot = ctx.share.index.lock().await;
    let generation = (
        ctx.share.generation.load(Ordering::SeqCst),
        ctx.node.bundles_generation(),
    );
    if let Some(c) = slot.as_ref() {
        if c.generation == generation && c.at.elapsed() < OWN_INDEX_TTL {
            return Ok(c.body.clone());
        }
    }
    ctx.share.computations.fetch_add(1, Ordering::Relaxed);
    let c = ctx.clone();
    let peer_ids = ctx.node.peer_ids();
    let list = match crate::bulk::spawn(move || index(&store, &c.share, &peer_ids)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.code(),
                &e.to_string(),
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            ))
        }
    };
    let body = Bytes::from(serde_json::to_vec_pretty(&list).unwrap_or_else(|_| b"[]".to_vec()));
    tracing::debug!(bundles = list.len(), "share: index computed");
    *slot = Some(CachedIndex {
        generation,
        at: Instant::now(),
        body: body.clone(),
    });
    Ok(body)
}

/// Serve `GET /share/v1/bundles` and `GET /share/v1/bundles/NAME.nvb`.
pub async fn serve(ctx: &Arc<Ctx>, req: &Request<Incoming>) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if let Some(r) = refused(ctx, req) {
        return r;
    }
    let Some((store, _)) = ctx.node.bundle_store() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "bundles_unavailable",
            "the bundle store could not be opened",
        );
    };
    if path == "/share/v1/bundles" {
        return match cached_index(ctx, store).await {
            Ok(body) => Response::builder()
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(crate::full(body))
                .unwrap_or_else(|_| Response::new(crate::full(Bytes::new()))),
            Err(r) => r,
        };
    }
    let unknown = || {
        error(
            StatusCode::NOT_FOUND,
            "unknown_bundle",
            "no such bundle is shared here (GET /share/v1/bundles lists them)",
        )
    };
    let Some(name) = path
        .strip_prefix("/share/v1/bundles/")
        .and_then(|f| f.strip_suffix(".nvb"))
        .filter(|n| nuvol_bundle::manifest::validate_name(n).is_ok())
        .map(str::to_string)
    else {
        return unknown();
    };
    let permit = match download_permit(&ctx.share) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let export = match crate::bulk::spawn(move || store.export(&name)).await {
        Ok(Ok(e)) => e,
        Ok(Err(BundleError::Io { .. } | BundleError::State(_))) | Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io_error",
                "the bundle could not be read",
            )
        }
        Ok(Err(_)) => return unknown(),
    };
    let len = export.len;
    let name = export.bundle.name.clone();
    let body = if *req.method() == Method::GET {
        stream(Box::new(export.into_reader()), permit)
    } else {
        crate::full(Bytes::new())
    };
    Response::builder()
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .header(
            "content-disposition",
            format!("attachment; filename=\"{name}.nvb\""),
        )
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(crate::full(Bytes::new())))
}

/// The share's answer before any work: 405 for anything but GET and
/// HEAD, 404 `sharing_off` with `[bundles] share = false`.
pub(crate) fn refused(ctx: &Ctx, req: &Request<Incoming>) -> Option<Resp> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Some(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {}", req.method(), req.uri().path()),
        ));
    }
    (!ctx.node.share_bundles()).then(|| {
        error(
            StatusCode::NOT_FOUND,
            "sharing_off",
            "this box does not share ([bundles] share = false)",
        )
    })
}

/// A download slot of the share ([`MAX_DOWNLOADS`] at once), or 503 `busy`.
pub(crate) fn download_permit(share: &Share) -> Result<tokio::sync::OwnedSemaphorePermit, Resp> {
    share.downloads.clone().try_acquire_owned().map_err(|_| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &format!("at most {MAX_DOWNLOADS} downloads at once; try again shortly"),
        )
    })
}

/// A response body read from `r` on the blocking pool at low priority,
/// holding its download slot until done.
pub(crate) fn stream(
    mut r: Box<dyn Read + Send>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> crate::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    crate::bulk::spawn(move || {
        let _permit = permit;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    tracing::warn!("share: reading: {e}");
                    return; // the body ends short; the client sees a broken transfer
                }
            }
        }
    });
    crate::channel_body(rx)
}

/// A provider of shared bundles as the catalog lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub node: String,
    pub addr: IpAddr,
    pub port: u16,
}

/// Every other node offering [`SERVICE_TYPE`], nearest first, once each.
pub fn providers(d: &nuvol_catalog::DiscoveryHandle) -> Vec<Provider> {
    let q = nuvol_catalog::ServiceQuery {
        service_type: Some(SERVICE_TYPE.to_string()),
        near: true,
        ..Default::default()
    };
    let me = d.gossip().name().to_string();
    let mut out: Vec<Provider> = Vec::new();
    for s in d.services(&q).into_iter().map(|c| c.service) {
        let Some(addr) = s.addr else { continue };
        if s.node == me || s.port == 0 || out.iter().any(|p| p.node == s.node) {
            continue;
        }
        out.push(Provider {
            node: s.node,
            addr,
            port: s.port,
        });
        if out.len() >= MAX_PROVIDERS {
            break;
        }
    }
    out
}

/// Ask one provider for its index.
pub async fn fetch_index(p: &Provider) -> Result<Vec<IndexEntry>, String> {
    let mut buf = Vec::new();
    http_get(
        p.addr,
        p.port,
        "/share/v1/bundles",
        Budget::small(MAX_INDEX_BYTES as u64, INDEX_TIMEOUT),
        &mut Sink::Memory(&mut buf),
    )
    .await
    .map_err(|e| e.to_string())?;
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| format!("not an index: {e}"))?;
    Ok(list
        .into_iter()
        .take(MAX_INDEX_ENTRIES)
        .filter_map(|v| serde_json::from_value::<IndexEntry>(v).ok())
        .filter(IndexEntry::sane)
        .collect())
}

/// The providers' offers, from the cache when younger than [`INDEX_TTL`]
/// (unless `refresh`), asking the others all at once.
async fn offers(share: &Share, list: &[Provider], refresh: bool) -> Vec<(Provider, Offer)> {
    let mut out = Vec::new();
    let mut ask = tokio::task::JoinSet::new();
    {
        let cache = lock(&share.offers);
        for p in list {
            match cache.get(&p.node) {
                Some(o)
                    if !refresh
                        && o.addr == p.addr
                        && o.port == p.port
                        && o.at.elapsed() < INDEX_TTL =>
                {
                    out.push((p.clone(), o.clone()))
                }
                _ => {
                    let p = p.clone();
                    ask.spawn(async move {
                        let r = fetch_index(&p).await;
                        (p, r)
                    });
                }
            }
        }
    }
    while let Some(j) = ask.join_next().await {
        let Ok((p, result)) = j else { continue };
        let o = Offer {
            addr: p.addr,
            port: p.port,
            at: Instant::now(),
            result,
        };
        let mut cache = lock(&share.offers);
        if cache.len() > 4 * MAX_PROVIDERS {
            cache.clear();
        }
        cache.insert(p.node.clone(), o.clone());
        drop(cache);
        out.push((p, o));
    }
    // Keep the catalog's order (nearest first).
    out.sort_by_key(|(p, _)| list.iter().position(|q| q == p));
    out
}

/// `GET /api/v1/community/bundles` as JSON.
pub async fn community(ctx: &Ctx, refresh: bool) -> Result<serde_json::Value, Resp> {
    let Some(d) = ctx.node.discovery() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "discovery_off",
            "discovery is not running, so no other box can be found",
        ));
    };
    let list = providers(&d);
    let got = offers(&ctx.share, &list, refresh).await;
    let store = ctx.node.bundle_store().map(|(s, _)| s);
    let mine = tokio::task::spawn_blocking(move || {
        let Some(s) = store else {
            return (HashMap::new(), Vec::new(), Vec::new());
        };
        let installed: HashMap<String, String> = s
            .list()
            .map(|l| l.bundles.into_iter().map(|b| (b.name, b.version)).collect())
            .unwrap_or_default();
        let kr = s.keyring();
        let trusted: Vec<String> = kr
            .list()
            .map(|l| l.into_iter().map(|k| k.key_id).collect())
            .unwrap_or_default();
        let revoked: Vec<String> = kr
            .revoked()
            .map(|l| l.into_iter().map(|k| k.key_id).collect())
            .unwrap_or_default();
        (installed, trusted, revoked)
    })
    .await
    .unwrap_or_default();
    let (installed, trusted, revoked) = mine;
    let mut bundles = Vec::new();
    let mut errors = Vec::new();
    for (p, o) in &got {
        match &o.result {
            Ok(entries) => {
                for e in entries {
                    let k = &e.publisher_key_id;
                    let is_trusted = trusted.iter().any(|t| t.eq_ignore_ascii_case(k))
                        && !revoked.iter().any(|t| t.eq_ignore_ascii_case(k));
                    bundles.push(json!({
                        "node": p.node,
                        "addr": p.addr.to_string(),
                        "port": p.port,
                        "name": e.name,
                        "version": e.version,
                        "publisher": e.publisher,
                        "publisher_key_id": e.publisher_key_id,
                        "digest": e.digest,
                        "sha256": e.sha256,
                        "size": e.size,
                        "arch": e.arch,
                        "runs_here": e.runs_here(),
                        "installed_version": installed.get(&e.name),
                        "trusted": is_trusted,
                        "age_s": o.at.elapsed().as_secs(),
                    }));
                }
            }
            Err(m) => errors.push(json!({
                "node": p.node,
                "addr": p.addr.to_string(),
                "port": p.port,
                "error": m,
            })),
        }
    }
    Ok(json!({ "providers": got.len(), "bundles": bundles, "errors": errors }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchReq {
    node: String,
    name: String,
}

fn bad_request(m: &str) -> Resp {
    error(StatusCode::BAD_REQUEST, "bad_request", m)
}

/// `POST /api/v1/bundles/fetch`: download into a pending upload.
pub async fn fetch(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Resp {
    let form = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let body = match crate::small_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let want = if form {
        let s = String::from_utf8_lossy(&body);
        match (
            crate::parse::form_get(&s, "node"),
            crate::parse::form_get(&s, "name"),
        ) {
            (Some(node), Some(name)) => FetchReq { node, name },
            _ => return bad_request("the form needs node and name"),
        }
    } else {
        match serde_json::from_slice::<FetchReq>(&body) {
            Ok(r) => r,
            Err(e) => {
                return bad_request(&format!(
                    "want {{\"node\": \"...\", \"name\": \"...\"}}: {e}"
                ))
            }
        }
    };
    if want.node.is_empty() || want.node.len() > 256 {
        return bad_request("node must be a node name from the catalog");
    }
    if nuvol_bundle::manifest::validate_name(&want.name).is_err() {
        return bad_request(&format!("{:?} is not a bundle name", want.name));
    }
    let Some((store, dir)) = ctx.node.bundle_store() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "bundles_unavailable",
            "the bundle store could not be opened; see the agent's log",
        );
    };
    let Some(d) = ctx.node.discovery() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "discovery_off",
            "discovery is not running, so no other box can be found",
        );
    };
    let Some(p) = providers(&d).into_iter().find(|p| p.node == want.node) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_provider",
            &format!(
                "{} does not offer bundles (GET /api/v1/community/bundles lists who does)",
                want.node
            ),
        );
    };
    let got = offers(&ctx.share, std::slice::from_ref(&p), false).await;
    let entry = match got.first().map(|(_, o)| &o.result) {
        Some(Ok(list)) => list.iter().find(|e| e.name == want.name).cloned(),
        Some(Err(m)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                &format!("{}: index: {m}", p.node),
            )
        }
        None => None,
    };
    let Some(entry) = entry else {
        return error(
            StatusCode::NOT_FOUND,
            "not_offered",
            &format!("{} does not offer {}", p.node, want.name),
        );
    };
    // Built for another architecture (as the index says; the store checks
    // the signed manifest anyway): refuse before downloading it.
    if let Some(a) = entry.arch.as_deref().filter(|_| !entry.runs_here()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_arch",
            &format!(
                "{} offers {} built for {a}; this box is {}",
                p.node,
                want.name,
                std::env::consts::ARCH
            ),
        );
    }
    // Into the upload directory, like an upload; removed unless kept as pending.
    let upload = match crate::bundles::new_upload(&dir) {
        Ok(u) => u,
        Err(r) => return r,
    };
    // The index says how big it is: refuse before downloading what cannot
    // fit next to its install.
    if let Err(r) = crate::bundles::check_room(&dir, entry.size) {
        return r;
    }
    // Written and hashed on the blocking pool, never on the runtime thread.
    let mut w = crate::filewrite::BlockingWriter::create(upload.path(), true);
    let path = format!(
        "/share/v1/bundles/{}.nvb",
        crate::parse::percent_encode(&entry.name)
    );
    let r = http_get(
        p.addr,
        p.port,
        &path,
        Budget {
            max: entry.size,
            timeout: INDEX_TIMEOUT * 3,
            idle: DOWNLOAD_IDLE,
        },
        &mut Sink::File(&mut w),
    )
    .await;
    let io_error = |e: &std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            &format!("{}: {e}", upload.path().display()),
        )
    };
    match r {
        Ok(()) => {}
        Err(PeerError::Write(e)) if nuvol_bundle::space::is_full(&e) => {
            let got = w.queued();
            drop((w, upload));
            return crate::bundles::filled_up(&dir, got, Some(entry.size));
        }
        Err(PeerError::Write(e)) => return io_error(&e),
        Err(PeerError::TooLarge(_)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "index_mismatch",
                &format!(
                    "{} sent more than the {} bytes its index announced",
                    p.node, entry.size
                ),
            )
        }
        Err(PeerError::Failed(m)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                "fetch_failed",
                &format!("{}: {}: {m}", p.node, entry.name),
            )
        }
    }
    let got = w.queued();
    let written = match w.finish().await {
        Ok(x) => x,
        Err(e) if nuvol_bundle::space::is_full(&e) => {
            drop(upload);
            return crate::bundles::filled_up(&dir, got, Some(entry.size));
        }
        Err(e) => return io_error(&e),
    };
    let size = written.bytes;
    let sha = written.sha256.unwrap_or_default();
    if size != entry.size || sha != entry.sha256.to_ascii_lowercase() {
        // Forget the index: it will be asked again next time.
        lock(&ctx.share.offers).remove(&p.node);
        return error(
            StatusCode::BAD_GATEWAY,
            "index_mismatch",
            &format!(
                "{} announced {} ({} bytes, SHA-256 {}) but sent {size} bytes with SHA-256 {sha}; nothing was kept",
                p.node, entry.name, entry.size, entry.sha256
            ),
        );
    }
    tracing::info!(node = %p.node, bundle = %entry.name, version = %entry.version, "bundle fetched from a peer; verifying");
    crate::bundles::keep_pending_from(store, upload, dir, &p.node).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry {
            name: "web".into(),
            version: "1.0".into(),
            publisher: "test".into(),
            publisher_key_id: "0123456789ABCDEF".into(),
            digest: "a".repeat(64),
            sha256: "b".repeat(64),
            size: 4096,
            arch: None,
            peer_id: None,
        }
    }

    #[test]
    fn peer_entries_are_checked() {
        assert!(entry().sane());
        for bad in [
            IndexEntry {
                name: "../etc".into(),
                ..entry()
            },
            IndexEntry {
                sha256: "xyz".into(),
                ..entry()
            },
            IndexEntry { size: 0, ..entry() },
            IndexEntry {
                size: u64::MAX,
                ..entry()
            },
            IndexEntry {
                version: String::new(),
                ..entry()
            },
            IndexEntry {
                arch: Some("sparc".into()),
                ..entry()
            },
        ] {
            assert!(!bad.sane(), "{bad:?}");
        }
    }

    #[test]
    fn an_entry_for_another_architecture_does_not_run_here() {
        let here = std::env::consts::ARCH;
        let other = if here == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        assert!(entry().runs_here(), "no arch: any");
        let e = IndexEntry {
            arch: Some(here.into()),
            ..entry()
        };
        assert!(e.sane() && e.runs_here());
        let e = IndexEntry {
            arch: Some(other.into()),
            ..entry()
        };
        assert!(e.sane() && !e.runs_here());
        // Older peers leave the field out; this box's index does too for a
        // bundle without one, so the JSON stays what it was.
        let json = serde_json::to_string(&entry()).unwrap();
        assert!(!json.contains("arch"), "{json}");
        let back: IndexEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, entry());
    }

    #[test]
    fn owns_only_share_paths() {
        assert!(owns("/share/v1/bundles") && owns("/share/v1/bundles/web.nvb"));
        assert!(!owns("/share/v1/bundlesx") && !owns("/api/v1/bundles"));
    }
}
