//! `nuvol ctl bundles list|available|install|remove`.

use bytes::Bytes;
use clap::Subcommand;
use serde_json::Value;

use super::client::{upload, Client, Payload};
use super::output::{cell, human_bytes, list, pretty, print_installed, table};
use super::{Fail, BOX_ERROR};

#[derive(Subcommand, Debug)]
pub(super) enum BundlesCmd {
    /// Installed bundles.
    List,
    /// Bundles other boxes of the community offer (node, version,
    /// publisher, whether this box trusts the publisher's key).
    Available {
        /// Ask every provider again instead of using answers up to 60 s old.
        #[arg(long)]
        refresh: bool,
    },
    /// Upload a bundle file (the box verifies its signature, then installs),
    /// or with --from NODE fetch the bundle NAME that node offers: the box
    /// downloads and verifies it against its own keys, shows publisher and
    /// signature, and installs after you confirm.
    Install {
        /// The bundle file; with --from, the bundle's name.
        #[arg(value_name = "FILE|NAME")]
        target: String,
        /// Fetch from this node of the community (see `bundles available`).
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
        /// With --from: install without asking.
        #[arg(short, long)]
        yes: bool,
    },
    /// Remove a bundle (its data is kept unless --purge).
    Remove {
        name: String,
        #[arg(long)]
        purge: bool,
    },
}

pub(super) async fn run(c: &Client, json: bool, cmd: BundlesCmd) -> Result<(), Fail> {
    match cmd {
        BundlesCmd::List => list_installed(c, json).await,
        BundlesCmd::Available { refresh } => available(c, json, refresh).await,
        BundlesCmd::Install {
            target,
            from: Some(node),
            yes,
        } => install_from(c, json, &node, &target, yes).await,
        BundlesCmd::Install { target, .. } => install(c, json, &target).await,
        BundlesCmd::Remove { name, purge } => remove(c, json, &name, purge).await,
    }
}

async fn list_installed(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c
        .json("GET", "/api/v1/bundles", Payload::Empty, None)
        .await?;
    if json {
        pretty(&v);
        return Ok(());
    }
    table(
        &list(&v),
        &["name", "version", "publisher", "publisher_key_id", "state"],
    );
    for b in list(&v).iter().filter(|b| b["state"] == "broken") {
        let name = cell(&b["name"]);
        println!(
            "{name}: broken: {}: {} (remove it: nuvol ctl bundles remove {name})",
            cell(&b["file"]),
            cell(&b["problem"])
        );
    }
    // Where they live and what still fits (a box without the route: nothing).
    if let Ok(s) = c.json("GET", "/api/v1/storage", Payload::Empty, None).await {
        let n = |k: &str| human_bytes(s[k].as_u64().unwrap_or(0));
        println!(
            "free: {} of {} on {} (a bundle up to {} fits)",
            n("free_bytes"),
            n("total_bytes"),
            cell(&s["path"]),
            n("largest_bundle_bytes")
        );
    }
    Ok(())
}

async fn available(c: &Client, json: bool, refresh: bool) -> Result<(), Fail> {
    let path = if refresh {
        "/api/v1/community/bundles?refresh=1"
    } else {
        "/api/v1/community/bundles"
    };
    let v = c.json("GET", path, Payload::Empty, None).await?;
    if json {
        pretty(&v)
    } else {
        let rows: Vec<Value> = list(&v["bundles"])
            .into_iter()
            .map(|mut r| {
                r["trusted"] = Value::from(if r["trusted"] == true { "yes" } else { "NO" });
                r["size"] = Value::from(human_bytes(r["size"].as_u64().unwrap_or(0)));
                r
            })
            .collect();
        if rows.is_empty() {
            println!("no bundles offered ({} providers)", cell(&v["providers"]));
        } else {
            table(
                &rows,
                &[
                    "node",
                    "name",
                    "version",
                    "arch",
                    "publisher",
                    "trusted",
                    "installed_version",
                    "size",
                ],
            );
        }
        for e in list(&v["errors"]) {
            eprintln!("{}: {}", cell(&e["node"]), cell(&e["error"]));
        }
    }
    Ok(())
}

async fn install(c: &Client, json: bool, target: &str) -> Result<(), Fail> {
    let (body, len) = upload(std::path::Path::new(&target))?;
    let v = c.json("POST", "/api/v1/bundles", body, Some(len)).await?;
    print_installed(&v, json);
    Ok(())
}

async fn remove(c: &Client, json: bool, name: &str, purge: bool) -> Result<(), Fail> {
    let path = format!(
        "/api/v1/bundles/{}{}",
        nuvol_api::parse::percent_encode(name),
        if purge { "?purge=1" } else { "" }
    );
    let v = c.json("DELETE", &path, Payload::Empty, None).await?;
    if json {
        pretty(&v)
    } else {
        println!(
            "removed {name}{}",
            if purge {
                " and its data"
            } else {
                " (data kept)"
            }
        );
    }
    Ok(())
}

/// `bundles install --from NODE NAME`: fetch into a pending upload (the box
/// verifies it), show what it is, ask, install or discard.
async fn install_from(
    c: &Client,
    json: bool,
    node: &str,
    name: &str,
    yes: bool,
) -> Result<(), Fail> {
    let req = serde_json::json!({ "node": node, "name": name }).to_string();
    let len = req.len() as u64;
    let v = c
        .json(
            "POST",
            "/api/v1/bundles/fetch",
            Payload::Json(Some(Bytes::from(req))),
            Some(len),
        )
        .await?;
    let id = v["pending"].as_str().unwrap_or("").to_string();
    let out = |s: String| {
        if json {
            eprintln!("{s}")
        } else {
            println!("{s}")
        }
    };
    out(format!(
        "{} {} from {node}\n  publisher:      {}\n  key:            {} (trusted on this box)\n  signature:      {}\n  image SHA-256:  {}\n  installed now:  {}",
        cell(&v["name"]),
        cell(&v["version"]),
        cell(&v["publisher"]),
        cell(&v["publisher_key_id"]),
        cell(&v["signature"]),
        cell(&v["digest"]),
        v["installed_version"].as_str().unwrap_or("not installed"),
    ));
    let pending = format!(
        "/api/v1/bundles/pending/{}",
        nuvol_api::parse::percent_encode(&id)
    );
    if !yes {
        eprint!("Install it? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            let _ = c.json("DELETE", &pending, Payload::Empty, None).await;
            return Err(Fail(
                BOX_ERROR,
                "not installed (not confirmed; --yes skips the question)".into(),
            ));
        }
    }
    let r = c
        .json(
            "POST",
            &format!("{pending}/install"),
            Payload::Empty,
            Some(0),
        )
        .await?;
    print_installed(&r, json);
    Ok(())
}
