//! Parsing and conversion of `config.json` without running anything: what is
//! checked, what is tolerated and what is refused, with the field named.

use std::path::Path;

use serde_json::{json, Value};

use super::{config, convert, OciBundle};
use crate::spec::{NetworkMode, RootSource, RootWrite};

fn base() -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "user": { "uid": 1000, "gid": 1000, "additionalGids": [5, 6] },
            "args": ["/bin/app", "--serve"],
            "env": ["PATH=/bin"],
            "cwd": "/srv",
            "capabilities": { "bounding": ["CAP_KILL"], "effective": ["CAP_KILL"] },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs" },
        "hostname": "box",
        "mounts": [ { "destination": "/proc", "type": "proc", "source": "proc" } ],
        "linux": {
            "namespaces": [ { "type": "pid" }, { "type": "mount" }, { "type": "network" },
                            { "type": "ipc" }, { "type": "uts" }, { "type": "cgroup" } ]
        }
    })
}

fn load_text(text: &str) -> Result<OciBundle, String> {
    let cfg = config::parse(text)?;
    convert(&cfg, Path::new("/bundle"), "t").map_err(|e| e.to_string())
}

fn load(v: &Value) -> Result<OciBundle, String> {
    load_text(&v.to_string())
}

/// `v` with the value at JSON pointer `at` replaced (parents must exist).
fn with(mut v: Value, at: &str, new: Value) -> Value {
    let (parent, key) = at.rsplit_once('/').unwrap();
    let slot = v.pointer_mut(parent).unwrap();
    match slot {
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = new,
        Value::Object(o) => {
            o.insert(key.to_string(), new);
        }
        _ => panic!("{parent} is not a container"),
    }
    v
}

fn err(v: &Value) -> String {
    match load(v) {
        Ok(b) => panic!("accepted: {:?}", b.spec),
        Err(e) => e,
    }
}

#[test]
fn a_plain_config_converts_field_by_field() {
    let b = load(&base()).unwrap();
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let s = b.spec;
    assert_eq!(s.args, ["/bin/app", "--serve"]);
    assert_eq!(s.env, ["PATH=/bin"]);
    assert_eq!(s.cwd, "/srv");
    assert_eq!((s.uid, s.gid), (1000, 1000));
    assert_eq!(s.additional_gids, [5, 6]);
    assert_eq!(s.hostname.as_deref(), Some("box"));
    assert_eq!(s.capabilities, [caps::Capability::CAP_KILL]);
    assert!(s.no_new_privileges);
    assert_eq!(s.network, NetworkMode::Private);
    assert_eq!(
        s.rootfs.source,
        RootSource::Dir(Path::new("/bundle/rootfs").into())
    );
    assert_eq!(s.rootfs.write, RootWrite::InPlace);
    assert_eq!(s.mounts.len(), 1);
    assert_eq!(s.mounts[0].fstype, "proc");
}

