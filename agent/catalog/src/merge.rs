//! One catalog entry per service. A nuvol box announces each service three
//! ways: its `svc:` tag, Cloudy's `services` tag (both over Serf) and mDNS.
//! Each announcement is a *sighting*; the sightings of the same node,
//! service type and port are one service, listed once with its sources.
//!
//! Which sightings are the same service:
//! - `svc:` and Cloudy sightings: same member (node name), type and port;
//! - an mDNS sighting joins the gossip service of the same type and port
//!   whose node is the mDNS host (the SRV target's first label, or Cloudy's
//!   `m` host), else the only one at the mDNS address; mDNS sightings that
//!   join none are merged among themselves by host, type and port.
//!
//! The name: the announce's instance name when one was given (the mDNS
//! instance, else Cloudy's description, whose blanks nuvol wrote as `_`),
//! else the service's own name. Announcers' made-up names are not names: the
//! default instance `<name> on <host>` (Cloudy: `<name>_on_<host>`) gives
//! `<name>`, and a nuvol box's second, third ... announce of one bundle
//! (`svc:etcd-2`) gives the bundle's name when the same node also has
//! `etcd`. Health, RTT, hops and loss are the gossip member's (mDNS only
//! when gossip did not see the service).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{Service, Source};

/// One service as the catalog lists it: its sightings merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogService {
    /// the merged service; `source` is the first of `sources`
    #[serde(flatten)]
    pub service: Service,
    /// every scheme it was seen through, in the order serf, cloudy, mdns
    pub sources: Vec<Source>,
}

/// A service as one announcement tells it, with the host name the
/// announcement names (Cloudy's `m` or the mDNS SRV target, first label),
/// which default instance names end in.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub service: Service,
    pub host: Option<String>,
}

impl Sighting {
    /// A sighting without a host name of its own (`svc:` tags).
    pub fn new(service: Service) -> Sighting {
        Sighting {
            service,
            host: None,
        }
    }
}

/// A name and whether an announcer chose it (an instance name) or it is
/// the service's own name (which index suffixes are taken from).
#[derive(Debug, Clone, PartialEq)]
enum Named {
    Instance(String),
    Own(String),
}

/// Merge sightings into one entry per service, in the order the services
/// were first seen.
pub fn merge(sightings: Vec<Sighting>) -> Vec<CatalogService> {
    let (gossip, mdns): (Vec<Sighting>, Vec<Sighting>) = sightings
        .into_iter()
        .partition(|s| s.service.source != Source::Mdns);
    let mut groups: Vec<Vec<Sighting>> = Vec::new();
    let mut by_key: BTreeMap<(String, String, u16), usize> = BTreeMap::new();
    for s in gossip {
        let key = (
            s.service.node.clone(),
            s.service.service_type.clone(),
            s.service.port,
        );
        match by_key.get(&key) {
            Some(&i) => groups[i].push(s),
            None => {
                by_key.insert(key, groups.len());
                groups.push(vec![s]);
            }
        }
    }
    let n_gossip = groups.len();
    let mut mdns_key: BTreeMap<(String, String, u16), usize> = BTreeMap::new();
    for s in mdns {
        let same = |g: &&Vec<Sighting>| {
            g[0].service.service_type == s.service.service_type
                && g[0].service.port == s.service.port
        };
        let host = s.host.as_deref().unwrap_or(&s.service.node);
        let by_host = groups[..n_gossip].iter().position(|g| {
            same(&g)
                && g.iter()
                    .any(|x| x.service.node == host || x.host.as_deref() == Some(host))
        });
        let by_addr = || {
            let at: Vec<usize> = groups[..n_gossip]
                .iter()
                .enumerate()
                .filter(|(_, g)| {
                    same(g)
                        && s.service.addr.is_some()
                        && g.iter().any(|x| x.service.addr == s.service.addr)
                })
                .map(|(i, _)| i)
                .collect();
            (at.len() == 1).then(|| at[0])
        };
        if let Some(i) = by_host.or_else(by_addr) {
            groups[i].push(s);
            continue;
        }
        let key = (
            host.to_string(),
            s.service.service_type.clone(),
            s.service.port,
        );
        match mdns_key.get(&key) {
            Some(&i) => groups[i].push(s),
            None => {
                mdns_key.insert(key, groups.len());
                groups.push(vec![s]);
            }
        }
    }
    let named: Vec<Named> = groups.iter().map(|g| name_of(g)).collect();
    // the services' own names on each node, for `etcd-2` → `etcd`
    let mut own: BTreeSet<(String, String)> = BTreeSet::new();
    for (g, n) in groups.iter().zip(&named) {
        if let Named::Own(x) = n {
            own.insert((node_of(g).to_string(), x.clone()));
        }
    }
    groups
        .into_iter()
        .zip(named)
        .map(|(g, n)| {
            let name = match n {
                Named::Instance(x) => x,
                Named::Own(x) => match index_base(&x) {
                    Some(base) if own.contains(&(node_of(&g).to_string(), base.to_string())) => {
                        base.to_string()
                    }
                    _ => x,
                },
            };
            combine(g, name)
        })
        .collect()
}

