use super::*;

/// A scratch data and boot partition.
struct Disk {
    root: PathBuf,
}

impl Disk {
    fn new(tag: &str) -> Disk {
        let root = std::env::temp_dir().join(format!("nuvol-reset-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("data/lost+found")).unwrap();
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot/nuvol.toml"), "hostname = \"box\"\n").unwrap();
        Disk { root }
    }
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    fn boot(&self) -> PathBuf {
        self.root.join("boot")
    }
    /// The state a box in service has: token, keys, bundles, services.
    fn fill(&self) {
        let s = self.data().join("nuvol");
        for d in [
            "bundles/store/web",
            "keys",
            "tls",
            "services/web/data",
            "net",
        ] {
            fs::create_dir_all(s.join(d)).unwrap();
        }
        for f in [
            "admin-token",
            "node-id",
            "api-tokens.json",
            "settings.toml",
            "tls/key.der",
            "keys/trusted.json",
            "bundles/store/web/image.squashfs",
            "services/web/data/db",
        ] {
            fs::write(s.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", s.join("link")).unwrap();
        fs::write(self.data().join("stray"), "x").unwrap();
    }
    /// What is left on data, sorted, relative.
    fn left(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.data())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
    fn boot_ctx(&self) -> (PathBuf, PathBuf) {
        (self.data(), self.boot())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// PID 1's side, recorded.
#[derive(Default)]
struct FakeEnv {
    said: Vec<String>,
    /// `pause` answers this (false: the power is cut there).
    pause_continues: bool,
    paused: Vec<u32>,
    boot_rw_fails: bool,
    rw_calls: Vec<bool>,
}

impl Env for FakeEnv {
    fn say(&mut self, msg: &str) {
        self.said.push(msg.to_string());
    }
    fn boot_writable(&mut self, rw: bool) -> io::Result<()> {
        self.rw_calls.push(rw);
        if self.boot_rw_fails && rw {
            return Err(io::Error::other("write-protected"));
        }
        Ok(())
    }
    fn sync(&mut self) {}
    fn pause(&mut self, secs: u32) -> bool {
        self.paused.push(secs);
        self.pause_continues
    }
    fn now(&self) -> u64 {
        1_796_000_000
    }
}

fn run(d: &Disk, hooks: bool, env: &mut FakeEnv) -> Outcome {
    let (data, boot) = d.boot_ctx();
    at_boot(
        &Boot {
            data: Some(&data),
            boot: Some(&boot),
            test_hooks: hooks,
        },
        env,
    )
}

#[test]
fn request_text_round_trips_and_a_touched_file_is_a_request() {
    let mut r = Request::new(Origin::Api, 1_796_000_000);
    r.attempts = 2;
    r.test_pause_secs = 30;
    assert_eq!(Request::parse(&r.to_text()), r);
    let t = Request::parse("");
    assert_eq!((t.origin, t.attempts), (Origin::Unknown, 0));
    let g = Request::parse("attempts=lots\norigin=boot-file\nnoise\n");
    assert_eq!((g.origin, g.attempts), (Origin::BootFile, 0));
}

#[test]
fn a_request_from_the_api_wipes_everything_but_lost_found_at_the_next_boot() {
    let d = Disk::new("api");
    d.fill();
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Nothing, "no request yet");
    assert!(d.data().join("nuvol/admin-token").exists());

    request(&d.data(), Origin::Api, 1_796_000_000, 0).unwrap();
    let r = pending(&d.data()).unwrap().unwrap();
    assert_eq!((r.origin, r.attempts), (Origin::Api, 0));
    // A second request keeps the first.
    request(&d.data(), Origin::BootFile, 1, 0).unwrap();
    assert_eq!(pending(&d.data()).unwrap().unwrap(), r);

    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert_eq!(d.left(), ["lost+found"]);
    assert!(pending(&d.data()).unwrap().is_none());
    assert!(
        Path::new("/etc/passwd").exists(),
        "a symlink is removed, not followed"
    );
    let said = env.said.join("\n");
    assert!(said.contains("attempt 1 of 3"), "{said}");
    assert!(said.contains("factory reset: done: "), "{said}");
    assert!(env.rw_calls.is_empty(), "the boot partition is left alone");

    // The next boot: nothing to do.
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Nothing);
    assert!(env.said.is_empty(), "{:?}", env.said);
}

#[test]
fn a_wipe_cut_short_is_finished_by_the_next_boot() {
    let d = Disk::new("cut");
    d.fill();
    request(&d.data(), Origin::Api, 1_796_000_000, 45).unwrap();
    // The test pause is honored only with [debug] test_hooks.
    let mut env = FakeEnv::default();
    let probe = Disk::new("cut-nohooks");
    probe.fill();
    request(&probe.data(), Origin::Api, 1, 45).unwrap();
    assert_eq!(run(&probe, false, &mut env), Outcome::Wiped);
    assert!(env.paused.is_empty());

    // First boot: the power goes at the pause, after the first removal.
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, true, &mut env), Outcome::Stopped);
    assert_eq!(env.paused, [45]);
    assert!(
        !d.data().join("nuvol/admin-token").exists(),
        "first entry gone"
    );
    assert!(d.data().join("nuvol/node-id").exists(), "the rest not yet");
    assert_eq!(pending(&d.data()).unwrap().unwrap().attempts, 1);

    // Second boot: no pause (not the first attempt), the rest goes.
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, true, &mut env), Outcome::Wiped);
    assert!(env.paused.is_empty());
    assert_eq!(d.left(), ["lost+found"]);
    assert!(env.said.join("\n").contains("attempt 2 of 3"));
}

