//! HTTP API and panel of the agent, on hyper.
//!
//! Every route is listed in [`routes::ROUTES`]; the OpenAPI document at
//! `/api/v1/openapi.json` is made from that table (see docs/api.md).
//! This box's services: `/api/v1/local-services`, `/api/v1/services/NAME…`
//! (start/stop/restart, logs with follow; see [`services`]).
//! Community discovery: `/api/v1/members`, `/api/v1/services`,
//! `/api/v1/events` (see [`discovery`]).
//!
//! Bundle sharing between boxes: `/share/v1/bundles…` (public),
//! `/api/v1/community/bundles`, `/api/v1/bundles/fetch` (see [`share`]).
//!
//! Access: `GET /`, `/login`, `/panel.js`, `/api/v1/status`,
//! `/api/v1/network`, `/api/v1/openapi.json` and `/share/v1/bundles…` are
//! public and read-only.
//! Everything else needs a credential (see [`auth`]): a bearer token, or a
//! browser session cookie plus the session's CSRF token on every state
//! change. Without one the answer is 401 (HTML pages show the login form).
//!
//! Transport: plain HTTP and, when configured, HTTPS (rustls, a self-signed
//! certificate made on first boot, see [`tls`]). With HTTPS on, plain HTTP
//! answers only the public status page, `/api/v1/status` and
//! `/api/v1/network`; everything else is redirected (308) to HTTPS unless
//! `[panel] allow_plain_http = true`.
//!
//! Limits: the request head within 10 s and at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] lines (431), small bodies (forms, JSON) at most
//! [`MAX_SMALL_BODY`], keys and revocation reasons
//! [`bundles::MAX_KEY_BODY`], user events [`discovery::MAX_EVENT_BODY`],
//! each within 30 s (413 `body_too_large`, 408 `body_timeout`), bundle
//! uploads 1 GiB with at most 30 s between body chunks (and room for them
//! on disk: 507 `insufficient_storage`, see [`bundles`]), and a connection
//! with no traffic either way for 120 s is closed. A streaming response (log follow, events) that is waiting for
//! something to send is not idle: it stays open however quiet it is; dead
//! peers are found by TCP keepalive (probes after 60 s of silence, every
//! 10 s, 4 tries) and the stream ends when a write fails (see [`io`]).
//! Connections: at most 256 at once and 64 per address, the one idle
//! longest closed to admit a new one (see [`conns`]); failed accepts back
//! off from 10 ms to 1 s.
//! Settings: `/api/v1/settings` (see [`settings`]). Factory reset:
//! `POST /api/v1/reset` (see [`reset`]).
//!
//! Errors are JSON `{"error": {"code": "...", "message": "..."}}` with a
//! stable code.

mod accept;
pub mod auth;
pub mod bulk;
pub mod bundles;
pub mod conns;
pub mod discovery;
pub mod filewrite;
pub mod rate;
use nuvol_human as human;
mod io;
pub mod metrics;
pub mod os_fetch;
pub mod os_share;
mod pages;
mod panel;
pub mod parse;
pub mod peer_http;
pub mod reset;
pub mod routes;
pub mod services;
pub mod settings;
pub mod share;
pub mod tls;
pub mod update;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

pub use nuvol_status::Status;
pub use rustls;
pub use tokio_rustls;

