//! Install, upgrade, rollback, remove on a real store directory, with the
//! image content scan done through a real loop mount (root only).

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use nuvol_bundle::build::assemble;
use nuvol_bundle::{BundleError, ImageType, InstallOptions, SecretKey, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        scan_image: is_root(),
        ..StoreOptions::default()
    }
}

#[test]
fn install_upgrade_rollback_remove() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let v2 = make_bundle(t.path(), &key, "web", "2.0");
    let data = t.path().join("data");
    let store = Store::open_with(&data, opts()).unwrap();

    // Unknown key first.
    assert!(matches!(
        store.install(&v1),
        Err(BundleError::UnknownKey(_))
    ));
    store
        .keyring()
        .add(&key.public(), "test publisher")
        .unwrap();

    let a = store.install(&v1).unwrap();
    assert_eq!(
        (a.name.as_str(), a.version.as_str(), a.state.as_str()),
        ("web", "1.0", "installed")
    );
    assert_eq!(a.publisher_key_id, key.key_id.to_string());
    assert!(a.previous.is_none());
    let img = store.image_path("web").unwrap();
    assert_eq!(fs::metadata(&img).unwrap().len(), {
        let (_, h) = nuvol_bundle::verify::read_head(&v1).unwrap();
        h.header.image_len
    });
    store.verify_installed("web").unwrap();

    // Volume data survives upgrade and rollback.
    let vol = store.volume_path("web", "data");
    fs::write(vol.join("keep.txt"), "precious").unwrap();

    let b = store.install(&v2).unwrap();
    assert_eq!(b.version, "2.0");
    assert_eq!(b.previous.as_ref().unwrap().version, "1.0");
    // Same bundle again: no-op.
    assert_eq!(store.install(&v2).unwrap().digest, b.digest);
    // Downgrade refused, allowed with the option.
    assert!(matches!(
        store.install(&v1),
        Err(BundleError::Downgrade { .. })
    ));

    let r = store.rollback("web").unwrap();
    assert_eq!(r.version, "1.0");
    assert_eq!(r.previous.as_ref().unwrap().version, "2.0");
    assert_eq!(
        fs::read_to_string(vol.join("keep.txt")).unwrap(),
        "precious"
    );
    let r = store.rollback("web").unwrap();
    assert_eq!(r.version, "2.0");

    let list = store.list().unwrap().bundles;
    assert_eq!(list.len(), 1);
    let json = serde_json::to_value(&list[0]).unwrap();
    for k in [
        "name",
        "version",
        "publisher_key_id",
        "digest",
        "verified_at",
        "state",
        "previous",
    ] {
        assert!(json.get(k).is_some(), "{k} missing from {json}");
    }

    // Remove keeping volumes, then reinstall sees the data again.
    store.remove("web", false).unwrap();
    assert!(matches!(
        store.get("web"),
        Err(BundleError::NotInstalled(_))
    ));
    assert!(vol.join("keep.txt").exists());
    store.install(&v1).unwrap();
    store.remove("web", true).unwrap();
    assert!(!vol.exists());
    assert!(store.list().unwrap().bundles.is_empty());
}

