//! `nuvol ctl status|local-services|logs|reboot|reset|update`: this box.

use std::io::Write;

use http_body_util::BodyExt;

use super::client::{error_text, Client, Payload};
use super::output::{cell, human_bytes, list, pretty, table};
use super::{Fail, BOX_ERROR};

pub(super) async fn status(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c
        .json("GET", "/api/v1/status", Payload::Empty, None)
        .await?;
    if json {
        pretty(&v);
    } else {
        let u = v["uptime_s"].as_u64().unwrap_or(0);
        println!("host     {}", cell(&v["hostname"]));
        println!("version  {} ({})", cell(&v["version"]), cell(&v["arch"]));
        println!("node     {}", cell(&v["node_id"]));
        println!(
            "uptime   {}d {}h {}m",
            u / 86400,
            u % 86400 / 3600,
            u % 3600 / 60
        );
        println!("load     {}", cell(&v["load"]));
        println!(
            "memory   {} used of {}",
            human_bytes(v["memory"]["used_bytes"].as_u64().unwrap_or(0)),
            human_bytes(v["memory"]["total_bytes"].as_u64().unwrap_or(0))
        );
        for d in v["disks"].as_array().into_iter().flatten() {
            println!(
                "disk     {} {} free of {}",
                cell(&d["mount"]),
                human_bytes(d["available_bytes"].as_u64().unwrap_or(0)),
                human_bytes(d["total_bytes"].as_u64().unwrap_or(0))
            );
        }
        if let Some(p) = v["config"]["problem"].as_str() {
            println!("PROBLEM  {p}");
        }
    }
    Ok(())
}

pub(super) async fn local_services(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c
        .json("GET", "/api/v1/local-services", Payload::Empty, None)
        .await?;
    if json {
        pretty(&v)
    } else {
        table(
            &list(&v),
            &["name", "state", "health", "restarts", "cpu", "memory_bytes"],
        )
    }
    Ok(())
}

pub(super) async fn logs(c: &Client, follow: bool, lines: u32, name: String) -> Result<(), Fail> {
    // The box keeps a quiet follow stream open (it is exempt from
    // the idle timer), but a restart of the agent or a network
    // hiccup still ends it: with -f, resume with only new lines
    // until interrupted or the service is gone.
    let mut lines = lines;
    loop {
        let path = format!(
            "/api/v1/services/{}/logs?lines={lines}{}",
            nuvol_api::parse::percent_encode(&name),
            if follow { "&follow=1" } else { "" }
        );
        let resp = c.send("GET", &path, Payload::Empty, None).await?;
        if !resp.status().is_success() {
            let st = resp.status();
            return Err(Fail(BOX_ERROR, format!("{st}: {}", error_text(resp).await)));
        }
        let mut body = resp.into_body();
        let mut out = std::io::stdout();
        while let Some(f) = body.frame().await {
            let Ok(f) = f else { break };
            if let Ok(d) = f.into_data() {
                if out.write_all(&d).and_then(|()| out.flush()).is_err() {
                    return Ok(());
                }
            }
        }
        if !follow {
            break;
        }
        lines = 0;
    }
    Ok(())
}

pub(super) async fn reboot(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c
        .json("POST", "/api/v1/system/reboot", Payload::Empty, Some(0))
        .await?;
    if json {
        pretty(&v)
    } else if v["rebooting"] == true {
        println!("the box is rebooting");
    } else {
        println!(
            "{}",
            v["message"].as_str().unwrap_or("the box did not reboot")
        );
    }
    Ok(())
}

