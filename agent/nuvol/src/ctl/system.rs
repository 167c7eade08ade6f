//! `nuvol ctl status|local-services|logs|reboot|update`: this box.

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
        println!("version  {}", cell(&v["version"]));
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

pub(super) async fn update(c: &Client, json: bool) -> Result<(), Fail> {
    // Ask the box, so the answer stays true when updates land.
    let v = c
        .json("POST", "/api/v1/update", Payload::Empty, Some(0))
        .await?;
    if json {
        pretty(&v)
    } else {
        println!("update started");
    }
    Ok(())
}