/// What the API needs from the running agent.
pub trait Node: Send + Sync + 'static {
    fn status(&self) -> Status;
    /// The network state as JSON, `None` while networking is not managed.
    fn network(&self) -> Option<serde_json::Value>;
    /// Whether `/api/v1/debug/*` routes are enabled (testing only).
    fn test_hooks(&self) -> bool;
    /// The admin token (console secret) that protected routes accept.
    fn admin_token(&self) -> Option<String>;
    /// The bundle store and a directory for uploads on the same filesystem.
    fn bundle_store(&self) -> Option<(Arc<nuvol_bundle::Store>, std::path::PathBuf)>;
    /// `[bundles] share`: offer the installed bundles on `/share/v1/…`.
    fn share_bundles(&self) -> bool {
        false
    }
    /// Called after an install, upgrade, rollback or removal succeeded
    /// through the API (the supervisor re-reads the store).
    fn bundles_changed(&self) {}
    /// A number that changes whenever the bundle store changed outside the
    /// API (provisioning at start): the public share index is cached until
    /// it, or an API change, moves (see [`share`]).
    fn bundles_generation(&self) -> u64 {
        0
    }
    /// The id each bundle's service is known by to its peers on other
    /// boxes (Syncthing's device id), published in the share index; a
    /// change must move [`Node::bundles_generation`].
    fn peer_ids(&self) -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::new()
    }
    /// Extra alerts for the dashboard (update pending, …).
    fn alerts(&self) -> Vec<String> {
        Vec::new()
    }
    /// Extra Prometheus text (gossip, containers), appended to `/metrics`.
    fn metrics_extra(&self) -> String {
        String::new()
    }
    /// Reboot the box: `Ok(true)` when PID 1 was asked to, `Ok(false)` when
    /// there is no nuvol init to ask (a development host).
    fn reboot(&self) -> Result<bool, String> {
        Ok(false)
    }
    /// The OS slots and update state (`GET /api/v1/update`); `None`: the
    /// agent has no updater.
    fn update_status(&self) -> Option<serde_json::Value> {
        None
    }
    /// Where uploaded update artefacts are received (the data partition).
    fn update_upload_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The OS update artefact this box offers its peers (the one it runs,
    /// its slot marked good): its file and description (version, arch,
    /// size, sha256, key_id).
    fn update_offer(&self) -> Option<(std::path::PathBuf, serde_json::Value)> {
        None
    }
    /// Check an uploaded artefact, write it to the inactive slot and arm
    /// its one-shot try (see [`update`]).
    fn update_apply(
        &self,
        file: &std::path::Path,
        allow_downgrade: bool,
    ) -> Result<serde_json::Value, nuvol_update::Refusal> {
        let _ = (file, allow_downgrade);
        Err(nuvol_update::Refusal::Unavailable(
            "this agent cannot update its OS".into(),
        ))
    }
    /// Check the head of an artefact being downloaded (see
    /// [`nuvol_update::artefact::verify_prefix`]) against this box's keys,
    /// architecture and running version: (its version, the file's length).
    fn update_check_head(
        &self,
        head: &[u8],
        allow_downgrade: bool,
    ) -> Result<(String, u64), nuvol_update::Refusal> {
        let _ = (head, allow_downgrade);
        Err(nuvol_update::Refusal::Unavailable(
            "this agent cannot update its OS".into(),
        ))
    }
    /// Factory reset: record the request durably for PID 1, then reboot
    /// (see [`reset`]). `Ok(true)` when recorded and PID 1 was asked,
    /// `Ok(false)` when there is no nuvol init (a development host: nothing
    /// is recorded). `test_pause_secs`: the test hook's pause mid-wipe.
    fn factory_reset(&self, test_pause_secs: u32) -> Result<bool, String> {
        let _ = test_pause_secs;
        Ok(false)
    }
    /// This box's supervised services (`/api/v1/local-services`,
    /// `/api/v1/services/NAME…`); `None` while the supervisor is not running.
    fn services(&self) -> Option<Arc<dyn services::Services>> {
        None
    }
    /// The running gossip discovery, `None` when off (see [`discovery`]).
    fn discovery(&self) -> Option<nuvol_catalog::DiscoveryHandle> {
        None
    }
    /// Announce a zone (`None`: none) and role changed through the settings
    /// API. Default: re-set the gossip tags of the running discovery (if
    /// discovery is off or not started yet, the saved settings apply at the
    /// next start).
    fn apply_discovery_settings(&self, zone: Option<&str>, role: &str) -> Result<(), String> {
        match self.discovery() {
            Some(d) => d
                .set_zone_and_role(zone.unwrap_or(""), role)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// Routes anyone may read; everything else needs a credential.
pub fn is_public(method: &Method, path: &str) -> bool {
    is_public_with(method, path, false)
}

/// [`is_public`], counting test-hook routes when `hooks` is on.
pub fn is_public_with(method: &Method, path: &str, hooks: bool) -> bool {
    let m = match *method {
        Method::HEAD => "GET",
        ref m => m.as_str(),
    };
    routes::find(m, path, hooks).is_some_and(|d| d.public)
}

/// Routes plain HTTP serves even when HTTPS is on: the read-only status,
/// and the bundle share (signed bytes; a peer fetches them without TLS).
pub fn plain_http_ok(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && (matches!(path, "/" | "/api/v1/status" | "/api/v1/network")
            || share::owns(path)
            || os_share::owns(path))
}

/// Constant-time check of `Authorization: Bearer <admin token>`.
pub fn authorized(node: &dyn Node, headers: &hyper::HeaderMap) -> bool {
    let Some(want) = node.admin_token() else {
        return false;
    };
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|got| auth::ct_eq(got.as_bytes(), want.as_bytes()))
}

/// Response body: a whole buffer or a stream (log follow, events).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
/// What every handler returns.
pub type Resp = Response<Body>;

/// A streaming body fed by a channel: each message is one chunk; the body
/// ends when the sender is dropped, and dropping the body (client gone)
/// closes the channel, which ends the task feeding it.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);
    impl hyper::body::Body for ChannelBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }
    ChannelBody(rx).boxed_unsync()
}

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
    error_with(status, code, message, serde_json::Map::new())
}

