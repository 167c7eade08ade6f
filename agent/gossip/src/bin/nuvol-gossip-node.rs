//! A bare gossip node for tests and benchmarks (not shipped on the box):
//!
//! ```text
//! nuvol-gossip-node --name N --bind IP:PORT [--join IP:PORT]... [--profile lan|wan|local] [--key HEX] [--tag K=V]... [--probe-ms MS] [--max-members N]
//! ```
//!
//! `--probe-ms` probes every MS ms (timeout MS/2) and scales the suspicion
//! multiplier so the suspicion timeout stays the profile's, in seconds.
//!
//! Reads commands on stdin, one per line, answers one line on stdout:
//! `members` → `members name=status name=status ...`, `stats` → `stats
//! packets_in=N packets_out=N ...` (every counter of `StatsSnapshot`),
//! `health` → `health name=status,health,hops,loss ...` (`-` for unknown),
//! `event NAME PAYLOAD` → sends a user event (`sent`), `leave` → leaves
//! and exits. Member events are printed as they happen: `event
//! join|leave|failed|update|reap NAME`; user events as `event user NAME
//! LTIME`.

use nuvol_gossip::{Config, Event, Handle, Profile};
use std::io::{BufRead, Write};
use std::net::SocketAddr;

fn usage(msg: &str) -> ! {
    eprintln!("nuvol-gossip-node: {msg}");
    std::process::exit(2)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse() -> (Config, Vec<SocketAddr>) {
    let mut name = None;
    let mut bind: Option<SocketAddr> = None;
    let mut join = Vec::new();
    let mut profile = Profile::Lan;
    let mut keys = Vec::new();
    let mut tags = std::collections::BTreeMap::new();
    let mut probe_ms: Option<u64> = None;
    let mut max_members: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--name" => name = Some(v),
            "--bind" => bind = Some(v.parse().unwrap_or_else(|_| usage("bad --bind"))),
            "--join" => join.push(v.parse().unwrap_or_else(|_| usage("bad --join"))),
            "--profile" => {
                profile = match v.as_str() {
                    "lan" => Profile::Lan,
                    "wan" => Profile::Wan,
                    "local" => Profile::Local,
                    _ => usage("bad --profile"),
                }
            }
            "--key" => keys.push(hex(&v).unwrap_or_else(|| usage("bad --key"))),
            "--tag" => {
                let (k, v) = v.split_once('=').unwrap_or_else(|| usage("--tag K=V"));
                tags.insert(k.to_string(), v.to_string());
            }
            "--probe-ms" => {
                probe_ms = Some(
                    v.parse()
                        .ok()
                        .filter(|m| (10..=10_000).contains(m))
                        .unwrap_or_else(|| usage("bad --probe-ms")),
                )
            }
            "--max-members" => {
                max_members = Some(
                    v.parse()
                        .ok()
                        .filter(|m| *m >= 1)
                        .unwrap_or_else(|| usage("bad --max-members")),
                )
            }
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let name = name.unwrap_or_else(|| usage("--name is required"));
    let bind = bind.unwrap_or_else(|| usage("--bind is required"));
    let mut cfg = Config::new(name, bind, profile);
    cfg.keys = keys;
    cfg.tags = tags;
    if let Some(m) = max_members {
        cfg.max_members = m;
    }
    if let Some(ms) = probe_ms {
        let t = &mut cfg.timing;
        let scale = t.probe_interval.as_millis() as f64 / ms as f64;
        t.suspicion_mult = ((f64::from(t.suspicion_mult) * scale).round() as u32).max(1);
        t.probe_interval = std::time::Duration::from_millis(ms);
        t.probe_timeout = std::time::Duration::from_millis(ms / 2);
    }
    (cfg, join)
}

fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn main() {
    let (cfg, join) = parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("runtime: {e}")));
    rt.block_on(async move {
        let h = Handle::start(cfg)
            .await
            .unwrap_or_else(|e| usage(&format!("start: {e}")));
        let mut ev = h.events();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(l) = line else { break };
                if tx.blocking_send(l).is_err() {
                    break;
                }
            }
        });
        if !join.is_empty() {
            let h2 = h.clone();
            tokio::spawn(async move {
                // seeds may start a moment after us
                for _ in 0..50 {
                    if h2.join(&join).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            });
        }
        out("ready");
        loop {
            tokio::select! {
                e = ev.recv() => match e {
                    Ok(Event::Join(m)) => out(&format!("event join {}", m.name)),
                    Ok(Event::Leave(m)) => out(&format!("event leave {}", m.name)),
                    Ok(Event::Failed(m)) => out(&format!("event failed {}", m.name)),
                    Ok(Event::Reap(m)) => out(&format!("event reap {}", m.name)),
                    Ok(Event::User { name, ltime, .. }) => out(&format!("event user {name} {ltime}")),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                c = rx.recv() => match c.as_deref() {
                    Some("members") => {
                        let mut s = String::from("members");
                        for m in h.members() {
                            s.push_str(&format!(" {}={}", m.name, m.status.as_str()));
                        }
                        out(&s);
                    }
                    Some("health") => {
                        let mut s = String::from("health");
                        for m in h.members() {
                            let hops = m.hops.map_or("-".to_string(), |x| x.to_string());
                            let loss = m.loss.map_or("-".to_string(), |x| format!("{x:.3}"));
                            s.push_str(&format!(
                                " {}={},{},{},{}",
                                m.name,
                                m.status.as_str(),
                                m.health.as_str(),
                                hops,
                                loss
                            ));
                        }
                        out(&s);
                    }
                    Some("stats") => {
                        let mut s = String::from("stats");
                        for (k, v) in h.stats().fields() {
                            s.push_str(&format!(" {k}={v}"));
                        }
                        out(&s);
                    }
                    Some("leave") | None => {
                        h.leave().await;
                        out("left");
                        return;
                    }
                    Some(c) if c.starts_with("event ") => {
                        let mut it = c.splitn(3, ' ').skip(1);
                        let name = it.next().unwrap_or("");
                        let payload = it.next().unwrap_or("");
                        match h.user_event(name, payload.as_bytes(), false) {
                            Ok(()) => out("sent"),
                            Err(e) => out(&format!("error {e}")),
                        }
                    }
                    Some(_) => out("error unknown command"),
                },
            }
        }
    });
}
