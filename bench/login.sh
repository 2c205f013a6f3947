#!/usr/bin/env bash
# Logins and WebSocket handshakes with 200 families and 30 days of viewing log,
# against a binary from before families (issue 9). Loopback only; about 2-3
# minutes with the defaults (5 rounds of 2000 operations per phase).
#
#   bench/login.sh OLD_KINDERCAM [kindercam-bench login flags...]
#
# OLD_KINDERCAM is the release binary to compare with, e.g. built from 9e7bfd9:
#   git worktree add /tmp/kc-old 9e7bfd9 && (cd /tmp/kc-old && cargo build --release)
#   bench/login.sh /tmp/kc-old/target/release/kindercam
#
# Three setups run alternately: "before" (OLD_KINDERCAM, fresh state), "now-empty"
# (this checkout, fresh state) and "now-200" (this checkout, started on a state
# directory filled by bench/examples/fill_state.rs). Results go to
# bench/results/login.{json,md}; the Markdown tables are also printed.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -x "$1" ]; then
    echo "usage: bench/login.sh OLD_KINDERCAM [kindercam-bench login flags...]" >&2
    exit 2
fi
old="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

echo "== building kindercam (release)" >&2
cargo build --release --locked --manifest-path "$root/Cargo.toml" --bin kindercam >&2
echo "== building kindercam-bench (release) and the state filler" >&2
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
# The filler runs once and its speed is not measured: the dev profile builds faster.
cargo build --locked --manifest-path "$here/Cargo.toml" --example fill_state >&2

# Private copies, so a rebuild in the shared target dir cannot swap a binary mid-run.
work="$(mktemp -d "${TMPDIR:-/tmp}/kindercam-bench-login.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$CARGO_TARGET_DIR/release/kindercam" "$work/kindercam-now"
cp "$old" "$work/kindercam-before"
cp "$CARGO_TARGET_DIR/release/kindercam-bench" "$work/"

echo "== filling a state directory: 200 families, 30 days of viewing log" >&2
"$CARGO_TARGET_DIR/debug/examples/fill_state" "$work/fill"

# Scheduling as in run.sh (BENCH_SCHED=fifo|nice|normal, default fifo when root).
sched="${BENCH_SCHED:-fifo}"
run=()
case "$sched" in
    fifo) run=(chrt -f 10) ;;
    nice) run=(nice -n -10) ;;
    normal) ;;
    *) echo "BENCH_SCHED must be fifo, nice or normal" >&2; exit 2 ;;
esac
if [ ${#run[@]} -gt 0 ] && ! "${run[@]}" true 2>/dev/null; then
    echo "== cannot run as '${run[*]}' (not root?); running at normal priority" >&2
    run=()
fi

mkdir -p "$here/results"
echo "== scheduling: ${run[*]:-normal}; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"${run[@]}" "$work/kindercam-bench" login \
    --setup "before=$work/kindercam-before" \
    --setup "now-empty=$work/kindercam-now" \
    --setup "now-200=$work/kindercam-now,$work/fill" \
    --json "$here/results/login.json" --markdown "$here/results/login.md" "$@"