/// [`error`] with more fields in the error object (numbers a client can
/// act on, e.g. `needed_bytes` and `free_bytes`).
pub fn error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Resp {
    let mut e = fields;
    e.insert("code".into(), code.into());
    e.insert("message".into(), message.into());
    json(status, &serde_json::json!({ "error": e }))
}

/// 429 for a source over its request budget ([`rate`]): with
/// `Retry-After`, and the connection closed after it.
fn rate_limited(wait: Duration) -> Resp {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests from your address; slow down",
    );
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&secs) {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

fn html(body: String) -> Resp {
    html_status(StatusCode::OK, body)
}

fn html_status(status: StatusCode, body: String) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "same-origin")
        .header(
            "content-security-policy",
            "default-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        )
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn redirect(status: StatusCode, location: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(hyper::header::LOCATION, location)
        .header("cache-control", "no-store")
        .body(full(Bytes::new()))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Largest request head: request line and headers, up to and including
/// the blank line (more: 431).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in a request (hyper's default; more: 431).
pub const MAX_HEADERS: usize = 100;
/// Largest form or JSON body (login, tokens, settings, fetch).
pub const MAX_SMALL_BODY: usize = 64 * 1024;
/// Longest wait for a small body, or between chunks of an upload.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Read a small body whole: at most [`MAX_SMALL_BODY`] within [`BODY_TIMEOUT`].
pub async fn small_body(body: Incoming) -> Result<Bytes, Resp> {
    body_within(body, MAX_SMALL_BODY).await
}

/// Read a body whole: at most `max` bytes (else 413 `body_too_large`)
/// within [`BODY_TIMEOUT`] (else 408 `body_timeout`).
pub async fn body_within(body: Incoming, max: usize) -> Result<Bytes, Resp> {
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("body is over {max} bytes or broken"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body was not sent in time",
        )),
    }
}

/// Dispatch the simple read-only routes. Public so tests can call it
/// without sockets.
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
        (&Method::POST, "/api/v1/debug/kill-after-create") if node.test_hooks() => {
            // Test hook: the next container created dies with its agent
            // before it is started (restart a service to get there).
            nuvol_supervisor::test_hooks::arm_kill_after_create();
            json(StatusCode::OK, &serde_json::json!({"armed": true}))
        }
        (&Method::POST, "/api/v1/debug/slow-reset") if node.test_hooks() => {
            // Test hook: the next factory reset's wipe pauses in the middle
            // (first attempt only), so a test can cut the power there.
            reset::arm_test_pause();
            json(
                StatusCode::OK,
                &serde_json::json!({"armed": true, "pause_s": reset::TEST_PAUSE_SECS}),
            )
        }
        (&Method::POST, "/api/v1/debug/hang") if node.test_hooks() => {
            // Test hook: stop dead (SIGSTOP) so the heartbeats to PID 1 stop
            // and the hardware watchdog path is exercised.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            json(StatusCode::OK, &serde_json::json!({"resumed": true}))
        }
        _ if routes::path_known(path, node.test_hooks()) => error(
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

/// How the API is served.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `[admin]`: password hash and API keys.
    pub admin: auth::AdminSettings,
    /// Where API tokens are kept (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Serve everything over plain HTTP even when HTTPS is on.
    pub allow_plain_http: bool,
    /// The HTTPS port clients reach (a port forward may differ from the
    /// listener's); plain-HTTP redirects name it. `None`: the listener's.
    pub public_https_port: Option<u16>,
    /// The settings overlay (`None`: no `/api/v1/settings`).
    pub settings: Option<settings::Setup>,
    /// Idle time after which a connection is closed (`None`: [`io::IDLE`]);
    /// tests shorten it.
    pub idle: Option<Duration>,
    /// The connection budget (`None`: [`conns::Limits::default`]; the agent
    /// derives it from its fd limit).
    pub conn_limits: Option<conns::Limits>,
    /// The request budget per source (`None`: [`rate::Budget::default`]).
    pub rate: Option<rate::Budget>,
}

