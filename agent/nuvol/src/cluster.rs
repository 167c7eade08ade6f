//! Services that span boxes: a bundle with a `[cluster]` section, on a box
//! with the overlay on, starts only once its cluster is decided.
//!
//! Every [`POLL`] this task looks, for each such bundle without a decision:
//!
//! - a member already running (its `join_service` announced by a healthy
//!   node of the overlay): this box joins it (`join`, e.g. etcd's
//!   `member/add`) and starts with `{state}` = `existing` and the member
//!   list the cluster answered;
//! - else the boxes with the bundle installed (this one and every box of the
//!   overlay whose bundle share lists it), sorted by node name: when there
//!   are `size` of them and this box is among the first `size`, it starts a
//!   new cluster with those, once two looks [`POLL`] apart agree (so boxes
//!   that install at nearly the same time see the same list);
//! - else it waits, and the service's status says for what.
//!
//! The decision is kept in `<state>/services/NAME/cluster.json`, so a
//! restart or a reboot starts the member the same way; it goes when the
//! bundle is removed. Everything a peer says is hostile until checked: node
//! names and member URLs must be plain names and `http://IP:port`, answers
//! are read within a byte and time budget, at most [`MAX_MEMBERS`] members.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nuvol_bundle::manifest::{Cluster, ClusterPlace, JoinKind};
use nuvol_bundle::Store;
use serde::{Deserialize, Serialize};

use crate::discovery::Discovery;
use crate::services::ServicesHandle;

/// How often undecided clusters are looked at.
pub const POLL: Duration = Duration::from_secs(10);
/// Most members read from a cluster's answer.
pub const MAX_MEMBERS: usize = 16;
/// Largest answer read from a member asked to add us.
const MAX_ANSWER: u64 = 64 * 1024;
/// Connect and answer time for a join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
const FILE: &str = "cluster.json";

/// This box, as its cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Gossip node name.
    pub node: String,
    /// Overlay IPv4 address.
    pub addr: IpAddr,
}

/// The stored decision (format 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(default = "nuvol_durable::json::first_format")]
    pub format: u32,
    pub node: String,
    pub addr: IpAddr,
    pub members: Vec<String>,
    /// Joined a running cluster (`{state}` = `existing`).
    pub existing: bool,
    /// A newer agent's fields, kept.
    #[serde(flatten)]
    pub extra: nuvol_durable::json::Extra,
}

impl Decision {
    fn new(me: &Me, members: Vec<String>, existing: bool) -> Decision {
        Decision {
            format: nuvol_durable::json::FIRST_FORMAT,
            node: me.node.clone(),
            addr: me.addr,
            members,
            existing,
            extra: Default::default(),
        }
    }

    /// What the bundle's `[cluster.env]` is filled in with.
    pub fn place(&self) -> ClusterPlace {
        ClusterPlace {
            node: self.node.clone(),
            addr: self.addr,
            members: self.members.clone(),
            existing: self.existing,
        }
    }
}

fn path(state_dir: &Path, bundle: &str) -> PathBuf {
    state_dir.join("services").join(bundle).join(FILE)
}

/// The decision for `bundle`, if one was made.
pub fn read(state_dir: &Path, bundle: &str) -> Result<Option<Decision>, String> {
    nuvol_durable::json::read(&path(state_dir, bundle), MAX_ANSWER).map_err(|e| e.to_string())
}

fn write(state_dir: &Path, bundle: &str, d: &Decision) -> std::io::Result<()> {
    let p = path(state_dir, bundle);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    nuvol_durable::json::write(&p, d, nuvol_durable::Mode::Public)
}

/// A box of the overlay that could be a member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub addr: IpAddr,
}

/// What to do next for one undecided bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Why not yet.
    Wait(String),
    /// Start a new cluster of these members (written).
    Form(Vec<String>),
    /// Ask this running member to add us (or follow it).
    Join(Running),
}

/// A member that runs: where its `join_service` answers, and its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub node: String,
    pub at: SocketAddr,
}

