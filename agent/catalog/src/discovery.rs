//! The entry point the agent uses: start gossip, announce services, list
//! members and services nearest first.

use crate::cloudy::{self, CloudyService};
use crate::events::{EventLog, LoggedEvent};
use crate::{
    catalog, member_views, query, CatalogService, MemberView, Service, ServiceQuery, SVC_PREFIX,
    ZONE_TAG,
};
use nuvol_gossip::{Config, Event, GossipError, Handle, Profile};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A service this box announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    /// short name (tag key `svc:<name>`)
    pub name: String,
    /// DNS-SD type, e.g. `_http._tcp`
    pub service_type: String,
    /// port
    pub port: u16,
    /// description (Cloudy `d`)
    pub description: String,
}

/// How to start discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// node name
    pub node_name: String,
    /// host name (`uname -n`), for Cloudy's `m` field
    pub hostname: String,
    /// gossip bind address (Serf: 7946; Cloudy: 5000)
    pub bind: SocketAddr,
    /// advertised address
    pub advertise: Option<SocketAddr>,
    /// seeds
    pub join: Vec<SocketAddr>,
    /// extra tags
    pub tags: BTreeMap<String, String>,
    /// locality zone (tag `zone`; empty: none)
    pub zone: String,
    /// encryption key (16/24/32 bytes)
    pub encrypt_key: Option<Vec<u8>>,
    /// where `serf keys` rotations are kept (the agent's state dir); with
    /// encryption on and the file present, it replaces `encrypt_key`
    pub keyring_file: Option<std::path::PathBuf>,
    /// timing profile (Cloudy used WAN)
    pub profile: Profile,
    /// services to announce
    pub services: Vec<LocalService>,
    /// also publish the Cloudy `services` tag
    pub cloudy_compat: bool,
}

/// A running discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryHandle {
    gossip: Handle,
    /// zone, extra tags (with `role`) and services as last announced; the
    /// settings API changes zone and role live
    announced: Arc<Mutex<Announced>>,
    cloudy_compat: bool,
    /// host name for Cloudy's `m`
    hostname: String,
    /// services learned elsewhere (mDNS), by source name
    external: Arc<Mutex<BTreeMap<String, Vec<Service>>>>,
    /// the last events, with ids (panel, SSE replay)
    log: EventLog,
}

#[derive(Debug, Default)]
struct Announced {
    zone: String,
    base_tags: BTreeMap<String, String>,
    services: Vec<LocalService>,
}

/// Most services kept per external source.
pub const MAX_EXTERNAL_SERVICES: usize = 4096;

/// Tags announcing `services`: nuvol's `svc:<name>` for each, and with
/// `cloudy_compat` Cloudy's `services` tag (see [`cloudy`]) with the longest
/// prefix of `services` for which the whole tag map still fits Serf's 512
/// bytes (services are dropped from the end; no tag if none fits).
/// `hostname` is the box's host name (`uname -n`; Cloudy's `m` is
/// `<hostname>.guifi.local`), `ip` the advertised address (`i`).
pub fn service_tags(
    base: &BTreeMap<String, String>,
    zone: &str,
    hostname: &str,
    ip: &str,
    services: &[LocalService],
    cloudy_compat: bool,
) -> BTreeMap<String, String> {
    let mut tags = base.clone();
    if !zone.is_empty() {
        tags.insert(ZONE_TAG.to_string(), zone.to_string());
    }
    for s in services {
        tags.insert(
            format!("{SVC_PREFIX}{}", s.name),
            format!("{}:{}", s.service_type, s.port),
        );
    }
    if cloudy_compat && !services.is_empty() {
        let list: Vec<CloudyService> = services
            .iter()
            .map(|s| CloudyService {
                service_type: cloudy::bare_type(&s.service_type),
                description: cloudy::description(if s.description.is_empty() {
                    &s.name
                } else {
                    &s.description
                }),
                host: cloudy::host(hostname),
                ip: ip.to_string(),
                port: s.port,
                microcloud: cloudy::DEVICE_NAME.to_string(),
                txt: String::new(),
            })
            .collect();
        for n in (1..=list.len()).rev() {
            let Ok(t) = cloudy::encode(&list[..n]) else {
                break;
            };
            tags.insert(cloudy::TAG.to_string(), t);
            if nuvol_gossip::serf::encode_tags(&tags).len() <= nuvol_gossip::wire::META_MAX {
                break;
            }
            tags.remove(cloudy::TAG);
        }
    }
    tags
}

