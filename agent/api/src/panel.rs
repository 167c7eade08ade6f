//! The server-rendered panel. Plain HTML with a little CSS: readable in a
//! text browser and on a phone.

use std::fmt::Write;

use nuvol_status::Status;

use crate::human::{bytes, duration};

/// Escape text for HTML element and attribute content.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str =
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#222}\
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;margin-bottom:1rem}\
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem;margin:1rem 0}code{font-size:.9em}";

/// The status page.
pub fn status_page(s: &Status) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{host} · nuvol</title><style>{CSS}</style></head><body>\
<h1 id=hostname>{host}</h1><p>nuvol {ver} · up {up} · node <code>{id}</code></p>",
        host = esc(&s.hostname),
        ver = esc(&s.version),
        up = duration(std::time::Duration::from_secs(s.uptime_s)),
        id = esc(&s.node_id),
    );
    if let Some(p) = &s.config.problem {
        let _ = write!(h, "<div class=warn id=config-problem><strong>Provisioning file problem:</strong> {}</div>", esc(p));
    }
    for k in &s.config.skipped {
        let _ = write!(h, "<div class=warn id=config-skipped>{}</div>", esc(k));
    }
    let _ = write!(
        h,
        "<h2>Health</h2><table id=health><tr><th>Load</th><td>{:.2} {:.2} {:.2}</td></tr>\
<tr><th>Memory</th><td>{} used of {} ({} available)</td></tr><tr><th>Boots</th><td>{}</td></tr></table>",
        s.load[0], s.load[1], s.load[2],
        bytes(s.memory.used_bytes), bytes(s.memory.total_bytes), bytes(s.memory.available_bytes),
        s.boot_count,
    );
    h.push_str("<h2>Disks</h2><table id=disks><tr><th>Mount</th><th>Device</th><th>Size</th><th>Free</th></tr>");
    for d in &s.disks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td></tr>",
            esc(&d.mount),
            esc(&d.device),
            esc(&d.fs),
            bytes(d.total_bytes),
            bytes(d.available_bytes)
        );
    }
    h.push_str("</table><h2>Interfaces</h2><table id=interfaces><tr><th>Name</th><th>State</th><th>Addresses</th></tr>");
    for i in &s.interfaces {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.name),
            if i.up { "up" } else { "down" },
            esc(&i.addresses.join(", "))
        );
    }
    h.push_str("</table><p><a href=\"/api/v1/status\">JSON</a> · <a href=\"/dashboard\" id=login-link>Manage this box (log in)</a></p></body></html>");
    h
}
