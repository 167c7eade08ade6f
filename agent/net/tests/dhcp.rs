//! DHCPv4 against a real dnsmasq across a veth between two namespaces.

mod common;

use std::time::{Duration, Instant};

use common::{wait_for, Dnsmasq, Pair, TempDir};
use nuvol_config::{InterfaceConfig, NetworkConfig};
use nuvol_net::{DhcpState, NetHandle, NetOptions};

fn dhcp_cfg(ifname: &str) -> NetworkConfig {
    NetworkConfig {
        interfaces: vec![InterfaceConfig {
            name: Some(ifname.to_string()),
            dhcp: Some(true),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn lease_state(h: &NetHandle, ifname: &str) -> Option<(DhcpState, Option<nuvol_net::Lease>)> {
    let s = h.status();
    let i = s.interfaces.iter().find(|i| i.name == ifname)?;
    let d = i.dhcp.as_ref()?;
    Some((d.state, d.lease.clone()))
}

fn bound(h: &NetHandle, ifname: &str) -> Option<nuvol_net::Lease> {
    match lease_state(h, ifname) {
        Some((DhcpState::Bound, Some(l))) => Some(l),
        _ => None,
    }
}

#[test]
fn lease_renew_rebind_release_with_dnsmasq() {
    let pair = Pair::new();
    let dir = TempDir::new();
    let mut server = Some(Dnsmasq::start(&pair, &dir, 3, 6));
    let cif = pair.cif.clone();
    let resolv = dir.0.join("resolv.conf");
    let state = dir.0.join("state");
    let leases = dir.0.join("dnsmasq.leases");
    let client_ns = pair.client.name.clone();
    let (tx, rx) = std::sync::mpsc::channel::<&'static str>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
    let resolv2 = resolv.clone();
    let t = std::thread::spawn({
        let path = pair.client.path();
        move || {
            let f = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: valid fd, affects this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opts = NetOptions::new(&resolv2, &state, "nvtest-client");
                let h = nuvol_net::start(dhcp_cfg(&cif), opts).await.unwrap();
                // Lease obtained.
                assert!(
                    wait_for(Duration::from_secs(15), || bound(&h, &cif).is_some()).await,
                    "no lease: {:?}",
                    h.status()
                );
                let l = bound(&h, &cif).unwrap();
                assert_eq!(l.address.prefix_len(), 24);
                assert!(l.address.addr().octets()[..3] == [10, 77, 0]);
                // Address and default route in the kernel.
                let ok = wait_for(Duration::from_secs(3), || {
                    let s = h.status();
                    let i = s.interfaces.iter().find(|i| i.name == cif).unwrap();
                    i.addresses.contains(&l.address.to_string())
                        && s.routes.iter().any(|r| {
                            r.destination == "0.0.0.0/0"
                                && r.gateway == Some("10.77.0.1".parse().unwrap())
                                && r.protocol == "dhcp"
                        })
                })
                .await;
                assert!(ok, "{:#?}", h.status());
                let rc = std::fs::read_to_string(&resolv2).unwrap();
                assert!(rc.contains("nameserver 10.77.0.53\n"), "{rc}");
                assert!(rc.contains("search nvtest\n"), "{rc}");
                // Renew at T1 (3 s): a fresh ACK moves `obtained`.
                let first = l.obtained;
                assert!(
                    wait_for(Duration::from_secs(8), || bound(&h, &cif)
                        .is_some_and(|n| n.obtained > first && n.address == l.address))
                    .await,
                    "no renewal: {:?}",
                    lease_state(&h, &cif)
                );
                // Server gone: renew fails, rebinding starts after T2.
                tx.send("stop").unwrap();
                assert!(
                    wait_for(Duration::from_secs(12), || matches!(
                        lease_state(&h, &cif),
                        Some((DhcpState::Rebinding, Some(_)))
                    ))
                    .await,
                    "no rebinding: {:?}",
                    lease_state(&h, &cif)
                );
                // The address stays while the lease is valid.
                let s = h.status();
                let i = s.interfaces.iter().find(|i| i.name == cif).unwrap();
                assert!(i.addresses.contains(&l.address.to_string()));
                // Server back: rebinding succeeds, same address.
                tx.send("start").unwrap();
                back_rx.recv().unwrap();
                assert!(
                    wait_for(Duration::from_secs(20), || bound(&h, &cif)
                        .is_some_and(|n| n.address == l.address))
                    .await,
                    "not bound again: {:?}",
                    lease_state(&h, &cif)
                );
                // A no-change reconcile writes nothing.
                assert_eq!(h.reconcile().await.unwrap(), 0);
                h.shutdown().await;
                l
            })
        }
    });
    while let Ok(cmd) = rx.recv_timeout(Duration::from_secs(60)) {
        match cmd {
            "stop" => {
                if let Some(s) = server.take() {
                    s.stop();
                }
            }
            "start" => {
                server = Some(Dnsmasq::start(&pair, &dir, 3, 6));
                back_tx.send(()).unwrap();
            }
            _ => {}
        }
    }
    let l = t.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    // RELEASE reached dnsmasq: the lease is gone from its file.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = std::fs::read_to_string(&leases).unwrap_or_default();
        if !text.contains(&l.address.addr().to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "lease not released: {text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = client_ns;
}

#[test]
fn carrier_flap_reapplies_within_two_seconds() {
    let pair = Pair::new();
    let dir = TempDir::new();
    let _server = Dnsmasq::start(&pair, &dir, 60, 100);
    let cif = pair.cif.clone();
    let resolv = dir.0.join("resolv.conf");
    let state = dir.0.join("state");
    let server_ns = pair.server.name.clone();
    let sif = pair.sif.clone();
    let elapsed = pair.client.run_in(move || async move {
        let h = nuvol_net::start(dhcp_cfg(&cif), NetOptions::new(&resolv, &state, "flap"))
            .await
            .unwrap();
        assert!(wait_for(Duration::from_secs(15), || bound(&h, &cif).is_some()).await);
        let l = bound(&h, &cif).unwrap();
        common::run(&["ip", "-n", &server_ns, "link", "set", &sif, "down"]);
        assert!(
            wait_for(Duration::from_secs(3), || matches!(
                lease_state(&h, &cif),
                Some((DhcpState::NoCarrier, _))
            ))
            .await
        );
        // Meanwhile someone removes the address and the default route goes
        // with it.
        common::run(&["ip", "addr", "del", &l.address.to_string(), "dev", &cif]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        common::run(&["ip", "-n", &server_ns, "link", "set", &sif, "up"]);
        let ok = wait_for(Duration::from_secs(5), || {
            let s = h.status();
            let i = s.interfaces.iter().find(|i| i.name == cif).unwrap();
            bound(&h, &cif).is_some_and(|n| n.obtained > l.obtained || n.address == l.address)
                && i.carrier
                && i.addresses.contains(&l.address.to_string())
                && s.routes.iter().any(|r| r.destination == "0.0.0.0/0")
        })
        .await;
        let elapsed = t0.elapsed();
        assert!(ok, "{:#?}", h.status());
        // The lease was confirmed by a new exchange (INIT-REBOOT).
        let n = bound(&h, &cif).unwrap();
        assert!(n.obtained >= l.obtained);
        h.shutdown().await;
        elapsed
    });
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}
