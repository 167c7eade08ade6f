//! Real headless Chromium (Debian `chromium`) loads every panel page from a
//! running agent with a logged-in session, checks key elements in the DOM
//! and saves desktop and phone-width (390 px) screenshots under
//! `$CARGO_TARGET_TMPDIR/panel-screenshots/` (the path is printed).
//!
//! The browser logs in through the `[debug] test_hooks` route
//! `/api/v1/debug/login?token=…&next=/page`, which sets the session cookie
//! and redirects: each Chromium run starts there.
//!
//! `chromium_renders_live_peers_and_services` renders the Community page of
//! an agent gossiping with two Go `serf agent`s (Debian `serf`): their rows
//! with role, zone and state, a service row from a `svc:` tag with its
//! link, and a killed Go agent turning `failed` on the page.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A UDP+TCP port pair that is free on 127.0.0.1 (gossip uses both).
fn free_gossip_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let p = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A Go serf agent, killed on drop.
struct GoSerf {
    child: Child,
    bind: SocketAddr,
}

impl GoSerf {
    fn start(dir: &Path, name: &str, tags: &[&str], join: Option<SocketAddr>) -> GoSerf {
        let bind = SocketAddr::from(([127, 0, 0, 1], free_gossip_port()));
        let rpc = format!("127.0.0.1:{}", free_gossip_port());
        let mut cmd = Command::new("serf");
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={bind}"))
            .arg(format!("-rpc-addr={rpc}"));
        for t in tags {
            cmd.args(["-tag", t]);
        }
        if let Some(j) = join {
            cmd.arg(format!("-join={j}"));
        }
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serf (tests/apt-packages.txt)");
        let g = GoSerf { child, bind };
        let t0 = Instant::now();
        while !Command::new("serf")
            .args(["members", &format!("-rpc-addr={rpc}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "serf {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        g
    }
}

impl Drop for GoSerf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `<tr>` of the table in the element with `id` whose cells include
/// one that is exactly `first`; the row's cell texts, HTML unescaped enough
/// for names and links.
fn row_of(dom: &str, id: &str, first: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let section = &dom[start..];
    let end = section.find("</table>").unwrap_or(section.len());
    section[..end]
        .split("<tr>")
        .find(|r| r.contains(&format!("<td>{first}</td>")))
        .map(str::to_string)
}

#[test]
fn chromium_renders_live_peers_and_services() {
    let t0 = Instant::now();
    let pid = std::process::id();
    let gossip = free_gossip_port();
    let dir = common::Agent::fresh_dir("chromium-live");
    let go_a_name = format!("go-a-{pid}");
    let go_b_name = format!("go-b-{pid}");
    let go_a = GoSerf::start(
        &dir,
        &go_a_name,
        &["role=super-node", "zone=north", "svc:web=_http._tcp:8080"],
        None,
    );
    let mut go_b = GoSerf::start(
        &dir,
        &go_b_name,
        &["role=ordinary-node", "zone=south"],
        Some(go_a.bind),
    );
    let config = format!(
        "[debug]\ntest_hooks = true\n\n[discovery]\nbind = \"127.0.0.1\"\nport = {gossip}\n\
         node_name = \"nuvol-live-{pid}\"\nmdns = false\njoin = [\"{}\"]\n",
        go_a.bind
    );
    let a = Agent::start_in(dir, &config, false);
    let members = |a: &Agent| a.bearer("GET", "/api/v1/members", b"").json();
    let status_of = |m: &serde_json::Value, n: &str| {
        m.as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == n))
            .and_then(|x| x["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = members(&a);
        if status_of(&m, &go_a_name) == "alive" && status_of(&m, &go_b_name) == "alive" {
            break;
        }
        assert!(Instant::now() < deadline, "Go members not alive: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    std::fs::create_dir_all(&out_dir).unwrap();
    let profile = a.dir.join("chromium-profile");
    let login = format!(
        "{}/api/v1/debug/login?token={}&next=%2Fcommunity",
        a.url(),
        a.token()
    );
    let dom = chromium(&["--dump-dom".into(), login.clone()], &profile);
    assert!(
        !dom.contains("id=\"login\""),
        "still the login form:\n{dom}"
    );
    for (name, role, zone) in [
        (&go_a_name, "super-node", "north"),
        (&go_b_name, "ordinary-node", "south"),
    ] {
        let row = row_of(&dom, "members", name)
            .unwrap_or_else(|| panic!("no member row for {name}:\n{dom}"));
        // The name first, the columns in the page's order, not the JSON's.
        assert!(
            row.starts_with(&format!("<td>{name}</td><td>alive</td>")),
            "{name} first, then its status: {row}"
        );
        for want in [role, zone, "alive"] {
            assert!(
                row.contains(&format!("<td>{want}</td>")),
                "{name}: {want} not in its row: {row}"
            );
        }
    }
    let svc = row_of(&dom, "community-services", "web")
        .unwrap_or_else(|| panic!("no service row for web:\n{dom}"));
    assert!(svc.starts_with("<td>web</td>"), "name first: {svc}");
    // Times to 0.01 ms: no cell with a float's noise digits.
    for cell in svc.split("<td>").chain(
        row_of(&dom, "members", &go_a_name)
            .unwrap_or_default()
            .split("<td>"),
    ) {
        let text = cell.split('<').next().unwrap_or("");
        if let Some((_, frac)) = text.split_once('.') {
            if frac.chars().all(|c| c.is_ascii_digit()) {
                assert!(frac.len() <= 2, "unrounded number {text:?} on the page");
            }
        }
    }
    for want in ["_http._tcp", go_a_name.as_str()] {
        assert!(svc.contains(want), "{want} not in the service row: {svc}");
    }
    assert!(
        svc.contains("href=\"http://127.0.0.1:8080/\""),
        "no link to the service: {svc}"
    );
    chromium(
        &[
            format!(
                "--screenshot={}",
                out_dir.join("community-live-desktop.png").display()
            ),
            "--window-size=1280,900".into(),
            login.clone(),
        ],
        &profile,
    );
    assert_eq!(
        png_size(&out_dir.join("community-live-desktop.png")),
        (1280, 900)
    );

    // Kill go-b: the page shows it failed.
    let _ = go_b.child.kill();
    let _ = go_b.child.wait();
    let killed = Instant::now();
    let row = loop {
        let dom = chromium(&["--dump-dom".into(), login.clone()], &profile);
        let row = row_of(&dom, "members", &go_b_name).unwrap_or_default();
        if row.contains("<td>failed</td>") {
            break row;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "{go_b_name} not failed on the page after 30 s: {row}\nAPI: {}",
            members(&a)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "failed on the page {:?} after the kill: {row}",
        killed.elapsed()
    );
    let still = row_of(
        &chromium(&["--dump-dom".into(), login.clone()], &profile),
        "members",
        &go_a_name,
    )
    .unwrap_or_default();
    assert!(still.contains("<td>alive</td>"), "go-a: {still}");
    chromium(
        &[
            format!(
                "--screenshot={}",
                out_dir.join("community-failed-desktop.png").display()
            ),
            "--window-size=1280,900".into(),
            login,
        ],
        &profile,
    );
    assert_eq!(
        png_size(&out_dir.join("community-failed-desktop.png")),
        (1280, 900)
    );
    eprintln!("screenshots: {} ({:?})", out_dir.display(), t0.elapsed());
}
