//! `nuvol ctl settings [set KEY=VALUE… | reset KEY…]`.

use bytes::Bytes;
use clap::Subcommand;
use serde_json::Value;

use super::client::{Client, Payload};
use super::output::{cell, pretty, table};
use super::Fail;

#[derive(Subcommand, Debug)]
pub(super) enum SettingsCmd {
    /// Change settings: `KEY=VALUE` (a value of `-` is read from stdin,
    /// e.g. `admin.password=-`), `KEY=` for an empty value.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// The current admin password (or admin token), needed to change
        /// admin.password; `-` reads it from stdin.
        #[arg(long)]
        current: Option<String>,
    },
    /// Drop settings made here: nuvol.toml's value (or the default) is in
    /// force again.
    Reset {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `nuvol ctl settings [set KEY=VALUE… | reset KEY…]`.
pub(super) async fn run(c: &Client, json: bool, cmd: Option<SettingsCmd>) -> Result<(), Fail> {
    let body = match cmd {
        None => None,
        Some(SettingsCmd::Set { pairs, current }) => {
            let mut o = serde_json::Map::new();
            let mut stdin = std::io::stdin().lines();
            let mut read = |what: &str| -> Result<String, Fail> {
                match stdin.next() {
                    Some(Ok(l)) => Ok(l.trim_end_matches('\r').to_string()),
                    _ => Err(Fail(2, format!("{what}: nothing on stdin"))),
                }
            };
            for p in pairs {
                let Some((k, v)) = p.split_once('=') else {
                    return Err(Fail(2, format!("{p:?}: want KEY=VALUE")));
                };
                let v = if v == "-" { read(k)? } else { v.to_string() };
                o.insert(k.trim().to_string(), Value::String(v));
            }
            if let Some(cur) = current {
                let cur = if cur == "-" { read("--current")? } else { cur };
                o.insert("current".into(), Value::String(cur));
            }
            Some(Value::Object(o))
        }
        Some(SettingsCmd::Reset { keys }) => Some(Value::Object(
            keys.into_iter().map(|k| (k, Value::Null)).collect(),
        )),
    };
    let v = match body {
        None => {
            c.json("GET", "/api/v1/settings", Payload::Empty, None)
                .await?
        }
        Some(b) => {
            let bytes = Bytes::from(b.to_string());
            let len = bytes.len() as u64;
            c.json(
                "PUT",
                "/api/v1/settings",
                Payload::Json(Some(bytes)),
                Some(len),
            )
            .await?
        }
    };
    if json {
        pretty(&v);
        return Ok(());
    }
    let rows: Vec<Value> = v["settings"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, s)| {
            let value = if k == "admin.password" {
                Value::String(if s["password_set"] == true { "(set)" } else { "(not set)" }.into())
            } else {
                s["value"].clone()
            };
            serde_json::json!({"key": k, "value": value, "source": s["source"], "applies": s["applies"]})
        })
        .collect();
    table(&rows, &["key", "value", "source", "applies"]);
    for w in v["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", cell(w));
    }
    if v.get("restart_needed").is_some() {
        eprintln!("note: the host name applies at the next start of the agent (reboot)");
    }
    Ok(())
}
