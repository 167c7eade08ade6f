//! The Community page: members, the services they offer (one row per
//! service however many schemes announce it, nearest first), and recent
//! membership events.

use std::fmt::Write;
use std::sync::Arc;

use nuvol_catalog::{CatalogService, MemberView, ServiceQuery, Source};

use crate::panel::esc;
use crate::Ctx;

pub(super) fn community(ctx: &Ctx) -> String {
    let Some(d) = ctx.node.discovery() else {
        return community_html(None, None);
    };
    let q = ServiceQuery {
        near: true,
        ..Default::default()
    };
    let mut b = community_html(Some(&d.members()), Some(&d.services(&q)));
    b.push_str(&events_html(&d.recent_events(None)));
    b
}

/// Membership and user events shown on the Community page (queries are
/// left to the API: they are answers waiting to happen, not news).
const PANEL_EVENTS: usize = 20;

/// "Recent events", newest first. `data-last` is the newest id: panel.js
/// follows `/api/v1/events?since=<it>` and refreshes the page's sections
/// when the membership changes.
fn events_html(events: &[Arc<nuvol_catalog::LoggedEvent>]) -> String {
    let last = events.last().map_or(0, |e| e.id);
    let mut b = format!("<h2>Recent events</h2><div id=events data-last={last}>");
    let shown: Vec<_> = events
        .iter()
        .rev()
        .filter(|e| !matches!(e.event, nuvol_gossip::Event::Query(_)))
        .take(PANEL_EVENTS)
        .collect();
    if shown.is_empty() {
        b.push_str("<p>Nothing happened since the agent started.</p></div>");
        return b;
    }
    b.push_str("<table><tr><th>time (UTC)</th><th>event</th><th>member</th><th>detail</th></tr>");
    for e in shown {
        let (ty, data) = crate::discovery::event_json(&e.event);
        let secs = e.at_unix_ms / 1000 % 86_400;
        let member = data["member"]["name"].as_str().unwrap_or("");
        let detail = match ty {
            "user" => format!(
                "{} {}",
                data["name"].as_str().unwrap_or(""),
                data["payload"].as_str().unwrap_or("")
            ),
            _ => data["member"]["address"].as_str().unwrap_or("").to_string(),
        };
        let _ = write!(
            b,
            "<tr class=ev-{ty}><td>{:02}:{:02}:{:02}</td><td>{ty}</td><td>{}</td><td>{}</td></tr>",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            esc(member),
            esc(&detail)
        );
    }
    b.push_str("</table></div>");
    b
}

/// Milliseconds to 0.01 (a float's last digits are noise on a page).
fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.2} ms"))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "–".to_string()
    } else {
        esc(s)
    }
}

/// Where a service can be opened in a browser: web services only
/// (`_http._tcp`, `_https._tcp`), at their TXT `path` if they give one.
fn service_link(s: &nuvol_catalog::Service) -> Option<String> {
    let scheme = match s.service_type.as_str() {
        "_http._tcp" => "http",
        "_https._tcp" => "https",
        _ => return None,
    };
    let addr = s.addr?;
    let path = s
        .txt
        .get("path")
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .map_or("/", String::as_str);
    Some(match addr {
        std::net::IpAddr::V6(a) => format!("{scheme}://[{a}]:{}{path}", s.port),
        std::net::IpAddr::V4(a) => format!("{scheme}://{a}:{}{path}", s.port),
    })
}

fn source_word(s: Source) -> &'static str {
    match s {
        Source::Serf => "serf",
        Source::Cloudy => "cloudy",
        Source::Mdns => "mdns",
    }
}

/// The members table, by zone (a heading row per zone, super nodes first
/// and marked), name and status first, with the overlay address.
fn members_html(members: &[MemberView]) -> String {
    let mut b = String::from(
        "<div class=wrap><table><tr><th>Member</th><th>Status</th><th>Health</th><th>Zone</th>\
<th>Role</th><th>Address</th><th>Overlay</th><th>Hops</th><th>Loss</th><th>RTT</th></tr>",
    );
    let mut sorted: Vec<&MemberView> = members.iter().collect();
    sorted.sort_by_key(|m| (m.zone.clone(), m.role != "super-node", m.name.clone()));
    let mut zone: Option<&str> = None;
    for m in sorted {
        if zone != Some(m.zone.as_str()) {
            zone = Some(m.zone.as_str());
            let supers: Vec<String> = members
                .iter()
                .filter(|x| x.zone == m.zone && x.role == "super-node")
                .map(|x| format!("{} ★", esc(&x.name)))
                .collect();
            let _ = write!(
                b,
                "<tr class=zone><th colspan=10>zone {}{}</th></tr>",
                or_dash(&m.zone),
                if supers.is_empty() {
                    String::new()
                } else {
                    format!(" · super node: {}", supers.join(", "))
                }
            );
        }
        let super_node = m.role == "super-node";
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if super_node { " class=super-node" } else { "" },
            esc(&m.name),
            esc(m.status),
            esc(m.health),
            or_dash(&m.zone),
            or_dash(&m.role),
            esc(&m.address),
            or_dash(m.tags.get(nuvol_catalog::OVERLAY_TAG).map_or("", String::as_str)),
            m.hops.map_or_else(|| "–".to_string(), |h| h.to_string()),
            m.loss.map_or_else(|| "–".to_string(), |l| format!("{:.0}%", l * 100.0)),
            ms(m.rtt_estimate_ms.or(m.rtt_ms)),
        );
    }
    b.push_str("</table></div>");
    b
}

