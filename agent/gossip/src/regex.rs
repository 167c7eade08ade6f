//! Serf tag filters are Go regular expressions matched anywhere in the
//! tag value; regex-lite's syntax covers the common subset.

/// Longest pattern accepted.
const MAX_PATTERN: usize = 256;

/// Does `expr` match somewhere in `value`? Bad patterns match nothing.
pub fn is_match(expr: &str, value: &str) -> bool {
    if expr.len() > MAX_PATTERN {
        return false;
    }
    match regex_lite::RegexBuilder::new(expr)
        .size_limit(64 * 1024)
        .build()
    {
        Ok(r) => r.is_match(value),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unanchored_like_go() {
        assert!(super::is_match("web", "a-web-1"));
        assert!(!super::is_match("^web$", "a-web-1"));
        assert!(!super::is_match("(", "x"));
    }
}
