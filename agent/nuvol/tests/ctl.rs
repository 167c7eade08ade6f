//! `nuvol ctl` against a real agent: output, exit codes (0 ok, 1 box
//! error, 2 usage, 3 cannot connect/auth), token sources, HTTPS pinning,
//! the keyring verbs.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::Agent;

fn ctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nuvol"));
    c.arg("ctl")
        .args(args)
        .env_remove("NUVOL_TOKEN")
        .env_remove("NUVOL_HOST");
    c.env_remove("NUVOL_FINGERPRINT")
        .env("HOME", "/nonexistent");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `nuvol ctl ARGS…` with `input` on stdin.
fn ctl_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .arg("ctl")
        .args(args)
        .env_remove("NUVOL_TOKEN")
        .env_remove("NUVOL_HOST")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input).unwrap();
    c.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ctl_commands_and_exit_codes() {
    let a = Agent::start("ctl", "", false);
    let url = a.url();
    let tok = a.token();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--host".to_string(),
            url.clone(),
            "--token".into(),
            tok.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let v = base(extra);
        ctl(&v.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    let o = run(&["status"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        out(&o).contains("version") && out(&o).contains("memory"),
        "{}",
        out(&o)
    );
    let o = run(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let o = run(&["bundles", "list"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("(none)"));
    // The free space where bundles go, under the table.
    let state = a.dir.join("state/bundles");
    assert!(
        out(&o).contains("free: ")
            && out(&o).contains(&format!(" on {}", state.display()))
            && out(&o).contains("fits"),
        "{}",
        out(&o)
    );
    // An upload the box refuses: exit 1, the box's message, a progress bar.
    let junk = a.dir.join("junk.nvb");
    std::fs::write(&junk, vec![7u8; 600 * 1024]).unwrap();
    let o = run(&["bundles", "install", junk.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("100%") && err.contains("600.0 KiB"), "{err}");
    let o = run(&["bundles", "remove", "nothere", "--purge"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let o = run(&["reboot"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("nothing was rebooted"));
    // Factory reset asks first: no answer or "n" resets nothing (exit 1);
    // --yes goes ahead, and a development host answers that it has no
    // nuvol init to do it.
    let o = run(&["reset"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("Reset this box? [y/N]"), "{}", out(&o));
    assert!(out(&o).contains("nothing was reset (not confirmed"));
    let v = base(&["reset"]);
    let o = ctl_stdin(&v.iter().map(String::as_str).collect::<Vec<_>>(), b"n\n");
    assert_eq!(code(&o), 1, "{}", out(&o));
    let o = ctl_stdin(&v.iter().map(String::as_str).collect::<Vec<_>>(), b"y\n");
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("not running under nuvol init: nothing was reset"));
    let o = run(&["reset", "--yes"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("nothing was reset"), "{}", out(&o));
    let o = run(&["update"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        out(&o).contains("needs a box booted from a nuvol slot"),
        "{}",
        out(&o)
    );
    // Credentials from the environment and from a file.
    let o = ctl(
        &["--host", &url, "bundles", "list"],
        &[("NUVOL_TOKEN", &tok)],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let tf = a.dir.join("tokenfile");
    std::fs::write(&tf, format!("{tok}\n")).unwrap();
    let o = ctl(
        &[
            "--host",
            &url,
            "--token-file",
            tf.to_str().unwrap(),
            "bundles",
            "list",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    // No or a wrong token: 3. Nothing listening: 3. Usage: 2.
    let o = ctl(&["--host", &url, "bundles", "list"], &[]);
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(out(&o).contains("no token"));
    let o = ctl(
        &["--host", &url, "--token", "nvt.a.b", "bundles", "list"],
        &[],
    );
    assert_eq!(code(&o), 3);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    assert_eq!(code(&ctl(&["--host", &dead, "status"], &[])), 3);
    assert_eq!(code(&ctl(&["frobnicate"], &[])), 2);
    assert_eq!(code(&ctl(&["--host", "ftp://x", "status"], &[])), 2);
    assert_eq!(code(&ctl(&["bundles", "install"], &[])), 2);
}

#[test]
fn ctl_help_for_every_command() {
    for cmd in [
        vec!["--help"],
        vec!["status", "--help"],
        vec!["members", "--help"],
        vec!["services", "--help"],
        vec!["local-services", "--help"],
        vec!["bundles", "--help"],
        vec!["bundles", "list", "--help"],
        vec!["bundles", "install", "--help"],
        vec!["bundles", "remove", "--help"],
        vec!["keys", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "add", "--help"],
        vec!["keys", "remove", "--help"],
        vec!["keys", "revoke", "--help"],
        vec!["logs", "--help"],
        vec!["reboot", "--help"],
        vec!["reset", "--help"],
        vec!["update", "--help"],
        vec!["hash-password", "--help"],
    ] {
        let o = ctl(&cmd, &[]);
        assert_eq!(code(&o), 0, "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Usage:"),
            "{cmd:?}"
        );
    }
}

#[test]
fn ctl_over_https_pins_the_certificate() {
    let a = Agent::start("ctl-https", "", true);
    let url = format!("https://127.0.0.1:{}", a.https_port.unwrap());
    let fp = a
        .console()
        .lines()
        .find_map(|l| l.split("fingerprint: ").nth(1).map(str::to_string))
        .unwrap();
    let tok = a.token();
    let o = ctl(
        &[
            "--host",
            &url,
            "--token",
            &tok,
            "--fingerprint",
            &fp,
            "bundles",
            "list",
        ],
        &[],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = ctl(
        &["--host", &url, "--token", &tok, "status"],
        &[("NUVOL_FINGERPRINT", &fp)],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let wrong = "00:".repeat(31) + "00";
    let o = ctl(
        &[
            "--host",
            &url,
            "--token",
            &tok,
            "--fingerprint",
            &wrong,
            "status",
        ],
        &[],
    );
    assert_eq!(code(&o), 3, "{}", out(&o));
    assert!(out(&o).contains("not the pinned one"), "{}", out(&o));
    let o = ctl(&["--host", &url, "status"], &[]);
    assert_eq!(code(&o), 2, "https needs a fingerprint");
    // Plain HTTP to a box with HTTPS on: told to use HTTPS.
    let o = ctl(
        &["--host", &a.url(), "--token", &tok, "bundles", "list"],
        &[],
    );
    assert_eq!(code(&o), 3);
    assert!(out(&o).contains("redirects to https://"), "{}", out(&o));
}

#[test]
fn ctl_hash_password_feeds_admin_config() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nuvol"))
        .args(["ctl", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"pass phrase\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    let h = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(h.starts_with("$argon2id$"), "{h}");
    let a = Agent::start(
        "ctl-hash",
        &format!("[admin]\npassword_hash = \"{h}\"\n"),
        false,
    );
    let form = ["Content-Type: application/x-www-form-urlencoded".to_string()];
    assert_eq!(
        a.raw("POST", "/login", &form, b"secret=pass+phrase").code,
        303
    );
    assert_eq!(a.raw("POST", "/login", &form, b"secret=pass").code, 401);
}

#[test]
fn ctl_keys_add_list_install_revoke_remove() {
    let dir = Agent::fresh_dir("ctl-keys");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    common::keygen(&work, "k");
    common::keygen(&work, "other");
    let v1 = common::signed_bundle(&work, "k", "web", "1.0");
    let v2 = common::signed_bundle(&work, "k", "web", "2.0");
    let a = Agent::start_in(dir, "", false);
    let (url, tok) = (a.url(), a.token());
    let run = |extra: &[&str]| {
        let mut v = vec!["--host", &url, "--token", &tok];
        v.extend_from_slice(extra);
        ctl(&v, &[])
    };
    let o = run(&["keys", "list"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("(none)"), "{}", out(&o));
    // Not trusted yet: the bundle is refused.
    let o = run(&["bundles", "install", v1.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("unknown_key"), "{}", out(&o));

    // Add from a file: the key id is printed, the list shows it.
    let o = run(&["keys", "add", work.join("k.pub").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let id = text
        .trim()
        .strip_prefix("trusted key ")
        .unwrap_or_else(|| panic!("{text}"))
        .to_string();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let o = run(&["keys", "list"]);
    let list = String::from_utf8_lossy(&o.stdout).to_string();
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(list.starts_with("KEY_ID"), "{list}");
    assert!(
        row.contains("trusted")
            && row.contains(" UTC")
            && row.contains("nuvol bundle key public key"),
        "{row}"
    );
    let year = &row.split_whitespace().nth(2).unwrap()[..2];
    assert_eq!(year, "20", "a date, not seconds: {row}");
    let o = run(&["--json", "keys", "list"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["trusted"][0]["key_id"], id.as_str(), "{v}");
    assert!(v["trusted"][0]["added_at"].as_u64().unwrap() > 1_600_000_000);

    // A bundle signed by it installs.
    let o = run(&["bundles", "install", v1.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", out(&o));

    // Add from stdin; --json prints the box's answer.
    let other = std::fs::read(work.join("other.pub")).unwrap();
    let o = ctl_stdin(
        &[
            "--host", &url, "--token", &tok, "--json", "keys", "add", "-",
        ],
        &other,
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let other_id = v["key_id"].as_str().unwrap().to_string();
    assert_ne!(other_id, id);
    // What is not a key: the box's code, exit 1; nothing to send: usage, 2.
    let junk = work.join("junk.pub");
    std::fs::write(&junk, "untrusted comment: x\nnot base64 at all\n").unwrap();
    let o = run(&["keys", "add", junk.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("400") && out(&o).contains("bad_key"),
        "{}",
        out(&o)
    );
    std::fs::write(&junk, "\n").unwrap();
    let o = run(&["keys", "add", junk.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let o = run(&["keys", "add", "/nonexistent/k.pub"]);
    assert_eq!(code(&o), 2, "{}", out(&o));

    // Remove: gone from the list; again is the box's 404.
    let o = run(&["keys", "remove", &other_id]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(!String::from_utf8_lossy(&run(&["keys", "list"]).stdout).contains(&other_id));
    let o = run(&["keys", "remove", &other_id]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("404") && out(&o).contains("unknown_key"),
        "{}",
        out(&o)
    );
    let o = run(&["keys", "remove", "xyz"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("bad_key_id"), "{}", out(&o));
    // A removed key can come back.
    let o = ctl_stdin(
        &["--host", &url, "--token", &tok, "keys", "add", "-"],
        &other,
    );
    assert_eq!(code(&o), 0, "{}", out(&o));

    // Revoke: listed with its reason, its bundles refused, never again trusted.
    let o = run(&[
        "keys",
        "revoke",
        &id.to_ascii_lowercase(),
        "--reason",
        "key leaked",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let list = String::from_utf8_lossy(&run(&["keys", "list"]).stdout).to_string();
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("revoked") && row.contains("key leaked"),
        "{row}"
    );
    let o = run(&["bundles", "install", v2.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("revoked_key"), "{}", out(&o));
    let o = run(&["bundles", "list"]);
    assert!(out(&o).contains("key-revoked"), "{}", out(&o));
    let o = run(&["keys", "add", work.join("k.pub").to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("key_revoked"), "{}", out(&o));
    // Without a token: not authorised, 3.
    let o = ctl(&["--host", &url, "keys", "list"], &[]);
    assert_eq!(code(&o), 3, "{}", out(&o));
}
