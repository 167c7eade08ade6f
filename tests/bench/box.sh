#!/usr/bin/env bash
# Benchmarks on the booted box (printed, never asserted): a copy of the
# image boots in QEMU on a bridge inside a network namespace this script
# makes (tap networking, DHCP from dnsmasq), so Go `serf` agents on the same
# bridge can gossip with it both ways, as they would on a community LAN.
#
#   - install-to-serving per recipe (web, Syncthing, etcd): from the start of
#     the upload through the API to the first answer on the service's port;
#   - the panel bench of tests/bench/panel.sh (wrk p50/p99, req/s on `/`,
#     `/api/v1/status`, `/api/v1/members` with the token) against the box
#     while 5 services run and 3 Go serf agents gossip with it, printed
#     beside the same bench of an agent on this host, run just before
#     (ratios box/host);
#   - agent RSS on the box with those 5 services (goal <= 8 MiB);
#   - boot-to-all-services-serving after a reboot through the API.
#
#   tests/bench/box.sh IMAGE NUVOL_BIN BUNDLES_DIR
#   DURATION=10s CONNECTIONS=16 THREADS=2 MEM=512 HOST_BENCH=1
#
# Needs root, qemu-system-x86, dnsmasq, serf, wrk, curl, jq (make deps-test).
# Everything it starts (QEMU, dnsmasq, serf) lives in its namespace and is
# stopped, and the namespace deleted, on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -eq 3 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
image=$(realpath "$1") bin=$(realpath "$2") bundles=$(realpath "$3")
DURATION=${DURATION:-10s} CONNECTIONS=${CONNECTIONS:-16} THREADS=${THREADS:-2} MEM=${MEM:-512}
[ "$(id -u)" -eq 0 ] || { echo "box bench: needs root (network namespace, tap)" >&2; exit 1; }
for tool in qemu-system-x86_64 dnsmasq serf wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "box bench: $tool missing (make deps-test)" >&2; exit 1; }
done

