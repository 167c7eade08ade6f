//! Discovery routes: members, services nearest first, and events.
//!
//! - `GET /api/v1/members` — every gossip member with status, tags, zone,
//!   role and RTTs
//! - `GET /api/v1/services?type=_http._tcp&near=1&zone=Z&healthy=1` — the
//!   catalog: one entry per service with the `sources` it was seen through
//!   (gossip `svc:` tags, Cloudy `services` tags, mDNS)
//! - `GET /api/v1/events` — Server-Sent Events: join, leave, failed,
//!   update, reap, user, query
//! - `POST /api/v1/events` `{"name": "...", "payload": "...", "coalesce": false}`
//!   — send a Serf user event
//!
//! The JSON shapes are documented in docs/discovery.md (`nuvol ctl` reads
//! them). All of these need the admin token (`handle()` enforces it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use nuvol_catalog::{DiscoveryHandle, LoggedEvent, ServiceQuery};
use nuvol_gossip::{Event, Member};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::{error, json, Resp};

/// Most event streams open at once (each holds a task and a queue).
pub const MAX_EVENT_STREAMS: usize = 16;
/// Largest `POST /api/v1/events` body.
pub const MAX_EVENT_BODY: usize = 4096;
/// Comment line sent when nothing happened for this long (keeps proxies and
/// the panel's EventSource from timing out, and notices closed clients).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Whether `path` is one of ours. `/api/v1/services/…` (local supervised
/// services) and `/api/v1/local-services` are not.
pub fn owns(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/members" | "/api/v1/services" | "/api/v1/events"
    )
}

/// Answer one discovery request.
pub async fn handle(d: Option<DiscoveryHandle>, req: Request<Incoming>) -> Resp {
    let allowed = matches!(
        (req.method(), req.uri().path()),
        (
            &Method::GET,
            "/api/v1/members" | "/api/v1/services" | "/api/v1/events"
        ) | (&Method::POST, "/api/v1/events")
    );
    if !allowed {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed on {}", req.method(), req.uri().path()),
        );
    }
    let Some(d) = d else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "discovery_off",
            "discovery is not running (see [discovery] in nuvol.toml and the agent's log)",
        );
    };
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/v1/members") => json(StatusCode::OK, &d.members()),
        (Method::GET, "/api/v1/services") => match parse_query(&query) {
            Ok(q) => json(StatusCode::OK, &d.services(&q)),
            Err(m) => error(StatusCode::BAD_REQUEST, "bad_query", &m),
        },
        (Method::GET, "/api/v1/events") => {
            let last_id = req
                .headers()
                .get("last-event-id")
                .map(|v| v.to_str().unwrap_or("").to_string());
            match parse_since(&query, last_id.as_deref()) {
                Ok(since) => event_stream(&d, since),
                Err(m) => error(StatusCode::BAD_REQUEST, "bad_query", &m),
            }
        }
        (Method::POST, "/api/v1/events") => send_event(&d, req).await,
        (m, p) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{m} is not allowed on {p}"),
        ),
    }
}

/// `type=_http._tcp&near=1&zone=Z&healthy=1`; unknown keys are refused so
/// typos show.
pub fn parse_query(q: &str) -> Result<ServiceQuery, String> {
    if q.len() > 1024 {
        return Err("query string too long".into());
    }
    let mut out = ServiceQuery::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| format!("bad %-escape in {k}"))?;
        let flag = |v: &str| match v {
            "" | "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(format!("{k}={v}: want 1 or 0")),
        };
        match k {
            "type" => out.service_type = Some(v),
            "near" => out.near = flag(&v)?,
            "zone" => out.zone = Some(v),
            "healthy" => out.healthy_only = flag(&v)?,
            _ => {
                return Err(format!(
                    "unknown parameter {k:?} (known: type, near, zone, healthy)"
                ))
            }
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEventReq {
    name: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    coalesce: bool,
}

async fn send_event(d: &DiscoveryHandle, req: Request<Incoming>) -> Resp {
    let body = match crate::body_within(req.into_body(), MAX_EVENT_BODY).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ev: UserEventReq = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                &format!("want {{\"name\", \"payload\", \"coalesce\"}}: {e}"),
            )
        }
    };
    if ev.name.is_empty() || ev.name.starts_with("_serf") {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "event name must be non-empty and not start with _serf",
        );
    }
    match d.user_event(&ev.name, ev.payload.as_bytes(), ev.coalesce) {
        Ok(()) => json(StatusCode::ACCEPTED, &serde_json::json!({"sent": true})),
        Err(e) => error(StatusCode::BAD_REQUEST, "event_refused", &e.to_string()),
    }
}

