//! The node's own status, as served by `GET /api/v1/status` and the panel.
//!
//! Figures come from the kernel: sysinfo for memory, load, uptime and disks,
//! `getifaddrs(3)` for interfaces and addresses.

mod identity;

use std::net::IpAddr;

use serde::Serialize;

pub use identity::{Identity, IdentityError};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub hostname: String,
    pub version: String,
    /// The CPU architecture nuvol runs on, as Rust names it
    /// (`std::env::consts::ARCH`): `x86_64`, `aarch64`, `arm` (armv7).
    pub arch: String,
    pub node_id: String,
    pub boot_count: u64,
    pub uptime_s: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    pub memory: Memory,
    pub disks: Vec<Disk>,
    pub interfaces: Vec<Interface>,
    pub config: ConfigState,
    /// Resident memory of the agent process itself.
    pub agent_rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub mount: String,
    pub device: String,
    pub fs: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub up: bool,
    /// CIDR notation, e.g. `10.0.2.15/24`.
    pub addresses: Vec<String>,
}

/// Whether the provisioning file was found and used.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigState {
    pub path: String,
    pub found: bool,
    /// Set when the file was bad and safe defaults are in force: names the
    /// file, line and problem.
    pub problem: Option<String>,
    /// Keys of the file this nuvol does not know, skipped (the rest is in
    /// force).
    pub skipped: Vec<String>,
}

/// Collects status; keeps sysinfo's state between calls (cheap refreshes).
pub struct Collector {
    // `None` if /proc could not be read at start; figures then read as 0.
    sys: Option<sysinfo::System>,
    disks: Option<sysinfo::Disks>,
    identity: Identity,
    version: String,
    config: ConfigState,
}

impl Collector {
    pub fn new(identity: Identity, version: &str, config: ConfigState) -> Collector {
        Collector {
            sys: sysinfo::System::new().ok(),
            disks: sysinfo::Disks::new().ok(),
            identity,
            version: version.to_string(),
            config,
        }
    }

    pub fn collect(&mut self) -> Status {
        if let Some(sys) = &mut self.sys {
            sys.refresh_memory();
        }
        if let Some(d) = &mut self.disks {
            d.refresh(true);
        }
        let load = sysinfo::System::load_average()
            .map(|la| [la.one, la.five, la.fifteen])
            .unwrap_or_default();
        let mem = |f: fn(&sysinfo::System) -> u64| self.sys.as_ref().map_or(0, f);
        let mut disks: Vec<Disk> = self
            .disks
            .iter()
            .flat_map(|d| d.iter())
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                !matches!(
                    &*fs,
                    "tmpfs" | "devtmpfs" | "overlay" | "squashfs" | "erofs"
                )
            })
            .map(|d| Disk {
                mount: d.mount_point().to_string_lossy().into_owned(),
                device: d.name().to_string_lossy().into_owned(),
                fs: d.file_system().to_string_lossy().into_owned(),
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        Status {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version: self.version.clone(),
            arch: std::env::consts::ARCH.to_string(),
            node_id: self.identity.node_id.clone(),
            boot_count: self.identity.boot_count,
            uptime_s: sysinfo::System::uptime().unwrap_or_default(),
            load,
            memory: Memory {
                total_bytes: mem(sysinfo::System::total_memory),
                available_bytes: mem(sysinfo::System::available_memory),
                used_bytes: mem(sysinfo::System::used_memory),
            },
            disks,
            interfaces: interfaces(),
            config: self.config.clone(),
            agent_rss_bytes: self_rss_bytes(),
        }
    }
}

/// Resident set size of this process, from /proc/self/statm.
pub fn self_rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    pages * page
}

fn prefix_len(mask: &IpAddr) -> u32 {
    match mask {
        IpAddr::V4(m) => u32::from(*m).count_ones(),
        IpAddr::V6(m) => u128::from(*m).count_ones(),
    }
}

/// Every interface with its addresses, sorted by name.
pub fn interfaces() -> Vec<Interface> {
    use nix::net::if_::InterfaceFlags;
    let mut out: Vec<Interface> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let idx = match out.iter().position(|i| i.name == a.interface_name) {
            Some(i) => i,
            None => {
                out.push(Interface {
                    name: a.interface_name.clone(),
                    mac: None,
                    up: a.flags.contains(InterfaceFlags::IFF_UP),
                    addresses: Vec::new(),
                });
                out.len() - 1
            }
        };
        let Some(addr) = a.address else { continue };
        if let Some(ll) = addr.as_link_addr() {
            if let Some(mac) = ll.addr().filter(|m| m.iter().any(|&b| b != 0)) {
                out[idx].mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            continue;
        }
        let ip: Option<IpAddr> = addr
            .as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| addr.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())));
        let mask: Option<IpAddr> = a.netmask.and_then(|m| {
            m.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| m.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        if let Some(ip) = ip {
            let plen = mask
                .as_ref()
                .map_or(if ip.is_ipv4() { 32 } else { 128 }, prefix_len);
            out[idx].addresses.push(format!("{ip}/{plen}"));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_address() {
        let ifs = interfaces();
        let lo = ifs.iter().find(|i| i.name == "lo").expect("lo present");
        assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{lo:?}");
    }

    #[test]
    fn collect_reports_real_figures() {
        let dir = std::env::temp_dir().join(format!("nuvol-status-{}", std::process::id()));
        let id = Identity::load_or_create(&dir, &dir.join("run")).unwrap();
        let mut c = Collector::new(
            id.clone(),
            "9.9.9",
            ConfigState {
                path: "/boot/nuvol.toml".into(),
                found: false,
                problem: None,
                skipped: Vec::new(),
            },
        );
        let s = c.collect();
        assert_eq!(s.version, "9.9.9");
        assert_eq!(s.node_id, id.node_id);
        assert!(s.memory.total_bytes > 0 && s.memory.available_bytes <= s.memory.total_bytes);
        assert!(s.uptime_s > 0);
        assert!(
            s.agent_rss_bytes > 1 << 20,
            "a test binary is over 1 MiB resident"
        );
        assert!(!s.hostname.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        for k in [
            "hostname",
            "version",
            "uptime_s",
            "load",
            "memory",
            "disks",
            "interfaces",
        ] {
            assert!(json.get(k).is_some(), "missing {k}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
