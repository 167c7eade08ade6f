//! The Network and Update pages: interfaces, leases, A/B slots, reboot.

use std::fmt::Write;

use super::frame::{button, with_csrf};
use super::render::render_json;
use crate::panel::esc;
use crate::Ctx;

pub(super) fn network(ctx: &Ctx) -> String {
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

pub(super) fn update(ctx: &Ctx, csrf: &str) -> String {
    let v = ctx.node.update_status().unwrap_or_default();
    let running = v["running_slot"]
        .as_str()
        .map(str::to_string)
        .or_else(running_slot);
    let default = v["default_slot"].as_str();
    let mut b = String::from(
        "<div class=wrap><table id=slots><tr><th>Slot</th><th>State</th><th>Version</th></tr>",
    );
    for slot in ["A", "B"] {
        let mut state = String::from(if running.as_deref() == Some(slot) {
            "running"
        } else {
            "standby"
        });
        if default == Some(slot) {
            state.push_str(", default");
        }
        let _ = write!(
            b,
            "<tr><td>{slot}</td><td>{state}</td><td>{}</td></tr>",
            esc(v["slots"][slot]["version"].as_str().unwrap_or("unknown"))
        );
    }
    let state = crate::update::state_line(&v).unwrap_or_else(|| "No update applied yet.".into());
    let policy = crate::update::policy_line(&v).unwrap_or_default();
    let _ = write!(
        b,
        "</table></div><p id=update-state>{}</p><p>{}</p><p id=update-policy>{}</p>\
<h2>Install an update</h2><form id=update-upload method=post enctype=multipart/form-data action=\"{}\">\
<input type=file name=update accept=\".nvu\" required> <button>Upload, check and write to the other slot</button></form>\
<p>A signed artefact (<code>nuvol-{}-VERSION.nvu</code>): checked against the OS publisher keys of \
<code>[update] trusted_keys</code> before anything is written; then reboot to try it once. \
From a shell: <code>nuvol ctl update FILE</code> (<code>--allow-downgrade</code> for an older version).</p>\
<form id=update-url method=post action=\"{}\">\
<input type=url name=url placeholder=\"http://mirror/nuvol-{}-VERSION.nvu\" required size=48> <button>Download, check and write</button></form>\
<p>The box downloads it itself (plain <code>http://</code>: the signature is what is trusted) and checks its signed head before the rest. \
Updates other boxes of the community offer: <code>nuvol ctl update --offers</code>, then <code>--from NODE</code>.</p>\
<h2>Reboot</h2>{}",
        esc(&state),
        match &running {
            Some(s) => format!("Running from slot {}.", esc(s)),
            None => "Not booted from a nuvol slot (development host).".into(),
        },
        esc(&policy),
        esc(&with_csrf("/api/v1/update", csrf, "/update")),
        nuvol_update::file_arch(std::env::consts::ARCH),
        esc(&with_csrf("/api/v1/update/fetch", csrf, "/update")),
        nuvol_update::file_arch(std::env::consts::ARCH),
        button("/api/v1/system/reboot", csrf, "/update", "Reboot now")
    );
    b
}

pub(super) fn running_slot() -> Option<String> {
    let c = std::fs::read_to_string("/proc/cmdline").ok()?;
    c.split_whitespace()
        .find_map(|w| w.strip_prefix("nuvol.slot="))
        .map(str::to_string)
}
