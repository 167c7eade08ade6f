//! Outbound NAT and published ports, for real: three namespaces —
//! "host" (runs nuvol-net, uplink 10.77.0.2/24), "upstream" (10.77.0.1,
//! with no route back to the container subnet) and a container attached to
//! `nuvol0`. Needs root and `nft` (Debian nftables) to look at the table.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{in_netns, Netns, Pair, TempDir};
use nuvol_config::{InterfaceConfig, NetworkConfig};
use nuvol_net::{NetOptions, Netns as Ns, Protocol, PublishedPort};

/// Accept one connection on `l`, send "hello from <who>", return the peer.
fn serve_once(l: TcpListener, who: &'static str) -> std::thread::JoinHandle<Option<SocketAddr>> {
    std::thread::spawn(move || {
        l.set_nonblocking(false).ok()?;
        let (mut s, peer) = l.accept().ok()?;
        s.write_all(format!("hello from {who}").as_bytes()).ok()?;
        Some(peer)
    })
}

/// Connect from the namespace at `ns` to `to`; the greeting, or the error.
fn fetch(ns: std::path::PathBuf, to: &str) -> Result<String, std::io::Error> {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = String::new();
        s.read_to_string(&mut b)?;
        Ok(b)
    })
}

fn nft_tables(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn container_reaches_upstream_through_nat_and_published_port_reaches_container() {
    let pair = Pair::new(); // client = host, server = upstream (10.77.0.1)
    let ctr = Netns::new();
    let ctr2 = Netns::new();
    let dir = TempDir::new();
    let host_name = pair.client.name.clone();
    let up_path = pair.server.path();
    let ctr_path = ctr.path();
    let ctr2_path = ctr2.path();
    let cif = pair.cif.clone();
    let resolv = dir.0.join("resolv.conf");
    let state = dir.0.join("state");
    pair.client.run_in(move || async move {
        let mut cfg = NetworkConfig::default();
        cfg.containers.subnet = "10.66.0.0/24".parse().unwrap();
        cfg.interfaces = vec![InterfaceConfig {
            name: Some(cif.clone()),
            addresses: vec!["10.77.0.2/24".parse().unwrap()],
            ..Default::default()
        }];
        let mut opts = NetOptions::new(&resolv, &state, "nat");
        opts.reserved_ports = vec![80];
        let h = nuvol_net::start(cfg, opts).await.unwrap();
        // Wait for the uplink address.
        for _ in 0..100 {
            if common::run(&["ip", "addr", "show", "dev", &cif]).contains("10.77.0.2/24") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !nft_tables(&host_name).contains("nuvol"),
            "no table before any container"
        );
        let web = h
            .attach_container("web", Ns::File(std::fs::File::open(&ctr_path).unwrap()))
            .await
            .unwrap();
        assert_eq!(web.address.to_string(), "10.66.0.2/24");
        assert!(nft_tables(&host_name).contains("table ip nuvol"));

        // Outbound: upstream has no route to 10.66.0.0/24, so only a
        // masqueraded connection can complete; it sees the uplink address.
        let l = in_netns(up_path.clone(), || {
            TcpListener::bind("10.77.0.1:0").unwrap()
        });
        let port = l.local_addr().unwrap().port();
        let server = serve_once(l, "upstream");
        let got = fetch(ctr_path.clone(), &format!("10.77.0.1:{port}")).unwrap();
        assert_eq!(got, "hello from upstream");
        assert_eq!(
            server.join().unwrap().unwrap().ip().to_string(),
            "10.77.0.2"
        );

        // Published port: upstream → host uplink :18080 → container :8080.
        let ports = [PublishedPort {
            protocol: Protocol::Tcp,
            host_port: 18080,
            container_port: 8080,
        }];
        h.publish("web", &ports).await.unwrap();
        let l = in_netns(ctr_path.clone(), || {
            TcpListener::bind("0.0.0.0:8080").unwrap()
        });
        let server = serve_once(l, "web");
        let got = fetch(up_path.clone(), "10.77.0.2:18080").unwrap();
        assert_eq!(got, "hello from web");
        assert_eq!(
            server.join().unwrap().unwrap().ip().to_string(),
            "10.77.0.1",
            "the container sees the real client"
        );
        let st = h.status();
        let c = st.containers.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(c.published, ports.to_vec());

        // Refused: the agent's own port, a port another container holds,
        // a container that is not attached.
        let own = [PublishedPort {
            protocol: Protocol::Tcp,
            host_port: 80,
            container_port: 80,
        }];
        let e = h.publish("web", &own).await.unwrap_err().to_string();
        assert!(e.contains("80") && e.contains("agent"), "{e}");
        h.attach_container("db", Ns::File(std::fs::File::open(&ctr2_path).unwrap()))
            .await
            .unwrap();
        let e = h.publish("db", &ports).await.unwrap_err().to_string();
        assert!(e.contains("18080") && e.contains("web"), "{e}");
        let e = h.publish("nope", &ports).await.unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        // The refusals changed nothing: still published, still reachable.
        let l = in_netns(ctr_path.clone(), || {
            TcpListener::bind("0.0.0.0:8080").unwrap()
        });
        let server = serve_once(l, "web");
        assert_eq!(
            fetch(up_path.clone(), "10.77.0.2:18080").unwrap(),
            "hello from web"
        );
        server.join().unwrap();

        // Steady state: no writes. Someone flushes our table: put back.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);
        let out = Command::new("ip")
            .args([
                "netns", "exec", &host_name, "nft", "flush", "table", "ip", "nuvol",
            ])
            .status()
            .unwrap();
        assert!(out.success());
        assert_eq!(
            h.reconcile().await.unwrap(),
            1,
            "one batch restores the table"
        );
        let l = in_netns(ctr_path.clone(), || {
            TcpListener::bind("0.0.0.0:8080").unwrap()
        });
        let server = serve_once(l, "web");
        assert_eq!(
            fetch(up_path.clone(), "10.77.0.2:18080").unwrap(),
            "hello from web"
        );
        server.join().unwrap();
        assert_eq!(h.reconcile().await.unwrap(), 0);

        // Unpublish: nothing listens on the host's 18080, so refused.
        h.publish("web", &[]).await.unwrap();
        let e = fetch(up_path.clone(), "10.77.0.2:18080").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

        // Detaching everything removes the table.
        h.detach_container("web").await.unwrap();
        h.detach_container("db").await.unwrap();
        assert!(!nft_tables(&host_name).contains("nuvol"));
        h.shutdown().await;
    });
}
