//! Two nuvol nodes on loopback: services announced by one are found by the
//! other, nearest first, in both tag schemes.

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
        if found.len() == 2 && found.iter().all(|s| s.rtt_estimate_ms.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found
        .iter()
        .any(|s| s.source == Source::Serf && s.port == 8080));
    assert!(found
        .iter()
        .any(|s| s.source == Source::Cloudy && s.port == 8080));
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
        .all(|s| s.health == "alive" && s.hops == Some(0)));

    // services from another source (mDNS) merge into the same query
    let mut m = found[0].clone();
    m.source = Source::Mdns;
    m.node = "printer".into();
    b.set_external_services("mdns", vec![m]);
    let merged = b.services(&q);
    assert_eq!(merged.len(), 3, "{merged:?}");
    assert!(merged
        .iter()
        .any(|s| s.source == Source::Mdns && s.node == "printer"));
    b.set_external_services("mdns", Vec::new());
    assert_eq!(b.services(&q).len(), 2);
    a.shutdown();
    b.shutdown();
}