/// The listeners: plain HTTP and, optionally, HTTPS.
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
}

/// Shared state of the server.
pub struct Ctx {
    pub node: Arc<dyn Node>,
    pub auth: auth::Auth,
    pub metrics: metrics::Metrics,
    /// Port of the HTTPS listener, if any (for redirects): `[panel]
    /// public_https_port` when set, else the listener's port.
    pub https_port: Option<u16>,
    /// `[panel] allow_plain_http`, changeable live through the settings.
    pub allow_plain_http: std::sync::atomic::AtomicBool,
    /// The settings overlay, when the agent has a state directory.
    pub settings: Option<settings::Store>,
    /// Connections idle this long are closed (streams waiting for data
    /// excepted; see [`io`]).
    pub idle: Duration,
    /// One argon2 computation at a time (each takes ~19 MiB).
    pub argon2_gate: tokio::sync::Semaphore,
    /// Bundle sharing: download slots and the peers' indexes.
    pub share: share::Share,
    /// The open connections and their budget (see [`conns`]).
    pub conns: Arc<conns::Table>,
    /// Requests per source (see [`rate`]).
    pub rate: rate::Rate,
    /// The last status and when it was collected (see [`Ctx::status`]).
    status_cache: std::sync::Mutex<Option<(Instant, Status)>>,
}

/// How long a collected status is served again: collecting reads a dozen
/// /proc and /sys files, which would otherwise dominate the cost of the
/// status page and `/api/v1/status` under load.
pub const STATUS_TTL: Duration = Duration::from_secs(1);

impl Ctx {
    /// The node's status, at most [`STATUS_TTL`] old.
    pub fn status(&self) -> Status {
        let mut c = self.status_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, s)) = c.as_ref() {
            if t.elapsed() < STATUS_TTL {
                return s.clone();
            }
        }
        let s = self.node.status();
        *c = Some((Instant::now(), s.clone()));
        s
    }
}

/// One connection's facts.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

