//! nuvol-testkit: what the panel's browser tests share, for the agent's
//! integration tests (`agent/nuvol/tests`) and the end-to-end suite that
//! boots the image (`tests/`). A dev-dependency only.
//!
//! - [`Chromium`]: one headless Chromium run per call (Debian `chromium`,
//!   `tests/apt-packages.txt`) with the flags that work here as root in a
//!   container: the DOM after scripts ran, or a screenshot at a width;
//! - [`devtools::Browser`]: a Chromium kept open and driven over its
//!   DevTools pipe, to watch a page change or measure it in JavaScript;
//! - [`png_size`]: a screenshot's width and height;
//! - [`debug_login_url`]: the panel's `[debug] test_hooks` login route;
//! - [`dom`]: a table's rows and a cell's text out of a DOM dump;
//! - [`serf::GoSerf`]: a real Go `serf agent` as a gossip peer, started
//!   again on other ports when the ones picked were taken meanwhile.

pub mod devtools;
pub mod dom;
pub mod serf;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a browser step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program} (apt-get install chromium): {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a PNG file")]
    NotPng(PathBuf),
    #[error("chromium wrote no screenshot to {path}: {stderr}")]
    NoScreenshot { path: PathBuf, stderr: String },
    #[error("devtools: {0}")]
    DevTools(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The Chromium program: `$CHROMIUM`, else `chromium`.
pub fn program() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Flags for headless runs as root without a GPU or a big `/dev/shm`.
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// One-shot headless Chromium runs sharing a profile (so a session cookie
/// set by one run is sent by the next).
#[derive(Debug, Clone)]
pub struct Chromium {
    profile: PathBuf,
    budget_ms: u32,
}

impl Chromium {
    /// Runs with the profile directory `profile` (created by Chromium) and
    /// 3 s of virtual time for the page's scripts.
    pub fn new(profile: impl Into<PathBuf>) -> Chromium {
        Chromium {
            profile: profile.into(),
            budget_ms: 3000,
        }
    }

    /// How much virtual time a page gets before the DOM or the screenshot
    /// is taken.
    pub fn virtual_time_budget(mut self, ms: u32) -> Chromium {
        self.budget_ms = ms;
        self
    }

    /// Run Chromium with [`HEADLESS`], the profile and `args`; its stdout.
    pub fn run(&self, args: &[String]) -> Result<String> {
        let program = program();
        let out = Command::new(&program)
            .args(HEADLESS)
            .arg(format!("--virtual-time-budget={}", self.budget_ms))
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .output()
            .map_err(|source| Error::Spawn { program, source })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The DOM of `url` after its scripts ran, as HTML.
    pub fn dump_dom(&self, url: &str) -> Result<String> {
        self.run(&["--dump-dom".to_string(), url.to_string()])
    }

    /// A `width`×`height` screenshot of `url` into `out` (PNG); returns
    /// the size of the image written.
    pub fn screenshot(&self, url: &str, width: u32, height: u32, out: &Path) -> Result<(u32, u32)> {
        match std::fs::remove_file(out) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    path: out.to_path_buf(),
                    source: e,
                })
            }
            _ => {}
        }
        let program = program();
        let run = Command::new(&program)
            .args(HEADLESS)
            .arg(format!("--virtual-time-budget={}", self.budget_ms))
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .arg(format!("--screenshot={}", out.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg(url)
            .output()
            .map_err(|source| Error::Spawn { program, source })?;
        if !out.exists() {
            let stderr = String::from_utf8_lossy(&run.stderr);
            let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ");
            return Err(Error::NoScreenshot {
                path: out.to_path_buf(),
                stderr: tail,
            });
        }
        png_size(out)
    }
}

/// Width and height of a PNG file (from its IHDR chunk).
pub fn png_size(p: &Path) -> Result<(u32, u32)> {
    let b = std::fs::read(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })?;
    if b.len() < 24 || &b[..8] != b"\x89PNG\r\n\x1a\n" || &b[12..16] != b"IHDR" {
        return Err(Error::NotPng(p.to_path_buf()));
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((be(16), be(20)))
}

/// The panel's test-hook login (`[debug] test_hooks = true`): sets the
/// session cookie for `token` and redirects to `next`. `base` is
/// `http://host:port`.
pub fn debug_login_url(base: &str, token: &str, next: &str) -> String {
    let mut enc = String::new();
    for b in next.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                enc.push(char::from(b))
            }
            _ => enc.push_str(&format!("%{b:02X}")),
        }
    }
    format!("{base}/api/v1/debug/login?token={token}&next={enc}")
}

/// Read an HTTP request's head (up to the blank line, at most 8 KiB) from
/// a fake server's connection, byte by byte so nothing of a body is taken;
/// `None` when the client went away first.
pub fn read_request_head(s: &mut impl std::io::Read) -> Option<String> {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") && req.len() < 8192 {
        match s.read(&mut b) {
            Ok(1) => req.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&req).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_sizes_are_read_and_other_files_refused() {
        let dir = std::env::temp_dir().join(format!("nuvol-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // the smallest valid PNG head: signature, IHDR length and type, 3×2
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&3u32.to_be_bytes());
        png.extend_from_slice(&2u32.to_be_bytes());
        std::fs::write(dir.join("a.png"), &png).unwrap();
        assert_eq!(png_size(&dir.join("a.png")).unwrap(), (3, 2));
        std::fs::write(dir.join("b.png"), b"GIF89a").unwrap();
        assert!(matches!(
            png_size(&dir.join("b.png")),
            Err(Error::NotPng(_))
        ));
        assert!(matches!(
            png_size(&dir.join("none.png")),
            Err(Error::Io { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn login_url_encodes_the_page() {
        assert_eq!(
            debug_login_url("http://127.0.0.1:8080", "abc", "/community?x=1"),
            "http://127.0.0.1:8080/api/v1/debug/login?token=abc&next=%2Fcommunity%3Fx%3D1"
        );
    }
}
