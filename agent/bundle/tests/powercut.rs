//! kill -9 at every step of install, upgrade, rollback and remove; then
//! reopen the store and check that exactly the old or the new version is
//! installed and intact. (harness = false: this binary re-executes itself
//! as the child that gets killed.)

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nuvol_bundle::store::CRASH_ENV;
use nuvol_bundle::{BundleError, SecretKey, Store, StoreOptions};

const CHILD_ENV: &str = "NUVOL_POWERCUT_CHILD";

const INSTALL_STEPS: &[&str] = &[
    "copied",
    "staged",
    "mounted",
    "scanned",
    "moved",
    "volumes",
    "state-temp",
    "committed",
    "gc",
];

fn opts() -> StoreOptions {
    StoreOptions {
        scan_image: is_root(),
        ..StoreOptions::default()
    }
}

fn child(spec: &str) -> ! {
    let mut it = spec.splitn(3, '\t');
    let (op, data, arg) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let store = Store::open_with(Path::new(data), opts()).unwrap();
    let r = match op {
        "install" => store.install(Path::new(arg)).map(|_| ()),
        "rollback" => store.rollback(arg).map(|_| ()),
        "remove" => store.remove(arg, false),
        "purge" => store.remove(arg, true),
        _ => panic!("unknown op {op}"),
    };
    r.unwrap();
    std::process::exit(0)
}

/// Run `op` in a child that kills itself at `step`; the kill must happen.
fn crash(op: &str, data: &Path, arg: &Path, step: &str) {
    let status = Command::new(std::env::current_exe().unwrap())
        .env(
            CHILD_ENV,
            format!("{op}\t{}\t{}", data.display(), arg.display()),
        )
        .env(CRASH_ENV, step)
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "{op} did not reach step {step}: {status:?}"
    );
}

/// The installed version of "web" after reopening, checked for integrity.
fn installed_version(data: &Path) -> Option<String> {
    let store = Store::open_with(data, opts()).unwrap();
    let tmp = data.join("bundles/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "staging not cleaned"
    );
    match store.get("web") {
        Ok(b) => {
            store.verify_installed("web").unwrap();
            // Only current and previous version directories remain.
            let dirs = std::fs::read_dir(data.join("bundles/installed/web"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
                .count();
            assert_eq!(dirs, 1 + usize::from(b.previous.is_some()));
            Some(b.version)
        }
        Err(BundleError::NotInstalled(_)) => None,
        Err(e) => panic!("store inconsistent: {e}"),
    }
}

struct Fixture {
    _t: tempfile::TempDir,
    root: PathBuf,
    v1: PathBuf,
    v2: PathBuf,
    v3: PathBuf,
    key: SecretKey,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let v2 = make_bundle(t.path(), &key, "web", "2.0");
    let v3 = make_bundle(t.path(), &key, "web", "3.0");
    Fixture {
        root: t.path().to_path_buf(),
        _t: t,
        v1,
        v2,
        v3,
        key,
    }
}

fn fresh_store(f: &Fixture, tag: &str, preinstall: &[&Path]) -> PathBuf {
    let data = f.root.join(format!("data-{tag}"));
    let s = Store::open_with(&data, opts()).unwrap();
    s.keyring().add(&f.key.public(), "k").unwrap();
    for b in preinstall {
        s.install(b).unwrap();
    }
    data
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
    let f = fixture();
    let mut n = 0;
    for step in INSTALL_STEPS {
        if *step == "mounted" && !is_root() {
            continue;
        }
        // First install: nothing or 1.0.
        let data = fresh_store(&f, &format!("first-{step}"), &[]);
        crash("install", &data, &f.v1, step);
        let v = installed_version(&data);
        assert!(
            v.is_none() || v.as_deref() == Some("1.0"),
            "first install at {step}: {v:?}"
        );
        // Recovery leaves a usable store: the install can be redone.
        Store::open_with(&data, opts())
            .unwrap()
            .install(&f.v1)
            .unwrap();
        n += 1;
        // Upgrade 2.0 -> 3.0, with 1.0 as the previous version to garbage-collect.
        let data = fresh_store(&f, &format!("up-{step}"), &[&f.v1, &f.v2]);
        crash("install", &data, &f.v3, step);
        let v = installed_version(&data);
        assert!(
            matches!(v.as_deref(), Some("2.0") | Some("3.0")),
            "upgrade at {step}: {v:?}"
        );
        println!("powercut: install/upgrade killed at {step:<10} -> {v:?}");
        n += 1;
    }
    for step in ["rollback-state-temp", "rollback-committed"] {
        let data = fresh_store(&f, step, &[&f.v1, &f.v2]);
        crash("rollback", &data, Path::new("web"), step);
        let v = installed_version(&data);
        assert!(
            matches!(v.as_deref(), Some("1.0") | Some("2.0")),
            "rollback at {step}: {v:?}"
        );
        println!("powercut: rollback killed at {step} -> {v:?}");
        n += 1;
    }
    let data = fresh_store(&f, "remove", &[&f.v1]);
    crash("remove", &data, Path::new("web"), "remove-renamed");
    let v = installed_version(&data);
    assert!(v.is_none() || v.as_deref() == Some("1.0"));
    n += 1;
    // A broken bundle (garbled state) removed with its volumes, killed after
    // each rename: whole or gone, never half, and nothing left in staging.
    for step in ["remove-renamed", "purge-renamed"] {
        let data = fresh_store(&f, &format!("broken-{step}"), &[&f.v1]);
        let vol = data.join("bundles/volumes/web/data");
        std::fs::write(vol.join("keep.txt"), "x").unwrap();
        std::fs::write(data.join("bundles/installed/web/state.json"), b"{garbage").unwrap();
        crash("purge", &data, Path::new("web"), step);
        let store = Store::open_with(&data, opts()).unwrap();
        let tmp = data.join("bundles/tmp");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{step}");
        assert!(!data.join("bundles/installed/web").exists(), "{step}");
        let l = store.list().unwrap();
        assert!(l.bundles.is_empty() && l.broken.is_empty(), "{step}");
        // The volume directory is whole (renamed away only after the bundle).
        let whole = vol.join("keep.txt").exists();
        assert!(
            whole || !data.join("bundles/volumes/web").exists(),
            "{step}"
        );
        assert_eq!(whole, step == "remove-renamed", "{step}");
        println!("powercut: broken remove --purge killed at {step} -> volumes kept: {whole}");
        n += 1;
    }
    println!("powercut: {n} kill -9 scenarios left a consistent store");
}
