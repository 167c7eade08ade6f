#!/usr/bin/env bash
# `make qemu`: boot a copy of the release image as a box that keeps its
# state, and say what to do next once it is ready.
#
#   qemu/box.sh [options] IMAGE
#     --dir DIR          where the box lives (default out/qemu): disk.img, OVMF
#                        variables, console.log
#     --disk SIZE        the box's disk, as a USB stick (default 4G; sparse);
#                        a bigger SIZE grows an existing disk, the box grows
#                        its data partition at the next boot
#     --reset            start over: a fresh copy of IMAGE
#     --nuvol PATH       the nuvol binary to name in the next steps
#     --bundles DIR      where `make bundles` put the recipes (out/bundles);
#                        empty: print no recipe steps
#     everything else (--firmware, --port, --https-port, --forward H:G) goes
#     to qemu/run.sh
#
# The release image itself is never booted: the box's node id, admin token
# and TLS key would end up in the file people flash, and two sticks would
# share an identity.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

dir=out/qemu disk=4G reset=0 nuvol=nuvol bundles=out/bundles
port=8080 https_port="" firmware=bios
pass=()
while [ $# -gt 1 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --disk) disk=$2; shift 2 ;;
        --reset) reset=1; shift ;;
        --nuvol) nuvol=$2; shift 2 ;;
        --bundles) bundles=$2; shift 2 ;;
        --port) port=$2; pass+=("$1" "$2"); shift 2 ;;
        --https-port) https_port=$2; pass+=("$1" "$2"); shift 2 ;;
        --firmware) firmware=$2; pass+=("$1" "$2"); shift 2 ;;
        --forward) pass+=("$1" "$2"); fwds+=("$2"); shift 2 ;;
        *) echo "box.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 1 ] || { sed -n '2,20p' "$0" >&2; exit 2; }
image=$1
[ -f "$image" ] || { echo "box.sh: no image at $image (run 'make image')" >&2; exit 1; }

bytes() { # 4G, 512M, 4096M, 123456 -> bytes
    local n=${1%[KkMmGgTt]} u=${1: -1}
    [[ $n =~ ^[0-9]+$ ]] || { echo "box.sh: DISK must be a size like 4G or 512M, got '$1'" >&2; exit 2; }
    case $u in K|k) echo $((n << 10)) ;; M|m) echo $((n << 20)) ;; G|g) echo $((n << 30)) ;;
        T|t) echo $((n << 40)) ;; *) echo "$n" ;; esac
}
want=$(bytes "$disk")
have_image=$(stat -c %s "$image")
[ "$want" -ge "$have_image" ] || { echo "box.sh: DISK=$disk is smaller than the image ($have_image bytes)" >&2; exit 2; }

mkdir -p "$dir"
box=$dir/disk.img
image_sum=$(sha256sum "$image" | cut -d' ' -f1)
if [ "$reset" = 1 ]; then
    rm -f "$box" "$dir/made-from" "$dir/ovmf-vars.fd"
fi
if [ ! -f "$box" ]; then
    cp --sparse=always "$image" "$box.tmp"
    truncate -s "$want" "$box.tmp"
    sync "$box.tmp"
    mv "$box.tmp" "$box"
    echo "$image_sum" > "$dir/made-from"
    echo "nuvol: new box $box ($disk, sparse) from $image" >&2
else
    cur=$(stat -c %s "$box")
    if [ "$want" -gt "$cur" ]; then
        truncate -s "$want" "$box"
        echo "nuvol: grew $box to $disk; the box grows its data partition at boot" >&2
    elif [ "$want" -lt "$cur" ]; then
        echo "nuvol: $box is bigger than DISK=$disk; keeping it (make qemu-reset to start over)" >&2
    fi
    if [ "$(cat "$dir/made-from" 2>/dev/null)" != "$image_sum" ]; then
        echo "nuvol: $box keeps the state and the OS of an earlier image; 'make qemu-reset' starts over from the new $image" >&2
    fi
fi
case $(basename "$image") in
    *arm64*) arch=arm64 firmware=uefi vars_template=/usr/share/AAVMF/AAVMF_VARS.fd ;;
    *armv7*) arch=armv7 firmware=uefi vars_template=/usr/share/AAVMF/AAVMF32_VARS.fd ;;
    *) arch=x86_64 vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd ;;
esac
pass+=(--arch "$arch")
if [ "$firmware" = uefi ]; then
    [ -f "$dir/ovmf-vars.fd" ] || cp "$vars_template" "$dir/ovmf-vars.fd"
    pass+=(--vars "$dir/ovmf-vars.fd")
fi

log=$dir/console.log
: > "$log"
# Once the box is ready: the next steps, with this box's token and
# certificate fingerprint read off its console.
next_steps() {
    local c token fp url
    for _ in $(seq 1 3600); do
        c=$(tr -d '\r' < "$log" 2>/dev/null || true)
        grep -q 'nuvol: ready: panel at' <<<"$c" && break
        sleep 1
    done
    grep -q 'nuvol: ready: panel at' <<<"$c" || return 0
    token=$(sed -n 's/.*nuvol: admin token: \([0-9a-f]*\).*/\1/p' <<<"$c" | tail -1)
    fp=$(sed -n 's/.*certificate SHA-256 fingerprint: \([0-9A-Fa-f:]*\).*/\1/p' <<<"$c" | tail -1)
    if [ -n "$https_port" ]; then url="https://127.0.0.1:$https_port"; else url="http://127.0.0.1:$port"; fi
    {
        echo
        echo "=== nuvol box is ready ==========================================="
        echo "  status page   http://127.0.0.1:$port/"
        [ -n "$https_port" ] && echo "  panel         $url/   (log in with the admin token)"
        [ -n "$token" ] && echo "  admin token   $token"
        [ -n "$fp" ] && echo "  certificate   $fp"
        echo "  In another terminal:"
        echo "    export NUVOL_HOST=$url${token:+ NUVOL_TOKEN=$token}${fp:+ NUVOL_FINGERPRINT=$fp}"
        echo "    $nuvol ctl status"
        if [ -n "$bundles" ]; then
            echo "    $nuvol ctl keys add $bundles/dev.pub          # trust the recipes' DEVELOPMENT key"
            echo "    $nuvol ctl bundles install --yes $bundles/web.nvb"
        fi
        for f in "${fwds[@]:-}"; do
            [ -n "$f" ] && echo "    service port ${f##*:} of the box is at http://127.0.0.1:${f%%:*}/"
        done
        echo "  The box keeps its state in $dir (make qemu-reset starts over)."
        echo "  Quit QEMU with Ctrl-a x."
        echo "=================================================================="
    } | sed 's/$/\r/' >&2
}
fwds=("${fwds[@]:-}")
next_steps &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
"$here/run.sh" "${pass[@]}" --log "$log" "$box"
