#!/usr/bin/env bash
# Install what building and testing nuvol needs, idempotently.
#   image/deps.sh build   packages to build the kernel and the image, Rust targets
#   image/deps.sh lint    what `make lint` needs (the same as build)
#   image/deps.sh test    also what the test suite needs (tests/apt-packages.txt)
# Only runs apt-get when a package is missing, so a second run takes a second.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# Refresh apt's package lists. A Debian mirror in the middle of a sync serves
# an index of the wrong size for a minute ("Mirror sync in progress?"), and
# apt-get update then fails for one architecture's list while the others are
# fine: retry, and if it still fails, go on with what apt knows. The install or
# download that follows names any package that is really missing.
apt_update() {
    local try
    for try in 1 2 3; do
        $SUDO apt-get update -q >/dev/null && return 0
        echo "deps: apt-get update failed (try $try of 3)" >&2
        [ "$try" -lt 3 ] && sleep $((try * 20))
    done
    echo "deps: going on with the package lists apt has" >&2
}

# musl-tools: musl-gcc, which crates with C parts (ring, for TLS) need to build
# for the box's x86_64-unknown-linux-musl target. squashfs-tools, binutils:
# the recipes (`make bundles`, which `make qemu` runs too). busybox-static: the
# rescue shell in the initramfs (docs/boot.md). python3-pip: the wheels of
# the Tahoe-LAFS recipe (recipes/lib.sh pip_install, Debian's pip).
build_pkgs=(build-essential bc flex bison libelf-dev libssl-dev cpio zstd xz-utils kmod
    linux-source-6.1 dosfstools mtools e2fsprogs fdisk util-linux syslinux syslinux-common
    systemd-boot-efi qemu-system-x86 ovmf seabios curl python3 file
    musl-tools squashfs-tools binutils busybox-static python3-pip)
pkgs=("${build_pkgs[@]}")
# add_foreign_arch DEBARCH: let apt know another architecture's packages
# (they are downloaded by image/foreign.sh, never installed).
add_foreign_arch() {
    dpkg --print-foreign-architectures | grep -qx "$1" && return 0
    echo "deps: adding the $1 architecture to apt (packages are downloaded, not installed)" >&2
    $SUDO dpkg --add-architecture "$1"
    apt_update
}
# ARCH=arm64 (the Makefile exports ARCH): Debian's aarch64 cross gcc and
# its C library headers (not pulled in without recommends) for
# ring's C parts; the linker is rustup's rust-lld. The test suite builds the
# arm64 binary too and runs it under qemu-user.
if [ "${ARCH:-x86_64}" = arm64 ] || [ "${1:-build}" = test ]; then
    pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static qemu-system-arm qemu-efi-aarch64)
    # The arm64 image takes Debian's arm64 busybox-static and systemd-boot
    # (image/foreign.sh): apt must know the architecture's packages.
    add_foreign_arch arm64
fi
# ARCH=armv7: std is built from rust-src and the C parts (ring, LLVM's
# libunwind: C and C++) by Debian's armhf cross gcc and g++ against musl's
# headers (image/armv7-sysroot.sh fetches those); the binary runs under
# qemu-arm-static. The kernel is cross-built with the same gcc; the image
# takes Debian's armhf busybox-static and systemd-boot (image/foreign.sh)
# and boots in qemu-system-arm with edk2's 32-bit ARM build (qemu-efi-arm).
if [ "${ARCH:-x86_64}" = armv7 ]; then
    pkgs+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf binutils-arm-linux-gnueabihf qemu-user-static
        qemu-system-arm qemu-efi-arm)
    add_foreign_arch armhf
fi
if [ "${1:-build}" = test ]; then
    while IFS= read -r line; do
        line=${line%%#*}; line=${line//[[:space:]]/}
        [ -n "$line" ] && pkgs+=("$line")
    done < "$here/tests/apt-packages.txt"
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt_update
    # A package fetched mid-sync fails the same way: refresh and try again.
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null || {
        echo "deps: apt-get install failed; refreshing the lists and trying again" >&2
        apt_update
        $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    }
fi

command -v cargo >/dev/null || { echo "deps: cargo not found; nuvol builds with rustup's toolchain (see rust-toolchain.toml)" >&2; exit 1; }
# rust-toolchain.toml pins the toolchain; make sure it and the musl targets
# are there (armv7's std is built from rust-src: see the Makefile's ARMV7).
installed=$(rustup target list --installed 2>/dev/null || true)
for t in x86_64-unknown-linux-musl $( { [ "${ARCH:-x86_64}" = arm64 ] || [ "${1:-build}" = test ]; } && echo aarch64-unknown-linux-musl); do
    grep -qx "$t" <<<"$installed" || rustup target add "$t" >&2
done
if [ "${ARCH:-x86_64}" = armv7 ]; then
    rustup component list --installed 2>/dev/null | grep -qx rust-src || rustup component add rust-src >&2
fi
