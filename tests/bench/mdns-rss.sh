#!/bin/sh
# RSS of nuvol-mdns vs mdns-sd (the peer judged in docs/mdns.md), same run,
# same setup: 20 services published, 200 discovered (announced from a second
# network namespace by nuvol-mdns's `rss` example). Needs root.
#   tests/bench/mdns-rss.sh
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=x86_64-unknown-linux-musl
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build -q --release --target $TARGET -p nuvol-mdns --example rss --manifest-path "$ROOT/Cargo.toml"
RSS="$CARGO_TARGET_DIR/$TARGET/release/examples/rss"

PEER=$(mktemp -d "${TMPDIR:-/tmp}/mdns-sd-peer.XXXXXX")
trap 'rm -rf "$PEER"' EXIT INT TERM
mkdir -p "$PEER/src"
cat >"$PEER/Cargo.toml" <<'TOML'
[package]
name = "mdns-sd-peer"
version = "0.1.0"
edition = "2021"
[dependencies]
mdns-sd = "0.21"
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
[workspace]
TOML
cat >"$PEER/src/main.rs" <<'RS'
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
fn rss() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default().lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join(", ")
}
fn main() {
    println!("before start: {}", rss());
    let d = ServiceDaemon::new().expect("daemon");
    for i in 0..20 {
        let p = HashMap::from([("i".to_string(), i.to_string())]);
        let info = ServiceInfo::new(&format!("_t{i}._tcp.local."), &format!("Local service {i}"), "peer.local.", "", 8000 + i, p)
            .expect("info").enable_addr_auto();
        d.register(info).expect("register");
    }
    let rx = d.browse("_http._tcp.local.").expect("browse");
    let t = Instant::now();
    let mut seen = HashSet::new();
    while seen.len() < 200 && t.elapsed() < Duration::from_secs(30) {
        if let Ok(ServiceEvent::ServiceResolved(s)) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.insert(s.get_fullname().to_string());
        }
    }
    let took = t.elapsed();
    let t2 = Instant::now();
    while t2.elapsed() < Duration::from_secs(5) { let _ = rx.recv_timeout(Duration::from_millis(100)); }
    println!("published 20, discovered {} in {took:?}; 5 s later: {}", seen.len(), rss());
    let _ = d.shutdown();
}
RS
(cd "$PEER" && CARGO_TARGET_DIR="$PEER/target" cargo build -q --release --target $TARGET)

kb() { sed -n 's/.*5 s later: VmHWM: [0-9]* kB, VmRSS: \([0-9]*\) kB.*/\1/p'; }
base() { sed -n 's/^before start: VmHWM: [0-9]* kB, VmRSS: \([0-9]*\) kB.*/\1/p'; }
OURS=$("$RSS"); echo "nuvol-mdns: $OURS"
THEIRS=$("$RSS" "$PEER/target/$TARGET/release/mdns-sd-peer"); echo "mdns-sd:    $THEIRS"
O=$(($(echo "$OURS" | kb) - $(echo "$OURS" | base)))
T=$(($(echo "$THEIRS" | kb) - $(echo "$THEIRS" | base)))
echo "RSS added by mDNS: nuvol-mdns ${O} kB, mdns-sd ${T} kB, ratio nuvol/mdns-sd = $(awk "BEGIN{printf \"%.2f\", $O/$T}")"
