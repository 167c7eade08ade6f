//! `/metrics` (Prometheus text) and the in-memory resource history behind
//! the dashboard's sparklines: one sample every [`SAMPLE_EVERY`], the last
//! hour kept in a fixed ring.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Ctx;

/// How often the history is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// Samples kept (one hour).
pub const HISTORY: usize = 120;
/// Most distinct (route, code) counters; routes are a fixed table, so this
/// only guards against surprises.
const MAX_SERIES: usize = 512;

/// One resource sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub t: u64,
    /// CPU busy, percent of all cores.
    pub cpu: f32,
    /// Memory in use, percent.
    pub mem: f32,
    /// Fullest data disk, percent used.
    pub disk: f32,
    /// Hottest thermal zone, °C, if the machine has one.
    pub temp: Option<f32>,
}

#[derive(Default)]
struct Http {
    requests: HashMap<(&'static str, u16), u64>,
    /// Sum of latencies in seconds, per route.
    seconds: HashMap<&'static str, f64>,
}

/// Counters and the sample ring.
pub struct Metrics {
    http: Mutex<Http>,
    history: Mutex<VecDeque<Sample>>,
    last_cpu: Mutex<Option<(u64, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            http: Mutex::new(Http::default()),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            last_cpu: Mutex::new(None),
        }
    }

    /// Count one answered request.
    pub fn count(&self, route: &'static str, code: u16, took: Duration) {
        let mut h = lock(&self.http);
        if h.requests.len() < MAX_SERIES || h.requests.contains_key(&(route, code)) {
            *h.requests.entry((route, code)).or_default() += 1;
            *h.seconds.entry(route).or_default() += took.as_secs_f64();
        }
    }

    /// The samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.history).iter().copied().collect()
    }

    /// Add a sample (the oldest falls out after an hour).
    pub fn push(&self, s: Sample) {
        let mut h = lock(&self.history);
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(s);
    }

    /// CPU busy percent since the previous call (0 on the first).
    fn cpu_percent(&self) -> f32 {
        let Some((busy, total)) = read_cpu() else {
            return 0.0;
        };
        let mut last = lock(&self.last_cpu);
        let pct = match *last {
            Some((b0, t0)) if total > t0 => {
                (busy.saturating_sub(b0)) as f32 * 100.0 / (total - t0) as f32
            }
            _ => 0.0,
        };
        *last = Some((busy, total));
        pct.clamp(0.0, 100.0)
    }
}

/// (busy, total) jiffies from the `cpu` line of /proc/stat.
fn read_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu(s.lines().next()?)
}

