#!/usr/bin/env bash
# Issue 11's side-by-side run: kindercam, the Node.js relay (../shared/peers/node-ws-relay) and the
# physical floor (bench/src/bin/floor.rs: one thread, one writev per viewer and frame, nothing else),
# alternating case by case in one sitting so that the shared machine's noise hits all three alike;
# then kindercam's MJPEG-over-HTTP fan-out beside its WebSocket one.
#
#   bench/fanout.sh                 # 100, 500, 2000 viewers, text and binary; 2 rounds; then MJPEG
#   ROUNDS=1 CASES="upload-text:500" bench/fanout.sh
#   SPLICE_FLOOR=1 bench/fanout.sh  # also the floor with FLOOR_SPLICE=1 (tee+splice, no copy per viewer)
#
# The Node relay needs a writable copy with its dependencies (CI's shared/ is read-only):
#   cp -r ../shared/peers/node-ws-relay /tmp/ && (cd /tmp/node-ws-relay && npm install)
# Results: bench/results/fanout-*.json and .md (one file per server, case list and round).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
node_relay="${NODE_RELAY:-/tmp/node-ws-relay/relay.js}"
rounds="${ROUNDS:-2}"
cases="${CASES:-upload-text:100,500,2000;upload-binary:100,500,2000}"
mjpeg_cases="${MJPEG_CASES:-upload-binary:100,500;upload-mjpeg:100,500}"
window="${WINDOW_S:-10}"

cargo build --release --locked --manifest-path "$root/Cargo.toml" --bin kindercam >&2
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
work="$(mktemp -d "${TMPDIR:-/tmp}/kindercam-fanout.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$root/target/release/kindercam" "$here/target/release/kindercam-bench" \
   "$here/target/release/kindercam-floor" "$work/"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
run=(chrt -f 10)
"${run[@]}" true 2>/dev/null || run=()
mkdir -p "$here/results"
one() { # server-label binary cases tag
    "${run[@]}" "$work/kindercam-bench" --kindercam "$2" --cases "$3" --window-s "$window" --warmup-s 3 \
        --json "$here/results/fanout-$4-$1.json" --markdown "$here/results/fanout-$4-$1.md" >&2
}
for r in $(seq 1 "$rounds"); do
    IFS=';' read -ra list <<<"$cases"
    for c in "${list[@]}"; do
        kind="${c%%:*}"; IFS=',' read -ra ns <<<"${c#*:}"
        for n in "${ns[@]}"; do
            tag="$kind-$n-r$r"
            one kindercam "$work/kindercam" "$kind:$n" "$tag"
            [ -e "$node_relay" ] && one node "$node_relay" "$kind:$n" "$tag"
            one floor "$work/kindercam-floor" "$kind:$n" "$tag"
            if [ "${SPLICE_FLOOR:-0}" = 1 ]; then
                (export FLOOR_SPLICE=1; one floor-splice "$work/kindercam-floor" "$kind:$n" "$tag")
            fi
        done
    done
done
one kindercam "$work/kindercam" "$mjpeg_cases" "mjpeg"
echo "results in $here/results/fanout-*" >&2
