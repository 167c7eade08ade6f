#!/bin/sh
# Build and sign every recipe (or the ones named) into OUTDIR.
#
#   recipes/build-all.sh OUTDIR [RECIPE...]
#
# Signs with a DEVELOPMENT-ONLY key generated on first use into
# $NUVOL_CACHE/dev-key (default ~/.cache/nuvol/dev-key); OUTDIR/dev.pub is
# its public half. Never trust that key on a production box.
# NUVOL=/path/to/nuvol picks the binary; default: `cargo run -p nuvol`.
# BUNDLE_ARCH=x86_64 (default), aarch64 or arm (armv7, hard float: Debian's
# armhf): the architecture the bundles are
# built for, from Debian's packages for it; written into each signed
# manifest, so a box of another architecture refuses the bundle. A recipe
# with a file `arches` (BUNDLE_ARCH names, e.g. "x86_64") is built for
# those only and skipped, with a note, for the others.
# PIP_PYTHON: the Python whose pip fetches and installs the wheels of
# recipes that use pip_install (default Debian's /usr/bin/python3).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [RECIPE...]" >&2; exit 2; }
OUT=$(realpath -m "$1")
shift
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NUVOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nuvol}
DEB_CACHE="$CACHE/debs"
WHEEL_CACHE="$CACHE/wheels"
: "${PIP_PYTHON:=/usr/bin/python3}"
: "${CA_CERTIFICATES_VERSION:=20250419~deb12u2}"
: "${LIBC6_VERSION:=2.36-9+deb12u14}"
BUNDLE_ARCH=${BUNDLE_ARCH:-x86_64}
case "$BUNDLE_ARCH" in
    x86_64) DEB_ARCH=amd64 ;;
    aarch64) DEB_ARCH=arm64 ;;
    arm) DEB_ARCH=armhf ;;
    *) echo "$0: BUNDLE_ARCH=$BUNDLE_ARCH: x86_64, aarch64 or arm" >&2; exit 2 ;;
esac
export DEB_CACHE WHEEL_CACHE PIP_PYTHON BUNDLE_ARCH DEB_ARCH CA_CERTIFICATES_VERSION LIBC6_VERSION

nuvol() {
    if [ -n "${NUVOL:-}" ]; then
        "$NUVOL" "$@"
    else
        (cd "$HERE/.." && cargo run -q -p nuvol -- "$@")
    fi
}

for tool in mksquashfs dpkg-deb apt-get readelf; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool (apt-get install squashfs-tools dpkg apt binutils)" >&2; exit 1; }
done

mkdir -p "$OUT" "$CACHE/dev-key"
KEY="$CACHE/dev-key/dev"
if [ ! -f "$KEY.sec" ]; then
    nuvol bundle keygen -o "$KEY" -c "DEVELOPMENT ONLY nuvol recipes key, never trust in production"
fi
cp "$KEY.pub" "$OUT/dev.pub"

if [ $# -eq 0 ]; then
    set -- $(cd "$HERE" && for d in */; do [ -f "$d/rootfs.sh" ] && echo "${d%/}"; done)
fi
. "$HERE/lib.sh"
for r in "$@"; do
    [ -f "$HERE/$r/rootfs.sh" ] || { echo "$0: no recipe $r (no $HERE/$r/rootfs.sh)" >&2; exit 2; }
    if [ -f "$HERE/$r/arches" ]; then
        arches=$(sed 's/#.*//' "$HERE/$r/arches" | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//')
        case " $arches " in
            *" $BUNDLE_ARCH "*) ;;
            *) echo "== $r: skipped: built for $arches only, not $BUNDLE_ARCH (recipes/$r/arches)"; continue ;;
        esac
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-recipe-$r.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT INT TERM
    ROOTFS="$WORK/rootfs"
    mkdir -p "$ROOTFS"
    echo "== $r"
    RECIPE_DIR="$HERE/$r"
    . "$RECIPE_DIR/rootfs.sh"
    nuvol bundle build -m "$RECIPE_DIR/manifest.toml" -r "$ROOTFS" -o "$OUT/$r.nvb" -k "$KEY.sec" --arch "$BUNDLE_ARCH"
    nuvol bundle verify "$OUT/$r.nvb" -p "$OUT/dev.pub"
    rm -rf "$WORK"
    trap - EXIT INT TERM
done
