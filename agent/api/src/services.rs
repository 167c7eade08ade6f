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
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use nuvol_bundle::manifest::Port;
use nuvol_supervisor::{
    ExitReason, ExitRecord, ExitStatus, Health, LogFollower, LogLine, ServiceStatus, State, Stream,
    SupervisorError,
};
use serde::Serialize;

use crate::{error, full, human, json, Body, Resp};

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
    /// Why it does not run yet, when nothing is wrong: a service that
    /// spans boxes waiting for its cluster to be decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The supervisor's clock when this was read, in the milliseconds of
    /// `started_ms` and `last_exit.at_ms` (`None` without a supervisor).
    pub now_ms: Option<u64>,
    /// The ports its manifest declares.
    pub ports: Vec<Port>,
}

/// What a service is doing, in the words the panel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Waiting to be restarted, crash-looping or unhealthy.
    Failing,
    /// Ended in failure; its restart policy does not restart it.
    Failed,
    /// The agent cannot run it (a revoked key, a bad bundle, no cgroups).
    Broken,
    /// Not started yet, for a reason that is not trouble: its cluster is
    /// being decided (other boxes must install it too).
    Waiting,
    Starting,
    Running,
    Stopping,
    Stopped,
}

impl Condition {
    /// The word on the page.
    pub fn word(self) -> &'static str {
        match self {
            Condition::Failing => "failing",
            Condition::Failed => "failed",
            Condition::Broken => "broken",
            Condition::Waiting => "waiting",
            Condition::Starting => "starting",
            Condition::Running => "running",
            Condition::Stopping => "stopping",
            Condition::Stopped => "stopped",
        }
    }

    /// Whether the owner should hear about it (a dashboard alert).
    pub fn is_trouble(self) -> bool {
        matches!(
            self,
            Condition::Failing | Condition::Failed | Condition::Broken
        )
    }
}

/// A run that ended this recently, after at least [`CRASH_LOOP_RESTARTS`]
/// restarts, makes a running service count as crash-looping (the
/// supervisor's backoff resets after a minute of running, too).
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// See [`CRASH_LOOP_WINDOW`].
pub const CRASH_LOOP_RESTARTS: u32 = 2;

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// How a run ended, in words: `exit code 1`, `killed by signal 9
/// (SIGKILL)`, `killed by the OOM killer`, `unhealthy: …`, `failed to
/// start: …`, `stopped on request`.
pub fn exit_text(e: &ExitRecord) -> String {
    let how = match e.status {
        Some(ExitStatus::Exited(c)) => format!("exit code {c}"),
        Some(ExitStatus::Signaled(s)) => match signal_name(s) {
            Some(n) => format!("killed by signal {s} ({n})"),
            None => format!("killed by signal {s}"),
        },
        None => String::new(),
    };
    let with_detail = |what: &str| match (e.detail.trim(), how.is_empty()) {
        ("", true) => what.to_string(),
        ("", false) => format!("{what} ({how})"),
        (d, true) => format!("{what}: {d}"),
        (d, false) => format!("{what}: {d} ({how})"),
    };
    match e.reason {
        ExitReason::Exited if how.is_empty() => with_detail("exited"),
        ExitReason::Exited => how.clone(),
        ExitReason::OomKilled => "killed by the OOM killer".to_string(),
        ExitReason::Unhealthy => with_detail("unhealthy"),
        ExitReason::Stopped => "stopped on request".to_string(),
        ExitReason::Restarted => "restarted on request".to_string(),
        ExitReason::StartFailed => with_detail("failed to start"),
    }
}

impl LocalService {
    fn since(&self, at_ms: u64) -> Option<Duration> {
        self.now_ms
            .map(|now| Duration::from_millis(now.saturating_sub(at_ms)))
    }

    /// How long the current run has lasted (running services only).
    pub fn uptime(&self) -> Option<Duration> {
        if !matches!(self.status.state, State::Running | State::Stopping) {
            return None;
        }
        self.since(*self.status.started_ms.last()?)
    }

    /// How long ago the last run ended.
    pub fn last_exit_ago(&self) -> Option<Duration> {
        let e = self.status.last_exit.as_ref()?;
        // 0: a status made up for a bundle the supervisor never ran
        (e.at_ms > 0).then(|| self.since(e.at_ms)).flatten()
    }

