//! `nuvol ctl` against a real agent: output, exit codes (0 ok, 1 box
//! error, 2 usage, 3 cannot connect/auth), token sources, HTTPS pinning.

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
    let o = run(&["update"]);
    assert_eq!(code(&o), 1);
    assert!(out(&o).contains("not available yet"), "{}", out(&o));
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
        vec!["logs", "--help"],
        vec!["reboot", "--help"],
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
