//! The services on this box as people read them: name and state first,
//! then uptime, restarts, memory, CPU, ports, last exit and version, each
//! in human units. The Services page shows the full table with actions and
//! live logs; the Dashboard a short one with a summary.

use std::fmt::Write;
use std::time::Duration;

use nuvol_supervisor::State;

use super::frame::button;
use crate::human;
use crate::panel::esc;
use crate::services::{exit_text, Condition, LocalService};
use crate::{parse, Ctx};

/// The services, by name; `None` when the agent runs no supervisor.
pub(super) fn list(ctx: &Ctx) -> Option<Vec<LocalService>> {
    let mut l = ctx.node.services()?.list();
    l.sort_by(|a, b| a.status.name.cmp(&b.status.name));
    Some(l)
}

/// A column of the services table: its title and how to fill a cell.
struct Col {
    title: &'static str,
    cell: fn(&LocalService) -> String,
}

const NAME: Col = Col {
    title: "Service",
    cell: |s| esc(&s.status.name),
};
const STATE: Col = Col {
    title: "State",
    cell: state_cell,
};
const UPTIME: Col = Col {
    title: "Uptime",
    cell: |s| s.uptime().map_or_else(dash, human::duration),
};
const RESTARTS: Col = Col {
    title: "Restarts",
    cell: |s| match s.status.oom_kills {
        0 => s.status.restarts.to_string(),
        n => format!("{} ({n} OOM)", s.status.restarts),
    },
};
const MEMORY: Col = Col {
    title: "Memory",
    cell: |s| match (s.status.pid, s.status.memory_bytes) {
        (Some(_), n) if n > 0 => human::bytes(n),
        _ => dash(),
    },
};
const CPU: Col = Col {
    title: "CPU",
    cell: |s| match s.status.pid {
        Some(_) => human::duration(Duration::from_micros(s.status.cpu_usec)),
        None => dash(),
    },
};
const PORTS: Col = Col {
    title: "Ports",
    cell: ports_cell,
};
const LAST_EXIT: Col = Col {
    title: "Last exit",
    cell: |s| match &s.status.last_exit {
        Some(e) => {
            let mut t = esc(&exit_text(e));
            if let Some(ago) = s.last_exit_ago() {
                let _ = write!(t, " <small>{} ago</small>", human::duration(ago));
            }
            t
        }
        None => dash(),
    },
};
const VERSION: Col = Col {
    title: "Version",
    cell: |s| {
        let mut t = esc(s.version.as_deref().unwrap_or("–"));
        if let Some(d) = &s.digest {
            let _ = write!(
                t,
                " <code title=\"{}\">{}</code>",
                esc(d),
                esc(human::short_digest(d))
            );
        }
        t
    },
};

/// The Services page's columns.
const FULL: &[Col] = &[
    NAME, STATE, UPTIME, RESTARTS, MEMORY, CPU, PORTS, LAST_EXIT, VERSION,
];
/// The Dashboard's.
const SHORT: &[Col] = &[NAME, STATE, UPTIME, RESTARTS, MEMORY];

fn dash() -> String {
    "–".to_string()
}

/// The state word (class `st-<word>` for its colour) and, when it is not
/// plain, why (`restarting in 4.0 s, last exit: exit code 1`).
fn state_cell(s: &LocalService) -> String {
    let (c, why) = s.condition();
    let mut t = format!("<b class=st-{0}>{0}</b>", c.word());
    if !why.is_empty() {
        let _ = write!(t, "<small>{}</small>", esc(&why));
    }
    t
}

/// Its address on the bridge (if any), then its declared ports, those for
/// the overlay's boxes only marked so.
fn ports_cell(s: &LocalService) -> String {
    let ports: Vec<String> = s
        .ports
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                nuvol_bundle::manifest::Protocol::Tcp => "tcp",
                nuvol_bundle::manifest::Protocol::Udp => "udp",
            };
            let only = if p.overlay_only { " (overlay)" } else { "" };
            format!("{}/{proto}{only}", p.port)
        })
        .collect();
    let ports = if ports.is_empty() {
        dash()
    } else {
        ports.join(" ")
    };
    match &s.status.address {
        Some(a) => format!("{}<small>{}</small>", esc(&ports), esc(a)),
        None => esc(&ports),
    }
}