fn parse_cpu(line: &str) -> Option<(u64, u64)> {
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.take(10).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The hottest thermal zone or hwmon sensor in °C.
pub fn temperature() -> Option<f32> {
    let mut best: Option<f32> = None;
    let mut consider = |p: std::path::PathBuf| {
        if let Some(v) = std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            let c = v as f32 / 1000.0;
            if (-40.0..150.0).contains(&c) {
                best = Some(best.map_or(c, |b: f32| b.max(c)));
            }
        }
    };
    if let Ok(rd) = std::fs::read_dir("/sys/class/thermal") {
        for e in rd.flatten().take(32) {
            consider(e.path().join("temp"));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/sys/class/hwmon") {
        for e in rd.flatten().take(32) {
            consider(e.path().join("temp1_input"));
        }
    }
    best
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Percent used of the fullest disk.
pub fn disk_percent(s: &nuvol_status::Status) -> f32 {
    s.disks
        .iter()
        .filter(|d| d.total_bytes > 0)
        .map(|d| 100.0 - d.available_bytes as f32 * 100.0 / d.total_bytes as f32)
        .fold(0.0, f32::max)
}

/// Take one sample now.
pub fn sample(ctx: &Ctx) -> Sample {
    let s = ctx.node.status();
    let mem = if s.memory.total_bytes > 0 {
        s.memory.used_bytes as f32 * 100.0 / s.memory.total_bytes as f32
    } else {
        0.0
    };
    Sample {
        t: now(),
        cpu: ctx.metrics.cpu_percent(),
        mem,
        disk: disk_percent(&s),
        temp: temperature(),
    }
}

/// Sample every [`SAMPLE_EVERY`] until aborted.
pub async fn sample_forever(ctx: Arc<Ctx>) {
    ctx.metrics.cpu_percent();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = sample(&ctx);
        ctx.metrics.push(s);
    }
}

/// Escape a Prometheus label value.
pub fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// The whole `/metrics` text.
pub fn render(ctx: &Ctx, bundles: Option<usize>) -> String {
    let s = ctx.status();
    let mut o = String::with_capacity(4096);
    let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    let _ = writeln!(
        o,
        "# HELP nuvol_build_info Agent version.\n# TYPE nuvol_build_info gauge\nnuvol_build_info{{version=\"{}\",node_id=\"{}\"}} 1",
        label(&s.version),
        label(&s.node_id)
    );
    gauge(
        &mut o,
        "nuvol_uptime_seconds",
        "Seconds since boot.",
        s.uptime_s as f64,
    );
    gauge(
        &mut o,
        "nuvol_boot_count",
        "Boots of this box.",
        s.boot_count as f64,
    );
    let _ = writeln!(
        o,
        "# HELP nuvol_load Load average.\n# TYPE nuvol_load gauge"
    );
    for (w, v) in ["1m", "5m", "15m"].iter().zip(s.load) {
        let _ = writeln!(o, "nuvol_load{{window=\"{w}\"}} {v}");
    }
    gauge(
        &mut o,
        "nuvol_memory_total_bytes",
        "Memory.",
        s.memory.total_bytes as f64,
    );
    gauge(
        &mut o,
        "nuvol_memory_available_bytes",
        "Memory available.",
        s.memory.available_bytes as f64,
    );
    gauge(
        &mut o,
        "nuvol_agent_rss_bytes",
        "Resident memory of the agent.",
        s.agent_rss_bytes as f64,
    );
    if let Some(last) = ctx.metrics.history().last() {
        gauge(
            &mut o,
            "nuvol_cpu_busy_percent",
            "CPU busy at the last sample.",
            last.cpu as f64,
        );
    }
    if let Some(t) = temperature() {
        gauge(
            &mut o,
            "nuvol_temperature_celsius",
            "Hottest sensor.",
            t as f64,
        );
    }
    let _ = writeln!(
        o,
        "# HELP nuvol_disk_total_bytes Disk size.\n# TYPE nuvol_disk_total_bytes gauge"
    );
    for d in &s.disks {
        let _ = writeln!(
            o,
            "nuvol_disk_total_bytes{{mount=\"{}\"}} {}",
            label(&d.mount),
            d.total_bytes
        );
    }
    let _ = writeln!(o, "# HELP nuvol_disk_available_bytes Disk space available.\n# TYPE nuvol_disk_available_bytes gauge");
    for d in &s.disks {
        let _ = writeln!(
            o,
            "nuvol_disk_available_bytes{{mount=\"{}\"}} {}",
            label(&d.mount),
            d.available_bytes
        );
    }
    if let Some(n) = bundles {
        gauge(
            &mut o,
            "nuvol_bundles_installed",
            "Installed bundles.",
            n as f64,
        );
    }
    gauge(
        &mut o,
        "nuvol_sessions",
        "Live panel sessions.",
        ctx.auth.session_count() as f64,
    );
    let c = ctx.conns.counts();
    gauge(
        &mut o,
        "nuvol_http_connections",
        "HTTP(S) connections open.",
        c.open as f64,
    );
    gauge(
        &mut o,
        "nuvol_http_connections_waiting",
        "HTTP(S) connections open that have sent nothing yet.",
        c.waiting as f64,
    );
    let counter = |o: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    };
    counter(
        &mut o,
        "nuvol_http_connections_admitted_total",
        "Connections accepted.",
        c.admitted,
    );
    counter(
        &mut o,
        "nuvol_http_connections_evicted_total",
        "Idle connections closed to admit a new one (connection budget).",
        c.evicted,
    );
    counter(
        &mut o,
        "nuvol_http_connections_refused_total",
        "Connections closed at once: the budget was full of busy ones.",
        c.refused,
    );
    counter(
        &mut o,
        "nuvol_http_rate_limited_total",
        "Requests held 1 s and answered 429: their source was over its request budget.",
        ctx.rate.limited(),
    );
    counter(
        &mut o,
        "nuvol_share_index_computations_total",
        "Times the public bundle index was computed (it is cached per store generation).",
        ctx.share.index_computations(),
    );
    let h = lock(&ctx.metrics.http);
    let mut rows: Vec<_> = h.requests.iter().collect();
    rows.sort();
    let _ = writeln!(o, "# HELP nuvol_http_requests_total HTTP requests by route and status.\n# TYPE nuvol_http_requests_total counter");
    for ((route, code), n) in rows {
        let _ = writeln!(
            o,
            "nuvol_http_requests_total{{route=\"{}\",code=\"{code}\"}} {n}",
            label(route)
        );
    }
    let mut secs: Vec<_> = h.seconds.iter().collect();
    secs.sort_by(|a, b| a.0.cmp(b.0));
    let _ = writeln!(o, "# HELP nuvol_http_request_seconds_total Time spent answering, by route.\n# TYPE nuvol_http_request_seconds_total counter");
    for (route, v) in secs {
        let _ = writeln!(
            o,
            "nuvol_http_request_seconds_total{{route=\"{}\"}} {v:.6}",
            label(route)
        );
    }
    drop(h);
    if let Some(d) = ctx.node.discovery() {
        o.push_str(&gossip(&d.gossip().stats()));
    }
    o.push_str(&ctx.node.metrics_extra());
    o
}

