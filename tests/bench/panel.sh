#!/usr/bin/env bash
# Panel benchmark (issue 6), printed, never asserted, in the issue's setting:
# a real `nuvol agent` on this host that gossips with three Go `serf agent`s
# (Debian `serf`) and runs five containers from installed signed bundles,
# all on 127.0.0.1 ports. Before measuring, the script checks through the
# API that the agent sees all four members alive and all five services
# running (else it stops: a bench of an idle agent would be the wrong one).
# Then, measured:
#   - wrk p50/p99 latency and requests/s on the status page `/` and on
#     `/api/v1/status` (both public, as a visitor sees them) and on
#     `/api/v1/members` with the admin token (`Authorization: Bearer`, as
#     a logged-in panel or `nuvol ctl` asks), each next to the named peer
#     measured in the same run and printed as ratios: busybox httpd serving
#     a saved copy of the same answer (a static file server: the floor for
#     one HTTP answer on this machine);
#   - the agent's RSS before and after the load;
#   - members and services again after the load (gossip must not have
#     suspected anyone while the agent was busy).
# Targets (from the issue): p99 <= 20 ms, RSS growth <= 4 MiB.
#
#   tests/bench/panel.sh [path/to/nuvol]     (default: builds a release binary)
#   DURATION=10s CONNECTIONS=16 THREADS=2
#   PANEL_BENCH_RESULTS=FILE  also write "path p50_ms p99_ms req_s" lines and
#                             "rss_kib N" there (tests/bench/box.sh prints the
#                             box's figures beside them)
#
# Needs root (containers: namespaces, cgroups, loop devices), wrk, serf,
# busybox-static and squashfs-tools (`make deps-test`). On exit (also on
# ^C or an error) the agent is stopped with SIGTERM, which stops its
# containers (their namespaces go with their processes, the loop devices
# are autoclear), then the Go agents and the peer; a container process or
# cgroup left behind is reported and removed, and the temp dir deleted.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
SERVICES=5
GO_AGENTS=3
bin=${1:-}
if [ -z "$bin" ]; then
    (cd "$here" && cargo build --release --locked -p nuvol >&2)
    bin=${CARGO_TARGET_DIR:-$here/target}/release/nuvol
fi
[ "$(id -u)" -eq 0 ] || { echo "panel bench: needs root (containers)" >&2; exit 1; }
for tool in wrk serf busybox mksquashfs curl jq python3; do
    command -v "$tool" >/dev/null || { echo "panel bench: $tool missing (make deps-test)" >&2; exit 1; }
done
busybox_bin=$(command -v busybox)
file -L "$busybox_bin" | grep -q 'statically linked' ||
    { echo "panel bench: $busybox_bin is not static (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-panel-bench.XXXXXX")
agent=""
others=()