/// The node a group is listed under: the gossip member's name if gossip
/// saw it, else the mDNS host.
fn node_of(g: &[Sighting]) -> &str {
    &g[0].service.node
}

/// `etcd-2` → `etcd` (a nuvol box's later announces of one bundle are
/// `<bundle>-2`, `-3` ...); `None` for names without such a suffix.
fn index_base(name: &str) -> Option<&str> {
    let (base, n) = name.rsplit_once('-')?;
    let n: u32 = n.parse().ok()?;
    (n >= 2 && !base.is_empty()).then_some(base)
}

/// `x` when `name` is `x<sep><host>` for one of `hosts`.
fn strip_host<'a>(name: &'a str, sep: &str, hosts: &[&str]) -> Option<&'a str> {
    hosts.iter().find_map(|h| {
        let x = name.strip_suffix(h)?.strip_suffix(sep)?;
        (!x.is_empty()).then_some(x)
    })
}

/// The group's name (see the module documentation).
fn name_of(g: &[Sighting]) -> Named {
    let mut hosts: Vec<&str> = vec![node_of(g)];
    hosts.extend(g.iter().filter_map(|s| s.host.as_deref()));
    let serf: Option<&str> = g
        .iter()
        .find(|s| s.service.source == Source::Serf)
        .map(|s| s.service.name.as_str());
    // a name an announcer filled in from the service's own name
    let own_name = |x: &str, s: &Sighting| {
        Some(x) == serf || s.service.txt.get("name").map(String::as_str) == Some(x)
    };
    let (mut mdns_instance, mut cloudy_instance, mut fallback) = (None, None, None);
    for s in g {
        let n = s.service.name.as_str();
        match s.service.source {
            Source::Serf => {}
            Source::Cloudy => match strip_host(n, "_on_", &hosts) {
                Some(x) => {
                    fallback.get_or_insert(x.to_string());
                }
                None if own_name(n, s) => {}
                // nuvol wrote the instance's blanks as `_` (avahi-ps does)
                None if serf.is_some() => {
                    cloudy_instance.get_or_insert(n.replace('_', " "));
                }
                None => {
                    cloudy_instance.get_or_insert(n.to_string());
                }
            },
            Source::Mdns => match strip_host(n, " on ", &hosts) {
                Some(x) => {
                    fallback.get_or_insert(x.to_string());
                }
                None if own_name(n, s) => {
                    fallback.get_or_insert(n.to_string());
                }
                None => {
                    mdns_instance.get_or_insert(n.to_string());
                }
            },
        }
    }
    if let Some(x) = mdns_instance.or(cloudy_instance) {
        return Named::Instance(x);
    }
    Named::Own(
        serf.map(str::to_string)
            .or(fallback)
            .unwrap_or_else(|| g[0].service.name.clone()),
    )
}