#[test]
fn unknown_fields_are_tolerated_everywhere() {
    let mut v = base();
    for at in [
        "",
        "/process",
        "/process/user",
        "/process/capabilities",
        "/root",
        "/mounts/0",
        "/linux",
        "/linux/namespaces/0",
    ] {
        v = with(v, &format!("{at}/org.example.future"), json!({ "x": [1] }));
    }
    v = with(v, "/domainname", json!("example.org"));
    v = with(v, "/annotations", json!({ "a": "b" }));
    v = with(v, "/process/user/umask", json!(18));
    v = with(v, "/process/user/username", json!("app"));
    v = with(
        v,
        "/linux/resources",
        json!({ "unified": { "io.weight": "50" } }),
    );
    let b = load(&v).unwrap();
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn namespace_type_names_are_checked() {
    let e = err(&with(
        base(),
        "/linux/namespaces/2",
        json!({ "type": "net" }),
    ));
    assert!(e.contains("linux.namespaces[2].type"), "{e}");
    assert!(e.contains("unknown variant `net`"), "{e}");
    let e = err(&with(
        base(),
        "/linux/namespaces/2",
        json!({ "path": "/x" }),
    ));
    assert!(e.contains("linux.namespaces[2]"), "{e}");
    assert!(e.contains("missing field `type`"), "{e}");
    for (t, expect) in [("user", "User"), ("time", "Time")] {
        let e = err(&with(base(), "/linux/namespaces/5", json!({ "type": t })));
        assert!(
            e.contains(&format!("namespace {expect} is not supported")),
            "{e}"
        );
    }
    let e = err(&with(
        base(),
        "/linux/namespaces/2",
        json!({ "type": "network", "path": "/proc/1/ns/net" }),
    ));
    assert!(e.contains("joining an existing Network namespace"), "{e}");
    let e = err(&with(
        base(),
        "/linux/namespaces/1",
        json!({ "type": "uts" }),
    ));
    assert!(e.contains("namespace Mount is required"), "{e}");
}

#[test]
fn absent_namespaces_mean_host_network_and_a_warning() {
    let v = with(
        base(),
        "/linux/namespaces",
        json!([{ "type": "pid" }, { "type": "mount" }]),
    );
    let b = load(&v).unwrap();
    assert_eq!(b.spec.network, NetworkMode::Host);
    for t in ["Uts", "Ipc", "Cgroup"] {
        let w = format!("namespace {t} not requested but created anyway");
        assert!(b.warnings.contains(&w), "{:?}", b.warnings);
    }
}

#[test]
fn capability_names_are_checked_in_every_set() {
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        let v = with(
            base(),
            &format!("/process/capabilities/{set}"),
            json!(["CAP_KILL", "CAP_TELEPORT"]),
        );
        let e = err(&v);
        assert!(e.contains(&format!("process.capabilities.{set}[1]")), "{e}");
        assert!(e.contains("unknown capability \"CAP_TELEPORT\""), "{e}");
    }
    let e = err(&with(base(), "/process/capabilities/bounding", json!([7])));
    assert!(e.contains("process.capabilities.bounding[0]"), "{e}");
}

#[test]
fn capabilities_take_bounding_else_effective_any_case_once() {
    let v = with(
        base(),
        "/process/capabilities",
        json!({ "effective": ["kill", "CAP_KILL", "net_bind_service", "CAP_CHOWN"],
                "ambient": ["CAP_SYS_ADMIN"] }),
    );
    let caps = load(&v).unwrap().spec.capabilities;
    use caps::Capability::*;
    assert_eq!(caps, [CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE]);
    let v = with(base(), "/process/capabilities", json!({}));
    assert!(load(&v).unwrap().spec.capabilities.is_empty());
}

#[test]
fn type_errors_and_missing_fields_name_the_field() {
    let cases = [
        (
            with(base(), "/process/user/uid", json!("0")),
            "process.user.uid",
        ),
        (
            with(base(), "/process/user/gid", json!(-1)),
            "process.user.gid",
        ),
        (
            with(base(), "/process/args", json!("/bin/app")),
            "process.args",
        ),
        (with(base(), "/process/env/0", json!(1)), "process.env[0]"),
        (
            with(base(), "/process/terminal", json!("no")),
            "process.terminal",
        ),
        (with(base(), "/root/readonly", json!(1)), "root.readonly"),
        (with(base(), "/hostname", json!(["a"])), "hostname"),
        (
            with(base(), "/mounts/0/options", json!("ro")),
            "mounts[0].options",
        ),
        (
            with(
                base(),
                "/linux/resources",
                json!({ "memory": { "limit": "64M" } }),
            ),
            "linux.resources.memory.limit",
        ),
        (
            with(
                base(),
                "/linux/resources",
                json!({ "cpu": { "shares": -2 } }),
            ),
            "linux.resources.cpu.shares",
        ),
        (
            with(base(), "/linux/maskedPaths", json!("/proc/kcore")),
            "linux.maskedPaths",
        ),
        (with(base(), "/ociVersion", json!(1.2)), "ociVersion"),
    ];
    for (v, field) in cases {
        let e = err(&v);
        assert!(e.starts_with(&format!("{field}: invalid")), "{field}: {e}");
    }
    let mut v = base();
    v["process"].as_object_mut().unwrap().remove("cwd");
    let e = err(&v);
    assert!(e.contains("process: missing field `cwd`"), "{e}");
    v = base();
    v["process"].as_object_mut().unwrap().remove("user");
    assert!(err(&v).contains("missing field `user`"));
    v = with(base(), "/mounts/0", json!({ "type": "tmpfs" }));
    assert!(err(&v).contains("mounts[0]: missing field `destination`"));
}

