//! `POST /api/v1/reset`: factory reset. The agent records the request on
//! the data partition (durably) and asks PID 1 to reboot; `nuvol init`
//! wipes the data partition early in the next boot and the box provisions
//! itself from `nuvol.toml` as on its first boot (docs/boot.md).
//!
//! The body must say `confirm`: JSON `{"confirm": true}` or the form field
//! `confirm=yes` (the panel's checkbox); without it the answer is 400
//! `confirm_required` and nothing happens. Test hook (`[debug] test_hooks`):
//! `POST /api/v1/debug/slow-reset` makes the next reset's wipe pause
//! [`TEST_PAUSE_SECS`] after its first removal, so a test can cut the power
//! in the middle of it.

use std::sync::atomic::{AtomicU32, Ordering};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

use crate::{error, json, parse, small_body, Ctx, Resp};

/// The test hook's pause in the middle of the wipe.
pub const TEST_PAUSE_SECS: u32 = 120;

static TEST_PAUSE: AtomicU32 = AtomicU32::new(0);

/// Arm the test hook: the next reset's wipe pauses (first attempt only).
pub fn arm_test_pause() {
    TEST_PAUSE.store(TEST_PAUSE_SECS, Ordering::SeqCst);
}

/// Whether a reset body confirms: JSON `{"confirm": true}` (or `"yes"`),
/// or the form field `confirm=yes` (`on`, `true`, `1`).
pub fn confirmed(body: &[u8]) -> bool {
    let yes = |s: &str| matches!(s.trim(), "yes" | "on" | "true" | "1");
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return match &v["confirm"] {
            Value::Bool(b) => *b,
            Value::String(s) => yes(s),
            _ => false,
        };
    }
    parse::form_get(&String::from_utf8_lossy(body), "confirm").is_some_and(|v| yes(&v))
}

pub async fn handle(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let body = match small_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !confirmed(&body) {
        return error(
            StatusCode::BAD_REQUEST,
            "confirm_required",
            "a factory reset erases this box's keys, bundles, tokens and service data: send {\"confirm\": true} (or the form field confirm=yes)",
        );
    }
    let pause = if ctx.node.test_hooks() {
        TEST_PAUSE.swap(0, Ordering::SeqCst)
    } else {
        0
    };
    let node = ctx.node.clone();
    let r = tokio::task::spawn_blocking(move || node.factory_reset(pause))
        .await
        .unwrap_or_else(|e| Err(format!("factory reset task: {e}")));
    match r {
        Ok(true) => {
            tracing::warn!("factory reset requested through the API: rebooting");
            json(
                StatusCode::ACCEPTED,
                &json!({
                    "resetting": true,
                    "message": "factory reset recorded: the box reboots, wipes its data partition and provisions itself from nuvol.toml; the new admin token is on the console",
                }),
            )
        }
        Ok(false) => json(
            StatusCode::ACCEPTED,
            &json!({ "resetting": false, "message": "not running under nuvol init: nothing was reset" }),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "reset_failed", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::confirmed;

    #[test]
    fn only_an_explicit_confirmation_counts() {
        for yes in [
            &br#"{"confirm": true}"#[..],
            br#"{"confirm": "yes"}"#,
            b"confirm=yes",
            b"back=%2Fsettings&confirm=on",
        ] {
            assert!(confirmed(yes), "{}", String::from_utf8_lossy(yes));
        }
        for no in [
            &b""[..],
            b"{}",
            br#"{"confirm": false}"#,
            br#"{"confirm": 1}"#,
            b"confirm=no",
            b"confirm=",
            b"garbage\xff",
        ] {
            assert!(!confirmed(no), "{}", String::from_utf8_lossy(no));
        }
    }
}
