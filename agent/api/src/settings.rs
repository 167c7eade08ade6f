//! `GET/PUT /api/v1/settings` and the settings forms of the panel: the few
//! keys an owner may change on a running box, kept in the overlay
//! `<state-dir>/settings.toml` over nuvol.toml (see
//! [`nuvol_config::overlay`] for the keys and their rules).
//!
//! - `GET` answers every key with its effective value and where it comes
//!   from (`default`, `nuvol.toml` or `settings`); the password only as
//!   `password_set`.
//! - `PUT` (or `POST`, for forms) takes a partial JSON object of dotted keys,
//!   e.g. `{"discovery.zone": "north", "panel.allow_plain_http": true}`;
//!   `null` drops a key from the overlay (nuvol.toml's value is in force
//!   again). Forms send the same keys as fields, `reset=KEY` for `null`.
//!   Changing `admin.password` needs the current credential again in
//!   `current` (the password, or the console admin token while no password
//!   is set); `confirm`, when sent, must repeat the new password.
//!   All keys are checked before anything is written; the overlay is
//!   written atomically, then applied: zone and role re-announce the gossip
//!   tags, `allow_plain_http` changes the plain-HTTP redirect, a password
//!   replaces the console token for logins and ends the other sessions.
//!   `hostname` applies at the next start of the agent.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use nuvol_config::overlay::{self, KEYS};
use nuvol_config::{Config, SettingError, Settings};
use serde_json::{json, Map, Value};

use crate::auth::{LoginError, Principal};
use crate::panel::esc;
use crate::{error, json, parse, Conn, Ctx, Resp};

/// Most keys in one change.
pub const MAX_KEYS: usize = 16;

/// What the agent hands the API about its settings.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The overlay file (`<state-dir>/settings.toml`).
    pub path: PathBuf,
    /// nuvol.toml as in force, without the overlay.
    pub base: Config,
    /// Keys nuvol.toml sets (the rest are defaults).
    pub file_keys: BTreeSet<String>,
    /// The overlay as read at start.
    pub overlay: Settings,
}

/// The settings while the server runs.
pub struct Store {
    setup: Setup,
    overlay: Mutex<Settings>,
    /// One change at a time (a change waits for argon2 and the disk).
    change: tokio::sync::Mutex<()>,
}

impl Store {
    pub fn new(setup: Setup) -> Store {
        Store {
            overlay: Mutex::new(setup.overlay.clone()),
            setup,
            change: tokio::sync::Mutex::new(()),
        }
    }

    fn overlay(&self) -> Settings {
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// nuvol.toml with the overlay in force.
    pub fn effective(&self) -> Config {
        self.overlay().apply(&self.setup.base)
    }

    fn source(&self, overlay: &Settings, key: &str) -> &'static str {
        if overlay.sets(key) {
            "settings"
        } else if self.setup.file_keys.contains(key) {
            "nuvol.toml"
        } else {
            "default"
        }
    }
}

/// The `GET /api/v1/settings` document.
pub fn view(ctx: &Ctx, store: &Store) -> Value {
    let overlay = store.overlay();
    let eff = overlay.apply(&store.setup.base);
    let mut out = Map::new();
    for k in KEYS {
        let mut v = json!({
            "source": store.source(&overlay, k.key),
            "applies": k.applies,
            "help": k.help,
        });
        match k.key {
            "discovery.zone" => v["value"] = json!(eff.discovery.zone),
            "discovery.role" => v["value"] = json!(eff.discovery.role.as_str()),
            "panel.allow_plain_http" => {
                v["value"] = json!(ctx.allow_plain_http.load(Ordering::Relaxed))
            }
            "admin.password" => v["password_set"] = json!(ctx.auth.password_set()),
            "overlay.enabled" => v["value"] = json!(eff.overlay.enabled),
            "hostname" => {
                let running = ctx.status().hostname;
                v["value"] = json!(eff.hostname());
                v["pending_restart"] = json!(running != eff.hostname());
            }
            _ => {}
        }
        out.insert(k.key.to_string(), v);
    }
    json!({ "settings": out, "file": store.setup.path.display().to_string() })
}

fn setting_error(status: StatusCode, e: &SettingError) -> Resp {
    json(
        status,
        &json!({ "error": { "code": e.code(), "message": e.to_string(), "key": e.key() } }),
    )
}

/// One requested change: the keys (`None`: drop from the overlay), and the
/// credential fields.
#[derive(Debug, Default, PartialEq)]
struct Change {
    keys: Vec<(String, Option<String>)>,
    current: Option<String>,
    confirm: Option<String>,
}

