#!/usr/bin/env bash
# The arm64 static `nuvol` runs: under qemu-user (no binfmt needed), it
# prints its version, makes a signing key, verifies a bundle the x86_64
# binary built and signed with that key, and refuses the same bundle with
# one byte changed. Proves the cross build (ring's C parts, rust-lld, musl)
# and the signature and digest code on aarch64 before any image is built
# (the arm64 image itself boots in tests/tests/arm64.rs).
#
#   tests/arm64-smoke.sh ARM64_NUVOL X86_64_NUVOL
set -euo pipefail
arm=$1 x86=$2
qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64) ||
    { echo "arm64 smoke: qemu-aarch64-static missing (image/deps.sh installs qemu-user-static)" >&2; exit 1; }
file "$arm" | grep -q 'ARM aarch64.*statically linked' || { echo "arm64 smoke: $arm is not a static aarch64 binary" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-arm64-smoke.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$qemu" "$arm" version
"$qemu" "$arm" bundle keygen -o "$work/key" -c "arm64 smoke, thrown away" >/dev/null
mkdir -p "$work/root/bin"
echo hello > "$work/root/bin/hello"
cat > "$work/m.toml" <<TOML
name = "smoke"
version = "1.0"
publisher = "nuvol arm64 smoke"
[run]
command = ["/bin/hello"]
TOML
"$x86" bundle build -m "$work/m.toml" -r "$work/root" -o "$work/smoke.nvb" -k "$work/key.sec" >/dev/null
"$qemu" "$arm" bundle verify -p "$work/key.pub" "$work/smoke.nvb" >/dev/null ||
    { echo "arm64 smoke: the arm64 binary refused a good bundle" >&2; exit 1; }
cp "$work/smoke.nvb" "$work/bad.nvb"
size=$(stat -c %s "$work/bad.nvb")
printf 'X' | dd of="$work/bad.nvb" bs=1 seek=$((size - 100)) conv=notrunc status=none
if "$qemu" "$arm" bundle verify -p "$work/key.pub" "$work/bad.nvb" >"$work/out" 2>&1; then
    echo "arm64 smoke: the arm64 binary accepted a changed bundle" >&2; exit 1
fi
echo "arm64 smoke: ok (verified a good bundle, refused a changed one: $(head -c 200 "$work/out"))"
