//! What `nuvol ctl` prints: aligned tables, JSON, sizes.

use serde_json::Value;

pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) => "{…}".into(),
        x => x.to_string(),
    }
}

/// Print a list of objects as an aligned table (scalar columns only).
pub(super) fn table(rows: &[Value], prefer: &[&str]) {
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let mut cols: Vec<String> = prefer
        .iter()
        .filter(|c| rows.iter().any(|r| r.get(**c).is_some()))
        .map(|c| c.to_string())
        .collect();
    if cols.is_empty() {
        for r in rows {
            for (k, v) in r.as_object().into_iter().flatten() {
                if !v.is_object() && cols.len() < 8 && !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[c.as_str()])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(c.len())
                .min(40)
        })
        .collect();
    let line = |vals: Vec<String>| {
        let s: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}", w = *w))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(cols.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

pub(super) fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .find_map(|x| x.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// What an install answered: the JSON, or one line.
pub(super) fn print_installed(v: &Value, json: bool) {
    if json {
        pretty(v)
    } else {
        println!(
            "installed {} {} (publisher {}, key {})",
            cell(&v["name"]),
            cell(&v["version"]),
            cell(&v["publisher"]),
            cell(&v["publisher_key_id"])
        );
    }
}

pub(super) fn pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(super) use nuvol_human::bytes as human_bytes;

/// Unix seconds as `2024-05-01 12:34 UTC` (`-` when unknown).
pub(super) fn utc_time(secs: Option<u64>) -> String {
    secs.map_or_else(|| "-".into(), nuvol_human::utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(Some(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc_time(Some(951_782_400)), "2000-02-29 00:00 UTC");
        assert_eq!(utc_time(Some(1_700_000_000)), "2023-11-14 22:13 UTC");
        assert_eq!(utc_time(Some(4_102_444_799)), "2099-12-31 23:59 UTC");
        assert_eq!(utc_time(None), "-");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
