//! The Dashboard: alerts, then the box's vital signs with sparklines.

use std::fmt::Write;

use super::render::sparkline;
use crate::human::bytes;
use crate::panel::esc;
use crate::Ctx;

pub(super) fn dashboard(ctx: &Ctx) -> String {
    let s = ctx.status();
    let hist = ctx.metrics.history();
    let last = hist.last().copied();
    let mut b = String::new();
    let mut alerts: Vec<String> = Vec::new();
    for d in &s.disks {
        if d.total_bytes > 0 && d.available_bytes * 10 < d.total_bytes {
            alerts.push(format!(
                "Disk {} is over 90% full ({} free)",
                d.mount,
                bytes(d.available_bytes)
            ));
        }
    }
    let services = super::services::list(ctx);
    alerts.extend(super::services::alerts(
        services.as_deref().unwrap_or_default(),
    ));
    alerts.extend(ctx.node.alerts());
    b.push_str(&alerts_html(&alerts, s.config.problem.as_deref()));
    b.push_str(&super::services::dashboard_section(services.as_deref()));
    b.push_str("<h2>This box</h2><div class=cards id=live>");
    let series =
        |f: &dyn Fn(&crate::metrics::Sample) -> f32| -> Vec<f32> { hist.iter().map(f).collect() };
    let card = |b: &mut String, id: &str, name: &str, val: String, spark: Option<Vec<f32>>| {
        let _ = write!(
            b,
            "<div class=card id={id}>{name}<b>{}</b>{}</div>",
            esc(&val),
            spark.map(|v| sparkline(&v)).unwrap_or_default()
        );
    };
    card(
        &mut b,
        "cpu",
        "CPU",
        last.map_or("–".into(), |l| format!("{:.0}%", l.cpu)),
        Some(series(&|x| x.cpu)),
    );
    card(
        &mut b,
        "memory",
        "Memory",
        format!(
            "{} of {}",
            bytes(s.memory.used_bytes),
            bytes(s.memory.total_bytes)
        ),
        Some(series(&|x| x.mem)),
    );
    card(
        &mut b,
        "disk",
        "Disk (fullest)",
        format!("{:.0}% used", crate::metrics::disk_percent(&s)),
        Some(series(&|x| x.disk)),
    );
    if let Some(t) = crate::metrics::temperature() {
        card(
            &mut b,
            "temperature",
            "Temperature",
            format!("{t:.0} °C"),
            Some(series(&|x| x.temp.unwrap_or(0.0))),
        );
    }
    card(
        &mut b,
        "uptime",
        "Uptime",
        crate::human::duration(std::time::Duration::from_secs(s.uptime_s)),
        None,
    );
    card(
        &mut b,
        "load",
        "Load",
        format!("{:.2} {:.2} {:.2}", s.load[0], s.load[1], s.load[2]),
        None,
    );
    card(
        &mut b,
        "agent",
        "Agent memory",
        bytes(s.agent_rss_bytes),
        None,
    );
    let _ = write!(
        b,
        "</div><p>nuvol {} ({}) · node <code>{}</code> · boot {} · sparklines: last hour, one sample every 30 s</p>",
        esc(&s.version),
        esc(&s.arch),
        esc(&s.node_id),
        s.boot_count
    );
    b
}

/// The alerts, one box each; "all good" only when there is none (a
/// provisioning file problem counts).
fn alerts_html(alerts: &[String], config_problem: Option<&str>) -> String {
    let mut b = String::from("<div id=alerts>");
    if let Some(p) = config_problem {
        let _ = write!(
            b,
            "<div class=warn id=config-problem>Provisioning file problem: {}</div>",
            esc(p)
        );
    }
    for a in alerts {
        let _ = write!(b, "<div class=warn>{}</div>", esc(a));
    }
    if alerts.is_empty() && config_problem.is_none() {
        b.push_str("<div class=ok>No alerts: all good.</div>");
    }
    b.push_str("</div>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_good_only_when_nothing_is_wrong() {
        let ok = alerts_html(&[], None);
        assert!(ok.contains("No alerts: all good."), "{ok}");
        let svc = alerts_html(
            &["Service etcd is failing: restarting in 4.0 s".into()],
            None,
        );
        assert!(!svc.contains("all good"), "{svc}");
        assert!(svc.contains("<div class=warn>Service etcd is failing: restarting in 4.0 s</div>"));
        let cfg = alerts_html(&[], Some("nuvol.toml:3:1: unknown key <x>"));
        assert!(!cfg.contains("all good"), "{cfg}");
        assert!(
            cfg.contains("id=config-problem") && cfg.contains("&lt;x&gt;"),
            "{cfg}"
        );
    }
}
