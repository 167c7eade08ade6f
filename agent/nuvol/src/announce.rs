//! What the box announces, and when: each `[[announce]]` of an installed
//! bundle while its service is up, over gossip (`svc:` and Cloudy tags) and
//! mDNS/DNS-SD; the bundle share whenever a bundle is installed.
//!
//! A service is *up* when the supervisor has it `running` and either it has
//! a `[health]` check that passed last (`healthy`), or it has none and its
//! current run is [`SETTLE`] old. Anything else (starting, backoff after a
//! crash, unhealthy or not checked yet, stopped, exited, removed) withdraws
//! it: gossip drops its tags, mDNS sends goodbyes (TTL 0).
//!
//! The announcer is one task woken by the supervisor's state changes
//! (`Supervisor::changes`, a `watch`: bounded), by bundle changes
//! ([`crate::discovery::Discovery::bundles_changed`]), when a running
//! service is due to be settled, and every [`REFRESH_EVERY`] as a safety
//! net. Changes are paced by a token bucket: [`BURST`] changes may go out
//! back to back, then one per [`MIN_GAP`]; a change that finds the bucket
//! empty waits for the next token and then goes out with whatever the state
//! is by then (everything in between is coalesced). So however fast a
//! service flaps, gossip sees at most one tag update (and mDNS one round of
//! publishes/goodbyes) per [`MIN_GAP`] in the long run, while an install —
//! the bundle share appears, then the service once it is up — is not held
//! back. A crash loop of a command that dies at once never reaches
//! [`SETTLE`] and is not announced at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nuvol_bundle::manifest::Announce;
use nuvol_bundle::Store;
use nuvol_catalog::LocalService;
use nuvol_mdns::MdnsService;
use nuvol_supervisor::{Health, ServiceStatus, State};
use tokio::time::Instant;

use crate::discovery::Discovery;

/// How long a service without a health check must have run before it is
/// announced (a command that dies at once is never announced).
pub const SETTLE: Duration = Duration::from_millis(500);
/// Long-run least time between two announcement changes.
pub const MIN_GAP: Duration = Duration::from_secs(2);
/// Changes that may go out back to back after a quiet time.
pub const BURST: u32 = 2;
/// How often the bundle store is re-read even without a change notice.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// One service as announced over gossip and over mDNS.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub gossip: LocalService,
    pub mdns: MdnsService,
}

/// The `[[announce]]` entries of the installed bundles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Installed {
    /// Bundle name and its announce entries, in store order.
    pub bundles: Vec<(String, Vec<Announce>)>,
    /// The box offers its OS update artefact (the share serves it too).
    pub os_offer: bool,
}

impl Installed {
    /// Read the store (installed bundles only); empty, with a warning, if it
    /// cannot be listed.
    pub fn read(store: &Store) -> Installed {
        match store.list() {
            Ok(list) => Installed {
                bundles: list
                    .bundles
                    .into_iter()
                    .filter(|b| b.state == "installed")
                    .map(|b| (b.name, b.manifest.announce))
                    .collect(),
                os_offer: false,
            },
            Err(e) => {
                tracing::warn!("discovery: cannot list bundles: {e}");
                Installed::default()
            }
        }
    }
}

/// Whether a service may be announced now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    Yes,
    No,
    /// Running without a health check, not [`SETTLE`] old yet: ask again then.
    After(Duration),
}

/// The rule of the module docs, on the supervisor's status and clock.
pub fn up(st: &ServiceStatus, now_ms: u64) -> Up {
    if st.state != State::Running {
        return Up::No;
    }
    match st.health {
        Health::Healthy => Up::Yes,
        Health::Unknown | Health::Unhealthy => Up::No,
        Health::None => {
            let started = st.started_ms.last().copied().unwrap_or(now_ms);
            let age = Duration::from_millis(now_ms.saturating_sub(started));
            match SETTLE.checked_sub(age) {
                Some(left) if !left.is_zero() => Up::After(left),
                _ => Up::Yes,
            }
        }
    }
}

/// `s` cut to at most 63 bytes at a character boundary, without control
/// characters (a DNS label).
fn label(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).collect();
    while out.len() > 63 {
        out.pop();
    }
    out
}

