#!/bin/sh
# Short fuzz run of every target (default 20 s each; `make test` passes 5,
# `make test-full` 60).
#   fuzz/run-short.sh [SECONDS]
# Installs what it needs (nightly toolchain, cargo-fuzz) only if missing.
# New inputs go to a temporary directory; the committed seed corpus under
# fuzz/corpus/ is read, never modified. Crashes land in fuzz/artifacts/.
set -eu
SECS=${1:-20}
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HERE/target}"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/nuvol-fuzz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
for t in bundle_head update_head manifest key_files mdns_packet gossip_packet gossip_stream gossip_keys gossip_lzw cloudy_tag; do
    mkdir -p "$TMP/$t"
    echo "== fuzz $t for ${SECS}s"
    if ! cargo +nightly fuzz run "$t" "$TMP/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -max_len=70000 -rss_limit_mb=1024 -print_final_stats=1 \
        >"$TMP/$t.log" 2>&1; then
        tail -n 40 "$TMP/$t.log" >&2
        echo "fuzz $t: FAILED (crash inputs, if any, are in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$TMP/$t.log" || true
done
