//! `/api/v1/bundles` and `/api/v1/keys`: signed bundles and the keyring.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/bundles` | installed bundles; a broken one as `{name, state: "broken", file, problem}` |
//! | `POST /api/v1/bundles` (body: the bundle file, or a `multipart/form-data` form with it) | verify, then install or upgrade |
//! | `POST /api/v1/bundles/verify` (body as above) | verify only; keep it as pending and show name, version, publisher, key, digest |
//! | `POST /api/v1/bundles/pending/ID/install` | install a verified pending upload (verified again) |
//! | `DELETE /api/v1/bundles/pending/ID` | discard a pending upload |
//! | `POST /api/v1/bundles/fetch` | the same pending step for a bundle another box offers (see [`crate::share`]) |
//! | `GET /api/v1/bundles/NAME` | one bundle (a broken one as in the list) |
//! | `POST /api/v1/bundles/NAME/rollback` | back to the previous version |
//! | `DELETE /api/v1/bundles/NAME[?purge=1]` | remove (volumes kept unless purge) |
//! | `POST /api/v1/bundles/NAME/remove[?purge=1]` | the same, for HTML forms |
//! | `GET /api/v1/keys` | trusted and revoked publisher keys |
//! | `POST /api/v1/keys` (body: a public key file or its base64 line) | trust a key |
//! | `DELETE /api/v1/keys/ID` | stop trusting a key |
//! | `POST /api/v1/keys/ID/revoke` (body: reason) | revoke a key for good |
//! | `GET /api/v1/storage` | free and total space where bundles are kept |
//!
//! Store operations block (hashing, fsync, loop mounts) and run on tokio's
//! blocking pool. Errors carry `BundleError::code()` as their stable code.
//!
//! A bundle that cannot fit is refused before it is streamed: an upload's
//! declared length must leave room for the file and the copy of its image
//! the install makes ([`nuvol_bundle::space`]); otherwise 507
//! `insufficient_storage` with `needed_bytes` and `free_bytes`. An upload
//! that fills the disk anyway (no length given, or the space taken
//! meanwhile) gets the same answer and leaves no file behind.
#![allow(clippy::result_large_err)] // handlers return ready-made error responses, built once per request

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use nuvol_bundle::space::{needed_to_receive, Space};
use nuvol_bundle::{BrokenBundle, BundleError, KeyId, Listing, Store};
use serde_json::json;

use crate::{error, json, Resp};

/// Largest bundle accepted by upload.
pub const MAX_UPLOAD: u64 = 1 << 30;
/// Largest key or reason body.
pub const MAX_KEY_BODY: u64 = 8 * 1024;
/// Most bytes of a refused upload read (and thrown away) before answering,
/// so a client that sends its body without waiting for `100 Continue`
/// still reads the answer; past this the connection is closed after it.
pub const DRAIN_MAX: u64 = 64 << 20;

fn bundle_error(e: &BundleError) -> Resp {
    if let BundleError::NoSpace { needed, free, .. } = e {
        return no_space(&e.to_string(), *needed, *free);
    }
    let status = match e {
        BundleError::NotInstalled(_) => StatusCode::NOT_FOUND,
        BundleError::UnknownKey(_) | BundleError::RevokedKey(_) | BundleError::BadSignature(_) => {
            StatusCode::FORBIDDEN
        }
        BundleError::Downgrade { .. }
        | BundleError::Broken(_)
        | BundleError::SameImage { .. }
        | BundleError::PublisherChanged { .. }
        | BundleError::NoPrevious(_) => StatusCode::CONFLICT,
        BundleError::WrongArch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        BundleError::Io { .. }
        | BundleError::State(_)
        | BundleError::Keyring(_)
        | BundleError::Tool { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.code(), &e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BundleError> + Send + 'static,
) -> Result<T, Resp> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(bundle_error(&e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("bundle task failed: {e}"),
        )),
    }
}

/// A bundle the store cannot read, as `GET /api/v1/bundles` shows it.
fn broken_json(b: &BrokenBundle) -> serde_json::Value {
    json!({
        "name": b.name,
        "state": "broken",
        "file": b.file.display().to_string(),
        "problem": b.problem,
    })
}

/// The installed bundles and the broken ones, in one list sorted by name.
fn listing_json(l: Listing) -> Result<Vec<serde_json::Value>, BundleError> {
    let mut out = l
        .bundles
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BundleError::State(e.to_string()))?;
    out.extend(l.broken.iter().map(broken_json));
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(out)
}

