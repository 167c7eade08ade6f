//! The logged-in panel: server-rendered pages, the login/logout flow, API
//! tokens, and the small JSON routes the panel and `nuvol ctl` use.
//!
//! Pages work without JavaScript: actions are plain `<form method=post>`
//! to the JSON API with the session's CSRF token and a `back=` page in the
//! action URL; for such browser posts the answer is turned into a redirect
//! back (or an HTML error page) by [`form_result`]. `/panel.js` only adds
//! live updates (dashboard refresh, log follow).

use std::fmt::Write;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::auth::{self, LoginError, Principal};
use crate::panel::esc;
use crate::{error, html, html_status, json, parse, redirect, Conn, Ctx, Resp};

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:.75rem;color:#222}\
h1{font-size:1.3rem;margin:.5rem 0}h2{font-size:1.1rem}nav{display:flex;flex-wrap:wrap;gap:.25rem .75rem;align-items:center;\
border-bottom:1px solid #ccc;padding-bottom:.5rem}nav a.on{font-weight:bold}nav form{margin-left:auto}\
.wrap{overflow-x:auto}table{border-collapse:collapse;width:100%;margin-bottom:1rem}\
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:.5rem}\
.card{border:1px solid #ccc;border-radius:.4rem;padding:.5rem}.card b{display:block;font-size:1.2rem}\
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem;margin:.5rem 0}\
.ok{background:#e6f4ea;border:1px solid #8c8;padding:.5rem;margin:.5rem 0}\
form.inline{display:inline}button{margin:.1rem}pre{background:#f4f4f4;padding:.5rem;overflow-x:auto;max-height:30rem}\
svg{display:block;width:100%;height:2.5rem}polyline{fill:none;stroke:#36c;stroke-width:2}code{font-size:.9em}";

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
const PANEL_JS: &str = r#"// nuvol panel: optional live updates. Everything works without this file.
(function(){
  var live = document.getElementById('live');
  if (live) { setTimeout(function(){ location.reload(); }, 30000); }
  // Community page: follow the event stream; on a membership change fetch
  // the page again and swap its sections (a reload after 30 s if it breaks).
  var ev = document.getElementById('events');
  if (ev && window.fetch && window.TextDecoder) {
    var since = ev.getAttribute('data-last') || '0', timer = null;
    var refresh = function(){
      timer = null;
      fetch('/community', {credentials:'same-origin'}).then(function(r){ return r.text(); }).then(function(t){
        var doc = new DOMParser().parseFromString(t, 'text/html');
        ['members', 'community-services', 'events'].forEach(function(id){
          var a = document.getElementById(id), b = doc.getElementById(id);
          if (a && b) a.innerHTML = b.innerHTML;
        });
        document.body.setAttribute('data-refreshed', String(Date.now()));
      }).catch(function(){});
    };
    var fallback = function(){ setTimeout(function(){ location.reload(); }, 30000); };
    fetch('/api/v1/events?since=' + encodeURIComponent(since), {credentials:'same-origin'}).then(function(r){
      if (!r.ok || !r.body) return fallback();
      var rd = r.body.getReader(), dec = new TextDecoder(), buf = '';
      function more(){ return rd.read().then(function(x){
        if (x.done) return fallback();
        buf += dec.decode(x.value, {stream:true});
        var frames = buf.split('\n\n'); buf = frames.pop();
        frames.forEach(function(f){
          var m = /^event: (join|leave|failed|update|reap)$/m.exec(f);
          if (m && !timer) timer = setTimeout(refresh, 300);
        });
        return more(); }); }
      return more();
    }).catch(fallback);
  }
  document.querySelectorAll('pre[data-follow]').forEach(function(pre){
    fetch(pre.getAttribute('data-follow'), {credentials:'same-origin'}).then(function(r){
      if (!r.body) return;
      var rd = r.body.getReader(), dec = new TextDecoder();
      function more(){ return rd.read().then(function(x){
        if (x.done) return;
        pre.textContent += dec.decode(x.value, {stream:true});
        if (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-100000);
        pre.scrollTop = pre.scrollHeight; return more(); }); }
      return more();
    }).catch(function(){});
  });
})();
"#;

fn page(host: &str, title: &str, active: &str, csrf: Option<&str>, body: &str) -> String {
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

pub(crate) fn with_csrf(action: &str, csrf: &str, back: &str) -> String {
    let sep = if action.contains('?') { '&' } else { '?' };
    format!(
        "{action}{sep}csrf={}&back={}",
        parse::percent_encode(csrf),
        parse::percent_encode(back)
    )
}

fn button(action: &str, csrf: &str, back: &str, label: &str) -> String {
    format!(
        "<form class=inline method=post action=\"{}\"><button>{}</button></form>",
        esc(&with_csrf(action, csrf, back)),
        esc(label)
    )
}

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

/// Render JSON generically: objects as two-column tables, arrays of objects
/// as tables with a column per key. Depth-limited.
pub fn render_json(v: &Value, depth: usize) -> String {
    if depth > 3 {
        return format!("<code>{}</code>", esc(&v.to_string()));
    }
    match v {
        Value::Null => "–".into(),
        Value::String(s) => esc(s),
        Value::Bool(_) | Value::Number(_) => esc(&v.to_string()),
        Value::Array(a) if a.is_empty() => "<em>none</em>".into(),
        Value::Array(a) if a.iter().all(Value::is_object) => table_of(a, depth, &[]),
        Value::Array(a) => a
            .iter()
            .take(200)
            .map(|x| render_json(x, depth + 1))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) => {
            let mut h = String::from("<div class=wrap><table>");
            for (k, x) in o.iter().take(100) {
                let _ = write!(
                    h,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    esc(k),
                    render_json(x, depth + 1)
                );
            }
            h.push_str("</table></div>");
            h
        }
    }
}

/// An extra column: header and how to fill a row's cell.
type Column<'a> = (&'a str, &'a dyn Fn(&Value) -> String);

/// A table of objects: a column per key (in key order, which for JSON
/// objects is sorted by name; at most 12), plus `extra(row)` columns.
fn table_of(rows: &[Value], depth: usize, extra: &[Column<'_>]) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for r in rows.iter().take(500) {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if cols.len() < 12 && !cols.contains(&k.as_str()) {
                    cols.push(k);
                }
            }
        }
    }
    table_with(rows, &cols, depth, extra)
}

