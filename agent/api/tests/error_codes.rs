//! Every error code the API can answer with is listed in docs/api.md.
//!
//! The codes are found in the sources: the literal after the status in
//! every `error(StatusCode::…, "code", …)` / `error_with(…)` call of this
//! crate, and the literals of the `code()` functions whose errors the API
//! passes through (this crate's, the bundle store's, the settings
//! overlay's).

use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The string literal at the start of `s` (after whitespace), if any.
fn literal(s: &str) -> Option<&str> {
    let s = s.trim_start().strip_prefix('"')?;
    s.split('"').next()
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Codes passed as literals to `error(StatusCode::X, "code", …)`,
/// `error_with(…)` and `Fail::new(…)` (downloads, `os_fetch.rs`).
fn call_codes(src: &str, out: &mut BTreeSet<String>) {
    for call in ["error(", "error_with(", "Fail::new("] {
        for (at, _) in src.match_indices(call) {
            // A call, not a longer name ending in "error(".
            let before = src[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let args = &src[at + call.len()..];
            let Some(rest) = args.trim_start().strip_prefix("StatusCode::") else {
                continue;
            };
            let Some(comma) = rest.find(',') else {
                continue;
            };
            if let Some(c) = literal(&rest[comma + 1..]).filter(|c| is_code(c)) {
                out.insert(c.to_string());
            }
        }
    }
}

/// The literals returned by `fn code(&self)` (`X => "code"` arms).
fn code_fn_codes(src: &str, out: &mut BTreeSet<String>) {
    for (at, _) in src.match_indices("fn code(&self)") {
        let body = &src[at..];
        let end = body.find("\n    }\n").unwrap_or(body.len());
        for arm in body[..end].split("=>").skip(1) {
            if let Some(c) = literal(arm).filter(|c| is_code(c)) {
                out.insert(c.to_string());
            }
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn emitted() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let src = Path::new(ROOT).join("src");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            let s = read(&p);
            call_codes(&s, &mut codes);
            code_fn_codes(&s, &mut codes);
        }
    }
    for other in [
        "../bundle/src/error.rs",
        "../config/src/overlay.rs",
        "../update/src/artefact.rs",
    ] {
        code_fn_codes(&read(&Path::new(ROOT).join(other)), &mut codes);
    }
    codes
}

#[test]
fn the_scan_finds_codes_of_every_kind() {
    let codes = emitted();
    for c in [
        "unauthorized",         // error(StatusCode::…, "…") on one line
        "method_not_allowed",   // and over several
        "insufficient_storage", // error_with
        "too_many_tokens",      // AuthError::code
        "malformed_bundle",     // BundleError::code
        "unknown_setting",      // SettingError::code
        "network_unmanaged",
        "body_too_large",
    ] {
        assert!(codes.contains(c), "{c} not found in {codes:?}");
    }
    assert!(codes.len() >= 60, "{} codes: {codes:?}", codes.len());
    // One name for "too large" everywhere.
    assert!(!codes.contains("too_large"), "{codes:?}");
}

#[test]
fn docs_list_every_error_code() {
    let doc = read(&Path::new(ROOT).join("../../docs/api.md"));
    let missing: Vec<String> = emitted()
        .into_iter()
        .filter(|c| !doc.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/api.md does not list {missing:?} (add them to the error code table)"
    );
}