ns=nvbox$$
work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-box-bench.XXXXXX")
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
fail() { echo "box bench: $*" >&2; [ -f "$work/serial.log" ] && tail -30 "$work/serial.log" >&2; exit 1; }
in_ns() { ip netns exec "$ns" "$@"; }
wait_until() { local end=$((SECONDS + $1)); shift; until "$@"; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.25; done; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- the host figures first (same machine, same run) -----------------------
host=$work/host-results
if [ "${HOST_BENCH:-1}" = 1 ]; then
    echo "== panel bench of an agent on this host (tests/bench/panel.sh) =="
    PANEL_BENCH_RESULTS=$host DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS \
        "$here/tests/bench/panel.sh" "$bin" || echo "(host bench failed; box figures without ratios)"
fi

# --- the network: namespace, bridge, tap, DHCP ------------------------------
ip netns add "$ns"
in_ns ip link set lo up
in_ns ip link add br0 type bridge
in_ns ip addr add 10.77.0.1/24 dev br0
in_ns ip link set br0 up
in_ns ip tuntap add tap0 mode tap
in_ns ip link set tap0 master br0 up
in_ns dnsmasq --conf-file=/dev/null --interface=br0 --bind-interfaces --port=0 \
    --dhcp-range=10.77.0.100,10.77.0.150,1h --dhcp-leasefile="$work/leases" --pid-file="$work/dnsmasq.pid"

# --- the box -------------------------------------------------------------
disk=$work/disk.img
cp --sparse=always "$image" "$disk"
truncate -s 2G "$disk"
off=$(( $(sfdisk --json "$disk" | jq '.partitiontable.partitions[0].start') * 512 ))
printf 'hostname = "bench-box"\n[panel]\nallow_plain_http = true\n[discovery]\nzone = "bench"\n' >"$work/nuvol.toml"
MTOOLS_SKIP_CHECK=1 mcopy -o -i "$disk@@$off" "$work/nuvol.toml" ::nuvol.toml
serial=$work/serial.log
t_start=$(now)
in_ns "$here/qemu/run.sh" --tap tap0 --mac 52:54:00:77:00:02 --mem "$MEM" --serial "$serial" \
    --qmp "$work/qmp.sock" "$disk" >/dev/null 2>&1 &
ready() { grep -q 'nuvol: ready: panel at http://10\.77\.' "$serial" 2>/dev/null; }
wait_until 300 ready || fail "the box did not come up on the bridge"
ip=$(tr -d '\r' <"$serial" | sed -n 's|.*nuvol: ready: panel at http://\(10\.77\.[0-9.]*\):80/.*|\1|p' | tail -1)
token=$(tr -d '\r' <"$serial" | sed -n 's/.*nuvol: admin token: \([0-9a-f]*\).*/\1/p' | tail -1)
echo "== the box: $ip, ready $(secs "$t_start" "$(now)") s after QEMU started =="
api() { in_ns curl -sf -m 10 -H "Authorization: Bearer $token" "http://$ip$1"; }
in_ns curl -sf -H "Authorization: Bearer $token" --data-binary "@$bundles/dev.pub" "http://$ip/api/v1/keys" >/dev/null ||
    fail "trust dev.pub"

# --- install-to-serving per recipe -----------------------------------------
web_ok() { in_ns curl -sf -m 2 -o /dev/null "http://$ip:8080/"; }
syncthing_ok() { in_ns curl -sf -m 2 -o /dev/null "http://$ip:8384/"; }
etcd_ok() { in_ns curl -sf -m 2 "http://$ip:2379/health" | grep -q true; }
echo "install-to-serving (upload through the API until the service answers on its port):"
for r in web syncthing etcd; do
    t0=$(now)
    code=$(in_ns curl -s -o "$work/install.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
        --data-binary "@$bundles/$r.nvb" "http://$ip/api/v1/bundles")
    [ "$code" = 201 ] || fail "install $r: $code $(cat "$work/install.json")"
    t1=$(now)
    wait_until 600 "${r}_ok" || fail "$r never served"
    t2=$(now)
    printf '  %-10s %6s s  (%s MiB upload+verify+install %s s, start to first answer %s s)\n' "$r" \
        "$(secs "$t0" "$t2")" "$(awk -v b="$(stat -c %s "$bundles/$r.nvb")" 'BEGIN { printf "%.1f", b / 1048576 }')" \
        "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"
done

# Two more small services: five in all, as the panel bench on the host.
"$bin" bundle keygen -o "$work/key" -c "box bench, thrown away" >/dev/null
mkdir -p "$work/root/bin" "$work/root/www" "$work/root/etc"
cp "$(command -v busybox)" "$work/root/bin/busybox"
echo '<p>bench' >"$work/root/www/index.html"
in_ns curl -sf -H "Authorization: Bearer $token" --data-binary "@$work/key.pub" "http://$ip/api/v1/keys" >/dev/null
for i in 1 2; do
    printf 'name = "small%s"\nversion = "1"\npublisher = "bench"\n[run]\ncommand = ["/bin/busybox", "httpd", "-f", "-p", "%s", "-h", "/www"]\nuid = 101\ngid = 101\n[[ports]]\nname = "http"\nport = %s\n[resources]\nmemory_mb = 16\npids = 16\n[[announce]]\nservice_type = "_http._tcp"\nport = %s\n' \
        "$i" "$((9000 + i))" "$((9000 + i))" "$((9000 + i))" >"$work/small$i.toml"
    "$bin" bundle build -m "$work/small$i.toml" -r "$work/root" -o "$work/small$i.nvb" -k "$work/key.sec" >/dev/null
    in_ns curl -sf -o /dev/null -H "Authorization: Bearer $token" --data-binary "@$work/small$i.nvb" "http://$ip/api/v1/bundles" ||
        fail "install small$i"
done
running() { [ "$(api /api/v1/local-services | jq '[.[] | select(.state == "running")] | length')" = 5 ]; }
wait_until 120 running || { api /api/v1/local-services >&2; fail "not 5 services running"; }

# --- three Go serf agents on the bridge, gossiping with the box -------------
for i in 1 2 3; do
    in_ns serf agent "-node=go-$i" "-bind=10.77.0.1:$((7950 + i))" "-rpc-addr=127.0.0.1:$((7370 + i))" \
        -tag zone=bench "-join=$ip:7946" >"$work/serf-$i.log" 2>&1 &
done
alive() { [ "$(api /api/v1/members | jq '[.[] | select(.status == "alive")] | length')" = 4 ]; }
wait_until 60 alive || { api /api/v1/members >&2; fail "the box does not see 4 members alive"; }
go_sees_box() { in_ns serf members -rpc-addr=127.0.0.1:7371 -status=alive | grep -q bench-box; }
wait_until 30 go_sees_box || fail "go-1 does not see the box"
echo "setting: 4 members alive ($(api /api/v1/members | jq -r '[.[].name] | join(", ")')), 5 services running"

rss_box() { in_ns curl -sf "http://$ip/api/v1/status" | jq '.agent_rss_bytes / 1024 | floor'; }
wrk_run() {
    local url=$1; shift
    in_ns wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" 2>&1 | awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) } $1 == "Requests/sec:" { rps = $2 }
        END { printf "%.3f %.3f %.0f\n", p50, p99, rps }'
}
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); the box runs under $("$here/qemu/probe-kvm.sh" 2>/dev/null || echo tcg)"
rss0=$(rss_box)
printf '%-30s %9s %9s %9s   %s\n' "box (QEMU)" "p50 ms" "p99 ms" "req/s" "vs the same bench on this host"
for row in "/ public" "/api/v1/status public" "/api/v1/members token"; do
    read -r path auth <<<"$row"
    hdr=(); [ "$auth" = token ] && hdr=(-H "Authorization: Bearer $token")
    read -r p50 p99 rps < <(wrk_run "http://$ip$path" "${hdr[@]}")
    cmp="(no host figures)"
    if [ -f "$host" ] && read -r _ hp50 hp99 hrps < <(grep "^$path " "$host"); then
        cmp=$(awk -v a="$rps" -v b="$hrps" -v c="$p50" -v d="$hp50" -v e="$p99" -v f="$hp99" 'BEGIN {
            printf "box/host: %s req/s, %s p50, %s p99 (host: p50 %s p99 %s ms, %s req/s)",
                (b > 0 ? sprintf("%.2fx", a / b) : "n/a"), (d > 0 ? sprintf("%.1fx", c / d) : "n/a"),
                (f > 0 ? sprintf("%.1fx", e / f) : "n/a"), d, f, b }')
    fi
    printf '%-30s %9s %9s %9s   %s\n' "$path ($auth)" "$p50" "$p99" "$rps" "$cmp"