fn done<T: serde::Serialize>(status: StatusCode, r: Result<T, Resp>) -> Resp {
    match r {
        Ok(v) => json(status, &v),
        Err(resp) => resp,
    }
}

/// 507 `insufficient_storage` with the numbers.
pub(crate) fn no_space(message: &str, needed: u64, free: u64) -> Resp {
    let mut f = serde_json::Map::new();
    f.insert("needed_bytes".into(), needed.into());
    f.insert("free_bytes".into(), free.into());
    crate::error_with(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        message,
        f,
    )
}

/// Refuse a transfer of `len` bytes into `dir` unless it and the install
/// after it fit ([`needed_to_receive`]).
pub(crate) fn check_room(dir: &Path, len: u64) -> Result<(), Resp> {
    match nuvol_bundle::space::ensure(dir, needed_to_receive(len)) {
        Ok(_) => Ok(()),
        Err(e) => Err(bundle_error(&e)),
    }
}

/// 507 for a transfer that filled the disk after `got` bytes (of
/// `declared`, if known); the partial file is already gone.
pub(crate) fn filled_up(dir: &Path, got: u64, declared: Option<u64>) -> Resp {
    let free = nuvol_bundle::space::space(dir).map_or(0, |s| s.free_bytes);
    let (needed, at_least) = match declared {
        Some(n) => (needed_to_receive(n.max(got)), ""),
        None => (needed_to_receive(got), "at least "),
    };
    no_space(
        &format!(
            "not enough free space on {}: the transfer filled it after {got} bytes and was \
             dropped; {at_least}{needed} bytes ({}) needed, {free} bytes ({}) free",
            dir.display(),
            nuvol_human::bytes(needed),
            nuvol_human::bytes(free),
        ),
        needed,
        free,
    )
}

/// Read and throw away the rest of a body (at most `budget` bytes, each
/// chunk within [`crate::BODY_TIMEOUT`]), so the client reads our answer.
async fn drain(body: &mut Incoming, budget: u64) {
    let mut left = budget;
    while let Ok(Some(Ok(f))) = tokio::time::timeout(crate::BODY_TIMEOUT, body.frame()).await {
        let n = f.data_ref().map_or(0, |d| d.len() as u64);
        if n > left {
            return;
        }
        left -= n;
    }
}

/// The filesystem holding the store: where bundles, uploads and volumes
/// take their space.
pub fn storage(store: &Store) -> Result<serde_json::Value, BundleError> {
    let Space {
        path,
        free_bytes,
        total_bytes,
    } = store.space()?;
    Ok(json!({
        "path": path,
        "free_bytes": free_bytes,
        "total_bytes": total_bytes,
        "largest_bundle_bytes": nuvol_bundle::space::largest_receivable(free_bytes).min(MAX_UPLOAD),
    }))
}

/// Read a small body (keys, reasons) into memory: at most
/// [`MAX_KEY_BODY`] within [`crate::BODY_TIMEOUT`].
async fn small_body(body: Incoming) -> Result<Bytes, Resp> {
    crate::body_within(body, MAX_KEY_BODY as usize).await
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// A temporary upload file, removed on drop.
pub(crate) struct Upload(PathBuf);
impl Upload {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

/// A fresh upload file name in `dir` (created if missing); nothing is
/// written yet.
pub(crate) fn new_upload(dir: &Path) -> Result<Upload, Resp> {
    std::fs::create_dir_all(dir).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            &format!("upload: {e}"),
        )
    })?;
    let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
    Ok(Upload(
        dir.join(format!("upload-{}-{n}.nvb", std::process::id())),
    ))
}

/// Verify a downloaded or uploaded file and keep it as pending (the
/// answer carries the pending id the confirm step installs); `source`
/// names where it came from (a node), if not an upload.
pub(crate) async fn keep_pending_from(
    store: Arc<Store>,
    upload: Upload,
    dir: PathBuf,
    source: &str,
) -> Resp {
    let src = source.to_string();
    let r = blocking(move || {
        let mut v = keep_pending(&store, upload, &dir)?;
        v["source"] = json!(src);
        Ok(v)
    })
    .await;
    done(StatusCode::OK, r)
}
impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a request says about the upload in its body.
pub(crate) struct UploadHead {
    /// `Content-Length`.
    declared: Option<u64>,
    /// The form's boundary, for `multipart/form-data`.
    boundary: Option<String>,
    /// `Expect: 100-continue`: the client waits before sending the body.
    expects_continue: bool,
}

