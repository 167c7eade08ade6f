//! Two nuvol nodes on loopback: services announced by one are found by the
//! other, nearest first, once however many schemes announce them.

use nuvol_catalog::{DiscoveryConfig, DiscoveryHandle, LocalService, ServiceQuery, Source};
use nuvol_gossip::Profile;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn cfg(name: &str, join: Vec<SocketAddr>, services: Vec<LocalService>) -> DiscoveryConfig {
    DiscoveryConfig {
        node_name: format!("{name}-{}", std::process::id()),
        hostname: name.into(),
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        advertise: None,
        join,
        tags: Default::default(),
        zone: "super".into(),
        encrypt_key: None,
        keyring_file: None,
        profile: Profile::Local,
        services,
        cloudy_compat: true,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn services_cross_the_gossip() {
    let a = DiscoveryHandle::start(cfg(
        "cat-a",
        vec![],
        vec![LocalService {
            name: "panel".into(),
            service_type: "_http._tcp".into(),
            port: 8080,
            description: "panel".into(),
        }],
    ))
    .await
    .expect("start a");
    let b = DiscoveryHandle::start(cfg("cat-b", vec![a.gossip().advertise()], vec![]))
        .await
        .expect("start b");
    let q = ServiceQuery {
        service_type: Some("_http._tcp".into()),
        near: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut found = Vec::new();
    while t0.elapsed() < Duration::from_secs(10) {
        found = b.services(&q);
        if found.len() == 1 && found.iter().all(|s| s.service.rtt_estimate_ms.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // one service, seen in both tag schemes
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].sources, [Source::Serf, Source::Cloudy]);
    assert_eq!(
        (found[0].service.name.as_str(), found[0].service.port),
        ("panel", 8080)
    );
    assert_eq!(b.members().len(), 2);
    assert!(b
        .members()
        .iter()
        .all(|m| m.address == "127.0.0.1" && m.port != 0));
    // loopback: TTL 64 arrives as 64 (0 hops); both alive for memberlist too
    assert!(b
        .members()
        .iter()
        .all(|m| m.health == "alive" && m.status == "alive" && m.hops == Some(0)));
    assert!(found
        .iter()
        .all(|s| s.service.health == "alive" && s.service.hops == Some(0)));

    // services from another source (mDNS) merge into the same query: a
    // printer elsewhere is a service of its own, the same service heard
    // at cat-a's address is cat-a's
    let mut printer = found[0].service.clone();
    printer.source = Source::Mdns;
    printer.node = "printer".into();
    printer.name = "Office printer".into();
    printer.addr = "127.0.0.2".parse().ok();
    let mut same = found[0].service.clone();
    same.source = Source::Mdns;
    same.node = "cat-a".into();
    same.name = "panel on cat-a".into();
    b.set_external_services("mdns", vec![printer, same]);
    let merged = b.services(&q);
    assert_eq!(merged.len(), 2, "{merged:?}");
    assert!(merged
        .iter()
        .any(|s| s.sources == [Source::Mdns] && s.service.node == "printer"));
    assert!(merged.iter().any(
        |s| s.sources == [Source::Serf, Source::Cloudy, Source::Mdns] && s.service.name == "panel"
    ));
    b.set_external_services("mdns", Vec::new());
    assert_eq!(b.services(&q).len(), 1);
    a.shutdown();
    b.shutdown();
}
