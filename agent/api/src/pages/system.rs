//! The Network and Update pages: interfaces, leases, A/B slots, reboot.

use std::fmt::Write;

use super::frame::button;
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

pub(super) fn update(csrf: &str) -> String {
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

pub(super) fn running_slot() -> Option<String> {
    let c = std::fs::read_to_string("/proc/cmdline").ok()?;
    c.split_whitespace()
        .find_map(|w| w.strip_prefix("nuvol.slot="))
        .map(str::to_string)
}
