//! Browser form posts: the JSON answer turned into a redirect back or an
//! HTML page (a new token's secret, the install confirmation, an error).

use http_body_util::BodyExt;
use hyper::StatusCode;
use serde_json::Value;

use super::frame::{button, page};
use super::render::render_json;
use crate::panel::esc;
use crate::{html, html_status, parse, redirect, Resp};

/// Turn the JSON answer to a browser form post into something a browser
/// shows: a redirect back on success (or a page with a new token's secret),
/// an HTML error page otherwise.
pub async fn form_result(resp: Resp, back: Option<&str>, csrf: &str) -> Resp {
    let back = parse::safe_next(back.unwrap_or("/dashboard")).to_string();
    let status = resp.status();
    let bytes = match http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => Default::default(),
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        if v.get("token").is_some() {
            let body = format!(
                "<div class=ok id=result>Done. Copy the secret now: it is not shown again.</div>{}<p><a href=\"{}\">Back</a></p>",
                render_json(&v, 0),
                esc(&back)
            );
            return html(page("nuvol", "Done", "", None, &body));
        }
        if let Some(resetting) = v.get("resetting") {
            let body = format!(
                "<div class={} id=result>{}</div>",
                if resetting == true { "ok" } else { "warn" },
                esc(v["message"].as_str().unwrap_or(""))
            );
            return html(page("nuvol", "Factory reset", "", None, &body));
        }
        if let Some(id) = v.get("pending").and_then(Value::as_str) {
            return html(page(
                "nuvol",
                "Install this bundle?",
                "/bundles",
                Some(csrf),
                &confirm_install(&v, id, csrf),
            ));
        }
        return redirect(StatusCode::SEE_OTHER, &back);
    }
    if status.is_redirection() {
        return redirect(StatusCode::SEE_OTHER, &back);
    }
    let msg = v["error"]["message"].as_str().map_or_else(
        || String::from_utf8_lossy(&bytes).into_owned(),
        str::to_string,
    );
    let code = v["error"]["code"].as_str().unwrap_or("error");
    let body = format!(
        "<div class=warn id=error><strong>{}</strong> ({}): {}</div><p><a href=\"{}\">Back</a></p>",
        status.as_u16(),
        esc(code),
        esc(&msg),
        esc(&back)
    );
    html_status(status, page("nuvol", "That did not work", "", None, &body))
}

/// The "verified, now install?" page: signature and publisher first.
fn confirm_install(v: &Value, id: &str, csrf: &str) -> String {
    let s = |k: &str| esc(v.get(k).and_then(Value::as_str).unwrap_or("?"));
    let mut b = format!(
        "<div class=ok id=verified>Signature valid: signed by a trusted publisher key.</div>\
<div class=wrap><table id=bundle-check><tr><th>Bundle</th><td>{}</td></tr><tr><th>Version</th><td>{}</td></tr>\
<tr><th>Publisher</th><td>{}</td></tr><tr><th>Key</th><td><code>{}</code></td></tr>\
<tr><th>Image SHA-256</th><td><code>{}</code></td></tr><tr><th>Installed now</th><td>{}</td></tr></table></div>",
        s("name"),
        s("version"),
        s("publisher"),
        s("publisher_key_id"),
        s("digest"),
        v.get("installed_version").and_then(Value::as_str).map_or("not installed".to_string(), esc),
    );
    let base = format!("/api/v1/bundles/pending/{}", parse::percent_encode(id));
    b.push_str(&button(
        &format!("{base}/install"),
        csrf,
        "/bundles",
        "Install",
    ));
    b.push_str(" <a href=\"/bundles\">Cancel</a>");
    b
}
