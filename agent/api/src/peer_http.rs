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
    let host = authority(addr, port);
    get(
        SocketAddr::new(addr, port),
        &host,
        path,
        &Outgoing::GET,
        budget,
        sink,
    )
    .await
}

/// `ip:port` as a Host header writes it (IPv6 in brackets).
fn authority(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V6(a) => format!("[{a}]:{port}"),
        IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// What a request sends besides its path: GET with nothing, or a method
/// with headers and a JSON body.
pub struct Outgoing<'a> {
    pub method: hyper::Method,
    pub headers: &'a [(&'a str, &'a str)],
    pub json: Option<Bytes>,
}

impl Outgoing<'_> {
    const GET: Outgoing<'static> = Outgoing {
        method: hyper::Method::GET,
        headers: &[],
        json: None,
    };
}

/// POST a JSON `body` to `addr:port` `path`; the answer as [`http_get`]'s.
pub async fn http_post_json(
    addr: IpAddr,
    port: u16,
    path: &str,
    body: Bytes,
    budget: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    let send = Outgoing {
        method: hyper::Method::POST,
        headers: &[],
        json: Some(body),
    };
    http_send(addr, port, path, &send, budget, sink).await
}

/// Any request to `addr:port` `path`; the answer as [`http_get`]'s (a
/// status other than 2xx is an error).
pub async fn http_send(
    addr: IpAddr,
    port: u16,
    path: &str,
    send: &Outgoing<'_>,
    budget: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    let host = authority(addr, port);
    get(SocketAddr::new(addr, port), &host, path, send, budget, sink).await
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
    get(
        addr,
        &url.authority,
        &url.path,
        &Outgoing::GET,
        budget,
        sink,
    )
    .await
}

async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    send: &Outgoing<'_>,
    b: Budget,
    sink: &mut Sink<'_>,
) -> Result<(), PeerError> {
    match tokio::time::timeout(b.deadline(), get_inner(addr, host, path, send, b, sink)).await {
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
    send: &Outgoing<'_>,
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
        let mut req = Request::builder()
            .method(send.method.clone())
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::USER_AGENT,
                concat!("nuvol/", env!("CARGO_PKG_VERSION")),
            );
        if send.json.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in send.headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(
                send.json.clone().unwrap_or_default(),
            ))
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

    /// A POST carries its JSON body and type; an answer over the budget is
    /// refused however the peer frames it.
    #[tokio::test]
    async fn a_post_sends_json_and_its_answer_is_budgeted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in ["{\"ok\":1}", &"x".repeat(5000)] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = vec![0u8; 4096];
                let mut got = 0;
                while !String::from_utf8_lossy(&req[..got]).contains("{\"a\":1}") {
                    got += s.read(&mut req[got..]).await.unwrap();
                }
                seen.push(String::from_utf8_lossy(&req[..got]).into_owned());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    answer.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let budget = Budget::small(4096, Duration::from_secs(5));
        let mut buf = Vec::new();
        let body = Bytes::from_static(b"{\"a\":1}");
        http_post_json(
            ip,
            port,
            "/v3/x",
            body.clone(),
            budget,
            &mut Sink::Memory(&mut buf),
        )
        .await
        .unwrap();
        assert_eq!(buf, b"{\"ok\":1}");
        let mut buf = Vec::new();
        let e = http_post_json(ip, port, "/v3/x", body, budget, &mut Sink::Memory(&mut buf))
            .await
            .unwrap_err();
        assert!(matches!(e, PeerError::TooLarge(_)), "{e}");
        let seen = peer.await.unwrap();
        let req = seen[0].to_ascii_lowercase();
        assert!(req.starts_with("post /v3/x http/1.1"), "{req}");
        assert!(req.contains("content-type: application/json"), "{req}");
        assert!(req.contains(&format!("host: 127.0.0.1:{port}")), "{req}");
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
