//! Signed A/B OS update on the booted image, BIOS (SeaBIOS) path
//! (docs/boot.md, "Update"). One disk, reused across boots:
//!
//! 0. The box's nuvol.toml is written for a newer format (`format = 2`, a
//!    key this nuvol does not know), as a rollback leaves it: that key is
//!    skipped and shown, the rest applies.
//! 1. Refusals, before anything touches the boot partition: an artefact
//!    signed by a key not in `[update] trusted_keys`, one with its
//!    signature zeroed, and one for another architecture answer
//!    `update_untrusted` / `update_wrong_arch`, and one whose initramfs
//!    outgrew its slot file `update_too_big`; no update is recorded, no
//!    try armed, slot B's files on the disk unchanged.
//!    The same artefacts from an attacker's `http://` server on the host
//!    (`nuvol ctl update --url`, and the panel's URL form): the box reads
//!    only the signed head before refusing a stranger's file or endless
//!    garbage; a signed head whose parts are garbage is caught by the full
//!    check; a file longer than its signed head, a server that stalls
//!    (30 s of silence) or drips its head slower than the budget, and a 404
//!    are refused with `index_mismatch` / `fetch_failed`.
//! 2. With a service running (a bundle whose publisher is trusted for
//!    bundles only: the same key's update artefact was refused in 1), the
//!    image's own kernel and initramfs as version 99.0.0 through
//!    `nuvol ctl update`: written to slot B, try armed; after a reboot the
//!    box runs slot B, marks it good once the settling time (5 s here) is
//!    over and the service runs again, and a second reboot comes up in B
//!    again (now the default).
//! 3. Version 99.1.0 whose initrd is garbage (signed, valid manifest),
//!    downloaded by the box from the host's server (`POST
//!    /api/v1/update/fetch {"url"}`) to slot A: the try boot panics, the kernel
//!    reboots after 10 s, the loader boots the default (B) by itself, and
//!    the API reports the failed try and the re-armed second one.
//! 4. Powered off with that try still armed, a laptop puts two files in
//!    `update/` on the boot partition: one signed by a stranger and 99.2.0.
//!    The bad try panics once more; back in B the agent records the
//!    stranger's file as refused, writes 99.2.0 to slot A (superseding the
//!    failing update), reboots itself, and A is marked good. The next boot
//!    applies neither file again.
//! 5. 99.0.0 again is refused as a downgrade. Version 99.4.0 whose agent
//!    cannot start in its slot (the test hook
//!    `[debug] fail_starts` for slot B only): PID 1 sees its third quick
//!    failure in the trial boot, reboots into the default slot A, and the
//!    API and the panel's Update page say why.
//! 6. The same update, its network never configured in slot B (test hook
//!    `no_network_slot`, trial unhealthy limit 10 s): the try armed again
//!    is taken at power-on, the agent reboots out of it, and the third try
//!    ends the same way: the update is given up after 3 tries, A stays the
//!    default with nothing armed, and the dashboard says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nuvol_e2e::host_http::{Answer, HostHttp};
use nuvol_e2e::{
    copy_from_boot, copy_to_boot, disk_copy, key_line, os_part, tail, write_config, BootOptions,
    Scratch, TestKey, Vm,
};

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";

