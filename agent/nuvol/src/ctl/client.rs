//! The connection to a box: host, credentials, TLS pinning, request
//! bodies (a file upload with a progress bar) and error answers.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::output::human_bytes;
use super::{CtlArgs, Fail, BOX_ERROR, CANNOT};

fn token(args: &CtlArgs) -> Option<String> {
    if let Some(t) = &args.token {
        return Some(t.clone());
    }
    if let Ok(t) = std::env::var("NUVOL_TOKEN") {
        if !t.is_empty() {
            return Some(t);
        }
    }
    let path = args.token_file.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/nuvol/token"))
    })?;
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

pub(super) struct Client {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    token: Option<String>,
    tls: Option<Arc<nuvol_api::rustls::ClientConfig>>,
}

/// A request body: nothing, a small JSON document, or a file streamed
/// with progress.
pub(super) enum Payload {
    Empty,
    Json(Option<Bytes>),
    File(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

impl hyper::body::Body for Payload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Payload::Empty => Poll::Ready(None),
            Payload::Json(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Payload::File(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

impl Client {
    pub(super) fn new(args: &CtlArgs) -> Result<Client, Fail> {
        let host_arg = args
            .host
            .clone()
            .or_else(|| std::env::var("NUVOL_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "http://127.0.0.1".into());
        let uri: hyper::Uri = host_arg
            .parse()
            .map_err(|e| Fail(2, format!("--host {host_arg:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Fail(2, "--host must start with http:// or https://".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| Fail(2, "--host has no host name".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let fp_env = std::env::var("NUVOL_FINGERPRINT").ok();
            let fp = args.fingerprint.as_deref().or(fp_env.as_deref()).ok_or_else(|| {
                Fail(
                    2,
                    "an https:// box needs --fingerprint (its certificate's SHA-256, shown on the box's console)"
                        .into(),
                )
            })?;
            Some(nuvol_api::tls::pinned_client_config(fp).map_err(|e| Fail(2, e.to_string()))?)
        } else {
            None
        };
        Ok(Client {
            https,
            authority: uri.authority().map_or(host.clone(), |a| a.to_string()),
            host,
            port,
            token: token(args),
            tls,
        })
    }

    pub(super) async fn send(
        &self,
        method: &str,
        path: &str,
        body: Payload,
        len: Option<u64>,
    ) -> Result<hyper::Response<Incoming>, Fail> {
        let cannot = |e: String| {
            Fail(
                CANNOT,
                format!("cannot reach {}:{}: {e}", self.host, self.port),
            )
        };
        let tcp = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| cannot("timed out".into()))?
        .map_err(|e| cannot(e.to_string()))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("nuvol-ctl/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(n) = len {
            req = req.header(hyper::header::CONTENT_LENGTH, n);
        }
        let req = req.body(body).map_err(|e| Fail(2, e.to_string()))?;
        let resp = if let (true, Some(cfg)) = (self.https, &self.tls) {
            let name = nuvol_api::rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| Fail(2, format!("host name: {e}")))?;
            let tls = nuvol_api::tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| cannot(format!("TLS: {e}")))?;
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| cannot(e.to_string()))?;
            tokio::spawn(conn);
            s.send_request(req).await
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| cannot(e.to_string()))?;
            tokio::spawn(conn);
            s.send_request(req).await
        }
        .map_err(|e| cannot(e.to_string()))?;
        let st = resp.status();
        if st == hyper::StatusCode::UNAUTHORIZED || st == hyper::StatusCode::FORBIDDEN {
            let (code, msg) = error_code_text(resp).await;
            // Only the credential codes are a credential problem; anything
            // else (a bundle or update whose key is not trusted) is the
            // box's answer.
            if !matches!(
                code.as_str(),
                "unauthorized" | "wrong_credential" | "csrf" | ""
            ) {
                return Err(Fail(BOX_ERROR, format!("{st}: {code}: {msg}")));
            }
            let hint = if self.token.is_none() {
                " (no token: use --token, NUVOL_TOKEN or ~/.config/nuvol/token)"
            } else {
                ""
            };
            return Err(Fail(CANNOT, format!("not authorised: {msg}{hint}")));
        }
        if st.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Err(Fail(
                CANNOT,
                format!("the box redirects to {loc}: use --host https://… --fingerprint …"),
            ));
        }
        Ok(resp)
    }

    /// A request whose answer is JSON; box errors become exit code 1.
    pub(super) async fn json(
        &self,
        method: &str,
        path: &str,
        body: Payload,
        len: Option<u64>,
    ) -> Result<Value, Fail> {
        let resp = self.send(method, path, body, len).await?;
        let ok = resp.status().is_success();
        let st = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Fail(CANNOT, format!("reading the answer: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !ok {
            let msg = v["error"]["message"].as_str().unwrap_or("");
            let code = v["error"]["code"].as_str().unwrap_or("error");
            return Err(Fail(BOX_ERROR, format!("{st}: {code}: {msg}")));
        }
        Ok(v)
    }
}

pub(super) async fn error_code_text(resp: hyper::Response<Incoming>) -> (String, String) {
    let b = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    let msg = v["error"]["message"]
        .as_str()
        .map_or_else(|| String::from_utf8_lossy(&b).into_owned(), str::to_string);
    (code, msg)
}

pub(super) async fn error_text(resp: hyper::Response<Incoming>) -> String {
    let b = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    v["error"]["message"]
        .as_str()
        .map_or_else(|| String::from_utf8_lossy(&b).into_owned(), str::to_string)
}

/// Stream `file` as the body, drawing a progress bar on stderr.
pub(super) fn upload(file: &std::path::Path) -> Result<(Payload, u64), Fail> {
    let f = std::fs::File::open(file).map_err(|e| Fail(2, format!("{}: {e}", file.display())))?;
    let len = f
        .metadata()
        .map_err(|e| Fail(2, format!("{}: {e}", file.display())))?
        .len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut f = f;
        let mut sent: u64 = 0;
        let mut last = Instant::now() - Duration::from_secs(1);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                    if last.elapsed() >= Duration::from_millis(100) || sent == len {
                        progress(sent, len);
                        last = Instant::now();
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        progress(sent, len);
        eprintln!();
    });
    Ok((Payload::File(rx), len))
}

fn progress(sent: u64, len: u64) {
    let pct = (sent * 100).checked_div(len).unwrap_or(100);
    let filled = (pct / 4) as usize;
    eprint!(
        "\r[{}{}] {pct:>3}% {} / {}",
        "#".repeat(filled),
        ".".repeat(25 - filled.min(25)),
        human_bytes(sent),
        human_bytes(len)
    );
}