#[test]
fn malformed_json_is_refused() {
    let text = base().to_string();
    for bad in [
        "",
        "[]",
        "{\"ociVersion\": \"1.0.2\",}",
        &text[..text.len() - 1],
        &format!("{text} {{}}"),
    ] {
        assert!(load_text(bad).is_err(), "accepted {bad:?}");
    }
    assert!(load_text(&format!(" {text}\n")).is_ok());
}

#[test]
fn versions_outside_1_0_to_1_2_are_refused() {
    for ok in ["1.0.0", "1.1.0-rc.1", "1.2.1"] {
        assert!(
            load(&with(base(), "/ociVersion", json!(ok))).is_ok(),
            "{ok}"
        );
    }
    for bad in ["0.9", "1.3.0", "2.0.0", ""] {
        let e = err(&with(base(), "/ociVersion", json!(bad)));
        assert!(e.contains("ociVersion"), "{e}");
    }
    let mut v = base();
    v.as_object_mut().unwrap().remove("ociVersion");
    assert!(err(&v).contains("ociVersion \"\""));
}

#[test]
fn what_would_weaken_isolation_is_refused() {
    let cases = [
        (with(base(), "/hooks", json!({})), "hooks are not supported"),
        (
            with(
                base(),
                "/linux/uidMappings",
                json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]),
            ),
            "uid/gid mappings",
        ),
        (
            with(
                base(),
                "/linux/gidMappings",
                json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]),
            ),
            "uid/gid mappings",
        ),
        (
            with(base(), "/mounts/0/type", json!("overlay")),
            "mount type \"overlay\" at /proc is not supported",
        ),
        (
            with(
                base(),
                "/linux/resources",
                json!({ "memory": { "limit": 0 } }),
            ),
            "memory.limit 0 is invalid",
        ),
        (with(base(), "/process/args", json!([])), "no entrypoint"),
        (with(base(), "/process/cwd", json!("srv")), "cwd"),
    ];
    for (v, expect) in cases {
        let e = err(&v);
        assert!(e.contains(expect), "expected {expect:?} in {e:?}");
    }
    for section in ["root", "process", "linux"] {
        let mut v = base();
        v.as_object_mut().unwrap().remove(section);
        let e = err(&v);
        assert!(
            e.contains(&format!(": {section} ")) && e.contains("missing"),
            "{e}"
        );
    }
    // Empty lists and null are the same as absent.
    let v = with(base(), "/linux/uidMappings", json!([]));
    let v = with(v, "/hooks", Value::Null);
    assert!(load(&v).is_ok());
}

