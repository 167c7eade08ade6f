//! Desired state from config + DHCP leases, and the diff against the
//! kernel's state. Pure functions: the reconciler runs them on every event.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nuvol_config::{InterfaceConfig, NetworkConfig};

use crate::dhcp::Lease;
use crate::kernel::{Addr, KernelState, Link, Route, PROTO_DHCP, PROTO_STATIC};

/// Route metrics: static routes first, DHCP ones after; the interface
/// index keeps two NICs' default routes apart.
pub(crate) const METRIC_STATIC: u32 = 100;
pub(crate) const METRIC_DHCP: u32 = 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LinkPlan {
    pub name: String,
    pub dhcp: bool,
    pub mtu: Option<u32>,
    pub addrs: BTreeSet<IpNet>,
    pub routes: BTreeSet<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Action {
    Up(u32),
    Mtu(u32, u32),
    DelRoute(Route),
    DelAddr(Addr),
    AddAddr(Addr),
    AddRoute(Route),
}

/// The config entry that governs `link`, if nuvol manages it. With no
/// `[[network.interface]]` every wired NIC takes DHCPv4.
pub(crate) fn match_config(cfg: &NetworkConfig, link: &Link) -> Option<InterfaceConfig> {
    if link.loopback {
        return None;
    }
    if cfg.interfaces.is_empty() {
        return link.is_wired().then(|| InterfaceConfig {
            name: Some(link.name.clone()),
            dhcp: Some(true),
            ..InterfaceConfig::default()
        });
    }
    cfg.interfaces
        .iter()
        .find(|i| {
            let name_ok = i.name.as_deref().is_none_or(|n| n == link.name);
            let mac_ok = match (i.mac_bytes(), link.mac) {
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
                (None, _) => true,
            };
            name_ok && mac_ok
        })
        .cloned()
}

/// Keys in `cfg` naming interfaces that do not exist.
pub(crate) fn unknown_interfaces(cfg: &NetworkConfig, st: &KernelState) -> Option<String> {
    for (i, want) in cfg.interfaces.iter().enumerate() {
        let found = st.links.iter().any(|l| {
            want.name.as_deref().is_none_or(|n| n == l.name)
                && want
                    .mac_bytes()
                    .is_none_or(|m| l.mac.is_some_and(|have| have == m))
        });
        if !found {
            let (key, what) = match (&want.name, &want.mac) {
                (Some(n), _) => ("name", n.clone()),
                (None, Some(m)) => ("mac", m.clone()),
                (None, None) => ("name", String::new()),
            };
            return Some(format!(
                "network.interface[{i}].{key}: no interface {what:?} on this machine"
            ));
        }
    }
    None
}

fn v4_default() -> IpNet {
    IpNet::V4(Ipv4Net::default())
}

fn v6_default() -> IpNet {
    IpNet::V6(Ipv6Net::default())
}

pub(crate) fn plan_link(link: &Link, ic: &InterfaceConfig, lease: Option<&Lease>) -> LinkPlan {
    let mut p = LinkPlan {
        name: link.name.clone(),
        dhcp: ic.dhcp(),
        mtu: ic.mtu,
        ..LinkPlan::default()
    };
    let smetric = METRIC_STATIC + link.index;
    let dmetric = METRIC_DHCP + link.index;
    for a in &ic.addresses {
        p.addrs.insert(*a);
    }
    if let Some(g) = ic.gateway {
        p.routes.insert(Route {
            dst: v4_default(),
            via: Some(IpAddr::V4(g)),
            oif: link.index,
            metric: smetric,
            proto: PROTO_STATIC,
        });
    }
    if let Some(g) = ic.gateway6 {
        p.routes.insert(Route {
            dst: v6_default(),
            via: Some(IpAddr::V6(g)),
            oif: link.index,
            metric: smetric,
            proto: PROTO_STATIC,
        });
    }
    for r in &ic.routes {
        p.routes.insert(Route {
            dst: r.to.trunc(),
            via: Some(r.via),
            oif: link.index,
            metric: smetric,
            proto: PROTO_STATIC,
        });
    }
    if let (true, Some(l)) = (p.dhcp, lease) {
        p.addrs.insert(IpNet::V4(l.address));
        if p.mtu.is_none() {
            p.mtu = l.mtu.map(u32::from);
        }
        let mut dhcp_routes: Vec<(Ipv4Net, Option<Ipv4Addr>)> = Vec::new();
        if !l.classless_routes.is_empty() {
            // RFC 3442: with option 121 the router option is ignored.
            for (dst, gw) in &l.classless_routes {
                dhcp_routes.push((dst.trunc(), (!gw.is_unspecified()).then_some(*gw)));
            }
        } else if let Some(r) = l.routers.first() {
            dhcp_routes.push((Ipv4Net::default(), Some(*r)));
        }
        for (dst, gw) in dhcp_routes {
            if dst.prefix_len() == 0 && ic.gateway.is_some() {
                continue;
            }
            p.routes.insert(Route {
                dst: IpNet::V4(dst),
                via: gw.map(IpAddr::V4),
                oif: link.index,
                metric: dmetric,
                proto: PROTO_DHCP,
            });
        }
    }
    p
}

/// Everything nuvol wants, per link index.
pub(crate) fn plan(
    cfg: &NetworkConfig,
    st: &KernelState,
    leases: &BTreeMap<u32, Lease>,
) -> BTreeMap<u32, LinkPlan> {
    let mut out = BTreeMap::new();
    for link in &st.links {
        if let Some(ic) = match_config(cfg, link) {
            out.insert(link.index, plan_link(link, &ic, leases.get(&link.index)));
        }
    }
    out
}

/// Writes needed to move the kernel to `plan`. `owned` holds the addresses
/// nuvol added; only those are ever removed (SLAAC, link-local and
/// addresses someone else set on an unmanaged key stay).
pub(crate) fn diff(
    plan: &BTreeMap<u32, LinkPlan>,
    st: &KernelState,
    owned: &BTreeSet<Addr>,
    extra_up: &[u32],
) -> Vec<Action> {
    let mut acts = Vec::new();
    for link in &st.links {
        let wanted_up =
            link.loopback || plan.contains_key(&link.index) || extra_up.contains(&link.index);
        if wanted_up && !link.up {
            acts.push(Action::Up(link.index));
        }
    }
    let have_addrs: BTreeSet<&Addr> = st.addrs.iter().collect();
    for (&index, p) in plan {
        let Some(link) = st.link(index) else { continue };
        if let Some(mtu) = p.mtu {
            if link.mtu != mtu {
                acts.push(Action::Mtu(index, mtu));
            }
        }
        for net in &p.addrs {
            let a = Addr { index, net: *net };
            if !have_addrs.contains(&a) {
                acts.push(Action::AddAddr(a));
            }
        }
        for a in owned.iter().filter(|a| a.index == index) {
            if !p.addrs.contains(&a.net) && have_addrs.contains(a) {
                acts.push(Action::DelAddr(a.clone()));
            }
        }
        for r in &p.routes {
            if !st.routes.contains(r) {
                acts.push(Action::AddRoute(r.clone()));
            }
        }
        for r in st
            .routes
            .iter()
            .filter(|r| r.oif == index && (r.proto == PROTO_STATIC || r.proto == PROTO_DHCP))
        {
            if !p.routes.contains(r) {
                acts.push(Action::DelRoute(r.clone()));
            }
        }
    }
    // Addresses nuvol added on links it no longer manages.
    for a in owned {
        if !plan.contains_key(&a.index) && have_addrs.contains(a) {
            acts.push(Action::DelAddr(a.clone()));
        }
    }
    acts.sort();
    acts.dedup();
    acts
}

/// resolv.conf text: configured servers first, then DHCP's, no duplicates.
pub(crate) fn resolv_conf(
    cfg: &NetworkConfig,
    leases: &BTreeMap<u32, Lease>,
) -> (String, Vec<IpAddr>, Vec<String>) {
    let mut servers: Vec<IpAddr> = Vec::new();
    let mut search: Vec<String> = Vec::new();
    let dhcp = leases
        .values()
        .flat_map(|l| l.dns.iter().map(|d| IpAddr::V4(*d)));
    for s in cfg.dns.iter().copied().chain(dhcp) {
        if !servers.contains(&s) && !s.is_unspecified() {
            servers.push(s);
        }
    }
    for l in leases.values() {
        if let Some(d) = &l.domain {
            if !search.contains(d) {
                search.push(d.clone());
            }
        }
    }
    let mut text = String::from("# written by nuvol; edits are overwritten\n");
    for s in &servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    (text, servers, search)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nuvol_config::RouteConfig;

    fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            kind: kind.map(String::from),
            ether: true,
            loopback: false,
            up: true,
            carrier: true,
            mtu: 1500,
            master: None,
        }
    }

    fn lease() -> Lease {
        Lease {
            address: "10.0.2.15/24".parse().unwrap(),
            server: Ipv4Addr::new(10, 0, 2, 2),
            routers: vec![Ipv4Addr::new(10, 0, 2, 2)],
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            domain: Some("lan".into()),
            mtu: None,
            classless_routes: vec![],
            lease_seconds: 3600,
            obtained: 0,
            renew_at: 1800,
            rebind_at: 3150,
            expires_at: 3600,
        }
    }

    #[test]
    fn default_config_takes_dhcp_on_wired_nics_only() {
        let cfg = NetworkConfig::default();
        assert!(match_config(&cfg, &link(2, "eth0", None)).unwrap().dhcp());
        assert!(match_config(&cfg, &link(3, "veth0", Some("veth"))).is_none());
        assert!(match_config(&cfg, &link(4, "nuvol0", Some("bridge"))).is_none());
        let mut lo = link(1, "lo", None);
        lo.loopback = true;
        assert!(match_config(&cfg, &lo).is_none());
    }

    #[test]
    fn match_by_mac() {
        let mut cfg = NetworkConfig::default();
        cfg.interfaces.push(InterfaceConfig {
            mac: Some("02:00:00:00:00:03".into()),
            ..Default::default()
        });
        assert!(match_config(&cfg, &link(3, "enp1s0", None)).is_some());
        assert!(match_config(&cfg, &link(2, "enp2s0", None)).is_none());
        assert!(unknown_interfaces(&cfg, &KernelState::default())
            .unwrap()
            .starts_with("network.interface[0].mac"));
    }

    #[test]
    fn dhcp_lease_gives_address_and_default_route() {
        let st = KernelState {
            links: vec![link(2, "eth0", None)],
            ..Default::default()
        };
        let leases = BTreeMap::from([(2, lease())]);
        let p = plan(&NetworkConfig::default(), &st, &leases);
        let acts = diff(&p, &st, &BTreeSet::new(), &[]);
        assert_eq!(acts.len(), 2, "{acts:?}");
        assert!(matches!(&acts[0], Action::AddAddr(a) if a.net.to_string() == "10.0.2.15/24"));
        assert!(
            matches!(&acts[1], Action::AddRoute(r) if r.dst.to_string() == "0.0.0.0/0" && r.metric == METRIC_DHCP + 2)
        );
        let (text, servers, _) = resolv_conf(&NetworkConfig::default(), &leases);
        assert_eq!(servers.len(), 1);
        assert!(text.contains("nameserver 10.0.2.3\nsearch lan\n"));
    }

    #[test]
    fn nothing_to_do_when_kernel_matches() {
        let mut cfg = NetworkConfig::default();
        cfg.interfaces.push(InterfaceConfig {
            name: Some("eth0".into()),
            addresses: vec![
                "10.1.2.3/24".parse().unwrap(),
                "fd00::3/64".parse().unwrap(),
            ],
            gateway: Some(Ipv4Addr::new(10, 1, 2, 1)),
            routes: vec![RouteConfig {
                to: "10.9.0.0/16".parse().unwrap(),
                via: "10.1.2.254".parse().unwrap(),
            }],
            ..Default::default()
        });
        let mut st = KernelState {
            links: vec![link(2, "eth0", None)],
            ..Default::default()
        };
        let p = plan(&cfg, &st, &BTreeMap::new());
        let acts = diff(&p, &st, &BTreeSet::new(), &[]);
        assert_eq!(acts.len(), 4, "{acts:?}");
        for a in acts {
            match a {
                Action::AddAddr(a) => st.addrs.push(a),
                Action::AddRoute(r) => st.routes.push(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(diff(&p, &st, &BTreeSet::new(), &[]).is_empty());
        // A stale static route of ours goes; someone's kernel route stays.
        st.routes.push(Route {
            dst: "10.7.0.0/16".parse().unwrap(),
            via: None,
            oif: 2,
            metric: 0,
            proto: PROTO_STATIC,
        });
        st.routes.push(Route {
            dst: "10.1.2.0/24".parse().unwrap(),
            via: None,
            oif: 2,
            metric: 0,
            proto: 2,
        });
        let acts = diff(&p, &st, &BTreeSet::new(), &[]);
        assert_eq!(acts.len(), 1);
        assert!(matches!(&acts[0], Action::DelRoute(r) if r.dst.to_string() == "10.7.0.0/16"));
    }

    #[test]
    fn only_owned_addresses_are_removed() {
        let mut st = KernelState {
            links: vec![link(2, "eth0", None)],
            ..Default::default()
        };
        let stale = Addr {
            index: 2,
            net: "10.0.2.99/24".parse().unwrap(),
        };
        let slaac = Addr {
            index: 2,
            net: "fe80::1/64".parse().unwrap(),
        };
        st.addrs.push(stale.clone());
        st.addrs.push(slaac);
        let p = plan(&NetworkConfig::default(), &st, &BTreeMap::new());
        assert!(diff(&p, &st, &BTreeSet::new(), &[]).is_empty());
        let owned = BTreeSet::from([stale.clone()]);
        assert_eq!(diff(&p, &st, &owned, &[]), vec![Action::DelAddr(stale)]);
    }

    #[test]
    fn classless_routes_replace_router_and_static_gateway_wins() {
        let mut l = lease();
        l.classless_routes = vec![
            ("10.5.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 0, 2, 9)),
            ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 0, 2, 8)),
        ];
        let ic = InterfaceConfig {
            name: Some("eth0".into()),
            dhcp: Some(true),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 1)),
            ..Default::default()
        };
        let p = plan_link(&link(2, "eth0", None), &ic, Some(&l));
        let vias: Vec<String> = p
            .routes
            .iter()
            .map(|r| format!("{}>{:?}", r.dst, r.via))
            .collect();
        assert_eq!(p.routes.len(), 2, "{vias:?}");
        assert!(p
            .routes
            .iter()
            .any(|r| r.via == Some(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1)))));
        assert!(p.routes.iter().any(|r| r.dst.to_string() == "10.5.0.0/16"));
    }
}
