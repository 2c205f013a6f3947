#!/bin/sh
# Builds the test VM: Debian's stock kernel (downloaded once with apt-get
# download, then cached) and a busybox initramfs holding vivid, virtio-net,
# v4l2-ctl and the kindercam binary given as $1, each with the libraries ldd
# lists. Output: $OUT/vmlinuz and $OUT/initrd.gz.
#
# Needs (Debian): qemu-system-x86 busybox-static v4l-utils cpio kmod.
# Env: OUT (default target/vm), KINDERCAM_VM_CACHE (kernel cache, default
# ~/.cache/kindercam-vm), K (kernel version, default: what linux-image-amd64 depends on).
set -eu
BIN=${1:?usage: build-image.sh path/to/kindercam}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-target/vm}
CACHE=${KINDERCAM_VM_CACHE:-$HOME/.cache/kindercam-vm}
mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

for tool in busybox v4l2-ctl cpio depmod modprobe qemu-system-x86_64; do
  command -v $tool >/dev/null || {
    echo "build-image: $tool missing; apt-get install qemu-system-x86 busybox-static v4l-utils cpio kmod" >&2
    exit 2
  }
done
if ldd /bin/busybox >/dev/null 2>&1; then
  echo "build-image: /bin/busybox is dynamically linked; install busybox-static" >&2
  exit 2
fi

# The kernel: the version Debian's meta package points at, or the newest cached.
if [ -z "${K:-}" ]; then
  K=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{sub("linux-image-","",$2); print $2; exit}')
fi
if [ -z "${K:-}" ]; then
  K=$(ls "$CACHE" 2>/dev/null | sed -n 's/^linux-image-\(.*\)_.*_amd64\.deb$/\1/p' | sort -V | tail -1)
fi
[ -n "$K" ] || { echo "build-image: cannot tell the kernel version (run apt-get update)" >&2; exit 2; }
if ! ls "$CACHE"/linux-image-${K}_*.deb >/dev/null 2>&1; then
  echo "build-image: downloading linux-image-$K (once, into $CACHE)"
  (cd "$CACHE" && apt-get download "linux-image-$K" >/dev/null)
fi
if [ ! -d "$CACHE/kroot-$K" ]; then
  rm -rf "$CACHE/kroot-$K.tmp"
  dpkg -x "$CACHE"/linux-image-${K}_*.deb "$CACHE/kroot-$K.tmp"
  depmod -b "$CACHE/kroot-$K.tmp" "$K"
  mv "$CACHE/kroot-$K.tmp" "$CACHE/kroot-$K"
fi
KROOT=$CACHE/kroot-$K
cp "$KROOT/boot/vmlinuz-$K" "$OUT/vmlinuz"

R=$OUT/rootfs
rm -rf "$R"
mkdir -p "$R/bin" "$R/dev" "$R/proc" "$R/sys" "$R/tmp" "$R/mods" "$R/usr/bin" "$R/www"
cp /bin/busybox "$R/bin/busybox"
copy_with_libs() {
  cp "$1" "$R/usr/bin/"
  for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done
}
copy_with_libs "$(command -v v4l2-ctl)"
copy_with_libs "$BIN"
[ "$(basename "$BIN")" = kindercam ] || mv "$R/usr/bin/$(basename "$BIN")" "$R/usr/bin/kindercam"
# Debug info is useless in the guest and slows the emulated boot.
strip "$R/usr/bin/kindercam" 2>/dev/null || true

for m in vivid virtio_pci virtio_net; do
  modprobe -d "$KROOT" -S "$K" --show-depends $m
done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' > "$OUT/modlist.txt"
: > "$R/mods/order"
while read -r f; do
  cp "$f" "$R/mods/"
  basename "$f" >> "$R/mods/order"
done < "$OUT/modlist.txt"

mknod "$R/dev/console" c 5 1
mknod "$R/dev/null" c 1 3
cp "$HERE/init.sh" "$R/init"
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT/initrd.gz")
echo "build-image: kernel $K, initrd $(du -k "$OUT/initrd.gz" | cut -f1) KiB"
