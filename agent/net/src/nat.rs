//! What table `ip nuvol` must hold for the attached containers: outbound
//! masquerade for the container subnet, DNAT for published ports on the
//! host's own addresses, and a forward filter so that only published ports
//! and replies reach the containers from outside.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::nft::{self, Chain, Expr, Rule, Ruleset};
use crate::{Proto, PublishedPort};

/// ct state bits (`NF_CT_STATE_BIT`): established 2, related 4.
const CT_ESTABLISHED_RELATED: u32 = 2 | 4;
/// `IPS_DST_NAT`.
const IPS_DST_NAT: u32 = 1 << 5;

/// One published port with where it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Forward {
    pub container: String,
    pub address: Ipv4Addr,
    pub port: PublishedPort,
}

/// Everything the table depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatSpec {
    pub subnet: Ipv4Net,
    pub bridge: String,
    /// IPv4 addresses of the host itself (not the bridge, not loopback)
    /// with the link each is on: published ports answer on these.
    pub host_addrs: BTreeMap<Ipv4Addr, String>,
    pub forwards: Vec<Forward>,
}

fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0); // IFNAMSIZ, NUL padded as the kernel stores it
    v
}

fn oifname(op: u32, name: &str) -> [Expr; 2] {
    [
        Expr::Meta {
            key: nft::META_OIFNAME,
            dreg: nft::REG_1,
        },
        Expr::Cmp {
            sreg: nft::REG_1,
            op,
            data: ifname(name),
        },
    ]
}

fn iifname(op: u32, name: &str) -> [Expr; 2] {
    [
        Expr::Meta {
            key: nft::META_IIFNAME,
            dreg: nft::REG_1,
        },
        Expr::Cmp {
            sreg: nft::REG_1,
            op,
            data: ifname(name),
        },
    ]
}

/// `ip saddr <net>` (offset 12) or `ip daddr <net>` (offset 16).
fn ip_in(offset: u32, net: &Ipv4Net) -> Vec<Expr> {
    let mut v = vec![Expr::Payload {
        base: nft::BASE_NETWORK,
        offset,
        len: 4,
        dreg: nft::REG_1,
    }];
    if net.prefix_len() < 32 {
        v.push(Expr::Bitwise {
            reg: nft::REG_1,
            mask: net.netmask().octets().to_vec(),
            xor: vec![0; 4],
        });
    }
    v.push(Expr::Cmp {
        sreg: nft::REG_1,
        op: nft::CMP_EQ,
        data: net.network().octets().to_vec(),
    });
    v
}

/// `ct <key> & mask <op> 0`; ct state and status are host-endian u32.
fn ct_bits(key: u32, mask: u32, op: u32) -> [Expr; 3] {
    [
        Expr::Ct {
            key,
            dreg: nft::REG_1,
        },
        Expr::Bitwise {
            reg: nft::REG_1,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: nft::REG_1,
            op,
            data: vec![0; 4],
        },
    ]
}

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

pub(crate) const PREROUTING: &str = "prerouting";
pub(crate) const OUTPUT: &str = "output";
pub(crate) const POSTROUTING: &str = "postrouting";
pub(crate) const FORWARD: &str = "forward";

