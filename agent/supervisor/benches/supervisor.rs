//! `cargo bench -p nuvol-supervisor` (root): the agent's memory cost per
//! supervised service. A current-thread runtime like the agent's runs 50
//! services (busybox containers that log 100 lines, then sleep); the RSS
//! growth of this process is divided by 50. Then everything is stopped and
//! the cgroup sub-tree must be empty.

use std::time::{Duration, Instant};

use nuvol_container::CgroupRoot;
use nuvol_supervisor::{ServiceSpec, State, Supervisor};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("apt-get install busybox-static");
    for a in ["sh", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let cg = CgroupRoot::detect(&format!("nuvol-supbench-{}", std::process::id())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sup = Supervisor::new(&tmp.path().join("data"), cg.clone()).unwrap();
        // Warm up: one service through a whole start/stop cycle.
        let mk = |name: &str| {
            let mut s = ServiceSpec::from_toml(&format!(
                "name = {name:?}\nrootfs = {{ dir = {{ path = {:?} }} }}\ncommand = [\"/bin/sh\", \"-c\", \"i=0; while [ $i -lt 100 ]; do echo line $i of some log output; i=$((i+1)); done; exec sleep 600\"]\n",
                root.to_str().unwrap()
            ))
            .unwrap();
            s.stop_grace_ms = 100;
            s
        };
        sup.add(mk("warm")).unwrap();
        sup.start("warm").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        sup.stop("warm").await.unwrap();
        sup.remove("warm").unwrap();
        let rss0 = rss_kib();
        let t0 = Instant::now();
        for i in 0..50 {
            sup.add(mk(&format!("svc{i}"))).unwrap();
        }
        sup.start_all().await.unwrap();
        // Wait until every service is running and its 100 lines are logged.
        loop {
            let st = sup.status();
            let logged = st.iter().all(|s| sup.logs(&s.name).map(|l| l.len() >= 100).unwrap_or(false));
            if st.iter().all(|s| s.state == State::Running) && logged {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "services did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rss1 = rss_kib();
        println!("50 supervised services, 100 log lines each, all running after {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        println!(
            "agent RSS {rss0} KiB -> {rss1} KiB = {:.1} KiB per running service (target <= 256)",
            rss1.saturating_sub(rss0) as f64 / 50.0
        );
        sup.stop_all().await.unwrap();
        let left = cg.children();
        println!("after stop_all: {} cgroups left", left.len());
        assert!(left.is_empty());
    });
    let _ = cg.remove();
}
