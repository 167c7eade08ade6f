//! HTTP API and panel of the agent, on hyper.
//!
//! Routes (all under one small router, see [`route`]):
//! - `GET /` — the status page (HTML, no JavaScript needed)
//! - `GET /api/v1/status` — the node's status as JSON
//! - `GET /api/v1/network` — links, addresses, routes, DNS, DHCP leases
//! - `/api/v1/bundles…`, `/api/v1/keys…` — signed bundles and the keyring
//!   (see [`bundles`])
//! - `/api/v1/members`, `/api/v1/services`, `/api/v1/events` — gossip
//!   discovery (see [`discovery`])
//! - `POST /api/v1/debug/kill` — only when `[debug] test_hooks = true`:
//!   the agent SIGKILLs itself (boot tests use it to check PID 1 restarts it)
//!
//! The status page, `/api/v1/status` and `/api/v1/network` are read-only and
//! public. Every other route needs `Authorization: Bearer <admin token>`
//! (the token is made on first boot and shown on the console); without it
//! the answer is 401.
//!
//! Errors are JSON `{"error": {"code": "...", "message": "..."}}` with a
//! stable code.

pub mod bundles;
pub mod discovery;
mod panel;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use nuvol_status::Status;

/// What the API needs from the running agent.
pub trait Node: Send + Sync + 'static {
    fn status(&self) -> Status;
    /// The network state as JSON, `None` while networking is not managed.
    fn network(&self) -> Option<serde_json::Value>;
    /// Whether `/api/v1/debug/*` routes are enabled (testing only).
    fn test_hooks(&self) -> bool;
    /// The admin token that protected routes require.
    fn admin_token(&self) -> Option<String>;
    /// The bundle store and a directory for uploads on the same filesystem.
    fn bundle_store(&self) -> Option<(Arc<nuvol_bundle::Store>, std::path::PathBuf)>;
    /// Called after an install, upgrade, rollback or removal succeeded
    /// through the API (the supervisor re-reads the store).
    fn bundles_changed(&self) {}
    /// The running gossip discovery, `None` when off (see [`discovery`]).
    fn discovery(&self) -> Option<nuvol_catalog::DiscoveryHandle> {
        None
    }
}

/// Routes anyone may read; everything else needs the admin token.
pub fn is_public(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && matches!(path, "/" | "/api/v1/status" | "/api/v1/network")
}

/// Constant-time check of `Authorization: Bearer <token>`.
pub fn authorized(node: &dyn Node, headers: &hyper::HeaderMap) -> bool {
    let Some(want) = node.admin_token() else {
        return false;
    };
    let Some(got) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Response body: a whole buffer or a stream (log follow, events).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
/// What every handler returns.
pub type Resp = Response<Body>;

/// A body holding `bytes` whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// A JSON error with a stable machine code and a human message.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json(
        status,
        &serde_json::json!({ "error": { "code": code, "message": message } }),
    )
}

fn html(body: String) -> Resp {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header(
            "content-security-policy",
            "default-src 'self'; style-src 'unsafe-inline'",
        )
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Dispatch one request. Public so tests can call it without sockets.
pub fn route(node: &dyn Node, method: &Method, path: &str) -> Resp {
    match (method, path) {
        (&Method::GET, "/") | (&Method::HEAD, "/") => html(panel::status_page(&node.status())),
        (&Method::GET, "/api/v1/status") => json(StatusCode::OK, &node.status()),
        (&Method::GET, "/api/v1/network") => match node.network() {
            Some(v) => json(StatusCode::OK, &v),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "network_unmanaged",
                "networking is not managed by this agent",
            ),
        },
        (&Method::POST, "/api/v1/debug/kill") if node.test_hooks() => {
            // Test hook: die the hard way so PID 1's restart path is exercised.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "kill_failed",
                "could not kill the agent",
            )
        }
        (_, "/" | "/api/v1/status" | "/api/v1/network") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no such page: {path}"),
        ),
    }
}

async fn handle(node: Arc<dyn Node>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = if !is_public(&method, &path) && !authorized(node.as_ref(), req.headers()) {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs the admin token (Authorization: Bearer …)",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        r
    } else if path.starts_with("/api/v1/bundles") || path.starts_with("/api/v1/keys") {
        match node.bundle_store() {
            Some((store, dir)) => match bundles::handle(store, dir, req).await {
                Some(r) => {
                    if method != Method::GET
                        && r.status().is_success()
                        && path.starts_with("/api/v1/bundles")
                    {
                        node.bundles_changed();
                    }
                    r
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no such page: {path}"),
                ),
            },
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "bundles_unavailable",
                "the bundle store could not be opened; see the agent's log",
            ),
        }
    } else if discovery::owns(&path) {
        discovery::handle(node.discovery(), req).await
    } else {
        route(node.as_ref(), &method, &path)
    };
    tracing::debug!(%method, path, status = resp.status().as_u16(), "http");
    Ok(resp)
}

/// Serve HTTP/1.1 on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<dyn Node>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let node = node.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(node.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}
