//! The kit against real headless Chromium (Debian `chromium`) and a page
//! on disk: scripts run before the DOM is dumped, screenshots have the
//! asked size, DevTools measures layout and sees a page change in place.

use std::path::PathBuf;
use std::time::Duration;

use nuvol_testkit::devtools::{wait_until, Browser};
use nuvol_testkit::Chromium;

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nuvol-testkit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const PAGE: &str = "<!doctype html><html><head><meta name=viewport content=\"width=device-width\"></head>\
<body><p id=x>before</p><div id=wide style=\"width:2000px;display:none\">w</div>\
<script>document.getElementById('x').textContent='after';\
setTimeout(function(){document.getElementById('x').textContent='later'},500)</script></body></html>";

#[test]
fn dom_after_scripts_and_screenshots_at_a_width() {
    let dir = scratch("oneshot");
    let page = dir.join("page.html");
    std::fs::write(&page, PAGE).unwrap();
    let url = format!("file://{}", page.display());
    let c = Chromium::new(dir.join("profile"));
    let dom = c.dump_dom(&url).unwrap();
    assert!(
        dom.contains("<p id=\"x\">later</p>"),
        "timers ran in virtual time: {dom}"
    );
    for (w, h) in [(1280, 900), (390, 844)] {
        let shot = dir.join(format!("shot-{w}.png"));
        assert_eq!(c.screenshot(&url, w, h, &shot).unwrap(), (w, h));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn devtools_measures_the_page_and_follows_changes() {
    let dir = scratch("devtools");
    let page = dir.join("page.html");
    std::fs::write(&page, PAGE).unwrap();
    let mut b = Browser::start(&dir, 1280, 900).unwrap();
    b.navigate(&format!("file://{}", page.display())).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        b.text_of("x").unwrap_or_default() == "later"
    }));
    let fits = |b: &mut Browser| b.eval("document.documentElement.scrollWidth").unwrap();
    assert_eq!(fits(&mut b), serde_json::json!(1280));
    b.eval("document.getElementById('wide').style.display='block'")
        .unwrap();
    assert!(
        fits(&mut b).as_u64().unwrap() >= 2000,
        "overflow is measured"
    );
    assert_eq!(b.text_of("nothing-here").unwrap(), "");
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
}
