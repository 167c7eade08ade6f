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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Agent;
use nuvol_testkit::dom::{table_rows, text};
use nuvol_testkit::serf::{free_gossip_port, GoSerf, SerfArgs};
use nuvol_testkit::{debug_login_url, Chromium};

#[test]
fn chromium_renders_every_page_logged_in() {
    let a = Agent::start("chromium", "[debug]\ntest_hooks = true\n", false);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let browser = Chromium::new(a.dir.join("chromium-profile"));
    let login = |page: &str| debug_login_url(&a.url(), &a.token(), page);
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
        (
            "/settings",
            &["id=\"tokens\"", "id=\"new-token\"", "id=\"factory-reset\""],
        ),
        (
            "/update",
            &[
                "id=\"slots\"",
                "id=\"update-state\"",
                "nuvol ctl update",
                "Reboot now",
            ],
        ),
    ];
    for (page, wants) in pages {
        let dom = browser.dump_dom(&login(page)).expect("chromium");
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
        let size = browser.screenshot(&login(page), 1280, 900, &shot);
        assert_eq!(size.expect("screenshot"), (1280, 900), "{page}");
        if matches!(page, "/dashboard" | "/bundles" | "/services" | "/") {
            let phone = out_dir.join(format!("{name}-phone.png"));
            let size = browser.screenshot(&login(page), 390, 844, &phone);
            assert_eq!(size.expect("screenshot"), (390, 844), "{page}");
        }
    }
    // A wrong token on the hook logs nobody in.
    let dom = Chromium::new(a.dir.join("chromium-profile-fresh"))
        .dump_dom(&debug_login_url(&a.url(), "x", "/settings"))
        .expect("chromium");
    assert!(dom.contains("unauthorized"), "{dom}");
    println!("screenshots: {}", out_dir.display());
    eprintln!("screenshots: {}", out_dir.display());
}

