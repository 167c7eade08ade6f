//! The Settings page: the settings form, API tokens, how to log in.

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
        "<h2>Login</h2><p>{}</p>",
        if ctx.auth.admin_token_active() {
            "You log in with the admin token shown on the console. Set a password above, or <code>[admin] password_hash</code> in nuvol.toml (make one with <code>nuvol ctl hash-password</code>), to use a password instead."
        } else {
            "You log in with the admin password (set above, or <code>[admin] password_hash</code> in nuvol.toml)."
        }
    );
    b
}