impl DiscoveryHandle {
    /// Start gossip and announce the configured services.
    pub async fn start(cfg: DiscoveryConfig) -> Result<DiscoveryHandle, GossipError> {
        let mut g = Config::new(cfg.node_name.clone(), cfg.bind, cfg.profile);
        g.advertise = cfg.advertise;
        g.join = cfg.join.clone();
        g.keys = cfg.encrypt_key.clone().into_iter().collect();
        g.keyring_file = cfg.keyring_file.clone();
        let ip = cfg.advertise.unwrap_or(cfg.bind).ip().to_string();
        g.tags = service_tags(
            &cfg.tags,
            &cfg.zone,
            &cfg.hostname,
            &ip,
            &cfg.services,
            cfg.cloudy_compat,
        );
        let gossip = Handle::start(g).await?;
        let log = EventLog::new();
        tokio::spawn(log.clone().follow(gossip.events()));
        Ok(DiscoveryHandle {
            gossip,
            announced: Arc::new(Mutex::new(Announced {
                zone: cfg.zone,
                base_tags: cfg.tags,
                services: cfg.services,
            })),
            cloudy_compat: cfg.cloudy_compat,
            hostname: cfg.hostname,
            external: Arc::default(),
            log,
        })
    }
    /// Members for `GET /api/v1/members`.
    pub fn members(&self) -> Vec<MemberView> {
        member_views(&self.gossip.members())
    }
    /// Services for `GET /api/v1/services`, one entry per service however
    /// many schemes announce it (our zone preferred on ties).
    pub fn services(&self, q: &ServiceQuery) -> Vec<CatalogService> {
        let mut q = q.clone();
        let zone = self.zone();
        if q.zone.is_none() && !zone.is_empty() {
            q.zone = Some(zone);
        }
        let external: Vec<Service> = match self.external.lock() {
            Ok(ext) => ext.values().flatten().cloned().collect(),
            Err(p) => p.into_inner().values().flatten().cloned().collect(),
        };
        query(catalog(&self.gossip.members(), external), &q)
    }
    /// Replace the services learned from another source (`"mdns"`: the
    /// mDNS browser calls this with everything it currently sees); they are
    /// merged into [`DiscoveryHandle::services`]. At most
    /// [`MAX_EXTERNAL_SERVICES`] are kept per source.
    pub fn set_external_services(&self, source: &str, mut services: Vec<Service>) {
        services.truncate(MAX_EXTERNAL_SERVICES);
        let mut ext = match self.external.lock() {
            Ok(e) => e,
            Err(p) => p.into_inner(),
        };
        if services.is_empty() {
            ext.remove(source);
        } else {
            ext.insert(source.to_string(), services);
        }
    }
    /// Join/leave/fail/user/query events.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.gossip.events()
    }
    /// The same events with ids, from now on (see [`EventLog::subscribe`]).
    pub fn logged_events(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.log.subscribe()
    }
    /// The last [`crate::events::RECENT_EVENTS`] events with an id above
    /// `since`, oldest first.
    pub fn recent_events(&self, since: Option<u64>) -> Vec<Arc<LoggedEvent>> {
        self.log.since(since)
    }
    /// Re-announce a new set of services.
    pub fn set_services(&self, services: &[LocalService]) -> Result<(), GossipError> {
        let mut a = self.announced();
        let ip = self.gossip.advertise().ip().to_string();
        let tags = service_tags(
            &a.base_tags,
            &a.zone,
            &self.hostname,
            &ip,
            services,
            self.cloudy_compat,
        );
        self.gossip.set_tags(tags)?;
        a.services = services.to_vec();
        Ok(())
    }
    /// This node's zone (empty: none).
    pub fn zone(&self) -> String {
        self.announced().zone.clone()
    }
    /// Change zone (empty: none) and role (the `role` tag) live: the tags
    /// are re-announced with the current services, so Serf peers see the
    /// change with the next alive message.
    pub fn set_zone_and_role(&self, zone: &str, role: &str) -> Result<(), GossipError> {
        let mut a = self.announced();
        let mut base = a.base_tags.clone();
        base.insert(crate::ROLE_TAG.to_string(), role.to_string());
        let ip = self.gossip.advertise().ip().to_string();
        let tags = service_tags(
            &base,
            zone,
            &self.hostname,
            &ip,
            &a.services,
            self.cloudy_compat,
        );
        self.gossip.set_tags(tags)?;
        a.zone = zone.to_string();
        a.base_tags = base;
        Ok(())
    }
    fn announced(&self) -> std::sync::MutexGuard<'_, Announced> {
        self.announced.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Replace the extra tags (services are re-announced by `set_services`).
    pub fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<(), GossipError> {
        self.gossip.set_tags(tags)
    }
    /// Send a Serf user event.
    pub fn user_event(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), GossipError> {
        self.gossip.user_event(name, payload, coalesce)
    }
    /// The gossip node (queries, stats, coordinates).
    pub fn gossip(&self) -> &Handle {
        &self.gossip
    }
    /// Leave gracefully.
    pub async fn leave(&self) {
        self.gossip.leave().await
    }
    /// Stop without leaving.
    pub fn shutdown(&self) {
        self.gossip.shutdown()
    }
}