/// What to announce: one service per `[[announce]]` of each installed
/// bundle whose service `is_up`, named by the announce's `instance` when it
/// has one, else by the bundle (the first keeps the bundle's name, later
/// ones get `-2`, `-3`...), then, when `share_port` is set and a bundle is
/// installed, the bundle share (`svc:nuvol.bundles` =
/// `_nuvol-bundles._tcp:<panel port>`). Last, it is the first to go when
/// the 512-byte tag budget runs out, so it never evicts a real service.
///
/// Gossip description (Cloudy `d`): the announce's `instance`, else
/// `<bundle> on <host>`. mDNS instance: the announce's `instance`, else
/// `<name> on <host>` (`<name>` as in the `svc:` tag); TXT: the announce's
/// `txt`. Two entries with the same mDNS instance and type get ` (2)`...
pub fn announced(
    installed: &Installed,
    hostname: &str,
    share_port: Option<u16>,
    is_up: impl Fn(&str) -> bool,
) -> Vec<Announced> {
    let mut out: Vec<Announced> = Vec::new();
    for (bundle, entries) in &installed.bundles {
        if !is_up(bundle) {
            continue;
        }
        for (i, a) in entries.iter().enumerate() {
            let indexed = if i == 0 {
                bundle.clone()
            } else {
                format!("{bundle}-{}", i + 1)
            };
            // The `svc:` tag is the one name every gossip peer sees (Cloudy's
            // tag may not fit the 512 bytes, mDNS stays on the LAN): the
            // announce's own instance when it has one and it is free.
            let name = match a.instance.as_deref().map(label) {
                Some(inst) if !inst.is_empty() && !out.iter().any(|o| o.gossip.name == inst) => {
                    inst
                }
                _ => indexed,
            };
            let base = label(
                &a.instance
                    .clone()
                    .unwrap_or_else(|| format!("{name} on {hostname}")),
            );
            let mut instance = base.clone();
            let mut k = 2;
            while out
                .iter()
                .any(|o| o.mdns.instance == instance && o.mdns.service_type == a.service_type)
            {
                let tail = format!(" ({k})");
                let mut head = base.clone();
                while head.len() + tail.len() > 63 {
                    head.pop();
                }
                instance = format!("{head}{tail}");
                k += 1;
            }
            out.push(Announced {
                gossip: LocalService {
                    name: name.clone(),
                    service_type: a.service_type.clone(),
                    port: a.port,
                    description: a
                        .instance
                        .clone()
                        .unwrap_or_else(|| format!("{bundle} on {hostname}")),
                },
                mdns: MdnsService {
                    instance,
                    service_type: a.service_type.clone(),
                    port: a.port,
                    txt: a.txt.clone(),
                },
            });
        }
    }
    let shares = !installed.bundles.is_empty() || installed.os_offer;
    if let (Some(port), true) = (share_port, shares) {
        let name = nuvol_api::share::SERVICE_NAME;
        out.push(Announced {
            gossip: LocalService {
                name: name.to_string(),
                service_type: nuvol_api::share::SERVICE_TYPE.to_string(),
                port,
                description: format!("bundles on {hostname}"),
            },
            mdns: MdnsService {
                instance: label(&format!("{name} on {hostname}")),
                service_type: nuvol_api::share::SERVICE_TYPE.to_string(),
                port,
                txt: BTreeMap::new(),
            },
        });
    }
    out
}

/// What the supervisor says now: the services that are up, and when to
/// look again for one that is not settled yet.
fn up_now(disc: &Discovery) -> (BTreeSet<String>, BTreeSet<String>, Option<Duration>) {
    let mut up_set = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut recheck: Option<Duration> = None;
    if let Some((now, list)) = disc.services.as_ref().and_then(|s| s.snapshot()) {
        for st in list {
            match up(&st, now) {
                Up::Yes => {
                    up_set.insert(st.name.clone());
                }
                Up::No => {}
                Up::After(d) => recheck = Some(recheck.map_or(d, |r| r.min(d))),
            }
            names.insert(st.name);
        }
    }
    (up_set, names, recheck)
}

type MdnsKey = (String, String);

/// Publish/unpublish so that exactly `want` is published (goodbyes for
/// what goes). `have` is what we asked for before (not the engine's
/// renamed names).
fn sync_mdns(m: &nuvol_mdns::Mdns, have: &mut BTreeMap<MdnsKey, MdnsService>, want: &[Announced]) {
    let want: BTreeMap<MdnsKey, &MdnsService> = want
        .iter()
        .map(|a| {
            (
                (a.mdns.instance.clone(), a.mdns.service_type.clone()),
                &a.mdns,
            )
        })
        .collect();
    have.retain(|k, _| {
        if want.contains_key(k) {
            return true;
        }
        if let Err(e) = m.unpublish(&k.0, &k.1) {
            tracing::warn!("mDNS unpublish {}: {e}", k.0);
        }
        tracing::info!("mDNS: withdrew {:?} ({})", k.0, k.1);
        false
    });
    for (k, w) in want {
        if have.get(&k) == Some(w) {
            continue;
        }
        match m.publish(w.clone()) {
            Ok(()) => {
                tracing::info!("mDNS: publishing {:?} ({}:{})", k.0, k.1, w.port);
                have.insert(k, w.clone());
            }
            Err(e) => tracing::warn!("mDNS publish {}: {e}", k.0),
        }
    }
}

