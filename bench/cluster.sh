#!/usr/bin/env bash
# The relay tier of issue 13, measured end to end (loopback only, about a minute):
# a 3-node NATS JetStream cluster, two relay kindercams on it, one camera kindercam
# (640x480 test pattern) pushing to relay 1, and N viewers on each relay.
#
#   bench/cluster.sh                  # 1000 viewers per relay, 5 s warm-up, 10 s window
#   bench/cluster.sh --viewers 200
#
# Arguments go to `kindercam-bench cluster` (see --help). Results go to
# bench/results/cluster-latest.{json,md}; the Markdown tables are also printed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
. "$root/scripts/deps.sh"
command -v nats-server >/dev/null 2>&1 || apt_install nats-server

echo "== building kindercam (release, with the cluster feature) and the bench" >&2
cargo build --release --locked --manifest-path "$root/Cargo.toml" --bin kindercam >&2
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
work="$(mktemp -d "${TMPDIR:-/tmp}/kindercam-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$CARGO_TARGET_DIR/release/kindercam" "$CARGO_TARGET_DIR/release/kindercam-bench" "$work/"

# Two relays of 1000 viewers each, their 2000 sockets, and the bench's 2000.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$here/results"
run=("$work/kindercam-bench" cluster --kindercam "$work/kindercam"
     --json "$here/results/cluster-latest.json" --markdown "$here/results/cluster-latest.md" "$@")
# Normal priority by default, unlike run.sh: here the bench, two relays, three NATS
# servers and a camera share two cores at full load, and SCHED_FIFO for all of them
# starves everything else on the machine (BENCH_SCHED=fifo to ask for it anyway).
if [ "${BENCH_SCHED:-normal}" = fifo ] && [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then
  chrt -f 10 "${run[@]}"
else
  "${run[@]}"
fi
