//! One unreadable bundle among three (a power cut, a bad sector): the store
//! still opens, lists the two good ones and names what is wrong with the
//! third and where, and removes it completely.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use nuvol_bundle::{BundleError, SecretKey, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        scan_image: is_root(),
        ..StoreOptions::default()
    }
}

struct Files {
    _t: tempfile::TempDir,
    root: PathBuf,
    key: SecretKey,
    bundles: Vec<PathBuf>,
}

fn files() -> Files {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let bundles = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|n| make_bundle(t.path(), &key, n, "1.0"))
        .collect();
    Files {
        root: t.path().to_path_buf(),
        _t: t,
        key,
        bundles,
    }
}

/// A store with the three bundles installed; returns its data directory.
fn installed(f: &Files, tag: &str) -> PathBuf {
    let data = f.root.join(format!("data-{tag}"));
    let s = Store::open_with(&data, opts()).unwrap();
    s.keyring().add(&f.key.public(), "k").unwrap();
    for b in &f.bundles {
        s.install(b).unwrap();
    }
    data
}

/// The directory of bravo's current version.
fn current_dir(data: &Path) -> PathBuf {
    let st = fs::read_to_string(data.join("bundles/installed/bravo/state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    data.join("bundles/installed/bravo")
        .join(v["current"].as_str().unwrap())
}

fn truncate(p: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn one_broken_bundle_among_three_is_listed_and_removable() {
    let f = files();
    // (damage, the file the report must name)
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "garbled-state",
            |d| fs::write(d.join("bundles/installed/bravo/state.json"), b"{\"cur").unwrap(),
            "state.json",
        ),
        (
            "empty-state",
            |d| truncate(&d.join("bundles/installed/bravo/state.json"), 0),
            "state.json",
        ),
        (
            "truncated-head",
            |d| truncate(&current_dir(d).join("head"), 40),
            "head",
        ),
        (
            "missing-meta",
            |d| fs::remove_file(current_dir(d).join("meta.json")).unwrap(),
            "meta.json",
        ),
        (
            "truncated-image",
            |d| {
                let img = current_dir(d).join("image");
                truncate(&img, fs::metadata(&img).unwrap().len() / 2)
            },
            "image",
        ),
    ];
    for (tag, damage, file) in cases {
        let data = installed(&f, tag);
        let vol = data.join("bundles/volumes/bravo/data");
        fs::write(vol.join("keep.txt"), "x").unwrap();
        damage(&data);

        let store = Store::open_with(&data, opts())
            .unwrap_or_else(|e| panic!("{tag}: the store must still open: {e}"));
        let l = store
            .list()
            .unwrap_or_else(|e| panic!("{tag}: list must not fail for one bundle: {e}"));
        let good: Vec<&str> = l.bundles.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(good, ["alpha", "charlie"], "{tag}");
        assert_eq!(l.broken.len(), 1, "{tag}: {:?}", l.broken);
        let b = &l.broken[0];
        assert_eq!(b.name, "bravo", "{tag}");
        assert!(
            b.file.ends_with(file) && b.file.starts_with(&data),
            "{tag}: {} should name {file}",
            b.file.display()
        );
        assert!(!b.problem.is_empty(), "{tag}");
        // The good ones work as before; the broken one says why.
        assert_eq!(store.get("alpha").unwrap().version, "1.0");
        store.image_path("charlie").unwrap();
        match store.get("bravo") {
            Err(BundleError::Broken(x)) => assert_eq!(&x, b, "{tag}"),
            other => panic!("{tag}: {other:?}"),
        }
        let msg = store.image_path("bravo").unwrap_err().to_string();
        assert!(msg.contains("bravo") && msg.contains(file), "{tag}: {msg}");

        // Remove with purge: nothing of it is left.
        store.remove("bravo", true).unwrap();
        let l = store.list().unwrap();
        assert!(l.broken.is_empty(), "{tag}: {:?}", l.broken);
        assert_eq!(l.bundles.len(), 2);
        assert!(!data.join("bundles/installed/bravo").exists(), "{tag}");
        assert!(!data.join("bundles/volumes/bravo").exists(), "{tag}");
        assert_eq!(fs::read_dir(data.join("bundles/tmp")).unwrap().count(), 0);
        assert!(matches!(
            store.remove("bravo", true),
            Err(BundleError::NotInstalled(_))
        ));
        // And it can be installed again.
        store.install(&f.bundles[1]).unwrap();
        assert_eq!(store.list().unwrap().bundles.len(), 3);
    }
}

#[test]
fn removing_a_broken_bundle_keeps_its_volumes_unless_purged() {
    let f = files();
    let data = installed(&f, "keep");
    fs::write(data.join("bundles/installed/bravo/state.json"), b"\0\0\0").unwrap();
    let vol = data.join("bundles/volumes/bravo/data");
    fs::write(vol.join("keep.txt"), "precious").unwrap();
    let store = Store::open_with(&data, opts()).unwrap();
    store.remove("bravo", false).unwrap();
    assert!(!data.join("bundles/installed/bravo").exists());
    assert_eq!(
        fs::read_to_string(vol.join("keep.txt")).unwrap(),
        "precious"
    );
}

/// A damaged previous version does not stop the current one: it is listed
/// without a rollback target and with the problem named.
#[test]
fn damaged_previous_version_leaves_the_current_one_usable() {
    let f = files();
    let data = f.root.join("data-prev");
    let s = Store::open_with(&data, opts()).unwrap();
    s.keyring().add(&f.key.public(), "k").unwrap();
    let v1 = s.install(&f.bundles[1]).unwrap();
    let v2 = make_bundle(&f.root, &f.key, "bravo", "2.0");
    s.install(&v2).unwrap();
    let prev = data.join("bundles/installed/bravo").join(&v1.digest);
    truncate(&prev.join("head"), 7);

    let store = Store::open_with(&data, opts()).unwrap();
    let l = store.list().unwrap();
    assert!(l.broken.is_empty(), "{:?}", l.broken);
    let b = &l.bundles[0];
    assert_eq!((b.name.as_str(), b.version.as_str()), ("bravo", "2.0"));
    assert!(b.previous.is_none());
    let problem = b.problem.as_deref().unwrap_or_default();
    assert!(problem.contains("head"), "{problem}");
    store.image_path("bravo").unwrap();
    let e = store.rollback("bravo").unwrap_err().to_string();
    assert!(e.contains("head"), "{e}");
}