/// The table for `spec`.
pub(crate) fn ruleset(spec: &NatSpec) -> Ruleset {
    let chains = vec![
        Chain {
            name: PREROUTING,
            kind: "nat",
            hook: nft::HOOK_PREROUTING,
            priority: -100,
        },
        Chain {
            name: OUTPUT,
            kind: "nat",
            hook: nft::HOOK_OUTPUT,
            priority: -100,
        },
        Chain {
            name: POSTROUTING,
            kind: "nat",
            hook: nft::HOOK_POSTROUTING,
            priority: 100,
        },
        Chain {
            name: FORWARD,
            kind: "filter",
            hook: nft::HOOK_FORWARD,
            priority: 0,
        },
    ];
    let mut rules = Vec::new();
    let br = spec.bridge.as_str();
    let subnet = spec.subnet;

    // Containers reach the world with the address of the uplink they leave by.
    let mut e = ip_in(12, &subnet);
    e.extend(oifname(nft::CMP_NEQ, br));
    e.push(Expr::Masquerade);
    rules.push(Rule {
        chain: POSTROUTING,
        exprs: e,
        comment: format!("masquerade {subnet} leaving by any link but {br}"),
    });
    // Hairpin: a container reaching a published port of the host gets the
    // reply back through the host, not straight from its neighbour.
    let mut e = ip_in(12, &subnet);
    e.extend(oifname(nft::CMP_EQ, br));
    e.extend(ct_bits(nft::CT_STATUS, IPS_DST_NAT, nft::CMP_NEQ));
    e.push(Expr::Masquerade);
    rules.push(Rule {
        chain: POSTROUTING,
        exprs: e,
        comment: format!("masquerade hairpin {subnet} to published ports"),
    });

    // Published ports, on every host address, for packets arriving from
    // outside (prerouting) and from the host itself (output). A port
    // published only via one link: on that link's addresses, and from
    // outside only through that link or from the containers (hairpin).
    for chain in [PREROUTING, OUTPUT] {
        for f in &spec.forwards {
            for (host, link) in &spec.host_addrs {
                let ways_in: Vec<Option<&str>> = match &f.port.only_via {
                    None => vec![None],
                    Some(via) if via != link => continue,
                    Some(_) if chain == OUTPUT => vec![None],
                    Some(via) => vec![Some(via.as_str()), Some(spec.bridge.as_str())],
                };
                for way_in in ways_in {
                    let mut e = Vec::new();
                    if let Some(i) = way_in {
                        e.extend(iifname(nft::CMP_EQ, i));
                    }
                    e.extend(ip_in(16, &Ipv4Net::from(*host)));
                    e.push(Expr::Meta {
                        key: nft::META_L4PROTO,
                        dreg: nft::REG_1,
                    });
                    e.push(Expr::Cmp {
                        sreg: nft::REG_1,
                        op: nft::CMP_EQ,
                        data: vec![proto_num(f.port.proto)],
                    });
                    e.push(Expr::Payload {
                        base: nft::BASE_TRANSPORT,
                        offset: 2,
                        len: 2,
                        dreg: nft::REG_1,
                    });
                    e.push(Expr::Cmp {
                        sreg: nft::REG_1,
                        op: nft::CMP_EQ,
                        data: f.port.host_port.to_be_bytes().to_vec(),
                    });
                    e.push(Expr::Immediate {
                        dreg: nft::REG_1,
                        data: f.address.octets().to_vec(),
                    });
                    e.push(Expr::Immediate {
                        dreg: nft::REG_2,
                        data: f.port.container_port.to_be_bytes().to_vec(),
                    });
                    e.push(Expr::Dnat {
                        addr_reg: nft::REG_1,
                        port_reg: nft::REG_2,
                    });
                    rules.push(Rule {
                        chain,
                        exprs: e,
                        comment: format!(
                            "dnat {} {}:{}{} to {}:{} ({})",
                            proto_name(f.port.proto),
                            host,
                            f.port.host_port,
                            way_in.map(|i| format!(" in via {i}")).unwrap_or_default(),
                            f.address,
                            f.port.container_port,
                            f.container
                        ),
                    });
                }
            }
        }
    }

    // From outside into the containers: published (DNATed) connections and
    // replies only; a neighbour routing the container subnet via the box
    // cannot reach unpublished ports.
    let mut e = Vec::new();
    e.extend(oifname(nft::CMP_EQ, br));
    e.extend(iifname(nft::CMP_NEQ, br));
    e.extend(ct_bits(nft::CT_STATUS, IPS_DST_NAT, nft::CMP_NEQ));
    e.push(Expr::Verdict(nft::NF_ACCEPT));
    rules.push(Rule {
        chain: FORWARD,
        exprs: e,
        comment: format!("accept published ports into {br}"),
    });
    let mut e = Vec::new();
    e.extend(oifname(nft::CMP_EQ, br));
    e.extend(iifname(nft::CMP_NEQ, br));
    e.extend(ct_bits(nft::CT_STATE, CT_ESTABLISHED_RELATED, nft::CMP_EQ));
    e.push(Expr::Verdict(nft::NF_DROP));
    rules.push(Rule {
        chain: FORWARD,
        exprs: e,
        comment: format!("drop new connections into {br} that are not published"),
    });
    Ruleset { chains, rules }
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dnat_per_host_address_and_chain() {
        let spec = NatSpec {
            subnet: "10.88.0.0/24".parse().unwrap(),
            bridge: "nuvol0".into(),
            host_addrs: [
                ("192.0.2.1".parse().unwrap(), "eth0".to_string()),
                ("198.51.100.1".parse().unwrap(), "eth1".to_string()),
            ]
            .into_iter()
            .collect(),
            forwards: vec![Forward {
                container: "web".into(),
                address: "10.88.0.2".parse().unwrap(),
                port: PublishedPort {
                    proto: Proto::Tcp,
                    host_port: 8080,
                    container_port: 80,
                    only_via: None,
                },
            }],
        };
        let rs = ruleset(&spec);
        assert_eq!(rs.chains.len(), 4);
        let dnat = rs
            .rules
            .iter()
            .filter(|r| r.exprs.iter().any(|e| matches!(e, Expr::Dnat { .. })))
            .count();
        assert_eq!(dnat, 4);
        assert_eq!(rs.rules.len(), 8);
        // Different content, different rules (the comparison relies on it).
        let mut other = spec.clone();
        other.forwards[0].port.container_port = 81;
        assert_ne!(ruleset(&other), rs);
        // No host address yet: masquerade and filter only.
        let mut none = spec;
        none.host_addrs.clear();
        assert_eq!(ruleset(&none).rules.len(), 4);
    }

    #[test]
    fn a_port_only_via_a_link_is_on_its_address_and_checks_the_way_in() {
        let mut spec = NatSpec {
            subnet: "10.88.0.0/24".parse().unwrap(),
            bridge: "nuvol0".into(),
            host_addrs: [
                ("192.0.2.1".parse().unwrap(), "eth0".to_string()),
                ("100.64.1.2".parse().unwrap(), "nv0".to_string()),
            ]
            .into_iter()
            .collect(),
            forwards: vec![Forward {
                container: "tahoe".into(),
                address: "10.88.0.2".parse().unwrap(),
                port: PublishedPort {
                    proto: Proto::Tcp,
                    host_port: 3459,
                    container_port: 3459,
                    only_via: Some("nv0".into()),
                },
            }],
        };
        let rs = ruleset(&spec);
        let dnats: Vec<&Rule> = rs
            .rules
            .iter()
            .filter(|r| r.exprs.iter().any(|e| matches!(e, Expr::Dnat { .. })))
            .collect();
        // On the overlay address only, none on the LAN's: in through the
        // link or from the containers (prerouting), and from the host.
        assert_eq!(dnats.len(), 3, "{dnats:#?}");
        assert!(dnats.iter().all(|r| r.comment.contains("100.64.1.2:3459")));
        let iif = |r: &Rule| {
            r.exprs
                .iter()
                .any(|e| matches!(e, Expr::Meta { key, .. } if *key == nft::META_IIFNAME))
        };
        let pre: Vec<&&Rule> = dnats.iter().filter(|r| r.chain == PREROUTING).collect();
        assert!(
            pre.iter().all(|r| iif(r)),
            "from outside only in through nv0: {pre:?}"
        );
        assert!(
            pre.iter().any(|r| r.comment.contains("in via nv0")),
            "{pre:?}"
        );
        assert!(
            pre.iter().any(|r| r.comment.contains("in via nuvol0")),
            "{pre:?}"
        );
        let out = dnats.iter().find(|r| r.chain == OUTPUT).unwrap();
        assert!(!iif(out), "the host itself reaches it: {out:?}");
        // The overlay is down (no nv0 address): not published anywhere.
        spec.host_addrs.retain(|_, l| l != "nv0");
        let rs = ruleset(&spec);
        assert!(!rs
            .rules
            .iter()
            .any(|r| r.exprs.iter().any(|e| matches!(e, Expr::Dnat { .. }))));
    }
}