fn wants_html(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// A page path (not the API, not metrics): unauthenticated visitors get the
/// login form there.
fn is_page(path: &str) -> bool {
    !path.starts_with("/api/") && path != "/metrics"
}

fn https_location(headers: &hyper::HeaderMap, port: u16, path_q: &str) -> Option<String> {
    let host = headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !ok {
        return None;
    }
    // Strip a port, keeping IPv6 brackets.
    let name = match host.rfind(']') {
        Some(i) => &host[..=i],
        None => host.split(':').next().unwrap_or(host),
    };
    Some(if port == 443 {
        format!("https://{name}{path_q}")
    } else {
        format!("https://{name}:{port}{path_q}")
    })
}

/// Drop trailing slashes from the request's path (`/api/v1/status/` is
/// `/api/v1/status`), as the route table matches them, so every handler
/// sees one spelling of each route.
fn canonical_path(req: &mut Request<Incoming>) {
    let path = req.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = hyper::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

async fn handle(ctx: Arc<Ctx>, conn: Conn, mut req: Request<Incoming>) -> Result<Resp, Infallible> {
    canonical_path(&mut req);
    if let Err(wait) = ctx.rate.take(peer_ip(&conn)) {
        // Held before the answer (rate::TARPIT): a client looping as fast
        // as it can then waits too, instead of asking again at once.
        tokio::time::sleep(rate::TARPIT).await;
        return Ok(rate_limited(wait));
    }
    let started = Instant::now();
    let node = ctx.node.clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let hooks = node.test_hooks();
    let label = routes::label(method.as_str(), &path, hooks);
    let mut principal = ctx.auth.authenticate(req.headers());
    if principal.is_none() && ctx.auth.has_slow_keys() {
        principal = slow_key(&ctx, conn, req.headers()).await;
    }
    let cookie_auth = matches!(principal, Some(auth::Principal::Session { .. }));
    let form_post = cookie_auth
        && method != Method::GET
        && method != Method::HEAD
        && path.starts_with("/api/")
        && wants_html(req.headers());
    let back = parse::form_get(&query, "back");
    let resp = if let (false, Some(port), false) = (
        conn.tls,
        ctx.https_port,
        ctx.allow_plain_http
            .load(std::sync::atomic::Ordering::Relaxed)
            || plain_http_ok(&method, &path),
    ) {
        let pq = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        match https_location(req.headers(), port, &pq) {
            Some(loc) => redirect(StatusCode::PERMANENT_REDIRECT, &loc),
            None => error(
                StatusCode::BAD_REQUEST,
                "bad_host",
                "plain HTTP is only for the status page; use https:// (bad Host header)",
            ),
        }
    } else if !is_public_with(&method, &path, hooks) && principal.is_none() {
        let known_page =
            routes::find(method.as_str(), &path, hooks).is_some_and(|d| d.kind == "html");
        let mut r = if is_page(&path)
            && matches!(method, Method::GET | Method::HEAD)
            && (known_page || wants_html(req.headers()))
        {
            let next = req
                .uri()
                .path_and_query()
                .map_or("/dashboard", |p| p.as_str())
                .to_string();
            html_status(
                StatusCode::UNAUTHORIZED,
                pages::login_page(&ctx.status().hostname, &next, None),
            )
        } else {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs a credential: Authorization: Bearer <token>, or log in at /login",
            )
        };
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        r
    } else if let (Some(auth::Principal::Session { csrf }), false) = (
        &principal,
        matches!(method, Method::GET | Method::HEAD) || path == "/login",
    ) {
        if auth::csrf_ok(csrf, req.headers(), &query) {
            dispatch(&ctx, conn, principal.clone(), req).await
        } else {
            error(
                StatusCode::FORBIDDEN,
                "csrf",
                "missing or wrong CSRF token (X-CSRF-Token header or csrf= in the query)",
            )
        }
    } else {
        dispatch(&ctx, conn, principal.clone(), req).await
    };
    let resp = if let (true, Some(auth::Principal::Session { csrf })) = (form_post, &principal) {
        pages::form_result(resp, back.as_deref(), csrf).await
    } else {
        resp
    };
    ctx.metrics
        .count(label, resp.status().as_u16(), started.elapsed());
    tracing::debug!(%method, path, status = resp.status().as_u16(), "http");
    Ok(resp)
}

/// Bearer credentials that may be argon2 API keys: checked one at a time
/// on the blocking pool, rate-limited per address.
async fn slow_key(
    ctx: &Arc<Ctx>,
    conn: Conn,
    headers: &hyper::HeaderMap,
) -> Option<auth::Principal> {
    let got = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))?
        .trim()
        .to_string();
    let _gate = ctx.argon2_gate.acquire().await.ok()?;
    let c = ctx.clone();
    let ok = tokio::task::spawn_blocking(move || c.auth.check_slow_key(peer_ip(&conn), &got))
        .await
        .unwrap_or(false);
    ok.then_some(auth::Principal::Bearer)
}

