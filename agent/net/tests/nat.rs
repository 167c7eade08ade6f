//! Outbound NAT and published ports through nftables (netlink, no `nft`
//! in the agent). Three namespaces: `host` runs nuvol-net and has an uplink
//! veth to `upstream` (198.51.100.1 ↔ .2); `ctr`/`ctr2` are containers on
//! nuvol0. `upstream` has no route to the container subnet, so anything
//! that works from a container works through NAT. The Debian `nft` binary
//! is used only by the test, to look at and to flush the ruleset.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Netns, TempDir};
use nuvol_config::NetworkConfig;
use nuvol_net::{NetError, NetOptions, Netns as Ns, Proto, PublishedPort};

const HOST_UP: &str = "198.51.100.1";
const UPSTREAM: &str = "198.51.100.2";

fn enter(path: &Path) {
    let f = std::fs::File::open(path).expect("open netns");
    // SAFETY: valid fd; CLONE_NEWNET affects only this thread.
    assert_eq!(
        unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns: {}",
        std::io::Error::last_os_error()
    );
}

/// Run `f` on a thread inside the namespace at `path`.
fn in_ns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A TCP server answering every connection with the peer's address, and
/// a UDP server answering every datagram with the sender's address,
/// until dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(path: &Path, tcp: SocketAddr, udp: SocketAddr) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let (p, s, r) = (path.to_path_buf(), stop.clone(), ready_tx.clone());
        threads.push(std::thread::spawn(move || {
            enter(&p);
            let l = TcpListener::bind(tcp).expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            r.send(()).expect("ready");
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        let (p, s, r) = (path.to_path_buf(), stop.clone(), ready_tx);
        threads.push(std::thread::spawn(move || {
            enter(&p);
            let u = UdpSocket::bind(udp).expect("bind udp");
            u.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            r.send(()).expect("ready");
            let mut b = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = u.recv_from(&mut b) {
                    let _ = u.send_to(peer.ip().to_string().as_bytes(), peer);
                }
            }
        }));
        for _ in 0..2 {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("servers up");
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connect from the namespace and read what the server says.
fn tcp_get(path: &Path, to: &str) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().expect("address");
    in_ns(path, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(800))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b)
    })
}

fn udp_get(path: &Path, to: &str) -> std::io::Result<String> {
    let to: SocketAddr = to.parse().expect("address");
    in_ns(path, move || {
        let u = UdpSocket::bind("0.0.0.0:0")?;
        u.set_read_timeout(Some(Duration::from_millis(800)))?;
        u.send_to(b"?", to)?;
        let mut b = [0u8; 64];
        let (n, _) = u.recv_from(&mut b)?;
        Ok(String::from_utf8_lossy(&b[..n]).into_owned())
    })
}

fn nft_table(ns: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "ip", "nuvol"])
        .output()
        .expect("nft (apt-get install nftables)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn forwarding(ns: &str) -> String {
    common::run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
    ])
    .trim()
    .to_string()
}

fn port(proto: Proto, host_port: u16, container_port: u16) -> PublishedPort {
    PublishedPort {
        proto,
        host_port,
        container_port,
        only_via: None,
    }
}

