//! Real headless Chromium (Debian `chromium`) loads every panel page from a
//! running agent with a logged-in session, checks key elements in the DOM
//! and saves desktop and phone-width (390 px) screenshots under
//! `$CARGO_TARGET_TMPDIR/panel-screenshots/` (the path is printed).
//!
//! The browser logs in through the `[debug] test_hooks` route
//! `/api/v1/debug/login?token=…&next=/page`, which sets the session cookie
//! and redirects: each Chromium run starts there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Agent;

fn chromium(args: &[String], profile: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (tests/apt-packages.txt)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Width and height of a PNG file.
fn png_size(p: &Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&b[1..4], b"PNG", "{}", p.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn chromium_renders_every_page_logged_in() {
    let a = Agent::start("chromium", "[debug]\ntest_hooks = true\n", false);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let profile = a.dir.join("chromium-profile");
    let login = |page: &str| {
        format!(
            "{}/api/v1/debug/login?token={}&next={}",
            a.url(),
            a.token(),
            page.replace('/', "%2F")
        )
    };
    let pages: [(&str, &[&str]); 8] = [
        (
            "/",
            &["id=\"hostname\"", "id=\"disks\"", "id=\"login-link\""],
        ),
        (
            "/dashboard",
            &[
                "id=\"alerts\"",
                "id=\"cpu\"",
                "id=\"memory\"",
                "<svg",
                "Log out",
            ],
        ),
        (
            "/community",
            &["id=\"members\"", "id=\"community-services\""],
        ),
        ("/services", &["id=\"local-services\""]),
        (
            "/bundles",
            &[
                "id=\"upload\"",
                "type=\"file\"",
                "id=\"bundle-list\"",
                "id=\"from-community\"",
                "csrf=",
            ],
        ),
        ("/network", &["id=\"interfaces\"", "id=\"network-state\""]),
        ("/settings", &["id=\"tokens\"", "id=\"new-token\""]),
        ("/update", &["id=\"slots\"", "separate issue", "Reboot now"]),
    ];
    for (page, wants) in pages {
        let dom = chromium(&["--dump-dom".into(), login(page)], &profile);
        for w in wants {
            assert!(dom.contains(w), "{page}: {w:?} not in the DOM:\n{dom}");
        }
        assert!(
            !dom.contains("id=\"login\""),
            "{page}: still the login form:\n{dom}"
        );
        let name = if page == "/" {
            "status".to_string()
        } else {
            page.trim_start_matches('/').to_string()
        };
        let shot = out_dir.join(format!("{name}-desktop.png"));
        chromium(
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,900".into(),
                login(page),
            ],
            &profile,
        );
        assert_eq!(png_size(&shot), (1280, 900), "{page}");
        if matches!(page, "/dashboard" | "/bundles" | "/services" | "/") {
            let phone = out_dir.join(format!("{name}-phone.png"));
            chromium(
                &[
                    format!("--screenshot={}", phone.display()),
                    "--window-size=390,844".into(),
                    login(page),
                ],
                &profile,
            );
            assert_eq!(png_size(&phone), (390, 844), "{page}");
        }
    }
    // A wrong token on the hook logs nobody in.
    let dom = chromium(
        &[
            "--dump-dom".into(),
            format!("{}/api/v1/debug/login?token=x&next=%2Fsettings", a.url()),
        ],
        &profile.with_extension("fresh"),
    );
    assert!(dom.contains("unauthorized"), "{dom}");
    println!("screenshots: {}", out_dir.display());
    eprintln!("screenshots: {}", out_dir.display());
}