#[test]
fn a_box_that_never_finishes_the_wipe_gives_up_after_three_boots() {
    let d = Disk::new("giveup");
    d.fill();
    // A request whose wipe crashed the box three times.
    let mut r = Request::new(Origin::Api, 1_796_000_000);
    r.attempts = MAX_ATTEMPTS;
    fs::write(d.data().join(REQUEST_FILE), r.to_text()).unwrap();
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::GaveUp);
    assert!(pending(&d.data()).unwrap().is_none());
    assert!(d.data().join(FAILED_FILE).exists());
    assert!(d.data().join("nuvol/admin-token").exists(), "left alone");
    assert!(env.said.join("\n").contains("GAVE UP"));
    let alert = given_up_alert(&d.data()).expect("a dashboard alert");
    assert!(alert.contains("given up after 3 attempts"), "{alert}");
    // The boot after: nothing.
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Nothing);
    // A new request clears the failure and counts from zero.
    request(&d.data(), Origin::Api, 1_796_000_100, 0).unwrap();
    assert!(!d.data().join(FAILED_FILE).exists());
    assert!(given_up_alert(&d.data()).is_none());
    assert_eq!(pending(&d.data()).unwrap().unwrap().attempts, 0);
}

#[test]
fn the_boot_partition_file_resets_once_and_is_removed() {
    let d = Disk::new("bootfile");
    d.fill();
    // Windows adds .txt and may capitalise.
    let f = d.boot().join("Factory-Reset.TXT");
    fs::write(&f, "").unwrap();
    assert_eq!(find_boot_file(&d.boot()), Some(f.clone()));
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert!(!f.exists(), "consumed");
    assert_eq!(env.rw_calls, [true, false], "writable for that moment only");
    assert!(d.boot().join("nuvol.toml").exists());
    let mut left = d.left();
    left.sort();
    assert_eq!(left, ["factory-reset.boot-file", "lost+found"]);
    let said = env.said.join("\n");
    assert!(
        said.contains("requested by the factory-reset file"),
        "{said}"
    );
    assert!(said.contains("removed"), "{said}");

    // Second boot: nothing.
    d.fill();
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Nothing);
    assert!(d.data().join("nuvol/admin-token").exists());
}