/// The `<tr>` of the table in the element with `id` whose cells include
/// one that is exactly `first`; the row's cell texts, HTML unescaped enough
/// for names and links.
fn row_of(dom: &str, id: &str, first: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let section = &dom[start..];
    let end = section.find("</table>").unwrap_or(section.len());
    section[..end]
        .split("<tr")
        .filter_map(|r| r.split_once('>').map(|(_, cells)| cells))
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
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect();
    let go_a = GoSerf::start(
        &dir,
        &go_a_name,
        &SerfArgs {
            tags: tags(&["role=super-node", "zone=north", "svc:web=_http._tcp:8080"]),
            ..SerfArgs::default()
        },
    );
    let mut go_b = GoSerf::start(
        &dir,
        &go_b_name,
        &SerfArgs {
            tags: tags(&["role=ordinary-node", "zone=south"]),
            join: Some(go_a.bind),
            ..SerfArgs::default()
        },
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
    let browser = Chromium::new(a.dir.join("chromium-profile"));
    let login = debug_login_url(&a.url(), &a.token(), "/community");
    let dom = browser.dump_dom(&login).expect("chromium");
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
    let shot = out_dir.join("community-live-desktop.png");
    let size = browser.screenshot(&login, 1280, 900, &shot);
    assert_eq!(size.expect("screenshot"), (1280, 900));

    // Kill go-b: the page shows it failed.
    go_b.kill();
    let killed = Instant::now();
    let row = loop {
        let dom = browser.dump_dom(&login).expect("chromium");
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
        &browser.dump_dom(&login).expect("chromium"),
        "members",
        &go_a_name,
    )
    .unwrap_or_default();
    assert!(still.contains("<td>alive</td>"), "go-a: {still}");
    let shot = out_dir.join("community-failed-desktop.png");
    let size = browser.screenshot(&login, 1280, 900, &shot);
    assert_eq!(size.expect("screenshot"), (1280, 900));
    eprintln!("screenshots: {} ({:?})", out_dir.display(), t0.elapsed());
}

/// A bundle `name` signed with `key` that runs `script` with busybox's
/// `sh`; `more` is appended to its manifest (`[[announce]]` tables).
fn script_bundle(
    dir: &Path,
    key: &nuvol_bundle::SecretKey,
    name: &str,
    script: &str,
    more: &str,
) -> PathBuf {
    common::busybox_bundle_with(dir, key, name, "1.0", script, more)
}

/// Stop the agent with SIGTERM (it stops its services; a SIGKILL would
/// leave them running) and wait for it.
fn stop(a: &mut Agent) {
    let _ = Command::new("kill").arg(a.child.id().to_string()).status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = a.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The box: services installed, two running and one crash-looping,
/// announced over gossip in both tag schemes. Real Chromium shows, at
/// desktop and phone widths: the failing service's alert on the
/// Dashboard, the services table with name and state first and no JSON in
/// its cells, one Community row per service with its sources, dates for
/// the trusted key, and no page wider than a 1280 px window.
#[test]
fn chromium_shows_running_and_failing_services_as_a_user_reads_them() {
    let pid = std::process::id();
    let dir = Agent::fresh_dir("chromium-services");
    let key = nuvol_bundle::SecretKey::generate().unwrap();
    let loop_script = "trap 'exit 0' TERM; while true; do sleep 1; done";
    let bundles = [
        script_bundle(
            &dir,
            &key,
            "web",
            loop_script,
            "[[announce]]\nservice_type = \"_http._tcp\"\nport = 18080\n",
        ),
        script_bundle(
            &dir,
            &key,
            "sync",
            loop_script,
            // Syncthing's four ports: the booted box's Services table once
            // overflowed 1280 px on exactly this cell.
            "[[announce]]\nservice_type = \"_syncthing._tcp\"\nport = 22000\n\
             [[announce]]\nservice_type = \"_http._tcp\"\ninstance = \"Sync GUI\"\nport = 18384\n\
             [[ports]]\nname = \"gui\"\nport = 18384\n[[ports]]\nname = \"sync\"\nport = 22000\n\
             [[ports]]\nname = \"quic\"\nport = 22000\nprotocol = \"udp\"\n\
             [[ports]]\nname = \"discovery\"\nport = 21027\nprotocol = \"udp\"\n",
        ),
        script_bundle(
            &dir,
            &key,
            "etcd",
            "echo 'etcd: cannot open /data/member: no such file'; exit 3",
            "[[announce]]\nservice_type = \"_etcd-client._tcp\"\nport = 2379\n\
             [[announce]]\nservice_type = \"_etcd-server._tcp\"\nport = 2380\n",
        ),
    ];
    {
        let store = nuvol_bundle::Store::open(&dir.join("state")).unwrap();
        store.keyring().add(&key.public(), "test key").unwrap();
        for b in &bundles {
            store.install(b).unwrap();
        }
    }
    let node = format!("panel-box-{pid}");
    let config = format!(
        "[debug]\ntest_hooks = true\n\n[discovery]\nbind = \"127.0.0.1\"\nport = {}\n\
         node_name = \"{node}\"\nmdns = false\n",
        free_gossip_port()
    );
    let mut a = Agent::start_in(dir, &config, false);

    // Two running, etcd crash-looping (restarted twice at least).
    let t0 = Instant::now();
    loop {
        let l = a.bearer("GET", "/api/v1/local-services", b"").json();
        let get = |n: &str| {
            l.as_array()
                .and_then(|x| x.iter().find(|s| s["name"] == n))
                .cloned()
                .unwrap_or_default()
        };
        let up = |n: &str| get(n)["state"] == "running" && get(n)["pid"].is_number();
        if up("web") && up("sync") && get("etcd")["restarts"].as_u64() >= Some(2) {
            assert_eq!(
                get("etcd")["last_exit"]["status"],
                serde_json::json!({"Exited": 3})
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "services not up: {l}\n{}",
            a.console()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The catalog: one entry per announced service, in both schemes.
    let t0 = Instant::now();
    let catalog = loop {
        let v = a.bearer("GET", "/api/v1/services", b"").json();
        let mine: Vec<serde_json::Value> = v
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|s| s["node"] == node.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if mine.iter().any(|s| s["name"] == "Sync GUI") {
            break mine;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not announced: {v}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut keys: Vec<(String, u64)> = catalog
        .iter()
        .map(|s| {
            (
                s["service_type"].as_str().unwrap_or("").to_string(),
                s["port"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        catalog.len(),
        "one entry per service: {catalog:?}"
    );
    for s in &catalog {
        let name = s["name"].as_str().unwrap_or("");
        assert!(
            !name.contains("_on_") && !name.ends_with("-2"),
            "announcer-made name {name:?}"
        );
        // every svc: tag is one entry; a Cloudy announcement never another
        assert_eq!(s["sources"][0], "serf", "{s}");
    }
    let both = catalog
        .iter()
        .filter(|s| s["sources"] == serde_json::json!(["serf", "cloudy"]))
        .count();
    assert!(both >= 3, "the Cloudy tag's services merged: {catalog:?}");

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("panel-screenshots");
    std::fs::create_dir_all(&out_dir).unwrap();
    let browser = Chromium::new(a.dir.join("chromium-profile"));
    let login = |page: &str| debug_login_url(&a.url(), &a.token(), page);

    // Dashboard: etcd's alert with the reason; a summary; no "all good".
    let dom = browser.dump_dom(&login("/dashboard")).expect("chromium");
    let alerts = dom
        .split_once("id=\"alerts\"")
        .map(|(_, r)| r.split("</div></div>").next().unwrap_or(r))
        .unwrap_or("");
    assert!(
        alerts.contains("Service etcd is failing") && alerts.contains("exit code 3"),
        "no alert for etcd: {alerts}"
    );
    assert!(!dom.contains("all good"), "{dom}");
    assert!(
        dom.contains("3 services: 1 failing, 2 running"),
        "summary: {dom}"
    );
    let short = table_rows(&dom, "services-short");
    assert_eq!(short[0][..2], ["Service", "State"], "{short:?}");

    // Services: name and state first, human words, no JSON in a cell.
    let dom = browser.dump_dom(&login("/services")).expect("chromium");
    let rows = table_rows(&dom, "services");
    assert_eq!(rows.len(), 4, "header and three services: {rows:?}");
    assert_eq!(
        rows[0],
        [
            "Service",
            "State",
            "Uptime",
            "Restarts",
            "Memory",
            "CPU",
            "Ports",
            "Last exit",
            "Version",
            "Actions"
        ]
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
    };
    assert!(
        text(&row("web")[1]).starts_with("running"),
        "{:?}",
        row("web")
    );
    assert!(text(&row("sync")[1]).starts_with("running"));
    let etcd = text(&row("etcd")[1]);
    assert!(
        etcd.starts_with("failing") && etcd.contains("exit code 3"),
        "{etcd}"
    );
    for r in &rows[1..] {
        for c in r {
            assert!(
                !c.contains('{') && !c.contains("\":"),
                "raw JSON in a cell: {c}"
            );
        }
        // the digest cut to 12 hex, the full one in the title
        assert!(r[8].contains("title=\""), "{:?}", r);
        assert_eq!(text(&r[8]).len(), "1.0 ".len() + 12, "{:?}", r);
    }

    // Community: one row per service, as many as the catalog has.
    let dom = browser.dump_dom(&login("/community")).expect("chromium");
    let rows = table_rows(&dom, "community-services");
    assert_eq!(rows[0][..2], ["Service", "Open"], "{rows:?}");
    let here: Vec<&Vec<String>> = rows[1..]
        .iter()
        .filter(|r| r.get(3).map(String::as_str) == Some(node.as_str()))
        .collect();
    assert_eq!(here.len(), catalog.len(), "{rows:?}");
    let gui = here
        .iter()
        .find(|r| r[0] == "Sync GUI")
        .unwrap_or_else(|| panic!("no Sync GUI row: {rows:?}"));
    assert_eq!(gui[6], "serf, cloudy");
    assert!(
        gui[1].contains("href=\"http://127.0.0.1:18384/\""),
        "{gui:?}"
    );

    // Bundles: the trusted key's date, not a Unix number.
    let dom = browser.dump_dom(&login("/bundles")).expect("chromium");
    let keys = table_rows(&dom, "trusted-keys");
    assert_eq!(keys[0], ["Key", "Comment", "Added", "Public key"]);
    assert!(
        keys[1][2].ends_with(" UTC") && keys[1][2].starts_with("20"),
        "{keys:?}"
    );

    // Screenshots at desktop and phone widths.
    for page in ["/dashboard", "/services", "/community", "/bundles"] {
        let name = page.trim_start_matches('/');
        for (w, h, kind) in [(1280, 900, "desktop"), (390, 844, "phone")] {
            let shot = out_dir.join(format!("box-{name}-{kind}.png"));
            let size = browser.screenshot(&login(page), w, h, &shot);
            assert_eq!(size.expect("screenshot"), (w, h), "{page}");
        }
    }

    // Nothing wider than the window at 1280 px, tables included (on a
    // phone they scroll inside their box).
    let mut b = nuvol_testkit::devtools::Browser::start(&a.dir, 1280, 900).expect("chromium");
    for page in ["/dashboard", "/services", "/community", "/bundles"] {
        let (w, cut) = b
            .page_width(&login(page), page, Duration::from_secs(15))
            .expect("chromium");
        assert!(w <= 1280, "{page} is {w} px wide at 1280");
        // and no table needs its own scroll bar there either
        assert_eq!(
            cut,
            serde_json::json!([]),
            "{page}: tables wider than the page"
        );
    }
    drop(b);
    stop(&mut a);
    println!("screenshots: {}", out_dir.display());
    eprintln!("screenshots: {}", out_dir.display());
}
