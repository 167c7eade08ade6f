//! Numbers as people read them: sizes, durations, UTC dates, short digests.
//! Plain text (no HTML): the panel's pages escape and place it, `nuvol ctl`
//! prints it, the bundle store's errors name sizes with it. One place, so a
//! size reads the same on the page, in the shell and in an error.

use std::time::Duration;

/// Binary units: `512 B`, `1.5 KiB`, `256.0 MiB`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// A span of time in its two largest units: `45 s`, `3 min 5 s`,
/// `2 h 10 min`, `3 d 4 h`; under ten seconds with a tenth (`0.4 s`).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if days > 0 {
        format!("{days} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {sec} s")
    } else if s >= 10 {
        format!("{s} s")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Unix seconds as a UTC date and minute: `2026-12-04 10:55 UTC`.
pub fn utc(unix_s: u64) -> String {
    let days = unix_s / 86_400;
    let (y, m, d) = civil_from_days(days);
    let secs = unix_s % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Whether a number under a time-like key is a Unix time worth a date:
/// after 2001-09-09 and before 2286.
pub fn looks_like_unix_time(n: u64) -> bool {
    (1_000_000_000..10_000_000_000).contains(&n)
}

/// A digest cut to its first 12 hex digits (a `sha256:` prefix dropped):
/// enough to tell versions apart on a page; the full value goes in a title.
pub fn short_digest(d: &str) -> &str {
    let hex = d.rsplit(':').next().unwrap_or(d);
    match hex.char_indices().nth(12) {
        Some((i, _)) => &hex[..i],
        None => hex,
    }
}

/// An OS update's state in one line, as the panel and `nuvol ctl update`
/// show it: `update 99.0.0 to slot B: pending (try 2 of 3)`, then the
/// reason when there is one.
pub fn update_line(
    version: &str,
    slot: &str,
    phase: &str,
    tries: u64,
    max_tries: u64,
    reason: Option<&str>,
) -> String {
    let mut s = format!("update {version} to slot {slot}: {phase} (try {tries} of {max_tries})");
    if let Some(r) = reason {
        s.push_str(": ");
        s.push_str(r);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 << 20), "256.0 MiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn durations_keep_two_units() {
        let s = Duration::from_secs;
        assert_eq!(duration(Duration::from_millis(420)), "0.4 s");
        assert_eq!(duration(s(45)), "45 s");
        assert_eq!(duration(s(185)), "3 min 5 s");
        assert_eq!(duration(s(2 * 3600 + 10 * 60 + 7)), "2 h 10 min");
        assert_eq!(duration(s(3 * 86_400 + 4 * 3600 + 59)), "3 d 4 h");
        assert_eq!(duration(Duration::from_millis(4_000)), "4.0 s");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        // `date -u -d @1796381700`
        assert_eq!(utc(1_796_381_700), "2026-12-04 10:55 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00 UTC");
        assert!(looks_like_unix_time(1_796_381_700));
        assert!(!looks_like_unix_time(86_400) && !looks_like_unix_time(0));
    }

    #[test]
    fn update_lines() {
        assert_eq!(
            update_line("99.0.0", "B", "pending", 1, 3, None),
            "update 99.0.0 to slot B: pending (try 1 of 3)"
        );
        assert_eq!(
            update_line("9", "A", "failed", 3, 3, Some("rolled back")),
            "update 9 to slot A: failed (try 3 of 3): rolled back"
        );
    }

    #[test]
    fn digests_are_cut_to_twelve() {
        let d = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert_eq!(short_digest(d), "9f86d081884c");
        assert_eq!(short_digest(&format!("sha256:{d}")), "9f86d081884c");
        assert_eq!(short_digest("abc"), "abc");
        assert_eq!(short_digest(""), "");
    }
}