#[allow(clippy::result_large_err)] // like small_body: the error is the answer
fn parse_change(body: &[u8], form: bool) -> Result<Change, Resp> {
    let mut c = Change::default();
    if form {
        let text = String::from_utf8_lossy(body);
        for (k, v) in parse::form(&text) {
            match k.as_str() {
                "current" => c.current = Some(v),
                "confirm" => c.confirm = Some(v),
                "reset" => c.keys.push((v, None)),
                _ => c.keys.push((k, Some(v))),
            }
        }
    } else {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                &format!("the body is not JSON: {e}"),
            )
        })?;
        let Value::Object(o) = v else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_json",
                "want a JSON object of settings, e.g. {\"discovery.zone\": \"north\"}",
            ));
        };
        for (k, v) in o {
            let text = match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                Value::Bool(b) => Some(b.to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => {
                    return Err(setting_error(
                        StatusCode::BAD_REQUEST,
                        &SettingError::Invalid {
                            key: k,
                            message: "want a string, boolean, number or null".into(),
                        },
                    ))
                }
            };
            match (k.as_str(), text) {
                ("current", t) => c.current = t,
                ("confirm", t) => c.confirm = t,
                (_, t) => c.keys.push((k, t)),
            }
        }
    }
    if c.keys.len() > MAX_KEYS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "too_many_settings",
            &format!("at most {MAX_KEYS} settings at once"),
        ));
    }
    if c.keys.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "no_settings",
            "nothing to change: send settings as {\"key\": value}",
        ));
    }
    Ok(c)
}

/// `/api/v1/settings`.
pub async fn handle(
    ctx: &Arc<Ctx>,
    conn: Conn,
    principal: Option<&Principal>,
    req: Request<Incoming>,
) -> Resp {
    let Some(store) = ctx.settings.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "settings_unavailable",
            "this agent has no state directory for settings",
        );
    };
    match *req.method() {
        Method::GET | Method::HEAD => json(StatusCode::OK, &view(ctx, store)),
        Method::PUT | Method::POST => {
            let form = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
            let session = match principal {
                Some(Principal::Session { .. }) => crate::auth::session_cookie(req.headers()),
                _ => None,
            };
            let body = match crate::small_body(req.into_body()).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let change = match parse_change(&body, form) {
                Ok(c) => c,
                Err(r) => return r,
            };
            apply(ctx, store, conn, session, change).await
        }
        ref m => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{m} is not allowed on /api/v1/settings"),
        ),
    }
}

async fn apply(
    ctx: &Arc<Ctx>,
    store: &Store,
    conn: Conn,
    session: Option<String>,
    change: Change,
) -> Resp {
    let _one = store.change.lock().await;
    let before = store.overlay();
    let mut next = before.clone();
    let mut password = None;
    for (k, v) in &change.keys {
        if !overlay::known_key(k) {
            return setting_error(StatusCode::BAD_REQUEST, &SettingError::Unknown(k.clone()));
        }
        let r = match (k.as_str(), v) {
            ("admin.password", Some(pw)) => {
                password = Some(pw.clone());
                overlay::check_password(pw)
            }
            ("admin.password", None) => Err(SettingError::Invalid {
                key: k.clone(),
                message: "the password cannot be removed, only changed".into(),
            }),
            (k, v) => next.set(k, v.as_deref()),
        };
        if let Err(e) = r {
            return setting_error(StatusCode::BAD_REQUEST, &e);
        }
    }
    if let Some(pw) = &password {
        if change.confirm.as_ref().is_some_and(|c| c != pw) {
            return setting_error(
                StatusCode::BAD_REQUEST,
                &SettingError::Invalid {
                    key: "admin.password".into(),
                    message: "the confirmation does not match the new password".into(),
                },
            );
        }
        let Some(current) = change.current.clone().filter(|c| !c.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "current_required",
                "changing admin.password needs the current password (or, while none is set, the admin token) in `current`",
            );
        };
        let _gate = ctx.argon2_gate.acquire().await;
        let c = ctx.clone();
        let ip = crate::peer_ip(&conn);
        let checked = tokio::task::spawn_blocking(move || c.auth.verify_secret(ip, &current))
            .await
            .unwrap_or(Err(LoginError::Closed));
        match checked {
            Ok(()) => {}
            Err(LoginError::RateLimited(d)) => {
                return error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    &format!(
                        "too many wrong credentials from your address; try again in {} s",
                        d.as_secs() + 1
                    ),
                )
            }
            Err(LoginError::Wrong | LoginError::Closed) => {
                tracing::warn!(peer = %conn.peer, "settings: wrong current credential");
                return error(
                    StatusCode::FORBIDDEN,
                    "wrong_credential",
                    "`current` is not the current admin password (or admin token)",
                );
            }
        }
        let pw = pw.clone();
        let hashed = tokio::task::spawn_blocking(move || crate::auth::argon2_hash(&pw))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let r = match hashed {
            Ok(h) => next.set_password_hash(h),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    &format!("hashing: {e}"),
                )
            }
        };
        if let Err(e) = r {
            return setting_error(StatusCode::BAD_REQUEST, &e);
        }
    }
    let path = store.setup.path.clone();
    let to_save = next.clone();
    let saved = tokio::task::spawn_blocking(move || to_save.save(&path))
        .await
        .unwrap_or_else(|e| {
            Err(SettingError::File {
                path: store.setup.path.clone(),
                message: e.to_string(),
            })
        });
    if let Err(e) = saved {
        tracing::error!("settings: {e}");
        return setting_error(StatusCode::INTERNAL_SERVER_ERROR, &e);
    }
    *store.overlay.lock().unwrap_or_else(|p| p.into_inner()) = next.clone();
    // Apply live.
    let eff = next.apply(&store.setup.base);
    let old = before.apply(&store.setup.base);
    let mut warnings = Vec::new();
    ctx.allow_plain_http
        .store(eff.panel.allow_plain_http, Ordering::Relaxed);
    if let Some(h) = next
        .admin
        .password_hash
        .clone()
        .filter(|_| password.is_some())
    {
        ctx.auth.set_password_hash(h, session.as_deref());
    }
    if eff.discovery.zone != old.discovery.zone || eff.discovery.role != old.discovery.role {
        if let Err(e) = ctx
            .node
            .apply_discovery_settings(eff.discovery.zone.as_deref(), eff.discovery.role.as_str())
        {
            tracing::warn!("settings: discovery: {e}");
            warnings.push(format!(
                "saved, but announcing the new zone/role failed: {e}"
            ));
        }
    }
    let changed: Vec<&str> = change.keys.iter().map(|(k, _)| k.as_str()).collect();
    tracing::info!(?changed, "settings changed");
    let mut v = view(ctx, store);
    v["changed"] = json!(changed);
    v["warnings"] = json!(warnings);
    let mut restart = Vec::new();
    if eff.hostname != old.hostname {
        restart.push("hostname");
    }
    if eff.overlay.enabled != old.overlay.enabled {
        restart.push("overlay.enabled");
    }
    if !restart.is_empty() {
        v["restart_needed"] = json!(restart);
    }
    json(StatusCode::OK, &v)
}

