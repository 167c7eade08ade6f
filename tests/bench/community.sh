#!/usr/bin/env bash
# Benchmarks of the community testbed (printed, never asserted): boots
# qemu/community.sh (4 boxes, two zones, zone-b behind NAT) with a Go serf
# agent in zone-a and measures
#   - seconds from cold boots to a full overlay mesh;
#   - TCP throughput box2 -> box1 over the overlay and over the underlay in
#     the same run (the boxes' own benchmark source, asked through the
#     `nuvol-ov-bench` Serf query), and their ratio;
#   - gossip and overlay bytes per box per second once settled (the boxes'
#     /metrics counters, WINDOW seconds apart);
#   - with BUNDLES (a `make bundles` directory): etcd installed on three
#     boxes, the median of 20 writes through box1 beside the median of 20
#     panel round trips to box1, and their ratio.
#
#   tests/bench/community.sh IMAGE
#   MIB=16 WINDOW=60 NET=75 BUNDLES=out/bundles
#
# Needs root, qemu-system-x86, dnsmasq, nft, serf, curl, jq (make deps-test).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -eq 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
image=$(realpath "$1")
MIB=${MIB:-16} WINDOW=${WINDOW:-60} NET=${NET:-75} BUNDLES=${BUNDLES:-}
dir=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-community-bench.XXXXXX")
cleanup() { "$here/qemu/community.sh" down --dir "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
t0=$(date +%s.%N)
"$here/qemu/community.sh" up --detach --serf --boxes 4 --net "$NET" --dir "$dir" \
    ${BUNDLES:+--bundles "$(realpath "$BUNDLES")"} "$image" >/dev/null
token=$(jq -r .token "$dir/community.json")
get() { curl -s -m 5 -H "Authorization: Bearer $token" "http://$1$2"; }
ips=($(jq -r '.boxes[].ip' "$dir/community.json"))
meshed() {
    for ip in "${ips[@]}"; do
        get "$ip" /api/v1/network | jq -e '.overlay.peers | length == 3 and all(.handshake_age_s != null)' >/dev/null || return 1
    done
}
for _ in $(seq 1 300); do meshed && break; sleep 1; done
meshed || { echo "community bench: no full mesh in 300 s" >&2; exit 1; }
echo "bench: cold boots to a full mesh of 4 boxes: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

# Throughput box2 -> box1: overlay, then underlay, same run.
ov1=$(get "${ips[0]}" /api/v1/network | jq -r .overlay.address4)
q() { # ADDRESS -> "MiB secs Mbit/s"
    "$here/qemu/community.sh" run --dir "$dir" a serf query -rpc-addr=127.0.0.1:7373 -node=box2 \
        -timeout=40s -format=json nuvol-ov-bench "$1 $MIB" | jq -r '.Responses | to_entries[0].value // "none"'
}
sleep 5
over=$(q "$ov1") under=$(q "${ips[0]}")
echo "bench: TCP box2 -> box1, $MIB MiB: overlay $over; underlay $under (MiB s Mbit/s)"
awk -v o="$over" -v u="$under" 'BEGIN { split(o, a, " "); split(u, b, " "); if (a[3] > 0 && b[3] > 0) printf "bench: overlay/underlay throughput ratio: %.2f\n", a[3] / b[3] }'

# Traffic per box once settled.
m() { for ip in "${ips[@]}"; do get "$ip" /metrics | awk '/^nuvol_gossip_bytes_total\{dir="in"\}/ {gi=$2} /^nuvol_gossip_bytes_total\{dir="out"\}/ {go=$2} /^nuvol_overlay_bytes_total\{dir="in"\}/ {oi=$2} /^nuvol_overlay_bytes_total\{dir="out"\}/ {oo=$2} END {print gi+0, go+0, oi+0, oo+0}'; done; }
m > "$dir/m1"; sleep "$WINDOW"; m > "$dir/m2"
paste "$dir/m1" "$dir/m2" | awk -v w="$WINDOW" '
    { gi += ($5 - $1) / w; go += ($6 - $2) / w; oi += ($7 - $3) / w; oo += ($8 - $4) / w; k++ }
    END { printf "bench: per box at N=4 VMs: gossip in %.0f / out %.0f B/s; overlay (WireGuard payload incl. keepalives) in %.0f / out %.0f B/s\n", gi / k, go / k, oi / k, oo / k }'

# etcd across three boxes: write latency beside a panel round trip.
if [ -n "$BUNDLES" ]; then
    for ip in "${ips[@]:0:3}"; do
        curl -s -m 120 -H "Authorization: Bearer $token" --data-binary @"$BUNDLES/etcd.nvb" \
            "http://$ip/api/v1/bundles" >/dev/null
    done
    put() { curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -d '{"key":"YmVuY2g=","value":"eA=="}' "http://${ips[0]}:2379/v3/kv/put"; }
    for _ in $(seq 1 300); do [ "$(put)" = 200 ] && break; sleep 1; done
    [ "$(put)" = 200 ] || { echo "community bench: no etcd cluster in 300 s" >&2; exit 1; }
    med() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] * 1000 }'; }
    w=$(for _ in $(seq 1 20); do curl -s -m 10 -o /dev/null -w '%{time_total}\n' -H 'Content-Type: application/json' \
        -d '{"key":"YmVuY2g=","value":"eA=="}' "http://${ips[0]}:2379/v3/kv/put"; done | med)
    p=$(for _ in $(seq 1 20); do curl -s -m 10 -o /dev/null -w '%{time_total}\n' \
        -H "Authorization: Bearer $token" "http://${ips[0]}/api/v1/status"; done | med)
    awk -v w="$w" -v p="$p" 'BEGIN { printf "bench: etcd write across 3 boxes: median %.0f ms; panel round trip %.0f ms; ratio %.1f\n", w, p, (p > 0 ? w / p : 0) }'
fi
