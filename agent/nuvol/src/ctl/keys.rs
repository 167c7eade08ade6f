//! `nuvol ctl keys list|add|remove|revoke`: the box's trusted publisher
//! keys (`/api/v1/keys`, see docs/bundles.md).

use std::io::Read;

use bytes::Bytes;
use clap::Subcommand;

use super::client::{Client, Payload};
use super::output::{pretty, table, utc_time};
use super::Fail;

/// Most bytes read from a key file or stdin (the box takes at most 8 KiB;
/// a public key file is about 100 bytes).
const MAX_KEY_FILE: u64 = 64 * 1024;

#[derive(Subcommand, Debug)]
pub(super) enum KeysCmd {
    /// Trusted and revoked publisher keys: key id, state, when added (or
    /// revoked), comment (or the reason for the revocation).
    List,
    /// Trust a publisher key: a public key file as `nuvol bundle keygen`,
    /// signify or minisign write it (`untrusted comment: …` and a base64
    /// line), or just the base64 line; `-` reads it from stdin. A revoked
    /// key cannot be trusted again.
    Add {
        /// The public key file, or `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Stop trusting a key (16 hex digits, as `keys list` shows it); it can
    /// be added again. Until then bundles it signed are refused: the box
    /// checks the signature before it installs one and before it starts
    /// one (e.g. at its next start).
    Remove {
        /// The key's id: 16 hex digits.
        #[arg(value_name = "KEYID")]
        key_id: String,
    },
    /// Revoke a key for good: it is no longer trusted and can never be
    /// added again; bundles it signed are refused from then on (install,
    /// start, rollback) and listed as key-revoked. Also works for a key the
    /// box never trusted.
    Revoke {
        /// The key's id: 16 hex digits.
        #[arg(value_name = "KEYID")]
        key_id: String,
        /// Why (kept in the revocation list).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub(super) async fn run(c: &Client, json: bool, cmd: KeysCmd) -> Result<(), Fail> {
    match cmd {
        KeysCmd::List => list(c, json).await,
        KeysCmd::Add { file } => add(c, json, &file).await,
        KeysCmd::Remove { key_id } => remove(c, json, &key_id).await,
        KeysCmd::Revoke { key_id, reason } => revoke(c, json, &key_id, &reason).await,
    }
}

async fn list(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c.json("GET", "/api/v1/keys", Payload::Empty, None).await?;
    if json {
        pretty(&v);
        return Ok(());
    }
    let mut rows = Vec::new();
    for k in v["trusted"].as_array().into_iter().flatten() {
        rows.push(serde_json::json!({
            "key_id": k["key_id"],
            "state": "trusted",
            "since": utc_time(k["added_at"].as_u64()),
            "comment": k["comment"],
        }));
    }
    for k in v["revoked"].as_array().into_iter().flatten() {
        rows.push(serde_json::json!({
            "key_id": k["key_id"],
            "state": "revoked",
            "since": utc_time(k["revoked_at"].as_u64()),
            "comment": k["reason"],
        }));
    }
    table(&rows, &["key_id", "state", "since", "comment"]);
    Ok(())
}

/// The key file's text, from a file or stdin, within [`MAX_KEY_FILE`].
fn read_key(file: &str) -> Result<Vec<u8>, Fail> {
    let mut buf = Vec::new();
    let r = if file == "-" {
        std::io::stdin()
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut buf))
    };
    let what = if file == "-" { "stdin" } else { file };
    r.map_err(|e| Fail(2, format!("{what}: {e}")))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(Fail(
            2,
            format!("{what}: over {MAX_KEY_FILE} bytes; not a public key file"),
        ));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(Fail(2, format!("{what}: empty; give a public key file")));
    }
    Ok(buf)
}

async fn add(c: &Client, json: bool, file: &str) -> Result<(), Fail> {
    let body = Bytes::from(read_key(file)?);
    let len = body.len() as u64;
    let v = c
        .json("POST", "/api/v1/keys", Payload::Json(Some(body)), Some(len))
        .await?;
    if json {
        pretty(&v);
    } else {
        println!(
            "trusted key {}",
            v["key_id"]
                .as_str()
                .unwrap_or("(the box did not say which)")
        );
    }
    Ok(())
}

fn key_path(key_id: &str) -> String {
    format!(
        "/api/v1/keys/{}",
        nuvol_api::parse::percent_encode(key_id.trim())
    )
}

async fn remove(c: &Client, json: bool, key_id: &str) -> Result<(), Fail> {
    let v = c
        .json("DELETE", &key_path(key_id), Payload::Empty, None)
        .await?;
    if json {
        pretty(&v);
    } else {
        println!("key {} is no longer trusted", key_id.trim());
    }
    Ok(())
}

async fn revoke(c: &Client, json: bool, key_id: &str, reason: &str) -> Result<(), Fail> {
    let body = Bytes::from(reason.to_string());
    let len = body.len() as u64;
    let v = c
        .json(
            "POST",
            &format!("{}/revoke", key_path(key_id)),
            Payload::Json(Some(body)),
            Some(len),
        )
        .await?;
    if json {
        pretty(&v);
    } else {
        println!(
            "key {} is revoked: bundles it signed are refused from now on",
            key_id.trim()
        );
    }
    Ok(())
}
