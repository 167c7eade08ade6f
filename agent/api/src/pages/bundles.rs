//! The Bundles page: upload and check, installed bundles, what the
//! community offers, trusted and revoked publisher keys.

use std::fmt::Write;

use nuvol_bundle::keyring::{RevokedKey, TrustedKey};
use serde_json::Value;

use super::frame::{button, with_csrf};
use crate::human;
use crate::panel::esc;
use crate::{parse, Ctx};

/// "From the community": what other boxes offer, each with a form that
/// fetches it into the usual check-then-install page.
async fn community_bundles(ctx: &Ctx, csrf: &str, refresh: bool) -> String {
    let mut b = String::from("<h2 id=from-community>From the community</h2>");
    let v = match crate::share::community(ctx, refresh).await {
        Ok(v) => v,
        Err(_) => {
            b.push_str("<p>Discovery is not running, so no other box can be found.</p>");
            return b;
        }
    };
    let _ = write!(
        b,
        "<p>Bundles other nuvol boxes offer. Fetching downloads the signed file and checks it against this box's trusted keys; you see publisher and signature before anything is installed. <a id=community-refresh href=\"/bundles?refresh=1#from-community\">Check again</a></p>"
    );
    // What this box cannot run (built for another architecture) is listed
    // only in the API: nothing to fetch here.
    let rows: Vec<Value> = v["bundles"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["runs_here"] != false)
        .collect();
    b.push_str("<div class=wrap><table id=community-bundles><tr><th>Bundle</th><th>Version</th><th>Node</th><th>Publisher (key)</th><th>Trusted</th><th>Here</th><th></th></tr>");
    if rows.is_empty() {
        b.push_str("<tr><td colspan=7>No other box offers bundles right now.</td></tr>");
    }
    let st = |r: &Value, k: &str| esc(r.get(k).and_then(Value::as_str).unwrap_or(""));
    for r in &rows {
        let trusted = r["trusted"] == true;
        let form = format!(
            "<form class=inline method=post action=\"{}\"><input type=hidden name=node value=\"{}\">\
<input type=hidden name=name value=\"{}\"><button>Fetch and review</button></form>",
            esc(&with_csrf("/api/v1/bundles/fetch", csrf, "/bundles")),
            st(r, "node"),
            st(r, "name"),
        );
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} (<code>{}</code>)</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            st(r, "name"),
            st(r, "version"),
            st(r, "node"),
            st(r, "publisher"),
            st(r, "publisher_key_id"),
            if trusted { "yes" } else { "<strong>no</strong>" },
            r.get("installed_version").and_then(Value::as_str).map_or("–".to_string(), esc),
            if trusted { form } else { format!("{form} (refused unless you trust the key)") },
        );
    }
    b.push_str("</table></div>");
    for e in v["errors"].as_array().into_iter().flatten() {
        let _ = write!(
            b,
            "<div class=warn>{}: {}</div>",
            st(e, "node"),
            st(e, "error")
        );
    }
    b
}

