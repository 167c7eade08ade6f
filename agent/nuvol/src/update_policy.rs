//! `[update] policy` (docs/boot.md, "Update policy"): with `notify` or
//! `auto` the agent looks for a newer OS update every `check_hours`: the
//! offers of the community's share providers and the artefact at
//! `[update] url`, each judged as in [`nuvol_api::os_fetch`] (a URL by its
//! signed head only). `notify` shows the newest on the dashboard, the
//! Update page and `GET /api/v1/update`; `auto` also applies it, inside
//! the window, and reboots into its one-shot try, exactly as a human
//! would. A version given up after its tries is never taken again by
//! itself, nor one refused in this run of the agent, so a bad release
//! cannot loop a box.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nuvol_api::os_fetch::{fetch_from_peer, fetch_from_url, peer_offers, probe_url};
use nuvol_api::Node;
use nuvol_config::{UpdatePolicy, Window};
use nuvol_update::artefact::Version;
use nuvol_update::state::{self, Phase};
use serde::Serialize;

use crate::update::Updater;

/// Longest wait before the first look after start (discovery needs a
/// moment to hear the community).
const FIRST_LOOK: Duration = Duration::from_secs(300);

/// The policy as configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: UpdatePolicy,
    pub window: Option<Window>,
    pub window_text: Option<String>,
    pub url: Option<String>,
    pub every: Duration,
}

impl Settings {
    pub fn from_config(cfg: &nuvol_config::Config) -> Settings {
        Settings {
            policy: cfg.update.policy,
            window: cfg.update.window(),
            window_text: cfg.update.window.clone(),
            url: cfg.update.url.clone(),
            every: Duration::from_secs(cfg.debug.update_check_secs(cfg.update.check_hours)),
        }
    }
}

/// Where a newer update was found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "from", rename_all = "lowercase")]
pub enum Source {
    Peer(String),
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Peer(n) => write!(f, "box {n}"),
            Source::Url(u) => write!(f, "{u}"),
        }
    }
}

/// The outcome of the last look.
#[derive(Debug, Clone, Serialize)]
pub struct Look {
    /// Unix seconds.
    pub at: u64,
    /// The newest update found that is newer than what runs here.
    pub found: Option<Found>,
    /// What was done about it, for people.
    pub action: String,
    /// Sources that could not be asked (`source: why`).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub version: String,
    pub source: Source,
}

/// Whether `now` is inside `window` (none: any time).
pub fn in_window(window: Option<Window>, now: SystemTime) -> bool {
    let minute = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| ((d.as_secs() / 60) % 1440) as u32);
    window.is_none_or(|w| w.contains(minute))
}

/// The newest candidate: highest version; among equals the first (peers
/// nearest first, then the URL).
pub fn newest(candidates: Vec<(Version, Source)>) -> Option<(Version, Source)> {
    let mut best: Option<(Version, Source)> = None;
    for (v, s) in candidates {
        if best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, s));
        }
    }
    best
}

/// Look for updates for as long as the agent runs.
pub async fn watch(u: Arc<Updater>, node: Arc<dyn Node>, settings: Settings) {
    if settings.policy == UpdatePolicy::Manual || !u.can_update() {
        return;
    }
    tokio::time::sleep(settings.every.min(FIRST_LOOK)).await;
    let mut refused: HashSet<(String, Source)> = HashSet::new();
    let mut said = String::new();
    loop {
        let (look, reboot) = look_once(&u, &node, &settings, &mut refused).await;
        // The console hears of changes, not of every look.
        if look.action != said {
            eprintln!(
                "nuvol: update policy {}: {}",
                settings.policy.as_str(),
                look.action
            );
            said = look.action.clone();
        }
        u.set_look(look);
        if reboot {
            if let Err(e) = nuvol_api::ask_init_to_reboot() {
                eprintln!("nuvol: update: {e}; it is tried at the next boot");
            }
            return;
        }
        tokio::time::sleep(settings.every).await;
    }
}