#[test]
fn nat_and_published_ports_through_nftables() {
    let host = Netns::new();
    let upstream = Netns::new();
    let ctr = Netns::new();
    let ctr2 = Netns::new();
    let peer = Netns::new();
    let (hif, uif) = (common::unique("vh"), common::unique("vu"));
    host.ip(&["link", "add", &hif, "type", "veth", "peer", "name", &uif]);
    host.ip(&["link", "set", &uif, "netns", &upstream.name]);
    host.ip(&["addr", "add", &format!("{HOST_UP}/24"), "dev", &hif]);
    host.ip(&["link", "set", &hif, "up"]);
    upstream.ip(&["addr", "add", &format!("{UPSTREAM}/24"), "dev", &uif]);
    upstream.ip(&["link", "set", &uif, "up"]);
    // The upstream answers with the source address it sees.
    let _up_srv = Servers::start(
        &upstream.path(),
        format!("{UPSTREAM}:7000").parse().unwrap(),
        format!("{UPSTREAM}:7001").parse().unwrap(),
    );
    let _ctr_srv = Servers::start(
        &ctr.path(),
        "0.0.0.0:8000".parse().unwrap(),
        "0.0.0.0:9000".parse().unwrap(),
    );

    let dir = TempDir::new();
    let (resolv, state) = (dir.0.join("resolv.conf"), dir.0.join("state"));
    let (ctr_p, ctr2_p, up_p, host_p) = (ctr.path(), ctr2.path(), upstream.path(), host.path());
    let host_name = host.name.clone();
    let (peer_p, peer_name) = (peer.path(), peer.name.clone());
    host.run_in(move || async move {
        common::run(&[
            "ip",
            "netns",
            "exec",
            &host_name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ]);
        let mut cfg = NetworkConfig::default();
        cfg.containers.subnet = "10.66.0.0/24".parse().unwrap();
        let opts = NetOptions::new(&resolv, &state, "n").reserve_port(Proto::Tcp, 8443);
        let h = nuvol_net::start(cfg, opts).await.unwrap();
        // No container yet: no table.
        h.reconcile().await.unwrap();
        assert!(nft_table(&host_name).is_none());

        let web = h
            .attach_container("web", Ns::File(std::fs::File::open(&ctr_p).unwrap()))
            .await
            .unwrap();
        assert_eq!(web.address.to_string(), "10.66.0.2/24");
        let t = nft_table(&host_name).expect("table ip nuvol after attach");
        assert!(t.contains("masquerade"), "{t}");
        assert_eq!(forwarding(&host_name), "1");

        // Outbound NAT: the upstream sees the host's uplink address.
        let seen = tcp_get(&ctr_p, &format!("{UPSTREAM}:7000")).expect("container → upstream tcp");
        assert_eq!(seen, HOST_UP);
        let seen = udp_get(&ctr_p, &format!("{UPSTREAM}:7001")).expect("container → upstream udp");
        assert_eq!(seen, HOST_UP);

        // Nothing published yet: the host port is closed.
        assert!(tcp_get(&up_p, &format!("{HOST_UP}:8080")).is_err());

        // Refusals, each leaving the state as it was.
        let bad: [(&str, Vec<PublishedPort>); 5] = [
            ("web", vec![port(Proto::Tcp, 80, 8000)]),
            ("web", vec![port(Proto::Tcp, 8443, 8000)]),
            ("web", vec![port(Proto::Udp, 68, 9000)]),
            ("web", vec![port(Proto::Tcp, 0, 8000)]),
            (
                "web",
                vec![port(Proto::Tcp, 8080, 8000), port(Proto::Tcp, 8080, 8001)],
            ),
        ];
        for (name, ports) in bad {
            let e = h.publish(name, &ports).await.unwrap_err();
            assert!(matches!(e, NetError::Port(_)), "{ports:?}: {e}");
        }
        let e = h
            .publish("nope", &[port(Proto::Tcp, 8080, 8000)])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");

        let ports = [port(Proto::Tcp, 8080, 8000), port(Proto::Udp, 9053, 9000)];
        h.publish("web", &ports).await.unwrap();
        // Published TCP and UDP on the uplink address reach the container,
        // which sees the real client address.
        let seen = tcp_get(&up_p, &format!("{HOST_UP}:8080")).expect("published tcp");
        assert_eq!(seen, UPSTREAM);
        let seen = udp_get(&up_p, &format!("{HOST_UP}:9053")).expect("published udp");
        assert_eq!(seen, UPSTREAM);
        // From the host itself too (output chain).
        let seen = tcp_get(&host_p, &format!("{HOST_UP}:8080")).expect("host → published");
        assert_eq!(seen, HOST_UP);
        let s = h.status();
        let c = s.containers.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(c.published.len(), 2);

        // A second container: its host port must not clash; hairpin works.
        let db = h
            .attach_container("db", Ns::File(std::fs::File::open(&ctr2_p).unwrap()))
            .await
            .unwrap();
        assert_eq!(db.address.to_string(), "10.66.0.3/24");
        let e = h
            .publish("db", &[port(Proto::Tcp, 8080, 5432)])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("already published by \"web\""),
            "{e}"
        );
        let seen = tcp_get(&ctr2_p, &format!("{HOST_UP}:8080")).expect("hairpin");
        assert_eq!(seen, "10.66.0.1");

        // Unpublished container ports are not reachable from outside even
        // for a neighbour that routes the container subnet via the host.
        common::run(&[
            "ip",
            "-n",
            &upstream.name,
            "route",
            "add",
            "10.66.0.0/24",
            "via",
            HOST_UP,
        ]);
        let t0 = Instant::now();
        assert!(tcp_get(&up_p, "10.66.0.2:8000").is_err(), "forward filter");
        assert!(t0.elapsed() < Duration::from_secs(3));

        // A port published only via one link (the overlay's, here a veth to
        // a peer): reached through that link, from the host itself, and not
        // from the LAN, not even by a neighbour that routes the link's
        // address via the host.
        let (oif, pif) = (common::unique("vo"), common::unique("vp"));
        common::run(&[
            "ip", "-n", &host_name, "link", "add", &oif, "type", "veth", "peer", "name", &pif,
        ]);
        common::run(&[
            "ip", "-n", &host_name, "link", "set", &pif, "netns", &peer_name,
        ]);
        common::run(&[
            "ip",
            "-n",
            &host_name,
            "addr",
            "add",
            "100.64.0.1/24",
            "dev",
            &oif,
        ]);
        common::run(&["ip", "-n", &host_name, "link", "set", &oif, "up"]);
        common::run(&[
            "ip",
            "-n",
            &peer_name,
            "addr",
            "add",
            "100.64.0.2/24",
            "dev",
            &pif,
        ]);
        common::run(&["ip", "-n", &peer_name, "link", "set", &pif, "up"]);
        let mut only = port(Proto::Tcp, 8081, 8000);
        only.only_via = Some(oif.clone());
        h.publish("web", &[ports[0].clone(), ports[1].clone(), only])
            .await
            .unwrap();
        h.reconcile().await.unwrap();
        let seen = tcp_get(&peer_p, "100.64.0.1:8081").expect("in via the link");
        assert_eq!(seen, "100.64.0.2");
        tcp_get(&host_p, "100.64.0.1:8081").expect("host → port only via the link");
        tcp_get(&ctr2_p, "100.64.0.1:8081").expect("a container → port only via the link");
        assert!(
            tcp_get(&up_p, &format!("{HOST_UP}:8081")).is_err(),
            "not on the LAN address"
        );
        common::run(&[
            "ip",
            "-n",
            &upstream.name,
            "route",
            "add",
            "100.64.0.0/24",
            "via",
            HOST_UP,
        ]);
        assert!(
            tcp_get(&up_p, "100.64.0.1:8081").is_err(),
            "not in from the LAN"
        );
        h.publish("web", &ports).await.unwrap();

        // Steady state: reads only.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);
        assert_eq!(h.reconcile().await.unwrap(), 0);

        // Someone flushes the ruleset: the netlink event brings it back.
        common::run(&["ip", "netns", "exec", &host_name, "nft", "flush", "ruleset"]);
        let t0 = Instant::now();
        let back = common::wait_for(Duration::from_secs(2), || {
            nft_table(&host_name).is_some_and(|t| t.contains("dnat to"))
        })
        .await;
        assert!(back, "table not re-applied within 2 s");
        eprintln!("table re-applied {:?} after the flush", t0.elapsed());
        let seen = tcp_get(&up_p, &format!("{HOST_UP}:8080")).expect("published after flush");
        assert_eq!(seen, UPSTREAM);
        // Forwarding switched off behind our back: the next reconcile (the
        // periodic one, here asked for) switches it back on. First let the
        // reconciles that the flush's own events trigger run out, so the
        // one asked for is the one that finds it.
        let settled = std::time::Instant::now();
        while h.reconcile().await.unwrap() != 0 || settled.elapsed() < Duration::from_millis(300) {
            assert!(
                settled.elapsed() < Duration::from_secs(5),
                "reconciles never settle"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        common::run(&[
            "ip",
            "netns",
            "exec",
            &host_name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ]);
        assert_eq!(forwarding(&host_name), "0");
        assert!(h.reconcile().await.unwrap() >= 1);
        assert_eq!(forwarding(&host_name), "1");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);

        // Unpublish: connection refused at once.
        h.publish("web", &[]).await.unwrap();
        let t0 = Instant::now();
        let e = tcp_get(&up_p, &format!("{HOST_UP}:8080")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(udp_get(&up_p, &format!("{HOST_UP}:9053")).is_err());
        // Outbound NAT still there.
        assert_eq!(
            tcp_get(&ctr_p, &format!("{UPSTREAM}:7000")).unwrap(),
            HOST_UP
        );

        // Detach removes the container's ports.
        h.publish("web", &ports).await.unwrap();
        assert_eq!(
            tcp_get(&up_p, &format!("{HOST_UP}:8080")).unwrap(),
            UPSTREAM
        );
        h.detach_container("web").await.unwrap();
        let e = tcp_get(&up_p, &format!("{HOST_UP}:8080")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let t = nft_table(&host_name).expect("table stays while db is attached");
        assert!(!t.contains("dnat to"), "{t}");
        // Its host port is free again for another container.
        h.publish("db", &[port(Proto::Tcp, 8080, 5432)])
            .await
            .unwrap();

        // Shutdown removes the table.
        h.shutdown().await;
        assert!(nft_table(&host_name).is_none());
    });
}

#[test]
fn last_detach_removes_the_table() {
    let host = Netns::new();
    let ctr = Netns::new();
    let dir = TempDir::new();
    let (resolv, state) = (dir.0.join("resolv.conf"), dir.0.join("state"));
    let ctr_p = ctr.path();
    let host_name = host.name.clone();
    host.run_in(move || async move {
        // A stale table of an earlier run that died is removed at start.
        common::run(&[
            "ip", "netns", "exec", &host_name, "nft", "add", "table", "ip", "nuvol",
        ]);
        let h = nuvol_net::start(
            NetworkConfig::default(),
            NetOptions::new(&resolv, &state, "n"),
        )
        .await
        .unwrap();
        let gone =
            common::wait_for(Duration::from_secs(2), || nft_table(&host_name).is_none()).await;
        assert!(gone, "stale table kept");
        h.attach_container("a", Ns::File(std::fs::File::open(&ctr_p).unwrap()))
            .await
            .unwrap();
        assert!(nft_table(&host_name).is_some());
        h.detach_container("a").await.unwrap();
        assert!(nft_table(&host_name).is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);
        h.shutdown().await;
    });
}
