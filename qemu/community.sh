#!/usr/bin/env bash
# `make community`: a community network of nuvol boxes in QEMU, in two zones.
#
#   qemu/community.sh [up] [options] IMAGE   boot the community (foreground:
#                                            Ctrl-C stops it; --detach leaves it up)
#   qemu/community.sh down  --dir DIR        stop every VM, delete the namespaces
#   qemu/community.sh kill  --dir DIR N      power box N off hard (SIGKILL its QEMU)
#   qemu/community.sh start --dir DIR N      boot box N again (its disk keeps its state)
#   qemu/community.sh run   --dir DIR NS CMD...  run CMD in namespace r (router), a or b
#
# Options of `up`:
#   --boxes N        boxes (default 4): the first half in zone-a, the rest in
#                    zone-b; the first box of each zone is its super node
#   --mem MIB        memory per VM (default 192)
#   --dir DIR        where the boxes live (default out/community): boxN/disk.img,
#                    boxN/serial.log, community.json
#   --net K          second octet of the testbed's addresses (default 71):
#                    10.K.0.0/24 host<->router, 10.K.1.0/24 zone-a, 10.K.2.0/24 zone-b
#   --no-overlay     boxes without [overlay] (gossip only)
#   --one-zone       every box in zone-a (one LAN, no NAT between boxes)
#   --block I:J      the router drops WireGuard packets between box I and box J
#                    (they must relay through a super node); repeatable
#   --serf           also run a Go `serf` agent in zone-a (10.K.1.5)
#   --bundles DIR    trust DIR/dev.pub on every box (the recipes' development key)
#   --arm64 N        box N boots the arm64 image given by --arm64-image
#                    (qemu-system-aarch64 -M virt, edk2); repeatable
#   --arm64-image IMG  the arm64 image for --arm64 boxes
#   --update-key PUB trust PUB as OS publisher key on every box ([update]
#                    trusted_keys); tried updates settle in 5 s (a test hook)
#   --update-policy P  with --update-key: [update] policy = P (notify, auto)
#                    on every box, looking every 10 s (a test hook)
#   --detach         return once every box is ready; `down` stops them
#
# The network: zone-a is routed; zone-b sits behind a router that NATs it
# (masquerade) and drops connections from zone-a into it, as a home
# router would. The host reaches both zones through the router (as the
# community's admin would), so every panel's URL works from here. Each zone
# is a bridge in a network namespace of its own; DHCP (fixed leases by MAC)
# comes from dnsmasq in the router namespace.
#
# Needs root, qemu-system-x86, dnsmasq, nft (make deps-test).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

cmd=up
case ${1:-} in up|down|kill|start|run) cmd=$1; shift ;; esac

boxes=4 mem=192 dir=out/community net=71 overlay=1 serf=0 bundles="" detach=0 update_key="" update_policy="" one_zone=0
blocks=() arm64_boxes=() arm64_image=""
while [ $# -gt 0 ]; do
    case $1 in
        --boxes) boxes=$2; shift 2 ;;
        --mem) mem=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --net) net=$2; shift 2 ;;
        --no-overlay) overlay=0; shift ;;
        --block) blocks+=("$2"); shift 2 ;;
        --serf) serf=1; shift ;;
        --update-key) update_key=$2; shift 2 ;;
        --update-policy) update_policy=$2; shift 2 ;;
        --one-zone) one_zone=1; shift ;;
        --bundles) bundles=$2; shift 2 ;;
        --arm64) arm64_boxes+=("$2"); shift 2 ;;
        --arm64-image) arm64_image=$(realpath "$2"); shift 2 ;;
        --detach) detach=1; shift ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        --*) echo "community.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "community.sh: needs root (network namespaces, taps)" >&2; exit 1; }
mkdir -p "$dir"
dir=$(realpath "$dir")