/// A gossip node name fit to be written into a service's environment.
pub fn plain_name(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The rule of the module docs. `with_bundle`: the other boxes that have
/// the bundle; `running`: members that answer for joins.
pub fn decide(
    bundle: &str,
    c: &Cluster,
    me: &Me,
    with_bundle: &[Peer],
    running: &[Running],
) -> Next {
    if let Some(r) = running.iter().find(|r| plain_name(&r.node)) {
        return match c.join {
            Some(_) => Next::Join(r.clone()),
            None => Next::Wait(format!(
                "a {bundle} cluster runs already and this bundle cannot join one"
            )),
        };
    }
    let mut all: Vec<Peer> = with_bundle
        .iter()
        .filter(|p| p.node != me.node && plain_name(&p.node))
        .cloned()
        .collect();
    all.push(Peer {
        node: me.node.clone(),
        addr: me.addr,
    });
    all.sort();
    all.dedup_by(|a, b| a.node == b.node);
    let size = usize::from(c.size);
    let names = || {
        all.iter()
            .map(|p| p.node.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all.len() < size {
        return Next::Wait(format!(
            "waiting for {size} boxes with {bundle} in the overlay to form its cluster; {} so far: {}",
            all.len(),
            names()
        ));
    }
    let first = &all[..size];
    if first.iter().any(|p| p.node == me.node) {
        Next::Form(first.iter().map(|p| c.member_of(&p.node, p.addr)).collect())
    } else {
        Next::Wait(format!(
            "{} form the {bundle} cluster; this box joins once it runs",
            first
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// One member of an etcd cluster as its v3 JSON gateway writes it.
#[derive(Debug, Deserialize)]
struct EtcdMember {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "peerURLs")]
    peer_urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct EtcdMembers {
    #[serde(default)]
    members: Vec<EtcdMember>,
}

/// `http://IP:port` and nothing else.
fn plain_url(u: &str) -> bool {
    u.strip_prefix("http://")
        .is_some_and(|a| a.parse::<SocketAddr>().is_ok())
}

/// The member list to start with after joining, from an etcd answer:
/// `name=url` for each named member (ours named by us, since an added
/// member has no name until it starts). Errors name what is wrong.
pub fn etcd_members(answer: &[u8], me: &str, my_url: &str) -> Result<Vec<String>, String> {
    let m: EtcdMembers =
        serde_json::from_slice(answer).map_err(|e| format!("not an etcd member list: {e}"))?;
    if m.members.len() > MAX_MEMBERS {
        return Err(format!("more than {MAX_MEMBERS} members"));
    }
    let mut out = Vec::new();
    let mut mine = false;
    for x in &m.members {
        for u in x.peer_urls.iter().take(4) {
            if !plain_url(u) {
                return Err(format!(
                    "member {:?}: peer URL {u:?} is not http://IP:port",
                    x.name
                ));
            }
            if u == my_url {
                mine = true;
                out.push(format!("{me}={u}"));
            } else if plain_name(&x.name) && x.name != me {
                out.push(format!("{}={u}", x.name));
            }
        }
    }
    if !mine {
        return Err(format!("the cluster does not list {my_url}"));
    }
    Ok(out)
}

async fn etcd_call(at: SocketAddr, path: &str, body: serde_json::Value) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    nuvol_api::peer_http::http_post_json(
        at.ip(),
        at.port(),
        path,
        bytes::Bytes::from(body.to_string()),
        nuvol_api::peer_http::Budget::small(MAX_ANSWER, JOIN_TIMEOUT),
        &mut nuvol_api::peer_http::Sink::Memory(&mut buf),
    )
    .await
    .map_err(|e| format!("{at}{path}: {e}"))?;
    Ok(buf)
}

/// Join a running etcd cluster: add our peer URL unless it is listed
/// already (a member of the first list that starts late), then the list.
async fn join_etcd(at: SocketAddr, c: &Cluster, me: &Me) -> Result<Vec<String>, String> {
    let member = c.member_of(&me.node, me.addr);
    let my_url = member
        .strip_prefix(&format!("{}=", me.node))
        .ok_or("the member is not written {node}=URL")?
        .to_string();
    let listed = etcd_call(at, "/v3/cluster/member/list", serde_json::json!({})).await?;
    if let Ok(m) = etcd_members(&listed, &me.node, &my_url) {
        return Ok(m);
    }
    let added = etcd_call(
        at,
        "/v3/cluster/member/add",
        serde_json::json!({ "peerURLs": [my_url] }),
    )
    .await?;
    etcd_members(&added, &me.node, &my_url)
}

/// The boxes of the overlay whose share lists `bundle` installed, and the
/// running members answering on `join_service`.
async fn look(
    d: &nuvol_catalog::DiscoveryHandle,
    bundle: &str,
    c: &Cluster,
) -> (Vec<Peer>, Vec<Running>) {
    let me = d.gossip().name().to_string();
    let of_type = |t: &str| {
        d.services(&nuvol_catalog::ServiceQuery {
            service_type: Some(t.to_string()),
            near: true,
            healthy_only: true,
            ..Default::default()
        })
        .into_iter()
        .map(|c| c.service)
        .filter(|s| s.node != me && s.overlay_addr.is_some())
        .collect::<Vec<_>>()
    };
    let running = c
        .join_service
        .as_deref()
        .map(|t| {
            of_type(t)
                .into_iter()
                .filter_map(|s| {
                    Some(Running {
                        at: SocketAddr::new(s.overlay_addr?, s.port),
                        node: s.node,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let peers = boxes_with(d, bundle)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    (peers, running)
}

/// The other boxes of the overlay whose bundle share lists `bundle`
/// installed, with their index entry for it, asked at their overlay
/// addresses. One after the other, each within the share's own small
/// budget (callers ask only now and then).
pub async fn boxes_with(
    d: &nuvol_catalog::DiscoveryHandle,
    bundle: &str,
) -> Vec<(Peer, nuvol_api::share::IndexEntry)> {
    let me = d.gossip().name().to_string();
    let shares = d.services(&nuvol_catalog::ServiceQuery {
        service_type: Some(nuvol_api::share::SERVICE_TYPE.to_string()),
        near: true,
        healthy_only: true,
        ..Default::default()
    });
    let mut out = Vec::new();
    for s in shares
        .into_iter()
        .map(|c| c.service)
        .filter(|s| s.node != me)
        .take(nuvol_api::share::MAX_PROVIDERS)
    {
        // Asked over the overlay: a box behind NAT, or one this box meets
        // only through a relay, is not reachable at its underlay address.
        let Some(ov) = s.overlay_addr else {
            continue;
        };
        let p = nuvol_api::share::Provider {
            node: s.node,
            addr: ov,
            port: s.port,
        };
        match nuvol_api::share::fetch_index(&p).await {
            Ok(index) => {
                if let Some(e) = index.into_iter().find(|e| e.name == bundle) {
                    out.push((
                        Peer {
                            node: p.node,
                            addr: ov,
                        },
                        e,
                    ));
                }
            }
            Err(e) => tracing::debug!("{}'s share: {e}", p.node),
        }
    }
    out
}

/// The installed bundles, read on the blocking pool (none when the store
/// cannot be listed: the next look tries again).
pub async fn installed(store: &Arc<Store>) -> Vec<nuvol_bundle::InstalledBundle> {
    let st = store.clone();
    match tokio::task::spawn_blocking(move || st.list()).await {
        Ok(Ok(list)) => list
            .bundles
            .into_iter()
            .filter(|b| b.state == "installed")
            .collect(),
        _ => Vec::new(),
    }
}

/// Run the loop of the module docs for the life of the agent.
pub fn spawn(
    store: Arc<Store>,
    state_dir: PathBuf,
    services: ServicesHandle,
    discovery: Arc<Discovery>,
    me: Me,
) {
    tokio::spawn(async move {
        // The last `Form` seen per bundle: a second equal one decides.
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        loop {
            tokio::time::sleep(POLL).await;
            let Some(d) = discovery.handle() else {
                continue;
            };
            let mut decided = false;
            for b in installed(&store).await {
                let Some(c) = b.manifest.cluster.clone() else {
                    continue;
                };
                if !matches!(read(&state_dir, &b.name), Ok(None)) {
                    continue;
                }
                let (with_bundle, running) = look(&d, &b.name, &c).await;
                let decision = match decide(&b.name, &c, &me, &with_bundle, &running) {
                    Next::Wait(why) => {
                        seen.remove(&b.name);
                        services.set_cluster_note(&b.name, &why);
                        continue;
                    }
                    Next::Form(members) => {
                        if seen.get(&b.name) != Some(&members) {
                            services.set_cluster_note(
                                &b.name,
                                &format!("forming a new cluster of {}", members.join(" ")),
                            );
                            seen.insert(b.name.clone(), members);
                            continue;
                        }
                        Decision::new(&me, members, false)
                    }
                    Next::Join(r) => {
                        let joined = match c.join {
                            Some(JoinKind::EtcdV3) => join_etcd(r.at, &c, &me).await,
                            Some(JoinKind::Follow) => Ok(vec![c.member_of(&r.node, r.at.ip())]),
                            None => Err("no join protocol".into()),
                        };
                        match joined {
                            Ok(members) => Decision::new(&me, members, true),
                            Err(e) => {
                                services.set_cluster_note(
                                    &b.name,
                                    &format!("joining the running cluster: {e}"),
                                );
                                continue;
                            }
                        }
                    }
                };
                match write(&state_dir, &b.name, &decision) {
                    Ok(()) => {
                        tracing::info!(
                            service = %b.name,
                            existing = decision.existing,
                            "cluster decided: {}",
                            decision.members.join(" ")
                        );
                        seen.remove(&b.name);
                        decided = true;
                    }
                    Err(e) => {
                        services.set_cluster_note(&b.name, &format!("saving the decision: {e}"))
                    }
                }
            }
            if decided {
                services.sync().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd() -> Cluster {
        Cluster {
            size: 3,
            member: "{node}=http://{addr}:2380".into(),
            separator: ",".into(),
            join: Some(JoinKind::EtcdV3),
            join_service: Some("_etcd-client._tcp".into()),
            env: BTreeMap::new(),
        }
    }

    fn peer(n: &str, last: u8) -> Peer {
        Peer {
            node: n.into(),
            addr: IpAddr::from([100, 64, 0, last]),
        }
    }

    fn me(n: &str, last: u8) -> Me {
        Me {
            node: n.into(),
            addr: IpAddr::from([100, 64, 0, last]),
        }
    }

    #[test]
    fn the_first_boxes_by_name_form_it() {
        let c = etcd();
        let others = [peer("box3", 3), peer("box1", 1), peer("box4", 4)];
        assert_eq!(
            decide("etcd", &c, &me("box2", 2), &others, &[]),
            Next::Form(vec![
                "box1=http://100.64.0.1:2380".into(),
                "box2=http://100.64.0.2:2380".into(),
                "box3=http://100.64.0.3:2380".into(),
            ])
        );
        // box4 is not among the first three: it waits to join.
        let others = [peer("box3", 3), peer("box1", 1), peer("box2", 2)];
        match decide("etcd", &c, &me("box4", 4), &others, &[]) {
            Next::Wait(why) => assert!(why.contains("box1, box2, box3 form"), "{why}"),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn too_few_boxes_wait_and_say_so() {
        let c = etcd();
        // Our own name claimed by a peer, and a name unfit for an
        // environment, count for nothing.
        let others = [peer("box1", 1), peer("box2", 9), peer("bad=name", 5)];
        match decide("etcd", &c, &me("box2", 2), &others, &[]) {
            Next::Wait(why) => assert!(why.contains("2 so far: box1, box2"), "{why}"),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn a_running_cluster_is_joined() {
        let c = etcd();
        let at = Running {
            node: "box1".into(),
            at: "100.64.0.1:2379".parse().unwrap(),
        };
        let others = [peer("box1", 1), peer("box3", 3)];
        assert_eq!(
            decide(
                "etcd",
                &c,
                &me("box2", 2),
                &others,
                std::slice::from_ref(&at)
            ),
            Next::Join(at.clone())
        );
        let mut plain = etcd();
        plain.join = None;
        assert!(matches!(
            decide(
                "etcd",
                &plain,
                &me("box2", 2),
                &others,
                std::slice::from_ref(&at)
            ),
            Next::Wait(_)
        ));
        // A member whose node name is not fit for an environment is passed
        // over, for the next one.
        let odd = Running {
            node: "box 1; rm".into(),
            at: "100.64.0.9:2379".parse().unwrap(),
        };
        assert_eq!(
            decide("etcd", &c, &me("box2", 2), &others, &[odd, at.clone()]),
            Next::Join(at)
        );
    }

    #[test]
    fn a_follower_takes_the_running_member_as_its_cluster() {
        // Tahoe's rule: a grid of one (the introducer's box); later boxes
        // follow a box already in the grid.
        let c = Cluster {
            size: 1,
            member: "{node}={addr}".into(),
            separator: ",".into(),
            join: Some(JoinKind::Follow),
            join_service: Some("_tahoe-grid._tcp".into()),
            env: Default::default(),
        };
        // Alone, or first by name: the box forms it.
        assert_eq!(
            decide("tahoe", &c, &me("box1", 1), &[], &[]),
            Next::Form(vec!["box1=100.64.0.1".into()])
        );
        assert!(matches!(
            decide("tahoe", &c, &me("box2", 2), &[peer("box1", 1)], &[]),
            Next::Wait(_)
        ));
        let r = Running {
            node: "box1".into(),
            at: "100.64.0.1:3459".parse().unwrap(),
        };
        assert_eq!(
            decide(
                "tahoe",
                &c,
                &me("box2", 2),
                &[peer("box1", 1)],
                std::slice::from_ref(&r)
            ),
            Next::Join(r.clone())
        );
        assert_eq!(c.member_of(&r.node, r.at.ip()), "box1=100.64.0.1");
    }

    #[test]
    fn etcd_answers_are_checked() {
        let me_url = "http://100.64.0.4:2380";
        let added = br#"{"header":{},"member":{"ID":"9","peerURLs":["http://100.64.0.4:2380"]},
            "members":[{"ID":"1","name":"box1","peerURLs":["http://100.64.0.1:2380"]},
                       {"ID":"9","peerURLs":["http://100.64.0.4:2380"]}]}"#;
        assert_eq!(
            etcd_members(added, "box4", me_url).unwrap(),
            vec![
                "box1=http://100.64.0.1:2380".to_string(),
                "box4=http://100.64.0.4:2380".to_string()
            ]
        );
        let not_listed = br#"{"members":[{"name":"box1","peerURLs":["http://100.64.0.1:2380"]}]}"#;
        assert!(etcd_members(not_listed, "box4", me_url)
            .unwrap_err()
            .contains("does not list"));
        let hostile = br#"{"members":[{"name":"box1","peerURLs":["http://x; rm -rf /"]}]}"#;
        assert!(etcd_members(hostile, "box4", me_url)
            .unwrap_err()
            .contains("not http://IP:port"));
        let many = format!(
            r#"{{"members":[{}]}}"#,
            vec![r#"{"name":"a","peerURLs":[]}"#; MAX_MEMBERS + 1].join(",")
        );
        assert!(etcd_members(many.as_bytes(), "box4", me_url).is_err());
        assert!(etcd_members(b"<html>", "box4", me_url).is_err());
    }

    /// A fake etcd on loopback: each connection gets the next of
    /// `answers` (a whole raw HTTP answer, or a drip of one byte a second
    /// when it is `None`); the request lines it got.
    fn fake_etcd(
        answers: Vec<Option<Vec<u8>>>,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let Ok((mut s, _)) = l.accept() else { break };
                let Some(head) = nuvol_testkit::read_request_head(&mut s) else {
                    break;
                };
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = s.read_exact(&mut body);
                seen.push(head.lines().next().unwrap_or("").to_string());
                match a {
                    Some(raw) => {
                        let _ = s.write_all(&raw);
                    }
                    None => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n");
                        for _ in 0..20 {
                            std::thread::sleep(Duration::from_secs(1));
                            if s.write_all(b" ").is_err() {
                                break;
                            }
                        }
                    }
                }
            }
            seen
        });
        (at, h)
    }

    fn ok(body: &str) -> Option<Vec<u8>> {
        Some(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    fn join(at: SocketAddr) -> (Result<Vec<String>, String>, Duration) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        let r = rt.block_on(join_etcd(at, &etcd(), &me("box4", 4)));
        (r, t.elapsed())
    }

    #[test]
    fn joining_asks_the_list_then_adds_itself() {
        let list = r#"{"members":[{"name":"box1","peerURLs":["http://100.64.0.1:2380"]}]}"#;
        let added = r#"{"members":[{"name":"box1","peerURLs":["http://100.64.0.1:2380"]},
            {"peerURLs":["http://100.64.0.4:2380"]}]}"#;
        let (at, h) = fake_etcd(vec![ok(list), ok(added)]);
        let (r, _) = join(at);
        assert_eq!(
            r.unwrap(),
            ["box1=http://100.64.0.1:2380", "box4=http://100.64.0.4:2380"]
        );
        let seen = h.join().unwrap();
        assert_eq!(
            seen,
            [
                "POST /v3/cluster/member/list HTTP/1.1",
                "POST /v3/cluster/member/add HTTP/1.1"
            ]
        );
    }

    #[test]
    fn a_hostile_member_is_cut_to_its_budget() {
        // An answer past 64 KiB, a drip, a list too long, a URL that is
        // not an address: each an error naming it, none taking long.
        let huge = format!(r#"{{"members":[],"pad":"{}"}}"#, "x".repeat(1 << 20));
        let many = format!(
            r#"{{"members":[{}]}}"#,
            vec![r#"{"name":"a","peerURLs":["http://100.64.0.4:2380"]}"#; MAX_MEMBERS + 1]
                .join(",")
        );
        let evil = r#"{"members":[{"name":"box1","peerURLs":["http://evil.example:2380"]}]}"#;
        for (what, answers, expect) in [
            ("huge", vec![ok(&huge)], "65536-byte limit"),
            ("drip", vec![None], "too slow"),
            ("many", vec![ok(&many), ok(&many)], "more than 16 members"),
            ("evil", vec![ok(evil), ok(evil)], "not http://IP:port"),
        ] {
            let (at, h) = fake_etcd(answers);
            let (r, took) = join(at);
            let e = r.expect_err(what);
            assert!(e.contains(expect), "{what}: {e}");
            // Within the answer's whole deadline (14 s), with room for a
            // loaded host.
            let deadline = nuvol_api::peer_http::Budget::small(MAX_ANSWER, JOIN_TIMEOUT).deadline();
            assert!(took < deadline + Duration::from_secs(5), "{what}: {took:?}");
            drop(h);
        }
    }

    #[test]
    fn decisions_are_kept_and_bad_ones_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "etcd").unwrap(), None);
        let me = me("box1", 1);
        let d = Decision::new(&me, vec!["box1=http://100.64.0.1:2380".into()], false);
        write(dir.path(), "etcd", &d).unwrap();
        assert_eq!(read(dir.path(), "etcd").unwrap(), Some(d));
        std::fs::write(path(dir.path(), "etcd"), b"{").unwrap();
        assert!(read(dir.path(), "etcd").is_err());
        assert!(dir.path().join("services/etcd/cluster.json.bad").exists());
    }
}
