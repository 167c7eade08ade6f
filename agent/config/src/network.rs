//! `[network]`: declarative link configuration.
//!
//! ```toml
//! [network]
//! dns = ["10.0.0.1"]
//!
//! [[network.interface]]
//! name = "eth0"                 # or: mac = "52:54:00:12:34:56"
//! dhcp = false                  # default: true when no addresses are given
//! addresses = ["10.1.2.3/24", "fd00::3/64"]
//! gateway = "10.1.2.1"
//! gateway6 = "fd00::1"
//! mtu = 1500
//! routes = [{ to = "10.9.0.0/16", via = "10.1.2.254" }]
//! ```
//! With no `[[network.interface]]` at all, every wired NIC takes DHCPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// DNS servers written to resolv.conf (added to those DHCP gives).
    pub dns: Vec<IpAddr>,
    /// Per-interface settings; empty means DHCPv4 on every wired NIC.
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// The container bridge `nuvol0` and its address range.
    pub containers: ContainerNetworkConfig,
}

/// `[network.containers]`: the bridge containers attach to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerNetworkConfig {
    /// Private IPv4 range; the bridge takes the first host address, each
    /// container the next free one. Outbound traffic is masqueraded.
    pub subnet: ipnet::Ipv4Net,
}

impl Default for ContainerNetworkConfig {
    fn default() -> Self {
        ContainerNetworkConfig {
            subnet: ipnet::Ipv4Net::new(Ipv4Addr::new(10, 88, 0, 0), 24).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterfaceConfig {
    /// Kernel interface name, e.g. `eth0`.
    pub name: Option<String>,
    /// MAC address, `aa:bb:cc:dd:ee:ff`, for boards whose names move.
    pub mac: Option<String>,
    /// DHCPv4 on this link. Default: true when `addresses` is empty.
    pub dhcp: Option<bool>,
    /// Static addresses in CIDR notation, IPv4 or IPv6.
    pub addresses: Vec<IpNet>,
    pub gateway: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: Option<u32>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub to: IpNet,
    pub via: IpAddr,
}

impl InterfaceConfig {
    /// Whether DHCPv4 runs on this link.
    pub fn dhcp(&self) -> bool {
        self.dhcp.unwrap_or(self.addresses.is_empty())
    }

    /// Parsed MAC, if one is configured (validated at load time).
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        self.mac.as_deref().and_then(parse_mac)
    }
}

/// Parse `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl NetworkConfig {
    /// Validate on its own (as `apply` does for a new config); the error
    /// reads `key: message`, the key as in nuvol.toml.
    pub fn check(&self) -> Result<(), String> {
        self.validate().map_err(|(k, m)| format!("{k}: {m}"))
    }

    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let c = &self.containers.subnet;
        if c.prefix_len() > 30 || !c.network().is_private() {
            return Err((
                "network.containers.subnet".into(),
                format!("{c} must be a private IPv4 range of /30 or larger"),
            ));
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            for a in &iface.addresses {
                if a.contains(&IpAddr::V4(c.network())) || IpNet::V4(*c).contains(&a.network()) {
                    return Err((
                        "network.containers.subnet".into(),
                        format!("{c} overlaps {a} (network.interface[{i}].addresses)"),
                    ));
                }
            }
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            let key = |k: &str| format!("network.interface[{i}].{k}");
            match (&iface.name, &iface.mac) {
                (None, None) => {
                    return Err((key("name"), "each interface needs `name` or `mac`".into()))
                }
                (Some(n), _) if n.is_empty() || n.len() > 15 || n.contains('/') => {
                    return Err((key("name"), format!("{n:?} is not a valid interface name")))
                }
                (_, Some(m)) if parse_mac(m).is_none() => {
                    return Err((
                        key("mac"),
                        format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                    ))
                }
                _ => {}
            }
            if let Some(mtu) = iface.mtu {
                if !(576..=9216).contains(&mtu) {
                    return Err((key("mtu"), format!("{mtu} is outside 576..=9216")));
                }
            }
            for (j, a) in iface.addresses.iter().enumerate() {
                for (k, other) in self.interfaces.iter().enumerate() {
                    for (l, b) in other.addresses.iter().enumerate() {
                        if (k, l) > (i, j) && (a.contains(&b.network()) || b.contains(&a.network()))
                        {
                            return Err((
                                key(&format!("addresses[{j}]")),
                                format!("{a} overlaps {b} (network.interface[{k}].addresses[{l}])"),
                            ));
                        }
                    }
                }
            }
            if iface.gateway.is_some()
                && !iface.addresses.iter().any(|a| a.addr().is_ipv4())
                && !iface.dhcp()
            {
                return Err((
                    key("gateway"),
                    "an IPv4 gateway needs an IPv4 address or DHCP".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("n.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn static_interface_parses() {
        let c = parse(
            "[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.1.2.3/24\", \"fd00::3/64\"]\ngateway = \"10.1.2.1\"\nroutes = [{ to = \"10.9.0.0/16\", via = \"10.1.2.254\" }]\n",
        )
        .unwrap();
        let i = &c.network.interfaces[0];
        assert!(!i.dhcp());
        assert_eq!(i.addresses.len(), 2);
        assert_eq!(i.routes[0].to.to_string(), "10.9.0.0/16");
    }

    #[test]
    fn invalid_cidr_names_line() {
        let e = parse("[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.1.2.300/24\"]\n")
            .unwrap_err();
        assert!(e.contains("n.toml:3:"), "{e}");
    }

    #[test]
    fn overlapping_subnets_are_refused() {
        let e = parse("[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.1.0.1/16\"]\n[[network.interface]]\nname = \"eth1\"\naddresses = [\"10.1.2.1/24\"]\n").unwrap_err();
        assert!(
            e.contains("network.interface[0].addresses[0]") && e.contains("overlaps"),
            "{e}"
        );
    }

    #[test]
    fn interface_needs_name_or_mac() {
        let e = parse("[[network.interface]]\ndhcp = true\n").unwrap_err();
        assert!(e.contains("network.interface[0].name"), "{e}");
        let e = parse("[[network.interface]]\nmac = \"zz:00\"\n").unwrap_err();
        assert!(e.contains("network.interface[0].mac"), "{e}");
    }

    #[test]
    fn container_subnet_defaults_and_is_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.network.containers.subnet.to_string(), "10.88.0.0/24");
        let e = parse("[network.containers]\nsubnet = \"8.8.8.0/24\"\n").unwrap_err();
        assert!(e.contains("network.containers.subnet"), "{e}");
        let e = parse("[network.containers]\nsubnet = \"10.1.0.0/16\"\n[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.1.2.3/24\"]\n").unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
    }

    #[test]
    fn check_names_the_key() {
        let mut n = crate::NetworkConfig::default();
        n.interfaces.push(crate::InterfaceConfig::default());
        assert!(n
            .check()
            .unwrap_err()
            .starts_with("network.interface[0].name:"));
    }
}
