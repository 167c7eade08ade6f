//! Minimal HTTP/1.1 download for `[bundles] install` URLs. Bundles are
//! signed, so integrity does not depend on the transport; plain `http://`
//! on the community network is the expected case.

use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Retrying will not help (bad URL, 404, too big).
    #[error("{0}")]
    Permanent(String),
    /// Network trouble; try again later.
    #[error("{0}")]
    Transient(String),
    /// The disk filled up while writing (turned into `Permanent` with the
    /// sizes before it is returned).
    #[error("{0}")]
    Full(String),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest silence while receiving the body.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// GET `url` into `dest` (written to a temp file, fsynced, renamed), at
/// most `max` bytes.
pub async fn download(url: &str, dest: &Path, max: u64) -> Result<(), FetchError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| FetchError::Permanent(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(FetchError::Permanent(format!(
                "{url}: scheme {other} is not supported; use http:// (bundles are signed)"
            )))
        }
        None => return Err(FetchError::Permanent(format!("{url}: no scheme"))),
    }
    let host = uri
        .host()
        .ok_or_else(|| FetchError::Permanent(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| FetchError::Transient(format!("{url}: connect timed out")))?
    .map_err(|e| FetchError::Transient(format!("{url}: connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Transient(format!("{url}: {e}")))?;
    let conn_task = tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host);
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("nuvol/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| FetchError::Permanent(format!("{url}: {e}")))?;
    let resp = tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| FetchError::Transient(format!("{url}: no answer")))?
        .map_err(|e| FetchError::Transient(format!("{url}: {e}")))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(FetchError::Transient(format!(
            "{url}: server said {status}"
        )));
    }
    if !status.is_success() {
        return Err(FetchError::Permanent(format!(
            "{url}: server said {status}"
        )));
    }
    // A bundle that cannot fit next to its install is not downloaded.
    let dir = dest.parent().unwrap_or(Path::new("."));
    let declared = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared {
        if n > max {
            conn_task.abort();
            return Err(FetchError::Permanent(format!(
                "{url}: {n} bytes, larger than the {max}-byte limit"
            )));
        }
        if let Err(e) = nuvol_bundle::space::ensure(dir, nuvol_bundle::space::needed_to_receive(n))
        {
            conn_task.abort();
            return Err(FetchError::Permanent(format!("{url}: {e}")));
        }
    }
    let tmp = dest.with_extension("part");
    let mut got: u64 = 0;
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| FetchError::Transient(format!("{}: {e}", tmp.display())))?;
        let mut body = resp.into_body();
        loop {
            let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| FetchError::Transient(format!("{url}: transfer stalled")))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| FetchError::Transient(format!("{url}: {e}")))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                if got > max {
                    return Err(FetchError::Permanent(format!(
                        "{url}: larger than the {max}-byte limit"
                    )));
                }
                file.write_all(&data)
                    .await
                    .map_err(|e| write_error(&tmp, e))?;
            }
        }
        file.sync_all().await.map_err(|e| write_error(&tmp, e))?;
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| FetchError::Transient(format!("{}: {e}", dest.display())))
    }
    .await;
    conn_task.abort();
    match result {
        Err(FetchError::Full(_)) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            // Measured with the partial file gone.
            let free = nuvol_bundle::space::space(dir).map_or(0, |s| s.free_bytes);
            let (needed, at_least) = match declared {
                Some(n) => (nuvol_bundle::space::needed_to_receive(n), ""),
                None => (nuvol_bundle::space::needed_to_receive(got), "at least "),
            };
            Err(FetchError::Permanent(format!(
                "{url}: not enough free space on {}: the download filled it after {got} bytes \
                 and was dropped; {at_least}{needed} bytes ({}) needed, {free} bytes ({}) free",
                dir.display(),
                nuvol_human::bytes(needed),
                nuvol_human::bytes(free)
            )))
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

/// A failed write: the disk being full is not worth retrying soon.
fn write_error(path: &Path, e: std::io::Error) -> FetchError {
    if nuvol_bundle::space::is_full(&e) {
        FetchError::Full(format!("{}: {e}", path.display()))
    } else {
        FetchError::Transient(format!("{}: {e}", path.display()))
    }
}
