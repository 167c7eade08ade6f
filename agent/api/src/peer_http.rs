//! The plain HTTP/1.1 GET the agent uses towards other boxes and update
//! mirrors. What comes back is hostile until checked, so every GET has a
//! budget: at most `max` bytes, `timeout` to connect and for the answer's
//! head, `idle` between body chunks, and a deadline for the whole transfer
//! (an average of at least [`MIN_RATE`] bytes per second after the first
//! `timeout + idle`), so a peer that drips bytes cannot hold a download
//! slot for hours.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Slowest average a transfer may have (bytes per second).
pub const MIN_RATE: u64 = 16 * 1024;

/// What one GET may take.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most bytes of the body.
    pub max: u64,
    /// To connect, and for the answer's head.
    pub timeout: Duration,
    /// Longest silence between body chunks.
    pub idle: Duration,
}

impl Budget {
    /// A small answer (a description, an index, a head): `timeout` for
    /// everything.
    pub fn small(max: u64, timeout: Duration) -> Budget {
        Budget {
            max,
            timeout,
            idle: timeout,
        }
    }

    /// The whole transfer's deadline (see the module).
    pub fn deadline(&self) -> Duration {
        self.timeout + self.idle + Duration::from_secs(self.max / MIN_RATE)
    }
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    TooLarge(String),
    /// Writing what came failed (disk full, ...).
    #[error("writing: {0}")]
    Write(std::io::Error),
}

/// Where an answer goes.
pub enum Sink<'a> {
    /// Into memory (the caller bounds it with `max`).
    Memory(&'a mut Vec<u8>),
    /// Into a file written on the blocking pool.
    File(&'a mut crate::filewrite::BlockingWriter),
    /// The first bytes into memory, as many as the function says are
    /// needed given those already in (at most `max`); the rest is never
    /// read (the connection is closed once they are in).
    Head(&'a mut Vec<u8>, fn(&[u8]) -> usize),
}

impl Sink<'_> {
    /// Take a chunk; `false` once nothing more is wanted.
    async fn put(&mut self, d: Bytes, max: u64) -> Result<bool, PeerError> {
        match self {
            Sink::Memory(v) => {
                v.extend_from_slice(&d);
                Ok(true)
            }
            Sink::File(w) => w.write(d).await.map_err(PeerError::Write).map(|()| true),
            Sink::Head(v, needed) => {
                // Saturating: a 32-bit usize cannot hold every u64 budget.
                let max = usize::try_from(max).unwrap_or(usize::MAX);
                let mut d = &d[..];
                // Byte by byte while the need grows with what came.
                while !d.is_empty() {
                    let want = needed(v).min(max);
                    if v.len() >= want {
                        break;
                    }
                    let take = (want - v.len()).min(d.len());
                    v.extend_from_slice(&d[..take]);
                    d = &d[take..];
                }
                Ok(v.len() < needed(v).min(max))
            }
        }
    }
}

/// GET `path` from `addr:port`, handing each body chunk to `sink` (see
/// the module for the budget).
pub async fn http_get(
    addr: IpAddr,
    port: u16,
    path: &str,
    budget: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    let host = match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    };
    get(SocketAddr::new(addr, port), &host, path, budget, sink).await
}

/// An `http://host[:port]/path` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// For the Host header (`host:port` as written).
    pub authority: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Longest URL accepted.
pub const MAX_URL: usize = 1024;

impl HttpUrl {
    /// Only plain `http://`: what is downloaded is signed, so the
    /// transport need not be trusted (and a box has no CA store).
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        if url.len() > MAX_URL || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!(
                "not a URL (at most {MAX_URL} characters, no spaces)"
            ));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{url}: https is not supported; use http:// (what is downloaded is signed and checked against this box's keys)"
                ))
            }
            Some(other) => return Err(format!("{url}: scheme {other} is not supported; use http://")),
            None => return Err(format!("{url}: not an http:// URL")),
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|| host.clone());
        if authority.contains('@') {
            return Err(format!("{url}: credentials in URLs are not supported"));
        }
        Ok(HttpUrl {
            authority,
            host,
            port: uri.port_u16().unwrap_or(80),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }
}

