#!/bin/sh
# The V4L2 test against a real driver: boots Debian's kernel in QEMU with the
# vivid virtual camera driver and kindercam inside, then runs the host-side
# scenarios of tests/vm/client.py through forwarded loopback ports.
# Ends with the line `vm: N passed, M failed`; exit status 0 only if all passed.
#
#   tests/vm/run.sh                 build (release, baseline x86-64), boot, test
#   KINDERCAM_BIN=path tests/vm/run.sh   use an existing binary
#   VM_ONLY=unplug tests/vm/run.sh  run only scenarios whose name contains "unplug"
#
# Needs: qemu-system-x86 busybox-static v4l-utils cpio kmod python3 (Debian), and
# the kernel package, fetched once with apt-get download (see build-image.sh).
# Bounded: QEMU is killed after VM_LIMIT seconds (default 240) whatever happens.
set -eu
cd "$(dirname "$0")/../.."
OUT=${OUT:-target/vm}
LIMIT=${VM_LIMIT:-240}
mkdir -p "$OUT"

if [ -z "${KINDERCAM_BIN:-}" ]; then
  # Never target-cpu=native: the emulated CPU, like a Pi, lacks this machine's extensions.
  env -u RUSTFLAGS cargo build --release --bin kindercam
  KINDERCAM_BIN=target/release/kindercam
fi
OUT=$OUT sh tests/vm/build-image.sh "$KINDERCAM_BIN"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); WS=$(free_port); CTL=$(free_port)
ACCEL=tcg
# KVM where it can run this kernel (not on every CI host); TCG otherwise.
[ "${VM_KVM:-0}" = 1 ] && [ -w /dev/kvm ] && ACCEL=kvm

CONSOLE=$OUT/console.log
started=$(date +%s)
timeout -k 5 "$LIMIT" qemu-system-x86_64 -accel $ACCEL -m 512 -smp 1 -nographic -no-reboot \
  -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 VM_TIMEOUT=$((LIMIT - 10)) KC_LOG=${KC_LOG:-info}" \
  -netdev "user,id=n,hostfwd=tcp:127.0.0.1:$HTTP-:8080,hostfwd=tcp:127.0.0.1:$WS-:9000,hostfwd=tcp:127.0.0.1:$CTL-:8081" \
  -device virtio-net-pci,netdev=n > "$CONSOLE" 2>&1 &
QEMU=$!
trap 'kill $QEMU 2>/dev/null || true' EXIT INT TERM

status=0
timeout -k 5 "$LIMIT" python3 tests/vm/client.py "$HTTP" "$WS" "$CTL" > "$OUT/client.log" 2>&1 || status=$?
cat "$OUT/client.log"
# The client powered the guest off; give QEMU a bounded moment to write the log.
timeout 30 sh -c "while kill -0 $QEMU 2>/dev/null; do sleep 0.2; done" || kill $QEMU 2>/dev/null || true
wait $QEMU 2>/dev/null || true
echo "vm: total $(( $(date +%s) - started ))s; guest console in $CONSOLE"
if [ $status -ne 0 ]; then
  echo "---- guest console (last 60 lines) ----"
  tail -n 60 "$CONSOLE" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g'
fi
# The summary again, as the last line, for whoever reads only that.
grep '^vm: [0-9]* passed' "$OUT/client.log" | tail -1 || echo "vm: 0 passed, 1 failed"
exit $status