#[test]
fn a_boot_file_that_cannot_be_removed_is_not_honored_twice() {
    let d = Disk::new("readonly-card");
    d.fill();
    let f = d.boot().join("factory-reset");
    fs::write(&f, "please").unwrap();
    let mut env = FakeEnv {
        boot_rw_fails: true,
        ..FakeEnv::default()
    };
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert!(f.exists(), "could not be removed");
    assert!(env.said.join("\n").contains("delete it from a laptop"));

    // The box is set up again; the next boots must not wipe it.
    d.fill();
    for _ in 0..2 {
        let mut env = FakeEnv {
            boot_rw_fails: true,
            ..FakeEnv::default()
        };
        assert_eq!(run(&d, false, &mut env), Outcome::Nothing);
        assert!(d.data().join("nuvol/admin-token").exists());
        assert!(env.said.join("\n").contains("honored already"));
    }
    // A new file (other content or time) is a new request.
    fs::write(&f, "again").unwrap();
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert!(!f.exists());
}

#[test]
fn a_boot_file_cut_short_mid_wipe_finishes_and_is_consumed_on_the_next_boot() {
    let d = Disk::new("bootfile-cut");
    d.fill();
    let f = d.boot().join("factory-reset");
    fs::write(&f, "").unwrap();
    // The power goes before the boot file is removed: the request is on
    // data, the file still on boot. Simulate with a request already counted.
    request(&d.data(), Origin::BootFile, 1, 0).unwrap();
    let mut r = pending(&d.data()).unwrap().unwrap();
    r.attempts = 1;
    fs::write(d.data().join(REQUEST_FILE), r.to_text()).unwrap();
    fs::write(d.data().join(BOOT_RECORD_FILE), identity(&f).unwrap()).unwrap();
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert!(!f.exists());
    assert!(env.said.join("\n").contains("attempt 2 of 3"));
}

#[test]
fn without_a_data_partition_the_boot_file_is_left_alone() {
    let d = Disk::new("nodata");
    let f = d.boot().join("factory-reset");
    fs::write(&f, "").unwrap();
    let boot = d.boot();
    let mut env = FakeEnv::default();
    let o = at_boot(
        &Boot {
            data: None,
            boot: Some(&boot),
            test_hooks: false,
        },
        &mut env,
    );
    assert_eq!(o, Outcome::Nothing);
    assert!(f.exists());
    assert!(env.said.join("\n").contains("no data partition"));
}

#[test]
fn a_failing_entry_does_not_stop_the_rest_and_the_request_stays() {
    let d = Disk::new("failing");
    d.fill();
    // An entry that cannot be removed: a mount point (EBUSY) as root, a
    // directory without write permission otherwise.
    let locked = d.data().join("nuvol/bundles/store");
    let root = is_root();
    if root {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&locked)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        fs::write(locked.join("inside"), "x").unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::write(locked.join("inside"), "x").unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
    }
    request(&d.data(), Origin::Api, 1, 0).unwrap();
    let mut env = FakeEnv::default();
    let outcome = run(&d, false, &mut env);
    if root {
        let _ = std::process::Command::new("umount").arg(&locked).status();
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(outcome, Outcome::Failed, "{:?}", env.said);
    assert!(env.said.join("\n").contains("the next boot tries again"));
    assert!(
        !d.data().join("nuvol/admin-token").exists(),
        "the rest went"
    );
    assert!(!d.data().join("nuvol/tls").exists(), "the rest went");
    assert_eq!(pending(&d.data()).unwrap().unwrap().attempts, 1);
    let mut env = FakeEnv::default();
    assert_eq!(run(&d, false, &mut env), Outcome::Wiped);
    assert_eq!(d.left(), ["lost+found"]);
    assert!(env.said.join("\n").contains("attempt 2 of 3"));
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