pub(super) async fn bundles_page(ctx: &Ctx, csrf: &str, refresh: bool) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<h2>Install or upgrade</h2><form id=upload method=post enctype=multipart/form-data action=\"{}\">\
<input type=file name=bundle accept=\".nvb\" required> <button>Upload and check</button></form>\
<p>The bundle's signature is checked against the trusted publisher keys below first; \
you see its publisher, key and digest and then choose to install it.</p>",
        esc(&with_csrf("/api/v1/bundles/verify", csrf, "/bundles"))
    );
    let Some((store, _)) = ctx.node.bundle_store() else {
        b.push_str(
            "<div class=warn>The bundle store could not be opened; see the agent's log.</div>",
        );
        return b;
    };
    let s = store.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let kr = s.keyring();
        (s.list(), kr.list(), kr.revoked(), s.space())
    })
    .await;
    let Ok((list, keys, revoked, space)) = listed else {
        return b;
    };
    // What still fits, so a full stick is no surprise at upload time.
    match space {
        Ok(sp) => {
            let _ = write!(
                b,
                "<p id=storage>Free space for bundles: <b>{}</b> of {} (a bundle file up to {} fits).</p>",
                human::bytes(sp.free_bytes),
                human::bytes(sp.total_bytes),
                human::bytes(nuvol_bundle::space::largest_receivable(sp.free_bytes)),
            );
        }
        Err(e) => {
            let _ = write!(
                b,
                "<div class=warn>Free space unknown: {}</div>",
                esc(&e.to_string())
            );
        }
    }
    b.push_str("<h2>Installed</h2><div class=wrap><table id=bundle-list><tr><th>Name</th><th>Version</th><th>Publisher (key)</th><th>Signature</th><th>Previous</th><th>Actions</th></tr>");
    match list {
        Ok(list) if list.bundles.is_empty() && list.broken.is_empty() => {
            b.push_str("<tr><td colspan=6>No bundles installed.</td></tr>")
        }
        Ok(list) => {
            for x in &list.broken {
                let base = format!("/api/v1/bundles/{}", parse::percent_encode(&x.name));
                let _ = write!(
                    b,
                    "<tr class=broken><td>{}</td><td>–</td><td>–</td><td>broken: <code>{}</code>: {}</td><td>–</td><td>{}{}</td></tr>",
                    esc(&x.name),
                    esc(&x.file.display().to_string()),
                    esc(&x.problem),
                    button(&format!("{base}/remove"), csrf, "/bundles", "remove (keep data)"),
                    button(
                        &format!("{base}/remove?purge=1"),
                        csrf,
                        "/bundles",
                        "remove and delete data"
                    ),
                );
            }
            for x in list.bundles {
                let base = format!("/api/v1/bundles/{}", parse::percent_encode(&x.name));
                let mut acts = String::new();
                if x.previous.is_some() {
                    acts.push_str(&button(
                        &format!("{base}/rollback"),
                        csrf,
                        "/bundles",
                        "roll back",
                    ));
                }
                acts.push_str(&button(
                    &format!("{base}/remove"),
                    csrf,
                    "/bundles",
                    "remove (keep data)",
                ));
                acts.push_str(&button(
                    &format!("{base}/remove?purge=1"),
                    csrf,
                    "/bundles",
                    "remove and delete data",
                ));
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{} (<code>{}</code>)</td><td>{}</td><td>{}</td><td>{acts}</td></tr>",
                    esc(&x.name),
                    esc(&x.version),
                    esc(&x.publisher),
                    esc(&x.publisher_key_id),
                    if x.state == "installed" {
                        format!("verified<small>{}</small>", human::utc(x.verified_at))
                    } else {
                        esc(&x.state)
                    },
                    x.previous.as_ref().map_or("–".into(), |p| esc(&p.version)),
                );
            }
        }
        Err(e) => {
            let _ = write!(b, "<tr><td colspan=6>{}</td></tr>", esc(&e.to_string()));
        }
    }
    b.push_str("</table></div>");
    b.push_str(&community_bundles(ctx, csrf, refresh).await);
    b.push_str("<h2>Trusted publisher keys</h2>");
    match keys {
        Ok(k) => b.push_str(&keys_html(&k)),
        Err(e) => b.push_str(&esc(&e.to_string())),
    }
    if let Ok(r) = revoked {
        if !r.is_empty() {
            b.push_str(&revoked_html(&r));
        }
    }
    b
}

/// The trusted keys: id, comment, when added (UTC), the key itself short.
fn keys_html(keys: &[TrustedKey]) -> String {
    let mut b = String::from("<div class=wrap><table id=trusted-keys><tr><th>Key</th><th>Comment</th><th>Added</th><th>Public key</th></tr>");
    if keys.is_empty() {
        b.push_str("<tr><td colspan=4>No trusted keys: no bundle can be installed until one is added.</td></tr>");
    }
    for k in keys {
        let short: String = k.public_key.chars().take(16).collect();
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code title=\"{}\">{}…</code></td></tr>",
            esc(&k.key_id),
            esc(&k.comment),
            human::utc(k.added_at),
            esc(&k.public_key),
            esc(&short),
        );
    }
    b.push_str("</table></div>");
    b
}

/// Revoked key ids, why and when (UTC).
fn revoked_html(revoked: &[RevokedKey]) -> String {
    let mut b = String::from("<h2>Revoked keys</h2><div class=wrap><table id=revoked-keys><tr><th>Key</th><th>Reason</th><th>Revoked</th></tr>");
    for r in revoked {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&r.key_id),
            esc(&r.reason),
            human::utc(r.revoked_at),
        );
    }
    b.push_str("</table></div>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_dates_not_unix_numbers() {
        let k = TrustedKey {
            key_id: "0123456789abcdef".into(),
            public_key: "RWQBI0VniavN7+7ZtUa8NfjRHx3V2e9a".into(),
            comment: "recipes <dev>".into(),
            added_at: 1_796_381_700,
            extra: Default::default(),
        };
        let h = keys_html(&[k]);
        assert!(h.contains("<td>2026-12-04 10:55 UTC</td>"), "{h}");
        assert!(!h.contains("1796381700"), "{h}");
        assert!(
            h.contains("recipes &lt;dev&gt;")
                && h.contains("title=\"RWQBI0VniavN7+7ZtUa8NfjRHx3V2e9a\"")
        );
        let r = revoked_html(&[RevokedKey {
            key_id: "0123456789abcdef".into(),
            reason: "leaked".into(),
            revoked_at: 1_796_381_700,
            extra: Default::default(),
        }]);
        assert!(
            r.contains("<td>leaked</td><td>2026-12-04 10:55 UTC</td>"),
            "{r}"
        );
        assert!(keys_html(&[]).contains("No trusted keys"));
    }
}
