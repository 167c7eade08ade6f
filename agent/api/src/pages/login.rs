//! Logging in and out, and the API tokens (`/login`, `/logout`,
//! `/api/v1/tokens…`): the routes that read a body.

use std::fmt::Write;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use super::frame::page;
use crate::auth::{self, LoginError, Principal};
use crate::panel::esc;
use crate::{error, html, html_status, json, parse, redirect, Conn, Ctx, Resp};

/// The login form (shown with 401 on any page when not logged in).
pub fn login_page(host: &str, next: &str, msg: Option<&str>) -> String {
    let mut b = String::new();
    if let Some(m) = msg {
        let _ = write!(b, "<div class=warn id=login-error>{}</div>", esc(m));
    }
    let _ = write!(
        b,
        "<form method=post action=\"/login\" id=login><input type=hidden name=next value=\"{}\">\
<p><label for=secret>Admin password, or the admin token shown on the console at first boot</label><br>\
<input type=password id=secret name=secret autocomplete=current-password required autofocus size=40></p>\
<p><button>Log in</button></p></form><p><a href=\"/\">Status page</a></p>",
        esc(parse::safe_next(next))
    );
    page(host, "Log in", "", None, &b)
}

/// `/login`, `/logout` and `/api/v1/tokens…` (these read the body).
pub async fn auth_routes(
    ctx: &Arc<Ctx>,
    conn: Conn,
    principal: Option<&Principal>,
    req: Request<Incoming>,
) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let host = ctx.status().hostname;
    match (method.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/login") => {
            let next = parse::form_get(&query, "next").unwrap_or_else(|| "/dashboard".into());
            html(login_page(&host, &next, None))
        }
        ("POST", "/login") => {
            let body = match crate::small_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let form = String::from_utf8_lossy(&body);
            let secret = parse::form_get(&form, "secret").unwrap_or_default();
            let next = parse::form_get(&form, "next").unwrap_or_else(|| "/dashboard".into());
            let next = parse::safe_next(&next).to_string();
            let login = {
                let _gate = ctx.argon2_gate.acquire().await;
                let c = ctx.clone();
                let ip = crate::peer_ip(&conn);
                tokio::task::spawn_blocking(move || c.auth.login(ip, &secret))
                    .await
                    .unwrap_or(Err(LoginError::Closed))
            };
            match login {
                Ok((id, _)) => {
                    let mut r = redirect(StatusCode::SEE_OTHER, &next);
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&auth::set_cookie(&id, conn.tls)) {
                        r.headers_mut().insert(hyper::header::SET_COOKIE, v);
                    }
                    tracing::info!(peer = %conn.peer, "panel login");
                    r
                }
                Err(LoginError::RateLimited(d)) => {
                    tracing::warn!(peer = %conn.peer, "login rate-limited");
                    let mut r = html_status(
                        StatusCode::TOO_MANY_REQUESTS,
                        login_page(&host, &next, Some(&format!("Too many failed logins from your address; try again in {} s.", d.as_secs() + 1))),
                    );
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&(d.as_secs() + 1).to_string()) {
                        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
                    }
                    r
                }
                Err(LoginError::Wrong) => {
                    tracing::warn!(peer = %conn.peer, "failed panel login");
                    html_status(StatusCode::UNAUTHORIZED, login_page(&host, &next, Some("Wrong password or token.")))
                }
                Err(LoginError::Closed) => html_status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    login_page(&host, &next, Some("Login is closed: no admin token or password is set up; see the console.")),
                ),
            }
        }
        ("POST", "/logout") => {
            if let Some(id) = auth::session_cookie(req.headers()) {
                ctx.auth.logout(&id);
            }
            let mut r = redirect(StatusCode::SEE_OTHER, "/");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&auth::clear_cookie(conn.tls)) {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            r
        }
        ("GET" | "HEAD", "/api/v1/tokens") => {
            json(StatusCode::OK, &json!({ "tokens": ctx.auth.list_tokens() }))
        }
        ("POST", "/api/v1/tokens") => {
            let body = match crate::small_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let name = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                .or_else(|| parse::form_get(&String::from_utf8_lossy(&body), "name"))
                .unwrap_or_default();
            match ctx.auth.create_token(&name) {
                Ok((info, secret)) => {
                    tracing::info!(id = %info.id, name = %info.name, "API token created");
                    json(
                        StatusCode::CREATED,
                        &json!({ "id": info.id, "name": info.name, "created": info.created, "token": secret }),
                    )
                }
                Err(e) => {
                    let st = match e {
                        auth::AuthError::Io { .. } | auth::AuthError::Random(_) => {
                            StatusCode::INTERNAL_SERVER_ERROR
                        }
                        auth::AuthError::TooManyTokens => StatusCode::CONFLICT,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    error(st, e.code(), &e.to_string())
                }
            }
        }
        (m, p) => {
            let rest: Vec<&str> = p.trim_end_matches('/').split('/').skip(4).collect();
            match (m, rest.as_slice()) {
                ("DELETE", [id]) | ("POST", [id, "revoke"]) if principal.is_some() => {
                    match ctx.auth.revoke_token(id) {
                        Ok(()) => {
                            tracing::info!(id, "API token revoked");
                            json(StatusCode::OK, &json!({ "revoked": id }))
                        }
                        Err(e @ auth::AuthError::NoSuchToken(_)) => {
                            error(StatusCode::NOT_FOUND, e.code(), &e.to_string())
                        }
                        Err(e) => {
                            error(StatusCode::INTERNAL_SERVER_ERROR, e.code(), &e.to_string())
                        }
                    }
                }
                _ if crate::routes::path_known(p, false) => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{m} is not allowed on {p}"),
                ),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no such page: {p}"),
                ),
            }
        }
    }
}
