//! Test rig: two network namespaces joined by a veth pair, and an isolated
//! avahi-daemon (private D-Bus, private /run) in one of them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(st, Ok(s) if s.success()),
        "command failed: {args:?}"
    );
}

/// Two namespaces `a` and `b`, veth `va`(in a, 10.N.0.1) <-> `vb`(in b, 10.N.0.2).
pub struct Pair {
    pub a: String,
    pub b: String,
    pub va: String,
    pub vb: String,
    pub ip_a: String,
    pub ip_b: String,
}

impl Pair {
    pub fn new() -> Pair {
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{}", pid % 100_000, n);
        let net = 100 + (pid + n) % 150;
        let p = Pair {
            a: format!("mdA{tag}"),
            b: format!("mdB{tag}"),
            va: format!("va{tag}"),
            vb: format!("vb{tag}"),
            ip_a: format!("10.{net}.{n}.1"),
            ip_b: format!("10.{net}.{n}.2"),
        };
        run(&["ip", "netns", "add", &p.a]);
        run(&["ip", "netns", "add", &p.b]);
        run(&[
            "ip", "link", "add", &p.va, "type", "veth", "peer", "name", &p.vb,
        ]);
        run(&["ip", "link", "set", &p.va, "netns", &p.a]);
        run(&["ip", "link", "set", &p.vb, "netns", &p.b]);
        for (ns, dev, ip) in [(&p.a, &p.va, &p.ip_a), (&p.b, &p.vb, &p.ip_b)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // wait for carrier (IFF_RUNNING) on both ends
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let out = Command::new("ip")
                .args(["-n", &p.b, "link", "show", &p.vb])
                .output();
            if out
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("LOWER_UP"))
                .unwrap_or(false)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Like `new`, but the link has only IPv6: `fd77:N::1/64` and
    /// `fd77:N::2/64` (and the link-local addresses), no IPv4 address, DAD
    /// off so the addresses are usable at once.
    pub fn new_v6() -> Pair {
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{}", pid % 100_000, n);
        let net = format!("{:x}", (pid % 0xfff0) + n);
        let p = Pair {
            a: format!("mdA{tag}"),
            b: format!("mdB{tag}"),
            va: format!("va{tag}"),
            vb: format!("vb{tag}"),
            ip_a: format!("fd77:{net}::1"),
            ip_b: format!("fd77:{net}::2"),
        };
        for ns in [&p.a, &p.b] {
            run(&["ip", "netns", "add", ns]);
            for k in ["all", "default"] {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{k}.accept_dad=0"),
                ]);
            }
        }
        run(&[
            "ip", "link", "add", &p.va, "type", "veth", "peer", "name", &p.vb,
        ]);
        run(&["ip", "link", "set", &p.va, "netns", &p.a]);
        run(&["ip", "link", "set", &p.vb, "netns", &p.b]);
        for (ns, dev, ip) in [(&p.a, &p.va, &p.ip_a), (&p.b, &p.vb, &p.ip_b)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up", "multicast", "on"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // carrier, and a link-local address on both ends
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let ok = [(&p.a, &p.va), (&p.b, &p.vb)].iter().all(|(ns, dev)| {
                Command::new("ip")
                    .args(["-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("fe80::"))
                    .unwrap_or(false)
            });
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// Run `f` on a thread that entered namespace `ns`, inside a tokio runtime.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd;
            // SAFETY: plain setns(2) on a valid fd for this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread panicked")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// avahi-daemon + a private system bus, in namespace `ns`, on `iface`.
pub struct Avahi {
    dir: PathBuf,
    pub bus: String,
    ns: String,
    dbus: Child,
    daemon: Child,
    children: Vec<Child>,
}

impl Avahi {
    pub fn start(ns: &str, iface: &str, host: &str) -> Avahi {
        Avahi::start_with(ns, iface, host, "use-ipv4=yes\nuse-ipv6=no")
    }

    /// avahi-daemon speaking only IPv6 (`use-ipv4=no`, `use-ipv6=yes`).
    pub fn start_v6(ns: &str, iface: &str, host: &str) -> Avahi {
        Avahi::start_with(ns, iface, host, "use-ipv4=no\nuse-ipv6=yes")
    }

    fn start_with(ns: &str, iface: &str, host: &str, families: &str) -> Avahi {
        let dir = std::env::temp_dir().join(format!(
            "nuvol-mdns-avahi-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let sock = dir.join("bus");
        let bus = format!("unix:path={}", sock.display());
        std::fs::write(
            dir.join("bus.conf"),
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>{bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#
            ),
        )
        .expect("bus.conf");
        std::fs::write(
            dir.join("avahi.conf"),
            format!(
                "[server]\nhost-name={host}\n{families}\nallow-interfaces={iface}\nenable-dbus=yes\nratelimit-interval-usec=0\n\
                 [wide-area]\nenable-wide-area=no\n[publish]\npublish-hinfo=no\npublish-workstation=no\npublish-aaaa-on-ipv4=no\n\
                 [reflector]\nenable-reflector=no\n[rlimits]\n"
            ),
        )
        .expect("avahi.conf");
        let dbus = Command::new("dbus-daemon")
            .args([
                "--nofork",
                "--nopidfile",
                &format!("--config-file={}", dir.join("bus.conf").display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        let t = Instant::now();
        while !sock.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // own /run (pid file, socket) via a private mount namespace
        let script = format!(
            "mount -t tmpfs tmpfs /run && mkdir -p /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits -f {}",
            dir.join("avahi.conf").display()
        );
        let daemon = Command::new("ip")
            .args([
                "netns", "exec", ns, "unshare", "--mount", "sh", "-c", &script,
            ])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("avahi-daemon");
        let a = Avahi {
            dir,
            bus,
            ns: ns.to_string(),
            dbus,
            daemon,
            children: Vec::new(),
        };
        // ready once its server state is RUNNING (2): host name probed and
        // announced
        let t = Instant::now();
        let mut running = false;
        while !running && t.elapsed() < Duration::from_secs(15) {
            let out = a
                .cmd("dbus-send")
                .args([
                    "--system",
                    "--print-reply",
                    "--dest=org.freedesktop.Avahi",
                    "/",
                    "org.freedesktop.Avahi.Server.GetState",
                ])
                .stderr(Stdio::null())
                .output();
            running = out
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("int32 2"))
                .unwrap_or(false);
            if !running {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert!(running, "avahi-daemon did not reach the running state");
        a
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus);
        c
    }

    /// `avahi-publish -s NAME TYPE PORT TXT...` until the Avahi is dropped.
    pub fn publish(&mut self, name: &str, stype: &str, port: u16, txt: &[&str]) {
        let mut c = self.cmd("avahi-publish");
        c.args(["-s", name, stype, &port.to_string()]).args(txt);
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("avahi-publish");
        self.children.push(child);
    }

    /// Resolved lines of `avahi-browse -a -r -t -p`, split into fields
    /// with `\DDD` escapes undone.
    pub fn browse(&self) -> Vec<Vec<String>> {
        let Ok(o) = self
            .cmd("avahi-browse")
            .args(["-a", "-r", "-t", "-p", "-k"])
            .stderr(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with('='))
            .map(|l| l.split(';').map(unescape).collect())
            .collect()
    }

    /// Poll `browse` until `pred` holds on its output or `secs` pass.
    pub fn wait_browse(
        &self,
        secs: u64,
        pred: impl Fn(&[Vec<String>]) -> bool,
    ) -> Option<Vec<Vec<String>>> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            let b = self.browse();
            if pred(&b) {
                return Some(b);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    }
}

/// A running `avahi-browse -a -r -p -k` (not `-t`: it reports every add,
/// resolve and removal as it happens), with the time each line came.
pub struct Watch {
    child: Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
}

impl Avahi {
    /// Start a long-running browser on this Avahi.
    pub fn watch(&self) -> Watch {
        let mut child = self
            .cmd("avahi-browse")
            .args(["-a", "-r", "-p", "-k"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("avahi-browse");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = l.lock() {
                    v.push((Instant::now(), line));
                }
            }
        });
        Watch { child, lines }
    }
}

impl Watch {
    /// When the first line of `kind` (`+` new, `=` resolved, `-` removed)
    /// for `instance` came at or after `since`.
    pub fn first(&self, kind: &str, instance: &str, since: Instant) -> Option<Instant> {
        self.lines.lock().ok()?.iter().find_map(|(t, l)| {
            let f: Vec<&str> = l.split(';').collect();
            (*t >= since && f.len() > 3 && f[0] == kind && unescape(f[3]) == instance).then_some(*t)
        })
    }

    /// Wait up to `secs` for such a line: how long after `since` it came.
    pub fn wait(&self, kind: &str, instance: &str, since: Instant, secs: u64) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Some(at) = self.first(kind, instance, since) {
                let d = at - since;
                eprintln!("avahi-browse {kind} {instance:?}: {d:?} after the trigger");
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether any line so far contains `text`.
    pub fn saw(&self, text: &str) -> bool {
        self.lines
            .lock()
            .map(|v| v.iter().any(|(_, l)| l.contains(text)))
            .unwrap_or(false)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') as u32 * 100
                + (b[i + 2] - b'0') as u32 * 10
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Drop for Avahi {
    fn drop(&mut self) {
        for c in self
            .children
            .iter_mut()
            .chain([&mut self.daemon, &mut self.dbus])
        {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if t.elapsed() > Duration::from_secs(3) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