# A running community remembers its settings.
if [ "$cmd" != up ]; then
    [ -f "$dir/env" ] || { echo "community.sh: no community in $dir (run 'up' first)" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$dir/env"
fi
ns_r=nvc$net-r ns_a=nvc$net-a ns_b=nvc$net-b

zone_of() { if [ "$one_zone" = 1 ] || [ "$1" -le $(((boxes + 1) / 2)) ]; then echo a; else echo b; fi; }
ip_of() { local z; z=$(zone_of "$1"); if [ "$z" = a ]; then echo "10.$net.1.$((10 + $1))"; else echo "10.$net.2.$((10 + $1))"; fi; }
mac_of() { printf '52:54:00:%02x:00:%02x' "$net" "$1"; }
first_of() { if [ "$1" = a ]; then echo 1; else echo $(((boxes + 1) / 2 + 1)); fi; }

boot_box() { # N
    local n=$1 z ns
    z=$(zone_of "$n"); ns=nvc$net-$z
    ip netns exec "$ns" ip link show "tap$n" >/dev/null 2>&1 || {
        ip netns exec "$ns" ip tuntap add "tap$n" mode tap
        ip netns exec "$ns" ip link set "tap$n" master br0 up
    }
    : > "$dir/box$n/serial.log"
    ip netns exec "$ns" setsid "$here/run.sh" --arch "$(cat "$dir/box$n/arch")" \
        --tap "tap$n" --mac "$(mac_of "$n")" --mem "$mem" --smp 1 \
        --serial "$dir/box$n/serial.log" --qmp "$dir/box$n/qmp.sock" "$dir/box$n/disk.img" \
        >"$dir/box$n/qemu.log" 2>&1 &
    echo $! > "$dir/box$n/pid"
}

kill_box() { # N
    local pid
    pid=$(cat "$dir/box$1/pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    # run.sh execs QEMU: the pid is QEMU's.
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/box$1/pid"
}

down() {
    set +e
    for n in $(seq 1 "$boxes"); do kill_box "$n"; done
    for ns in "$ns_a" "$ns_b" "$ns_r"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
    done
    sleep 0.5
    for ns in "$ns_a" "$ns_b" "$ns_r"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "nvc${net}h" 2>/dev/null
    ip route del "10.$net.1.0/24" 2>/dev/null
    ip route del "10.$net.2.0/24" 2>/dev/null
    rm -f "$dir/env"
    set -e
}

case $cmd in
    down) down; echo "community.sh: stopped the community in $dir"; exit 0 ;;
    kill) kill_box "${1:?box number}"; exit 0 ;;
    start) boot_box "${1:?box number}"; exit 0 ;;
    run) z=${1:?namespace r, a or b}; shift; exec ip netns exec "nvc$net-$z" "$@" ;;
esac