    /// Time left before the supervisor restarts it (waiting services only).
    pub fn restart_in(&self) -> Option<Duration> {
        if self.status.state != State::Backoff {
            return None;
        }
        let at = self.status.last_exit.as_ref()?.at_ms;
        let due = at.saturating_add(*self.status.backoff_ms.last()?);
        Some(Duration::from_millis(due.saturating_sub(self.now_ms?)))
    }

    /// What it is doing, with the reason when that is not plain
    /// (`restarting in 4.0 s, last exit: exit code 1`).
    pub fn condition(&self) -> (Condition, String) {
        let st = &self.status;
        let exit = st.last_exit.as_ref();
        let last = exit.map(exit_text).unwrap_or_default();
        let unrequested =
            exit.is_some_and(|e| !matches!(e.reason, ExitReason::Stopped | ExitReason::Restarted));
        let live = matches!(st.state, State::Running | State::Starting);
        if let (Some(p), false) = (&self.problem, live) {
            return (Condition::Broken, p.clone());
        }
        if let (Some(w), false) = (&self.waiting, live) {
            return (Condition::Waiting, w.clone());
        }
        let crash_looping = live
            && unrequested
            && st.restarts >= CRASH_LOOP_RESTARTS
            && self.last_exit_ago().is_some_and(|a| a < CRASH_LOOP_WINDOW);
        match st.state {
            State::Backoff => {
                let mut d = match self.restart_in() {
                    Some(t) => format!("restarting in {}", human::duration(t)),
                    None => "waiting to restart".to_string(),
                };
                if !last.is_empty() {
                    d.push_str(&format!(", last exit: {last}"));
                }
                (Condition::Failing, d)
            }
            _ if crash_looping => (
                Condition::Failing,
                format!(
                    "crash-looping: restarted {} times, last exit: {last}",
                    st.restarts
                ),
            ),
            State::Running if st.health == Health::Unhealthy => (
                Condition::Failing,
                format!(
                    "unhealthy: {}",
                    st.last_health_error
                        .as_deref()
                        .unwrap_or("health check failed")
                ),
            ),
            State::Running if st.health == Health::Unknown => (
                Condition::Starting,
                match &st.last_health_error {
                    Some(e) => format!("health check not passing yet: {e}"),
                    None => "waiting for its first health check".to_string(),
                },
            ),
            State::Running => (Condition::Running, String::new()),
            State::Starting => (Condition::Starting, String::new()),
            State::Stopping => (Condition::Stopping, String::new()),
            State::Stopped => (Condition::Stopped, last),
            State::Exited => match exit.map(|e| (e.reason, e.status)) {
                Some((ExitReason::Exited, Some(ExitStatus::Exited(0)))) => {
                    (Condition::Stopped, "finished: exit code 0".to_string())
                }
                _ => (
                    Condition::Failed,
                    format!("{last}; its restart policy does not restart it"),
                ),
            },
        }
    }
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
    fn exits_in_words() {
        let e = |reason, status, detail: &str| {
            exit_text(&ExitRecord {
                at_ms: 1,
                reason,
                status,
                detail: detail.into(),
            })
        };
        use ExitReason::*;
        assert_eq!(e(Exited, Some(ExitStatus::Exited(3)), ""), "exit code 3");
        assert_eq!(
            e(Exited, Some(ExitStatus::Signaled(9)), ""),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            e(Exited, Some(ExitStatus::Signaled(40)), ""),
            "killed by signal 40"
        );
        assert_eq!(
            e(Exited, None, "wait task panicked"),
            "exited: wait task panicked"
        );
        assert_eq!(
            e(
                OomKilled,
                Some(ExitStatus::Signaled(9)),
                "killed by the OOM killer (1 kills)"
            ),
            "killed by the OOM killer"
        );
        assert_eq!(
            e(
                Unhealthy,
                Some(ExitStatus::Signaled(15)),
                "connect: refused"
            ),
            "unhealthy: connect: refused (killed by signal 15 (SIGTERM))"
        );
        assert_eq!(
            e(StartFailed, None, "no such image"),
            "failed to start: no such image"
        );
        assert_eq!(e(StartFailed, None, " "), "failed to start");
        assert_eq!(
            e(Stopped, Some(ExitStatus::Exited(0)), "stop requested"),
            "stopped on request"
        );
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
