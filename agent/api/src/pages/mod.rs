//! The logged-in panel: server-rendered pages, the login/logout flow, API
//! tokens, and the small JSON routes the panel and `nuvol ctl` use.
//!
//! Pages work without JavaScript: actions are plain `<form method=post>`
//! to the JSON API with the session's CSRF token and a `back=` page in the
//! action URL; for such browser posts the answer is turned into a redirect
//! back (or an HTML error page) by [`form_result`]. `/panel.js` only adds
//! live updates (dashboard refresh, log follow).

mod bundles;
mod community;
mod dashboard;
mod forms;
pub(crate) mod frame;
mod login;
mod render;
mod services;
mod settings;
mod system;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::auth::{self, Principal};
use crate::{error, html, json, parse, redirect, Conn, Ctx, Resp};

pub use forms::form_result;
pub use login::{auth_routes, login_page};

/// Routes that need only the request head. `None`: not ours.
pub async fn handle(
    ctx: &Arc<Ctx>,
    conn: Conn,
    principal: Option<&Principal>,
    req: &Request<Incoming>,
) -> Option<Resp> {
    let path = req.uri().path();
    let m = req.method();
    let get = *m == Method::GET || *m == Method::HEAD;
    let csrf = match principal {
        Some(Principal::Session { csrf }) => csrf.clone(),
        _ => String::new(),
    };
    let csrf_opt = (!csrf.is_empty()).then_some(csrf.as_str());
    let host = || ctx.status().hostname;
    let pg = |title: &str, active: &str, body: String| {
        Some(html(frame::page(&host(), title, active, csrf_opt, &body)))
    };
    match (path, get) {
        ("/panel.js", true) => Some(
            hyper::Response::builder()
                .header("content-type", "text/javascript; charset=utf-8")
                .header("cache-control", "max-age=3600")
                .body(crate::full(frame::PANEL_JS))
                .unwrap_or_else(|_| hyper::Response::new(crate::full(""))),
        ),
        ("/dashboard", true) => pg("Dashboard", "/dashboard", dashboard::dashboard(ctx)),
        ("/community", true) => pg("Community", "/community", community::community(ctx)),
        ("/services", true) => pg(
            "Services on this box",
            "/services",
            services::services(ctx, &csrf),
        ),
        ("/bundles", true) => {
            let refresh = parse::form_get(req.uri().query().unwrap_or(""), "refresh")
                .is_some_and(|v| v == "1");
            pg(
                "Bundles",
                "/bundles",
                bundles::bundles_page(ctx, &csrf, refresh).await,
            )
        }
        ("/network", true) => pg("Network", "/network", system::network(ctx)),
        ("/settings", true) => pg("Settings", "/settings", settings::settings(ctx, &csrf)),
        ("/update", true) => pg("Update", "/update", system::update(ctx, &csrf)),
        ("/metrics", true) => {
            let bundles = match ctx.node.bundle_store() {
                Some((s, _)) => tokio::task::spawn_blocking(move || {
                    s.list().map(|l| l.bundles.len() + l.broken.len()).ok()
                })
                .await
                .ok()
                .flatten(),
                None => None,
            };
            Some(
                hyper::Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("cache-control", "no-store")
                    .body(crate::full(crate::metrics::render(ctx, bundles)))
                    .unwrap_or_else(|_| hyper::Response::new(crate::full(""))),
            )
        }
        ("/api/v1/openapi.json", true) => Some(json(
            StatusCode::OK,
            &crate::routes::openapi(&ctx.status().version, ctx.node.test_hooks()),
        )),
        ("/api/v1/history", true) => Some(json(
            StatusCode::OK,
            &json!({ "every_s": crate::metrics::SAMPLE_EVERY.as_secs(), "samples": ctx.metrics.history() }),
        )),
        ("/api/v1/session", true) => Some(json(
            StatusCode::OK,
            &match principal {
                Some(Principal::Session { csrf }) => json!({ "auth": "session", "csrf": csrf }),
                _ => json!({ "auth": "bearer" }),
            },
        )),
        ("/api/v1/update", true) => Some(json(
            StatusCode::OK,
            &ctx.node.update_status().unwrap_or_else(|| {
                json!({
                    "available": false,
                    "message": "this agent cannot update its OS",
                    "running_slot": system::running_slot(),
                })
            }),
        )),
        ("/api/v1/debug/login", true) if ctx.node.test_hooks() => {
            let q = req.uri().query().unwrap_or("");
            let token = parse::form_get(q, "token").unwrap_or_default();
            let next = parse::form_get(q, "next").unwrap_or_else(|| "/dashboard".into());
            if !ctx.auth.check_bearer(&token) {
                return Some(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "wrong token",
                ));
            }
            let Ok((id, _)) = ctx.auth.new_session() else {
                return Some(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "no session",
                ));
            };
            let mut r = redirect(StatusCode::SEE_OTHER, parse::safe_next(&next));
            if let Ok(v) = hyper::header::HeaderValue::from_str(&auth::set_cookie(&id, conn.tls)) {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            Some(r)
        }
        ("/api/v1/system/reboot", false) if *m == Method::POST => Some(match ctx.node.reboot() {
            Ok(true) => {
                tracing::warn!("reboot requested through the API");
                json(StatusCode::ACCEPTED, &json!({ "rebooting": true }))
            }
            Ok(false) => json(
                StatusCode::ACCEPTED,
                &json!({ "rebooting": false, "message": "not running under nuvol init: nothing was rebooted" }),
            ),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "reboot_failed", &e),
        }),
        _ => None,
    }
}
