//! nuvol-catalog: one catalog of members and services learned from Serf
//! gossip (nuvol's own `svc:` tags and Cloudy's `services` tag) and from
//! mDNS/DNS-SD, with Vivaldi RTT estimates, sorted nearest first.
#![forbid(unsafe_code)]

pub mod cloudy;
pub mod discovery;
pub mod events;
pub mod merge;

pub use discovery::{DiscoveryConfig, DiscoveryHandle, LocalService};
pub use events::{EventLog, LoggedEvent, RECENT_EVENTS};
pub use merge::{merge, CatalogService, Sighting};

use nuvol_gossip::{Health, Member, Status};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Tag prefix of nuvol's own service scheme: `svc:<name>=<type>:<port>`
/// (for example `svc:web=_http._tcp:80`), readable with
/// `serf members -tag svc:web=.*`.
pub const SVC_PREFIX: &str = "svc:";
/// Tag holding the locality zone (free text from `[discovery] zone`).
pub const ZONE_TAG: &str = "zone";
/// Tag holding the node's overlay IPv4 address (`[overlay]`, see
/// docs/overlay.md).
pub const OVERLAY_TAG: &str = "ov4";
/// Tag holding the role: `super-node` or `ordinary-node` (Serf's old
/// role-only metadata also lands here).
pub const ROLE_TAG: &str = "role";

/// Where an entry was learned (in this order in a service's `sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// nuvol `svc:` tag over Serf
    Serf,
    /// Cloudy/avahi-ps `services` tag over Serf
    Cloudy,
    /// mDNS/DNS-SD
    Mdns,
}

/// One service offered somewhere, as one source tells it (the catalog
/// lists [`CatalogService`]s: these merged over the sources).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// service instance name or description
    pub name: String,
    /// DNS-SD type, e.g. `_http._tcp`
    pub service_type: String,
    /// node that offers it
    pub node: String,
    /// node zone (locality, empty if unknown)
    pub zone: String,
    /// address to connect to
    pub addr: Option<IpAddr>,
    /// the node's community-overlay address (its `ov4` tag), reachable
    /// from every zone when both boxes are in the overlay
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay_addr: Option<IpAddr>,
    /// port
    pub port: u16,
    /// TXT record / extra attributes
    pub txt: BTreeMap<String, String>,
    /// where we learned it
    pub source: Source,
    /// is the node alive
    pub healthy: bool,
    /// the node's memberlist health: `alive`, `suspect`, `dead`, `left`
    /// (`alive` for mDNS entries, which are dropped when they expire)
    pub health: &'static str,
    /// Vivaldi RTT estimate (ms)
    pub rtt_estimate_ms: Option<f64>,
    /// measured probe RTT (ms)
    pub rtt_ms: Option<f64>,
    /// hops to the node, from the TTL of its packets (gossip: initial TTL
    /// guessed as 64/128/255; mDNS: 255 − TTL); `None` if unknown
    pub hops: Option<u8>,
    /// share of recent direct probes of the node left unanswered (0.0–1.0;
    /// `None` until 4 probes, and for mDNS entries)
    pub loss: Option<f64>,
}

/// A member as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    /// node name
    pub name: String,
    /// gossip address `ip:port`
    pub addr: String,
    /// gossip IP alone
    pub address: String,
    /// gossip port alone
    pub port: u16,
    /// zone
    pub zone: String,
    /// role (`super-node`, `ordinary-node` or empty)
    pub role: String,
    /// Serf's status, as `serf members` prints it: `alive`, `leaving`,
    /// `left`, `failed` (a suspect node is still `alive` here)
    pub status: &'static str,
    /// memberlist's view: `alive`, `suspect`, `dead`, `left`
    pub health: &'static str,
    /// tags
    pub tags: BTreeMap<String, String>,
    /// Vivaldi RTT estimate (ms)
    pub rtt_estimate_ms: Option<f64>,
    /// measured probe RTT (ms)
    pub rtt_ms: Option<f64>,
    /// hops from the TTL of its last gossip packet (0 = same link)
    pub hops: Option<u8>,
    /// share of the last 32 direct probes left unanswered (0.0–1.0,
    /// `None` until 4 probes)
    pub loss: Option<f64>,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1000.0)
}