fn source_note(s: &str) -> &'static str {
    match s {
        "settings" => "set here",
        "nuvol.toml" => "from nuvol.toml",
        _ => "default",
    }
}

/// The settings section of the `/settings` page: one form per key (works
/// without JavaScript), each showing where its value comes from.
pub fn page_section(ctx: &Ctx, csrf: &str) -> String {
    let Some(store) = ctx.settings.as_ref() else {
        return "<p>Settings are not available (no state directory).</p>".into();
    };
    let v = view(ctx, store);
    let s = &v["settings"];
    let action = esc(&crate::pages::frame::with_csrf(
        "/api/v1/settings",
        csrf,
        "/settings",
    ));
    let src = |k: &str| s[k]["source"].as_str().unwrap_or("default").to_string();
    let reset = |b: &mut String, k: &str| {
        if src(k) == "settings" {
            let _ = write!(
                b,
                " <button name=reset value=\"{k}\" formnovalidate>Back to nuvol.toml</button>"
            );
        }
    };
    let mut b = String::from("<h2>Box</h2><div class=wrap><table id=settings>");
    // Zone.
    let zone = s["discovery.zone"]["value"].as_str().unwrap_or("");
    let _ = write!(
        b,
        "<tr><th><label for=zone>Zone</label></th><td><form method=post action=\"{action}\" id=set-zone>\
<input id=zone name=discovery.zone value=\"{}\" maxlength=63 pattern=\"[A-Za-z0-9._-]*\" placeholder=\"none\"> \
<button>Save</button>",
        esc(zone)
    );
    reset(&mut b, "discovery.zone");
    let _ = write!(
        b,
        "</form></td><td class=source data-key=discovery.zone>{}</td></tr>",
        source_note(&src("discovery.zone"))
    );
    // Role.
    let role = s["discovery.role"]["value"].as_str().unwrap_or("");
    let opt = |v: &str| {
        format!(
            "<option value={v}{}>{v}</option>",
            if v == role { " selected" } else { "" }
        )
    };
    let _ = write!(
        b,
        "<tr><th><label for=role>Role</label></th><td><form method=post action=\"{action}\" id=set-role>\
<select id=role name=discovery.role>{}{}</select> <button>Save</button>",
        opt("ordinary-node"),
        opt("super-node")
    );
    reset(&mut b, "discovery.role");
    let _ = write!(
        b,
        "</form></td><td class=source data-key=discovery.role>{}</td></tr>",
        source_note(&src("discovery.role"))
    );
    // Plain HTTP.
    let plain = s["panel.allow_plain_http"]["value"]
        .as_bool()
        .unwrap_or(false);
    let _ = write!(
        b,
        "<tr><th><label for=plain>Whole panel on plain HTTP</label></th><td><form method=post action=\"{action}\" id=set-plain>\
<select id=plain name=panel.allow_plain_http><option value=false{}>no: HTTPS only (status page on HTTP)</option>\
<option value=true{}>yes (only on a LAN you trust)</option></select> <button>Save</button>",
        if plain { "" } else { " selected" },
        if plain { " selected" } else { "" }
    );
    reset(&mut b, "panel.allow_plain_http");
    let _ = write!(
        b,
        "</form></td><td class=source data-key=panel.allow_plain_http>{}</td></tr>",
        source_note(&src("panel.allow_plain_http"))
    );
    // The community overlay (opt-in; applies at the next start).
    let ov = s["overlay.enabled"]["value"].as_bool().unwrap_or(false);
    let _ = write!(
        b,
        "<tr><th><label for=overlay>Community overlay (WireGuard)</label></th><td><form method=post action=\"{action}\" id=set-overlay>\
<select id=overlay name=overlay.enabled><option value=false{}>off</option>\
<option value=true{}>on: join the mesh at the next start (needs the community key)</option></select> <button>Save</button>",
        if ov { "" } else { " selected" },
        if ov { " selected" } else { "" }
    );
    reset(&mut b, "overlay.enabled");
    let _ = write!(
        b,
        "</form></td><td class=source data-key=overlay.enabled>{}</td></tr>",
        source_note(&src("overlay.enabled"))
    );
    // Host name.
    let host = s["hostname"]["value"].as_str().unwrap_or("");
    let _ = write!(
        b,
        "<tr><th><label for=hostname>Host name</label></th><td><form method=post action=\"{action}\" id=set-hostname>\
<input id=hostname name=hostname value=\"{}\" maxlength=63 required pattern=\"[A-Za-z0-9-]+\"> <button>Save</button>",
        esc(host)
    );
    reset(&mut b, "hostname");
    let _ = write!(
        b,
        "</form>{}</td><td class=source data-key=hostname>{}</td></tr></table></div>\
<p>Zone, role and plain HTTP apply at once; the overlay and the host name apply at the next start of the agent (reboot).</p>",
        if s["hostname"]["pending_restart"].as_bool() == Some(true) {
            " <em>applies at next boot</em>"
        } else {
            ""
        },
        source_note(&src("hostname"))
    );
    // Password.
    let set = s["admin.password"]["password_set"].as_bool() == Some(true);
    let _ = write!(
        b,
        "<h2>Admin password</h2><p id=password-state>{} ({})</p>\
<form method=post action=\"{action}\" id=set-password>\
<p><label for=current>{}</label><br><input type=password id=current name=current required autocomplete=current-password size=40></p>\
<p><label for=newpw>New password (at least {} characters)</label><br><input type=password id=newpw name=admin.password required minlength={} autocomplete=new-password size=40></p>\
<p><label for=confirm>New password again</label><br><input type=password id=confirm name=confirm required autocomplete=new-password size=40></p>\
<p><button>Set password</button></p></form>",
        if set {
            "A password is set; the console admin token no longer logs in."
        } else {
            "No password yet: you log in with the admin token from the console."
        },
        source_note(&src("admin.password")),
        if set {
            "Current password"
        } else {
            "Current admin token"
        },
        overlay::MIN_PASSWORD_LEN,
        overlay::MIN_PASSWORD_LEN
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_form_changes_parse() {
        let c = parse_change(
            br#"{"discovery.zone": "n", "panel.allow_plain_http": true, "hostname": null, "current": "x"}"#,
            false,
        )
        .unwrap();
        assert_eq!(c.current.as_deref(), Some("x"));
        assert!(c
            .keys
            .contains(&("panel.allow_plain_http".into(), Some("true".into()))));
        assert!(c.keys.contains(&("hostname".into(), None)));
        let c = parse_change(b"discovery.zone=a%20b&reset=hostname&confirm=z", true).unwrap();
        assert_eq!(
            c.keys,
            vec![
                ("discovery.zone".to_string(), Some("a b".to_string())),
                ("hostname".to_string(), None)
            ]
        );
        assert_eq!(c.confirm.as_deref(), Some("z"));
        assert!(parse_change(b"[1]", false).is_err());
        assert!(parse_change(b"{}", false).is_err());
        assert!(parse_change(br#"{"discovery.zone": [1]}"#, false).is_err());
        let many: String = (0..20).map(|i| format!("k{i}=1&")).collect();
        assert!(parse_change(many.as_bytes(), true).is_err());
    }
}
