//! Syncthing's REST API on a box, asked the way its own GUI asks: Debian's
//! 1.19.2 wants the CSRF token its GUI page sets as a cookie on every
//! `/rest` call (and has no `/rest/noauth/health` yet), so: GET `/`, then
//! each call with `X-CSRF-Token-<id>`.

use std::net::SocketAddr;

use serde_json::Value;

use crate::rest::request;

/// A GUI session: where, and the CSRF header to send.
pub struct Gui {
    at: SocketAddr,
    header: String,
    token: String,
}

impl Gui {
    /// Open a session (`None` while the GUI does not answer).
    pub fn open(at: SocketAddr) -> Option<Gui> {
        let a = request(at, "GET", "/", &[], None)?;
        if a.status != 200 {
            return None;
        }
        let cookie = a.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or("").to_string())
        })?;
        let (name, token) = cookie.split_once('=')?;
        let id = name.strip_prefix("CSRF-Token-")?;
        Some(Gui {
            at,
            header: format!("X-CSRF-Token-{id}"),
            token: token.to_string(),
        })
    }

    /// One call; the JSON answer when it is 200 (an empty body is `Null`).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let body = body.map(Value::to_string);
        let a = request(
            self.at,
            method,
            path,
            &[(&self.header, &self.token)],
            body.as_deref(),
        )?;
        if a.status != 200 {
            return None;
        }
        Some(serde_json::from_str(&a.body).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.call("GET", path, None)
    }
}