fn member_json(m: &Member) -> serde_json::Value {
    let v = nuvol_catalog::member_views(std::slice::from_ref(m));
    v.first()
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// One event as an SSE frame (`event: <type>` + one `data:` JSON line).
pub fn sse_frame(e: &Event) -> String {
    let (ty, data) = event_json(e);
    // serde_json::to_string never emits raw newlines, so one data line holds it
    format!("event: {ty}\ndata: {data}\n\n")
}

/// A logged event as an SSE frame with its `id:` (what a reconnecting
/// client sends back as `Last-Event-ID`); the data also carries `id` and
/// `at_unix_ms`.
pub fn sse_logged_frame(e: &LoggedEvent) -> String {
    let (ty, mut data) = event_json(&e.event);
    if let Some(o) = data.as_object_mut() {
        o.insert("id".into(), e.id.into());
        o.insert("at_unix_ms".into(), e.at_unix_ms.into());
    }
    format!("id: {}\nevent: {ty}\ndata: {data}\n\n", e.id)
}

/// The SSE event type and JSON data of one event (also the panel's
/// "Recent events").
pub fn event_json(e: &Event) -> (&'static str, serde_json::Value) {
    match e {
        Event::Join(m) => ("join", serde_json::json!({ "member": member_json(m) })),
        Event::Leave(m) => ("leave", serde_json::json!({ "member": member_json(m) })),
        Event::Failed(m) => ("failed", serde_json::json!({ "member": member_json(m) })),
        Event::Update(m) => ("update", serde_json::json!({ "member": member_json(m) })),
        Event::Reap(m) => ("reap", serde_json::json!({ "member": member_json(m) })),
        Event::User {
            ltime,
            name,
            payload,
            coalesce,
        } => (
            "user",
            serde_json::json!({
                "ltime": ltime,
                "name": name,
                "payload": String::from_utf8_lossy(payload),
                "coalesce": coalesce,
            }),
        ),
        Event::Query(q) => (
            "query",
            serde_json::json!({
                "ltime": q.ltime,
                "id": q.id,
                "name": q.name,
                "payload": String::from_utf8_lossy(&q.payload),
                "from": q.source_node,
            }),
        ),
    }
}

struct StreamGuard;
impl Drop for StreamGuard {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `since=N` of `GET /api/v1/events`, or the SSE `Last-Event-ID` header
/// (which wins: it is what a reconnecting EventSource sends).
pub fn parse_since(query: &str, last_event_id: Option<&str>) -> Result<Option<u64>, String> {
    if let Some(h) = last_event_id {
        return h
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("Last-Event-ID {h:?}: want an event id (a number)"));
    }
    let mut since = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("since", v) => {
                since = Some(
                    v.parse()
                        .map_err(|_| format!("since={v:?}: want an event id (a number)"))?,
                )
            }
            (k, _) => return Err(format!("unknown parameter {k:?} (known: since)")),
        }
    }
    Ok(since)
}

