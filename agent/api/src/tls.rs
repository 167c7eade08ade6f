//! HTTPS: a self-signed certificate made on first boot and kept on the data
//! partition, served with rustls (ring provider: small, no C toolchain
//! beyond what ring builds, fine on a static musl binary).
//!
//! Owners check the certificate by its SHA-256 fingerprint, which the agent
//! prints on the console next to the admin token.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Certificate file (DER) under the state directory.
pub const CERT_FILE: &str = "tls/cert.der";
/// Private key file (PKCS#8 DER, mode 0600) under the state directory.
pub const KEY_FILE: &str = "tls/key.der";
/// Largest certificate or key file read.
const MAX_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("making the certificate: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A loaded certificate: the rustls config and the fingerprint to show.
pub struct Identity {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// Whether it was made just now.
    pub created: bool,
}

/// SHA-256 fingerprint of DER bytes, colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() == 0 || meta.len() > MAX_FILE {
        return None;
    }
    std::fs::read(path).ok()
}

/// Load the certificate from `state_dir`, or make one for `hostname` (and
/// `hostname.local`, `localhost`) if there is none or it does not load.
pub fn load_or_create(state_dir: &Path, hostname: &str) -> Result<Identity, TlsError> {
    let (cp, kp) = (state_dir.join(CERT_FILE), state_dir.join(KEY_FILE));
    if let (Some(c), Some(k)) = (read_small(&cp), read_small(&kp)) {
        match server_config(c.clone(), k) {
            Ok(config) => {
                return Ok(Identity {
                    config,
                    fingerprint: fingerprint(&c),
                    created: false,
                })
            }
            Err(e) => tracing::warn!("{}: {e}; making a new certificate", cp.display()),
        }
    }
    let names = vec![
        hostname.to_string(),
        format!("{hostname}.local"),
        "localhost".to_string(),
    ];
    let ck =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = ck.cert.der().to_vec();
    let key = ck.signing_key.serialize_der();
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| TlsError::Io { path, source }
    };
    nuvol_durable::write_atomic(&kp, &key, nuvol_durable::Mode::Private).map_err(io(&kp))?;
    nuvol_durable::write_atomic(&cp, &cert, nuvol_durable::Mode::Private).map_err(io(&cp))?;
    Ok(Identity {
        config: server_config(cert.clone(), key)?,
        fingerprint: fingerprint(&cert),
        created: true,
    })
}

/// A rustls server config for one certificate and its PKCS#8 key.
pub fn server_config(cert: Vec<u8>, key: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Normalise a fingerprint to 64 lower-case hex digits (colons and case
/// ignored); `None` if it is not one.
pub fn normalise_fingerprint(s: &str) -> Option<String> {
    let h: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// Accepts exactly one certificate: the one with the pinned SHA-256.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity)
            .replace(':', "")
            .to_ascii_lowercase();
        if crate::auth::ct_eq(got.as_bytes(), self.sha256.as_bytes()) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate fingerprint {} is not the pinned one",
                fingerprint(end_entity)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A client config that trusts only the certificate with this SHA-256
/// fingerprint (`nuvol ctl --fingerprint`): the box's certificate is
/// self-signed, so its fingerprint, shown on the console, is the trust.
pub fn pinned_client_config(fp: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let sha256 = normalise_fingerprint(fp)
        .ok_or_else(|| TlsError::Generate(format!("{fp:?} is not a SHA-256 fingerprint")))?;
    let provider = rustls::crypto::ring::default_provider();
    let algs = provider.signature_verification_algorithms;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { sha256, algs }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reloaded() {
        let dir = std::env::temp_dir().join(format!("nuvol-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&dir, "box").unwrap();
        assert!(a.created);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        let b = load_or_create(&dir, "box").unwrap();
        assert!(!b.created);
        assert_eq!(a.fingerprint, b.fingerprint);
        // A damaged key is replaced, never fatal.
        std::fs::write(dir.join(KEY_FILE), b"junk").unwrap();
        let c = load_or_create(&dir, "box").unwrap();
        assert!(c.created && c.fingerprint != a.fingerprint);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
