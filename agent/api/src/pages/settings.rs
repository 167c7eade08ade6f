//! The Settings page: the settings form, API tokens, factory reset, how to
//! log in.

use std::fmt::Write;

use super::frame::{button, with_csrf};
use crate::panel::esc;
use crate::Ctx;

pub(super) fn settings(ctx: &Ctx, csrf: &str) -> String {
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
            crate::human::utc(t.created),
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
        "<h2 id=reset>Factory reset</h2><p>Erases this box's publisher keys, bundles, API tokens, \
node identity, TLS key, settings and service data. The box reboots, wipes its data partition and \
provisions itself from <code>nuvol.toml</code> on its boot partition as on its first boot: the new \
admin token is printed on its console. (From a laptop: put a file named <code>factory-reset</code> \
on the boot partition.)</p><form id=factory-reset method=post action=\"{}\">\
<label><input type=checkbox name=confirm value=yes required> Yes, erase everything on this box</label> \
<button>Factory reset</button></form>",
        esc(&with_csrf("/api/v1/reset", csrf, "/settings"))
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