[ $# -eq 1 ] || { sed -n '2,41p' "$0" >&2; exit 2; }
image=$(realpath "$1")
[ -f "$image" ] || { echo "community.sh: no image at $image (run 'make image')" >&2; exit 1; }
[[ $boxes =~ ^[0-9]+$ ]] && [ "$boxes" -ge 2 ] && [ "$boxes" -le 40 ] ||
    { echo "community.sh: --boxes wants 2..40" >&2; exit 2; }
for tool in qemu-system-x86_64 dnsmasq nft; do
    command -v "$tool" >/dev/null || { echo "community.sh: $tool missing (make deps-test)" >&2; exit 1; }
done
if ip netns list | grep -qw "$ns_r"; then
    echo "community.sh: namespace $ns_r exists: a community runs (community.sh down --dir DIR) or use --net" >&2
    exit 1
fi
[ "$detach" = 1 ] || trap 'down' EXIT
trap 'exit 130' INT TERM
printf 'boxes=%s\nmem=%s\nnet=%s\n' "$boxes" "$mem" "$net" > "$dir/env"

# --- the network ---------------------------------------------------------
for ns in "$ns_r" "$ns_a" "$ns_b"; do
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
done
in_r() { ip netns exec "$ns_r" "$@"; }
# host <-> router
ip link add "nvc${net}h" type veth peer name up0 netns "$ns_r"
ip addr add "10.$net.0.2/24" dev "nvc${net}h"
ip link set "nvc${net}h" up
in_r ip addr add "10.$net.0.1/24" dev up0
in_r ip link set up0 up
ip route replace "10.$net.1.0/24" via "10.$net.0.1"
ip route replace "10.$net.2.0/24" via "10.$net.0.1"
# router <-> zones (a bridge in each zone's namespace)
for z in a b; do
    k=$([ $z = a ] && echo 1 || echo 2)
    ns=nvc$net-$z
    ip netns exec "$ns" ip link add br0 type bridge
    ip netns exec "$ns" ip link set br0 up
    in_r ip link add "r$z" type veth peer name uplink netns "$ns"
    ip netns exec "$ns" ip link set uplink master br0 up
    in_r ip addr add "10.$net.$k.1/24" dev "r$z"
    in_r ip link set "r$z" up
done
in_r sysctl -qw net.ipv4.ip_forward=1
block_rules=""
for b in "${blocks[@]:-}"; do
    [ -n "$b" ] || continue
    i=${b%%:*} j=${b##*:}
    block_rules+="ip saddr $(ip_of "$i") ip daddr $(ip_of "$j") udp dport 51820 drop
        ip saddr $(ip_of "$j") ip daddr $(ip_of "$i") udp dport 51820 drop
        ip saddr $(ip_of "$i") ip daddr $(ip_of "$j") udp sport 51820 drop
        ip saddr $(ip_of "$j") ip daddr $(ip_of "$i") udp sport 51820 drop
"
done
in_r nft -f - <<EOF
table inet community {
    chain forward {
        type filter hook forward priority 0; policy accept;
        $block_rules
        ct state established,related accept
        iifname "ra" oifname "rb" drop
    }
    chain postrouting {
        type nat hook postrouting priority 100;
        oifname { "ra", "up0" } ip saddr 10.$net.2.0/24 masquerade
    }
}
EOF
hosts=()
for n in $(seq 1 "$boxes"); do hosts+=(--dhcp-host="$(mac_of "$n"),$(ip_of "$n"),box$n,12h"); done
in_r dnsmasq --conf-file=/dev/null --port=0 --bind-interfaces --interface=ra --interface=rb \
    --dhcp-range="10.$net.1.100,10.$net.1.150,12h" --dhcp-range="10.$net.2.100,10.$net.2.150,12h" \
    "${hosts[@]}" --dhcp-leasefile="$dir/leases" --pid-file="$dir/dnsmasq.pid"

# --- the boxes -------------------------------------------------------------
key=$(head -c 32 /dev/urandom | base64)
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
token_sum=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
if [ ${#arm64_boxes[@]} -gt 0 ]; then
    [ -f "$arm64_image" ] || { echo "community.sh: --arm64 needs --arm64-image IMG (make image ARCH=arm64)" >&2; exit 2; }
fi
is_arm64() { local b; for b in "${arm64_boxes[@]:-}"; do [ "$b" = "$1" ] && return 0; done; return 1; }
trust=""
[ -n "$bundles" ] && [ -f "$bundles/dev.pub" ] && trust="trusted_keys = [\"$(grep -v '^untrusted' "$bundles/dev.pub" | head -1)\"]"
update=""
[ -n "$update_key" ] && update="update_settle_secs = 5
$([ -n "$update_policy" ] && echo "update_check_secs = 10")
[update]
trusted_keys = [\"$(grep -v '^untrusted' "$update_key" | head -1)\"]
$([ -n "$update_policy" ] && echo "policy = \"$update_policy\"")"
for n in $(seq 1 "$boxes"); do
    z=$(zone_of "$n")
    mkdir -p "$dir/box$n"
    rm -f "$dir/box$n/disk.img"
    img=$image arch=x86_64
    if is_arm64 "$n"; then img=$arm64_image arch=arm64; fi
    echo "$arch" > "$dir/box$n/arch"
    cp --sparse=always "$img" "$dir/box$n/disk.img"
    off=$(( $(sfdisk --json "$img" | jq '.partitiontable.partitions[0].start') * 512 ))
    truncate -s 2G "$dir/box$n/disk.img"
    role=ordinary-node
    [ "$n" = "$(first_of "$z")" ] && role=super-node
    # Joins: the own zone's super node first, then the other zone's.
    other=$([ "$z" = a ] && echo b || echo a)
    join="\"$(ip_of "$(first_of "$z")")\", \"$(ip_of "$(first_of "$other")")\""
    [ "$one_zone" = 1 ] && join="\"$(ip_of 1)\""
    cat > "$dir/box$n/nuvol.toml" <<EOF
hostname = "box$n"
[panel]
allow_plain_http = true
[admin]
api_keys = ["sha256:$token_sum"]
[discovery]
zone = "zone-$z"
role = "$role"
join = [$join]
encrypt_key = "$key"
[overlay]
enabled = $([ "$overlay" = 1 ] && echo true || echo false)
[bundles]
$trust
[debug]
test_hooks = true
$update
EOF
    MTOOLS_SKIP_CHECK=1 mcopy -o -i "$dir/box$n/disk.img@@$off" "$dir/box$n/nuvol.toml" ::nuvol.toml
done
t0=$(date +%s.%N)
for n in $(seq 1 "$boxes"); do boot_box "$n"; done

if [ "$serf" = 1 ]; then
    ip netns exec "$ns_a" ip addr add "10.$net.1.5/24" dev br0
    ip netns exec "$ns_a" ip route add default via "10.$net.1.1"
    ip netns exec "$ns_a" setsid serf agent -node=serf-a -bind="10.$net.1.5:7946" -rpc-addr=127.0.0.1:7373 \
        -encrypt="$key" -tag zone=zone-a -retry-join="$(ip_of 1)" -retry-interval=5s \
        >"$dir/serf.log" 2>&1 &
fi

# --- ready -------------------------------------------------------------------
ready=()
for _ in $(seq 1 900); do
    ready=()
    for n in $(seq 1 "$boxes"); do
        grep -q 'nuvol: ready: panel at' "$dir/box$n/serial.log" 2>/dev/null && ready+=("$n")
    done
    [ "${#ready[@]}" -eq "$boxes" ] && break
    sleep 1
done
t_ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
{
    echo "{"
    echo "  \"token\": \"$token\", \"encrypt_key\": \"$key\", \"net\": $net, \"boot_s\": $t_ready,"
    echo "  \"boxes\": ["
    for n in $(seq 1 "$boxes"); do
        z=$(zone_of "$n")
        role=ordinary-node; [ "$n" = "$(first_of "$z")" ] && role=super-node
        sep=,; [ "$n" = "$boxes" ] && sep=
        echo "    {\"name\": \"box$n\", \"arch\": \"$(cat "$dir/box$n/arch")\", \"zone\": \"zone-$z\", \"role\": \"$role\", \"ip\": \"$(ip_of "$n")\", \"url\": \"http://$(ip_of "$n")/\", \"dir\": \"$dir/box$n\"}$sep"
    done
    echo "  ]"
    echo "}"
} > "$dir/community.json"
if [ "${#ready[@]}" -ne "$boxes" ]; then
    echo "community.sh: only boxes ${ready[*]:-none} of $boxes became ready; see $dir/box*/serial.log" >&2
    exit 1
fi
echo
echo "=== nuvol community: $boxes boxes ready in ${t_ready}s ==============================="
for n in $(seq 1 "$boxes"); do
    z=$(zone_of "$n"); role=ordinary; [ "$n" = "$(first_of "$z")" ] && role=SUPER
    printf '  box%-3s zone-%s  %-8s http://%s/\n' "$n" "$z" "$role" "$(ip_of "$n")"
done
echo "  token (every box)   $token"
echo "    export NUVOL_HOST=http://$(ip_of 1) NUVOL_TOKEN=$token; nuvol ctl members --by-zone"
echo "  zone-b is behind NAT; the router drops new connections from zone-a into it."
echo "  $dir/community.json lists the boxes; qemu/community.sh down --dir $dir stops them."
echo "=================================================================================="
[ "$detach" = 1 ] && exit 0
echo "(Ctrl-C stops the community)"
while sleep 3600; do :; done
