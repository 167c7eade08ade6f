//! The page frame every panel page shares: style, navigation, the log-out
//! button, and the small form helpers that carry the session's CSRF token.

use std::fmt::Write;

use crate::panel::esc;
use crate::parse;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:75rem;padding:.75rem;color:#222}\
h1{font-size:1.3rem;margin:.5rem 0}h2{font-size:1.1rem}nav{display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:center;\
border-bottom:1px solid #ccc;padding-bottom:.5rem}nav a.on{font-weight:bold}nav form{margin-left:auto}\
.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%;margin-bottom:1rem}\
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.5rem}\
.card{border:1px solid #ccc;border-radius:.4rem;padding:.5rem}.card b{display:block;font-size:1.2rem}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem;margin:.5rem 0}\
.ok{background:#e6f4ea;border:1px solid #8c8;padding:.5rem;margin:.5rem 0}\
form.inline{display:inline}button{margin:.1rem}pre{background:#f4f4f4;padding:.5rem;overflow-x:auto;max-height:30rem}\
svg{display:block;width:100%;height:2.5rem}polyline{fill:none;stroke:#36c;stroke-width:2}code{font-size:.9em}\
td small{display:block;color:#555;font-size:.85em}.st-running{color:#176b2c}.st-starting,.st-stopping{color:#8a5a00}\
.st-failing,.st-failed,.st-broken{color:#b00020}table.services td{white-space:nowrap}table.services td:nth-child(2),\
table.services td:nth-child(8){white-space:normal;min-width:12rem}\
table.services td:nth-child(7),table.services td:nth-child(10){white-space:normal}";

const NAV: &[(&str, &str)] = &[
    ("/dashboard", "Dashboard"),
    ("/community", "Community"),
    ("/services", "Services"),
    ("/bundles", "Bundles"),
    ("/network", "Network"),
    ("/settings", "Settings"),
    ("/update", "Update"),
];

/// The live-update script (optional; pages work without it).
pub(super) const PANEL_JS: &str = include_str!("panel.js");

pub(super) fn page(
    host: &str,
    title: &str,
    active: &str,
    csrf: Option<&str>,
    body: &str,
) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{t} · {host}</title><style>{CSS}</style></head><body><nav>",
        t = esc(title),
        host = esc(host)
    );
    let _ = write!(h, "<strong>{}</strong>", esc(host));
    for (href, name) in NAV {
        let on = if *href == active { " class=on" } else { "" };
        let _ = write!(h, "<a href=\"{href}\"{on}>{name}</a>");
    }
    if let Some(c) = csrf {
        let _ = write!(
            h,
            "<form method=post action=\"/logout?csrf={}\"><button>Log out</button></form>",
            esc(c)
        );
    }
    let _ = write!(
        h,
        "</nav><main><h1>{}</h1>{body}</main><script src=\"/panel.js\"></script></body></html>",
        esc(title)
    );
    h
}

pub(crate) fn with_csrf(action: &str, csrf: &str, back: &str) -> String {
    let sep = if action.contains('?') { '&' } else { '?' };
    format!(
        "{action}{sep}csrf={}&back={}",
        parse::percent_encode(csrf),
        parse::percent_encode(back)
    )
}

pub(super) fn button(action: &str, csrf: &str, back: &str, label: &str) -> String {
    format!(
        "<form class=inline method=post action=\"{}\"><button>{}</button></form>",
        esc(&with_csrf(action, csrf, back)),
        esc(label)
    )
}
