//! The panel of the booted box in real headless Chromium, with real
//! services: the three recipes running and one bundle crash-looping
//! (`exit 3`). At desktop (1280 px) and phone (390 px) widths: the
//! Dashboard raises an alert for the failing service and sums the services
//! up; the Services table starts with name and state and holds no raw JSON;
//! the Community page lists each service of the box once, named by its
//! announce's instance where it has one; the trusted key shows a date; no
//! page is wider than the window. Screenshots are kept under
//! `$CARGO_TARGET_TMPDIR/box-panel/` (the path is printed).

use std::path::PathBuf;
use std::time::Duration;

use nuvol_e2e::{disk_copy, recipes, write_config, Scratch, TestKey, Vm};
use nuvol_testkit::dom::{table_rows, text};
use nuvol_testkit::{debug_login_url, Chromium};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);

#[test]
fn panel_on_the_box_tells_the_truth_about_its_services() {
    let dir = Scratch::new("panel-on-box");
    let disk = disk_copy(&dir.0, 2048);
    write_config(
        &disk,
        "hostname = \"e2e-panel\"\n[debug]\ntest_hooks = true\n[panel]\nallow_plain_http = true\n",
    );
    let key = TestKey::new(&dir.0);
    let failing = key.busybox_bundle(
        &dir.0,
        "failing",
        "[run]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", \"echo starting; sleep 1; exit 3\"]\nuid = 1234\ngid = 1234\nrestart = \"always\"\n",
    );
    let mut vm = Vm::boot(&disk, "bios", &dir.0);
    vm.wait_console("nuvol: ready: panel at", 1, BOOT);
    vm.ctl_ok(&["keys", "add", recipes().join("dev.pub").to_str().unwrap()]);
    vm.ctl_ok(&["keys", "add", key.public.to_str().unwrap()]);
    for name in ["web", "syncthing", "etcd"] {
        let f = recipes().join(format!("{name}.nvb"));
        vm.ctl_ok(&["bundles", "install", "--yes", f.to_str().unwrap()]);
    }
    vm.ctl_ok(&["bundles", "install", "--yes", failing.to_str().unwrap()]);
    let local = |vm: &Vm| -> Vec<Value> {
        let (_, body) = vm.http_admin("GET", "/api/v1/local-services").unwrap();
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    vm.wait_for(
        "three running, one restarted twice",
        Duration::from_secs(300),
        || {
            let l = local(&vm);
            let running = l
                .iter()
                .filter(|s| s["state"] == "running" && s["name"] != "failing")
                .count();
            let failing = l
                .iter()
                .any(|s| s["name"] == "failing" && s["restarts"].as_u64() >= Some(2));
            (running == 3 && failing).then_some(())
        },
    );
    // The catalog's view of this box, once every running service is announced.
    let catalog = vm.wait_for(
        "the box's services in the catalog",
        Duration::from_secs(120),
        || {
            let (_, body) = vm.http_admin("GET", "/api/v1/services").ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let here: Vec<Value> = v
                .as_array()?
                .iter()
                .filter(|s| s["node"] == "e2e-panel" && s["service_type"] != "_nuvol-bundles._tcp")
                .cloned()
                .collect();
            // web 1, Syncthing 2, etcd 2
            (here.len() == 5).then_some(here)
        },
    );
    for s in &catalog {
        let name = s["name"].as_str().unwrap_or("");
        assert!(
            !name.ends_with("-2") && !name.contains("_on_"),
            "index or scheme names in the catalog: {catalog:?}"
        );
    }
    assert!(
        catalog.iter().any(|s| s["name"] == "Syncthing GUI"),
        "the announce's instance names the service: {catalog:?}"
    );
    assert!(
        catalog.iter().all(|s| s["name"] != "failing"),
        "a failing service is not announced: {catalog:?}"
    );

    let token = vm.admin_token().unwrap();
    let base = format!("http://127.0.0.1:{}", vm.port);
    let login = |page: &str| debug_login_url(&base, &token, page);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("box-panel");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let browser = Chromium::new(dir.0.join("chromium-profile")).virtual_time_budget(5000);

    // Dashboard: the failing service's alert and the summary.
    let dom = browser.dump_dom(&login("/dashboard")).expect("chromium");
    let page = text(&dom);
    assert!(!page.contains("No alerts"), "{page}");
    assert!(
        page.contains("failing") && page.contains("exit code 3"),
        "{page}"
    );
    assert!(
        page.contains("3 running") || page.contains("3 running,"),
        "{page}"
    );

    // Services: name and state first, no JSON in cells.
    let dom = browser.dump_dom(&login("/services")).expect("chromium");
    let rows = table_rows(&dom, "local-services");
    assert_eq!(rows[0][..2], ["Service", "State"], "{rows:?}");
    assert_eq!(rows.len(), 5, "header and four services: {rows:?}");
    for r in &rows[1..] {
        let (name, state) = (text(&r[0]), text(&r[1]));
        if name == "failing" {
            assert!(state.starts_with("failing"), "{state}");
        } else {
            assert!(state.starts_with("running"), "{name}: {state}");
        }
        for c in r {
            assert!(
                !c.contains('{') && !c.contains("\":"),
                "raw JSON in a cell: {c}"
            );
        }
    }

    // Community: each of the box's services once.
    let dom = browser.dump_dom(&login("/community")).expect("chromium");
    let rows = table_rows(&dom, "community-services");
    let here = rows[1..]
        .iter()
        .filter(|r| r.iter().any(|c| text(c) == "e2e-panel"))
        .filter(|r| !text(&r[0]).contains("bundles"))
        .count();
    assert_eq!(here, catalog.len(), "{rows:?}");

    // Bundles: the trusted keys' dates and free space.
    let dom = browser.dump_dom(&login("/bundles")).expect("chromium");
    let keys = table_rows(&dom, "trusted-keys");
    assert!(keys.len() >= 3, "{keys:?}");
    assert!(keys[1][2].ends_with(" UTC"), "{keys:?}");
    assert!(
        text(&dom).contains("Free space for bundles"),
        "free space shown"
    );

    for page in ["/dashboard", "/services", "/community", "/bundles"] {
        let name = page.trim_start_matches('/');
        for (w, h, kind) in [(1280, 900, "desktop"), (390, 844, "phone")] {
            let shot = out_dir.join(format!("{name}-{kind}.png"));
            let size = browser
                .screenshot(&login(page), w, h, &shot)
                .expect("screenshot");
            assert_eq!(size, (w, h), "{page}");
        }
    }
    let mut b = nuvol_testkit::devtools::Browser::start(&dir.0, 1280, 900).expect("chromium");
    for page in ["/dashboard", "/services", "/community", "/bundles"] {
        let (w, cut) = b
            .page_width(&login(page), page, Duration::from_secs(30))
            .expect("chromium");
        assert!(w <= 1280, "{page} is {w} px wide at 1280");
        assert_eq!(
            cut,
            serde_json::json!([]),
            "{page}: tables wider than the page"
        );
    }
    drop(b);
    eprintln!("screenshots of the box's panel: {}", out_dir.display());
    vm.power_off();
}
