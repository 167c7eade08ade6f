//! The overlay's decisions, without side effects: who is admitted, which
//! AllowedIPs and endpoint each peer gets (direct, relayed, NAT), and the
//! observed endpoints super nodes share.

use super::*;

/// A peer with a handshake this recent is reachable directly.
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

/// How long a new peer gets to handshake before it is relayed.
pub const DIRECT_GRACE: Duration = Duration::from_secs(20);

/// Most observed endpoints kept from `nuvol-ov-seen` events.
pub(super) const MAX_SEEN: usize = 4096;

/// Bytes of a key's prefix in `nuvol-ov-seen` entries.
pub(super) const SEEN_KEY_PREFIX: usize = 8;

/// Payload budget of one `nuvol-ov-seen` event.
pub(super) const SEEN_PAYLOAD_MAX: usize = 400;

/// A member admitted to the overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub node: String,
    pub public: Key,
    pub address: Ipv6Addr,
    pub address4: Ipv4Addr,
    /// gossip address + WireGuard port, as the member claims
    pub claimed: SocketAddr,
    pub zone: String,
    pub super_node: bool,
    pub rtt: Option<Duration>,
    /// its `svc:` services spoken over HTTP: (name, port)
    pub http: Vec<(String, u16)>,
}

/// Why a member is not a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// no `wg` tag: not in the overlay
    NotInOverlay,
    /// a `wg` tag that does not parse
    Malformed(String),
    /// the proof is not made with the community secret
    BadProof,
    /// `ov` names an address that is not the one of its key
    ClaimsOtherAddress(String),
}

/// Check one member's announcement.
pub fn admit(m: &Member, secret: &[u8], prefix: &[u8; 8]) -> Result<Admitted, Refused> {
    let Some(tag) = m.tags.get(WG_TAG) else {
        return Err(Refused::NotInOverlay);
    };
    let mut parts = tag.split(',');
    let (Some(k), Some(p), Some(proof), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed("want <key>,<port>,<proof>".into()));
    };
    let public = Key::from_base64(k).map_err(|e| Refused::Malformed(e.to_string()))?;
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Refused::Malformed(format!("port {p:?}")))?;
    let proof = b64()
        .decode(proof)
        .map_err(|_| Refused::Malformed("proof is not base64".into()))?;
    if !nuvol_wg::proof_ok(secret, &m.name, &public, &proof) {
        return Err(Refused::BadProof);
    }
    let address = nuvol_wg::address_for(prefix, &public);
    let address4 = nuvol_wg::address4_for(&public);
    if let Some(ov) = m.tags.get(OV_TAG) {
        if ov.parse::<Ipv6Addr>().ok() != Some(address) {
            return Err(Refused::ClaimsOtherAddress(ov.clone()));
        }
    }
    if let Some(ov) = m.tags.get(OV4_TAG) {
        if ov.parse::<Ipv4Addr>().ok() != Some(address4) {
            return Err(Refused::ClaimsOtherAddress(ov.clone()));
        }
    }
    Ok(Admitted {
        node: m.name.clone(),
        public,
        address,
        address4,
        claimed: SocketAddr::new(m.addr.ip(), port),
        zone: m
            .tags
            .get(nuvol_catalog::ZONE_TAG)
            .cloned()
            .unwrap_or_default(),
        super_node: m.tags.get(nuvol_catalog::ROLE_TAG).map(String::as_str) == Some("super-node"),
        rtt: m.rtt.or(m.rtt_estimate),
        http: m
            .tags
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(nuvol_catalog::SVC_PREFIX)?;
                let (ty, port) = v.rsplit_once(':')?;
                let http = ty == "_http._tcp" || ty == "_nuvol-bundles._tcp";
                http.then_some((name.to_string(), port.parse().ok()?))
            })
            .take(MAX_PROBES)
            .collect(),
    })
}

/// What the planner knows of one peer besides the kernel's view.
#[derive(Debug, Clone, Default)]
pub struct PeerMemory {
    /// when it was first configured
    pub added: Option<Instant>,
    /// observed endpoint last tried from `nuvol-ov-seen`
    pub tried_seen: Option<SocketAddr>,
}