/// Authenticated (or public) requests, by area.
async fn dispatch(
    ctx: &Arc<Ctx>,
    conn: Conn,
    principal: Option<auth::Principal>,
    req: Request<Incoming>,
) -> Resp {
    let node = ctx.node.clone();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if share::owns(&path) {
        share::serve(ctx, &req).await
    } else if os_share::owns(&path) {
        os_share::serve(ctx, &req).await
    } else if let Some(r) = pages::handle(ctx, conn, principal.as_ref(), &req).await {
        r
    } else if path == "/api/v1/community/bundles" {
        if method == Method::GET {
            let refresh = parse::form_get(req.uri().query().unwrap_or(""), "refresh")
                .is_some_and(|v| v == "1" || v == "true");
            match share::community(ctx, refresh).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(r) => r,
            }
        } else {
            route(node.as_ref(), &method, &path)
        }
    } else if path == "/api/v1/bundles/fetch" && method == Method::POST {
        share::fetch(ctx, req).await
    } else if path == "/login" || path == "/logout" || path.starts_with("/api/v1/tokens") {
        pages::auth_routes(ctx, conn, principal.as_ref(), req).await
    } else if path == "/api/v1/settings" {
        settings::handle(ctx, conn, principal.as_ref(), req).await
    } else if path == "/api/v1/reset" && method == Method::POST {
        reset::handle(ctx, req).await
    } else if path == "/api/v1/update" && method == Method::POST {
        update::apply(ctx, req).await
    } else if path == "/api/v1/update/offers" && method == Method::GET {
        os_share::offers(ctx).await
    } else if path == "/api/v1/update/fetch" && method == Method::POST {
        os_share::fetch(ctx, req).await
    } else if path.starts_with("/api/v1/bundles")
        || path.starts_with("/api/v1/keys")
        || path == "/api/v1/storage"
    {
        match node.bundle_store() {
            Some((store, dir)) => match bundles::handle(store, dir, req).await {
                Some(r) => {
                    if method != Method::GET && r.status().is_success() {
                        // A key added or revoked changes what is shared too.
                        ctx.share.invalidate();
                        if path.starts_with("/api/v1/bundles") {
                            node.bundles_changed();
                        }
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
    } else if path.starts_with("/api/v1/local-services") || path.starts_with("/api/v1/services/") {
        match node.services() {
            Some(svc) => match services::handle(svc, req).await {
                Some(r) => r,
                None => route(node.as_ref(), &method, &path),
            },
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "services_unavailable",
                "the service supervisor is not running; see the agent's log",
            ),
        }
    } else if matches!(method, Method::GET | Method::HEAD) && path == "/" {
        html(panel::status_page(&ctx.status()))
    } else if method == Method::GET && path == "/api/v1/status" {
        json(StatusCode::OK, &ctx.status())
    } else if discovery::owns(&path) {
        discovery::handle(node.discovery(), req).await
    } else {
        route(node.as_ref(), &method, &path)
    }
}

/// Serve plain HTTP/1.1 on `listener` until `shutdown` resolves, with the
/// node's admin token as the only credential and no HTTPS.
pub async fn serve(
    listener: TcpListener,
    node: Arc<dyn Node>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let l = Listeners {
        http: Some(listener),
        https: None,
    };
    serve_all(l, node, Options::default(), shutdown).await
}

/// Serve on every listener until `shutdown` resolves.
pub async fn serve_all(
    listeners: Listeners,
    node: Arc<dyn Node>,
    opts: Options,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let https_port = listeners
        .https
        .as_ref()
        .and_then(|(l, _)| l.local_addr().ok())
        .map(|a| opts.public_https_port.unwrap_or(a.port()));
    let ctx = Arc::new(Ctx {
        auth: auth::Auth::new(node.admin_token(), opts.admin, opts.state_dir.as_deref()),
        metrics: metrics::Metrics::new(),
        node,
        https_port,
        allow_plain_http: std::sync::atomic::AtomicBool::new(opts.allow_plain_http),
        settings: opts.settings.map(settings::Store::new),
        idle: opts.idle.unwrap_or(io::IDLE),
        argon2_gate: tokio::sync::Semaphore::new(1),
        share: share::Share::default(),
        conns: conns::Table::new(opts.conn_limits.unwrap_or_default()),
        rate: rate::Rate::new(opts.rate.unwrap_or_default()),
        status_cache: std::sync::Mutex::new(None),
    });
    let sampler = tokio::spawn(metrics::sample_forever(ctx.clone()));
    accept::run(listeners, ctx, shutdown).await;
    sampler.abort();
}

/// The peer's address as the rate limiter keys it (IPv4-mapped unwrapped).
pub fn peer_ip(conn: &Conn) -> IpAddr {
    match conn.peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        ip => ip,
    }
}

/// Ask PID 1 (`nuvol init`) to reboot the box: it reboots on SIGTERM
/// (stopping the agent first). Only meaningful when the agent runs under
/// nuvol init.
pub fn ask_init_to_reboot() -> Result<(), String> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(1),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| format!("signalling PID 1: {e}"))
}
