//! nuvol-mdns: an mDNS / DNS-SD responder and browser (RFC 6762, RFC 6763)
//! that interoperates with Avahi.
//!
//! * publishes `<hostname>.local` (A/AAAA) and services (PTR, SRV, TXT and
//!   the `_services._dns-sd._udp.local` enumeration) on each interface;
//! * probes names before use and renames on conflict (`name (2)`, `host-2`);
//! * continuously browses every service type and resolves instances into
//!   [`Discovered`] entries, honouring TTLs, cache-flush and goodbyes;
//! * sends goodbyes (TTL 0) on [`Mdns::unpublish`] and [`Mdns::shutdown`].
//!
//! IPv4 multicast transport only (224.0.0.251:5353); AAAA records of the
//! interface are published and cached all the same.

mod engine;
mod sys;
pub mod wire;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

/// Start-up options.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    /// host label (without `.local`)
    pub hostname: String,
    /// interfaces to use; `None` = all up, multicast, non-loopback ones.
    /// An interface is served once it has an IPv4 address; the set is
    /// re-read every 10 s, so interfaces and addresses may come later.
    pub interfaces: Option<Vec<String>>,
}

/// A service to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsService {
    /// instance label, e.g. `Nextcloud on box` (max 63 bytes)
    pub instance: String,
    /// `_http._tcp`
    pub service_type: String,
    pub port: u16,
    pub txt: BTreeMap<String, String>,
}

/// A service found on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub instance: String,
    /// `_http._tcp`
    pub service_type: String,
    /// SRV target, e.g. `box.local`
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub txt: BTreeMap<String, String>,
    /// interface it was heard on
    pub interface: String,
    /// time left of the PTR record
    pub ttl_left: Duration,
    /// hops to the responder: 255 − the IP TTL / hop limit of the packet
    /// that last carried its SRV record (RFC 6762 §11 sends with 255, so 0
    /// is the same link); `None` when the kernel did not say
    pub hops: Option<u8>,
}

/// Changes of the discovered set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MdnsEvent {
    Added(Discovered),
    /// port, TXT, host or addresses changed
    Updated(Discovered),
    Removed(Discovered),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MdnsStats {
    pub packets_received: u64,
    pub packets_sent: u64,
    /// undecodable packets, dropped
    pub malformed: u64,
    /// packets dropped because the engine queue was full
    pub queue_dropped: u64,
    /// records not cached because the cache was full
    pub cache_full: u64,
    /// name conflicts that made us rename
    pub conflicts: u64,
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    #[error("Mdns::start needs a tokio runtime")]
    NoRuntime,
    #[error("invalid {0}")]
    Invalid(String),
    #[error("mDNS engine stopped")]
    Stopped,
    #[error("socket on {iface}: {source}")]
    Socket {
        iface: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Default)]
pub(crate) struct Counters {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    pub queue_dropped: AtomicU64,
    pub cache_full: AtomicU64,
    pub conflicts: AtomicU64,
}

/// State the engine publishes for the handle to read.
#[derive(Default)]
pub(crate) struct Shared {
    pub counters: Counters,
    /// discovered services with the instant their PTR expires
    pub discovered: Mutex<Vec<(Discovered, Instant)>>,
    /// published services under their current (possibly renamed) names
    pub published: Mutex<Vec<MdnsService>>,
    pub hostname: Mutex<String>,
}

pub(crate) enum Cmd {
    Publish(MdnsService),
    Unpublish {
        instance: String,
        service_type: String,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A running responder + browser.
pub struct Mdns {
    cmd: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
    events: broadcast::Sender<MdnsEvent>,
}

/// Queue depth of commands to the engine.
const CMD_QUEUE: usize = 256;

impl Mdns {
    /// Open sockets on the interfaces and start probing the host name.
    /// Must be called inside a tokio runtime.
    pub fn start(cfg: MdnsConfig) -> Result<Mdns, MdnsError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| MdnsError::NoRuntime)?;
        check_label(&cfg.hostname, "hostname")?;
        if cfg.hostname.contains('.') {
            return Err(MdnsError::Invalid("hostname (no dots)".into()));
        }
        let chosen: Vec<sys::IfInfo> = sys::interfaces()?
            .into_iter()
            .filter(|i| sys::eligible(i, cfg.interfaces.as_deref()))
            .collect();
        let shared = Arc::new(Shared::default());
        let (events, _) = broadcast::channel(256);
        let (cmd, cmd_rx) = mpsc::channel(CMD_QUEUE);
        let _guard = rt.enter();
        let engine = engine::Engine::new(
            cfg.hostname,
            cfg.interfaces,
            chosen,
            shared.clone(),
            events.clone(),
        )?;
        rt.spawn(engine.run(cmd_rx));
        Ok(Mdns {
            cmd,
            shared,
            events,
        })
    }