done
rss1=$(rss_box)
host_rss=$( [ -f "$host" ] && awk '$1 == "rss_kib" { print $2 }' "$host" || true)
echo "agent RSS on the box with 5 services, gossip and mDNS: before load $rss0 KiB, after $rss1 KiB" \
    "(goal <= 8192 KiB: $( [ "$rss1" -le 8192 ] && echo met || echo MISSED ))${host_rss:+; host agent $host_rss KiB}"
echo "after the load: $(api /api/v1/members | jq '[.[] | select(.status == "alive")] | length') of 4 members alive"

# --- reboot: boot-to-all-services-serving ---------------------------------
readies=$(grep -c 'nuvol: ready: panel at' "$serial")
t0=$(now)
in_ns curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" "http://$ip/api/v1/system/reboot" || fail "reboot"
booted() { [ "$(grep -c 'nuvol: ready: panel at' "$serial")" -gt "$readies" ]; }
wait_until 300 booted || fail "no second boot"
t1=$(now)
all_serve() { web_ok && syncthing_ok && etcd_ok; }
wait_until 600 all_serve || fail "not all recipes serve after the reboot"
t2=$(now)
echo "reboot through the API: ready again after $(secs "$t0" "$t1") s, web + Syncthing + etcd serving after $(secs "$t0" "$t2") s"
