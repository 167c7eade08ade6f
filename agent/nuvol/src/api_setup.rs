//! Start the panel and API: plain HTTP on the panel port, HTTPS with the
//! box's self-signed certificate on `[panel] https_port`, and the
//! credentials from `[admin]`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use nuvol_config::Config;

/// Pending connections the kernel queues for the panel's listeners (it
/// caps this at `net.core.somaxconn`, 4096 by default): under a flood of
/// connections a longer queue drops fewer honest SYNs, which would
/// otherwise wait a second for their retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(LISTEN_BACKLOG)
}

/// Where HTTPS listens: `--https-listen`, or every address on
/// `[panel] https_port` when the agent listens on every address too. A
/// development run with `--listen` and no `--https-listen` has no HTTPS
/// (and so serves everything over plain HTTP).
pub fn https_addr(
    listen: Option<SocketAddr>,
    https_listen: Option<SocketAddr>,
    cfg: &Config,
) -> Option<SocketAddr> {
    https_listen.or_else(|| {
        listen
            .is_none()
            .then(|| SocketAddr::from(([0, 0, 0, 0], cfg.panel.https_port)))
    })
}

/// Bind HTTPS (making the certificate on first start; its fingerprint is
/// printed on the console) and build the server options.
pub async fn listeners(
    http: tokio::net::TcpListener,
    https: Option<SocketAddr>,
    state_dir: &Path,
    cfg: &Config,
) -> (nuvol_api::Listeners, nuvol_api::Options) {
    let opts = nuvol_api::Options {
        admin: nuvol_api::auth::AdminSettings {
            password_hash: cfg.admin.password_hash.clone(),
            api_keys: cfg.admin.api_keys.clone(),
        },
        state_dir: Some(state_dir.to_path_buf()),
        allow_plain_http: cfg.panel.allow_plain_http,
        public_https_port: cfg
            .panel
            .public_https_port
            .or_else(crate::smbios::public_https_port),
        ..Default::default()
    };
    let tls = match https {
        Some(addr) => match bind_https(addr, state_dir, cfg.hostname()).await {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::error!("HTTPS: {e:#}; serving plain HTTP only");
                eprintln!("nuvol: HTTPS unavailable ({e:#}); panel on plain HTTP only");
                None
            }
        },
        None => None,
    };
    (
        nuvol_api::Listeners {
            http: Some(http),
            https: tls,
        },
        opts,
    )
}

async fn bind_https(
    addr: SocketAddr,
    state_dir: &Path,
    hostname: &str,
) -> anyhow::Result<(
    tokio::net::TcpListener,
    Arc<nuvol_api::rustls::ServerConfig>,
)> {
    let (sd, host) = (state_dir.to_path_buf(), hostname.to_string());
    let id = tokio::task::spawn_blocking(move || nuvol_api::tls::load_or_create(&sd, &host))
        .await
        .context("certificate task")??;
    let l = bind(addr).with_context(|| format!("listen on {addr}"))?;
    let port = l.local_addr().map_or(addr.port(), |a| a.port());
    eprintln!(
        "nuvol: https on port {port}, certificate SHA-256 fingerprint: {}",
        id.fingerprint
    );
    tracing::info!(port, fingerprint = %id.fingerprint, created = id.created, "https");
    Ok((l, id.config))
}
