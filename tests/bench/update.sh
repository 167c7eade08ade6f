#!/usr/bin/env bash
# OS update benchmarks (docs/boot.md, "Update"), printed, never asserted:
#   the artefact's size beside the image's (what a full-image update sends);
#   time to apply through `nuvol ctl update` (upload, check, write the other
#   slot, read it back); the trial boot into the new slot beside a plain
#   reboot of the same box in the same run; and ready → marked good (the
#   settling time, 5 s here, plus the health checks). One uncut run of
#   tests/tests/update_powercut.rs under OVMF, no test pauses.
#
#   tests/bench/update.sh [IMAGE] [NUVOL]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
image=${1:-${NUVOL_IMAGE:-$here/out/nuvol-x86_64.img}}
nuvol=${2:-${NUVOL_BIN:-$here/out/nuvol}}
log=$(mktemp "${TMPDIR:-/tmp}/nuvol-bench-update.XXXXXX")
trap 'rm -f "$log"' EXIT

cd "$here"
NUVOL_IMAGE=$image NUVOL_BIN=$nuvol NUVOL_POWERCUT_POINTS=0 NUVOL_UPDATE_PAUSE_MS=0 \
    cargo test -p nuvol-e2e --locked --test update_powercut -- --nocapture >"$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "update bench: the update run failed" >&2; exit 1; }
line=$(grep -m1 '^bench: uefi update:' "$log") || { echo "update bench: no figures in the run" >&2; exit 1; }
num() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" <<<"$line"; }
art=$(num artefact) apply=$(num apply) trial=$(num 'trial boot') good=$(num 'marked good') plain=$(num 'plain reboot')
img=$(stat -c %s "$image")
echo "== OS update (OVMF, TCG)"
awk -v a="$art" -v i="$img" 'BEGIN { printf "artefact        %7.2f MiB   %.2fx the image (%.2f MiB)\n", a/1048576, a/i, i/1048576 }'
echo "apply           ${apply} s      (nuvol ctl update: upload, check, write, read back)"
awk -v t="$trial" -v p="$plain" 'BEGIN { printf "trial boot      %7.1f s     %.2fx a plain reboot (%.1f s)\n", t, t/p, p }'
echo "ready → good    ${good} s      (settling time 5 s + health checks; 120 s on a box)"
