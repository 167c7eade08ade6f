//! This box's running services (the supervisor) and their logs.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/v1/local-services` | every service on this box: name, bundle version, state, health, restarts, last exit (OOM included), pid, memory and CPU use |
//! | `GET /api/v1/services/NAME` | one service |
//! | `POST /api/v1/services/NAME/start` | start it (and its dependencies) |
//! | `POST /api/v1/services/NAME/stop` | SIGTERM, grace, SIGKILL of its cgroup; stays stopped until started |
//! | `POST /api/v1/services/NAME/restart` | restart now (no backoff), or start if stopped |
//! | `GET /api/v1/services/NAME/logs?lines=N&follow=1` | `text/plain`, one line per log line; with `follow=1` a chunked stream that stays open and sends new lines as they come |
//!
//! Plain `GET /api/v1/services` (no name) is the community catalog and is
//! not routed here. Log lines the supervisor writes itself (`started, pid N`,
//! `exited: …`, `restarting in …`) are prefixed with `[nuvol] `.
//! Errors are the crate's JSON errors: `unknown_service` (404),
//! `bad_request` (400), `service_error` (409/500).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use nuvol_supervisor::{LogFollower, LogLine, ServiceStatus, Stream, SupervisorError};
use serde::Serialize;

use crate::{error, full, json, Body, Resp};

/// A boxed future, so the trait stays object safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most lines one `?lines=` asks for (the memory ring holds fewer anyway).
pub const MAX_LINES: usize = 10_000;

/// One service as `GET /api/v1/local-services` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LocalService {
    #[serde(flatten)]
    pub status: ServiceStatus,
    /// The installed bundle's version (`None` for services not from a bundle).
    pub version: Option<String>,
    /// The bundle's image digest.
    pub digest: Option<String>,
    /// Why the agent could not run it (e.g. a revoked publisher key).
    pub problem: Option<String>,
}

/// What the API needs from the agent's services.
pub trait Services: Send + Sync + 'static {
    /// Every service, by name.
    fn list(&self) -> Vec<LocalService>;
    fn start<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>>;
    fn stop<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>>;
    fn restart<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), SupervisorError>>;
    /// The lines in memory, oldest first.
    fn logs(&self, name: &str) -> Result<Vec<LogLine>, SupervisorError>;
    /// The lines in memory, then new ones as they come.
    fn follow(&self, name: &str) -> Result<LogFollower, SupervisorError>;
}

fn supervisor_error(e: &SupervisorError) -> Resp {
    match e {
        SupervisorError::UnknownService(_) => {
            error(StatusCode::NOT_FOUND, "unknown_service", &e.to_string())
        }
        SupervisorError::InvalidService { .. }
        | SupervisorError::Parse(_)
        | SupervisorError::UnknownDependency { .. }
        | SupervisorError::DependencyCycle(_)
        | SupervisorError::Running(_)
        | SupervisorError::Duplicate(_) => {
            error(StatusCode::CONFLICT, "service_error", &e.to_string())
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "service_error",
            &e.to_string(),
        ),
    }
}

fn unknown(name: &str) -> Resp {
    supervisor_error(&SupervisorError::UnknownService(name.to_string()))
}

/// One log line as text (newline included).
pub fn format_line(l: &LogLine) -> String {
    match l.stream {
        Stream::Supervisor => format!("[nuvol] {}\n", l.text),
        Stream::Stdout | Stream::Stderr => format!("{}\n", l.text),
    }
}

/// `?lines=N&follow=1`; unknown keys are ignored, bad values refused.
fn log_query(query: Option<&str>) -> Result<(Option<usize>, bool), String> {
    let mut lines = None;
    let mut follow = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "lines" => match v.parse::<usize>() {
                Ok(n) => lines = Some(n.min(MAX_LINES)),
                Err(_) => return Err(format!("lines: {v:?} is not a number")),
            },
            "follow" => follow = matches!(v, "" | "1" | "true" | "yes"),
            _ => {}
        }
    }
    Ok((lines, follow))
}

