//! Rendering helpers shared by the pages: JSON as tables (for answers
//! with no page of their own: network state, a new token), sparklines.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use crate::human;
use crate::panel::esc;

/// Render JSON generically: objects as two-column tables, arrays of objects
/// as tables with a column per key. Depth-limited.
pub(super) fn render_json(v: &Value, depth: usize) -> String {
    if depth > 3 {
        return format!("<code>{}</code>", esc(&v.to_string()));
    }
    match v {
        Value::Null => "–".into(),
        Value::String(s) => esc(s),
        Value::Bool(_) | Value::Number(_) => esc(&v.to_string()),
        Value::Array(a) if a.is_empty() => "<em>none</em>".into(),
        Value::Array(a) if a.iter().all(Value::is_object) => table_of(a, depth),
        Value::Array(a) => a
            .iter()
            .take(200)
            .map(|x| render_json(x, depth + 1))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) => {
            let mut h = String::from("<div class=wrap><table>");
            for (k, x) in o.iter().take(100) {
                let _ = write!(
                    h,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    esc(k),
                    field(k, x, depth + 1)
                );
            }
            h.push_str("</table></div>");
            h
        }
    }
}

/// A value under the key `key`, in human units where the key says what it
/// is: Unix times (`*_at`, `created`, `obtained`) as UTC dates, `*_bytes`
/// as sizes, `*_seconds` as durations, digests cut short (the full value in
/// a title); anything else as [`render_json`].
pub(super) fn field(key: &str, v: &Value, depth: usize) -> String {
    let time_key = key.ends_with("_at") || matches!(key, "created" | "obtained" | "added");
    match (v.as_u64(), v.as_str()) {
        (Some(n), _) if time_key && human::looks_like_unix_time(n) => human::utc(n),
        (Some(0), _) if time_key => "–".into(),
        (Some(n), _) if key.ends_with("_bytes") => human::bytes(n),
        (Some(n), _) if key.ends_with("_seconds") => human::duration(Duration::from_secs(n)),
        (_, Some(d)) if key == "digest" || key.ends_with("_digest") => format!(
            "<code title=\"{}\">{}</code>",
            esc(d),
            esc(human::short_digest(d))
        ),
        _ => render_json(v, depth),
    }
}

/// A table of objects: a column per key (in key order, which for JSON
/// objects is sorted by name; at most 12).
fn table_of(rows: &[Value], depth: usize) -> String {
    let mut cols: Vec<&str> = Vec::new();
    for r in rows.iter().take(500) {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if cols.len() < 12 && !cols.contains(&k.as_str()) {
                    cols.push(k);
                }
            }
        }
    }
    let mut h = String::from("<div class=wrap><table><tr>");
    for c in &cols {
        let _ = write!(h, "<th>{}</th>", esc(c));
    }
    h.push_str("</tr>");
    for r in rows.iter().take(500) {
        h.push_str("<tr>");
        for c in &cols {
            let _ = write!(h, "<td>{}</td>", field(c, &r[*c], depth + 1));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
    h
}

/// An SVG sparkline of percentages (0-100).
pub(super) fn sparkline(vals: &[f32]) -> String {
    if vals.len() < 2 {
        return "<svg viewBox=\"0 0 100 20\" role=img aria-label=\"no history yet\"></svg>".into();
    }
    let n = (vals.len() - 1) as f32;
    let pts: Vec<String> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f32 * 100.0 / n,
                20.0 - v.clamp(0.0, 100.0) / 5.0
            )
        })
        .collect();
    format!(
        "<svg viewBox=\"0 0 100 20\" preserveAspectRatio=none role=img aria-label=\"last hour\"><polyline points=\"{}\"/></svg>",
        pts.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_renders_tolerantly() {
        let v = json!([{"name": "a<b", "rtt_ms": 3}, {"name": "c", "zone": "x"}]);
        let h = render_json(&v, 0);
        assert!(h.contains("a&lt;b") && h.contains("<th>zone</th>"), "{h}");
        assert!(render_json(&json!({"deep": [[[[[1]]]]]}), 0).contains("[1]"));
    }

    #[test]
    fn times_sizes_and_digests_read_as_people_read_them() {
        let v = json!({"reconciled_at": 1_796_381_700u64, "renew_at": 0, "lease_seconds": 86_400,
            "memory_bytes": 1_572_864, "digest": "9f86d081884c7d659a2feaa0c55ad015",
            "port": 1_796_381_700u64, "created": 1_796_381_700u64});
        let h = render_json(&v, 0);
        for want in [
            "<th>reconciled_at</th><td>2026-12-04 10:55 UTC</td>",
            "<th>created</th><td>2026-12-04 10:55 UTC</td>",
            "<th>renew_at</th><td>–</td>",
            "<th>lease_seconds</th><td>1 d 0 h</td>",
            "<th>memory_bytes</th><td>1.5 MiB</td>",
            "<code title=\"9f86d081884c7d659a2feaa0c55ad015\">9f86d081884c</code>",
            "<th>port</th><td>1796381700</td>",
        ] {
            assert!(h.contains(want), "{want} not in {h}");
        }
        let rows = render_json(&json!([{"name": "k", "added_at": 1_796_381_700u64}]), 0);
        assert!(rows.contains("<td>2026-12-04 10:55 UTC</td>"), "{rows}");
    }

    #[test]
    fn sparklines() {
        assert!(sparkline(&[0.0, 50.0, 100.0]).contains("polyline"));
    }
}