/// `state.json` and `meta.json` as older and newer agents write them (see
/// the store's "Versions").
#[test]
fn state_files_of_older_and_newer_agents_are_read_and_kept() {
    /// What the agents released before formats read: an unknown key is
    /// refused there.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct ReleasedState {
        current: String,
        previous: Option<String>,
    }
    let raw = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    };
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let v2 = make_bundle(t.path(), &key, "web", "2.0");
    let data = t.path().join("data");
    let store = Store::open_with(&data, opts()).unwrap();
    store.keyring().add(&key.public(), "k").unwrap();
    let a = store.install(&v1).unwrap();
    let dir = data.join("bundles/installed/web");
    let state = dir.join("state.json");
    let meta = dir.join(&a.digest).join("meta.json");
    // This agent's files: format 1, which state.json says by having none,
    // so the released agents still read it.
    let st: ReleasedState = serde_json::from_value(raw(&state)).unwrap();
    assert_eq!(
        (st.current.as_str(), st.previous),
        (a.digest.as_str(), None)
    );
    assert_eq!(raw(&meta)["format"], 1);
    // Update: an older agent's meta.json, without a format.
    let mut m = raw(&meta);
    m.as_object_mut().unwrap().remove("format");
    fs::write(&meta, m.to_string()).unwrap();
    assert_eq!(store.get("web").unwrap().digest, a.digest);
    // Rollback: a newer agent's files, format 2 and fields this one does
    // not know, are read; state.json keeps them through an upgrade and a
    // rollback.
    m["format"] = 2.into();
    m["sbom"] = "sbom.spdx".into();
    fs::write(&meta, m.to_string()).unwrap();
    fs::write(
        &state,
        serde_json::json!({"format": 2, "current": a.digest, "previous": null,
                           "pinned": true, "channel": {"name": "stable"}})
        .to_string(),
    )
    .unwrap();
    let got = store.get("web").unwrap();
    assert_eq!(
        (got.version.as_str(), got.verified_at),
        ("1.0", a.verified_at)
    );
    let b = store.install(&v2).unwrap();
    assert_eq!(b.previous.unwrap().version, "1.0");
    let s = raw(&state);
    assert_eq!(
        (s["format"].as_u64(), s["pinned"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(s["channel"]["name"], "stable");
    assert_eq!(
        (s["current"].as_str(), s["previous"].as_str()),
        (Some(b.digest.as_str()), Some(a.digest.as_str()))
    );
    let r = store.rollback("web").unwrap();
    assert_eq!(r.version, "1.0");
    let s = raw(&state);
    assert_eq!(
        (s["format"].as_u64(), s["pinned"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(s["current"].as_str(), Some(a.digest.as_str()));
    assert_eq!(raw(&meta)["sbom"], "sbom.spdx");
}

#[test]
fn revocation_and_publisher_pinning() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let other = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let d2 = t.path().join("o");
    fs::create_dir_all(&d2).unwrap();
    let v2_other = make_bundle(&d2, &other, "web", "2.0");
    let store = Store::open_with(&t.path().join("data"), opts()).unwrap();
    store.keyring().add(&key.public(), "a").unwrap();
    store.keyring().add(&other.public(), "b").unwrap();
    store.install(&v1).unwrap();
    assert!(matches!(
        store.install(&v2_other),
        Err(BundleError::PublisherChanged { .. })
    ));
    store
        .install_with(
            &v2_other,
            InstallOptions {
                allow_publisher_change: true,
                ..Default::default()
            },
        )
        .unwrap();
    // Revoking the old key makes its version unusable for rollback.
    store.keyring().revoke(&key.key_id, "compromised").unwrap();
    assert!(matches!(
        store.rollback("web"),
        Err(BundleError::RevokedKey(_))
    ));
    // Revoking the current key stops image_path and marks the listing.
    store
        .keyring()
        .revoke(&other.key_id, "compromised")
        .unwrap();
    assert!(matches!(
        store.image_path("web"),
        Err(BundleError::RevokedKey(_))
    ));
    assert_eq!(store.get("web").unwrap().state, "key-revoked");
    // Removal from the keyring (not revoked): unknown key.
    let third = SecretKey::generate().unwrap();
    store.keyring().add(&third.public(), "c").unwrap();
    assert!(store.keyring().remove(&third.key_id).unwrap());
    let v3 = make_bundle(&d2, &third, "app", "1.0");
    assert!(matches!(
        store.install(&v3),
        Err(BundleError::UnknownKey(_))
    ));
}

/// A correctly signed bundle whose image holds an escaping symlink, a
/// setuid file or a device node is refused at install by the scan of the
/// loop-mounted image (the builder's own check is bypassed here).
#[test]
fn install_scans_image_contents() {
    if !is_root() {
        eprintln!("install_scans_image_contents needs root (loop mounts); skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let store = Store::open(&t.path().join("data")).unwrap();
    store.keyring().add(&key.public(), "k").unwrap();
    let mk = |n: &str, f: &dyn Fn(&std::path::Path)| {
        let root = t.path().join(n);
        make_rootfs(&root, n);
        f(&root);
        let img = t.path().join(format!("{n}.img"));
        let st = std::process::Command::new("mksquashfs")
            .arg(&root)
            .arg(&img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .status()
            .unwrap();
        assert!(st.success());
        let out = t.path().join(format!("{n}.nvb"));
        assemble(
            manifest_text("web", "1.0", "").as_bytes(),
            &img,
            ImageType::Squashfs,
            &out,
            Some(&key),
        )
        .unwrap();
        out
    };
    let esc = mk("esc", &|r| {
        std::os::unix::fs::symlink("../../../etc/shadow", r.join("bin/x")).unwrap()
    });
    assert!(matches!(
        store.install(&esc),
        Err(BundleError::SymlinkEscape { .. })
    ));
    let suid = mk("suid", &|r| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(r.join("bin/serve"), fs::Permissions::from_mode(0o4755)).unwrap()
    });
    // mksquashfs without -all-root keeps the mode bits.
    assert!(matches!(store.install(&suid), Err(BundleError::Setuid(_))));
    let dev = mk("dev", &|r| {
        let c = std::ffi::CString::new(r.join("null").to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
    });
    assert!(matches!(
        store.install(&dev),
        Err(BundleError::DeviceNode(_))
    ));
    let ok = mk("ok", &|_| {});
    store.install(&ok).unwrap();
    // Nothing left mounted or staged.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(t.path().to_str().unwrap()));
    assert_eq!(
        fs::read_dir(t.path().join("data/bundles/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn provision_from_config_lists() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let v2 = make_bundle(t.path(), &key, "web", "2.0");
    let junk = t.path().join("junk.nvb");
    fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let store = Store::open_with(&t.path().join("data"), opts()).unwrap();
    let b64 = key.public().to_base64();
    let rep = store.provision(&[b64.clone(), "garbage".into()], &[v2.clone(), junk]);
    let (kerr, res) = (rep.key_errors, rep.results);
    assert_eq!(kerr.len(), 1);
    assert!(matches!(
        res[0].1,
        Ok(nuvol_bundle::ProvisionOutcome::Installed(_))
    ));
    assert!(matches!(res[1].1, Err(BundleError::BadMagic)));
    // Next boot: same list, and an older bundle named: nothing changes.
    let rep = store.provision(&[b64], &[v2, v1]);
    let (kerr, res) = (rep.key_errors, rep.results);
    assert!(kerr.is_empty());
    assert!(matches!(
        res[0].1,
        Ok(nuvol_bundle::ProvisionOutcome::AlreadyInstalled(_))
    ));
    assert!(matches!(
        res[1].1,
        Ok(nuvol_bundle::ProvisionOutcome::NewerInstalled { .. })
    ));
    assert_eq!(store.get("web").unwrap().version, "2.0");
    assert_eq!(store.keyring().list().unwrap().len(), 1);
}

#[test]
fn erofs_bundle_installs_and_corrupt_state_is_contained() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let root = t.path().join("root");
    make_rootfs(&root, "erofs");
    let mf = t.path().join("m.toml");
    fs::write(&mf, manifest_text("app", "1.0", "")).unwrap();
    let out = t.path().join("app.nvb");
    nuvol_bundle::build::build(&mf, &root, ImageType::Erofs, &out, Some(&key)).unwrap();
    let w = make_bundle(t.path(), &key, "web", "1.0");
    let data = t.path().join("data");
    let store = Store::open_with(&data, opts()).unwrap();
    store.keyring().add(&key.public(), "k").unwrap();
    let b = store.install(&out).unwrap();
    assert_eq!(b.image_type, ImageType::Erofs);
    store.install(&w).unwrap();
    // A damaged state file of one bundle does not stop the store opening,
    // and the damage is reported, not hidden.
    fs::write(data.join("bundles/installed/app/state.json"), b"{garbage").unwrap();
    let store = Store::open_with(&data, opts()).unwrap();
    assert!(matches!(store.get("app"), Err(BundleError::Broken(_))));
    assert_eq!(store.get("web").unwrap().version, "1.0");
}

/// Several services built from one rootfs (one image, one digest) but with
/// their own names and manifests: each is a bundle of its own, installed
/// under its own name, and naming them again changes nothing.
#[test]
fn provision_installs_bundles_that_share_an_image() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let root = t.path().join("rootfs");
    make_rootfs(&root, "shared");
    let names = ["web-a", "web-b", "web-c"];
    let mut files = Vec::new();
    for n in names {
        let mf = t.path().join(format!("{n}.toml"));
        fs::write(&mf, manifest_text(n, "1.0", "")).unwrap();
        let out = t.path().join(format!("{n}.nvb"));
        nuvol_bundle::build::build(&mf, &root, ImageType::Squashfs, &out, Some(&key)).unwrap();
        files.push(out);
    }
    let digests: Vec<_> = files
        .iter()
        .map(|f| {
            nuvol_bundle::verify::read_head(f)
                .unwrap()
                .1
                .header
                .image_digest
        })
        .collect();
    assert!(
        digests.iter().all(|d| *d == digests[0]),
        "the test needs one image for all"
    );
    let store = Store::open_with(&t.path().join("data"), opts()).unwrap();
    let b64 = key.public().to_base64();
    let rep = store.provision(std::slice::from_ref(&b64), &files);
    for (i, (f, r)) in rep.results.iter().enumerate() {
        match r {
            Ok(nuvol_bundle::ProvisionOutcome::Installed(b)) => assert_eq!(b.name, names[i]),
            other => panic!("{}: {other:?}", f.display()),
        }
    }
    let listed: Vec<_> = store
        .list()
        .unwrap()
        .bundles
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(listed, names);
    for n in names {
        store.verify_installed(n).unwrap();
        assert_eq!(store.get(n).unwrap().manifest.name, n);
    }
    // Next boot: each is already installed, as itself.
    let rep = store.provision(&[b64], &files);
    for (i, (f, r)) in rep.results.iter().enumerate() {
        match r {
            Ok(nuvol_bundle::ProvisionOutcome::AlreadyInstalled(b)) => {
                assert_eq!(b.name, names[i])
            }
            other => panic!("{}: {other:?}", f.display()),
        }
    }
    // Removing one leaves the others and their shared image alone.
    store.remove("web-a", true).unwrap();
    for n in &names[1..] {
        store.verify_installed(n).unwrap();
    }
}

#[test]
fn a_new_manifest_over_the_same_image_is_refused_not_ignored() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let root = t.path().join("rootfs");
    make_rootfs(&root, "same");
    let build = |version: &str| {
        let mf = t.path().join(format!("{version}.toml"));
        fs::write(&mf, manifest_text("web", version, "")).unwrap();
        let out = t.path().join(format!("web-{version}.nvb"));
        nuvol_bundle::build::build(&mf, &root, ImageType::Squashfs, &out, Some(&key)).unwrap();
        out
    };
    let (v1, v2) = (build("1.0"), build("1.1"));
    let store = Store::open_with(&t.path().join("data"), opts()).unwrap();
    store.keyring().add(&key.public(), "test").unwrap();
    assert_eq!(store.install(&v1).unwrap().version, "1.0");
    // the very same file again: nothing to do, not an error
    assert_eq!(store.install(&v1).unwrap().version, "1.0");
    let e = store.install(&v2).unwrap_err();
    assert_eq!(e.code(), "same_image", "{e}");
    assert!(e.to_string().contains("1.1"), "{e}");
    assert_eq!(store.get("web").unwrap().version, "1.0", "left as it was");
    store.verify_installed("web").unwrap();
}

#[test]
fn export_is_the_installed_file_byte_for_byte() {
    use sha2::Digest;
    use std::io::Read;
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let v1 = make_bundle(t.path(), &key, "web", "1.0");
    let v2 = make_bundle(t.path(), &key, "web", "2.0");
    let store = Store::open_with(&t.path().join("data"), opts()).unwrap();
    store.keyring().add(&key.public(), "test").unwrap();
    assert!(matches!(
        store.export("web"),
        Err(BundleError::NotInstalled(_))
    ));
    store.install(&v1).unwrap();
    store.install(&v2).unwrap();
    // The current version (2.0), exactly as uploaded.
    let want = fs::read(&v2).unwrap();
    let e = store.export("web").unwrap();
    assert_eq!(
        (e.bundle.version.as_str(), e.len),
        ("2.0", want.len() as u64)
    );
    let mut got = Vec::new();
    e.into_reader().read_to_end(&mut got).unwrap();
    assert!(got == want, "export differs from the installed file");
    let sha = store.export("web").unwrap().file_sha256().unwrap();
    assert_eq!(sha, nuvol_bundle::format::hex(&sha2::Sha256::digest(&want)));
    // The bytes verify as a bundle again (what a peer does).
    let kr = store.keyring();
    nuvol_bundle::verify::verify_bytes(&got, &kr).unwrap();
    // A revoked key's bundles are not handed out.
    store.keyring().revoke(&key.key_id, "test").unwrap();
    assert!(store.export("web").is_err());
    assert!(store.export("../etc").is_err());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, opts: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `make_bundle` with `pad` random bytes in `/pad`, so its image is about
/// that big (random data does not compress).
fn padded_bundle(out: &std::path::Path, key: &SecretKey, name: &str, pad: usize) -> PathBuf {
    let root = out.join(format!("rootfs-{name}-1"));
    make_rootfs(&root, name);
    let mut bytes = vec![0u8; pad];
    getrandom::getrandom(&mut bytes).unwrap();
    fs::write(root.join("pad"), bytes).unwrap();
    let mf = out.join(format!("{name}-1.toml"));
    fs::write(&mf, manifest_text(name, "1", "")).unwrap();
    let f = out.join(format!("{name}-1.nvb"));
    nuvol_bundle::build::build(&mf, &root, ImageType::Squashfs, &f, Some(key)).unwrap();
    f
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_install_that_cannot_fit_is_refused_and_stages_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let big = padded_bundle(t.path(), &key, "big", 4 << 20);
    let small = make_bundle(t.path(), &key, "web", "1.0");
    let data = t.path().join("data");
    let _fs = Tmpfs::mount(&data, "size=4m");
    let store = Store::open_with(&data, opts()).unwrap();
    store.keyring().add(&key.public(), "test").unwrap();
    let free = store.space().unwrap().free_bytes;
    match store.install(&big) {
        Err(BundleError::NoSpace {
            needed, free: f, ..
        }) => {
            let (_, h) = nuvol_bundle::verify::read_head(&big).unwrap();
            assert_eq!(needed, h.header.image_len + nuvol_bundle::space::SLACK);
            assert_eq!(f, free);
        }
        other => panic!("{other:?}"),
    }
    assert!(entries(&data.join("bundles/tmp")).is_empty());
    assert!(entries(&data.join("bundles/installed")).is_empty());
    assert_eq!(store.space().unwrap().free_bytes, free);
    store.install(&small).unwrap();
}

#[test]
fn a_store_that_fills_up_during_an_install_says_so_and_keeps_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let small = make_bundle(t.path(), &key, "web", "1.0");
    let (_, h) = nuvol_bundle::verify::read_head(&small).unwrap();
    let data = t.path().join("data");
    // Plenty of bytes, few inodes: the free-space check passes and the
    // install runs out of room (ENOSPC) at whichever file it creates when
    // the inodes run out: every step from staging to the commit.
    let _fs = Tmpfs::mount(&data, "size=16m,nr_inodes=64");
    let store = Store::open_with(&data, opts()).unwrap();
    store.keyring().add(&key.public(), "test").unwrap();
    let filler = data.join("filler");
    let free_inodes = || {
        let c = std::ffi::CString::new(data.to_str().unwrap()).unwrap();
        // SAFETY: all zeroes is a valid statvfs.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a writable statvfs.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_ffree
    };
    let mut refused = 0;
    for left in 0..16 {
        fs::create_dir(&filler).unwrap();
        let mut n = 0;
        while free_inodes() > left {
            fs::write(filler.join(n.to_string()), b"").unwrap();
            n += 1;
        }
        let r = store.install(&small);
        fs::remove_dir_all(&filler).unwrap();
        assert!(
            entries(&data.join("bundles/tmp")).is_empty(),
            "{left} inodes left: nothing staged remains"
        );
        match r {
            Err(BundleError::NoSpace { needed, .. }) => {
                assert_eq!(needed, h.header.image_len + nuvol_bundle::space::SLACK);
                assert!(
                    entries(&data.join("bundles/installed")).is_empty(),
                    "{left}"
                );
                assert!(store.list().unwrap().bundles.is_empty());
                refused += 1;
            }
            Ok(b) => {
                assert_eq!(b.version, "1.0");
                assert_eq!(entries(&data.join("bundles/installed/web")).len(), 2);
                break;
            }
            Err(e) => panic!("{left} inodes left: {e:?}"),
        }
    }
    assert!(refused >= 5, "refused at {refused} steps");
    assert_eq!(store.get("web").unwrap().version, "1.0");
    assert_eq!(
        BundleError::NoSpace {
            path: data.clone(),
            needed: 1,
            free: 0
        }
        .code(),
        "insufficient_storage"
    );
}

/// A bundle built for another architecture is refused after its signature
/// is checked and before anything lands in the store; the same rootfs built
/// for this box's architecture, or declaring none, installs.
#[test]
fn a_bundle_for_another_architecture_is_refused_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let root = t.path().join("root");
    make_rootfs(&root, "arch");
    let mf = t.path().join("m.toml");
    fs::write(&mf, manifest_text("web", "1.0", "")).unwrap();
    let here = std::env::consts::ARCH;
    let other = if here == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let build = |arch: Option<&str>, file: &str| {
        let out = t.path().join(file);
        nuvol_bundle::build::build_for(&mf, arch, &root, ImageType::Squashfs, &out, Some(&key))
            .unwrap();
        out
    };
    let foreign = build(Some(other), "foreign.nvb");
    let native = build(Some(here), "native.nvb");
    let data = t.path().join("data");
    let store = Store::open_with(&data, opts()).unwrap();
    store.keyring().add(&key.public(), "k").unwrap();

    let e = store.install(&foreign).unwrap_err();
    assert_eq!(e.code(), "wrong_arch", "{e}");
    let msg = e.to_string();
    assert!(msg.contains(other) && msg.contains(here), "{msg}");
    assert!(entries(&data.join("bundles/tmp")).is_empty());
    assert!(entries(&data.join("bundles/installed")).is_empty());

    let b = store.install(&native).unwrap();
    assert_eq!(b.version, "1.0");
    let (_, head) = nuvol_bundle::verify::read_head(&native).unwrap();
    let m = nuvol_bundle::Manifest::parse(&head.manifest_bytes).unwrap();
    assert_eq!(m.arch.as_deref(), Some(here), "signed into the manifest");
}

#[test]
fn build_refuses_an_arch_the_manifest_contradicts_or_does_not_know() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_rootfs(&root, "arch");
    let out = t.path().join("b.nvb");
    let mf = t.path().join("m.toml");
    fs::write(&mf, manifest_text("web", "1.0", "")).unwrap();
    let e =
        nuvol_bundle::build::build_for(&mf, Some("sparc"), &root, ImageType::Squashfs, &out, None)
            .unwrap_err();
    assert!(
        e.to_string().contains("arch") && e.to_string().contains("sparc"),
        "{e}"
    );
    // The manifest's own arch, contradicted by the build.
    fs::write(
        &mf,
        format!("arch = \"arm\"\n{}", manifest_text("web", "1.0", "")),
    )
    .unwrap();
    let e =
        nuvol_bundle::build::build_for(&mf, Some("x86_64"), &root, ImageType::Squashfs, &out, None)
            .unwrap_err();
    assert!(e.to_string().contains("\"arm\""), "{e}");
    assert!(!out.exists(), "nothing written");
    // Agreeing with it is fine; a manifest without one builds as before.
    nuvol_bundle::build::build_for(&mf, Some("arm"), &root, ImageType::Squashfs, &out, None)
        .unwrap();
}