# Processes whose cgroup is under the agent's service cgroups.
in_agent_cgroups() {
    local tag="nuvol-agent-$1/" f
    for f in /proc/[0-9]*/cgroup; do
        grep -qF "$tag" "$f" 2>/dev/null && { f=${f#/proc/}; echo "${f%/cgroup}"; }
    done
    return 0
}

cleanup() {
    set +e
    if [ -n "$agent" ]; then
        kill -TERM "$agent" 2>/dev/null
        for _ in $(seq 300); do kill -0 "$agent" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$agent" 2>/dev/null; then
            echo "panel bench: agent ignored SIGTERM for 30 s, killing it" >&2
            kill -KILL "$agent" 2>/dev/null
        fi
        wait "$agent" 2>/dev/null
        left=$(in_agent_cgroups "$agent" | tr '\n' ' ')
        if [ -n "$left" ]; then
            echo "panel bench: container processes outlived the agent: ${left% } (killed)" >&2
            # shellcheck disable=SC2086
            kill -KILL $left 2>/dev/null
            sleep 0.5
        fi
        # The agent removes its cgroups when it stops cleanly; after a
        # SIGKILL they would stay.
        find /sys/fs/cgroup -depth -type d -path "*/nuvol-agent-$agent*" 2>/dev/null |
            while read -r d; do
                echo "panel bench: cgroup left behind: $d (removed)" >&2
                rmdir "$d" 2>/dev/null
            done
    fi
    for p in "${others[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${others[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "panel bench: $*" >&2; exit 1; }
free_port() {
    python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# wait_until SECONDS CMD...: poll CMD every 0.25 s.
wait_until() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.25; done
}

# --- five signed bundles: one busybox rootfs (one image), five services ---
"$bin" bundle keygen -o "$work/key" -c "panel bench, thrown away after the run" >/dev/null
root=$work/rootfs
mkdir -p "$root/bin" "$root/www" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$busybox_bin" "$root/bin/busybox"
printf 'root:x:0:0:root:/:/nonexistent\nwww:x:101:101:www:/www:/nonexistent\n' >"$root/etc/passwd"
printf 'root:x:0:\nwww:x:101:\n' >"$root/etc/group"
echo '<!doctype html><title>bench</title><p>a service of the panel bench' >"$root/www/index.html"
for i in $(seq "$SERVICES"); do
    cat >"$work/svc$i.toml" <<EOF
name = "bench-web$i"
version = "1.0"
publisher = "nuvol panel bench"
[run]
command = ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]
uid = 101
gid = 101
restart = "always"
[[ports]]
name = "http"
port = 8080
[resources]
memory_mb = 16
pids = 16
[health]
kind = "http"
port = 8080
path = "/"
interval_s = 5
timeout_s = 2
retries = 3
[[announce]]
service_type = "_http._tcp"
port = 8080
EOF
    "$bin" bundle build -m "$work/svc$i.toml" -r "$root" -o "$work/svc$i.nvb" -k "$work/key.sec" >/dev/null
done
pubkey=$(grep -m1 '^RW' "$work/key.pub") || fail "no key line in $work/key.pub"

# --- three Go serf agents, joined to each other ---
go_bind=() go_rpc=()
for i in $(seq "$GO_AGENTS"); do
    b=127.0.0.1:$(free_port) r=127.0.0.1:$(free_port)
    join=(); [ "$i" -gt 1 ] && join=("-join=${go_bind[0]}")
    serf agent "-node=go-$i" "-bind=$b" "-rpc-addr=$r" -tag lang=go -tag role=ordinary-node \
        -tag zone=bench "${join[@]}" >"$work/serf-$i.log" 2>&1 &
    others+=("$!")
    go_bind+=("$b") go_rpc+=("$r")
    wait_until 10 serf members "-rpc-addr=$r" >/dev/null 2>&1 ||
        { cat "$work/serf-$i.log" >&2; fail "serf agent go-$i did not start"; }
done

# --- the nuvol agent: discovery joined to the Go agents, the bundles' key trusted ---
port=$(free_port) gossip_port=$(free_port)
cat >"$work/nuvol.toml" <<EOF
[bundles]
trusted_keys = ["$pubkey"]

[discovery]
bind = "127.0.0.1"
port = $gossip_port
node_name = "nuvol-bench"
mdns = false
zone = "bench"
join = ["${go_bind[0]}", "${go_bind[1]}"]
EOF
NUVOL_RUN_DIR=$work/run "$bin" agent --config "$work/nuvol.toml" --state-dir "$work/state" \
    --listen "127.0.0.1:$port" --network off 2>"$work/console" &
agent=$!
ready() { grep -q 'nuvol: ready' "$work/console" 2>/dev/null; }
wait_until 10 ready || { cat "$work/console" >&2; fail "agent not ready"; }
token=$(cat "$work/state/admin-token")
api() { curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port$1"; }

for i in $(seq "$SERVICES"); do
    code=$(curl -s -o "$work/install-$i.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
        --data-binary "@$work/svc$i.nvb" "http://127.0.0.1:$port/api/v1/bundles")
    [ "$code" = 201 ] || [ "$code" = 200 ] || fail "install bench-web$i: $code $(cat "$work/install-$i.json")"
done

members_alive() { api /api/v1/members | jq '[.[] | select(.status == "alive")] | length'; }
services_running() { api /api/v1/local-services | jq '[.[] | select(.state == "running")] | length'; }
all_alive() { [ "$(members_alive 2>/dev/null)" = $((GO_AGENTS + 1)) ]; }
all_running() { [ "$(services_running 2>/dev/null)" = "$SERVICES" ]; }
wait_until 30 all_alive || { api /api/v1/members >&2; fail "the agent does not see $((GO_AGENTS + 1)) members alive"; }
wait_until 60 all_running || { api /api/v1/local-services >&2; tail -20 "$work/console" >&2; fail "not all $SERVICES services running"; }
# The Go side sees the nuvol node and its services' svc: tags.
go_sees_services() {
    serf members -format=json "-rpc-addr=${go_rpc[2]}" |
        jq -e --argjson n "$SERVICES" '.members[] | select(.name == "nuvol-bench" and .status == "alive")
            | [.tags | keys[] | select(startswith("svc:"))] | length == $n' >/dev/null
}
wait_until 30 go_sees_services || fail "go-3 does not see nuvol-bench alive with $SERVICES svc: tags"
echo "setting: $((GO_AGENTS + 1)) members alive ($(api /api/v1/members | jq -r '[.[].name] | join(", ")')), " \
    "$SERVICES containers running ($(api /api/v1/local-services | jq -r '[.[] | "\(.name) pid \(.pid)"] | join(", ")'))"

# --- the peer: busybox httpd with the same answers as static files ---
mkdir -p "$work/www"
curl -sf "http://127.0.0.1:$port/" >"$work/www/index.html"
curl -sf "http://127.0.0.1:$port/api/v1/status" >"$work/www/status.json"
api /api/v1/members >"$work/www/members.json"
peer_port=$(free_port)
busybox httpd -f -p "127.0.0.1:$peer_port" -h "$work/www" &
others+=("$!")
wait_until 5 curl -sf -o /dev/null "http://127.0.0.1:$peer_port/index.html" || fail "busybox httpd did not start"

# wrk_run URL [wrk args] -> "p50_ms p99_ms req_per_s non2xx"
wrk_run() {
    local url=$1; shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" 2>&1 | awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        END { printf "%.3f %.3f %.0f %d\n", p50, p99, rps, bad }'
}

# Other work on the machine moves every figure: say how busy it was.
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start of the load"
# Warm up, then measure.
wrk -t1 -c2 -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1
rss0=$(rss_kib "$agent")
printf '%-34s %9s %9s %9s   %s\n' "target" "p50 ms" "p99 ms" "req/s" "vs busybox httpd (same answer, static file)"
for row in "/ index.html public" "/api/v1/status status.json public" "/api/v1/members members.json token"; do
    read -r path peer_file auth <<<"$row"
    hdr=(); [ "$auth" = token ] && hdr=(-H "Authorization: Bearer $token")
    read -r p50 p99 rps bad < <(wrk_run "http://127.0.0.1:$port$path" "${hdr[@]}")
    read -r bp50 bp99 brps _ < <(wrk_run "http://127.0.0.1:$peer_port/$peer_file")
    ratios=$(awk -v a="$rps" -v b="$brps" -v c="$p50" -v d="$bp50" -v e="$p99" -v f="$bp99" 'BEGIN {
        printf "%s req/s, %s p50, %s p99", (b > 0 ? sprintf("%.2fx", a / b) : "n/a"),
            (d > 0 ? sprintf("%.1fx", c / d) : "n/a"), (f > 0 ? sprintf("%.1fx", e / f) : "n/a") }')
    printf '%-34s %9s %9s %9s   %s (peer: p50 %s p99 %s ms, %s req/s)\n' \
        "nuvol $path ($auth)" "$p50" "$p99" "$rps" "$ratios" "$bp50" "$bp99" "$brps"
    [ "$bad" -eq 0 ] || echo "  non-2xx answers from nuvol: $bad"
    [ -z "${PANEL_BENCH_RESULTS:-}" ] || echo "$path $p50 $p99 $rps" >>"$PANEL_BENCH_RESULTS"
    ok=$(awk -v a="$p99" 'BEGIN { print (a <= 20) ? "met" : "MISSED" }')
    echo "  target p99 <= 20 ms: $ok"
done
rss1=$(rss_kib "$agent")
growth=$((rss1 - rss0))
[ -z "${PANEL_BENCH_RESULTS:-}" ] || echo "rss_kib $rss1" >>"$PANEL_BENCH_RESULTS"
echo "agent RSS: before $((rss0 / 1024)) MiB ($rss0 KiB), after $((rss1 / 1024)) MiB ($rss1 KiB), growth $growth KiB"
awk -v g="$growth" 'BEGIN { printf "  target RSS growth <= 4 MiB: %s\n", (g <= 4096) ? "met" : "MISSED" }'
awk -v r="$rss1" 'BEGIN { printf "  target RSS <= 16 MiB: %s\n", (r <= 16384) ? "met" : "MISSED" }'
echo "after the load: $(members_alive) of $((GO_AGENTS + 1)) members alive," \
    "$(services_running) of $SERVICES services running" \
    "($(api /api/v1/local-services | jq -r '[.[] | "\(.name) \(.health // "-")"] | join(", ")'))"
