#!/usr/bin/env bash
# Build (or fetch from cache) the nuvol kernel for one architecture.
#
#   image/kernel.sh ARCH OUT_KERNEL FRAGMENT...
#
# ARCH is x86_64 (a bzImage), arm64 (vmlinuz.efi: an EFI zboot image,
# cross-built with Debian's aarch64 gcc) or armv7 (a zImage with the EFI stub,
# cross-built with Debian's armhf gcc). The kernel comes from Debian's
# linux-source-6.1 tarball and the config fragments under kernel-config/. It is
# cached under $NUVOL_CACHE/kernel/KEY, where KEY hashes the architecture, the
# source package version, the fragments and this script, so an unchanged kernel
# is never rebuilt (a cold build takes ~15 min on 2 cores for x86_64, ~8 min
# for arm64).
set -euo pipefail

arch=$1 out=$2; shift 2
case "$arch" in
    x86_64) karch=x86_64 cross= target=bzImage built=arch/x86/boot/bzImage ;;
    arm64) karch=arm64 cross=aarch64-linux-gnu- target=vmlinuz.efi built=arch/arm64/boot/vmlinuz.efi ;;
    armv7) karch=arm cross=arm-linux-gnueabihf- target=zImage built=arch/arm/boot/zImage ;;
    *) echo "kernel.sh: no kernel for ARCH=$arch (x86_64, arm64 or armv7)" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || { echo "kernel.sh: no config fragments given" >&2; exit 2; }
cache=${NUVOL_CACHE:-/var/cache/nuvol}
tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || { echo "kernel.sh: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }

srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { echo "linux-source-6.1 $srcver $arch"; cat "$0"; for f in "$@"; do echo "== $(basename "$f")"; cat "$f"; done; } | sha256sum | cut -c1-16)
dest=$cache/kernel/$key

if [ ! -f "$dest/kernel" ]; then
    echo "kernel.sh: building the $arch kernel $key (linux-source $srcver; cold build ~15 min)" >&2
    src=$cache/src/linux-$srcver
    if [ ! -f "$src/.nuvol-extracted" ]; then
        rm -rf "$src"; mkdir -p "$src"
        tar -C "$src" --strip-components=1 -xf "$tarball"
        touch "$src/.nuvol-extracted"
    fi
    build=$cache/build/$key
    mkdir -p "$build"
    export KBUILD_BUILD_TIMESTAMP="nuvol $key" KBUILD_BUILD_USER=nuvol KBUILD_BUILD_HOST=nuvol KBUILD_BUILD_VERSION=1
    make -s -C "$src" O="$build" ARCH=$karch CROSS_COMPILE=$cross tinyconfig >/dev/null
    cat "$@" > "$build/nuvol.fragment"
    (cd "$build" && "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$build/nuvol.fragment" >/dev/null)
    make -s -C "$src" O="$build" ARCH=$karch CROSS_COMPILE=$cross olddefconfig >/dev/null
    # merge_config.sh drops options whose dependencies are unmet, silently: check every one.
    # A later fragment may redefine an option (armv7: no zstd kernel), or
    # turn it off ("# CONFIG_X is not set"), as merge_config.sh does: the
    # last definition is the one checked.
    declare -A want=()
    order=()
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) opt=${line%%=*} val=${line#*=} ;;
            "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}; val= ;;
            *) continue ;;
        esac
        [ -n "${want[$opt]+set}" ] || order+=("$opt")
        want[$opt]=$val
    done < "$build/nuvol.fragment"
    missing=0
    for opt in "${order[@]}"; do
        have=$(grep -E "^$opt=" "$build/.config" | head -1 | cut -d= -f2- || true)
        if [ "$have" != "${want[$opt]}" ]; then
            echo "kernel.sh: $opt wanted '${want[$opt]:-unset}', got '${have:-unset}'" >&2; missing=1
        fi
    done
    [ $missing = 0 ] || { echo "kernel.sh: config fragments not satisfied; fix kernel-config/" >&2; exit 1; }
    make -C "$src" O="$build" ARCH=$karch CROSS_COMPILE=$cross -j"$(nproc)" $target >"$build/build.log" 2>&1 \
        || { tail -40 "$build/build.log" >&2; exit 1; }
    tmp=$cache/kernel/.tmp-$key-$$
    rm -rf "$tmp"; mkdir -p "$tmp"
    cp "$build/$built" "$tmp/kernel"
    cp "$build/.config" "$tmp/config"
    sync -f "$tmp/kernel"
    rm -rf "$dest"; mv "$tmp" "$dest"
    rm -rf "$build"
fi
mkdir -p "$(dirname "$out")"
cp "$dest/kernel" "$out.tmp" && mv "$out.tmp" "$out"
cp "$dest/config" "$out.config"
echo "kernel.sh: $out ($key)" >&2
