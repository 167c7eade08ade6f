//! Container bridge + veth: a process in a container namespace reaches the
//! host over `nuvol0`; detach removes the veth.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{in_netns, Netns, TempDir};
use nuvol_config::NetworkConfig;
use nuvol_net::{NetOptions, Netns as Ns};

#[test]
fn container_gets_address_on_bridge_and_reaches_host() {
    let host = Netns::new();
    let ctr = Netns::new();
    let ctr2 = Netns::new();
    let dir = TempDir::new();
    let ctr_path = ctr.path();
    let ctr2_path = ctr2.path();
    let ctr_name = ctr.name.clone();
    let resolv = dir.0.join("resolv.conf");
    let state = dir.0.join("state");
    host.run_in(move || async move {
        let mut cfg = NetworkConfig::default();
        cfg.containers.subnet = "10.66.0.0/24".parse().unwrap();
        let h = nuvol_net::start(cfg, NetOptions::new(&resolv, &state, "c"))
            .await
            .unwrap();
        let f = std::fs::File::open(&ctr_path).unwrap();
        let c = h.attach_container("web", Ns::File(f)).await.unwrap();
        assert_eq!(c.address.to_string(), "10.66.0.2/24");
        assert_eq!(c.gateway.to_string(), "10.66.0.1");
        let c2 = h
            .attach_container("db", Ns::File(std::fs::File::open(&ctr2_path).unwrap()))
            .await
            .unwrap();
        assert_eq!(c2.address.to_string(), "10.66.0.3/24");
        // Same name again: same answer, no new veth.
        let again = h
            .attach_container("web", Ns::File(std::fs::File::open(&ctr_path).unwrap()))
            .await
            .unwrap();
        assert_eq!(again, c);

        let inside = common::run(&["ip", "-n", &ctr_name, "addr", "show", "dev", "eth0"]);
        assert!(inside.contains("inet 10.66.0.2/24"), "{inside}");
        let routes = common::run(&["ip", "-n", &ctr_name, "route"]);
        assert!(
            routes.contains("default via 10.66.0.1 dev eth0"),
            "{routes}"
        );
        let br = common::run(&["ip", "addr", "show", "dev", "nuvol0"]);
        assert!(br.contains("inet 10.66.0.1/24"), "{br}");
        let veth = common::run(&["ip", "link", "show", &c.veth]);
        assert!(veth.contains("master nuvol0"), "{veth}");
        let s = h.status();
        assert_eq!(s.containers.len(), 2);

        // The container connects to a host service on the bridge address.
        let l = TcpListener::bind("10.66.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, peer) = l.accept().unwrap();
            s.write_all(b"hello").unwrap();
            peer.ip().to_string()
        });
        let got = in_netns(ctr_path.clone(), move || {
            let mut s = TcpStream::connect_timeout(
                &format!("10.66.0.1:{port}").parse().unwrap(),
                Duration::from_secs(3),
            )
            .unwrap();
            let mut b = String::new();
            s.read_to_string(&mut b).unwrap();
            b
        });
        assert_eq!(got, "hello");
        assert_eq!(server.join().unwrap(), "10.66.0.2");

        // Steady state: nothing to write.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);

        h.detach_container("web").await.unwrap();
        let links = common::run(&["ip", "link", "show"]);
        assert!(!links.contains(&c.veth), "{links}");
        let inside = common::run(&["ip", "-n", &ctr_name, "link", "show"]);
        assert!(!inside.contains("eth0"), "{inside}");
        assert!(h.detach_container("web").await.is_err());
        // The freed address is handed out again.
        let c3 = h
            .attach_container("web2", Ns::File(std::fs::File::open(&ctr_path).unwrap()))
            .await
            .unwrap();
        assert_eq!(c3.address.to_string(), "10.66.0.2/24");
        h.shutdown().await;
    });
}