/// The gossip counters: traffic, what the budgets dropped (by reason, see
/// docs/discovery.md "Budgets") and how full they are.
pub fn gossip(s: &nuvol_gossip::StatsSnapshot) -> String {
    let mut o = String::with_capacity(2048);
    let _ = writeln!(o, "# HELP nuvol_gossip_packets_total Gossip UDP packets.\n# TYPE nuvol_gossip_packets_total counter");
    let _ = writeln!(
        o,
        "nuvol_gossip_packets_total{{dir=\"in\"}} {}",
        s.packets_in
    );
    let _ = writeln!(
        o,
        "nuvol_gossip_packets_total{{dir=\"out\"}} {}",
        s.packets_out
    );
    let _ = writeln!(o, "# HELP nuvol_gossip_bytes_total Gossip UDP bytes.\n# TYPE nuvol_gossip_bytes_total counter");
    let _ = writeln!(o, "nuvol_gossip_bytes_total{{dir=\"in\"}} {}", s.bytes_in);
    let _ = writeln!(o, "nuvol_gossip_bytes_total{{dir=\"out\"}} {}", s.bytes_out);
    let _ = writeln!(o, "# HELP nuvol_gossip_dropped_total Gossip input dropped, by reason.\n# TYPE nuvol_gossip_dropped_total counter");
    for (reason, n) in s.drops() {
        let _ = writeln!(o, "nuvol_gossip_dropped_total{{reason=\"{reason}\"}} {n}");
    }
    for (name, v) in s.gauges() {
        let _ = writeln!(
            o,
            "# HELP nuvol_gossip_{name} Gossip budget in use.\n# TYPE nuvol_gossip_{name} gauge\nnuvol_gossip_{name} {v}"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        assert_eq!(parse_cpu("cpu  10 0 10 70 10 0 0 0 0 0"), Some((20, 100)));
        assert_eq!(parse_cpu("cpu0 1 2 3 4"), None);
        assert_eq!(parse_cpu("cpu 1 x"), None);
        assert!(read_cpu().is_some());
    }

    #[test]
    fn ring_keeps_an_hour() {
        let m = Metrics::new();
        for i in 0..(HISTORY as u64 + 5) {
            m.push(Sample {
                t: i,
                cpu: 0.0,
                mem: 0.0,
                disk: 0.0,
                temp: None,
            });
        }
        let h = m.history();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].t, 5);
    }

    #[test]
    fn gossip_drops_have_one_series_per_reason() {
        let s = nuvol_gossip::StatsSnapshot {
            events_slot_full: 7,
            members_rate_limited: 3,
            members: 12,
            ..Default::default()
        };
        let t = gossip(&s);
        assert!(t.contains("nuvol_gossip_dropped_total{reason=\"events_slot_full\"} 7\n"));
        assert!(t.contains("nuvol_gossip_dropped_total{reason=\"members_rate_limited\"} 3\n"));
        assert!(t.contains("nuvol_gossip_dropped_total{reason=\"streams_deadline\"} 0\n"));
        assert!(t.contains("\nnuvol_gossip_members 12\n"));
        assert_eq!(
            t.matches("nuvol_gossip_dropped_total{").count(),
            s.drops().len()
        );
        // every line is a comment or `name{labels} value`
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let (name, v) = l.rsplit_once(' ').expect("name value");
            assert!(name.starts_with("nuvol_gossip_"), "{l}");
            assert!(v.parse::<u64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn labels_escape() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