/// One service from its sightings: the gossip member's view first (health,
/// RTT, zone), the address of the `svc:` tag, else Cloudy's, else mDNS's;
/// TXT from Cloudy, then mDNS (which wins on the same key).
fn combine(mut g: Vec<Sighting>, name: String) -> CatalogService {
    g.sort_by_key(|s| s.service.source);
    let mut sources: Vec<Source> = g.iter().map(|s| s.service.source).collect();
    sources.dedup();
    let mut out = g[0].service.clone();
    out.name = name;
    out.source = sources[0];
    out.addr = g.iter().find_map(|s| s.service.addr);
    out.hops = out.hops.or_else(|| g.iter().find_map(|s| s.service.hops));
    let mut txt = BTreeMap::new();
    for s in &g {
        txt.extend(s.service.txt.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out.txt = txt;
    CatalogService {
        service: out,
        sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn seen(
        source: Source,
        node: &str,
        name: &str,
        ty: &str,
        port: u16,
        host: Option<&str>,
    ) -> Sighting {
        Sighting {
            service: Service {
                name: name.into(),
                service_type: ty.into(),
                node: node.into(),
                zone: if source == Source::Mdns {
                    String::new()
                } else {
                    "north".into()
                },
                addr: "10.0.0.7".parse::<IpAddr>().ok(),
                overlay_addr: None,
                port,
                txt: BTreeMap::new(),
                source,
                healthy: true,
                health: "alive",
                rtt_estimate_ms: (source != Source::Mdns).then_some(1.5),
                rtt_ms: None,
                hops: if source == Source::Mdns {
                    Some(0)
                } else {
                    None
                },
                loss: None,
            },
            host: host.map(str::to_string),
        }
    }

    /// What a nuvol box `box1` (node `box1`) with web, syncthing (two
    /// announces, the second with instance "Syncthing GUI") and etcd (two
    /// announces) sends: nine sightings per scheme pair, plus mDNS.
    fn box1() -> Vec<Sighting> {
        use Source::*;
        let h = Some("box1");
        vec![
            seen(Serf, "box1", "web", "_http._tcp", 80, None),
            seen(Serf, "box1", "syncthing", "_syncthing._tcp", 22000, None),
            seen(Serf, "box1", "syncthing-2", "_http._tcp", 8384, None),
            seen(Serf, "box1", "etcd", "_etcd-client._tcp", 2379, None),
            seen(Serf, "box1", "etcd-2", "_etcd-server._tcp", 2380, None),
            seen(Cloudy, "box1", "web_on_box1", "_http._tcp", 80, h),
            seen(
                Cloudy,
                "box1",
                "syncthing_on_box1",
                "_syncthing._tcp",
                22000,
                h,
            ),
            seen(Cloudy, "box1", "Syncthing_GUI", "_http._tcp", 8384, h),
            seen(Cloudy, "box1", "etcd_on_box1", "_etcd-client._tcp", 2379, h),
            seen(Cloudy, "box1", "etcd_on_box1", "_etcd-server._tcp", 2380, h),
            seen(Mdns, "box1", "web on box1", "_http._tcp", 80, h),
            seen(Mdns, "box1", "syncthing-2 on box1", "_http._tcp", 8384, h),
            seen(Mdns, "box1", "etcd-2 on box1", "_etcd-server._tcp", 2380, h),
        ]
    }

    fn names(c: &[CatalogService]) -> Vec<(&str, u16, Vec<Source>)> {
        c.iter()
            .map(|s| (s.service.name.as_str(), s.service.port, s.sources.clone()))
            .collect()
    }

    #[test]
    fn one_entry_per_service_with_its_sources_and_a_real_name() {
        use Source::*;
        let c = merge(box1());
        assert_eq!(
            names(&c),
            [
                ("web", 80, vec![Serf, Cloudy, Mdns]),
                ("syncthing", 22000, vec![Serf, Cloudy]),
                ("Syncthing GUI", 8384, vec![Serf, Cloudy, Mdns]),
                ("etcd", 2379, vec![Serf, Cloudy]),
                ("etcd", 2380, vec![Serf, Cloudy, Mdns]),
            ]
        );
        let web = &c[0].service;
        assert_eq!((web.source, web.zone.as_str()), (Serf, "north"));
        assert_eq!(web.rtt_estimate_ms, Some(1.5), "the member's RTT");
        assert_eq!(web.hops, Some(0), "mDNS hops where gossip had none");
        let v = serde_json::to_value(&c[0]).expect("json");
        assert_eq!(v["sources"], serde_json::json!(["serf", "cloudy", "mdns"]));
        assert_eq!(v["source"], "serf");
        assert_eq!(v["name"], "web");
    }

    #[test]
    fn the_mdns_instance_name_wins_and_keeps_its_blanks() {
        use Source::*;
        let mut s = box1();
        s.push(seen(
            Mdns,
            "box1",
            "Syncthing GUI",
            "_http._tcp",
            8384,
            Some("box1"),
        ));
        s.retain(|x| x.service.name != "syncthing-2 on box1");
        let c = merge(s);
        let gui = c.iter().find(|x| x.service.port == 8384).expect("gui");
        assert_eq!(gui.service.name, "Syncthing GUI");
        // the mDNS TXT `name` (MdnsService::from_local) is the own name
        let mut t = seen(Mdns, "box9", "etcd-2", "_x._tcp", 1, Some("box9"));
        t.service.txt.insert("name".into(), "etcd-2".into());
        let u = seen(Mdns, "box9", "etcd on box9", "_y._tcp", 2, Some("box9"));
        assert_eq!(names(&merge(vec![t, u]))[0].0, "etcd");
    }

    #[test]
    fn different_nodes_stay_apart_and_mdns_joins_by_host_or_address() {
        use Source::*;
        let mut other = seen(Serf, "box2", "web", "_http._tcp", 80, None);
        other.service.addr = "10.0.0.8".parse().ok();
        // box3's gossip name differs from its host name: its mDNS joins by address
        let mut g3 = seen(Serf, "nuvol-1a2b3c4d", "web", "_http._tcp", 80, None);
        g3.service.addr = "10.0.0.9".parse().ok();
        let mut m3 = seen(
            Mdns,
            "nuvol",
            "web on nuvol",
            "_http._tcp",
            80,
            Some("nuvol"),
        );
        m3.service.addr = "10.0.0.9".parse().ok();
        // a printer nuvol has never heard of over gossip
        let mut p = seen(
            Mdns,
            "printer",
            "Office printer",
            "_ipp._tcp",
            631,
            Some("printer"),
        );
        p.service.addr = "10.0.0.50".parse().ok();
        let p2 = {
            let mut x = p.clone();
            x.service.hops = Some(1);
            x
        };
        let c = merge(vec![other, g3, m3, p, p2]);
        assert_eq!(
            names(&c),
            [
                ("web", 80, vec![Serf]),
                ("web", 80, vec![Serf, Mdns]),
                ("Office printer", 631, vec![Mdns]),
            ]
        );
        assert_eq!(c[1].service.node, "nuvol-1a2b3c4d");
        // the same port and type on two nodes at one address: no guess
        let mut a = seen(Serf, "a", "web", "_http._tcp", 80, None);
        let mut b = seen(Serf, "b", "web", "_http._tcp", 80, None);
        a.service.addr = "127.0.0.1".parse().ok();
        b.service.addr = a.service.addr;
        let mut m = seen(Mdns, "c", "web on c", "_http._tcp", 80, Some("c"));
        m.service.addr = a.service.addr;
        assert_eq!(merge(vec![a, b, m]).len(), 3);
    }

    #[test]
    fn a_cloudy_node_keeps_its_own_descriptions() {
        use Source::*;
        let c = merge(vec![
            seen(
                Cloudy,
                "cloudy7",
                "SERF_instance_running",
                "_serf._tcp",
                5000,
                Some("cloudy7"),
            ),
            seen(
                Cloudy,
                "cloudy7",
                "webby_on_cloudy7",
                "_http._tcp",
                80,
                Some("cloudy7"),
            ),
        ]);
        assert_eq!(c[0].service.name, "SERF_instance_running");
        assert_eq!(c[1].service.name, "webby");
    }

    #[test]
    fn index_names_only_fold_into_a_sibling() {
        assert_eq!(index_base("etcd-2"), Some("etcd"));
        assert_eq!(index_base("etcd-1"), None);
        assert_eq!(index_base("my-app"), None);
        assert_eq!(index_base("-3"), None);
        use Source::*;
        // no `web` on the node: `web-2` is a name of its own
        let c = merge(vec![seen(Serf, "b", "web-2", "_http._tcp", 80, None)]);
        assert_eq!(c[0].service.name, "web-2");
    }
}
