//! The supervisor for real, as root: containers built from Debian's
//! busybox-static, on a current-thread tokio runtime like the agent's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nuvol_container::{CgroupRoot, ExitStatus};
use nuvol_supervisor::spec::{BackoffSpec, HealthSpec, RootfsSpec};
use nuvol_supervisor::{
    ExitReason, Health, HealthKind, RestartPolicy, ServiceSpec, State, Stream, Supervisor,
    SupervisorError,
};

static N: AtomicU32 = AtomicU32::new(0);

fn unique(p: &str) -> String {
    format!(
        "{p}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "www", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("apt-get install busybox-static");
    for a in [
        "sh", "echo", "sleep", "httpd", "dd", "cat", "true", "false", "hostname", "id", "ls",
        "wget",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "ok\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    root
}

/// A temp dir with a rootfs, a uniquely named cgroup sub-tree and a supervisor,
/// all stopped and removed on drop (even when the test fails).
struct Env {
    sup: Supervisor,
    rootfs: PathBuf,
    cg: CgroupRoot,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = busybox_rootfs(tmp.path());
        let cg = CgroupRoot::detect(&unique("nuvol-sup-test")).unwrap();
        // Set on a v2 host: v1 must not pass for v2.
        if std::env::var_os("NUVOL_REQUIRE_CGROUP_V2").is_some() {
            assert!(
                cg.is_v2(),
                "cgroup v2 required but this kernel offers {cg:?}"
            );
        }
        let sup = Supervisor::new(&tmp.path().join("data"), cg.clone()).unwrap();
        Env {
            sup,
            rootfs,
            cg,
            _tmp: tmp,
        }
    }

    fn service(&self, name: &str, script: &str) -> ServiceSpec {
        let toml = format!(
            "name = {name:?}\nrootfs = {{ dir = {{ path = {:?} }} }}\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n",
            self.rootfs.to_str().unwrap()
        );
        let mut s = ServiceSpec::from_toml(&toml).unwrap();
        // A shell or sleep as PID 1 ignores SIGTERM: keep the grace short in tests.
        s.stop_grace_ms = 500;
        s
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        f: impl Fn(&nuvol_supervisor::ServiceStatus) -> bool,
    ) -> nuvol_supervisor::ServiceStatus {
        for _ in 0..1500 {
            let st = self.sup.service_status(name).unwrap();
            if f(&st) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}: {:?}",
            self.sup.service_status(name).unwrap()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill whatever a failed test left, then remove the sub-tree.
        for id in self.cg.children() {
            if let Ok(c) = self.cg.cgroup(&id) {
                let _ = c.destroy();
            }
        }
        let _ = self.cg.remove();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn crash_loop_backoff_grows_and_caps() {
    let env = Env::new();
    let mut s = env.service("crashy", "echo boom; exit 3");
    s.backoff = BackoffSpec {
        initial_ms: 100,
        max_ms: 400,
        factor: 2.0,
        reset_after_ms: 60_000,
    };
    env.sup.add(s).unwrap();
    env.sup.start("crashy").await.unwrap();
    let st = env
        .wait_for("crashy", "5 restarts", |s| {
            s.restarts >= 5 && s.started_ms.len() >= 6
        })
        .await;
    env.sup.stop("crashy").await.unwrap();
    assert_eq!(&st.backoff_ms[..5], &[100, 200, 400, 400, 400]);
    for i in 0..5 {
        let gap = st.started_ms[i + 1] - st.started_ms[i];
        let d = st.backoff_ms[i];
        assert!(gap >= d, "restart {i}: gap {gap} ms < backoff {d} ms");
        assert!(
            gap < d + 5_000,
            "restart {i}: gap {gap} ms far above backoff {d} ms"
        );
    }
    let last = env.sup.service_status("crashy").unwrap();
    assert_eq!(last.state, State::Stopped);
    let exits: Vec<_> = env.sup.logs("crashy").unwrap();
    assert!(exits
        .iter()
        .any(|l| l.stream == Stream::Stdout && l.text == "boom"));
    assert!(exits
        .iter()
        .any(|l| l.stream == Stream::Supervisor && l.text.contains("exit code 3")));
    assert!(
        env.cg.children().is_empty(),
        "cgroup left: {:?}",
        env.cg.children()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn restart_policies() {
    let env = Env::new();
    let mut ok = env.service("clean-exit", "exit 0");
    ok.restart = RestartPolicy::OnFailure;
    let mut never = env.service("never", "exit 1");
    never.restart = RestartPolicy::Never;
    env.sup.add(ok).unwrap();
    env.sup.add(never).unwrap();
    env.sup.start_all().await.unwrap();
    let a = env
        .wait_for("clean-exit", "exit", |s| s.state == State::Exited)
        .await;
    let b = env
        .wait_for("never", "exit", |s| s.state == State::Exited)
        .await;
    assert_eq!(a.restarts, 0);
    assert_eq!(a.last_exit.unwrap().status, Some(ExitStatus::Exited(0)));
    assert_eq!(b.restarts, 0);
    assert_eq!(b.last_exit.unwrap().status, Some(ExitStatus::Exited(1)));
}

#[tokio::test(flavor = "current_thread")]
async fn memory_hog_is_oom_killed_reported_and_restarted() {
    let env = Env::new();
    let mut s = env.service("hog", "exec dd if=/dev/zero of=/dev/null bs=256M count=4");
    s.limits.memory_mb = Some(32);
    s.backoff = BackoffSpec {
        initial_ms: 50,
        max_ms: 200,
        factor: 2.0,
        reset_after_ms: 60_000,
    };
    env.sup.add(s).unwrap();
    env.sup.start("hog").await.unwrap();
    let st = env
        .wait_for("hog", "an OOM restart", |s| s.restarts >= 2)
        .await;
    env.sup.stop("hog").await.unwrap();
    assert!(st.oom_kills >= 2, "{st:?}");
    let exit = st.last_exit.unwrap();
    assert_eq!(exit.reason, ExitReason::OomKilled);
    assert_eq!(exit.status, Some(ExitStatus::Signaled(libc::SIGKILL)));
    assert_eq!(&st.backoff_ms[..2], &[50, 100]);
}

fn http_check(path: &str) -> HealthSpec {
    HealthSpec {
        kind: HealthKind::Http,
        port: Some(8080),
        path: Some(path.into()),
        command: Vec::new(),
        interval_ms: 150,
        timeout_ms: 1000,
        retries: 2,
        start_period_ms: 0,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn http_health_check_failure_restarts() {
    let env = Env::new();
    let web = "exec httpd -f -p 127.0.0.1:8080 -h /www";
    let mut good = env.service("good-web", web);
    good.health = Some(http_check("/index.html"));
    let mut bad = env.service("bad-web", web);
    bad.health = Some(http_check("/missing.html"));
    bad.backoff = BackoffSpec {
        initial_ms: 50,
        max_ms: 100,
        factor: 2.0,
        reset_after_ms: 60_000,
    };
    env.sup.add(good).unwrap();
    env.sup.add(bad).unwrap();
    env.sup.start_all().await.unwrap();
    let b = env
        .wait_for("bad-web", "a restart for health", |s| s.restarts >= 1)
        .await;
    let exit = b.last_exit.clone().unwrap();
    assert_eq!(exit.reason, ExitReason::Unhealthy, "{b:?}");
    assert!(exit.detail.contains("404"), "{exit:?}");
    let g = env
        .wait_for("good-web", "healthy", |s| s.health == Health::Healthy)
        .await;
    // Several more check intervals: the healthy one is never restarted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let g2 = env.sup.service_status("good-web").unwrap();
    assert_eq!(
        (g2.restarts, g2.state, g2.health),
        (0, State::Running, Health::Healthy)
    );
    assert_eq!(g.pid, g2.pid);
    env.sup.stop_all().await.unwrap();
    assert!(env.cg.children().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn tcp_and_exec_health_checks() {
    let env = Env::new();
    let mut tcp = env.service("tcp-web", "exec httpd -f -p 127.0.0.1:8080 -h /www");
    tcp.health = Some(HealthSpec {
        kind: HealthKind::Tcp,
        path: None,
        ..http_check("/")
    });
    let mut exec = env.service("exec-svc", "echo ready > /tmp/ready; exec sleep 600");
    exec.writable_rootfs = true;
    exec.health = Some(HealthSpec {
        kind: HealthKind::Exec,
        port: None,
        path: None,
        command: vec!["/bin/cat".into(), "/tmp/ready".into()],
        ..http_check("/")
    });
    env.sup.add(tcp).unwrap();
    env.sup.add(exec).unwrap();
    env.sup.start_all().await.unwrap();
    env.wait_for("tcp-web", "tcp healthy", |s| s.health == Health::Healthy)
        .await;
    env.wait_for("exec-svc", "exec healthy", |s| s.health == Health::Healthy)
        .await;
    env.sup.stop_all().await.unwrap();
}

/// An exec health check runs as the service does: inside its pid, mount,
/// UTS and network namespaces, with its seccomp filter, no_new_privs, its
/// uid and its (here: empty) capability set, even for a uid-0 service. It
/// sees the container's processes only, its rootfs and host name, and
/// cannot signal a host process.
#[tokio::test(flavor = "current_thread")]
async fn exec_health_check_runs_with_the_service_view_and_privileges() {
    let env = Env::new();
    std::fs::write(env.rootfs.join("marker"), "inside-the-rootfs\n").unwrap();
    let host_pid = std::process::id();
    let mut s = env.service("viewer", "exec sleep 600");
    s.uid = 0;
    s.gid = 0;
    s.allow_root = true;
    s.volumes = vec![nuvol_supervisor::spec::VolumeSpec {
        name: "out".into(),
        path: "/out".into(),
    }];
    let vols = env._tmp.path().join("vols");
    s.volumes_dir = Some(vols.clone());
    // One file, renamed into place: a check killed by the stop below
    // leaves no half-written view behind.
    let script = format!(
        "{{ echo procs $(ls /proc); \
           busybox grep -E '^(CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Pid):' /proc/self/status; \
           echo host $(hostname); echo marker $(cat /marker); \
           if kill -0 {host_pid} 2>/dev/null; then echo hostpid visible; else echo hostpid invisible; fi; \
         }} > /out/view.tmp && busybox mv /out/view.tmp /out/view"
    );
    s.health = Some(HealthSpec {
        kind: HealthKind::Exec,
        port: None,
        path: None,
        command: vec!["/bin/sh".into(), "-c".into(), script],
        ..http_check("/")
    });
    env.sup.add(s).unwrap();
    env.sup.start_all().await.unwrap();
    env.wait_for("viewer", "exec healthy", |s| s.health == Health::Healthy)
        .await;
    let view_file = vols.join("out/view");
    for _ in 0..200 {
        if view_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.sup.stop_all().await.unwrap();
    let view = std::fs::read_to_string(&view_file).unwrap_or_default();
    let field = |k: &str| {
        view.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("CapEff:"), "0000000000000000", "{view}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{view}");
    assert_eq!(field("NoNewPrivs:"), "1", "{view}");
    assert_eq!(field("Seccomp:"), "2", "{view}");
    // The shell's pid in the container's pid namespace: small, not the host's.
    let pid: u32 = field("Pid:").parse().unwrap_or(0);
    assert!((2..20).contains(&pid), "{view}");
    // /proc lists the service (1) and the check's own processes, nothing of the host.
    let procs: Vec<u32> = field("procs ")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(procs.contains(&1), "{view}");
    assert!(!procs.contains(&host_pid), "{view}");
    assert!(procs.len() < 8, "{view}");
    assert_eq!(field("host "), "viewer", "{view}");
    assert_eq!(field("marker "), "inside-the-rootfs", "{view}");
    assert_eq!(field("hostpid "), "invisible", "{view}");
}

#[tokio::test(flavor = "current_thread")]
async fn dependencies_start_first_and_cycles_are_refused() {
    let env = Env::new();
    let mut db = env.service("db", "exec httpd -f -p 127.0.0.1:8080 -h /www");
    db.health = Some(HealthSpec {
        interval_ms: 300,
        ..http_check("/index.html")
    });
    let mut app = env.service("app", "exec sleep 600");
    app.depends_on = vec!["db".into()];
    env.sup.add(db).unwrap();
    env.sup.add(app).unwrap();
    env.sup.start("app").await.unwrap();
    let a = env
        .wait_for("app", "app running", |s| s.state == State::Running)
        .await;
    let d = env.sup.service_status("db").unwrap();
    assert_eq!(d.health, Health::Healthy);
    // app was started only after db's first (300 ms) health check passed.
    assert!(
        a.started_ms[0] >= d.started_ms[0] + 300,
        "db {:?} app {:?}",
        d.started_ms,
        a.started_ms
    );
    env.sup.stop_all().await.unwrap();

    let mut x = env.service("x", "true");
    x.depends_on = vec!["y".into()];
    let mut y = env.service("y", "true");
    y.depends_on = vec!["x".into()];
    env.sup.add(x).unwrap();
    env.sup.add(y).unwrap();
    let e = env.sup.start("x").await.unwrap_err();
    assert!(matches!(e, SupervisorError::DependencyCycle(_)), "{e}");
    assert_eq!(e.to_string(), "dependency cycle: x -> y -> x");
    let mut z = env.service("z", "true");
    z.depends_on = vec!["nope".into()];
    env.sup.add(z).unwrap();
    let e = env.sup.start("z").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "service \"z\" depends on unknown service \"nope\""
    );
}

#[tokio::test(flavor = "current_thread")]
async fn stop_kills_everything_and_logs_are_captured() {
    let env = Env::new();
    let mut s = env.service(
        "chatty",
        "trap '' TERM; sleep 600 & sleep 600 & i=0; while true; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.05; done",
    );
    s.stop_grace_ms = 300;
    env.sup.add(s).unwrap();
    let mut follow = env.sup.follow("chatty").unwrap();
    env.sup.start("chatty").await.unwrap();
    // Follow sees live lines from both streams.
    let mut seen_out = false;
    let mut seen_err = false;
    while !(seen_out && seen_err) {
        let l = tokio::time::timeout(Duration::from_secs(20), follow.next())
            .await
            .unwrap()
            .unwrap();
        seen_out |= l.stream == Stream::Stdout && l.text.starts_with("out ");
        seen_err |= l.stream == Stream::Stderr && l.text.starts_with("err ");
    }
    let st = env.sup.service_status("chatty").unwrap();
    let cg = env.cg.cgroup("chatty").unwrap();
    assert!(cg.pids().len() >= 3, "{:?}", cg.pids());
    let t0 = std::time::Instant::now();
    env.sup.stop("chatty").await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "SIGTERM was ignored, so the grace period must pass"
    );
    assert!(st.pid.is_some());
    let after = env.sup.service_status("chatty").unwrap();
    assert_eq!(after.state, State::Stopped);
    assert_eq!(
        after.last_exit.unwrap().status,
        Some(ExitStatus::Signaled(libc::SIGKILL))
    );
    assert!(
        cg.dirs().iter().all(|d| !d.exists()),
        "cgroup survived stop"
    );
    // No process of the container survives anywhere on the host.
    let pid = st.pid.unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    let logs = env.sup.logs("chatty").unwrap();
    assert!(logs.iter().any(|l| l.text == "out 0"));
    assert!(logs.iter().any(|l| l.text == "err 0"));
    // The log writer thread writes within about a second.
    let path = env
        ._tmp
        .path()
        .join("data/services/chatty/logs/current.log");
    let t0 = std::time::Instant::now();
    let mut file = String::new();
    while t0.elapsed() < Duration::from_secs(5) {
        file = std::fs::read_to_string(&path).unwrap_or_default();
        if file.contains(" out out 0\n") && file.contains(" err err 0\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        file.contains(" out out 0\n") && file.contains(" err err 0\n"),
        "{file}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bad_services_are_refused_and_host_helpers_run() {
    let env = Env::new();
    let mut s = env.service("nocmd", "true");
    s.command.clear();
    assert_eq!(
        env.sup.add(s).unwrap_err().to_string(),
        "service \"nocmd\": command: missing entrypoint"
    );
    let mut s = env.service("neg", "true");
    s.limits.memory_mb = Some(-1);
    assert_eq!(
        env.sup.add(s).unwrap_err().to_string(),
        "service \"neg\": limits.memory_mb: must be positive, got -1"
    );
    let mut s = env.service("badcap", "true");
    s.capabilities = vec!["CAP_MAGIC".into()];
    assert_eq!(
        env.sup.add(s).unwrap_err().to_string(),
        "service \"badcap\": capabilities: unknown capability \"CAP_MAGIC\""
    );

    // An agent helper on the host's rootfs, still in its own pid namespace and cgroup.
    let mut h = env.service(
        "helper",
        "echo helper pid $$; test -d /work && echo sees-host-fs",
    );
    h.rootfs = RootfsSpec::Host;
    h.uid = 0;
    h.gid = 0;
    h.allow_root = true;
    h.restart = RestartPolicy::Never;
    env.sup.add(h).unwrap();
    env.sup.start("helper").await.unwrap();
    env.wait_for("helper", "helper exit", |s| s.state == State::Exited)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let texts: Vec<String> = env
        .sup
        .logs("helper")
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert!(texts.contains(&"helper pid 1".to_string()), "{texts:?}");
    assert!(texts.contains(&"sees-host-fs".to_string()), "{texts:?}");
}

/// A real network hook built from iproute2: a veth pair whose container end
/// is created inside the container's namespace before the service starts.
struct VethHook {
    host: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl nuvol_supervisor::NetworkHook for VethHook {
    fn attach<'a>(
        &'a self,
        _service: &'a str,
        pid: i32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let pid = pid.to_string();
            ip(&[
                "link", "add", &self.host, "type", "veth", "peer", "name", "eth0", "netns", &pid,
            ])?;
            let st = std::process::Command::new("nsenter")
                .args([
                    "-t",
                    &pid,
                    "-n",
                    "ip",
                    "addr",
                    "add",
                    "10.213.7.2/24",
                    "dev",
                    "eth0",
                ])
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err("nsenter ip addr add failed".into());
            }
            Ok("10.213.7.2/24".into())
        })
    }

    fn detach<'a>(
        &'a self,
        _service: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        // The pair dies with the container's namespace; delete in case it did not yet.
        Box::pin(async move {
            let _ = ip(&["link", "del", &self.host]);
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn network_hook_runs_before_the_service_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(tmp.path());
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/ip")).unwrap();
    let cg = CgroupRoot::detect(&unique("nuvol-sup-test")).unwrap();
    let host = format!("nvt{}", std::process::id() % 100_000_000);
    let sup = Supervisor::new(&tmp.path().join("data"), cg.clone())
        .unwrap()
        .with_network(std::sync::Arc::new(VethHook { host: host.clone() }));
    let env = Env {
        sup,
        rootfs,
        cg,
        _tmp: tmp,
    };
    let mut s = env.service("netted", "ip -4 addr show eth0; exec sleep 600");
    s.restart = RestartPolicy::Never;
    env.sup.add(s).unwrap();
    env.sup.start("netted").await.unwrap();
    let st = env
        .wait_for("netted", "running", |s| s.state == State::Running)
        .await;
    assert_eq!(st.address.as_deref(), Some("10.213.7.2/24"));
    for _ in 0..250 {
        if env
            .sup
            .logs("netted")
            .unwrap()
            .iter()
            .any(|l| l.text.contains("inet 10.213.7.2/24"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts: Vec<String> = env
        .sup
        .logs("netted")
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("inet 10.213.7.2/24")),
        "{texts:?}"
    );
    env.sup.stop("netted").await.unwrap();
    assert!(
        !Path::new(&format!("/sys/class/net/{host}")).exists(),
        "veth leaked"
    );
}

/// Services that ignore SIGTERM (a shell or daemon as PID 1 of its pid
/// namespace) each use their whole grace period: stop_all stops the
/// independent ones together, so five take about one grace period, not
/// five, and a dependent is still gone before its dependency gets SIGTERM.
#[tokio::test(flavor = "current_thread")]
async fn stop_all_stops_independent_services_together_dependents_first() {
    let env = Env::new();
    let grace = 1500;
    let names = ["w1", "w2", "w3", "w4", "app"];
    for n in names {
        let mut s = env.service(n, "exec sleep 600");
        s.stop_grace_ms = grace;
        if n == "app" {
            s.depends_on = vec!["w1".into()];
        }
        env.sup.add(s).unwrap();
    }
    for n in names {
        env.sup.start(n).await.unwrap();
    }
    for n in names {
        env.wait_for(n, "running", |s| s.state == State::Running)
            .await;
    }
    let t0 = std::time::Instant::now();
    env.sup.stop_all().await.unwrap();
    let took = t0.elapsed();
    // Two waves ({app, w2, w3, w4}, then w1): two grace periods. One by one
    // it would be five.
    assert!(
        took >= Duration::from_millis(2 * grace) && took < Duration::from_millis(4 * grace),
        "stop_all took {took:?} for two waves of {grace} ms"
    );
    let exit_at = |n: &str| {
        let st = env.sup.service_status(n).unwrap();
        assert_eq!(st.state, State::Stopped, "{n}: {st:?}");
        st.last_exit.expect("exit recorded").at_ms
    };
    assert!(
        exit_at("w1") >= exit_at("app") + grace,
        "w1 got SIGTERM before app was gone"
    );
    let spread = ["w2", "w3", "w4"].map(exit_at);
    assert!(
        spread.iter().max().unwrap() - spread.iter().min().unwrap() < grace,
        "w2..w4 were not stopped together: {spread:?}"
    );
    assert!(env.cg.children().is_empty());
}

/// `changes()` moves on add/remove and on state or health changes, and
/// stays put while a healthy service only passes checks.
#[tokio::test(flavor = "current_thread")]
async fn changes_follow_state_and_health_not_every_check() {
    let env = Env::new();
    let mut rx = env.sup.changes();
    let mut web = env.service("watched", "exec httpd -f -p 127.0.0.1:8080 -h /www");
    web.health = Some(http_check("/index.html"));
    env.sup.add(web).unwrap();
    assert!(rx.has_changed().unwrap(), "add is a change");
    rx.borrow_and_update();
    env.sup.start("watched").await.unwrap();
    // Starting, Running, then Healthy: each wakes the receiver.
    let healthy = async {
        loop {
            rx.changed().await.unwrap();
            let st = env.sup.service_status("watched").unwrap();
            if st.state == State::Running && st.health == Health::Healthy {
                return env.sup.now_ms() - st.started_ms.last().copied().unwrap_or(0);
            }
        }
    };
    let age = tokio::time::timeout(Duration::from_secs(15), healthy)
        .await
        .expect("no change reported up to healthy");
    assert!(age < 15_000, "run age {age} ms on the status clock");
    rx.borrow_and_update();
    // Four more passing checks (150 ms apart): no change.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "a passing check is not a change"
    );
    env.sup.stop("watched").await.unwrap();
    assert!(rx.has_changed().unwrap(), "stop is a change");
    rx.borrow_and_update();
    env.sup.remove("watched").unwrap();
    assert!(rx.has_changed().unwrap(), "remove is a change");
}
