//! Accepting connections: the accept loop, the connection budget at the
//! door ([`crate::conns`]) and one connection's life until hyper has it.
//!
//! A flood of connections that never say anything is the cheapest attack
//! on an open port, so a silent connection costs the agent as little as
//! the kernel lets it: `accept`, one socket option, an epoll registration
//! and a close. Nothing else (no TCP_NODELAY or keepalive options, no TLS
//! or HTTP state, no buffers) is set up until its first byte arrives.
//! Until then it is closed with a reset (`SO_LINGER` 0), whether it goes
//! to make room for another, for saying nothing in time or because it was
//! refused: no FIN exchange, no TIME_WAIT left on the box for a peer that
//! never asked for anything. A connection that spoke is closed gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::{conns, handle, io, Conn, Ctx, Listeners, MAX_HEAD, MAX_HEADERS};

/// Accept on every listener until `shutdown` resolves.
pub(crate) async fn run(listeners: Listeners, ctx: Arc<Ctx>, shutdown: impl Future<Output = ()>) {
    let (http, https) = (listeners.http, listeners.https);
    let acceptor = https
        .as_ref()
        .map(|(_, cfg)| TlsAcceptor::from(cfg.clone()));
    tokio::pin!(shutdown);
    let mut backoff = AcceptBackoff::default();
    loop {
        let (accepted, tls) = tokio::select! {
            _ = &mut shutdown => break,
            r = accept(http.as_ref()) => (r, None),
            r = accept(https.as_ref().map(|(l, _)| l)) => (r, acceptor.clone()),
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                // Out of fds (EMFILE/ENFILE) or memory: wait, longer each
                // time, rather than spin on a listener that stays ready.
                tokio::time::sleep(backoff.failed(&e)).await;
                continue;
            }
        };
        // Reset on close until it speaks (module docs).
        linger_zero(&stream, true);
        let conn = Conn {
            peer,
            tls: tls.is_some(),
        };
        let Some(slot) = ctx.conns.admit(crate::peer_ip(&conn)) else {
            tracing::debug!(%peer, "connection refused: every connection in its way is busy");
            continue; // dropping the stream resets it
        };
        tokio::spawn(connection(stream, conn, tls, ctx.clone(), slot));
    }
}

/// Set or clear a zero `SO_LINGER`: with it, close sends a reset.
fn linger_zero(stream: &TcpStream, on: bool) {
    let linger = on.then_some(Duration::ZERO);
    if let Err(e) = socket2::SockRef::from(stream).set_linger(linger) {
        tracing::debug!("SO_LINGER: {e}");
    }
}

/// One admitted connection, until it ends or is closed to make room.
async fn connection(
    stream: TcpStream,
    conn: Conn,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Ctx>,
    slot: conns::Slot,
) {
    let peer = conn.peer;
    let slot = Arc::new(slot);
    let run = async {
        // Nothing (no TLS state, no HTTP buffers) is set up for a
        // connection until its first byte: a silent one costs a socket and
        // this small task, waits in the budget's own tier for the silent,
        // and goes at the head deadline.
        // `peek`, not `readable`: a new socket reads as ready before
        // anything arrived (tokio starts it so), `peek` waits for a byte.
        let mut first = [0u8; 1];
        match tokio::time::timeout(io::HEAD_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return, // closed, or failed, before a byte
            Err(_) => {
                tracing::debug!(%peer, "nothing sent in time");
                return;
            }
        }
        match slot.talking() {
            conns::Talking::Admitted => {}
            conns::Talking::MadeRoom => tokio::task::yield_now().await,
            conns::Talking::Refused => {
                tracing::debug!(%peer, "connection refused: every talking connection is busy");
                return;
            }
        }
        linger_zero(&stream, false);
        let _ = stream.set_nodelay(true);
        io::keepalive(&stream);
        // Boxed: the TLS and HTTP state machines are several KiB; inline
        // they would make every waiting task that big.
        match tls {
            Some(acceptor) => {
                let slot = slot.clone();
                Box::pin(async move {
                    let hs = tokio::time::timeout(io::HEAD_TIMEOUT, acceptor.accept(stream));
                    match hs.await {
                        Ok(Ok(s)) => serve_conn(s, ctx, conn, slot).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "tls handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                })
                .await
            }
            None => Box::pin(serve_conn(stream, ctx, conn, slot.clone())).await,
        }
    };
    tokio::select! {
        _ = run => {}
        _ = slot.evicted() => tracing::debug!(%peer, "idle connection closed to admit a new one"),
    }
}

/// How the accept loop waits after a failed accept: 10 ms, doubling up to
/// 1 s while accepts keep failing; one warning when they start failing,
/// then one line with the count at most every 10 s.
#[derive(Debug)]
struct AcceptBackoff {
    wait: Duration,
    failures: u64,
    logged: Option<Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            wait: ACCEPT_BACKOFF_MIN,
            failures: 0,
            logged: None,
        }
    }
}

/// First wait after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between accepts while they fail.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "accepting connections again");
        }
        *self = AcceptBackoff::default();
    }

    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.failures += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(failures = self.failures, "accept: {e}; backing off");
            self.logged = Some(Instant::now());
        }
        let w = self.wait;
        self.wait = (self.wait * 2).min(ACCEPT_BACKOFF_MAX);
        w
    }
}

async fn accept(l: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_conn<S>(stream: S, ctx: Arc<Ctx>, conn: Conn, slot: Arc<conns::Slot>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let streams = io::Streams::default();
    let io = io::IdleTimeout::new(stream, ctx.idle).with_streams(streams.clone());
    let svc = hyper::service::service_fn(move |req| {
        let (ctx, streams) = (ctx.clone(), streams.clone());
        // Busy from the head until the body is sent: not closed to make room.
        let busy = slot.busy();
        async move {
            let resp = handle(ctx, conn, req).await?;
            let resp = io::track_stream(resp, &streams);
            Ok::<_, Infallible>(io::hold(resp, busy))
        }
    });
    let c = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The whole head within this, counted from when the connection
        // starts waiting for it: also the keep-alive idle limit.
        .header_read_timeout(io::HEAD_TIMEOUT)
        // The head limit exact (the read buffer alone lets up to about
        // twice its size through), and the buffer no larger than a head.
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = c.await {
        tracing::debug!(peer = %conn.peer, "connection: {e}");
    }
}