fn event_stream(d: &DiscoveryHandle, since: Option<u64>) -> Resp {
    if OPEN_STREAMS.fetch_add(1, Ordering::Relaxed) >= MAX_EVENT_STREAMS {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            &format!("at most {MAX_EVENT_STREAMS} event streams at once"),
        );
    }
    let guard = StreamGuard;
    // subscribe before reading the backlog, then skip what the backlog had:
    // nothing falls between the two
    let mut rx = d.logged_events();
    let backlog = match since {
        Some(_) => d.recent_events(since),
        None => Vec::new(),
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _guard = guard;
        let mut last = since.unwrap_or(0);
        let mut out = String::from(": nuvol events\n\n");
        if let (Some(s), Some(first)) = (since, backlog.first()) {
            if first.id > s + 1 {
                // the ring no longer holds everything after `since`
                out.push_str(&format!(
                    "event: lagged\ndata: {{\"missed\":{}}}\n\n",
                    first.id - s - 1
                ));
            }
        }
        for e in &backlog {
            out.push_str(&sse_logged_frame(e));
            last = e.id;
        }
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                // the client went away: free the slot now, not at the next event
                _ = tx.closed() => return,
                r = tokio::time::timeout(KEEPALIVE, rx.recv()) => r,
            };
            let frame = match next {
                Err(_) => ": keepalive\n\n".to_string(),
                Ok(Ok(e)) if e.id <= last => continue,
                Ok(Ok(e)) => {
                    last = e.id;
                    sse_logged_frame(&e)
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    format!("event: lagged\ndata: {{\"missed\":{n}}}\n\n")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            };
            if tx.send(Bytes::from(frame)).await.is_err() {
                return; // client went away
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-store")
        .body(crate::channel_body(body_rx))
        .unwrap_or_else(|_| Response::new(crate::full(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query("type=_http._tcp&near=1&zone=bcn%2D1").unwrap();
        assert_eq!(q.service_type.as_deref(), Some("_http._tcp"));
        assert!(q.near && !q.healthy_only);
        assert_eq!(q.zone.as_deref(), Some("bcn-1"));
        assert_eq!(parse_query("").unwrap(), ServiceQuery::default());
        assert!(parse_query("near=maybe").is_err());
        assert!(parse_query("tpye=x").unwrap_err().contains("tpye"));
        assert!(parse_query("type=%zz").is_err());
        assert!(parse_query(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn routes_owned() {
        assert!(owns("/api/v1/members") && owns("/api/v1/services") && owns("/api/v1/events"));
        assert!(!owns("/api/v1/services/web") && !owns("/api/v1/local-services"));
    }

    #[test]
    fn sse_frames_are_one_data_line() {
        let f = sse_frame(&Event::User {
            ltime: 3,
            name: "deploy".into(),
            payload: b"line1\nline2".to_vec(),
            coalesce: false,
        });
        assert!(f.starts_with("event: user\ndata: {"), "{f}");
        assert_eq!(f.matches('\n').count(), 3, "{f}");
        let v: serde_json::Value =
            serde_json::from_str(f.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(v["payload"], "line1\nline2");
    }

    #[test]
    fn logged_frames_carry_their_id() {
        let log = nuvol_catalog::EventLog::new();
        log.push(Event::User {
            ltime: 1,
            name: "a".into(),
            payload: Vec::new(),
            coalesce: true,
        });
        let e = &log.since(None)[0];
        let f = sse_logged_frame(e);
        assert!(f.starts_with("id: 1\nevent: user\ndata: {"), "{f}");
        let v: serde_json::Value =
            serde_json::from_str(f.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(v["id"], 1);
        assert!(v["at_unix_ms"].as_u64().is_some());
    }

    #[test]
    fn since_parsing() {
        assert_eq!(parse_since("", None), Ok(None));
        assert_eq!(parse_since("since=7", None), Ok(Some(7)));
        assert_eq!(parse_since("since=7", Some(" 9 ")), Ok(Some(9)));
        assert!(parse_since("since=x", None).unwrap_err().contains("since"));
        assert!(parse_since("snice=1", None).unwrap_err().contains("snice"));
        assert!(parse_since("", Some("abc"))
            .unwrap_err()
            .contains("Last-Event-ID"));
    }
}
