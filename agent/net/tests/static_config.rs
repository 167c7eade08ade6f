//! Static IPv4 + IPv6 config, extra routes, MTU, no-op re-apply, bad
//! config refused, and repair after someone else removes state.

mod common;

use std::time::Duration;

use common::{wait_for, Pair, TempDir};
use nuvol_config::{InterfaceConfig, NetworkConfig, RouteConfig};
use nuvol_net::NetOptions;

fn static_cfg(ifname: &str) -> NetworkConfig {
    NetworkConfig {
        dns: vec!["192.0.2.53".parse().unwrap()],
        interfaces: vec![InterfaceConfig {
            name: Some(ifname.to_string()),
            addresses: vec![
                "10.77.0.2/24".parse().unwrap(),
                "fd77::2/64".parse().unwrap(),
            ],
            gateway: Some("10.77.0.1".parse().unwrap()),
            gateway6: Some("fd77::1".parse().unwrap()),
            mtu: Some(1400),
            routes: vec![RouteConfig {
                to: "10.99.0.0/16".parse().unwrap(),
                via: "10.77.0.254".parse().unwrap(),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn static_config_applied_exactly_and_reapply_is_a_no_op() {
    let pair = Pair::new();
    let dir = TempDir::new();
    let cif = pair.cif.clone();
    let ns = pair.client.name.clone();
    let resolv = dir.0.join("resolv.conf");
    let state = dir.0.join("state");
    pair.client.run_in(move || async move {
        let h = nuvol_net::start(static_cfg(&cif), NetOptions::new(&resolv, &state, "s"))
            .await
            .unwrap();
        // Converges (IPv6 routes may need DAD to finish on the address).
        let ip4 = || common::run(&["ip", "-n", &ns, "-4", "route", "show"]);
        let ip6 = || common::run(&["ip", "-n", &ns, "-6", "route", "show"]);
        let want4 = [
            format!("default via 10.77.0.1 dev {cif} proto static"),
            format!("10.99.0.0/16 via 10.77.0.254 dev {cif} proto static"),
        ];
        let want6 = format!("default via fd77::1 dev {cif} proto static");
        let mut converged = false;
        for _ in 0..100 {
            let _ = h.reconcile().await;
            let (r4, r6) = (ip4(), ip6());
            if want4.iter().all(|w| r4.contains(w.as_str())) && r6.contains(&want6) {
                converged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            converged,
            "v4:\n{}\nv6:\n{}\n{:#?}",
            ip4(),
            ip6(),
            h.status()
        );
        let addrs = common::run(&["ip", "-n", &ns, "addr", "show", "dev", &cif]);
        assert!(addrs.contains("inet 10.77.0.2/24"), "{addrs}");
        assert!(addrs.contains("inet6 fd77::2/64"), "{addrs}");
        assert!(addrs.contains("mtu 1400"), "{addrs}");
        assert!(addrs.contains(",UP"), "{addrs}");
        let rc = std::fs::read_to_string(&resolv).unwrap();
        assert_eq!(
            rc.lines().filter(|l| l.starts_with("nameserver")).count(),
            1
        );
        assert!(rc.contains("nameserver 192.0.2.53"));

        // Nothing changed: zero netlink writes, for reconcile and re-apply.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(h.reconcile().await.unwrap(), 0);
        let before = h.netlink_writes();
        h.apply(static_cfg(&cif)).await.unwrap();
        assert_eq!(h.netlink_writes(), before);

        // Bad configs are refused with the key named; nothing changes.
        let mut bad = static_cfg(&cif);
        bad.interfaces[0].name = Some("nosuch0".into());
        let e = h.apply(bad).await.unwrap_err().to_string();
        assert!(e.contains("network.interface[0].name"), "{e}");
        let mut bad = static_cfg(&cif);
        bad.interfaces.push(InterfaceConfig {
            name: Some("lo".into()),
            addresses: vec!["10.77.0.9/32".parse().unwrap()],
            ..Default::default()
        });
        let e = h.apply(bad).await.unwrap_err().to_string();
        assert!(e.contains("overlaps"), "{e}");
        // A config the kernel refuses (gateway not on any link) is rolled back.
        let mut bad = static_cfg(&cif);
        bad.interfaces[0].routes[0].via = "192.0.2.1".parse().unwrap();
        let e = h.apply(bad).await.unwrap_err().to_string();
        assert!(e.contains("previous"), "{e}");
        assert!(ip4().contains(&want4[1]), "{}", ip4());
        assert!(h.status().config_error.is_some());
        assert_eq!(h.reconcile().await.unwrap(), 0);

        // Someone else removes an address and the link goes down: repaired
        // from the netlink events alone.
        common::run(&["ip", "addr", "del", "10.77.0.2/24", "dev", &cif]);
        common::run(&["ip", "link", "set", &cif, "down"]);
        let ok = wait_for(Duration::from_secs(2), || {
            let r4 = ip4();
            want4.iter().all(|w| r4.contains(w.as_str()))
                && common::run(&["ip", "addr", "show", "dev", &cif]).contains("10.77.0.2/24")
        })
        .await;
        assert!(ok, "{}", ip4());

        // A new config replaces the old exactly.
        let mut next = static_cfg(&cif);
        next.interfaces[0].addresses = vec!["10.77.0.3/24".parse().unwrap()];
        next.interfaces[0].gateway6 = None;
        next.interfaces[0].routes.clear();
        h.apply(next).await.unwrap();
        let addrs = common::run(&["ip", "addr", "show", "dev", &cif]);
        assert!(
            addrs.contains("10.77.0.3/24") && !addrs.contains("10.77.0.2/24"),
            "{addrs}"
        );
        assert!(!addrs.contains("fd77::2"), "{addrs}");
        assert!(!ip4().contains("10.99.0.0/16"), "{}", ip4());
        assert!(!ip6().contains("default via fd77::1"), "{}", ip6());
        h.shutdown().await;
    });
}