fn text(body: Body) -> Resp {
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(body)
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// The last `lines` lines of the follower's backlog, then live lines, until
/// the client goes away or the service is removed.
fn follow_body(mut follower: LogFollower, lines: Option<usize>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut skip = lines.map_or(0, |n| follower.backlog_len().saturating_sub(n));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                line = follower.next() => {
                    let Some(line) = line else { break };
                    if skip > 0 {
                        skip -= 1;
                        continue;
                    }
                    if tx.send(Bytes::from(format_line(&line))).await.is_err() {
                        break;
                    }
                }
                _ = tx.closed() => break,
            }
        }
    });
    crate::channel_body(rx)
}

fn find(svc: &dyn Services, name: &str) -> Option<LocalService> {
    svc.list().into_iter().find(|s| s.status.name == name)
}

/// Answer a request under `/api/v1/local-services` or `/api/v1/services/NAME…`;
/// `None` for any other path (the caller answers 404).
pub async fn handle<B>(svc: Arc<dyn Services>, req: Request<B>) -> Option<Resp> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/api/v1/local-services" || path == "/api/v1/local-services/" {
        return Some(if method == Method::GET {
            json(StatusCode::OK, &svc.list())
        } else {
            not_allowed(&method, &path)
        });
    }
    let rest = path.strip_prefix("/api/v1/services/")?;
    let mut parts = rest.splitn(2, '/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let action = parts.next();
    if name.len() > 63 {
        return Some(unknown(name));
    }
    let resp = match (action, &method) {
        (None | Some(""), &Method::GET) => match find(svc.as_ref(), name) {
            Some(s) => json(StatusCode::OK, &s),
            None => unknown(name),
        },
        (Some(a @ ("start" | "stop" | "restart")), &Method::POST) => {
            let r = match a {
                "start" => svc.start(name).await,
                "stop" => svc.stop(name).await,
                _ => svc.restart(name).await,
            };
            match r {
                Ok(()) => match find(svc.as_ref(), name) {
                    Some(s) => json(StatusCode::OK, &s),
                    None => unknown(name),
                },
                Err(e) => supervisor_error(&e),
            }
        }
        (Some("logs"), &Method::GET) => {
            let (lines, follow) = match log_query(req.uri().query()) {
                Ok(q) => q,
                Err(msg) => return Some(error(StatusCode::BAD_REQUEST, "bad_request", &msg)),
            };
            if follow {
                match svc.follow(name) {
                    Ok(f) => text(follow_body(f, lines)),
                    Err(e) => supervisor_error(&e),
                }
            } else {
                match svc.logs(name) {
                    Ok(all) => {
                        let from = lines.map_or(0, |n| all.len().saturating_sub(n));
                        let body: String = all[from..].iter().map(format_line).collect();
                        text(full(body))
                    }
                    Err(e) => supervisor_error(&e),
                }
            }
        }
        (None | Some("" | "start" | "stop" | "restart" | "logs"), _) => not_allowed(&method, &path),
        _ => return None,
    };
    Some(resp)
}

fn not_allowed(method: &Method, path: &str) -> Resp {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {path}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_query_parses_and_bounds() {
        assert_eq!(log_query(None).ok(), Some((None, false)));
        assert_eq!(
            log_query(Some("lines=5&follow=1")).ok(),
            Some((Some(5), true))
        );
        assert_eq!(
            log_query(Some("follow=0&lines=999999999")).ok(),
            Some((Some(MAX_LINES), false))
        );
        assert_eq!(log_query(Some("follow&x=y")).ok(), Some((None, true)));
        assert!(log_query(Some("lines=-3")).is_err());
    }

    #[test]
    fn supervisor_lines_are_marked() {
        let l = |stream, text: &str| LogLine {
            seq: 1,
            ts_ms: 0,
            stream,
            text: text.into(),
        };
        assert_eq!(format_line(&l(Stream::Stdout, "hi")), "hi\n");
        assert_eq!(
            format_line(&l(Stream::Supervisor, "started, pid 3")),
            "[nuvol] started, pid 3\n"
        );
    }
}