/// The members as the API lists them.
pub fn member_views(members: &[Member]) -> Vec<MemberView> {
    members
        .iter()
        .map(|m| MemberView {
            name: m.name.clone(),
            addr: m.addr.to_string(),
            address: m.addr.ip().to_string(),
            port: m.addr.port(),
            zone: m.tags.get(ZONE_TAG).cloned().unwrap_or_default(),
            role: m.tags.get(ROLE_TAG).cloned().unwrap_or_default(),
            status: m.status.as_str(),
            health: m.health.as_str(),
            tags: m.tags.clone(),
            rtt_estimate_ms: ms(m.rtt_estimate),
            rtt_ms: ms(m.rtt),
            hops: m.hops,
            loss: m.loss,
        })
        .collect()
}

/// Parse one `svc:` tag value `<type>:<port>`.
fn parse_svc(v: &str) -> Option<(String, u16)> {
    let (t, p) = v.rsplit_once(':')?;
    Some((t.to_string(), p.parse().ok()?))
}

/// Services announced by gossip members (both tag schemes), one per
/// announcement.
pub fn services_from_members(members: &[Member]) -> Vec<Service> {
    sightings_from_members(members)
        .into_iter()
        .map(|s| s.service)
        .collect()
}

/// [`services_from_members`] with the host each Cloudy announcement names.
pub fn sightings_from_members(members: &[Member]) -> Vec<Sighting> {
    let mut out = Vec::new();
    for m in members {
        if matches!(m.status, Status::Left) {
            continue;
        }
        let zone = m.tags.get(ZONE_TAG).cloned().unwrap_or_default();
        let healthy = m.status == Status::Alive;
        let overlay_addr = m
            .tags
            .get(OVERLAY_TAG)
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .map(IpAddr::V4);
        let base =
            |name: String, ty: String, addr: Option<IpAddr>, port: u16, txt, source| Service {
                name,
                service_type: ty,
                node: m.name.clone(),
                zone: zone.clone(),
                addr,
                overlay_addr,
                port,
                txt,
                source,
                healthy,
                health: m.health.as_str(),
                rtt_estimate_ms: ms(m.rtt_estimate),
                rtt_ms: ms(m.rtt),
                hops: m.hops,
                loss: m.loss,
            };
        for (k, v) in &m.tags {
            if let Some(name) = k.strip_prefix(SVC_PREFIX) {
                if let Some((ty, port)) = parse_svc(v) {
                    out.push(Sighting::new(base(
                        name.to_string(),
                        ty,
                        Some(m.addr.ip()),
                        port,
                        BTreeMap::new(),
                        Source::Serf,
                    )));
                }
            }
        }
        if let Some(tag) = m.tags.get(cloudy::TAG) {
            if let Ok(list) = cloudy::decode(tag) {
                for s in list {
                    let addr = s.ip.parse().ok().or(Some(m.addr.ip()));
                    let mut txt = BTreeMap::new();
                    if !s.txt.is_empty() {
                        txt.insert("txt".to_string(), s.txt.clone());
                    }
                    if !s.microcloud.is_empty() {
                        txt.insert("microcloud".to_string(), s.microcloud.clone());
                    }
                    // `m` is `<host>.<cloud>.local`
                    let host = s.host.split('.').next().filter(|h| !h.is_empty());
                    out.push(Sighting {
                        host: host.map(str::to_string),
                        service: base(
                            s.description,
                            cloudy::dns_sd_type(&s.service_type),
                            addr,
                            s.port,
                            txt,
                            Source::Cloudy,
                        ),
                    });
                }
            }
        }
    }
    out
}