fn sha(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Upload `file` to `path` with the admin token; retried while the
/// connection is reset (QEMU's forward right after a reboot's ready line).
fn upload(vm: &Vm, path: &str, file: &Path) -> (u16, String) {
    vm.wait_for(&format!("POST {path}"), Duration::from_secs(60), || {
        vm.upload_admin(path, file).ok()
    })
}

#[test]
fn update_tries_the_other_slot_marks_it_good_and_rolls_back_a_bad_one() {
    let t0 = Instant::now();
    let dir = Scratch::new("update");
    let d = |n: &str| -> PathBuf { dir.0.join(n) };
    let disk = disk_copy(&dir.0, 1024);
    std::fs::create_dir_all(d("keys")).unwrap();
    std::fs::create_dir_all(d("other")).unwrap();
    let key = TestKey::new(&d("keys"));
    let other = TestKey::new(&d("other"));
    os_part(&disk, "bzImage", &d("bzImage"));
    os_part(&disk, "initrd.img", &d("initrd.img"));
    copy_from_boot(&disk, "B/initrd.img", &d("b-before"));
    let config = |debug: &str| {
        format!(
            // Written for a newer nuvol (format 2, a key this one does not
            // know), as after a rollback: that key is skipped, the rest applies.
            "format = 2\nroof_camera = true\nhostname = \"e2e-update\"\n[panel]\nallow_plain_http = true\n\
             [debug]\ntest_hooks = true\nupdate_settle_secs = 5\n{debug}\
             [update]\ntrusted_keys = [\"{}\"]\n",
            key_line(&key.public)
        )
    };
    write_config(&disk, &config(""));
    let (k, i) = (d("bzImage"), d("initrd.img"));
    let good = d("nuvol-x86_64-99.0.0.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &i, "99.0.0", "x86_64", &good);
    let foreign = d("foreign.nvu");
    nuvol_e2e::update_artefact(&other.secret, &k, &i, "99.0.0", "x86_64", &foreign);
    let arm = d("arm.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &i, "99.0.0", "aarch64", &arm);
    // The signature block zeroed: "not signed".
    let unsigned = d("unsigned.nvu");
    let mut b = std::fs::read(&good).unwrap();
    let mlen = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    b[16 + mlen..16 + mlen + 74].fill(0);
    std::fs::write(&unsigned, &b).unwrap();
    // An initramfs grown past its 8 MiB slot file: it would have to be
    // allocated on FAT, so it is refused before anything is written.
    let fat = d("fat-initrd.img");
    let mut big = std::fs::read(&i).unwrap();
    big.resize(9 << 20, 0x5a);
    std::fs::write(&fat, &big).unwrap();
    let too_big = d("too-big.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &fat, "99.0.0", "x86_64", &too_big);

    // --- 1. refusals ---------------------------------------------------------
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &BootOptions::default());
    vm.wait_console(READY, 1, BOOT);
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    assert_eq!(v["available"], true, "{v}");
    let (_, status) = vm.http("GET", "/api/v1/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["config"]["problem"].is_null(), "{status}");
    let skipped = status["config"]["skipped"].to_string();
    assert!(
        skipped.contains("`roof_camera`") && skipped.contains("format 2"),
        "{status}"
    );
    assert_eq!(status["hostname"], "e2e-update", "{status}");
    assert!(
        vm.console().contains("nuvol: CONFIG: "),
        "{}",
        tail(&vm.console())
    );
    for (file, status, code) in [
        (&foreign, 403, "update_untrusted"),
        (&unsigned, 403, "update_untrusted"),
        (&arm, 422, "update_wrong_arch"),
        (&too_big, 413, "update_too_big"),
    ] {
        let (st, body) = upload(&vm, "/api/v1/update", file);
        eprintln!(
            "{}: {st} {}",
            file.display(),
            body.lines().last().unwrap_or("")
        );
        assert_eq!(st, status, "{body}");
        assert!(body.contains(code), "{body}");
    }
    // The same through the panel's form, as a browser sends it.
    let session = vm.wait_for("panel login", Duration::from_secs(60), || vm.login().ok());
    let page = vm.panel_page(&session, "/update");
    assert!(page.contains("id=update-upload"), "{page}");
    let (st, page) = vm
        .form_upload(&session, "/api/v1/update", "/update", "update", &foreign)
        .unwrap();
    assert_eq!(st, 403, "{page}");
    assert!(
        page.contains("id=error") && page.contains("update_untrusted"),
        "{page}"
    );
    let (code, _, err) = vm.ctl(&["update", arm.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("update_wrong_arch") || err.contains("x86_64"),
        "{err}"
    );
    // The stalling and dripping servers are answered meanwhile.
    let slow = url_attacks(&vm, &session, &good, &foreign, &key.secret, &k, &i, &dir.0);
    let v = vm.update_status();
    assert!(v["update"].is_null(), "{v}");
    assert!(v["armed_try"].is_null(), "{v}");
    copy_from_boot(&disk, "B/initrd.img", &d("b-after"));
    assert_eq!(sha(&d("b-before")), sha(&d("b-after")), "slot B untouched");

    // --- 2. a good update: try, mark good, stays ---------------------------
    vm.ctl_ok(&["keys", "add", other.public.to_str().unwrap()]);
    let sleep =
        "[run]\ncommand = [\"/bin/busybox\", \"sleep\", \"100000\"]\nuid = 1234\ngid = 1234\n";
    let nvb = other.busybox_bundle(&dir.0, "sleeper", sleep);
    vm.ctl_ok(&["bundles", "install", nvb.to_str().unwrap()]);
    vm.wait_for("sleeper running", Duration::from_secs(60), || {
        vm.service_running("sleeper").then_some(())
    });
    let out = vm.ctl_ok(&["update", good.to_str().unwrap()]);
    assert!(out.contains("written to slot B"), "{out}");
    let v = vm.update_status();
    assert_eq!(v["update"]["phase"], "pending", "{v}");
    assert_eq!(
        v["update"]["services"],
        serde_json::json!(["sleeper"]),
        "{v}"
    );
    assert_eq!(v["armed_try"], "nuvol-B", "{v}");
    assert_eq!(v["slots"]["B"]["version"], "99.0.0", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    slow_refused(slow);
    vm.reboot_via_api();
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "B", "{v}");
    assert_eq!(v["running_version"], "99.0.0", "{v}");
    assert!(
        v["armed_try"].is_null(),
        "the loader cleared the boot-once: {v}"
    );
    let v = vm.wait_update_good(Duration::from_secs(120));
    assert_eq!(v["default_slot"], "B", "{v}");
    assert!(
        vm.console().contains("marked good"),
        "{}",
        tail(&vm.console())
    );
    let out = vm.ctl_ok(&["update"]);
    assert!(
        out.contains("running slot B (99.0.0), default slot B"),
        "{out}"
    );
    vm.reboot_via_api();
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "B", "still B after a plain reboot: {v}");

    // --- 3. a bad update: the try panics, the box comes back by itself ------
    let garbage = d("garbage.img");
    std::fs::write(&garbage, vec![0x5au8; 64 * 1024]).unwrap();
    let bad = d("bad.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &garbage, "99.1.0", "x86_64", &bad);
    let mirror = HostHttp::serve(vec![(
        "/nuvol-x86_64-99.1.0.nvu",
        Answer::File(std::fs::read(&bad).unwrap()),
    )]);
    let body = format!(
        "{{\"url\": \"{}\"}}",
        mirror.url("/nuvol-x86_64-99.1.0.nvu")
    );
    let (st, body) = vm.wait_for("POST /api/v1/update/fetch", Duration::from_secs(60), || {
        nuvol_e2e::http_request(
            vm.port,
            "POST",
            "/api/v1/update/fetch",
            vm.admin_token().as_deref(),
            &[],
            body.as_bytes(),
        )
        .ok()
    });
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("nuvol-x86_64-99.1.0.nvu"),
        "from the URL: {body}"
    );
    // Head first, then the whole file: two requests.
    assert_eq!(mirror.hits("/nuvol-x86_64-99.1.0.nvu"), 2);
    let v = vm.update_status();
    assert_eq!(v["armed_try"], "nuvol-A", "{v}");
    let asked = Instant::now();
    let n = vm.console().matches(READY).count();
    vm.ask_reboot();
    vm.wait_console("Kernel panic", 1, BOOT);
    vm.wait_console(READY, n + 1, BOOT);
    eprintln!(
        "bench: bad try to back in the good slot {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "B", "{v}");
    assert_eq!(v["default_slot"], "B", "{v}");
    assert_eq!(v["update"]["phase"], "pending", "{v}");
    assert_eq!(v["update"]["tries"], 2, "{v}");
    let reason = v["update"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("never reached good"), "{v}");
    assert_eq!(v["armed_try"], "nuvol-A", "armed again: {v}");
    vm.power_off();

    // --- 4. from the boot partition, the failing update still armed -------
    // A laptop puts two files in update/: one by a stranger (refused,
    // remembered) and a newer good one, which supersedes the failing try.
    let newer = d("nuvol-x86_64-99.2.0.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &i, "99.2.0", "x86_64", &newer);
    let tiny = d("tiny");
    std::fs::write(&tiny, vec![1u8; 1024]).unwrap();
    let stranger = d("a-stranger.nvu");
    nuvol_e2e::update_artefact(&other.secret, &tiny, &tiny, "99.3.0", "x86_64", &stranger);
    copy_to_boot(&disk, &stranger, "update/a-stranger.nvu");
    copy_to_boot(&disk, &newer, "update/nuvol-x86_64-99.2.0.nvu");
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &BootOptions::default());
    // The armed bad try panics once more, then B comes up and applies
    // 99.2.0 from update/ to slot A, and reboots itself to try it.
    vm.wait_console("from the boot partition: rebooting to try it", 1, BOOT);
    let c = vm.console();
    assert!(c.contains("update/a-stranger.nvu refused"), "{}", tail(&c));
    let n = c.matches(READY).count();
    vm.wait_console(READY, n + 1, BOOT);
    let v = vm.wait_update_good(Duration::from_secs(120));
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["running_version"], "99.2.0", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    let outcome = |name: &str| nuvol_e2e::update_file_outcome(&v, name);
    assert_eq!(
        outcome("a-stranger.nvu"),
        Some("update_untrusted".to_string()),
        "{v}"
    );
    assert_eq!(
        outcome("nuvol-x86_64-99.2.0.nvu"),
        Some("applied".to_string()),
        "{v}"
    );
    // Each file once: the next boot leaves them be.
    vm.reboot_via_api();
    std::thread::sleep(Duration::from_secs(15));
    let c = vm.console();
    assert_eq!(
        c.matches("from the boot partition").count(),
        1,
        "{}",
        tail(&c)
    );
    assert_eq!(
        c.matches("a-stranger.nvu refused").count(),
        1,
        "{}",
        tail(&c)
    );
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    vm.power_off();

    // --- 5. an update whose agent cannot start: PID 1 ends the trial ------
    // (The test hook makes every agent start fail, in slot B only.)
    write_config(
        &disk,
        &config("fail_starts = 99\nfail_starts_slot = \"B\"\n"),
    );
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &BootOptions::default());
    vm.wait_console(READY, 1, BOOT);
    // No silent downgrade: 99.0.0 while 99.2.0 runs.
    let (rc, _, err) = vm.ctl(&["update", good.to_str().unwrap()]);
    assert_ne!(rc, 0);
    assert!(err.contains("update_not_newer"), "{err}");
    let broken = d("nuvol-x86_64-99.4.0.nvu");
    nuvol_e2e::update_artefact(&key.secret, &k, &i, "99.4.0", "x86_64", &broken);
    let out = vm.ctl_ok(&["update", broken.to_str().unwrap()]);
    assert!(out.contains("written to slot B"), "{out}");
    let asked = Instant::now();
    vm.ask_reboot();
    vm.wait_console(
        "its agent failed to start 3 times in a row: rebooting into the default slot A",
        1,
        BOOT,
    );
    vm.wait_console(READY, 2, BOOT);
    eprintln!(
        "bench: trial with a failing agent to back in the good slot {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    assert_eq!(v["update"]["version"], "99.4.0", "{v}");
    assert_eq!(v["update"]["tries"], 2, "{v}");
    let reason = v["update"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("its agent failed to start 3 times"), "{v}");
    // The panel says why.
    let session = vm.wait_for("panel login", Duration::from_secs(60), || vm.login().ok());
    let page = vm.panel_page(&session, "/update");
    assert!(page.contains("its agent failed to start 3 times"), "{page}");
    vm.power_off();

    // --- 6. its network never comes up: the agent ends the trial; given up
    // The try armed again in step 5 is taken at this power-on; the agent
    // starts now, but slot B leaves the network unconfigured (test hook).
    write_config(
        &disk,
        &config("no_network_slot = \"B\"\nupdate_unhealthy_secs = 10\n"),
    );
    let mut vm = Vm::boot_opts(&disk, "bios", &dir.0, &BootOptions::default());
    let unhealthy = "stayed unhealthy for 10 s after settling";
    vm.wait_console(unhealthy, 1, BOOT);
    let n = vm.console().matches(READY).count();
    vm.wait_console(READY, n + 1, BOOT);
    let v = vm.update_status();
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["update"]["tries"], 3, "the last try: {v}");
    assert_eq!(v["armed_try"], "nuvol-B", "{v}");
    let reason = v["update"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(unhealthy), "{v}");
    // The third try ends the same way: given up, A stays, nothing armed.
    let n = vm.console().matches(READY).count();
    vm.ask_reboot();
    vm.wait_console(unhealthy, 2, BOOT);
    vm.wait_console(READY, n + 2, BOOT);
    let v = vm.update_status();
    assert_eq!(v["update"]["phase"], "failed", "{v}");
    let reason = v["update"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("rolled back after 3 tries") && reason.contains(unhealthy),
        "{v}"
    );
    assert_eq!(v["running_slot"], "A", "{v}");
    assert_eq!(v["default_slot"], "A", "{v}");
    assert!(v["armed_try"].is_null(), "{v}");
    // The dashboard says so.
    let session = vm.wait_for("panel login", Duration::from_secs(60), || vm.login().ok());
    let page = vm.panel_page(&session, "/dashboard");
    assert!(page.contains("rolled back after 3 tries"), "{page}");
    vm.power_off();
    eprintln!(
        "bench: update test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A download from a slow server: (URL, the box's answer, how long it took).
type Slow = std::thread::JoinHandle<(String, std::io::Result<(u16, String)>, Duration)>;

/// Step 1's downloads from a hostile server: every one refused with its
/// code, nothing recorded or armed (the caller checks). The two slow ones
/// (30 s of silence, a dripping head) are returned still running.
#[allow(clippy::too_many_arguments)]
fn url_attacks(
    vm: &Vm,
    session: &(String, String),
    good: &Path,
    foreign: &Path,
    key: &Path,
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
) -> Vec<Slow> {
    let good_bytes = std::fs::read(good).unwrap();
    // A newer version whose parts do not match its signed manifest.
    let newer = dir.join("newer.nvu");
    nuvol_e2e::update_artefact(key, kernel, initrd, "99.5.0", "x86_64", &newer);
    let mut forged = std::fs::read(&newer).unwrap();
    let n = forged.len();
    forged[n - 4096..].fill(0x33);
    let mut longer = std::fs::read(&newer).unwrap();
    longer.extend_from_slice(&[0u8; 65536]);
    let head_len = {
        let mlen = u32::from_le_bytes(good_bytes[12..16].try_into().unwrap()) as usize;
        16 + mlen + 74
    };
    let server = HostHttp::serve(vec![
        (
            "/stranger.nvu",
            Answer::File(std::fs::read(foreign).unwrap()),
        ),
        ("/endless.nvu", Answer::Endless),
        ("/forged.nvu", Answer::File(forged)),
        ("/longer.nvu", Answer::Stall(longer)),
        (
            "/stall.nvu",
            Answer::Stall(std::fs::read(&newer).unwrap()[..head_len + 1000].to_vec()),
        ),
        (
            "/drip.nvu",
            Answer::Drip(good_bytes[..head_len].to_vec(), Duration::from_millis(500)),
        ),
    ]);
    // The slow ones run meanwhile.
    let slow: Vec<_> = ["/stall.nvu", "/drip.nvu"]
        .into_iter()
        .map(|p| {
            let (url, port, token) = (server.url(p), vm.port, vm.admin_token());
            std::thread::spawn(move || {
                let t = Instant::now();
                let body = format!("{{\"url\": \"{url}\"}}");
                // The box answers once its own budget is spent (30 s of
                // silence for the stalled one): wait clearly longer.
                let r = nuvol_e2e::http_request_within(
                    port,
                    "POST",
                    "/api/v1/update/fetch",
                    token.as_deref(),
                    &[],
                    body.as_bytes(),
                    Duration::from_secs(120),
                )
                .map(|(st, text)| {
                    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
                    (st, body.unwrap_or_default())
                });
                (url, r, t.elapsed())
            })
        })
        .collect();
    for (path, code) in [
        ("/stranger.nvu", "update_untrusted"),
        ("/endless.nvu", "update_malformed"),
        ("/forged.nvu", "update_malformed"),
        ("/longer.nvu", "index_mismatch"),
        ("/missing.nvu", "fetch_failed"),
    ] {
        let t = Instant::now();
        let (rc, out, err) = vm.ctl(&["update", "--url", &server.url(path)]);
        eprintln!(
            "--url {path}: {rc} {} ({:.1} s)",
            err.trim(),
            t.elapsed().as_secs_f64()
        );
        assert_ne!(rc, 0, "{out}");
        assert!(err.contains(code), "{path}: {err}");
    }
    // Judged by the head: the stranger's and the endless file were read
    // once each, not downloaded.
    assert_eq!(server.hits("/stranger.nvu"), 1);
    assert_eq!(server.hits("/endless.nvu"), 1);
    // The panel's URL form, as a browser sends it.
    let form = format!(
        "url={}",
        server
            .url("/stranger.nvu")
            .replace(':', "%3A")
            .replace('/', "%2F")
    );
    let (st, page) = nuvol_e2e::http_request_full(
        vm.port,
        "POST",
        &format!("/api/v1/update/fetch?csrf={}&back=/update", session.1),
        None,
        &[
            ("Cookie", &session.0),
            ("Accept", "text/html"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 403, "{page}");
    assert!(
        page.contains("id=error") && page.contains("update_untrusted"),
        "{page}"
    );
    slow
}

/// The slow downloads ended refused, each by its budget.
fn slow_refused(slow: Vec<Slow>) {
    for h in slow {
        let (url, r, took) = h.join().unwrap();
        let (st, body) = r.unwrap();
        eprintln!("{url}: {st} after {:.1} s: {body}", took.as_secs_f64());
        assert_eq!(st, 502, "{body}");
        assert!(body.contains("fetch_failed"), "{body}");
        if url.ends_with("/stall.nvu") {
            assert!(body.contains("stalled"), "{body}");
        } else {
            assert!(body.contains("too slow"), "{body}");
        }
        assert!(took < Duration::from_secs(60), "{url}: {took:?}");
    }
}