/// The table: `cols`, then `actions(service)` if given.
fn table(
    list: &[LocalService],
    id: &str,
    cols: &[Col],
    actions: Option<&dyn Fn(&LocalService) -> String>,
) -> String {
    let mut h = format!("<div class=wrap><table id={id} class=services><tr>");
    for c in cols {
        let _ = write!(h, "<th>{}</th>", c.title);
    }
    if actions.is_some() {
        h.push_str("<th>Actions</th>");
    }
    h.push_str("</tr>");
    for s in list {
        let (c, _) = s.condition();
        let _ = write!(h, "<tr class=row-{}>", c.word());
        for col in cols {
            let _ = write!(h, "<td>{}</td>", (col.cell)(s));
        }
        if let Some(f) = actions {
            let _ = write!(h, "<td>{}</td>", f(s));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

/// `3 services: 1 running, 2 failing` (conditions in order of concern).
pub(super) fn summary(list: &[LocalService]) -> String {
    let mut counts: Vec<(Condition, usize)> = Vec::new();
    for s in list {
        let c = s.condition().0;
        match counts.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((c, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts
        .iter()
        .map(|(c, n)| format!("{n} {}", c.word()))
        .collect();
    let n = list.len();
    format!(
        "{n} service{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// One alert per service in trouble, with the reason.
pub(super) fn alerts(list: &[LocalService]) -> Vec<String> {
    list.iter()
        .filter_map(|s| {
            let (c, why) = s.condition();
            let name = &s.status.name;
            c.is_trouble().then(|| match c {
                Condition::Broken => format!("Service {name} cannot run: {why}"),
                Condition::Failed => format!("Service {name} stopped after a failure: {why}"),
                _ => format!("Service {name} is failing: {why}"),
            })
        })
        .collect()
}

/// The Dashboard's section: summary and short table.
pub(super) fn dashboard_section(list: Option<&[LocalService]>) -> String {
    let mut b = String::from("<h2>Services on this box</h2><div id=dashboard-services>");
    match list {
        Some([]) => b.push_str("<p>No services run on this box yet. Install a bundle on the <a href=\"/bundles\">Bundles</a> page.</p>"),
        Some(l) => {
            let _ = write!(
                b,
                "<p id=services-summary>{} · <a href=\"/services\">manage</a></p>",
                esc(&summary(l))
            );
            b.push_str(&table(l, "services-short", SHORT, None));
        }
        None => b.push_str("<p>The service supervisor is not running in this agent.</p>"),
    }
    b.push_str("</div>");
    b
}

/// The buttons that make sense in its state, and its log.
fn actions(s: &LocalService, csrf: &str) -> String {
    let base = format!("/api/v1/services/{}", parse::percent_encode(&s.status.name));
    let verbs: &[&str] = match (s.condition().0, s.status.state) {
        (Condition::Broken | Condition::Waiting, _) => &[],
        (_, State::Stopped | State::Exited) => &["start"],
        (_, State::Stopping) => &[],
        _ => &["stop", "restart"],
    };
    let mut h = String::new();
    for a in verbs {
        h.push_str(&button(&format!("{base}/{a}"), csrf, "/services", a));
    }
    let _ = write!(h, " <a href=\"{}/logs?lines=200\">logs</a>", esc(&base));
    h
}

/// The Services page body.
pub(super) fn services_html(list: Option<&[LocalService]>, csrf: &str) -> String {
    let mut b = String::from("<div id=local-services>");
    match list {
        Some([]) => b.push_str("<p>No services run on this box yet. Install a bundle on the <a href=\"/bundles\">Bundles</a> page.</p>"),
        Some(l) => {
            let _ = write!(b, "<p id=services-summary>{}</p>", esc(&summary(l)));
            b.push_str(&table(l, "services", FULL, Some(&|s| actions(s, csrf))));
            for s in l {
                let _ = write!(
                    b,
                    "<details><summary>Live log: {}</summary><pre data-follow=\"/api/v1/services/{}/logs?follow=1&amp;lines=50\"></pre></details>",
                    esc(&s.status.name),
                    esc(&parse::percent_encode(&s.status.name))
                );
            }
        }
        None => b.push_str("<p>The service supervisor is not running in this agent.</p>"),
    }
    b.push_str("</div>");
    b
}

pub(super) fn services(ctx: &Ctx, csrf: &str) -> String {
    services_html(list(ctx).as_deref(), csrf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuvol_bundle::manifest::{Port, Protocol};
    use nuvol_supervisor::{ExitReason, ExitRecord, ExitStatus, Health, ServiceStatus};

    /// A service as the agent lists it, the supervisor's clock at 10 min.
    fn svc(name: &str, state: State) -> LocalService {
        LocalService {
            status: ServiceStatus {
                name: name.into(),
                state,
                pid: None,
                health: Health::None,
                last_health_error: None,
                restarts: 0,
                oom_kills: 0,
                last_exit: None,
                started_ms: vec![],
                backoff_ms: vec![],
                memory_bytes: 0,
                cpu_usec: 0,
                processes: 0,
                forks_refused: 0,
                address: None,
            },
            version: Some("1.0".into()),
            digest: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into()),
            problem: None,
            waiting: None,
            now_ms: Some(600_000),
            ports: vec![],
        }
    }

    fn running(name: &str) -> LocalService {
        let mut s = svc(name, State::Running);
        s.status.pid = Some(42);
        s.status.started_ms = vec![475_000];
        s.status.memory_bytes = 12 << 20;
        s.status.cpu_usec = 3_500_000;
        s.ports = vec![
            Port {
                name: "gui".into(),
                port: 8384,
                protocol: Protocol::Tcp,
                overlay_only: false,
            },
            Port {
                name: "sync".into(),
                port: 22000,
                protocol: Protocol::Tcp,
                overlay_only: true,
            },
        ];
        s
    }

    /// In backoff after its 7th crash: exited with 1 at 599 s, restarts 4 s later.
    fn backoff(name: &str) -> LocalService {
        let mut s = svc(name, State::Backoff);
        s.status.restarts = 7;
        s.status.backoff_ms = vec![1000, 2000, 5000];
        s.status.last_exit = Some(ExitRecord {
            at_ms: 599_000,
            reason: ExitReason::Exited,
            status: Some(ExitStatus::Exited(1)),
            detail: String::new(),
        });
        s
    }

    fn cells(row: &str) -> Vec<String> {
        row.split("<td>")
            .skip(1)
            .map(|c| c.split("</td>").next().unwrap_or("").to_string())
            .collect()
    }

    fn headers(h: &str) -> Vec<&str> {
        h.split("<th>")
            .skip(1)
            .map(|x| x.split('<').next().unwrap_or(""))
            .collect()
    }

    /// The row of the table whose first cell is `name`.
    fn row<'a>(h: &'a str, name: &str) -> &'a str {
        h.split("<tr")
            .find(|r| r.contains(&format!("><td>{name}</td>")))
            .unwrap_or_else(|| panic!("no row for {name}: {h}"))
    }

    /// A cluster member waiting for its cluster is not trouble and offers
    /// no button (the agent starts it when the cluster is decided).
    #[test]
    fn a_waiting_cluster_member_is_not_trouble() {
        let mut s = svc("etcd", State::Stopped);
        s.waiting = Some("cluster: waiting for 3 boxes with etcd".into());
        let (c, why) = s.condition();
        assert_eq!(
            (c, why.as_str()),
            (Condition::Waiting, "cluster: waiting for 3 boxes with etcd")
        );
        assert_eq!(c.word(), "waiting");
        assert!(alerts(std::slice::from_ref(&s)).is_empty());
        assert!(!actions(&s, "t").contains("/start"), "{}", actions(&s, "t"));
    }

    #[test]
    fn name_and_state_come_first_with_human_titles() {
        let list = [running("web"), backoff("etcd")];
        let h = services_html(Some(&list), "c");
        assert_eq!(
            headers(&h),
            [
                "Service",
                "State",
                "Uptime",
                "Restarts",
                "Memory",
                "CPU",
                "Ports",
                "Last exit",
                "Version",
                "Actions"
            ],
            "{h}"
        );
        let web = cells(row(&h, "web"));
        assert_eq!(web[0], "web");
        assert_eq!(web[1], "<b class=st-running>running</b>");
        assert_eq!(web[2], "2 min 5 s", "uptime");
        assert_eq!(web[3], "0");
        assert_eq!(web[4], "12.0 MiB");
        assert_eq!(web[5], "3.5 s", "CPU time");
        assert_eq!(web[6], "8384/tcp 22000/tcp (overlay)");
        assert_eq!(web[7], "–", "never exited");
        assert_eq!(
            web[8],
            "1.0 <code title=\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\">9f86d081884c</code>"
        );
        assert!(
            web[9].contains("/api/v1/services/web/stop?csrf=c"),
            "{}",
            web[9]
        );
        assert!(!web[9].contains("/start?"), "no start for a running one");
        // No JSON anywhere: no raw objects or arrays in a cell.
        for c in web.iter().chain(cells(row(&h, "etcd")).iter()) {
            assert!(!c.contains('{') && !c.contains("[1"), "raw JSON in {c}");
        }
    }

    #[test]
    fn a_service_in_backoff_is_failing_with_the_reason() {
        let list = [backoff("etcd")];
        let h = services_html(Some(&list), "c");
        let etcd = cells(row(&h, "etcd"));
        assert_eq!(
            etcd[1],
            "<b class=st-failing>failing</b><small>restarting in 4.0 s, last exit: exit code 1</small>"
        );
        assert_eq!(etcd[2], "–", "no uptime while down");
        assert_eq!(etcd[3], "7");
        assert_eq!(etcd[7], "exit code 1 <small>1.0 s ago</small>");
        assert_eq!(
            alerts(&list),
            ["Service etcd is failing: restarting in 4.0 s, last exit: exit code 1"]
        );
    }

    #[test]
    fn every_kind_of_trouble_raises_an_alert_and_only_trouble() {
        let mut unhealthy = running("unhealthy");
        unhealthy.status.health = Health::Unhealthy;
        unhealthy.status.last_health_error = Some("GET /health: 500".into());
        // Back up 5 s after its third crash (a kill by the OOM killer).
        let mut looping = running("looping");
        looping.status.restarts = 3;
        looping.status.started_ms = vec![595_000];
        looping.status.last_exit = Some(ExitRecord {
            at_ms: 594_000,
            reason: ExitReason::OomKilled,
            status: Some(ExitStatus::Signaled(9)),
            detail: "killed by the OOM killer (1 kills)".into(),
        });
        let mut broken = svc("broken", State::Stopped);
        broken.problem = Some("publisher key 0123456789abcdef was revoked".into());
        broken.now_ms = None;
        let mut start_failed = backoff("nostart");
        start_failed.status.last_exit = Some(ExitRecord {
            at_ms: 599_500,
            reason: ExitReason::StartFailed,
            status: None,
            detail: "mount overlay: no such device".into(),
        });
        let mut failed = svc("failed", State::Exited);
        failed.status.last_exit = Some(ExitRecord {
            at_ms: 1_000,
            reason: ExitReason::Exited,
            status: Some(ExitStatus::Signaled(11)),
            detail: String::new(),
        });
        // Fine: restarted on request long ago, stopped on request, done.
        let mut restarted = running("restarted");
        restarted.status.restarts = 9;
        restarted.status.last_exit = Some(ExitRecord {
            at_ms: 474_000,
            reason: ExitReason::Restarted,
            status: Some(ExitStatus::Exited(0)),
            detail: "restart requested".into(),
        });
        let mut stopped = svc("stopped", State::Stopped);
        stopped.status.last_exit = Some(ExitRecord {
            at_ms: 2_000,
            reason: ExitReason::Stopped,
            status: Some(ExitStatus::Exited(0)),
            detail: "stop requested".into(),
        });
        let mut checking = running("checking");
        checking.status.health = Health::Unknown;
        let list = [
            unhealthy,
            looping,
            broken,
            start_failed,
            failed,
            restarted,
            stopped,
            checking,
        ];
        assert_eq!(
            alerts(&list),
            [
                "Service unhealthy is failing: unhealthy: GET /health: 500",
                "Service looping is failing: crash-looping: restarted 3 times, last exit: killed by the OOM killer",
                "Service broken cannot run: publisher key 0123456789abcdef was revoked",
                "Service nostart is failing: restarting in 4.5 s, last exit: failed to start: mount overlay: no such device",
                "Service failed stopped after a failure: killed by signal 11 (SIGSEGV); its restart policy does not restart it",
            ]
        );
        assert_eq!(
            summary(&list),
            "8 services: 3 failing, 1 failed, 1 broken, 1 starting, 1 running, 1 stopped"
        );
        let h = services_html(Some(&list), "c");
        assert!(
            cells(row(&h, "broken"))[9].starts_with(" <a href"),
            "no buttons for a bundle that cannot run"
        );
        assert!(cells(row(&h, "stopped"))[9].contains("/start?"));
        assert_eq!(
            cells(row(&h, "stopped"))[1],
            "<b class=st-stopped>stopped</b><small>stopped on request</small>"
        );
    }

    #[test]
    fn dashboard_section_summarises_and_keeps_a_short_table() {
        let list = [running("web"), backoff("etcd"), backoff("syncthing")];
        let h = dashboard_section(Some(&list));
        assert!(h.contains("3 services: 2 failing, 1 running"), "{h}");
        assert_eq!(
            headers(&h),
            ["Service", "State", "Uptime", "Restarts", "Memory"]
        );
        assert!(!h.contains("<button"), "actions live on the Services page");
        assert!(dashboard_section(Some(&[])).contains("No services run"));
        assert!(dashboard_section(None).contains("not running"));
    }
}
