//! Interop with Debian's avahi-daemon: nuvol in one network namespace,
//! Avahi in another, joined by a veth pair. Needs root, `avahi-daemon`,
//! `avahi-utils` and `dbus`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Avahi, Pair};
use nuvol_mdns::{Discovered, Mdns, MdnsConfig, MdnsEvent, MdnsService};

/// nuvol's engine in namespace `ns` on `iface`, with its runtime.
fn start_nuvol(ns: &str, iface: &str, host: &str) -> (tokio::runtime::Runtime, Mdns) {
    let (iface, host) = (iface.to_string(), host.to_string());
    Pair::in_ns(ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let m = rt
            .block_on(async {
                Mdns::start(MdnsConfig {
                    hostname: host,
                    interfaces: Some(vec![iface]),
                })
            })
            .expect("start mdns");
        (rt, m)
    })
}

fn svc(instance: &str, t: &str, port: u16, txt: &[(&str, &str)]) -> MdnsService {
    MdnsService {
        instance: instance.into(),
        service_type: t.into(),
        port,
        txt: txt
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn wait_services(
    m: &Mdns,
    secs: u64,
    pred: impl Fn(&[Discovered]) -> bool,
) -> Option<Vec<Discovered>> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        let s = m.services();
        if pred(&s) {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn host(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

#[test]
fn avahi_browse_lists_nuvol_service_and_drops_it_after_goodbye() {
    let p = Pair::new();
    let av = Avahi::start(&p.a, &p.va, &host("avahi1"));
    let nuvol_host = host("nuvol1");
    let (rt, m) = start_nuvol(&p.b, &p.vb, &nuvol_host);
    m.publish(svc(
        "nuvol web",
        "_http._tcp",
        8080,
        &[("path", "/panel"), ("v", "1")],
    ))
    .unwrap();

    let found = av.wait_browse(20, |b| {
        b.iter().any(|l| l.len() >= 10 && l[3] == "nuvol web")
    });
    let lines = found.expect("avahi-browse never listed nuvol's service");
    let l = lines.iter().find(|l| l[3] == "nuvol web").unwrap();
    assert_eq!(l[4], "_http._tcp");
    assert_eq!(l[6], format!("{nuvol_host}.local"));
    assert_eq!(l[7], p.ip_b);
    assert_eq!(l[8], "8080");
    assert!(
        l[9].contains("\"path=/panel\"") && l[9].contains("\"v=1\""),
        "TXT: {}",
        l[9]
    );

    // goodbye: Avahi forgets the service within about a second
    let t = Instant::now();
    rt.block_on(m.shutdown());
    let gone = av.wait_browse(10, |b| {
        !b.iter().any(|l| l.len() >= 4 && l[3] == "nuvol web")
    });
    assert!(
        gone.is_some(),
        "avahi still lists the service after goodbye"
    );
    eprintln!("goodbye honoured by avahi after {:?}", t.elapsed());
}

#[test]
fn nuvol_discovers_avahi_published_service_and_survives_garbage() {
    let p = Pair::new();
    let mut av = Avahi::start(&p.a, &p.va, &host("avahi2"));
    let (rt, m) = start_nuvol(&p.b, &p.vb, &host("nuvol2"));
    let mut ev = m.events();
    av.publish(
        "Office printer",
        "_ipp._tcp",
        631,
        &["rp=printers/office", "color=T"],
    );

    let s = wait_services(&m, 20, |s| s.iter().any(|d| d.instance == "Office printer"))
        .expect("nuvol never discovered the avahi-published service");
    let d = s.iter().find(|d| d.instance == "Office printer").unwrap();
    assert_eq!(d.service_type, "_ipp._tcp");
    assert_eq!(d.port, 631);
    assert_eq!(d.host, format!("{}.local", host("avahi2")));
    assert_eq!(
        d.addresses,
        vec![p.ip_a.parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(d.txt.get("rp").map(String::as_str), Some("printers/office"));
    assert_eq!(d.interface, p.vb);
    assert!(
        d.ttl_left > Duration::from_secs(60),
        "ttl_left {:?}",
        d.ttl_left
    );
    assert_eq!(d.hops, Some(0), "same link: TTL 255 arrives as 255");
    let c = nuvol_mdns::to_catalog(d);
    assert_eq!(c.port, 631);
    assert_eq!(c.hops, Some(0));
    let added = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match ev.recv().await {
                    Ok(MdnsEvent::Added(d)) if d.instance == "Office printer" => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false)
    });
    assert!(added, "no Added event");

    // malformed packets from the other namespace are dropped and counted
    let (ip_a, ip_b) = (p.ip_a.clone(), p.ip_b.clone());
    Pair::in_ns(&p.a, move || {
        let s = std::net::UdpSocket::bind((ip_a.as_str(), 0)).unwrap();
        let dst = (ip_b.as_str(), 5353);
        for junk in [
            &b"\x00\x00\x84\x00\x00\x01"[..],
            b"\x00\x00\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00\xc0\x0c",
            &[0xff; 9100],
        ] {
            let _ = s.send_to(junk, dst);
        }
    });
    let t = Instant::now();
    while m.stats().malformed < 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m.stats().malformed >= 2, "stats: {:?}", m.stats());

    // avahi-publish stopping sends a goodbye: nuvol drops the service
    drop(av);
    let gone = wait_services(&m, 10, |s| {
        !s.iter().any(|d| d.instance == "Office printer")
    });
    assert!(gone.is_some(), "service still listed after avahi's goodbye");
    rt.block_on(m.shutdown());
}

#[test]
fn name_conflict_with_avahi_makes_nuvol_rename() {
    let p = Pair::new();
    let mut av = Avahi::start(&p.a, &p.va, &host("avahi3"));
    let (rt, m) = start_nuvol(&p.b, &p.vb, &host("nuvol3"));
    av.publish("Shared files", "_smb._tcp", 445, &[]);
    wait_services(&m, 20, |s| s.iter().any(|d| d.instance == "Shared files"))
        .expect("avahi's service not seen");

    m.publish(svc("Shared files", "_smb._tcp", 1445, &[]))
        .unwrap();
    let t = Instant::now();
    while !m
        .published()
        .iter()
        .any(|s| s.instance == "Shared files (2)")
        && t.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        m.published()[0].instance,
        "Shared files (2)",
        "nuvol did not rename"
    );
    assert!(m.stats().conflicts >= 1);
    let b = av
        .wait_browse(20, |b| {
            b.iter()
                .any(|l| l.len() >= 10 && l[3] == "Shared files (2)" && l[8] == "1445")
        })
        .expect("avahi does not list the renamed service");
    // Avahi's own instance is untouched
    assert!(b.iter().any(|l| l[3] == "Shared files" && l[8] == "445"));
    rt.block_on(m.shutdown());
}

#[test]
fn host_name_conflict_with_avahi_makes_nuvol_rename_host() {
    let p = Pair::new();
    let name = host("samehost");
    let av = Avahi::start(&p.a, &p.va, &name);

    // Avahi::start returns once avahi has probed and announced its host name
    let (rt, m) = start_nuvol(&p.b, &p.vb, &name);
    let t = Instant::now();
    while m.hostname() == name && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(m.hostname(), format!("{name}-2"));
    m.publish(svc("web", "_http._tcp", 80, &[])).unwrap();
    let b = av
        .wait_browse(20, |b| b.iter().any(|l| l.len() >= 10 && l[3] == "web"))
        .expect("avahi does not list the service of the renamed host");
    let l = b.iter().find(|l| l[3] == "web").unwrap();
    assert_eq!(l[6], format!("{name}-2.local"));
    assert_eq!(l[7], p.ip_b);
    rt.block_on(m.shutdown());
}

#[test]
fn address_change_is_announced_to_avahi() {
    let p = Pair::new();
    let av = Avahi::start(&p.a, &p.va, &host("avahi5"));
    let (rt, m) = start_nuvol(&p.b, &p.vb, &host("nuvol5"));
    m.publish(svc("moving", "_http._tcp", 81, &[])).unwrap();
    av.wait_browse(20, |b| {
        b.iter()
            .any(|l| l.len() >= 10 && l[3] == "moving" && l[7] == p.ip_b)
    })
    .expect("avahi does not list the service");
    // a new address replaces the old one (as after a DHCP change)
    let new_ip = p
        .ip_b
        .rsplit_once('.')
        .map(|(n, _)| format!("{n}.77"))
        .unwrap();
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip")
            .args(["-n", &p.b, "addr"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success());
    };
    // (deleting the primary address first: secondaries would go with it)
    ip(&["del", &format!("{}/24", p.ip_b), "dev", &p.vb]);
    ip(&["add", &format!("{new_ip}/24"), "dev", &p.vb]);
    let t = Instant::now();
    av.wait_browse(30, |b| {
        b.iter()
            .any(|l| l.len() >= 10 && l[3] == "moving" && l[7] == new_ip)
    })
    .expect("avahi did not learn the new address");
    eprintln!("new address seen by avahi after {:?}", t.elapsed());
    rt.block_on(m.shutdown());
}

#[test]
fn all_interfaces_mode_picks_up_an_interface_configured_later() {
    let p = Pair::new();
    let av = Avahi::start(&p.a, &p.va, &host("avahi6"));
    // nuvol starts before the LAN has an address (as at boot, before DHCP)
    let st = std::process::Command::new("ip")
        .args([
            "-n",
            &p.b,
            "addr",
            "del",
            &format!("{}/24", p.ip_b),
            "dev",
            &p.vb,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let h = host("nuvol6");
    let (rt, m) = Pair::in_ns(&p.b, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let m = rt
            .block_on(async {
                Mdns::start(MdnsConfig {
                    hostname: h,
                    interfaces: None,
                })
            })
            .expect("start without addresses");
        (rt, m)
    });
    m.publish(svc("late", "_http._tcp", 82, &[("a", "b")]))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let st = std::process::Command::new("ip")
        .args([
            "-n",
            &p.b,
            "addr",
            "add",
            &format!("{}/24", p.ip_b),
            "dev",
            &p.vb,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    av.wait_browse(30, |b| {
        b.iter()
            .any(|l| l.len() >= 10 && l[3] == "late" && l[7] == p.ip_b && l[8] == "82")
    })
    .expect("avahi never listed the service of the late interface");
    eprintln!("late interface served after {:?}", t.elapsed());
    rt.block_on(m.shutdown());
}

#[test]
fn nuvol_defends_its_announced_name_against_avahi() {
    let p = Pair::new();
    let mut av = Avahi::start(&p.a, &p.va, &host("avahi7"));
    let (rt, m) = start_nuvol(&p.b, &p.vb, &host("nuvol7"));
    m.publish(svc("Defended", "_http._tcp", 8007, &[])).unwrap();
    av.wait_browse(20, |b| {
        b.iter()
            .any(|l| l.len() >= 10 && l[3] == "Defended" && l[8] == "8007")
    })
    .expect("avahi does not list nuvol's service");
    // avahi probes the same name, nuvol answers, avahi-publish picks another name
    av.publish("Defended", "_http._tcp", 9007, &[]);
    let b = av
        .wait_browse(20, |b| {
            b.iter().any(|l| {
                l.len() >= 10
                    && l[3] != "Defended"
                    && l[3].starts_with("Defended")
                    && l[8] == "9007"
            })
        })
        .expect("avahi did not rename its clashing service");
    assert!(
        b.iter().any(|l| l[3] == "Defended" && l[8] == "8007"),
        "nuvol lost its name: {b:?}"
    );
    assert_eq!(m.published()[0].instance, "Defended");
    assert_eq!(m.stats().conflicts, 0);
    rt.block_on(m.shutdown());
}

/// IPv6 only (no IPv4 address on the link, Avahi with `use-ipv4=no`):
/// Avahi lists nuvol's service with an IPv6 address, and nuvol's catalog
/// lists Avahi's with one.
#[test]
fn ipv6_only_link_interop_with_avahi() {
    let p = Pair::new_v6();
    let mut av = Avahi::start_v6(&p.a, &p.va, &host("avahi6"));
    let nuvol_host = host("nuvol6");
    let (rt, m) = start_nuvol(&p.b, &p.vb, &nuvol_host);
    m.publish(svc("nuvol six", "_http._tcp", 8086, &[("v", "6")]))
        .unwrap();
    av.publish("Avahi six", "_ipp._tcp", 631, &["rp=six"]);

    let lines = av
        .wait_browse(20, |b| {
            b.iter().any(|l| l.len() >= 10 && l[3] == "nuvol six")
        })
        .expect("avahi-browse never listed nuvol's service over IPv6");
    let l = lines.iter().find(|l| l[3] == "nuvol six").unwrap();
    assert_eq!(l[2], "IPv6", "{l:?}");
    assert_eq!(l[6], format!("{nuvol_host}.local"));
    let a: std::net::Ipv6Addr = l[7].parse().expect("an IPv6 address");
    assert!(
        a == p.ip_b.parse::<std::net::Ipv6Addr>().unwrap() || a.is_unicast_link_local(),
        "address {a}"
    );
    assert_eq!(l[8], "8086");

    let s = wait_services(&m, 20, |s| {
        s.iter()
            .any(|d| d.instance == "Avahi six" && !d.addresses.is_empty())
    })
    .expect("nuvol never discovered avahi's service over IPv6");
    let d = s.iter().find(|d| d.instance == "Avahi six").unwrap();
    assert_eq!(d.port, 631);
    assert_eq!(d.txt.get("rp").map(String::as_str), Some("six"));
    assert_eq!(d.hops, Some(0), "hop limit 255 on the same link");
    let c = nuvol_mdns::to_catalog(d);
    assert!(
        matches!(c.addr, Some(std::net::IpAddr::V6(_))),
        "catalog address {:?}",
        c.addr
    );
    assert_eq!(c.hops, Some(0));
    rt.block_on(m.shutdown());
}

/// A browser that is already running (as in a file manager's network view)
/// sees a service published later within about the probe time, and drops
/// it on nuvol's goodbye within about Avahi's one-second hold.
#[test]
fn running_avahi_browser_follows_publish_and_goodbye() {
    let p = Pair::new();
    let av = Avahi::start(&p.a, &p.va, &host("avahi-w"));
    let watch = av.watch();
    let (rt, m) = start_nuvol(&p.b, &p.vb, &host("nuvol-w"));
    // Let both sides settle: host name probed, the browser's first queries done.
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    m.publish(svc("Late Service", "_late._tcp", 7001, &[("k", "v")]))
        .unwrap();
    let added = watch
        .wait("=", "Late Service", t, 20)
        .expect("the running browser never resolved the service");
    assert!(added < Duration::from_secs(3), "{added:?}");
    let t = Instant::now();
    m.unpublish("Late Service", "_late._tcp").unwrap();
    let gone = watch
        .wait("-", "Late Service", t, 20)
        .expect("the running browser never dropped the service");
    assert!(gone < Duration::from_secs(3), "{gone:?}");
    rt.block_on(m.shutdown());
}
