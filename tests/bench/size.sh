#!/usr/bin/env bash
# The static `nuvol` binary against its budget: 8 MiB per architecture with
# every feature. Prints the size, the headroom and the largest ELF sections;
# exits 1 when the binary is over budget (room is made by trimming, never by
# raising BUDGET). With cargo-bloat installed (`cargo install cargo-bloat
# --locked`), CRATES=1 also lists the largest crates (an unstripped rebuild).
#
#   tests/bench/size.sh [path/to/nuvol]   (default: `make nuvol`, the image's binary)
#   BUDGET=8388608 CRATES=0
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
BUDGET=${BUDGET:-8388608}
CRATES=${CRATES:-0}
bin=${1:-}
if [ -z "$bin" ]; then
    make -C "$here" -s nuvol >&2
    bin=$here/out/nuvol
fi
[ -f "$bin" ] || { echo "size: $bin: no such file" >&2; exit 2; }
size=$(stat -c %s "$bin")
echo "nuvol: $size bytes, budget $BUDGET, headroom $((BUDGET - size)) bytes"
if command -v size >/dev/null; then
    echo "largest sections (bytes):"
    size -A "$bin" | awk '$1 ~ /^\./ && $2 > 65536 { printf "  %-20s %9d\n", $1, $2 }' | sort -k2 -n -r
fi
if [ "$CRATES" = 1 ]; then
    (
        cd "$here"
        target=${CARGO_TARGET_DIR:-$here/target}
        export RUSTFLAGS="--remap-path-prefix=$here=/nuvol --remap-path-prefix=$HOME/.cargo=/cargo --remap-path-prefix=$target=/target"
        CARGO_PROFILE_RELEASE_STRIP=false cargo bloat --release --locked \
            --target x86_64-unknown-linux-musl -p nuvol --crates -n 30
    )
fi
if [ "$size" -gt "$BUDGET" ]; then
    echo "size: nuvol is $((size - BUDGET)) bytes over its budget: trim, do not raise it" >&2
    exit 1
fi
