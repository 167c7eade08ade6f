//! `POST /api/v1/update`: an OS update artefact (`.nvu`) as the body (or a
//! `multipart/form-data` form with it); `?allow_downgrade=1` accepts a
//! version not newer than the running one. The body is streamed to the
//! data partition, then the agent checks it completely (signature by an
//! `[update] trusted_keys` key, architecture, versions, sizes, hashes)
//! before anything is written to the boot partition, writes the inactive
//! slot, reads it back and arms a one-shot try (docs/boot.md, "Update").
//! Refusals answer with the artefact's codes (docs/api.md).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::bundles::{receive_max, UploadHead};
use crate::{json, parse, Ctx, Resp};

/// An update's refusal as an API error.
pub fn refusal(r: &nuvol_update::Refusal) -> Resp {
    let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::error(status, r.code(), &r.to_string())
}

/// Where an artefact is received, or 501 `update_unavailable` when this
/// box cannot update (not booted from a nuvol slot).
#[allow(clippy::result_large_err)] // a ready-made error response
pub fn upload_dir(ctx: &Ctx) -> Result<std::path::PathBuf, Resp> {
    crate::os_fetch::upload_dir(ctx.node.as_ref()).map_err(|f| f.resp())
}

pub async fn apply(ctx: &Ctx, req: Request<Incoming>) -> Resp {
    let allow_downgrade = parse::form_get(req.uri().query().unwrap_or(""), "allow_downgrade")
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes" | "on"));
    // Refused before the body is read where there is nothing to update.
    let dir = match upload_dir(ctx) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let head = UploadHead::of(&req);
    let upload = match receive_max(
        req.into_body(),
        &dir,
        head,
        nuvol_update::artefact::MAX_ARTEFACT,
    )
    .await
    {
        Ok(u) => u,
        Err(r) => return r,
    };
    answer(apply_file(&ctx.node, upload, allow_downgrade).await)
}

/// Check a received artefact and apply it (on the blocking pool); the
/// file is removed after.
pub(crate) async fn apply_file(
    node: &std::sync::Arc<dyn crate::Node>,
    upload: crate::bundles::Upload,
    allow_downgrade: bool,
) -> Result<serde_json::Value, nuvol_update::Refusal> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || {
        let r = node.update_apply(upload.path(), allow_downgrade);
        drop(upload);
        r
    })
    .await
    .unwrap_or_else(|e| Err(nuvol_update::Refusal::Failed(format!("update task: {e}"))))
}

/// The answer to an applied update or its refusal.
fn answer(r: Result<serde_json::Value, nuvol_update::Refusal>) -> Resp {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => {
            tracing::warn!("update refused: {e}");
            refusal(&e)
        }
    }
}

/// The update record in one line (`nuvol_human::update_line`).
pub fn state_line(v: &serde_json::Value) -> Option<String> {
    let u = &v["update"];
    u.is_object().then(|| {
        nuvol_human::update_line(
            u["version"].as_str().unwrap_or("?"),
            u["slot"].as_str().unwrap_or("?"),
            u["phase"].as_str().unwrap_or("?"),
            u["tries"].as_u64().unwrap_or(0),
            v["max_tries"].as_u64().unwrap_or(0),
            u["reason"].as_str(),
        )
    })
}

/// The `[update] policy` and its last look in one line.
pub fn policy_line(v: &serde_json::Value) -> Option<String> {
    let p = &v["policy"];
    let policy = p["policy"].as_str()?;
    let mut line = format!("update policy {policy}");
    if let Some(w) = p["window"].as_str() {
        line.push_str(&format!(" (window {w} UTC)"));
    }
    match p["last"]["action"].as_str() {
        Some(a) => line.push_str(&format!(": {a}")),
        None if policy != "manual" => line.push_str(": not looked yet"),
        None => {}
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_policy_reads_as_one_line() {
        let v = json!({"policy": {"policy": "auto", "window": "02:00-05:00",
            "last": {"action": "no newer update"}}});
        assert_eq!(
            policy_line(&v).unwrap(),
            "update policy auto (window 02:00-05:00 UTC): no newer update"
        );
        let v = json!({"policy": {"policy": "notify", "window": null, "last": null}});
        assert_eq!(
            policy_line(&v).unwrap(),
            "update policy notify: not looked yet"
        );
        assert_eq!(policy_line(&json!({})), None);
    }
}
