#!/bin/bash
# Run the end-to-end suite (crate nuvol-e2e) in parallel lanes.
#
#   tests/e2e-lanes.sh [TEST...]      (no TEST: every one)
#
# QEMU under TCG runs a one-CPU guest on about one host core, so a box
# booted beside another takes about as long as alone: with one lane per
# core, the suite takes about half the time. Tests that boot several boxes
# at once (the community testbed) already fill the cores; they run first,
# one at a time, with no lane beside them. The rest are then taken from
# one queue, longest first, by NUVOL_E2E_LANES lanes (default: the number
# of cores, at most 2).
#
# Each test binary runs as `cargo test` would run it (from tests/, one test
# thread); its output goes to out/e2e/NAME.log and is printed whole when
# it fails. Every test runs even after a failure; the exit status is 1 if
# any failed. The environment (NUVOL_IMAGE, NUVOL_BUNDLES, ...) is passed
# through unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$PWD/out/e2e
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/queue "$logs"/failed

lanes=${NUVOL_E2E_LANES:-$(nproc)}
[ "$lanes" -le 2 ] || lanes=2
[ "$lanes" -ge 1 ] || lanes=1

# Boot several boxes at once: run alone.
alone="community tahoe_grid update_peer arm64"
# The rest, longest first (as measured in CI under TCG; a test missing here
# goes last).
order="update appliance update_powercut tahoe reset armv7 panel_on_box hardening
update_stick rescue services_on_box boot make_qemu reproducible lib"

# Build once; cargo prints each test binary as
#   Executable tests/NAME.rs (PATH)  or  Executable unittests src/lib.rs (PATH)
cargo test -p nuvol-e2e --locked --no-run 2>&1 | tee "$logs/build.log"
declare -A exe=()
while IFS= read -r line; do
    case "$line" in
        *"Executable unittests src/lib.rs ("*) name=lib ;;
        *"Executable tests/"*".rs ("*) name=${line#*Executable tests/}; name=${name%%.rs *} ;;
        *) continue ;;
    esac
    path=${line##*(}; path=${path%)}
    case "$path" in /*) ;; *) path=$PWD/$path ;; esac   # cargo prints it relative to here
    exe[$name]=$path
done < "$logs/build.log"
[ ${#exe[@]} -gt 0 ] || { echo "e2e-lanes: no test binary found in cargo's output" >&2; exit 1; }

if [ $# -gt 0 ]; then
    wanted=" $* "
    for n in "${!exe[@]}"; do case "$wanted" in *" $n "*) ;; *) unset "exe[$n]" ;; esac; done
    for n in "$@"; do [ -n "${exe[$n]:-}" ] || { echo "e2e-lanes: no test named $n" >&2; exit 2; }; done
fi

t_suite=$(date +%s)
# run NAME LANE: one test binary; records a failure in $logs/failed.
run() {
    local name=$1 lane=$2 t0 rc=0
    t0=$(date +%s)
    echo "e2e: $name started (lane $lane)"
    (cd tests && "${exe[$name]}" --test-threads=1) > "$logs/$name.log" 2>&1 || rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ $rc = 0 ]; then
        echo "e2e: $name ok in ${took} s ($(grep -h '^test result:' "$logs/$name.log" | tail -n 1 \
            | grep -o '[0-9]* passed; [0-9]* failed; [0-9]* ignored'))"
    else
        # One writer at a time, so two failures do not interleave.
        {
            flock 9
            echo "e2e: $name FAILED in ${took} s (exit $rc); its output:"
            sed 's/^/    /' "$logs/$name.log"
            echo "$name" >> "$logs/failed"
        } 9>"$logs/.print.lock"
    fi
}

# 1. alone
n_alone=0
for n in $alone; do
    if [ -n "${exe[$n]:-}" ]; then run "$n" 0; n_alone=$((n_alone + 1)); fi
done

# 2. the queue
queue=()
for n in $order; do
    case " $alone " in *" $n "*) continue ;; esac
    if [ -n "${exe[$n]:-}" ]; then queue+=("$n"); fi
done
for n in "${!exe[@]}"; do
    case " $alone $order " in *" $n "*) ;; *) queue+=("$n") ;; esac
done
printf '%s\n' "${queue[@]}" > "$logs/queue"
# next: take the queue's first line, under a lock.
next() {
    {
        flock 9
        local n
        n=$(head -n 1 "$logs/queue")
        sed -i 1d "$logs/queue"
        echo "$n"
    } 9>"$logs/.queue.lock"
}
lane() {
    local n
    while n=$(next) && [ -n "$n" ]; do run "$n" "$1"; done
}
echo "e2e: ${#queue[@]} tests in $lanes lanes after $n_alone alone"
pids=()
for l in $(seq 1 "$lanes"); do lane "$l" & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done

echo "e2e: whole suite in $(( $(date +%s) - t_suite )) s"
if [ -s "$logs/failed" ]; then
    echo "e2e: FAILED: $(tr '\n' ' ' < "$logs/failed")" >&2
    exit 1
fi
