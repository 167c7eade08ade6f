//! A connection wrapper that fails I/O after a stretch with no traffic in
//! either direction, so slow or silent clients cannot hold a connection
//! (and its buffers) forever.
//!
//! Streaming responses (log follow, events: any body without a known
//! length) are the exception: while such a body is waiting for something
//! to send, the silence is ours, not the client's, so the idle timer does
//! not close the connection ([`Streams`], [`track_stream`]). A client that
//! stops reading is still cut: once the body has produced data that cannot
//! be written, it is no longer waiting and the timer runs. Dead peers are
//! found by TCP keepalive ([`keepalive`]): the failed probes make the
//! socket fail, hyper ends the connection and the stream's feeding task
//! sees its channel closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// No bytes read or written for this long closes the connection.
pub const IDLE: Duration = Duration::from_secs(120);

/// A request head must arrive whole within this, counted from when the
/// connection starts waiting for it (so it is also how long a keep-alive
/// connection may sit idle between requests) and the TLS handshake too.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive on accepted sockets: first probe after this much silence.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel declares the peer dead.
pub const KEEPALIVE_PROBES: u32 = 4;

/// Turn TCP keepalive on for an accepted connection, so a peer that
/// vanished (power cut, cable pulled) is noticed within about 100 s even
/// when nothing is being sent.
pub fn keepalive(stream: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!("TCP keepalive: {e}");
    }
}

/// The streaming bodies of one connection that are waiting for data.
#[derive(Debug, Clone, Default)]
pub struct Streams(Arc<AtomicUsize>);

impl Streams {
    /// How many are waiting now.
    pub fn waiting(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A streaming body that tells its connection when it is waiting.
struct Tracked {
    inner: crate::Body,
    streams: Streams,
    waiting: bool,
}

impl Tracked {
    fn set_waiting(&mut self, w: bool) {
        if w != self.waiting {
            if w {
                self.streams.0.fetch_add(1, Ordering::Relaxed);
            } else {
                self.streams.0.fetch_sub(1, Ordering::Relaxed);
            }
            self.waiting = w;
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        this.set_waiting(r.is_pending());
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

/// Responses whose body has no known length (streams) are tracked in
/// `streams` so the idle timer spares them while they wait for data.
pub fn track_stream(resp: crate::Resp, streams: &Streams) -> crate::Resp {
    use hyper::body::Body as _;
    let (parts, body) = resp.into_parts();
    if body.is_end_stream() || body.size_hint().exact().is_some() {
        return hyper::Response::from_parts(parts, body);
    }
    let t = Tracked {
        inner: body,
        streams: streams.clone(),
        waiting: false,
    };
    hyper::Response::from_parts(parts, t.boxed_unsync())
}

/// A body that keeps `guard` until it is dropped (sent or abandoned).
struct Holding<G> {
    inner: crate::Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> hyper::body::Body for Holding<G> {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with `guard` kept alive until its body is done.
pub fn hold<G: Send + Unpin + 'static>(resp: crate::Resp, guard: G) -> crate::Resp {
    let (parts, inner) = resp.into_parts();
    let body = Holding {
        inner,
        _guard: guard,
    };
    hyper::Response::from_parts(parts, body.boxed_unsync())
}

pub struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    streams: Option<Streams>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            streams: None,
        }
    }

    /// Do not time out while one of `streams` waits for data.
    pub fn with_streams(mut self, streams: Streams) -> Self {
        self.streams = Some(streams);
        self
    }

    fn touch(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.streams.as_ref().is_some_and(|s| s.waiting() > 0) {
            // Our silence, not the peer's: look again after another period.
            self.touch();
            let _ = self.timer.as_mut().poll(cx);
            return false;
        }
        true
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle too long")
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_and_traffic_keeps_it_open() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, Duration::from_secs(10));
        // Traffic every 6 s keeps the connection for 30 s.
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                b.write_all(b"x").await.unwrap();
            }
            b // then silence, but keep the pipe open
        });
        let mut buf = [0u8; 8];
        for _ in 0..5 {
            assert_eq!(a.read(&mut buf).await.unwrap(), 1);
        }
        let t = tokio::time::Instant::now();
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_secs(10));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_stream_keeps_the_connection_and_only_while_it_waits() {
        let (a, _b) = tokio::io::duplex(64);
        let streams = Streams::default();
        let mut a = IdleTimeout::new(a, Duration::from_secs(10)).with_streams(streams.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let resp = track_stream(hyper::Response::new(crate::channel_body(rx)), &streams);
        let mut body = resp.into_body();
        // The body waits for data: the connection may be silent for long.
        let poll = futures_poll(&mut body);
        assert!(poll.is_pending());
        assert_eq!(streams.waiting(), 1);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(35), a.read(&mut buf)).await;
        assert!(r.is_err(), "still open after 35 s of a waiting stream");
        // Data arrives: no longer waiting; then the body is dropped.
        tx.send(Bytes::from_static(b"x")).await.unwrap();
        assert!(futures_poll(&mut body).is_ready());
        assert_eq!(streams.waiting(), 0);
        drop(body);
        let t = tokio::time::Instant::now();
        let err = a.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() <= Duration::from_secs(10));
        // Whole bodies are not tracked.
        let r = track_stream(hyper::Response::new(crate::full("abc")), &streams);
        assert_eq!(hyper::body::Body::size_hint(r.body()).exact(), Some(3));
    }

    fn futures_poll(
        b: &mut crate::Body,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use hyper::body::Body as _;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        Pin::new(b).poll_frame(&mut cx)
    }
}