impl UploadHead {
    pub(crate) fn of(req: &Request<Incoming>) -> UploadHead {
        let h = req.headers();
        let text = |name| {
            h.get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
        };
        UploadHead {
            declared: text(hyper::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            boundary: text(hyper::header::CONTENT_TYPE).and_then(multipart_boundary),
            expects_continue: text(hyper::header::EXPECT)
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue")),
        }
    }
}

/// Stream the request body to a file under `dir`, at most [`MAX_UPLOAD`],
/// refusing at once what cannot fit.
async fn receive(body: Incoming, dir: &Path, head: UploadHead) -> Result<Upload, Resp> {
    receive_max(body, dir, head, MAX_UPLOAD).await
}

/// [`receive`] with another limit (OS updates).
pub(crate) async fn receive_max(
    mut body: Incoming,
    dir: &Path,
    head: UploadHead,
    max: u64,
) -> Result<Upload, Resp> {
    let declared = head.declared;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("uploads here are limited to {max} bytes"),
        )
    };
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let io_err = |e: std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            &format!("upload: {e}"),
        )
    };
    let upload = new_upload(dir)?;
    if let Some(n) = declared {
        if let Err(resp) = check_room(dir, n) {
            if !head.expects_continue && n <= DRAIN_MAX {
                drain(&mut body, DRAIN_MAX).await;
            }
            return Err(resp);
        }
    }
    // Written and fsynced on the blocking pool: the runtime thread only
    // moves chunks.
    let mut file = crate::filewrite::BlockingWriter::create(&upload.0, false);
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(crate::BODY_TIMEOUT, body.frame()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the upload stalled",
                ))
            }
        };
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                &format!("upload interrupted: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > max {
                return Err(too_large());
            }
            if let Err(e) = file.write(data).await {
                return Err(if nuvol_bundle::space::is_full(&e) {
                    drop((file, upload));
                    drain(&mut body, DRAIN_MAX).await;
                    filled_up(dir, total, declared)
                } else {
                    io_err(e)
                });
            }
        }
        // A fast client's frames are always ready: let the API's other
        // requests run between two of them.
        tokio::task::yield_now().await;
    }
    if total == 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "send the bundle file as the request body",
        ));
    }
    if let Err(e) = file.finish().await {
        return Err(if nuvol_bundle::space::is_full(&e) {
            drop(upload);
            filled_up(dir, total, declared)
        } else {
            io_err(e)
        });
    }
    match head.boundary {
        Some(b) => {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || unwrap_multipart(&upload.0, &b, &dir))
                .await
                .unwrap_or_else(|e| Err(io_err(std::io::Error::other(e.to_string()))))
        }
        None => Ok(upload),
    }
}

/// The `boundary` of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70)
            .then(|| v.to_string())
    })
}

/// Where the first part's content lies in a multipart body: the byte range
/// between the part's headers and the next boundary. `head` is the start of
/// the body (at least its first 16 KiB), `tail` its last bytes, `len` the
/// whole length.
pub fn multipart_range(head: &[u8], tail: &[u8], len: u64, boundary: &str) -> Option<(u64, u64)> {
    let open = format!("--{boundary}");
    let start_b = find(head, open.as_bytes())?;
    let after = start_b + open.len();
    let hdr_end = find(&head[after..], b"\r\n\r\n")? + after + 4;
    let close = format!("\r\n--{boundary}");
    let at = rfind(tail, close.as_bytes())?;
    let end = len.saturating_sub(tail.len() as u64) + at as u64;
    (end >= hdr_end as u64).then_some((hdr_end as u64, end))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn rfind(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).rposition(|w| w == n)
}