async fn look_once(
    u: &Updater,
    node: &Arc<dyn Node>,
    settings: &Settings,
    refused: &mut HashSet<(String, Source)>,
) -> (Look, bool) {
    let now = SystemTime::now();
    let mut look = Look {
        at: now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        found: None,
        action: String::new(),
        errors: Vec::new(),
    };
    let rec = state::load(u.state_path());
    if let Some(r) = rec.as_ref().filter(|r| r.phase == Phase::Pending) {
        look.action = format!(
            "update {} is written and on trial or armed: not looking for another",
            r.version
        );
        return (look, false);
    }
    let mut candidates = Vec::new();
    match peer_offers(node.as_ref()).await {
        Ok((offers, errors)) => {
            for o in offers.into_iter().filter(|o| o.newer) {
                if let Ok(v) = Version::parse(&o.offer.version) {
                    candidates.push((v, Source::Peer(o.provider.node)));
                }
            }
            look.errors
                .extend(errors.into_iter().map(|(n, e)| format!("box {n}: {e}")));
        }
        // No community: only the URL.
        Err(f) if f.code == "discovery_off" => {}
        Err(f) => look.errors.push(format!("community: {f}")),
    }
    if let Some(url) = &settings.url {
        match probe_url(node.as_ref(), url, false).await {
            Ok((v, _)) => {
                if let Ok(v) = Version::parse(&v) {
                    candidates.push((v, Source::Url(url.clone())));
                }
            }
            Err(f) if f.code == "update_not_newer" => {}
            Err(f) => look.errors.push(format!("{url}: {f}")),
        }
    }
    // A version given up after its tries is not taken again by itself.
    let given_up = rec
        .as_ref()
        .filter(|r| r.phase == Phase::Failed)
        .map(|r| r.version.clone());
    candidates.retain(|(v, _)| given_up.as_deref() != Some(&v.to_string()));
    let Some((version, source)) = newest(candidates) else {
        look.action = match given_up {
            Some(g) => format!("no newer update (other than {g}, given up here before)"),
            None => "no newer update".into(),
        };
        return (look, false);
    };
    let version = version.to_string();
    look.found = Some(Found {
        version: version.clone(),
        source: source.clone(),
    });
    if settings.policy == UpdatePolicy::Notify {
        look.action = format!(
            "update {version} is available from {source}: apply it on the Update page or with nuvol ctl update {}",
            match &source {
                Source::Peer(n) => format!("--from {n}"),
                Source::Url(url) => format!("--url {url}"),
            }
        );
        return (look, false);
    }
    if !in_window(settings.window, now) {
        look.action = format!(
            "update {version} from {source} waits for the window {} (UTC)",
            settings.window_text.as_deref().unwrap_or("")
        );
        return (look, false);
    }
    let key = (version.clone(), source.clone());
    if refused.contains(&key) {
        look.action = format!("update {version} from {source} was refused before; not trying it again until the agent restarts");
        return (look, false);
    }
    let r = match &source {
        Source::Peer(n) => fetch_from_peer(node, n, false).await,
        Source::Url(url) => fetch_from_url(node, url, false).await,
    };
    match r {
        Ok(_) => {
            look.action = format!("update {version} from {source} applied: rebooting to try it");
            (look, true)
        }
        Err(f) => {
            // What the artefact or its source is does not change by
            // asking again; the network or the disk may.
            if f.code.starts_with("update_") || f.code == "index_mismatch" {
                refused.insert(key);
            }
            look.action = format!("update {version} from {source} could not be applied: {f}");
            (look, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_read_in_utc() {
        let at =
            |h: u64, m: u64| UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + h * 3600 + m * 60);
        let w = Window::parse("02:00-05:00").ok();
        assert!(in_window(w, at(2, 0)) && in_window(w, at(4, 59)));
        assert!(!in_window(w, at(5, 0)) && !in_window(w, at(1, 59)));
        assert!(in_window(None, at(13, 0)));
    }

    #[test]
    fn the_newest_wins_and_the_nearest_among_equals() {
        let v = |s: &str| Version::parse(s).unwrap();
        let got = newest(vec![
            (v("1.2.0"), Source::Peer("near".into())),
            (v("1.3.0"), Source::Peer("far".into())),
            (v("1.3.0"), Source::Url("http://m/a.nvu".into())),
        ]);
        assert_eq!(got, Some((v("1.3.0"), Source::Peer("far".into()))));
        assert_eq!(newest(Vec::new()), None);
    }
}
