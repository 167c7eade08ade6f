//! Test scaffolding: network namespaces, veth pairs and a real dnsmasq,
//! all removed on drop. Needs root and iproute2 + dnsmasq (Debian).
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<p><pid%100000><n>`.
pub fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique("nvt");
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["ip", "-n", &self.name];
        a.extend_from_slice(args);
        run(&a)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Run `f` on a fresh thread inside this namespace, on its own
    /// current-thread runtime (as the agent runs).
    pub fn run_in<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = self.path();
        std::thread::spawn(move || {
            let f_ns = File::open(&path).expect("open netns");
            // SAFETY: valid fd; CLONE_NEWNET affects only this thread.
            let r = unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(f())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `client` holds `cif`, `server`
/// holds `sif` with 10.77.0.1/24.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    pub cif: String,
    pub sif: String,
}

impl Pair {
    pub fn new() -> Pair {
        let client = Netns::new();
        let server = Netns::new();
        let cif = unique("vc");
        let sif = unique("vs");
        client.ip(&["link", "add", &cif, "type", "veth", "peer", "name", &sif]);
        client.ip(&["link", "set", &sif, "netns", &server.name]);
        server.ip(&["addr", "add", "10.77.0.1/24", "dev", &sif]);
        server.ip(&["link", "set", &sif, "up"]);
        Pair {
            client,
            server,
            cif,
            sif,
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(unique("nuvol-net-test-"));
        std::fs::create_dir_all(&p).expect("tempdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dnsmasq serving DHCP on `pair.sif`: range .50–.99, router 10.77.0.1,
/// DNS 10.77.0.53, domain `nvtest`, 2-minute leases (dnsmasq's minimum)
/// with the given T1/T2.
pub struct Dnsmasq {
    child: Child,
    pub leases: PathBuf,
}

impl Dnsmasq {
    pub fn start(pair: &Pair, dir: &TempDir, t1: u32, t2: u32) -> Dnsmasq {
        let leases = dir.0.join("dnsmasq.leases");
        let child = Command::new("ip")
            .args(["netns", "exec", &pair.server.name, "dnsmasq", "--no-daemon"])
            .args(["--conf-file=/dev/null", "--port=0", "--bind-interfaces"])
            .arg(format!("--interface={}", pair.sif))
            .arg("--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,2m")
            .arg("--dhcp-option=option:router,10.77.0.1")
            .arg("--dhcp-option=option:dns-server,10.77.0.53")
            .arg("--dhcp-option=option:domain-name,nvtest")
            .arg(format!("--dhcp-option=option:T1,{t1}"))
            .arg(format!("--dhcp-option=option:T2,{t2}"))
            .arg("--dhcp-authoritative")
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!(
                "--pid-file={}",
                dir.0.join("dnsmasq.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq)");
        // Wait until it listens on port 67.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let out = pair.server.ip(&["link", "show"]);
            let ss = Command::new("ip")
                .args(["netns", "exec", &pair.server.name, "ss", "-uln"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            if ss.contains(":67 ") && !out.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Dnsmasq { child, leases }
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `cond` every 20 ms until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Run `f` on a fresh thread inside the network namespace at `path`
/// (sockets made there stay in that namespace).
pub fn in_netns<T: Send + 'static>(
    path: std::path::PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).unwrap();
        // SAFETY: valid fd; affects this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
