#!/usr/bin/env bash
# Runs the browser tests (tests/browser/run.mjs): Debian's chromium driven by
# playwright-core against a real kindercam daemon on loopback.
#
#   bash tests/browser/run.sh
#
# Installs chromium and the node dependencies when they are missing. Uses the
# binary in KINDERCAM_BIN when set; otherwise runs `cargo build` and uses
# target/debug/kindercam. A missing browser is a failure, never a skip.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

fail() {
  echo "browser: $*" >&2
  # Every test counts as failed when the suite cannot even start.
  echo "browser: 0 passed, $(grep -c 'await test(' "$here/run.mjs") failed"
  exit 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium chromium-driver)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "browser: installing ${missing[*]}"
  as_root apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "could not install ${missing[*]}"
fi
[ -x /usr/bin/chromium ] || fail "no /usr/bin/chromium"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || fail "playwright-core needs Node.js 18 or newer (Debian 12 has 18), found $(node --version)"

# Reinstall when the installed playwright-core is not the one package.json pins.
wanted="$(node -p "require('$here/package.json').dependencies['playwright-core']")"
installed="$(node -p "require('$here/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$wanted" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci failed"
fi

if [ -z "${KINDERCAM_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet) || fail "cargo build failed"
  KINDERCAM_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/kindercam"
fi
export KINDERCAM_BIN

exec node "$here/run.mjs"