/// The peers to configure: one per admitted member, each with its own
/// address, or that address on a relay when it has no fresh handshake.
pub fn plan(
    me: &Prepared,
    admitted: &[Admitted],
    kernel: &HashMap<Key, PeerState>,
    memory: &HashMap<Key, PeerMemory>,
    seen: &HashMap<[u8; SEEN_KEY_PREFIX], SocketAddr>,
    now: Instant,
) -> Vec<PeerConfig> {
    let fresh = |k: &Key| {
        kernel
            .get(k)
            .and_then(PeerState::handshake_age)
            .is_some_and(|a| a < HANDSHAKE_FRESH)
    };
    let young = |k: &Key| {
        memory
            .get(k)
            .and_then(|m| m.added)
            .is_none_or(|t| now.duration_since(t) < DIRECT_GRACE)
    };
    // Relays we can use: super nodes with a fresh handshake.
    let relays: Vec<&Admitted> = admitted
        .iter()
        .filter(|a| a.super_node && fresh(&a.public))
        .collect();
    let mut allowed: BTreeMap<Key, Vec<(IpAddr, u8)>> = BTreeMap::new();
    for a in admitted {
        allowed.entry(a.public).or_default();
        let direct = fresh(&a.public) || young(&a.public) || a.super_node;
        let via = if direct {
            a
        } else {
            relay_for(me, a, &relays).unwrap_or(a)
        };
        let ips = allowed.entry(via.public).or_default();
        ips.push((IpAddr::V6(a.address), 128));
        ips.push((IpAddr::V4(a.address4), 32));
        // A peer we hear from another address than the one it claims is
        // behind NAT as seen from here: its underlay address (gossip,
        // published ports) is reached through the tunnel it keeps open.
        if let Some(ip) = behind_nat(a, kernel.get(&a.public)) {
            if via.public == a.public && fresh(&a.public) {
                ips.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            }
        }
    }
    admitted
        .iter()
        .map(|a| {
            let k = kernel.get(&a.public);
            // Claimed endpoint when the peer is new; later the kernel's
            // (observed) one, unless a super node saw it elsewhere and we
            // have no handshake.
            let endpoint = match k {
                None => Some(a.claimed),
                Some(_) if fresh(&a.public) => None,
                Some(_) => {
                    let mut p = [0u8; SEEN_KEY_PREFIX];
                    p.copy_from_slice(&a.public.0[..SEEN_KEY_PREFIX]);
                    let tried = memory.get(&a.public).and_then(|m| m.tried_seen);
                    match seen.get(&p) {
                        Some(s) if Some(*s) != tried && k.and_then(|k| k.endpoint) != Some(*s) => {
                            Some(*s)
                        }
                        _ => None,
                    }
                }
            };
            let mut ips = allowed.remove(&a.public).unwrap_or_default();
            ips.sort();
            PeerConfig {
                public: a.public,
                endpoint,
                keepalive: me.cfg.keepalive,
                allowed: ips,
            }
        })
        .collect()
}

/// The claimed underlay address of a peer whose packets come from
/// another address (a NAT between us), if so.
pub(super) fn behind_nat(a: &Admitted, k: Option<&PeerState>) -> Option<IpAddr> {
    let seen = k?.endpoint?.ip();
    (seen != a.claimed.ip()).then_some(a.claimed.ip())
}

/// Whether `ip` is one of the overlay's own addresses (not an underlay
/// address routed through it).
pub(super) fn is_overlay(p: &Prepared, ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => u32::from(*v) >> 22 == u32::from(nuvol_wg::V4_NET.0) >> 22,
        IpAddr::V6(v) => v.octets()[..8] == p.prefix,
    }
}

/// The super node that relays between `me` and `peer`. Both ends must
/// pick the same one (each accepts the other's packets only from the peer
/// its address is pinned to), so the choice depends on the pair alone: a
/// super node of either one's zone first, then a hash of the two keys and
/// the super node's.
pub(super) fn relay_for<'a>(
    me: &Prepared,
    peer: &Admitted,
    relays: &[&'a Admitted],
) -> Option<&'a Admitted> {
    let (lo, hi) = if me.public < peer.public {
        (me.public, peer.public)
    } else {
        (peer.public, me.public)
    };
    relays
        .iter()
        .filter(|r| r.public != peer.public)
        .min_by_key(|r| {
            let local = r.zone == me.zone || r.zone == peer.zone;
            let h = sha2::Sha256::new()
                .chain_update(lo.0)
                .chain_update(hi.0)
                .chain_update(r.public.0)
                .finalize();
            (!local, <[u8; 8]>::try_from(&h[..8]).unwrap_or_default())
        })
        .copied()
}

/// Whether `want` differs from what the kernel has.
pub(super) fn differs(want: &PeerConfig, have: Option<&PeerState>) -> bool {
    let Some(h) = have else { return true };
    let mut ips = h.allowed.clone();
    ips.sort();
    want.endpoint.is_some_and(|e| Some(e) != h.endpoint) || ips != want.allowed
}