/// GET an `http://` URL (the host resolved within `timeout`), with the
/// budget of [`http_get`].
pub async fn get_url(url: &HttpUrl, budget: Budget, sink: &mut Sink<'_>) -> Result<(), PeerError> {
    let f = |m: String| PeerError::Failed(m);
    let addr = tokio::time::timeout(
        budget.timeout,
        tokio::net::lookup_host((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| f(format!("{}: name lookup timed out", url.host)))?
    .map_err(|e| f(format!("{}: {e}", url.host)))?
    .next()
    .ok_or_else(|| f(format!("{}: no address", url.host)))?;
    get(addr, &url.authority, &url.path, budget, sink).await
}

async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    b: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    match tokio::time::timeout(b.deadline(), get_inner(addr, host, path, b, sink)).await {
        Ok(r) => r,
        Err(_) => Err(PeerError::Failed(format!(
            "too slow: {} bytes at most must come in {} s (at least {} KiB/s)",
            b.max,
            b.deadline().as_secs(),
            MIN_RATE / 1024
        ))),
    }
}

async fn get_inner(
    addr: SocketAddr,
    host: &str,
    path: &str,
    b: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    let Budget { max, timeout, idle } = b;
    let f = |m: String| PeerError::Failed(m);
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| f("connect timed out".into()))?
        .map_err(|e| f(format!("connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| f(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let result = async {
        let req = Request::get(path)
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("nuvol/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| f(e.to_string()))?;
        let resp = tokio::time::timeout(timeout, sender.send_request(req))
            .await
            .map_err(|_| f("no answer in time".into()))?
            .map_err(|e| f(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let mut body = resp.into_body();
            let mut text = Vec::new();
            while let Ok(Some(Ok(fr))) = tokio::time::timeout(timeout, body.frame()).await {
                if let Ok(d) = fr.into_data() {
                    text.extend_from_slice(&d);
                }
                if text.len() > 4096 {
                    break;
                }
            }
            let code = serde_json::from_slice::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
            return Err(f(match code {
                Some(c) => format!("the peer said {status} ({c})"),
                None => format!("the peer said {status}"),
            }));
        }
        let declared = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) && !matches!(sink, Sink::Head(..)) {
            return Err(PeerError::TooLarge(format!(
                "the answer is over the {max}-byte limit"
            )));
        }
        let mut body = resp.into_body();
        let mut got: u64 = 0;
        loop {
            let frame = tokio::time::timeout(idle, body.frame())
                .await
                .map_err(|_| f("transfer stalled".into()))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| f(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                if got > max && !matches!(sink, Sink::Head(..)) {
                    return Err(PeerError::TooLarge(format!(
                        "the answer is over the {max}-byte limit"
                    )));
                }
                if !sink.put(data, max).await? {
                    break;
                }
            }
        }
        Ok(())
    }
    .await;
    conn_task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_only() {
        let u = HttpUrl::parse("http://10.0.2.2:8000/os/nuvol.nvu?x=1").unwrap();
        assert_eq!(u.host, "10.0.2.2");
        assert_eq!(u.port, 8000);
        assert_eq!(u.authority, "10.0.2.2:8000");
        assert_eq!(u.path, "/os/nuvol.nvu?x=1");
        let u = HttpUrl::parse("http://[fd00::1]/a.nvu").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 80));
        assert_eq!(HttpUrl::parse("http://mirror").unwrap().path, "/");
        for (bad, why) in [
            ("https://mirror/a.nvu", "https is not supported"),
            ("ftp://mirror/a.nvu", "not supported"),
            ("/a.nvu", "not an http"),
            ("http://user:pw@mirror/a.nvu", "credentials"),
            ("http://mirror/a b.nvu", "no spaces"),
        ] {
            let e = HttpUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(HttpUrl::parse(&format!("http://m/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn the_deadline_grows_with_the_size_at_the_minimum_rate() {
        let s = Duration::from_secs;
        assert_eq!(Budget::small(4096, s(3)).deadline(), s(6));
        let b = Budget {
            max: 8 << 20,
            timeout: s(9),
            idle: s(30),
        };
        assert_eq!(b.deadline(), s(39 + 512));
    }
}
