# Sourced by the other scripts: installs what building kindercam needs, only when
# it is missing, so a fresh Debian or Ubuntu machine needs no manual set-up.
#   - a Rust toolchain with cargo (rustup's if present, else Debian's cargo-web)
#   - libclang (bindgen, for the v4l crate), cmake and nasm (libjpeg-turbo), a C compiler

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    echo "deps: installing $*" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_pkg() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

ensure_build_deps() {
    local missing=()
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    # cargo fetches crates over HTTPS; minimal images lack the CA bundle
    # (curl only recommends it, and we install without recommends).
    [ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
    case "$(uname -m)" in x86_64|i?86) command -v nasm >/dev/null 2>&1 || missing+=(nasm) ;; esac
    # libclang itself, as bindgen looks for it: libclang-cpp (which some images
    # carry alone) does not count.
    if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
            /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1; then
        missing+=(libclang-dev)
    fi
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
    ensure_cargo
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        # Debian 12 ships a current Rust for its browsers as cargo-web/rustc-web.
        if apt-cache show cargo-web >/dev/null 2>&1 || { as_root apt-get update -qq && apt_updated=1; apt-cache show cargo-web >/dev/null 2>&1; }; then
            apt_install cargo-web
        else
            apt_install cargo
        fi
    fi
    local v
    v=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n1.85.0\n' "$v" | sort -V | head -1)" != "1.85.0" ]; then
        echo "deps: rustc $v is older than 1.85; install a newer Rust (e.g. rustup) and retry" >&2
        exit 1
    fi
}