/// Copy the file part of a multipart upload into its own file (the form
/// is deleted after).
fn unwrap_multipart(path: &Path, boundary: &str, dir: &Path) -> Result<Upload, Resp> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "bad_form", &m);
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut head = vec![0u8; len.min(16 * 1024) as usize];
    f.read_exact(&mut head).map_err(|e| bad(e.to_string()))?;
    let tail_len = len.min(256);
    f.seek(SeekFrom::Start(len - tail_len))
        .map_err(|e| bad(e.to_string()))?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).map_err(|e| bad(e.to_string()))?;
    let (start, end) = multipart_range(&head, &tail, len, boundary)
        .ok_or_else(|| bad("not a multipart form with a file in it".into()))?;
    if end == start {
        return Err(bad("no file chosen".into()));
    }
    let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
    let out = Upload(dir.join(format!("upload-{}-{n}.nvb", std::process::id())));
    let copied = std::fs::File::create(&out.0).and_then(|mut w| {
        f.seek(SeekFrom::Start(start))?;
        std::io::copy(&mut (&mut f).take(end - start), &mut w)?;
        w.sync_all()
    });
    if let Err(e) = copied {
        return Err(if nuvol_bundle::space::is_full(&e) {
            drop(out);
            let _ = std::fs::remove_file(path);
            filled_up(dir, len, Some(len))
        } else {
            bad(e.to_string())
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(out)
}

/// Most verified uploads kept waiting for "install"; older ones go first.
const MAX_PENDING: usize = 4;
/// A pending upload older than this is removed.
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn pending_path(dir: &Path, id: &str) -> Option<PathBuf> {
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| dir.join(format!("pending-{id}.nvb")))
}

/// Drop expired pending uploads and keep at most `MAX_PENDING - 1`.
fn prune_pending(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut v: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pending-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    v.sort();
    let now = std::time::SystemTime::now();
    let excess = v.len().saturating_sub(MAX_PENDING - 1);
    for (i, (t, p)) in v.iter().enumerate() {
        let old = now.duration_since(*t).is_ok_and(|age| age > PENDING_TTL);
        if old || i < excess {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Verify an upload against the keyring and keep it as pending.
fn keep_pending(
    store: &Store,
    upload: Upload,
    dir: &Path,
) -> Result<serde_json::Value, BundleError> {
    let keyring = store.keyring();
    let v = nuvol_bundle::verify::verify_file(&upload.0, &keyring, None)?;
    prune_pending(dir);
    let mut raw = [0u8; 8];
    getrandom::getrandom(&mut raw).map_err(|e| BundleError::State(e.to_string()))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let dest = dir.join(format!("pending-{id}.nvb"));
    std::fs::rename(&upload.0, &dest).map_err(BundleError::io(&dest))?;
    let installed = store.get(&v.manifest.name).ok().map(|b| b.version);
    Ok(json!({
        "pending": id,
        "name": v.manifest.name,
        "version": v.manifest.version,
        "publisher": v.manifest.publisher,
        "publisher_key_id": v.key_id.to_string(),
        "digest": v.digest_hex(),
        "signature": "valid",
        "installed_version": installed,
    }))
}

fn key_id(s: &str) -> Result<KeyId, Resp> {
    KeyId::parse_hex(s).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_key_id",
            &format!("{s:?} is not a key id (16 hex digits)"),
        )
    })
}

/// Serve one bundles/keys request; `None` if the path is not ours.
pub async fn handle(
    store: Arc<Store>,
    upload_dir: PathBuf,
    req: Request<Incoming>,
) -> Option<Resp> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(3).collect();
    let (area, rest) = segs.split_first()?;
    let resp = match (*area, rest, &method) {
        ("bundles", [], &Method::GET) => {
            let s = store.clone();
            done(
                StatusCode::OK,
                blocking(move || s.list().and_then(listing_json)).await,
            )
        }
        ("bundles", [], &Method::POST) => {
            let head = UploadHead::of(&req);
            match receive(req.into_body(), &upload_dir, head).await {
                Ok(upload) => {
                    let s = store.clone();
                    let r = blocking(move || {
                        let r = s.install(&upload.0);
                        drop(upload);
                        r
                    })
                    .await;
                    if let Ok(b) = &r {
                        tracing::info!(bundle = %b.name, version = %b.version, key = %b.publisher_key_id, "bundle installed");
                    }
                    done(StatusCode::CREATED, r)
                }
                Err(resp) => resp,
            }
        }
        ("bundles", ["verify"], &Method::POST) => {
            let head = UploadHead::of(&req);
            match receive(req.into_body(), &upload_dir, head).await {
                Ok(upload) => {
                    let (s, dir) = (store.clone(), upload_dir.clone());
                    done(
                        StatusCode::OK,
                        blocking(move || keep_pending(&s, upload, &dir)).await,
                    )
                }
                Err(resp) => resp,
            }
        }
        ("bundles", ["pending", id, "install"], &Method::POST) => {
            match pending_path(&upload_dir, id) {
                Some(p) if p.exists() => {
                    let s = store.clone();
                    let upload = Upload(p);
                    let r = blocking(move || {
                        let r = s.install(&upload.0);
                        drop(upload);
                        r
                    })
                    .await;
                    if let Ok(b) = &r {
                        tracing::info!(bundle = %b.name, version = %b.version, key = %b.publisher_key_id, "bundle installed");
                    }
                    done(StatusCode::CREATED, r)
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "unknown_pending",
                    "no such pending upload (they expire after 15 minutes)",
                ),
            }
        }
        ("bundles", ["pending", id], &Method::DELETE) => match pending_path(&upload_dir, id) {
            Some(p) if p.exists() => {
                drop(Upload(p));
                json(StatusCode::OK, &json!({ "discarded": id }))
            }
            _ => error(
                StatusCode::NOT_FOUND,
                "unknown_pending",
                "no such pending upload",
            ),
        },
        ("bundles", [name], &Method::GET) => {
            let (s, n) = (store.clone(), name.to_string());
            let r = blocking(move || match s.get(&n) {
                Err(BundleError::Broken(b)) => Ok(broken_json(&b)),
                r => r.and_then(|b| {
                    serde_json::to_value(b).map_err(|e| BundleError::State(e.to_string()))
                }),
            })
            .await;
            done(StatusCode::OK, r)
        }
        ("bundles", [name, "rollback"], &Method::POST) => {
            let (s, n) = (store.clone(), name.to_string());
            done(StatusCode::OK, blocking(move || s.rollback(&n)).await)
        }
        ("bundles", [name], &Method::DELETE) | ("bundles", [name, "remove"], &Method::POST) => {
            let purge = query
                .split('&')
                .any(|kv| kv == "purge=1" || kv == "purge=true");
            let (s, n) = (store.clone(), name.to_string());
            let r = blocking(move || s.remove(&n, purge)).await;
            done(
                StatusCode::OK,
                r.map(|()| json!({ "removed": name, "purged_volumes": purge })),
            )
        }
        ("keys", [], &Method::GET) => {
            let s = store.clone();
            let r = blocking(move || {
                let kr = s.keyring();
                Ok(json!({ "trusted": kr.list()?, "revoked": kr.revoked()? }))
            })
            .await;
            done(StatusCode::OK, r)
        }
        ("keys", [], &Method::POST) => match small_body(req.into_body()).await {
            Ok(body) => {
                let text = String::from_utf8_lossy(&body).into_owned();
                let s = store.clone();
                let r =
                    blocking(move || s.keyring().add_text(&text, "added through the API")).await;
                done(
                    StatusCode::CREATED,
                    r.map(|id| json!({ "key_id": id.to_string() })),
                )
            }
            Err(resp) => resp,
        },
        ("keys", [id], &Method::DELETE) => match key_id(id) {
            Ok(kid) => {
                let s = store.clone();
                match blocking(move || s.keyring().remove(&kid)).await {
                    Ok(true) => json(StatusCode::OK, &json!({ "removed": id })),
                    Ok(false) => error(
                        StatusCode::NOT_FOUND,
                        "unknown_key",
                        &format!("key {id} is not trusted"),
                    ),
                    Err(resp) => resp,
                }
            }
            Err(resp) => resp,
        },
        ("keys", [id, "revoke"], &Method::POST) => {
            match (key_id(id), small_body(req.into_body()).await) {
                (Ok(kid), Ok(body)) => {
                    let reason = String::from_utf8_lossy(&body).trim().to_string();
                    let s = store.clone();
                    let r = blocking(move || s.keyring().revoke(&kid, &reason)).await;
                    done(StatusCode::OK, r.map(|()| json!({ "revoked": id })))
                }
                (Err(resp), _) | (_, Err(resp)) => resp,
            }
        }
        ("storage", [], &Method::GET) => {
            let s = store.clone();
            done(StatusCode::OK, blocking(move || storage(&s)).await)
        }
        ("bundles" | "keys" | "storage", _, _) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => return None,
    };
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boundary_and_range() {
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=----abc").as_deref(),
            Some("----abc")
        );
        assert_eq!(multipart_boundary("application/octet-stream"), None);
        let body = b"------abc\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"x.nvb\"\r\n\r\nDATA\r\n------abc--\r\n";
        let (s, e) = multipart_range(body, body, body.len() as u64, "----abc").unwrap();
        assert_eq!(&body[s as usize..e as usize], b"DATA");
    }

    proptest! {
        #[test]
        fn multipart_never_panics(h in proptest::collection::vec(any::<u8>(), 0..300),
                                  t in proptest::collection::vec(any::<u8>(), 0..300),
                                  extra in 0u64..1000, b in "[a-z-]{1,10}") {
            let len = t.len() as u64 + extra;
            if let Some((s, e)) = multipart_range(&h, &t, len, &b) {
                prop_assert!(s <= e && e <= len);
            }
            let _ = multipart_boundary(&String::from_utf8_lossy(&h));
        }
    }
}
