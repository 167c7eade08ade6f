//! tracing to stderr (the console on a box). `RUST_LOG` overrides the level:
//! a bare level (`debug`) and/or `target=level` pairs, comma-separated
//! (`info,nuvol_net=debug`). As usual for `RUST_LOG`, targets not named are
//! shown only if a bare level is given. Span and field filters are not
//! supported; a value that does not parse is reported on stderr and `info`
//! is used.

use std::env::VarError;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub fn init() {
    let (filter, warning) = filter_from(std::env::var("RUST_LOG"));
    if let Some(w) = warning {
        eprintln!("nuvol: {w}");
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

fn info() -> Targets {
    Targets::new().with_default(LevelFilter::INFO)
}

/// The filter for a `RUST_LOG` value, and a warning when it was not usable.
fn filter_from(var: Result<String, VarError>) -> (Targets, Option<String>) {
    let text = match var {
        Err(VarError::NotPresent) => return (info(), None),
        Err(VarError::NotUnicode(_)) => {
            return (
                info(),
                Some("RUST_LOG is not UTF-8; logging at info".into()),
            )
        }
        Ok(text) => text,
    };
    match parse(&text) {
        Ok(Some(t)) => (t, None),
        Ok(None) => (info(), None),
        Err(e) => (
            info(),
            Some(format!("RUST_LOG={text:?} ignored: {e}; logging at info")),
        ),
    }
}

fn level(s: &str) -> Result<LevelFilter, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a level (off, error, warn, info, debug, trace)"))
}

/// Parse `level` / `target=level` directives; `None` when there are none.
fn parse(text: &str) -> Result<Option<Targets>, String> {
    let mut targets = Targets::new();
    let mut any = false;
    for d in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        any = true;
        targets = match d.split_once('=') {
            None => targets.with_default(level(d)?),
            Some((target, lvl)) => {
                let target = target.trim();
                let path_like = |c: char| c.is_ascii_alphanumeric() || "_:-".contains(c);
                if target.is_empty() || !target.chars().all(path_like) {
                    return Err(format!(
                        "{d:?}: the target must be a module path such as nuvol_net"
                    ));
                }
                targets.with_target(target, level(lvl)?)
            }
        };
    }
    Ok(any.then_some(targets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn ok(text: &str) -> Targets {
        let (t, w) = filter_from(Ok(text.into()));
        assert_eq!(w, None, "{text:?}");
        t
    }

    #[test]
    fn absent_or_empty_means_info() {
        for t in [filter_from(Err(VarError::NotPresent)).0, ok(""), ok(" , ")] {
            assert!(t.would_enable("nuvol", &Level::INFO));
            assert!(!t.would_enable("nuvol", &Level::DEBUG));
        }
    }

    #[test]
    fn a_bare_level_applies_everywhere() {
        let t = ok("DEBUG");
        assert!(t.would_enable("nuvol_net::dhcp", &Level::DEBUG));
        assert!(!t.would_enable("nuvol_net::dhcp", &Level::TRACE));
        assert!(!ok("off").would_enable("nuvol", &Level::ERROR));
    }

    #[test]
    fn targets_refine_the_default() {
        let t = ok("warn, nuvol_net=trace,nuvol_gossip::wire=debug");
        assert!(t.would_enable("nuvol_net::dhcp", &Level::TRACE));
        assert!(t.would_enable("nuvol_gossip::wire", &Level::DEBUG));
        assert!(!t.would_enable("nuvol_gossip", &Level::INFO));
        assert!(t.would_enable("nuvol_gossip", &Level::WARN));
        // Without a bare level, only the named targets are shown.
        let t = ok("nuvol_net=debug");
        assert!(t.would_enable("nuvol_net", &Level::DEBUG));
        assert!(!t.would_enable("nuvol", &Level::ERROR));
    }

    #[test]
    fn unusable_values_warn_and_fall_back_to_info() {
        for (text, why) in [
            ("verbose", "\"verbose\" is not a level"),
            ("info,nuvol_net=loud", "\"loud\" is not a level"),
            ("=debug", "the target must be a module path"),
            ("nuvol[{id}]=debug", "the target must be a module path"),
            ("a=b=c", "\"b=c\" is not a level"),
        ] {
            let (t, w) = filter_from(Ok(text.into()));
            let w = w.unwrap_or_else(|| panic!("{text:?} accepted"));
            assert!(w.contains(why) && w.contains("logging at info"), "{w}");
            assert!(t.would_enable("nuvol", &Level::INFO), "{text:?}");
            assert!(!t.would_enable("nuvol", &Level::DEBUG), "{text:?}");
        }
        let bad = std::ffi::OsString::from(String::from_utf8_lossy(b"\xff").into_owned());
        let (_, w) = filter_from(Err(VarError::NotUnicode(bad)));
        assert!(w.unwrap().contains("not UTF-8"));
    }
}
