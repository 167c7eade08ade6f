//! Small, bounded parsers for what browsers send: cookies, query strings and
//! `application/x-www-form-urlencoded` bodies. They never panic and never
//! allocate more than their input (plus a bounded number of entries).

/// Most `name=value` pairs taken from a query, form or cookie header; the
/// rest is ignored.
pub const MAX_PAIRS: usize = 64;

/// Percent-decode `s`, with `+` as space when `plus` is set. Invalid escapes
/// are kept as they are; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encode everything but unreserved characters (for URLs we build).
pub fn percent_encode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Parse `a=1&b=two` (query strings and urlencoded forms): decoded pairs in
/// order, at most [`MAX_PAIRS`].
pub fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .take(MAX_PAIRS)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// The first value of `key` in a query string or form body.
pub fn form_get(s: &str, key: &str) -> Option<String> {
    form(s).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The value of cookie `name` in a `Cookie:` header value
/// (`a=1; b=2`). Values are taken verbatim (ours are hex).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .take(MAX_PAIRS)
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// A local redirect target: a path on this host, never `//other` or a
/// scheme, so `?next=` cannot send a browser elsewhere.
pub fn safe_next(s: &str) -> &str {
    let ok = s.starts_with('/')
        && !s.starts_with("//")
        && !s.starts_with("/\\")
        && s.len() <= 512
        && s.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        s
    } else {
        "/dashboard"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%", true), "%");
        assert_eq!(percent_decode("%4", true), "%4");
        assert_eq!(percent_decode("%zz", true), "%zz");
        assert_eq!(percent_decode("%C3%A9", true), "é");
        assert_eq!(
            form("a=1&b=&c&&d=x%3Dy"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "".into()),
                ("d".into(), "x=y".into())
            ]
        );
        assert_eq!(
            form_get("x=1&next=%2Fbundles", "next").as_deref(),
            Some("/bundles")
        );
    }

    #[test]
    fn cookies() {
        assert_eq!(
            cookie("a=1; nuvol_session=abc; b=2", "nuvol_session"),
            Some("abc")
        );
        assert_eq!(cookie("nuvol_session=\"q\"", "nuvol_session"), Some("q"));
        assert_eq!(cookie("xnuvol_session=abc", "nuvol_session"), None);
        assert_eq!(cookie("", "a"), None);
    }

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next("/bundles?x=1"), "/bundles?x=1");
        for bad in [
            "//evil.example/",
            "https://evil/",
            "/\\evil",
            "",
            "/a b",
            "javascript:x",
        ] {
            assert_eq!(safe_next(bad), "/dashboard", "{bad}");
        }
    }

    proptest! {
        #[test]
        fn form_never_panics_and_is_bounded(s in ".{0,400}") {
            let f = form(&s);
            prop_assert!(f.len() <= MAX_PAIRS);
            for (k, v) in &f { prop_assert!(k.len() + v.len() <= s.len() * 3); }
        }

        #[test]
        fn encode_decode_roundtrip(s in "\\PC{0,64}") {
            prop_assert_eq!(percent_decode(&percent_encode(&s), true), s);
        }

        #[test]
        fn cookie_never_panics(s in "[ -~]{0,300}", name in "[a-z_]{1,12}") {
            if let Some(v) = cookie(&s, &name) { prop_assert!(v.len() <= s.len()); }
        }

        #[test]
        fn safe_next_is_local(s in "[ -~]{0,80}") {
            let n = safe_next(&s);
            prop_assert!(n.starts_with('/') && !n.starts_with("//"));
        }

        #[test]
        fn bytes_in_escapes(s in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = String::from_utf8_lossy(&s);
            let _ = percent_decode(&t, true);
        }
    }
}