/// The catalog: the members' announcements and `external` ones (mDNS)
/// merged into one entry per service (see [`merge`]).
pub fn catalog(members: &[Member], external: Vec<Service>) -> Vec<CatalogService> {
    let mut all = sightings_from_members(members);
    all.extend(external.into_iter().map(|s| Sighting {
        host: Some(s.node.clone()),
        service: s,
    }));
    merge(all)
}

/// What a client asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceQuery {
    /// only this DNS-SD type
    pub service_type: Option<String>,
    /// sort nearest first
    pub near: bool,
    /// our zone, preferred on ties
    pub zone: Option<String>,
    /// only healthy providers
    pub healthy_only: bool,
}

/// How much farther a provider in another zone than `zone` counts in
/// `near` ordering: the zone is provisioned locality (the micro cloud),
/// steadier than RTT estimates, so a box of our zone wins unless another
/// zone's is more than this many times nearer.
pub const OTHER_ZONE_FACTOR: f64 = 4.0;

/// Filter and sort: healthy first (providers whose node is `suspect` after
/// the other healthy ones), then by RTT (the Vivaldi estimate if known, else
/// the measured RTT; unknown last) inflated by probe loss (×(1 + 4·loss):
/// a path that drops a quarter of the probes counts as twice as far) and,
/// for another zone than `zone`, by [`OTHER_ZONE_FACTOR`]; ties prefer
/// `zone`, then fewer hops, then by node.
pub fn query(mut all: Vec<CatalogService>, q: &ServiceQuery) -> Vec<CatalogService> {
    all.retain(|c| {
        q.service_type
            .as_ref()
            .is_none_or(|t| c.service.service_type == *t)
    });
    if q.healthy_only {
        all.retain(|c| c.service.healthy);
    }
    if q.near {
        let key = |c: &CatalogService| {
            let s = &c.service;
            let same_zone = q.zone.as_ref().is_some_and(|z| *z == s.zone);
            let rtt = s.rtt_estimate_ms.or(s.rtt_ms).unwrap_or(f64::INFINITY)
                * (1.0 + 4.0 * s.loss.unwrap_or(0.0).clamp(0.0, 1.0))
                * if q.zone.is_some() && !same_zone {
                    OTHER_ZONE_FACTOR
                } else {
                    1.0
                };
            // 0.1 ms buckets so near-equal RTTs count as ties
            let bucket = if rtt.is_finite() {
                (rtt * 10.0).round() as u64
            } else {
                u64::MAX
            };
            let rank = if !s.healthy {
                2u8
            } else if s.health == Health::Suspect.as_str() {
                1
            } else {
                0
            };
            let hops = s.hops.unwrap_or(u8::MAX);
            (
                rank,
                bucket,
                !same_zone,
                hops,
                s.node.clone(),
                s.name.clone(),
            )
        };
        all.sort_by_key(key);
    } else {
        all.sort_by(|a, b| {
            (&a.service.node, &a.service.name).cmp(&(&b.service.node, &b.service.name))
        });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn member(
        name: &str,
        zone: &str,
        rtt_ms: u64,
        status: Status,
        tags: &[(&str, &str)],
    ) -> Member {
        let mut t: BTreeMap<String, String> = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        t.insert(ZONE_TAG.into(), zone.into());
        Member {
            name: name.into(),
            addr: SocketAddr::from(([10, 0, 0, 1], 7946)),
            tags: t,
            status,
            health: if status == Status::Alive {
                Health::Alive
            } else {
                Health::Dead
            },
            hops: None,
            loss: None,
            rtt: None,
            rtt_estimate: Some(Duration::from_millis(rtt_ms)),
            coordinate: None,
            vsn: [1, 5, 2, 2, 5, 4],
        }
    }

    #[test]
    fn near_prefers_the_zone_unless_another_is_much_nearer() {
        let web = &[("svc:web", "_http._tcp:80")];
        let mut lossy_other = member("other-lossy", "a", 3, Status::Alive, web);
        lossy_other.loss = Some(0.23);
        let same = member("same", "b", 6, Status::Alive, web);
        let much_nearer = member("other-near", "a", 1, Status::Alive, web);
        let got = query(
            catalog(&[lossy_other, same, much_nearer], vec![]),
            &ServiceQuery {
                near: true,
                zone: Some("b".into()),
                ..Default::default()
            },
        );
        let order: Vec<&str> = got.iter().map(|c| c.service.node.as_str()).collect();
        assert_eq!(order, vec!["other-near", "same", "other-lossy"]);
    }

    #[test]
    fn near_counts_loss_then_zone_then_hops() {
        let web = &[("svc:web", "_http._tcp:80")];
        let mut lossy = member("lossy", "other", 10, Status::Alive, web);
        lossy.loss = Some(0.25); // counts as 20 ms (×4: another zone)
        let mut far_hops = member("far-hops", "other", 12, Status::Alive, web);
        far_hops.hops = Some(3);
        let mut near_hops = member("near-hops", "other", 12, Status::Alive, web);
        near_hops.hops = Some(1);
        let same_zone = member("same-zone", "z", 12, Status::Alive, web);
        let got = query(
            catalog(&[lossy, far_hops, near_hops, same_zone], vec![]),
            &ServiceQuery {
                near: true,
                zone: Some("z".into()),
                ..Default::default()
            },
        );
        let order: Vec<&str> = got.iter().map(|c| c.service.node.as_str()).collect();
        assert_eq!(order, vec!["same-zone", "near-hops", "far-hops", "lossy"]);
    }

    #[test]
    fn services_carry_the_overlay_address_of_their_node() {
        let ms = vec![
            member(
                "in",
                "b",
                5,
                Status::Alive,
                &[("svc:web", "_http._tcp:80"), (OVERLAY_TAG, "100.64.3.4")],
            ),
            member(
                "out",
                "a",
                5,
                Status::Alive,
                &[("svc:web", "_http._tcp:80")],
            ),
            member(
                "bad",
                "a",
                5,
                Status::Alive,
                &[("svc:web", "_http._tcp:80"), (OVERLAY_TAG, "fd00::1")],
            ),
        ];
        let got = services_from_members(&ms);
        let by = |n: &str| got.iter().find(|s| s.node == n).unwrap().overlay_addr;
        assert_eq!(by("in"), Some("100.64.3.4".parse().unwrap()));
        assert_eq!(by("out"), None);
        assert_eq!(by("bad"), None, "only an IPv4 address");
        let json = serde_json::to_value(&got[0]).unwrap();
        assert_eq!(json["overlay_addr"], "100.64.3.4");
    }

    #[test]
    fn nearest_healthy_first_ties_prefer_zone() {
        let ms = vec![
            member(
                "far",
                "super",
                80,
                Status::Alive,
                &[("svc:web", "_http._tcp:80")],
            ),
            member(
                "near-dead",
                "super",
                1,
                Status::Failed,
                &[("svc:web", "_http._tcp:80")],
            ),
            member(
                "tie-other",
                "ordinary",
                10,
                Status::Alive,
                &[("svc:web", "_http._tcp:8080")],
            ),
            member(
                "tie-same",
                "super",
                10,
                Status::Alive,
                &[("svc:web", "_http._tcp:80")],
            ),
            member(
                "ssh",
                "super",
                1,
                Status::Alive,
                &[("svc:ssh", "_ssh._tcp:22")],
            ),
        ];
        let all = catalog(&ms, Vec::new());
        let q = ServiceQuery {
            service_type: Some("_http._tcp".into()),
            near: true,
            zone: Some("super".into()),
            healthy_only: false,
        };
        let r = query(all, &q);
        let order: Vec<&str> = r.iter().map(|s| s.service.node.as_str()).collect();
        assert_eq!(order, vec!["tie-same", "tie-other", "far", "near-dead"]);
        assert_eq!(r[1].service.port, 8080);
    }

    #[test]
    fn suspect_providers_sort_after_healthy_ones() {
        let web = &[("svc:web", "_http._tcp:80")];
        let mut near_suspect = member("near-suspect", "", 1, Status::Alive, web);
        near_suspect.health = Health::Suspect;
        near_suspect.hops = Some(0);
        near_suspect.loss = Some(0.75);
        let ms = vec![
            near_suspect,
            member("far", "", 50, Status::Alive, web),
            member("dead", "", 1, Status::Failed, web),
        ];
        let r = query(
            catalog(&ms, Vec::new()),
            &ServiceQuery {
                near: true,
                ..Default::default()
            },
        );
        let order: Vec<&str> = r.iter().map(|s| s.service.node.as_str()).collect();
        assert_eq!(order, vec!["far", "near-suspect", "dead"]);
        let r1 = &r[1].service;
        assert_eq!(r1.health, "suspect");
        assert!(r1.healthy, "a suspect node is still alive for Serf");
        assert_eq!((r1.hops, r1.loss), (Some(0), Some(0.75)));
        let v = member_views(&ms);
        assert_eq!((v[0].status, v[0].health), ("alive", "suspect"));
        assert_eq!(v[0].loss, Some(0.75));
    }

    /// What `nuvol agent` announces for web, syncthing (a second announce
    /// with instance "Syncthing GUI") and etcd (two announces) on `box1`,
    /// read back from the member's tags: one entry per service, named by
    /// the instance or the bundle, never `etcd-2` or `etcd_on_box1`.
    #[test]
    fn a_nuvol_box_announcing_in_both_schemes_is_listed_once_per_service() {
        let svc = |name: &str, ty: &str, port: u16, description: &str| LocalService {
            name: name.into(),
            service_type: ty.into(),
            port,
            description: description.into(),
        };
        let announced = [
            svc("web", "_http._tcp", 80, "web on box1"),
            svc("syncthing", "_syncthing._tcp", 22000, "syncthing on box1"),
            svc("syncthing-2", "_http._tcp", 8384, "Syncthing GUI"),
            svc("etcd", "_etcd-client._tcp", 2379, "etcd on box1"),
            svc("etcd-2", "_etcd-server._tcp", 2380, "etcd on box1"),
        ];
        let tags = discovery::service_tags(
            &BTreeMap::new(),
            "north",
            "box1",
            "10.0.0.1",
            &announced,
            true,
        );
        let mut m = member("box1", "north", 3, Status::Alive, &[]);
        m.tags = tags;
        assert_eq!(services_from_members(std::slice::from_ref(&m)).len(), 10);
        let c = query(catalog(&[m], Vec::new()), &ServiceQuery::default());
        let got: Vec<(&str, u16, &[Source])> = c
            .iter()
            .map(|s| (s.service.name.as_str(), s.service.port, &s.sources[..]))
            .collect();
        let both: &[Source] = &[Source::Serf, Source::Cloudy];
        assert_eq!(
            got,
            [
                ("Syncthing GUI", 8384, both),
                ("etcd", 2379, both),
                ("etcd", 2380, both),
                ("syncthing", 22000, both),
                ("web", 80, both),
            ]
        );
    }

    #[test]
    fn cloudy_tag_becomes_services() {
        let tag = cloudy::encode(&[cloudy::CloudyService {
            service_type: "syncthing".into(),
            description: "Syncthing_instance_running".into(),
            host: "cloudy1.guifi.local".into(),
            ip: "10.1.2.3".into(),
            port: 8384,
            microcloud: "demo".into(),
            txt: "node_id=X".into(),
        }])
        .unwrap();
        let m = member("cloudy1", "", 5, Status::Alive, &[(cloudy::TAG, &tag)]);
        let s = services_from_members(&[m]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].source, Source::Cloudy);
        assert_eq!(s[0].addr, "10.1.2.3".parse().ok());
        assert_eq!(s[0].port, 8384);
        assert_eq!(s[0].service_type, "_syncthing._tcp");
        assert_eq!(s[0].name, "Syncthing_instance_running");
        assert_eq!(s[0].txt.get("txt").map(String::as_str), Some("node_id=X"));
        assert_eq!(s[0].txt.get("microcloud").map(String::as_str), Some("demo"));
    }
}