/// A table of objects with the columns `order` that any row has, in that
/// order (a JSON object keeps its keys sorted, so `name` would come after
/// `address`), plus `extra(row)` columns.
fn table_in_order(rows: &[Value], order: &[&str], depth: usize, extra: &[Column<'_>]) -> String {
    let cols: Vec<&str> = order
        .iter()
        .copied()
        .filter(|c| rows.iter().take(500).any(|r| r.get(*c).is_some()))
        .collect();
    table_with(rows, &cols, depth, extra)
}

fn table_with(rows: &[Value], cols: &[&str], depth: usize, extra: &[Column<'_>]) -> String {
    table_with_at(rows, cols, depth, extra, cols.len())
}

/// [`table_with`] with the `extra` columns after the first `at` data
/// columns (the services table puts "Open" beside the name, where a wide
/// table cannot push it off screen).
fn table_with_at(
    rows: &[Value],
    cols: &[&str],
    depth: usize,
    extra: &[Column<'_>],
    at: usize,
) -> String {
    let at = at.min(cols.len());
    let mut h = String::from("<div class=wrap><table><tr>");
    for c in &cols[..at] {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    for (name, _) in extra {
        let _ = write!(h, "<th>{}</th>", esc(name));
    }
    for c in &cols[at..] {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in rows.iter().take(500) {
        h.push_str("<tr>");
        for c in &cols[..at] {
            let _ = write!(h, "<td>{}</td>", render_json(&r[*c], depth + 1));
        }
        for (_, f) in extra {
            let _ = write!(h, "<td>{}</td>", f(r));
        }
        for c in &cols[at..] {
            let _ = write!(h, "<td>{}</td>", render_json(&r[*c], depth + 1));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

/// Accept `[...]` or `{"anything": [...]}` (the first array inside).
fn as_list(v: Option<Value>) -> Option<Vec<Value>> {
    match v? {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.into_iter().find_map(|(_, x)| match x {
            Value::Array(a) => Some(a),
            _ => None,
        }),
        _ => None,
    }
}

fn num(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64))
}

/// Where a community service can be opened, if it says.
fn service_link(v: &Value) -> Option<String> {
    if let Some(u) = v.get("url").and_then(Value::as_str) {
        if u.starts_with("http://") || u.starts_with("https://") {
            return Some(u.to_string());
        }
    }
    let addr = ["address", "addr", "ip", "host"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))?;
    let port = v.get("port").and_then(Value::as_u64)?;
    let addr = addr.split('/').next().unwrap_or(addr);
    Some(if addr.contains(':') {
        format!("http://[{addr}]:{port}/")
    } else {
        format!("http://{addr}:{port}/")
    })
}

/// An SVG sparkline of percentages (0-100).
fn sparkline(vals: &[f32]) -> String {
    if vals.len() < 2 {
        return "<svg viewBox=\"0 0 100 20\" role=img aria-label=\"no history yet\"></svg>".into();
    }
    let n = (vals.len() - 1) as f32;
    let pts: Vec<String> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f32 * 100.0 / n,
                20.0 - v.clamp(0.0, 100.0) / 5.0
            )
        })
        .collect();
    format!(
        "<svg viewBox=\"0 0 100 20\" preserveAspectRatio=none role=img aria-label=\"last hour\"><polyline points=\"{}\"/></svg>",
        pts.join(" ")
    )
}

fn bytes(n: u64) -> String {
    let mut v = n as f64;
    let mut i = 0;
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    while v >= 1024.0 && i < 4 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

fn running_slot() -> Option<String> {
    let c = std::fs::read_to_string("/proc/cmdline").ok()?;
    c.split_whitespace()
        .find_map(|w| w.strip_prefix("nuvol.slot="))
        .map(str::to_string)
}

fn crash_looping(v: &Value) -> bool {
    let state = ["state", "status"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    state.contains("crash") || state == "failed" || num(v, &["restarts"]).is_some_and(|r| r >= 5.0)
}

fn dashboard(ctx: &Ctx) -> String {
    let s = ctx.status();
    let hist = ctx.metrics.history();
    let last = hist.last().copied();
    let mut b = String::new();
    let mut alerts: Vec<String> = Vec::new();
    for d in &s.disks {
        if d.total_bytes > 0 && d.available_bytes * 10 < d.total_bytes {
            alerts.push(format!(
                "Disk {} is over 90% full ({} free)",
                d.mount,
                bytes(d.available_bytes)
            ));
        }
    }
    if let Some(list) = as_list(ctx.node.panel_local_services()) {
        for v in list.iter().filter(|v| crash_looping(v)) {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
            alerts.push(format!("Service {name} is crash-looping"));
        }
    }
    alerts.extend(ctx.node.alerts());
    b.push_str("<div id=alerts>");
    if alerts.is_empty() {
        b.push_str("<div class=ok>No alerts: all good.</div>");
    }
    for a in &alerts {
        let _ = write!(b, "<div class=warn>{}</div>", esc(a));
    }
    b.push_str("</div><div class=cards id=live>");
    let series =
        |f: &dyn Fn(&crate::metrics::Sample) -> f32| -> Vec<f32> { hist.iter().map(f).collect() };
    let card = |b: &mut String, id: &str, name: &str, val: String, spark: Option<Vec<f32>>| {
        let _ = write!(
            b,
            "<div class=card id={id}>{name}<b>{}</b>{}</div>",
            esc(&val),
            spark.map(|v| sparkline(&v)).unwrap_or_default()
        );
    };
    card(
        &mut b,
        "cpu",
        "CPU",
        last.map_or("–".into(), |l| format!("{:.0}%", l.cpu)),
        Some(series(&|x| x.cpu)),
    );
    card(
        &mut b,
        "memory",
        "Memory",
        format!(
            "{} of {}",
            bytes(s.memory.used_bytes),
            bytes(s.memory.total_bytes)
        ),
        Some(series(&|x| x.mem)),
    );
    card(
        &mut b,
        "disk",
        "Disk (fullest)",
        format!("{:.0}% used", crate::metrics::disk_percent(&s)),
        Some(series(&|x| x.disk)),
    );
    if let Some(t) = crate::metrics::temperature() {
        card(
            &mut b,
            "temperature",
            "Temperature",
            format!("{t:.0} °C"),
            Some(series(&|x| x.temp.unwrap_or(0.0))),
        );
    }
    let (d, h, m) = (
        s.uptime_s / 86400,
        s.uptime_s % 86400 / 3600,
        s.uptime_s % 3600 / 60,
    );
    card(&mut b, "uptime", "Uptime", format!("{d}d {h}h {m}m"), None);
    card(
        &mut b,
        "load",
        "Load",
        format!("{:.2} {:.2} {:.2}", s.load[0], s.load[1], s.load[2]),
        None,
    );
    card(
        &mut b,
        "agent",
        "Agent memory",
        bytes(s.agent_rss_bytes),
        None,
    );
    let _ = write!(
        b,
        "</div><p>nuvol {} · node <code>{}</code> · boot {} · sparklines: last hour, one sample every 30 s</p>",
        esc(&s.version),
        esc(&s.node_id),
        s.boot_count
    );
    if let Some(p) = &s.config.problem {
        let _ = write!(
            b,
            "<div class=warn id=config-problem>Provisioning file problem: {}</div>",
            esc(p)
        );
    }
    b
}

fn community(ctx: &Ctx) -> String {
    let mut b = community_html(ctx.node.panel_members(), ctx.node.panel_services());
    if let Some(d) = ctx.node.discovery() {
        b.push_str(&events_html(&d.recent_events(None)));
    }
    b
}

/// Membership and user events shown on the Community page (queries are
/// left to the API: they are answers waiting to happen, not news).
const PANEL_EVENTS: usize = 20;

/// "Recent events", newest first. `data-last` is the newest id: panel.js
/// follows `/api/v1/events?since=<it>` and refreshes the page's sections
/// when the membership changes.
fn events_html(events: &[Arc<nuvol_catalog::LoggedEvent>]) -> String {
    let last = events.last().map_or(0, |e| e.id);
    let mut b = format!("<h2>Recent events</h2><div id=events data-last={last}>");
    let shown: Vec<_> = events
        .iter()
        .rev()
        .filter(|e| !matches!(e.event, nuvol_gossip::Event::Query(_)))
        .take(PANEL_EVENTS)
        .collect();
    if shown.is_empty() {
        b.push_str("<p>Nothing happened since the agent started.</p></div>");
        return b;
    }
    b.push_str("<table><tr><th>time (UTC)</th><th>event</th><th>member</th><th>detail</th></tr>");
    for e in shown {
        let (ty, data) = crate::discovery::event_json(&e.event);
        let secs = e.at_unix_ms / 1000 % 86_400;
        let member = data["member"]["name"].as_str().unwrap_or("");
        let detail = match ty {
            "user" => format!(
                "{} {}",
                data["name"].as_str().unwrap_or(""),
                data["payload"].as_str().unwrap_or("")
            ),
            _ => data["member"]["address"].as_str().unwrap_or("").to_string(),
        };
        let _ = write!(
            b,
            "<tr class=ev-{ty}><td>{:02}:{:02}:{:02}</td><td>{ty}</td><td>{}</td><td>{}</td></tr>",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            esc(member),
            esc(&detail)
        );
    }
    b.push_str("</table></div>");
    b
}

/// The community page body from the members and services JSON.
fn community_html(members: Option<Value>, services: Option<Value>) -> String {
    let mut b = String::from("<h2>Members</h2><div id=members>");
    // the columns worth a glance (tags etc. stay in the API)
    const MEMBER_COLS: &[&str] = &[
        "name",
        "state",
        "status",
        "health",
        "zone",
        "role",
        "address",
        "port",
        "hops",
        "loss",
        "rtt_ms",
        "rtt_estimate_ms",
    ];
    const SERVICE_COLS: &[&str] = &[
        "name",
        "service_type",
        "node",
        "zone",
        "address",
        "addr",
        "port",
        "url",
        "source",
        "health",
        "hops",
        "loss",
        "rtt_ms",
        "rtt_estimate_ms",
    ];
    // keep only `cols` of objects that have any of them; others as they are.
    // Times to 0.01 ms: a float's last digits are noise on a page.
    let pick = |v: Value, cols: &[&str]| match v {
        Value::Object(o) if cols.iter().any(|c| o.contains_key(*c)) => Value::Object(
            cols.iter()
                .filter_map(|c| {
                    o.get(*c).map(|x| {
                        let x = match x.as_f64() {
                            Some(f) if c.ends_with("_ms") && !x.is_u64() && !x.is_i64() => {
                                json!((f * 100.0).round() / 100.0)
                            }
                            _ => x.clone(),
                        };
                        (c.to_string(), x)
                    })
                })
                .collect(),
        ),
        v => v,
    };
    match as_list(members) {
        Some(m) => {
            let m: Vec<Value> = m.into_iter().map(|v| pick(v, MEMBER_COLS)).collect();
            b.push_str(&table_in_order(&m, MEMBER_COLS, 1, &[]));
        }
        None => b.push_str("<p>Discovery is not running on this box, so no members are known.</p>"),
    }
    b.push_str("</div><h2>Services, nearest first</h2><div id=community-services>");
    match as_list(services) {
        Some(mut s) => {
            let rtt = ["rtt_ms", "rtt", "distance_ms", "distance"];
            // healthy first, providers on `suspect` nodes next, then RTT
            let rank = |v: &Value| {
                if v.get("healthy").and_then(Value::as_bool) == Some(false) {
                    2
                } else if v.get("health").and_then(Value::as_str) == Some("suspect") {
                    1
                } else {
                    0
                }
            };
            s.sort_by(|a, c| {
                let x = num(a, &rtt).unwrap_or(f64::MAX);
                let y = num(c, &rtt).unwrap_or(f64::MAX);
                rank(a).cmp(&rank(c)).then(x.total_cmp(&y))
            });
            let s: Vec<Value> = s.into_iter().map(|v| pick(v, SERVICE_COLS)).collect();
            let open = |v: &Value| {
                service_link(v).map_or_else(String::new, |u| {
                    format!("<a href=\"{}\" rel=noopener>open</a>", esc(&u))
                })
            };
            // "Open" right after the name: the table is wide
            let cols: Vec<&str> = SERVICE_COLS
                .iter()
                .copied()
                .filter(|c| s.iter().take(500).any(|r| r.get(*c).is_some()))
                .collect();
            let at = usize::from(cols.first() == Some(&"name"));
            b.push_str(&table_with_at(&s, &cols, 1, &[("Open", &open)], at));
        }
        None => b.push_str("<p>No community services known.</p>"),
    }
    b.push_str("</div>");
    b
}

fn services(ctx: &Ctx, csrf: &str) -> String {
    let mut b = String::from("<div id=local-services>");
    match as_list(ctx.node.panel_local_services()) {
        Some(list) if !list.is_empty() => {
            let actions = |v: &Value| {
                let Some(name) = v.get("name").and_then(Value::as_str) else {
                    return String::new();
                };
                let base = format!("/api/v1/services/{}", parse::percent_encode(name));
                let mut h = String::new();
                for a in ["start", "stop", "restart"] {
                    h.push_str(&button(&format!("{base}/{a}"), csrf, "/services", a));
                }
                let _ = write!(h, " <a href=\"{}/logs?lines=200\">logs</a>", esc(&base));
                h
            };
            b.push_str(&table_of(&list, 1, &[("Actions", &actions)]));
            for v in &list {
                if let Some(name) = v.get("name").and_then(Value::as_str) {
                    let _ = write!(
                        b,
                        "<details><summary>Live log: {}</summary><pre data-follow=\"/api/v1/services/{}/logs?follow=1&amp;lines=50\"></pre></details>",
                        esc(name),
                        esc(&parse::percent_encode(name))
                    );
                }
            }
        }
        Some(_) => b.push_str("<p>No services run on this box yet. Install a bundle on the <a href=\"/bundles\">Bundles</a> page.</p>"),
        None => b.push_str("<p>The service supervisor is not running in this agent.</p>"),
    }
    b.push_str("</div>");
    b
}

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
    let rows = v["bundles"].as_array().cloned().unwrap_or_default();
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

async fn bundles_page(ctx: &Ctx, csrf: &str, refresh: bool) -> String {
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
        (s.list(), kr.list(), kr.revoked())
    })
    .await;
    let Ok((list, keys, revoked)) = listed else {
        return b;
    };
    b.push_str("<h2>Installed</h2><div class=wrap><table id=bundle-list><tr><th>Name</th><th>Version</th><th>Publisher (key)</th><th>Signature</th><th>Previous</th><th>Actions</th></tr>");
    match list {
        Ok(list) if list.is_empty() => {
            b.push_str("<tr><td colspan=6>No bundles installed.</td></tr>")
        }
        Ok(list) => {
            for x in list {
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
                    if x.state == "installed" { "verified".to_string() } else { esc(&x.state) },
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
        Ok(k) => b.push_str(&render_json(
            &serde_json::to_value(k).unwrap_or(Value::Null),
            1,
        )),
        Err(e) => b.push_str(&esc(&e.to_string())),
    }
    if let Ok(r) = revoked {
        if !r.is_empty() {
            b.push_str("<h2>Revoked keys</h2>");
            b.push_str(&render_json(
                &serde_json::to_value(r).unwrap_or(Value::Null),
                1,
            ));
        }
    }
    b
}

fn network(ctx: &Ctx) -> String {
    let s = ctx.status();
    let mut b = String::from("<h2>Interfaces</h2><div class=wrap><table id=interfaces><tr><th>Name</th><th>State</th><th>MAC</th><th>Addresses</th></tr>");
    for i in &s.interfaces {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&i.name),
            if i.up { "up" } else { "down" },
            esc(i.mac.as_deref().unwrap_or("")),
            esc(&i.addresses.join(", "))
        );
    }
    b.push_str("</table></div><h2>Configuration and leases</h2><div id=network-state>");
    match ctx.node.network() {
        Some(v) => b.push_str(&render_json(&v, 0)),
        None => b.push_str("<p>Networking is not managed by this agent (development host).</p>"),
    }
    b.push_str("</div>");
    b
}

fn settings(ctx: &Ctx, csrf: &str) -> String {
    let mut b = crate::settings::page_section(ctx, csrf);
    b.push_str("<h2>API tokens</h2><p>For <code>nuvol ctl --token …</code> and scripts. The secret is shown once.</p>");
    b.push_str("<div class=wrap><table id=tokens><tr><th>Name</th><th>Id</th><th>Created</th><th></th></tr>");
    let tokens = ctx.auth.list_tokens();
    if tokens.is_empty() {
        b.push_str("<tr><td colspan=4>No tokens.</td></tr>");
    }
    for t in tokens {
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&t.name),
            esc(&t.id),
            t.created,
            button(
                &format!("/api/v1/tokens/{}/revoke", t.id),
                csrf,
                "/settings",
                "revoke"
            )
        );
    }
    let _ = write!(
        b,
        "</table></div><form id=new-token method=post action=\"{}\"><label for=tname>New token name</label> \
<input id=tname name=name required maxlength=64> <button>Create token</button></form>",
        esc(&with_csrf("/api/v1/tokens", csrf, "/settings"))
    );
    let _ = write!(
        b,
        "<h2>Login</h2><p>{}</p>",
        if ctx.auth.admin_token_active() {
            "You log in with the admin token shown on the console. Set a password above, or <code>[admin] password_hash</code> in nuvol.toml (make one with <code>nuvol ctl hash-password</code>), to use a password instead."
        } else {
            "You log in with the admin password (set above, or <code>[admin] password_hash</code> in nuvol.toml)."
        }
    );
    b
}

