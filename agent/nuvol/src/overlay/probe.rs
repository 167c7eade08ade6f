//! Measuring the overlay: HTTP probes of the peers' services, the
//! throughput benchmark (test hooks only), and byte counters for /metrics.

use super::*;

/// Query that measures TCP throughput from the answering box to an address
/// (payload `<ip> <MiB>`; only with `[debug] test_hooks`): the benchmark of
/// the overlay against the underlay.
pub const BENCH_QUERY: &str = "nuvol-ov-bench";

/// TCP port of the benchmark's source (only with `[debug] test_hooks`).
pub const BENCH_PORT: u16 = 51821;

/// Most MiB one benchmark transfer sends.
pub(super) const BENCH_MAX_MIB: u32 = 64;

/// Time budget of one benchmark transfer.
pub(super) const BENCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Prometheus lines: overlay (WireGuard) bytes received/sent over all
/// peers, for the per-box traffic benchmarks (gossip bytes are the api
/// crate's `nuvol_gossip_bytes_total`).
pub fn metrics(slot: Option<&StatusSlot>) -> String {
    let mut out = String::new();
    let ov = slot.and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone());
    if let Some(ov) = ov {
        let sum = |k: &str| -> u64 {
            ov["peers"]
                .as_array()
                .map(|p| p.iter().filter_map(|x| x[k].as_u64()).sum())
                .unwrap_or(0)
        };
        out.push_str(&format!(
            "# TYPE nuvol_overlay_bytes_total counter\nnuvol_overlay_bytes_total{{dir=\"in\"}} {}\nnuvol_overlay_bytes_total{{dir=\"out\"}} {}\n",
            sum("rx_bytes"),
            sum("tx_bytes")
        ));
    }
    out
}

/// Most HTTP services probed per peer.
pub(super) const MAX_PROBES: usize = 8;

/// How often services are probed over the overlay.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(20);

/// Time budget of one probe (connect + answer).
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// GET `/` at `addr` over whatever route the kernel has (the overlay for
/// overlay addresses): the status code and the time it took, or what failed.
pub async fn probe(addr: SocketAddr) -> Result<(u16, Duration), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let host = match addr {
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
            SocketAddr::V4(a) => a.ip().to_string(),
        };
        s.write_all(
            format!("GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("send: {e}"))?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s
                .read(&mut buf[n..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let line = std::str::from_utf8(&buf[..n]).unwrap_or("");
        line.strip_prefix("HTTP/1.")
            .and_then(|l| l.get(2..5))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| "not an HTTP answer".to_string())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, fut).await {
        Ok(Ok(code)) => Ok((code, t0.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer in {PROBE_TIMEOUT:?}")),
    }
}

/// Probe results by (node, service).
pub(super) type Probes = Arc<Mutex<HashMap<(String, String), serde_json::Value>>>;

/// Probe every admitted peer's HTTP services over the overlay.
pub(super) fn probe_all(admitted: &[Admitted], probes: &Probes) {
    for a in admitted {
        for (name, port) in &a.http {
            let key = (a.node.clone(), name.clone());
            // IPv4: the panel and containers' published ports listen there.
            let addr = SocketAddr::new(IpAddr::V4(a.address4), *port);
            let probes = probes.clone();
            tokio::spawn(async move {
                let v = match probe(addr).await {
                    Ok((code, t)) => serde_json::json!({
                        "service": key.1, "url": format!("http://{addr}/"),
                        "status": code, "ms": t.as_secs_f64() * 1000.0,
                    }),
                    Err(e) => serde_json::json!({
                        "service": key.1, "url": format!("http://{addr}/"), "error": e,
                    }),
                };
                probes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, v);
            });
        }
    }
}

pub(super) fn bench_args(payload: &[u8]) -> Option<(IpAddr, u32)> {
    let s = std::str::from_utf8(payload).ok()?;
    let mut it = s.split_whitespace();
    let ip = it.next()?.parse().ok()?;
    let mib: u32 = it.next()?.parse().ok()?;
    (it.next().is_none() && (1..=BENCH_MAX_MIB).contains(&mib)).then_some((ip, mib))
}

/// Fetch `mib` MiB from the benchmark source at `ip`: `<MiB> <seconds>
/// <Mbit/s>` or `error: ...`.
pub(super) async fn bench_from(ip: IpAddr, mib: u32) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(SocketAddr::new(ip, BENCH_PORT)).await?;
        s.write_all(&mib.to_be_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        Ok::<u64, std::io::Error>(total)
    };
    match tokio::time::timeout(BENCH_TIMEOUT, fut).await {
        Ok(Ok(n)) if n == u64::from(mib) << 20 => {
            let secs = t0.elapsed().as_secs_f64();
            format!("{mib} {secs:.3} {:.1}", (n as f64 * 8.0) / secs / 1e6)
        }
        Ok(Ok(n)) => format!("error: got {n} bytes of {}", u64::from(mib) << 20),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => format!("error: not done in {BENCH_TIMEOUT:?}"),
    }
}

/// The benchmark's source: a connection asks for N MiB (u32, big-endian,
/// at most [`BENCH_MAX_MIB`]) and gets that many zero bytes; two at a time.
pub(super) async fn bench_source() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = match tokio::net::TcpListener::bind(("0.0.0.0", BENCH_PORT)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("overlay: benchmark source on {BENCH_PORT}: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(2));
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // busy: the connection is dropped
        };
        tokio::spawn(async move {
            let _permit = permit;
            let fut = async {
                let mut n = [0u8; 4];
                s.read_exact(&mut n).await?;
                let mib = u32::from_be_bytes(n).min(BENCH_MAX_MIB);
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..mib {
                    s.write_all(&chunk).await?;
                }
                s.shutdown().await
            };
            let _ = tokio::time::timeout(BENCH_TIMEOUT, fut).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_arguments_are_bounded() {
        assert_eq!(
            bench_args(b"100.64.0.1 8"),
            Some(("100.64.0.1".parse().unwrap(), 8))
        );
        for bad in [
            &b""[..],
            b"x 8",
            b"100.64.0.1",
            b"100.64.0.1 0",
            b"100.64.0.1 65",
            b"1.2.3.4 1 2",
            b"\xff",
        ] {
            assert_eq!(bench_args(bad), None, "{bad:?}");
        }
    }
}
