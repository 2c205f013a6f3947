# shellcheck shell=bash
# Sourced by scripts/cross-build and scripts/test-cross: `cross_setup TARGET` installs
# what a Docker-free cross build needs when it is missing and exports the environment
# cargo, cc, cmake and bindgen read. A second call installs nothing.
#
# The toolchain is Debian's: rustc-web 1.85 (our MSRV) as compiler, the target's Rust
# std unpacked from Debian's libstd-rust-web-dev:ARCH, gcc-TRIPLE as C compiler and
# linker. Set RUSTC to use another compiler that already has the target's std (rustup's).
# Sets: debarch (arm64, armhf, amd64), gnu (the GNU triple; empty for a native build).

RUST_DEB_VERSION=1.85.0+dfsg3-1~deb12u3

cross_say() { echo "cross: $*" >&2; }

cross_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_cross_apt_updated=
_cross_apt_update_once() {
    [ -n "$_cross_apt_updated" ] && return 0
    _cross_apt_updated=1
    # A mirror mid-sync makes some index fail to download; apt keeps the old one, which
    # is good enough for the pinned packages, so this is not fatal.
    cross_as_root apt-get update -qq >/dev/null 2>&1 || cross_say "apt-get update reported errors; going on"
}

# `pkg` or `pkg=version`: true when installed (at that version).
_cross_installed() {
    local name=${1%%=*} want='' got
    [ "$name" != "$1" ] && want=${1#*=}
    got=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$name" 2>/dev/null) || return 1
    case $got in ii*) ;; *) return 1 ;; esac
    [ -z "$want" ] || [ "${got:3}" = "$want" ]
}

cross_ensure_packages() {
    local missing=() p
    for p in "$@"; do _cross_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$debarch" != "$(dpkg --print-architecture)" ] &&
        ! dpkg --print-foreign-architectures | grep -qx "$debarch"; then
        cross_as_root dpkg --add-architecture "$debarch"
        _cross_apt_updated=
    fi
    cross_say "installing ${missing[*]}"
    _cross_apt_update_once
    cross_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        --allow-downgrades "${missing[@]}" >/dev/null
}

cross_setup() {
    local target=$1
    case $target in
        aarch64-unknown-linux-gnu) debarch=arm64 gnu=aarch64-linux-gnu ;;
        armv7-unknown-linux-gnueabihf) debarch=armhf gnu=arm-linux-gnueabihf ;;
        x86_64-unknown-linux-gnu) debarch=amd64 gnu= ;;
        *)
            cross_say "unsupported target $target: use aarch64-unknown-linux-gnu," \
                "armv7-unknown-linux-gnueabihf or x86_64-unknown-linux-gnu"
            return 2
            ;;
    esac

    # Host tools every target needs: turbojpeg-sys builds libjpeg-turbo with cmake;
    # bindgen (the V4L2 bindings) needs libclang; nasm assembles the x86 SIMD code.
    local host_packages=(cmake libclang-dev clang pkg-config)
    [ "$debarch" = amd64 ] && host_packages+=(nasm)
    if [ "$debarch" = amd64 ] && [ "$(uname -m)" = x86_64 ]; then
        cross_ensure_packages "${host_packages[@]}"
        return 0
    fi
    # lld: see the aarch64 link flags below.
    [ "$debarch" = arm64 ] && host_packages+=(lld-16)
    cross_ensure_packages "${host_packages[@]}" "gcc-$gnu" "g++-$gnu" \
        "libc6-dev-$debarch-cross" "linux-libc-dev-$debarch-cross"

    if [ -z "${RUSTC:-}" ]; then
        cross_ensure_packages "rustc-web=$RUST_DEB_VERSION" "libstd-rust-web-dev=$RUST_DEB_VERSION"
        command -v cargo >/dev/null || cross_ensure_packages "cargo-web=$RUST_DEB_VERSION"
        export RUSTC=/usr/bin/rustc
        # The target's std must come from the very same rustc build. Its rlibs are
        # enough: Rust links std statically, so the package's own dependencies (the std
        # .so, an arm libc) are not needed on the build machine.
        local stamp=/usr/lib/rustlib/$target/kindercam-std-version
        if [ "$(cat "$stamp" 2>/dev/null)" != "$RUST_DEB_VERSION" ]; then
            cross_say "unpacking the Rust std for $target ($RUST_DEB_VERSION)"
            _cross_apt_update_once
            local tmp
            tmp=$(mktemp -d)
            (cd "$tmp" && apt-get download -qq "libstd-rust-web-dev:$debarch=$RUST_DEB_VERSION" 2>/dev/null)
            dpkg-deb -x "$tmp"/libstd-rust-web-dev_*.deb "$tmp/root"
            cross_as_root rm -rf "/usr/lib/rustlib/$target"
            cross_as_root cp -a "$tmp/root/usr/lib/rustlib/$target" /usr/lib/rustlib/
            echo "$RUST_DEB_VERSION" | cross_as_root tee "$stamp" >/dev/null
            rm -rf "$tmp"
        fi
    fi

    local t=${target//-/_}
    local T=${t^^}
    export "CARGO_TARGET_${T}_LINKER=$gnu-gcc"
    export "CC_$t=$gnu-gcc" "CXX_$t=$gnu-g++" "AR_$t=$gnu-ar"
    # bindgen parses C headers with libclang: the target's headers, not the host's.
    export "BINDGEN_EXTRA_CLANG_ARGS_$t=--sysroot=/usr/$gnu"
    # libjpeg-turbo (turbojpeg-sys) is configured by the cmake crate, which sets
    # CMAKE_SYSTEM_NAME=Linux and CMAKE_SYSTEM_PROCESSOR=aarch64/arm from the target when
    # cross compiling, so libjpeg-turbo builds its NEON code (never the x86 nasm code)
    # with the CC_ compiler above. pkg-config must not offer the build machine's libraries.
    export "PKG_CONFIG_PATH_$t=" "PKG_CONFIG_LIBDIR_$t=/usr/lib/$gnu/pkgconfig:/usr/share/pkgconfig"
    export "PKG_CONFIG_SYSROOT_DIR_$t=/"
    export PKG_CONFIG_ALLOW_CROSS=1
    if [ "$debarch" = arm64 ]; then
        # A position-independent binary carries a relocation for every pointer in its
        # data; packed (DT_RELR, glibc 2.36, Bookworm) they take about 5 KB instead of
        # 280 KB, which the 6 MiB bound needs (BENCHMARKS.md, "Binary size"). GNU ld
        # 2.40 cannot pack them on arm64, so the cross gcc links with lld.
        local flags="-C link-arg=-B/usr/lib/llvm-16/bin -C link-arg=-fuse-ld=lld"
        flags+=" -C link-arg=-Wl,-z,pack-relative-relocs"
        local var="CARGO_TARGET_${T}_RUSTFLAGS"
        case ${!var:-} in
            *"$flags"*) ;; # a second call
            *) export "$var=${!var:+${!var} }$flags" ;;
        esac
    fi
}

# The ELF machine name readelf reports for binaries of $debarch.
cross_machine() {
    case $debarch in
        arm64) echo AArch64 ;;
        armhf) echo ARM ;;
        amd64) echo "Advanced Micro Devices X86-64" ;;
    esac
}