/// `nuvol-ov-seen` payload: `<key prefix b64>=<ip:port>` for fresh peers
/// whose observed endpoint is not the claimed one, space-separated, within
/// the event budget.
pub(super) fn seen_payload(admitted: &[Admitted], kernel: &HashMap<Key, PeerState>) -> String {
    let mut out = String::new();
    for a in admitted {
        let Some(k) = kernel.get(&a.public) else {
            continue;
        };
        let (Some(e), Some(age)) = (k.endpoint, k.handshake_age()) else {
            continue;
        };
        if age >= HANDSHAKE_FRESH || e == a.claimed {
            continue;
        }
        let item = format!("{}={e}", b64().encode(&a.public.0[..SEEN_KEY_PREFIX]));
        if out.len() + item.len() + 1 > SEEN_PAYLOAD_MAX {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&item);
    }
    out
}

/// Merge a `nuvol-ov-seen` payload; malformed entries are skipped.
pub(super) fn read_seen(payload: &[u8], seen: &mut HashMap<[u8; SEEN_KEY_PREFIX], SocketAddr>) {
    let Ok(s) = std::str::from_utf8(payload) else {
        return;
    };
    for item in s.split(' ').take(64) {
        let Some((k, e)) = item.split_once('=') else {
            continue;
        };
        let (Ok(k), Ok(e)) = (b64().decode(k), e.parse::<SocketAddr>()) else {
            continue;
        };
        let Ok(k) = <[u8; SEEN_KEY_PREFIX]>::try_from(k.as_slice()) else {
            continue;
        };
        if seen.len() < MAX_SEEN || seen.contains_key(&k) {
            seen.insert(k, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const SECRET: &[u8] = b"0123456789abcdef";

    fn prepared(node: &str, super_node: bool, zone: &str) -> Prepared {
        let key = Key::generate().unwrap();
        let public = key.public();
        let prefix = nuvol_wg::prefix_for(SECRET);
        Prepared {
            cfg: OverlayConfig::default(),
            key,
            public,
            secret: SECRET.to_vec(),
            prefix,
            address: nuvol_wg::address_for(&prefix, &public),
            address4: nuvol_wg::address4_for(&public),
            node: node.into(),
            super_node,
            zone: zone.into(),
            bench: false,
        }
    }

    fn member(p: &Prepared, ip: &str) -> Member {
        let mut tags: BTreeMap<String, String> = p.tags().into_iter().collect();
        tags.insert("zone".into(), p.zone.clone());
        if p.super_node {
            tags.insert("role".into(), "super-node".into());
        }
        Member {
            name: p.node.clone(),
            addr: SocketAddr::new(ip.parse().unwrap(), 7946),
            tags,
            status: Status::Alive,
            health: nuvol_gossip::Health::Alive,
            hops: None,
            loss: None,
            rtt: None,
            rtt_estimate: None,
            coordinate: None,
            vsn: [1, 5, 2, 2, 5, 4],
        }
    }

    #[test]
    fn members_with_the_secret_are_admitted_at_their_own_address() {
        let b = prepared("b", false, "z2");
        let a = admit(&member(&b, "10.2.0.5"), SECRET, &b.prefix).unwrap();
        assert_eq!(a.address, b.address);
        assert_eq!(a.claimed, "10.2.0.5:51820".parse().unwrap());
        assert_eq!(a.zone, "z2");
        // Another community's secret: refused.
        assert_eq!(
            admit(&member(&b, "10.2.0.5"), b"another secret!!", &b.prefix),
            Err(Refused::BadProof)
        );
    }

    #[test]
    fn a_member_claiming_another_address_or_name_is_refused() {
        let a = prepared("a", false, "z1");
        let rogue = prepared("rogue", false, "z1");
        let mut m = member(&rogue, "10.1.0.9");
        m.tags.insert(OV_TAG.into(), a.address.to_string());
        assert_eq!(
            admit(&m, SECRET, &a.prefix),
            Err(Refused::ClaimsOtherAddress(a.address.to_string()))
        );
        // Replaying a's tags under its own name: the proof binds the name.
        let mut m = member(&a, "10.1.0.9");
        m.name = "rogue".into();
        assert_eq!(admit(&m, SECRET, &a.prefix), Err(Refused::BadProof));
        // Garbage tags are named, not panics.
        for bad in [
            "",
            "x",
            "a,b,c",
            "a,b,c,d",
            &format!("{},0,AAAA", a.public.to_base64()),
        ] {
            let mut m = member(&a, "10.1.0.9");
            m.tags.insert(WG_TAG.into(), bad.into());
            assert!(
                matches!(admit(&m, SECRET, &a.prefix), Err(Refused::Malformed(_))),
                "{bad}"
            );
        }
    }

    fn state(p: &Prepared, handshake: Option<Duration>) -> PeerState {
        PeerState {
            public: p.public,
            endpoint: None,
            last_handshake: handshake.map(|d| SystemTime::now() - d),
            rx_bytes: 0,
            tx_bytes: 0,
            allowed: vec![],
        }
    }

    /// The AllowedIPs that pin `p`'s own addresses.
    fn pinned(address: Ipv6Addr, address4: Ipv4Addr) -> Vec<(IpAddr, u8)> {
        let mut v = vec![(IpAddr::V6(address), 128), (IpAddr::V4(address4), 32)];
        v.sort();
        v
    }

    fn admitted(list: &[(&Prepared, &str)]) -> Vec<Admitted> {
        list.iter()
            .map(|(p, ip)| admit(&member(p, ip), SECRET, &p.prefix).unwrap())
            .collect()
    }

    /// The relay `me` routes `peer` through, after the grace, when only
    /// the super nodes answer.
    fn relay_seen_by(me: &Prepared, peer: &Prepared, supers: &[&Prepared]) -> Option<Key> {
        let mut list: Vec<(&Prepared, &str)> = supers.iter().map(|s| (*s, "10.9.0.1")).collect();
        list.push((peer, "10.9.0.2"));
        let adm = admitted(&list);
        let t0 = Instant::now();
        let mut kernel: HashMap<Key, PeerState> = HashMap::new();
        for s in supers {
            kernel.insert(s.public, state(s, Some(Duration::from_secs(5))));
        }
        kernel.insert(peer.public, state(peer, None));
        let memory: HashMap<Key, PeerMemory> = adm
            .iter()
            .map(|a| {
                (
                    a.public,
                    PeerMemory {
                        added: Some(t0),
                        tried_seen: None,
                    },
                )
            })
            .collect();
        let later = t0 + DIRECT_GRACE + Duration::from_secs(1);
        let w = plan(me, &adm, &kernel, &memory, &HashMap::new(), later);
        let a = IpAddr::V6(peer.address);
        w.iter()
            .find(|p| p.allowed.contains(&(a, 128)))
            .map(|p| p.public)
    }

    #[test]
    fn unreachable_peers_go_through_one_super_node_both_ends_agree_on() {
        let me = prepared("me", false, "z1");
        let far = prepared("far", true, "z2");
        let near = prepared("near", true, "z1");
        let other = prepared("other", true, "z3");
        let x = prepared("x", false, "z2");
        let adm = admitted(&[(&far, "10.2.0.1"), (&near, "10.1.0.1"), (&x, "10.2.0.7")]);
        // New peers: everyone direct, at the claimed endpoints.
        let w = plan(
            &me,
            &adm,
            &HashMap::new(),
            &HashMap::new(),
            &HashMap::new(),
            Instant::now(),
        );
        assert_eq!(w.len(), 3);
        for (w, a) in w.iter().zip(&adm) {
            assert_eq!(w.allowed, pinned(a.address, a.address4));
            assert_eq!(w.endpoint, Some(a.claimed));
        }
        // x never answers: relayed by a super node of one of our zones,
        // the same one seen from both ends.
        let supers = [&far, &near, &other];
        let mine = relay_seen_by(&me, &x, &supers).expect("relayed");
        let theirs = relay_seen_by(&x, &me, &supers).expect("relayed");
        assert_eq!(mine, theirs);
        assert!(mine == far.public || mine == near.public);
        // Only a super node of a third zone: it relays.
        assert_eq!(relay_seen_by(&me, &x, &[&other]), Some(other.public));
        // No super node: x keeps its own address (nothing better).
        assert_eq!(relay_seen_by(&me, &x, &[]), Some(x.public));
    }

    #[test]
    fn observed_endpoints_are_tried_and_a_handshake_ends_the_relay() {
        let me = prepared("me", false, "z1");
        let near = prepared("near", true, "z1");
        let x = prepared("x", false, "z2");
        let adm = admitted(&[(&near, "10.1.0.1"), (&x, "10.2.0.7")]);
        let t0 = Instant::now();
        let mut kernel = HashMap::new();
        kernel.insert(near.public, state(&near, Some(Duration::from_secs(5))));
        kernel.insert(x.public, state(&x, None));
        let memory: HashMap<Key, PeerMemory> = [near.public, x.public]
            .into_iter()
            .map(|k| {
                (
                    k,
                    PeerMemory {
                        added: Some(t0),
                        tried_seen: None,
                    },
                )
            })
            .collect();
        let later = t0 + DIRECT_GRACE + Duration::from_secs(1);
        let w = plan(&me, &adm, &kernel, &memory, &HashMap::new(), later);
        let by = |w: &[PeerConfig], k: &Key| w.iter().find(|p| p.public == *k).unwrap().clone();
        assert!(by(&w, &x.public).allowed.is_empty());
        assert_eq!(
            by(&w, &near.public).endpoint,
            None,
            "kernel's endpoint kept"
        );
        let mut seen = HashMap::new();
        let mut k8 = [0u8; SEEN_KEY_PREFIX];
        k8.copy_from_slice(&x.public.0[..SEEN_KEY_PREFIX]);
        seen.insert(k8, "192.0.2.9:40000".parse().unwrap());
        let w = plan(&me, &adm, &kernel, &memory, &seen, later);
        assert_eq!(
            by(&w, &x.public).endpoint,
            Some("192.0.2.9:40000".parse().unwrap())
        );
        kernel.insert(x.public, state(&x, Some(Duration::from_secs(1))));
        let w = plan(&me, &adm, &kernel, &memory, &seen, later);
        assert_eq!(by(&w, &x.public).allowed, pinned(x.address, x.address4));
        assert_eq!(
            by(&w, &near.public).allowed,
            pinned(near.address, near.address4)
        );
    }

    #[test]
    fn a_peer_heard_through_nat_has_its_underlay_address_routed_to_it() {
        let me = prepared("me", false, "z1");
        let x = prepared("x", false, "z2");
        let adm = admitted(&[(&x, "10.2.0.7")]);
        let t0 = Instant::now();
        let memory: HashMap<Key, PeerMemory> = [(
            x.public,
            PeerMemory {
                added: Some(t0),
                tried_seen: None,
            },
        )]
        .into_iter()
        .collect();
        let mut st = state(&x, Some(Duration::from_secs(3)));
        st.endpoint = Some("10.1.0.1:40000".parse().unwrap());
        let kernel: HashMap<Key, PeerState> = [(x.public, st)].into_iter().collect();
        let w = plan(&me, &adm, &kernel, &memory, &HashMap::new(), t0);
        let mut want = pinned(x.address, x.address4);
        want.push(("10.2.0.7".parse().unwrap(), 32));
        want.sort();
        assert_eq!(w[0].allowed, want);
        assert!(!is_overlay(&me, &"10.2.0.7".parse().unwrap()));
        assert!(is_overlay(&me, &IpAddr::V4(x.address4)));
        assert!(is_overlay(&me, &IpAddr::V6(x.address)));
        // Heard at the address it claims: nothing extra.
        let mut st = state(&x, Some(Duration::from_secs(3)));
        st.endpoint = Some(adm[0].claimed);
        let kernel: HashMap<Key, PeerState> = [(x.public, st)].into_iter().collect();
        let w = plan(&me, &adm, &kernel, &memory, &HashMap::new(), t0);
        assert_eq!(w[0].allowed, pinned(x.address, x.address4));
    }

    #[test]
    fn seen_events_round_trip_within_budget() {
        let me = prepared("s", true, "z1");
        let peers: Vec<Prepared> = (0..40)
            .map(|i| prepared(&format!("p{i}"), false, "z2"))
            .collect();
        let admitted: Vec<Admitted> = peers
            .iter()
            .map(|p| admit(&member(p, "10.2.0.1"), SECRET, &me.prefix).unwrap())
            .collect();
        let kernel: HashMap<Key, PeerState> = peers
            .iter()
            .map(|p| {
                let mut s = state(p, Some(Duration::from_secs(3)));
                s.endpoint = Some("198.51.100.1:61000".parse().unwrap());
                (p.public, s)
            })
            .collect();
        let s = seen_payload(&admitted, &kernel);
        assert!(!s.is_empty() && s.len() <= SEEN_PAYLOAD_MAX, "{}", s.len());
        let mut seen = HashMap::new();
        read_seen(s.as_bytes(), &mut seen);
        assert!(seen.len() > 5);
        read_seen(b"garbage = =x \xff", &mut seen);
        read_seen(&[0xff, 0xfe], &mut seen);
    }
}