    /// Publish (or update, if `instance`+`service_type` is already
    /// published) a service. It is probed, then announced.
    pub fn publish(&self, svc: MdnsService) -> Result<(), MdnsError> {
        check_label(&svc.instance, "instance")?;
        check_type(&svc.service_type)?;
        self.send(Cmd::Publish(svc))
    }

    /// Withdraw a service (goodbye). `instance` is the name given to
    /// [`Mdns::publish`], not the renamed one.
    pub fn unpublish(&self, instance: &str, service_type: &str) -> Result<(), MdnsError> {
        self.send(Cmd::Unpublish {
            instance: instance.into(),
            service_type: service_type.into(),
        })
    }

    fn send(&self, c: Cmd) -> Result<(), MdnsError> {
        self.cmd.try_send(c).map_err(|_| MdnsError::Stopped)
    }

    /// Services currently known on the network.
    pub fn services(&self) -> Vec<Discovered> {
        let now = Instant::now();
        let g = self
            .shared
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        g.iter()
            .map(|(d, exp)| Discovered {
                ttl_left: exp.saturating_duration_since(now),
                ..d.clone()
            })
            .collect()
    }

    /// Discovered services as catalog entries (`Source::Mdns`), to merge
    /// with the gossip ones before `nuvol_catalog::query`.
    pub fn catalog_services(&self) -> Vec<nuvol_catalog::Service> {
        self.services().iter().map(to_catalog).collect()
    }

    /// Our services under the names in use (after conflict renames).
    pub fn published(&self) -> Vec<MdnsService> {
        self.shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Host label in use (after conflict renames).
    pub fn hostname(&self) -> String {
        self.shared
            .hostname
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Added / updated / removed services.
    pub fn events(&self) -> broadcast::Receiver<MdnsEvent> {
        self.events.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> MdnsStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MdnsStats {
            packets_received: l(&c.received),
            packets_sent: l(&c.sent),
            malformed: l(&c.malformed),
            queue_dropped: l(&c.queue_dropped),
            cache_full: l(&c.cache_full),
            conflicts: l(&c.conflicts),
        }
    }

    /// Send goodbyes for everything published and stop.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn check_label(s: &str, what: &str) -> Result<(), MdnsError> {
    if s.is_empty() || s.len() > 63 || s.chars().any(char::is_control) {
        return Err(MdnsError::Invalid(format!(
            "{what} {s:?} (1..=63 bytes, no control characters)"
        )));
    }
    Ok(())
}

fn check_type(t: &str) -> Result<(), MdnsError> {
    let parts: Vec<&str> = t.split('.').collect();
    let ok = parts.len() == 2
        && parts[0].len() >= 2
        && parts[0].len() <= 16
        && parts[0].starts_with('_')
        && (parts[1] == "_tcp" || parts[1] == "_udp");
    if !ok {
        return Err(MdnsError::Invalid(format!(
            "service type {t:?} (want _name._tcp or _name._udp)"
        )));
    }
    Ok(())
}

/// The catalog's view of a discovered service.
pub fn to_catalog(d: &Discovered) -> nuvol_catalog::Service {
    let addr = d
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(d.addresses.first())
        .copied();
    let node = d.host.strip_suffix(".local").unwrap_or(&d.host).to_string();
    nuvol_catalog::Service {
        name: d.instance.clone(),
        service_type: d.service_type.clone(),
        node,
        zone: String::new(),
        addr,
        overlay_addr: None,
        port: d.port,
        txt: d.txt.clone(),
        source: nuvol_catalog::Source::Mdns,
        healthy: true,
        health: "alive",
        rtt_estimate_ms: None,
        rtt_ms: None,
        hops: d.hops,
        loss: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(check_type("_http._tcp").is_ok());
        assert!(check_type("_http._sctp").is_err());
        assert!(check_type("http._tcp").is_err());
        assert!(check_label(&"x".repeat(64), "i").is_err());
        assert!(check_label("Nextcloud (2)", "i").is_ok());
    }

    #[test]
    fn catalog_adapter_prefers_ipv4() {
        let d = Discovered {
            instance: "web".into(),
            service_type: "_http._tcp".into(),
            host: "box.local".into(),
            addresses: vec!["fe80::1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            port: 80,
            txt: BTreeMap::from([("path".into(), "/".into())]),
            interface: "eth0".into(),
            ttl_left: Duration::from_secs(10),
            hops: Some(0),
        };
        let s = to_catalog(&d);
        assert_eq!(s.addr, Some("10.0.0.2".parse().unwrap()));
        assert_eq!((s.hops, s.loss, s.health), (Some(0), None, "alive"));
        assert_eq!(s.node, "box");
        assert_eq!(s.source, nuvol_catalog::Source::Mdns);
        assert_eq!(s.txt.get("path").map(String::as_str), Some("/"));
    }
}
