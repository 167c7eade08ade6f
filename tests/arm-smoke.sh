#!/usr/bin/env bash
# An ARM static `nuvol` runs: under qemu-user (no binfmt needed), it prints
# its version, makes a signing key, verifies a bundle the x86_64 binary built
# and signed with that key, and refuses the same bundle with one byte
# changed. Proves the cross build (ring's C parts, rust-lld, musl) and the
# signature and digest code on that architecture before any image is built
# (the images themselves boot in tests/tests/arm64.rs and armv7.rs).
#
#   tests/arm-smoke.sh arm64|armv7 ARM_NUVOL X86_64_NUVOL
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 arm64|armv7 ARM_NUVOL X86_64_NUVOL" >&2; exit 2; }
arch=$1 arm=$2 x86=$3
case "$arch" in
    arm64) qemu_name=qemu-aarch64 elf='ARM aarch64' ;;
    armv7) qemu_name=qemu-arm elf='ARM, EABI5' ;;
    *) echo "$arch smoke: arm64 or armv7" >&2; exit 2 ;;
esac
qemu=$(command -v "$qemu_name-static" || command -v "$qemu_name") ||
    { echo "$arch smoke: $qemu_name-static missing (image/deps.sh installs qemu-user-static)" >&2; exit 1; }
file "$arm" | grep -q "$elf.*statically linked" || { echo "$arch smoke: $arm is not a static $arch binary: $(file -b "$arm")" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-$arch-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$qemu" "$arm" version
"$qemu" "$arm" bundle keygen -o "$work/key" -c "$arch smoke, thrown away" >/dev/null
mkdir -p "$work/root/bin"
echo hello > "$work/root/bin/hello"
cat > "$work/m.toml" <<TOML
name = "smoke"
version = "1.0"
publisher = "nuvol $arch smoke"
[run]
command = ["/bin/hello"]
TOML
"$x86" bundle build -m "$work/m.toml" -r "$work/root" -o "$work/smoke.nvb" -k "$work/key.sec" >/dev/null
"$qemu" "$arm" bundle verify -p "$work/key.pub" "$work/smoke.nvb" >/dev/null ||
    { echo "$arch smoke: the $arch binary refused a good bundle" >&2; exit 1; }
cp "$work/smoke.nvb" "$work/bad.nvb"
size=$(stat -c %s "$work/bad.nvb")
printf 'X' | dd of="$work/bad.nvb" bs=1 seek=$((size - 100)) conv=notrunc status=none
if "$qemu" "$arm" bundle verify -p "$work/key.pub" "$work/bad.nvb" >"$work/out" 2>&1; then
    echo "$arch smoke: the $arch binary accepted a changed bundle" >&2; exit 1
fi
echo "$arch smoke: ok (verified a good bundle, refused a changed one: $(head -c 200 "$work/out"))"