/// `reset [--yes]`: name the box, ask (like `bundles install --from`), then
/// `POST /api/v1/reset` with the confirmation.
pub(super) async fn reset(c: &Client, json: bool, yes: bool) -> Result<(), Fail> {
    if !yes {
        let v = c
            .json("GET", "/api/v1/status", Payload::Empty, None)
            .await?;
        eprintln!(
            "Factory reset of {} (node {}): its keys, bundles, API tokens, node identity,\n\
             TLS key and service data are erased; it reboots and provisions itself\n\
             from nuvol.toml on its boot partition, with a new admin token on its console.",
            cell(&v["hostname"]),
            cell(&v["node_id"])
        );
        eprint!("Reset this box? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            return Err(Fail(
                BOX_ERROR,
                "nothing was reset (not confirmed; --yes skips the question)".into(),
            ));
        }
    }
    let body = bytes::Bytes::from_static(br#"{"confirm": true}"#);
    let len = body.len() as u64;
    let v = c
        .json(
            "POST",
            "/api/v1/reset",
            Payload::Json(Some(body)),
            Some(len),
        )
        .await?;
    if json {
        pretty(&v)
    } else if v["resetting"] == true {
        println!("the box is resetting: it reboots, wipes its data partition and provisions itself from nuvol.toml; the new admin token is on its console");
    } else {
        println!(
            "{}",
            v["message"].as_str().unwrap_or("the box did not reset")
        );
    }
    Ok(())
}

pub(super) async fn update(
    c: &Client,
    json: bool,
    file: Option<&std::path::Path>,
    allow_downgrade: bool,
) -> Result<(), Fail> {
    if let Some(f) = file {
        let (body, len) = super::client::upload(f)?;
        let path = if allow_downgrade {
            "/api/v1/update?allow_downgrade=1"
        } else {
            "/api/v1/update"
        };
        let v = c.json("POST", path, body, Some(len)).await?;
        if json {
            pretty(&v)
        } else {
            println!("{}", v["message"].as_str().unwrap_or("update written"));
        }
        return Ok(());
    }
    let v = c
        .json("GET", "/api/v1/update", Payload::Empty, None)
        .await?;
    if json {
        pretty(&v);
        return Ok(());
    }
    print_update(&v);
    Ok(())
}

/// `update --offers`: what the community's boxes offer.
pub(super) async fn update_offers(c: &Client, json: bool) -> Result<(), Fail> {
    let v = c
        .json("GET", "/api/v1/update/offers", Payload::Empty, None)
        .await?;
    if json {
        pretty(&v);
        return Ok(());
    }
    let offers = v["offers"].as_array().cloned().unwrap_or_default();
    if offers.is_empty() {
        println!("no box offers an OS update");
    }
    for o in &offers {
        println!(
            "{}: {} ({}, {}){}",
            o["node"].as_str().unwrap_or("?"),
            o["version"].as_str().unwrap_or("?"),
            o["arch"].as_str().unwrap_or("?"),
            nuvol_human::bytes(o["size"].as_u64().unwrap_or(0)),
            if o["newer"] == true { ", newer" } else { "" }
        );
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        println!(
            "{}: {}",
            e["node"].as_str().unwrap_or("?"),
            e["error"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `update --from NODE` / `--url URL` (`req`: `{"node"}` or `{"url"}`):
/// the box fetches that update and applies it.
pub(super) async fn update_fetch(
    c: &Client,
    json: bool,
    req: serde_json::Value,
    allow_downgrade: bool,
) -> Result<(), Fail> {
    let path = if allow_downgrade {
        "/api/v1/update/fetch?allow_downgrade=1"
    } else {
        "/api/v1/update/fetch"
    };
    let body = req.to_string();
    let v = c
        .json("POST", path, Payload::Json(Some(body.into())), None)
        .await?;
    if json {
        pretty(&v)
    } else {
        println!("{}", v["message"].as_str().unwrap_or("update written"));
    }
    Ok(())
}

/// The slots and the update state, for people.
pub(super) fn print_update(v: &serde_json::Value) {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    println!(
        "running slot {} ({}), default slot {}",
        s("running_slot"),
        s("running_version"),
        s("default_slot")
    );
    if let Some(slots) = v["slots"].as_object() {
        for (name, slot) in slots {
            println!(
                "  slot {name}: {}",
                slot["version"].as_str().unwrap_or("version unknown")
            );
        }
    }
    if let Some(line) = nuvol_api::update::state_line(v) {
        println!("{line}");
    } else if let Some(m) = v["message"].as_str() {
        println!("{m}");
    }
    if let Some(line) = nuvol_api::update::policy_line(v) {
        println!("{line}");
    }
}
