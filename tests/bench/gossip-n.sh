#!/usr/bin/env bash
# Gossip traffic per box at community scale, without VMs: N nuvol agents
# (default 50) in one network namespace this script makes, each on its own
# address of a bridge there, with the community's encryption key, joined
# through the first. After they settle, the agents' own counters
# (`nuvol_gossip_bytes_total` in /metrics) are read twice, WINDOW seconds
# apart: bytes per box per second, in and out (mean, max). Printed, never
# asserted.
#
#   tests/bench/gossip-n.sh NUVOL_BIN [N]
#   SETTLE=40 WINDOW=30
#
# The overlay's own traffic cannot be measured here (this host's kernel may
# lack WireGuard); docs/overlay.md gives its per-peer cost, and the
# community e2e test measures it on booted boxes at N = 4.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
bin=$(realpath "$1") n=${2:-50}
SETTLE=${SETTLE:-40} WINDOW=${WINDOW:-30}
[ "$(id -u)" -eq 0 ] || { echo "gossip-n: needs root (network namespace)" >&2; exit 1; }
[[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ] && [ "$n" -le 200 ] || { echo "gossip-n: N wants 2..200" >&2; exit 2; }
ns=nvgn$$
work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-gossip-n.XXXXXX")
cleanup() {
    set +e
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    sleep 1
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
in_ns() { ip netns exec "$ns" "$@"; }
ip netns add "$ns"
in_ns ip link set lo up
in_ns ip link add d0 type bridge
in_ns ip link set d0 up
key=$(head -c 32 /dev/urandom | base64)
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
token_sum=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
addr() { echo "10.74.$(($1 / 250)).$(($1 % 250 + 1))"; }
for i in $(seq 0 $((n - 1))); do
    in_ns ip addr add "$(addr "$i")/16" dev d0
done
for i in $(seq 0 $((n - 1))); do
    d=$work/a$i
    mkdir -p "$d/state" "$d/run"
    zone=$([ $((i % 2)) = 0 ] && echo zone-a || echo zone-b)
    cat > "$d/nuvol.toml" <<EOF
hostname = "a$i"
[panel]
allow_plain_http = true
[admin]
api_keys = ["sha256:$token_sum"]
[discovery]
bind = "$(addr "$i")"
join = ["$(addr 0)"]
encrypt_key = "$key"
zone = "$zone"
mdns = false
EOF
    NUVOL_RUN_DIR=$d/run in_ns "$bin" agent --config "$d/nuvol.toml" --state-dir "$d/state" \
        --listen "$(addr "$i"):80" --network off >"$d/log" 2>&1 &
done
echo "gossip-n: $n agents started; settling ${SETTLE}s"
sleep "$SETTLE"
read_all() { # -> lines "in out" per agent
    for i in $(seq 0 $((n - 1))); do
        in_ns curl -s -m 5 -H "Authorization: Bearer $token" "http://$(addr "$i")/metrics" |
            awk '/^nuvol_gossip_bytes_total\{dir="in"\}/ {i=$2} /^nuvol_gossip_bytes_total\{dir="out"\}/ {o=$2} END {print i+0, o+0}'
    done
}
members=$(in_ns curl -s -m 5 -H "Authorization: Bearer $token" "http://$(addr $((n - 1)))/api/v1/members" | jq 'length' 2>/dev/null || echo "?")
read_all > "$work/t1"
sleep "$WINDOW"
read_all > "$work/t2"
paste "$work/t1" "$work/t2" | awk -v w="$WINDOW" -v n="$n" -v m="$members" '
    { di = ($3 - $1) / w; do_ = ($4 - $2) / w; si += di; so += do_; if (di > mi) mi = di; if (do_ > mo) mo = do_; k++ }
    END {
        printf "bench: gossip at N=%d agents (the last sees %s members): per box in %.0f B/s (max %.0f), out %.0f B/s (max %.0f)\n", n, m, si / k, mi, so / k, mo
    }'
rss=$(for p in $(ip netns pids "$ns"); do awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null; done | awk '{s += $1; k++} END {printf "%.1f", s / k / 1024}')
echo "bench: mean agent RSS at N=$n: ${rss} MiB"
