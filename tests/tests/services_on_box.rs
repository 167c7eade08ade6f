//! Containers and the supervisor on the booted image, with the product's own
//! `nuvol init` and agent (the box kernel is cgroup v2 only; development
//! hosts still mount v1): signed busybox bundles installed through `nuvol
//! ctl`, observed through the API and the service logs as a user would.
//!
//! - a memory hog is OOM-killed inside its `memory_mb`, reported, and
//!   restarted with a growing backoff; the box keeps answering;
//! - a fork bomb stops at its `pids` limit;
//! - a service sees its own world: PID 1 of its pid namespace, its own host
//!   name, none of the box's processes, a read-only root, no capabilities as
//!   a non-root user, its environment;
//! - a crash loop backs off (growing delays), `restart = "never"` stays
//!   down, a missing command names the failing step;
//! - removing the bundles stops everything and leaves no service behind.

use std::time::Duration;

use nuvol_e2e::{disk_copy, write_config, Scratch, TestKey, Vm};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(240);
const READY: &str = "nuvol: ready: panel at";

fn services(vm: &Vm) -> Vec<Value> {
    let (code, body) = vm.http_admin("GET", "/api/v1/local-services").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn service(vm: &Vm, name: &str) -> Option<Value> {
    services(vm).into_iter().find(|s| s["name"] == name)
}

fn logs(vm: &Vm, name: &str) -> String {
    let (_, out, _) = vm.ctl(&["logs", "--lines", "200", name]);
    out
}

fn run(cmd: &str, rest: &str) -> String {
    format!(
        "[run]\ncommand = [\"/bin/busybox\", \"sh\", \"-c\", {cmd:?}]\nuid = 1234\ngid = 1234\n{rest}"
    )
}

#[test]
fn limits_isolation_and_restart_policies_on_the_box() {
    let dir = Scratch::new("services-on-box");
    let disk = disk_copy(&dir.0, 1024);
    write_config(
        &disk,
        "hostname = \"e2e-services\"\n[panel]\nallow_plain_http = true\n",
    );
    let key = TestKey::new(&dir.0);
    let bundles = [
        key.busybox_bundle(
            &dir.0,
            "hog",
            // String doubling grows without bound: the OOM killer ends it
            // inside the 16 MiB cgroup, not the box.
            &run(
                "x=0123456789abcdef; while :; do x=$x$x; done",
                "restart = \"always\"\n[resources]\nmemory_mb = 16\n",
            ),
        ),
        key.busybox_bundle(
            &dir.0,
            "forker",
            &run(
                // An inner shell forks until the limit stops it (a shell
                // whose fork fails exits); what it started stays, and the
                // service goes on as one more process.
                "/bin/busybox sh -c 'while :; do /bin/busybox sleep 1000 & done'; \
                 exec /bin/busybox sleep 100000",
                "restart = \"never\"\n[resources]\npids = 8\n",
            ),
        ),
        key.busybox_bundle(
            &dir.0,
            "inspect",
            &run(
                "echo pid=$$; echo host=$(hostname); echo uid=$(id -u); \
                 echo procs=$(ls /proc | grep -c '^[0-9]'); \
                 echo $(grep CapEff /proc/self/status); \
                 if touch /written 2>/dev/null; then echo root=writable; else echo root=readonly; fi; \
                 echo greeting=$GREETING; exec /bin/busybox sleep 100000",
                "env = { GREETING = \"hello-from-the-manifest\" }\nrestart = \"always\"\n",
            ),
        ),
        key.busybox_bundle(
            &dir.0,
            "crasher",
            &run("echo crashing; exit 3", "restart = \"always\"\n"),
        ),
        key.busybox_bundle(
            &dir.0,
            "once",
            &run("echo done once; exit 0", "restart = \"never\"\n"),
        ),
        key.busybox_bundle(
            &dir.0,
            "broken",
            "[run]\ncommand = [\"/bin/not-there\"]\nuid = 1234\ngid = 1234\nrestart = \"on-failure\"\n",
        ),
    ];

    let mut vm = Vm::boot(&disk, "bios", &dir.0);
    vm.wait_console(READY, 1, BOOT);
    vm.ctl_ok(&["keys", "add", key.public.to_str().unwrap()]);
    for b in &bundles {
        vm.ctl_ok(&["bundles", "install", "--yes", b.to_str().unwrap()]);
    }

    // The memory hog: OOM-killed inside its cgroup, restarted, backing off.
    let hog = vm.wait_for(
        "hog OOM-killed and restarted twice",
        Duration::from_secs(180),
        || {
            service(&vm, "hog").filter(|s| {
                s["oom_kills"].as_u64() >= Some(2)
                    && s["backoff_ms"].as_array().is_some_and(|b| b.len() >= 2)
            })
        },
    );
    assert!(hog["restarts"].as_u64() >= Some(1), "{hog}");
    let backoff: Vec<u64> = hog["backoff_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        backoff.len() >= 2 && backoff[1] > backoff[0],
        "the restart delay grows: {hog}"
    );
    assert!(
        serde_json::to_string(&hog["last_exit"])
            .unwrap()
            .contains("oom"),
        "{hog}"
    );

    // The fork bomb: at most `pids` processes in its cgroup, the refused
    // forks counted, and the shell saying so in the service's log.
    let forker = vm.wait_for("forker at its pids limit", Duration::from_secs(120), || {
        service(&vm, "forker").filter(|s| s["forks_refused"].as_u64() >= Some(1))
    });
    let n = forker["processes"].as_u64().unwrap_or(0);
    assert!((1..=8).contains(&n), "pids.max = 8 holds: {forker}");
    assert!(
        logs(&vm, "forker").to_lowercase().contains("fork"),
        "the shell says it cannot fork: {}",
        logs(&vm, "forker")
    );

    // Isolation as seen from inside.
    let view = vm.wait_for("inspect's view", Duration::from_secs(120), || {
        let l = logs(&vm, "inspect");
        l.contains("greeting=").then_some(l)
    });
    assert!(view.contains("pid=1"), "PID 1 of its namespace: {view}");
    assert!(
        !view.contains("host=e2e-services"),
        "its own host name: {view}"
    );
    assert!(view.contains("uid=1234"), "{view}");
    let procs: u32 = view
        .lines()
        .find_map(|l| l.split("procs=").nth(1)?.trim().parse().ok())
        .expect("procs= line");
    assert!(procs <= 4, "none of the box's processes: {procs}\n{view}");
    assert!(
        view.contains("CapEff: 0000000000000000"),
        "no capabilities: {view}"
    );
    assert!(view.contains("root=readonly"), "{view}");
    assert!(view.contains("greeting=hello-from-the-manifest"), "{view}");
    assert_eq!(service(&vm, "inspect").unwrap()["state"], "running");

    // Restart policies.
    let crasher = vm.wait_for("crasher backing off", Duration::from_secs(120), || {
        service(&vm, "crasher").filter(|s| s["restarts"].as_u64() >= Some(3))
    });
    let delays: Vec<u64> = crasher["backoff_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]) && delays.last() > delays.first(),
        "delays grow: {crasher}"
    );
    let once = vm.wait_for("once exited", Duration::from_secs(60), || {
        service(&vm, "once").filter(|s| s["state"] == "exited")
    });
    assert_eq!(once["restarts"], 0, "{once}");
    let broken = vm.wait_for("broken start failed", Duration::from_secs(60), || {
        service(&vm, "broken").filter(|s| !s["last_exit"].is_null())
    });
    let detail = serde_json::to_string(&broken["last_exit"]).unwrap();
    assert!(
        detail.contains("start-failed") && detail.contains("not-there"),
        "the failing step and the missing path are named: {detail}"
    );

    // The box itself stayed responsive throughout.
    let (code, _) = vm.http("GET", "/api/v1/status").unwrap();
    assert_eq!(code, 200);

    for name in ["hog", "forker", "inspect", "crasher", "once", "broken"] {
        vm.ctl_ok(&["bundles", "remove", name]);
    }
    vm.wait_for("no services left", Duration::from_secs(60), || {
        services(&vm).is_empty().then_some(())
    });
    vm.power_off();
}
