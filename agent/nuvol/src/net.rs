//! The agent's side of networking: start `nuvol-net` on a box, or leave the
//! host alone on a development machine.

use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The running network manager, shared with the API.
pub type Net = Arc<OnceLock<nuvol_net::NetHandle>>;

/// Start managing links per `cfg`. Errors are logged, never fatal: the panel
/// must stay up even if netlink is unavailable.
/// `panel_port` is kept from containers' published ports.
pub async fn start(
    cfg: &nuvol_config::NetworkConfig,
    state_dir: &Path,
    hostname: &str,
    panel_port: u16,
) -> Net {
    let cell: Net = Arc::new(OnceLock::new());
    let opts = nuvol_net::NetOptions::new("/etc/resolv.conf", state_dir.join("net"), hostname)
        .reserve_port(nuvol_net::Proto::Tcp, panel_port);
    match nuvol_net::start(cfg.clone(), opts).await {
        Ok(h) => {
            let _ = cell.set(h);
        }
        Err(e) => tracing::error!("network manager did not start: {e}"),
    }
    cell
}

/// DHCP RELEASE and stop.
pub async fn shutdown(net: Net) {
    if let Some(h) = Arc::into_inner(net).and_then(|c| c.into_inner()) {
        h.shutdown().await;
    }
}

/// The status as JSON for `GET /api/v1/network`.
pub fn status_json(net: &Net) -> Option<serde_json::Value> {
    net.get()
        .and_then(|h| serde_json::to_value(h.status()).ok())
}