/// The services table: one row per service, name and a link first, then
/// type, node, address, port, the schemes it was seen through, its node's
/// health and RTT.
fn services_html(services: &[CatalogService]) -> String {
    let mut b = String::from(
        "<div class=wrap><table><tr><th>Service</th><th>Open</th><th>Type</th><th>Node</th>\
<th>Address</th><th>Port</th><th>Sources</th><th>Health</th><th>RTT</th></tr>",
    );
    for c in services {
        let s = &c.service;
        let open = service_link(s).map_or_else(
            || "–".to_string(),
            |u| format!("<a href=\"{}\" rel=noopener>open</a>", esc(&u)),
        );
        let sources: Vec<&str> = c.sources.iter().map(|x| source_word(*x)).collect();
        let _ = write!(
            b,
            "<tr class=health-{h}><td>{}</td><td>{open}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{h}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(&s.service_type),
            esc(&s.node),
            s.addr.map_or_else(|| "–".to_string(), |a| a.to_string()),
            s.port,
            sources.join(", "),
            ms(s.rtt_estimate_ms.or(s.rtt_ms)),
            h = esc(s.health),
        );
    }
    b.push_str("</table></div>");
    b
}

/// The community page body from the catalog's members and services.
fn community_html(members: Option<&[MemberView]>, services: Option<&[CatalogService]>) -> String {
    let mut b = String::from("<h2>Members</h2><div id=members>");
    match members {
        Some(m) => b.push_str(&members_html(m)),
        None => b.push_str("<p>Discovery is not running on this box, so no members are known.</p>"),
    }
    b.push_str("</div><h2>Services, nearest first</h2><div id=community-services>");
    match services {
        Some([]) => b.push_str("<p>No community services known.</p>"),
        Some(s) => b.push_str(&services_html(s)),
        None => b.push_str("<p>Discovery is not running on this box.</p>"),
    }
    b.push_str("</div>");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn svc(
        name: &str,
        node: &str,
        ty: &str,
        addr: &str,
        port: u16,
        sources: &[Source],
    ) -> CatalogService {
        CatalogService {
            service: nuvol_catalog::Service {
                name: name.into(),
                service_type: ty.into(),
                node: node.into(),
                zone: String::new(),
                addr: addr.parse().ok(),
                overlay_addr: None,
                port,
                txt: BTreeMap::new(),
                source: sources[0],
                healthy: true,
                health: "alive",
                rtt_estimate_ms: Some(13.424511),
                rtt_ms: None,
                hops: Some(0),
                loss: None,
            },
            sources: sources.to_vec(),
        }
    }

    fn member(name: &str, status: &'static str) -> MemberView {
        MemberView {
            name: name.into(),
            addr: "127.0.0.1:7946".into(),
            address: "127.0.0.1".into(),
            port: 7946,
            zone: "south".into(),
            role: "ordinary-node".into(),
            status,
            health: "dead",
            tags: BTreeMap::from([("x".into(), "y".into())]),
            rtt_estimate_ms: None,
            rtt_ms: Some(1.2609469999999998),
            hops: Some(2),
            loss: Some(0.25),
        }
    }

    fn heads(h: &str) -> Vec<&str> {
        h.split("<th>")
            .skip(1)
            .map(|x| x.split('<').next().unwrap_or(""))
            .collect()
    }

    #[test]
    fn recent_events_newest_first_without_queries() {
        let log = nuvol_catalog::EventLog::new();
        log.push(nuvol_gossip::Event::User {
            ltime: 1,
            name: "deploy".into(),
            payload: b"<v2>".to_vec(),
            coalesce: false,
        });
        log.push(nuvol_gossip::Event::User {
            ltime: 2,
            name: "second".into(),
            payload: Vec::new(),
            coalesce: false,
        });
        let h = events_html(&log.since(None));
        assert!(h.contains("data-last=2"), "{h}");
        let (a, b) = (h.find("second").unwrap(), h.find("deploy").unwrap());
        assert!(a < b, "newest first: {h}");
        assert!(h.contains("deploy &lt;v2&gt;"), "escaped: {h}");
        let empty = events_html(&[]);
        assert!(empty.contains("data-last=0") && empty.contains("Nothing happened"));
    }

    #[test]
    fn members_by_zone_super_nodes_first_and_marked() {
        let mut a = member("a2", "alive");
        a.zone = "zone-a".into();
        let mut sup = member("a1-super", "alive");
        sup.zone = "zone-a".into();
        sup.role = "super-node".into();
        sup.tags
            .insert(nuvol_catalog::OVERLAY_TAG.into(), "100.64.0.9".into());
        let mut b = member("b1", "alive");
        b.zone = "zone-b".into();
        let h = members_html(&[b, a, sup]);
        let pos = |x: &str| h.find(x).unwrap_or_else(|| panic!("{x} in {h}"));
        assert!(pos("zone zone-a · super node: a1-super ★") < pos("<td>a1-super</td>"));
        assert!(pos("<td>a1-super</td>") < pos(">a2<"));
        assert!(pos(">a2<") < pos("zone zone-b"));
        assert!(pos("zone zone-b") < pos(">b1<"));
        assert!(h.contains("<td>100.64.0.9</td>"), "{h}");
        assert!(h.contains("<tr class=super-node>"), "{h}");
    }

    #[test]
    fn one_row_per_service_with_human_columns_and_its_sources() {
        use Source::*;
        let services = [
            svc(
                "web",
                "box1",
                "_http._tcp",
                "10.0.0.7",
                8080,
                &[Serf, Cloudy, Mdns],
            ),
            svc(
                "etcd",
                "box1",
                "_etcd-server._tcp",
                "10.0.0.7",
                2380,
                &[Serf, Cloudy],
            ),
            svc(
                "Syncthing GUI",
                "box1",
                "_http._tcp",
                "fd00::1",
                8384,
                &[Serf],
            ),
        ];
        let members = [member("go-b", "failed")];
        let h = community_html(Some(&members), Some(&services));
        assert_eq!(
            heads(&h),
            [
                "Member", "Status", "Health", "Zone", "Role", "Address", "Overlay", "Hops", "Loss",
                "RTT", "Service", "Open", "Type", "Node", "Address", "Port", "Sources", "Health",
                "RTT",
            ],
            "{h}"
        );
        assert!(
            h.contains(
                "<tr><td>go-b</td><td>failed</td><td>dead</td><td>south</td><td>ordinary-node</td>\
<td>127.0.0.1</td><td>–</td><td>2</td><td>25%</td><td>1.26 ms</td></tr>"
            ),
            "{h}"
        );
        assert!(
            h.contains("<tr class=health-alive><td>web</td><td><a href=\"http://10.0.0.7:8080/\" rel=noopener>open</a></td>\
<td>_http._tcp</td><td>box1</td><td>10.0.0.7</td><td>8080</td><td>serf, cloudy, mdns</td><td>alive</td><td>13.42 ms</td></tr>"),
            "{h}"
        );
        assert_eq!(
            h.matches("<tr class=health-").count(),
            3,
            "one row each: {h}"
        );
        assert!(h.contains("href=\"http://[fd00::1]:8384/\""), "{h}");
        // etcd is no web page: no link
        assert!(h.contains("<td>etcd</td><td>–</td>"), "{h}");
        assert!(!h.contains("tags") && !h.contains('{'), "{h}");
        let none = community_html(None, None);
        assert!(none.contains("Discovery is not running"));
        assert!(community_html(Some(&[]), Some(&[])).contains("No community services known"));
    }

    #[test]
    fn links_only_for_web_services_at_their_path() {
        use Source::*;
        let mut s = svc("gui", "n", "_https._tcp", "10.0.0.2", 8443, &[Mdns]).service;
        s.txt.insert("path".into(), "/ui/".into());
        assert_eq!(
            service_link(&s).as_deref(),
            Some("https://10.0.0.2:8443/ui/")
        );
        s.txt.insert("path".into(), "//evil.example/".into());
        assert_eq!(service_link(&s).as_deref(), Some("https://10.0.0.2:8443/"));
        s.service_type = "_ssh._tcp".into();
        assert_eq!(service_link(&s), None);
    }
}
