#!/usr/bin/env bash
# Boot benchmarks for issue "bootable image" (printed, never asserted):
#   sizes of image, kernel, initramfs and nuvol; QEMU start → first HTTP 200
#   from the panel (median of $RUNS) under SeaBIOS and OVMF; agent RSS after
#   boot; and the same boot-to-HTTP figure for a minimal Debian 12 with
#   systemd serving one static page (debootstrap, same QEMU flags, same run).
#   The arm64 image's sizes and boot-to-HTTP (qemu-system-aarch64 -M virt,
#   edk2, TCG) beside x86's, when out/nuvol-arm64.img exists; the same for
#   armv7 (qemu-system-arm -M virt, edk2, 128 MiB) when out/nuvol-armv7.img
#   exists.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
image=${NUVOL_IMAGE:-$here/out/nuvol-x86_64.img}
cache=${NUVOL_CACHE:-/var/cache/nuvol}
RUNS=${RUNS:-5}
work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-bench.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# boot_to_http NAME QEMU-ARGS... : seconds from QEMU start to the first 200 on /
boot_to_http() {
    local port; port=$(free_port)
    local disk=$work/disk.img
    cp "$BOOT_DISK" "$disk"
    local t0; t0=$(date +%s.%N)
    "$here/qemu/run.sh" --port "$port" --serial "$work/serial.log" "$@" "$disk" >/dev/null 2>&1 &
    local pid=$!
    local ok=0 deadline=$((SECONDS + 600))
    while [ $SECONDS -lt $deadline ]; do
        if curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null | grep -q 200; then ok=1; break; fi
        sleep 0.1
    done
    local t1; t1=$(date +%s.%N)
    if [ $ok = 1 ] && [ -n "${RSS_OUT:-}" ]; then
        curl -s "http://127.0.0.1:$port/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("agent_rss_bytes", 0))' > "$RSS_OUT" || true
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    [ $ok = 1 ] || { echo "boot did not answer HTTP; console tail:" >&2; tail -20 "$work/serial.log" >&2; return 1; }
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

series() { # series LABEL ARGS... → prints the median
    local label=$1; shift
    local times=() t
    for _ in $(seq 1 "$RUNS"); do t=$(boot_to_http "$@") || return 1; times+=("$t"); done
    local m; m=$(printf '%s\n' "${times[@]}" | median)
    echo "  $label: median ${m} s over $RUNS boots (${times[*]})" >&2
    echo "$m"
}

# --- the Debian 12 reference ---------------------------------------------------
debian_ref() {
    # Bump when the recipe below changes (the cache is keyed by it).
    local key=bookworm-systemd-busybox-httpd-v1
    local dir=$cache/debian-ref/$key
    if [ ! -f "$dir/disk.img" ]; then
        command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
        local mirror
        mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
        local root=$work/debroot
        debootstrap --variant=minbase --include=systemd-sysv,linux-image-amd64,busybox,udev \
            bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; return 1; }
        mkdir -p "$root/srv/www"
        echo '<h1>hello from debian</h1>' > "$root/srv/www/index.html"
        cat > "$root/etc/systemd/system/static-page.service" <<UNIT
[Unit]
Description=one static page
After=network.target
[Service]
ExecStart=/bin/busybox httpd -f -p 80 -h /srv/www
[Install]
WantedBy=multi-user.target
UNIT
        ln -sf /etc/systemd/system/static-page.service "$root/etc/systemd/system/multi-user.target.wants/static-page.service"
        mkdir -p "$root/etc/systemd/network"
        printf '[Match]\nName=en*\n[Network]\nDHCP=ipv4\n' > "$root/etc/systemd/network/10-dhcp.network"
        ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
        echo 'root::0:0:99999:7:::' > "$root/etc/shadow.tmp" && grep -v '^root:' "$root/etc/shadow" >> "$root/etc/shadow.tmp" && mv "$root/etc/shadow.tmp" "$root/etc/shadow"
        rm -rf "$cache/debian-ref"; mkdir -p "$dir"
        cp "$root"/boot/vmlinuz-* "$dir/vmlinuz"
        cp "$root"/boot/initrd.img-* "$dir/initrd.img"
        rm -rf "$root/boot"/*
        mkfs.ext4 -q -F -d "$root" "$dir/disk.img.tmp" 1536M >/dev/null
        mv "$dir/disk.img.tmp" "$dir/disk.img"
    fi
    echo "$dir"
}

echo "== nuvol boot benchmarks ($(qemu/probe-kvm.sh 2>/dev/null || echo tcg)) ==" >&2
cd "$here"
bin=${NUVOL_BIN:-${CARGO_TARGET_DIR:-$cache/target}/x86_64-unknown-linux-musl/release/nuvol}
echo "  image: $(mib "$(stat -c %s "$image")") MiB (target <= 32)" >&2
echo "  kernel (bzImage): $(mib "$(stat -c %s out/bzImage)") MiB; initramfs: $(mib "$(stat -c %s out/initrd.img)") MiB" >&2
[ -f "$bin" ] && echo "  nuvol binary: $(mib "$(stat -c %s "$bin")") MiB (target <= 8)" >&2

BOOT_DISK=$image
RSS_OUT=$work/rss
bios=$(series "nuvol SeaBIOS boot-to-HTTP" --firmware bios)
echo "  agent RSS after boot: $(mib "$(cat "$work/rss")") MiB (target <= 16)" >&2
uefi=$(series "nuvol OVMF boot-to-HTTP" --firmware uefi)
RSS_OUT=

if ref=$(debian_ref) && BOOT_DISK=$ref/disk.img && deb=$(series "Debian 12 + systemd boot-to-HTTP" --kernel "$ref/vmlinuz" --initrd "$ref/initrd.img" --append "root=/dev/vda rw console=ttyS0 quiet"); then
    echo "  ratio Debian/nuvol (SeaBIOS): $(awk -v d="$deb" -v n="$bios" 'BEGIN { printf "%.1fx", d / n }') faster (target >= 5x)" >&2
    echo "  ratio Debian/nuvol (OVMF):    $(awk -v d="$deb" -v n="$uefi" 'BEGIN { printf "%.1fx", d / n }') faster" >&2
else
    echo "  Debian reference could not be built or booted (see above)" >&2
fi

arm_image=${NUVOL_IMAGE_ARM64:-$here/out/nuvol-arm64.img}
if [ -f "$arm_image" ]; then
    echo "== arm64 (qemu-system-aarch64 -M virt, Cortex-A53, TCG) ==" >&2
    arm_bin=$here/out/nuvol-arm64
    echo "  image: $(mib "$(stat -c %s "$arm_image")") MiB; kernel (vmlinuz.efi): $(mib "$(stat -c %s out/arm64/vmlinuz.efi)") MiB; initramfs: $(mib "$(stat -c %s out/arm64/initrd.img)") MiB" >&2
    [ -f "$arm_bin" ] && echo "  nuvol binary: $(mib "$(stat -c %s "$arm_bin")") MiB (x86_64: $(mib "$(stat -c %s "$bin")") MiB; target <= 8)" >&2
    BOOT_DISK=$arm_image
    if arm=$(series "nuvol arm64 edk2 boot-to-HTTP" --arch arm64); then
        echo "  ratio arm64/x86 (OVMF) boot-to-HTTP: $(awk -v a="$arm" -v x="$uefi" 'BEGIN { printf "%.1fx", a / x }') (TCG emulates every arm64 instruction)" >&2
    fi
fi

armv7_image=${NUVOL_IMAGE_ARMV7:-$here/out/nuvol-armv7.img}
if [ -f "$armv7_image" ]; then
    echo "== armv7 (qemu-system-arm -M virt, 128 MiB, TCG) ==" >&2
    v7_bin=$here/out/nuvol-armv7
    echo "  image: $(mib "$(stat -c %s "$armv7_image")") MiB; kernel (zImage): $(mib "$(stat -c %s out/armv7/zImage)") MiB; initramfs: $(mib "$(stat -c %s out/armv7/initrd.img)") MiB" >&2
    [ -f "$v7_bin" ] && echo "  nuvol binary: $(mib "$(stat -c %s "$v7_bin")") MiB (x86_64: $(mib "$(stat -c %s "$bin")") MiB; target <= 8)" >&2
    BOOT_DISK=$armv7_image
    if v7=$(series "nuvol armv7 edk2 boot-to-HTTP (128 MiB)" --arch armv7 --mem 128); then
        echo "  ratio armv7/x86 (OVMF) boot-to-HTTP: $(awk -v a="$v7" -v x="$uefi" 'BEGIN { printf "%.1fx", a / x }') (TCG emulates every ARM instruction)" >&2
    fi
fi