#[test]
fn ignored_fields_are_reported() {
    let cases = [
        (
            "/process/rlimits",
            json!([{ "type": "RLIMIT_NOFILE", "hard": 1, "soft": 1 }]),
            "process.rlimits",
        ),
        ("/process/oomScoreAdj", json!(100), "process.oomScoreAdj"),
        (
            "/process/apparmorProfile",
            json!("docker-default"),
            "process.apparmorProfile",
        ),
        (
            "/process/selinuxLabel",
            json!("system_u:system_r:svirt_lxc_net_t:s0"),
            "process.selinuxLabel",
        ),
        (
            "/linux/resources",
            json!({ "devices": [{ "allow": false, "access": "rwm" }] }),
            "linux.resources.devices",
        ),
        (
            "/linux/resources",
            json!({ "blockIO": { "weight": 10 } }),
            "blockIO",
        ),
        (
            "/linux/resources",
            json!({ "hugepageLimits": [] }),
            "hugepageLimits",
        ),
        (
            "/linux/devices",
            json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229 }]),
            "linux.devices",
        ),
        (
            "/linux/seccomp",
            json!({ "defaultAction": "SCMP_ACT_ALLOW" }),
            "linux.seccomp",
        ),
        (
            "/linux/sysctl",
            json!({ "net.ipv4.ip_forward": "1" }),
            "linux.sysctl",
        ),
        (
            "/linux/intelRdt",
            json!({ "closID": "x" }),
            "linux.intelRdt",
        ),
        (
            "/linux/personality",
            json!({ "domain": "LINUX32" }),
            "linux.personality",
        ),
        (
            "/linux/rootfsPropagation",
            json!("rslave"),
            "linux.rootfsPropagation",
        ),
    ];
    for (at, value, expect) in cases {
        let b = load(&with(base(), at, value)).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert!(
            b.warnings.len() == 1 && b.warnings[0].contains(expect),
            "{at}: {:?}",
            b.warnings
        );
    }
    // Present but empty is not worth a warning.
    let v = with(base(), "/process/rlimits", json!([]));
    let v = with(v, "/process/apparmorProfile", json!(""));
    let v = with(v, "/linux/sysctl", json!({}));
    assert!(load(&v).unwrap().warnings.is_empty());
}

#[test]
fn resources_map_to_cgroup_limits() {
    let v = with(
        base(),
        "/linux/resources",
        json!({ "memory": { "limit": 67108864, "swap": 0 },
                "cpu": { "quota": 50000, "shares": 1024 },
                "pids": { "limit": 32 } }),
    );
    let l = load(&v).unwrap().spec.limits;
    assert_eq!(l.memory_max, Some(64 << 20));
    assert_eq!(l.cpu_max, Some((50_000, 100_000)));
    assert_eq!(l.cpu_weight, Some(39));
    assert_eq!(l.pids_max, Some(32));
    let v = with(
        base(),
        "/linux/resources",
        json!({ "memory": { "limit": -1 }, "cpu": { "quota": -1, "period": 20000, "shares": 2 },
                "pids": { "limit": -1 } }),
    );
    let l = load(&v).unwrap().spec.limits;
    assert_eq!((l.memory_max, l.cpu_max, l.pids_max), (None, None, None));
    assert_eq!(l.cpu_weight, Some(1));
    let v = with(
        base(),
        "/linux/resources",
        json!({ "cpu": { "shares": 1u64 << 40 } }),
    );
    assert_eq!(load(&v).unwrap().spec.limits.cpu_weight, Some(10_000));
}

#[test]
fn paths_resolve_against_the_bundle() {
    let v = with(
        base(),
        "/root",
        json!({ "path": "/srv/root", "readonly": true }),
    );
    let v = with(
        v,
        "/mounts",
        json!([{ "destination": "/data", "source": "data", "options": ["rbind", "ro", "nosuid"] },
               { "destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts" },
               { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup" },
               { "destination": "/tmp", "type": "tmpfs", "options": ["nodev", "size=1m"] }]),
    );
    let s = load(&v).unwrap().spec;
    assert_eq!(
        s.rootfs.source,
        RootSource::Dir(Path::new("/srv/root").into())
    );
    assert_eq!(s.rootfs.write, RootWrite::ReadOnly);
    let m = &s.mounts;
    assert_eq!(
        (m[0].fstype.as_str(), m[0].source.as_str()),
        ("bind", "/bundle/data")
    );
    assert_eq!(m[0].flags, libc::MS_RDONLY | libc::MS_NOSUID);
    assert_eq!(m[1].source, "/etc/hosts");
    assert_eq!(
        (m[2].fstype.as_str(), m[2].flags),
        ("cgroup2", libc::MS_RDONLY)
    );
    assert_eq!(
        (m[3].source.as_str(), m[3].data.as_str()),
        ("tmpfs", "size=1m")
    );
    assert_eq!(m[3].flags, libc::MS_NODEV);
}