fn update(csrf: &str) -> String {
    let running = running_slot();
    let mut b =
        String::from("<div class=wrap><table id=slots><tr><th>Slot</th><th>State</th></tr>");
    for slot in ["A", "B"] {
        let _ = write!(
            b,
            "<tr><td>{slot}</td><td>{}</td></tr>",
            if running.as_deref() == Some(slot) {
                "running"
            } else {
                "standby"
            }
        );
    }
    let _ = write!(
        b,
        "</table></div><p id=update-state>{}</p><p>Updating the OS is not available yet: the A/B update mechanism is a separate issue.</p>\
<h2>Reboot</h2>{}",
        match &running {
            Some(s) => format!("Running from slot {}.", esc(s)),
            None => "Not booted from a nuvol slot (development host).".into(),
        },
        button("/api/v1/system/reboot", csrf, "/update", "Reboot now")
    );
    b
}

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
        Some(html(page(&host(), title, active, csrf_opt, &body)))
    };
    match (path, get) {
        ("/panel.js", true) => Some(
            hyper::Response::builder()
                .header("content-type", "text/javascript; charset=utf-8")
                .header("cache-control", "max-age=3600")
                .body(crate::full(PANEL_JS))
                .unwrap_or_else(|_| hyper::Response::new(crate::full(""))),
        ),
        ("/dashboard", true) => pg("Dashboard", "/dashboard", dashboard(ctx)),
        ("/community", true) => pg("Community", "/community", community(ctx)),
        ("/services", true) => pg("Services on this box", "/services", services(ctx, &csrf)),
        ("/bundles", true) => {
            let refresh = parse::form_get(req.uri().query().unwrap_or(""), "refresh")
                .is_some_and(|v| v == "1");
            pg(
                "Bundles",
                "/bundles",
                bundles_page(ctx, &csrf, refresh).await,
            )
        }
        ("/network", true) => pg("Network", "/network", network(ctx)),
        ("/settings", true) => pg("Settings", "/settings", settings(ctx, &csrf)),
        ("/update", true) => pg("Update", "/update", update(&csrf)),
        ("/metrics", true) => {
            let bundles = match ctx.node.bundle_store() {
                Some((s, _)) => tokio::task::spawn_blocking(move || s.list().map(|l| l.len()).ok())
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
            &json!({
                "available": false,
                "message": "updating is not available yet: the A/B update mechanism is a separate issue",
                "slots": ["A", "B"],
                "running_slot": running_slot(),
            }),
        )),
        ("/api/v1/update", false) if *m == Method::POST => Some(error(
            StatusCode::NOT_IMPLEMENTED,
            "update_unavailable",
            "updating is not available yet: the A/B update mechanism is a separate issue",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_renders_tolerantly() {
        let v = json!([{"name": "a<b", "rtt_ms": 3}, {"name": "c", "zone": "x"}]);
        let h = render_json(&v, 0);
        assert!(h.contains("a&lt;b") && h.contains("<th>zone</th>"), "{h}");
        assert!(render_json(&json!({"deep": [[[[[1]]]]]}), 0).contains("[1]"));
        assert_eq!(as_list(Some(json!({"members": [1]}))), Some(vec![json!(1)]));
    }

    #[test]
    fn recent_events_newest_first_without_queries() {
        let log = nuvol_catalog::EventLog::new();
        log.push(nuvol_gossip::Event::User {
            ltime: 1,
            name: "deploy".into(),
            payload: b"<v2>".to_vec(),
            coalesce: false,
        });
        log.push(nuvol_gossip::Event::User {
            ltime: 2,
            name: "second".into(),
            payload: Vec::new(),
            coalesce: false,
        });
        let h = events_html(&log.since(None));
        assert!(h.contains("data-last=2"), "{h}");
        let (a, b) = (h.find("second").unwrap(), h.find("deploy").unwrap());
        assert!(a < b, "newest first: {h}");
        assert!(h.contains("deploy &lt;v2&gt;"), "escaped: {h}");
        let empty = events_html(&[]);
        assert!(empty.contains("data-last=0") && empty.contains("Nothing happened"));
    }

    #[test]
    fn community_nearest_first_with_links() {
        let services = json!({"services": [
            {"name": "far", "rtt_ms": 80.5, "address": "10.0.0.9", "port": 8080},
            {"name": "unknown-distance", "url": "https://x.example/"},
            {"name": "near", "rtt_ms": 1.2, "address": "fd00::1/64", "port": 80},
        ]});
        let members =
            json!([{"name": "a", "role": "super", "zone": "north", "state": "alive", "rtt_ms": 3}]);
        let h = community_html(Some(members), Some(services));
        let (n, f, u) = (
            h.find(">near<").unwrap(),
            h.find(">far<").unwrap(),
            h.find(">unknown-distance<").unwrap(),
        );
        assert!(n < f && f < u, "nearest first, unknown last: {h}");
        assert!(
            h.contains("href=\"http://[fd00::1]:80/\"")
                && h.contains("href=\"http://10.0.0.9:8080/\""),
            "{h}"
        );
        assert!(h.contains("<th>zone</th>") && h.contains(">north<"), "{h}");
        let none = community_html(None, None);
        assert!(!none.contains("id=events"));
        assert!(none.contains("Discovery is not running"));
    }

    #[test]
    fn community_shows_health_hops_loss_and_puts_suspect_after_healthy() {
        let services = json!([
            {"name": "s-suspect", "service_type": "_http._tcp", "node": "n1", "zone": "",
             "addr": "10.0.0.1", "port": 80, "txt": {}, "source": "serf", "healthy": true,
             "health": "suspect", "rtt_estimate_ms": 0.1, "rtt_ms": 0.1, "hops": 0, "loss": 0.5},
            {"name": "s-dead", "service_type": "_http._tcp", "node": "n2", "zone": "",
             "addr": "10.0.0.2", "port": 80, "txt": {}, "source": "serf", "healthy": false,
             "health": "dead", "rtt_estimate_ms": 0.1, "rtt_ms": 0.1, "hops": 0, "loss": 1.0},
            {"name": "s-far", "service_type": "_http._tcp", "node": "n3", "zone": "",
             "addr": "10.0.0.3", "port": 80, "txt": {}, "source": "serf", "healthy": true,
             "health": "alive", "rtt_estimate_ms": 40.0, "rtt_ms": 40.0, "hops": 3, "loss": 0.0},
        ]);
        let members = json!([{"name": "n1", "addr": "10.0.0.1:7946", "address": "10.0.0.1",
            "port": 7946, "zone": "z", "role": "super-node", "status": "alive",
            "health": "suspect", "tags": {"a": "b"}, "rtt_estimate_ms": 0.1, "rtt_ms": 0.1,
            "hops": 2, "loss": 0.25}]);
        let h = community_html(Some(members), Some(services));
        for col in ["health", "hops", "loss", "status", "zone", "rtt_ms"] {
            assert!(h.contains(&format!("<th>{col}</th>")), "column {col}: {h}");
        }
        assert!(h.contains(">suspect<") && h.contains(">0.25<"), "{h}");
        let (far, sus, dead) = (
            h.find(">s-far<").unwrap(),
            h.find(">s-suspect<").unwrap(),
            h.find(">s-dead<").unwrap(),
        );
        assert!(far < sus && sus < dead, "healthy, suspect, dead: {h}");
    }

    #[test]
    fn community_columns_keep_their_order_and_times_are_rounded() {
        let members = json!([{"address": "127.0.0.1", "health": "dead", "name": "go-b",
            "role": "ordinary-node", "rtt_ms": 1.2609469999999998, "status": "failed",
            "zone": "south", "tags": {"x": "y"}}]);
        let services = json!([{"addr": "127.0.0.1", "name": "web", "node": "go-a",
            "port": 8080, "rtt_ms": 13.424511, "service_type": "_http._tcp"}]);
        let h = community_html(Some(members), Some(services));
        let heads: Vec<&str> = h
            .split("<th>")
            .skip(1)
            .map(|x| x.split('<').next().unwrap_or(""))
            .collect();
        assert_eq!(
            heads,
            [
                "name",
                "status",
                "health",
                "zone",
                "role",
                "address",
                "rtt_ms", // members
                "name",
                "Open", // beside the name, never pushed off screen
                "service_type",
                "node",
                "addr",
                "port",
                "rtt_ms", // services
            ],
            "{h}"
        );
        assert!(
            h.contains("<td>1.26</td>") && h.contains("<td>13.42</td>"),
            "{h}"
        );
        assert!(h.contains("<td>8080</td>") && !h.contains("tags"), "{h}");
    }

    #[test]
    fn links_and_sparklines() {
        assert_eq!(
            service_link(&json!({"address": "10.0.0.2", "port": 80})).as_deref(),
            Some("http://10.0.0.2:80/")
        );
        assert_eq!(service_link(&json!({"url": "javascript:alert(1)"})), None);
        assert!(sparkline(&[0.0, 50.0, 100.0]).contains("polyline"));
        assert!(crash_looping(&json!({"state": "crash-loop"})));
        assert!(!crash_looping(&json!({"state": "running", "restarts": 1})));
    }
}
