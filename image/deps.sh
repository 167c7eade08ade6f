#!/usr/bin/env bash
# Install what building and testing nuvol needs, idempotently.
#   image/deps.sh build   packages to build the kernel and the image, Rust targets
#   image/deps.sh lint    also the 32-bit ARM toolchain `make lint` checks against
#   image/deps.sh test    also what the test suite needs (tests/apt-packages.txt)
# Only runs apt-get when a package is missing, so a second run takes a second.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# musl-tools: musl-gcc, which crates with C parts (ring, for TLS) need to build
# for the box's x86_64-unknown-linux-musl target. squashfs-tools, binutils:
# the recipes (`make bundles`, which `make qemu` runs too). busybox-static: the
# rescue shell in the initramfs (docs/boot.md).
build_pkgs=(build-essential bc flex bison libelf-dev libssl-dev cpio zstd xz-utils kmod
    linux-source-6.1 dosfstools mtools e2fsprogs fdisk util-linux syslinux syslinux-common
    systemd-boot-efi qemu-system-x86 ovmf seabios curl python3 file
    musl-tools squashfs-tools binutils busybox-static)
pkgs=("${build_pkgs[@]}")
# ARCH=arm64 (the Makefile exports ARCH): Debian's aarch64 cross gcc and
# its C library headers (not pulled in without recommends) for
# ring's C parts; the linker is rustup's rust-lld. The test suite builds the
# arm64 binary too and runs it under qemu-user.
if [ "${ARCH:-x86_64}" = arm64 ] || [ "${1:-build}" = test ]; then
    pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static qemu-system-arm qemu-efi-aarch64)
    # The arm64 image takes Debian's arm64 busybox-static and systemd-boot
    # (image/foreign.sh): apt must know the architecture's packages.
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        echo "deps: adding the arm64 architecture to apt (packages are downloaded, not installed)" >&2
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -q >/dev/null
    fi
fi
# `make lint` (which `make test` runs) checks that the workspace builds for
# 32-bit ARM (armv7-unknown-linux-gnueabihf), the road to ARM images:
# Debian's armhf cross gcc and headers for ring's C parts.
armv7=
if [ "${1:-build}" = lint ] || [ "${1:-build}" = test ]; then
    armv7=armv7-unknown-linux-gnueabihf
    pkgs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
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
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "deps: cargo not found; nuvol builds with rustup's toolchain (see rust-toolchain.toml)" >&2; exit 1; }
# rust-toolchain.toml pins the toolchain; make sure it and the musl target are
# there (and armv7's std for the lint: musleabihf's is not downloadable here).
installed=$(rustup target list --installed 2>/dev/null || true)
for t in x86_64-unknown-linux-musl $( { [ "${ARCH:-x86_64}" = arm64 ] || [ "${1:-build}" = test ]; } && echo aarch64-unknown-linux-musl) $armv7; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t" >&2
done