/// The token bucket pacing announcement changes (time credit: a change
/// costs [`MIN_GAP`], credit grows with time up to [`BURST`] changes).
#[derive(Debug, Clone, Copy)]
struct Budget {
    credit: Duration,
    at: Instant,
}

impl Budget {
    fn full(now: Instant) -> Budget {
        Budget {
            credit: MIN_GAP * BURST,
            at: now,
        }
    }

    /// How long until a change may go out (zero: now).
    fn wait(&mut self, now: Instant) -> Duration {
        self.credit = (self.credit + now.saturating_duration_since(self.at)).min(MIN_GAP * BURST);
        self.at = now;
        MIN_GAP.saturating_sub(self.credit)
    }

    /// Take a change's cost (after `wait` said zero).
    fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(MIN_GAP);
    }
}

/// Wait for the next supervisor change; never returns once there is none.
async fn changed(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

/// The announcer task (see the module docs). Ends when the agent leaves.
pub async fn run(disc: Arc<Discovery>) {
    let mut changes = disc.services.as_ref().and_then(|s| s.changes());
    let mut installed = Installed::default();
    let mut read_at: Option<Instant> = None;
    let mut known_names: BTreeSet<String> = BTreeSet::new();
    let mut mdns_have: BTreeMap<MdnsKey, MdnsService> = BTreeMap::new();
    let mut budget = Budget::full(Instant::now());
    loop {
        if disc.is_leaving() {
            return;
        }
        let (up_set, names, recheck) = up_now(&disc);
        // A service added or removed outside the API (provisioning at boot)
        // also means the store changed.
        let stale = read_at.is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if stale || names != known_names {
            if let Some(store) = &disc.store {
                installed = Installed::read(store);
            }
            read_at = Some(Instant::now());
            known_names = names;
        }
        installed.os_offer = disc.os_offer.as_ref().is_some_and(|p| p.exists());
        let want = announced(&installed, &disc.hostname, disc.share_port, |n| {
            up_set.contains(n)
        });
        let gossip: Vec<LocalService> = want.iter().map(|a| a.gossip.clone()).collect();
        disc.set_wanted(&gossip);
        let gossip_due = disc.handle().is_some() && !disc.gossip_has(&gossip);
        let mdns = disc.mdns();
        let mdns_due = mdns.as_ref().is_some_and(|_| {
            want.len() != mdns_have.len()
                || want.iter().any(|a| {
                    mdns_have.get(&(a.mdns.instance.clone(), a.mdns.service_type.clone()))
                        != Some(&a.mdns)
                })
        });
        let mut wake =
            REFRESH_EVERY.saturating_sub(read_at.map_or(Duration::ZERO, |t| t.elapsed()));
        if let Some(r) = recheck {
            wake = wake.min(r);
        }
        if gossip_due || mdns_due {
            let wait = budget.wait(Instant::now());
            if wait.is_zero() {
                budget.spend();
                if gossip_due {
                    disc.announce_gossip(&gossip);
                }
                if let Some(m) = &mdns {
                    sync_mdns(m, &mut mdns_have, &want);
                }
            } else {
                wake = wake.min(wait);
            }
        }
        drop(mdns);
        tokio::select! {
            _ = disc.poked() => read_at = None,
            _ = changed(&mut changes) => {}
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, health: Health, started: u64) -> ServiceStatus {
        ServiceStatus {
            name: "s".into(),
            state,
            pid: None,
            health,
            last_health_error: None,
            restarts: 0,
            oom_kills: 0,
            last_exit: None,
            started_ms: vec![started],
            backoff_ms: Vec::new(),
            memory_bytes: 0,
            cpu_usec: 0,
            processes: 0,
            forks_refused: 0,
            address: None,
        }
    }

    #[test]
    fn budget_allows_a_burst_then_one_change_per_gap() {
        let t0 = Instant::now();
        let mut b = Budget::full(t0);
        for _ in 0..BURST {
            assert_eq!(b.wait(t0), Duration::ZERO);
            b.spend();
        }
        assert_eq!(b.wait(t0), MIN_GAP, "bucket empty: one gap to wait");
        let t1 = t0 + MIN_GAP / 2;
        assert_eq!(b.wait(t1), MIN_GAP / 2);
        let t2 = t0 + MIN_GAP;
        assert_eq!(b.wait(t2), Duration::ZERO);
        b.spend();
        assert_eq!(b.wait(t2), MIN_GAP);
        // However long the quiet time, at most BURST at once.
        let t3 = t2 + MIN_GAP * 100;
        for _ in 0..BURST {
            assert_eq!(b.wait(t3), Duration::ZERO);
            b.spend();
        }
        assert_eq!(b.wait(t3), MIN_GAP);
        // A service flapping every 100 ms for 10 gaps:
        let mut b = Budget::full(t0);
        let (mut now, mut sent) = (t0, 0u32);
        while now < t0 + MIN_GAP * 10 {
            if b.wait(now).is_zero() {
                b.spend();
                sent += 1;
            }
            now += Duration::from_millis(100);
        }
        // BURST at the start, then one at each of the 9 later gaps
        assert_eq!(sent, BURST + 9, "{sent} changes in 10 gaps");
    }

    #[test]
    fn up_needs_running_and_healthy_or_settled() {
        let now = 10_000;
        for s in [
            State::Stopped,
            State::Starting,
            State::Backoff,
            State::Stopping,
            State::Exited,
        ] {
            assert_eq!(up(&status(s, Health::None, 0), now), Up::No, "{s:?}");
            assert_eq!(up(&status(s, Health::Healthy, 0), now), Up::No, "{s:?}");
        }
        let run = |h, started| up(&status(State::Running, h, started), now);
        assert_eq!(run(Health::Healthy, now), Up::Yes, "healthy: at once");
        assert_eq!(run(Health::Unknown, 0), Up::No, "not checked yet");
        assert_eq!(run(Health::Unhealthy, 0), Up::No);
        assert_eq!(run(Health::None, 0), Up::Yes);
        assert_eq!(run(Health::None, now - 500), Up::Yes);
        assert_eq!(
            run(Health::None, now - 100),
            Up::After(Duration::from_millis(400))
        );
    }

    fn entry(t: &str, port: u16, instance: Option<&str>, txt: &[(&str, &str)]) -> Announce {
        Announce {
            service_type: t.into(),
            instance: instance.map(str::to_string),
            port,
            txt: txt
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn only_up_services_with_manifest_instance_and_txt() {
        let installed = Installed {
            bundles: vec![
                (
                    "sync".into(),
                    vec![
                        entry(
                            "_syncthing._tcp",
                            22000,
                            Some("Syncthing GUI"),
                            &[("proto", "tcp")],
                        ),
                        entry("_http._tcp", 8384, None, &[]),
                        entry("_http._tcp", 8385, None, &[]),
                    ],
                ),
                ("down".into(), vec![entry("_http._tcp", 80, None, &[])]),
            ],
            os_offer: false,
        };
        let a = announced(&installed, "box", Some(80), |n| n == "sync");
        let names: Vec<&str> = a.iter().map(|a| a.gossip.name.as_str()).collect();
        assert_eq!(
            names,
            ["Syncthing GUI", "sync-2", "sync-3", "nuvol.bundles"]
        );
        assert_eq!(a[0].mdns.instance, "Syncthing GUI");
        assert_eq!(a[0].gossip.description, "Syncthing GUI");
        assert_eq!(a[0].mdns.txt.get("proto").map(String::as_str), Some("tcp"));
        assert_eq!(a[1].mdns.instance, "sync-2 on box");
        assert_eq!(a[1].gossip.description, "sync on box");
        assert_eq!(a[2].mdns.instance, "sync-3 on box");
        assert!(a[1].mdns.txt.is_empty());
        assert_eq!(a[3].mdns.service_type, "_nuvol-bundles._tcp");
        assert_eq!(a[3].mdns.port, 80);
        // Nothing up: only the share, which stays while a bundle is installed.
        let a = announced(&installed, "box", Some(80), |_| false);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].gossip.name, "nuvol.bundles");
        assert!(announced(&Installed::default(), "box", Some(80), |_| true).is_empty());
        assert_eq!(announced(&installed, "box", None, |_| false), []);
    }

    #[test]
    fn mdns_instances_are_labels_and_unique_per_type() {
        let long = "h".repeat(70);
        let installed = Installed {
            bundles: vec![(
                "x".into(),
                vec![
                    entry("_http._tcp", 1, Some("Same"), &[]),
                    entry("_http._tcp", 2, Some("Same"), &[]),
                    entry("_ipp._tcp", 3, Some("Same"), &[]),
                ],
            )],
            os_offer: false,
        };
        let a = announced(&installed, &long, None, |_| true);
        let inst: Vec<&str> = a.iter().map(|a| a.mdns.instance.as_str()).collect();
        assert_eq!(inst, ["Same", "Same (2)", "Same"]);
        let installed = Installed {
            bundles: vec![(
                "é".repeat(20),
                vec![
                    entry("_http._tcp", 1, None, &[]),
                    entry("_http._tcp", 2, None, &[]),
                ],
            )],
            os_offer: false,
        };
        let a = announced(&installed, &long, None, |_| true);
        for x in &a {
            assert!(x.mdns.instance.len() <= 63, "{}", x.mdns.instance);
        }
        assert_ne!(a[0].mdns.instance, a[1].mdns.instance);
    }
}
