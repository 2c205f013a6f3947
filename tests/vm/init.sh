#!/bin/busybox sh
# /init of the test VM: loads vivid (two virtual cameras) and virtio-net, starts
# kindercam on the first camera (stream "camera", YUYV 640x480) and the second
# (stream "hall", NV12 320x180, by a /dev/v4l/by-id link), from a TOML file,
# and serves a small control API for the host-side test (tests/vm/client.py):
#   GET :8081/cgi-bin/ctl?unplug           v4l2-ctl -c disconnect=1 on /dev/video0
#   GET :8081/cgi-bin/ctl?streamon-error   inject a failing VIDIOC_STREAMON
#   GET :8081/cgi-bin/ctl?drop=100         vivid drops every buffer (a stuck camera)
#   GET :8081/cgi-bin/ctl?list             kindercam --list-devices
#   GET :8081/cgi-bin/ctl?holders          how many handles kindercam has on /dev/video*
#   GET :8081/cgi-bin/ctl?pid              kindercam's pid (to prove it never restarted)
#   GET :8081/cgi-bin/ctl?poweroff         print kindercam's log to the console and stop
# Every step the test waits for is an event it can observe; nothing here sleeps to
# give something time, except the watchdog that powers off after VM_TIMEOUT.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo "=== GUEST: up at $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"
for m in $(cat /mods/order); do
  case $m in
    # Instance 0: capture + output node (the output one must be refused by
    # --list-devices); instance 1: capture only, the second camera.
    vivid.ko) insmod /mods/$m n_devs=2 node_types=0x101,0x1 || echo "insmod $m FAILED";;
    *) insmod /mods/$m || echo "insmod $m FAILED";;
  esac
done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
# The host's test has a hard limit too; this one only makes sure the VM never lingers.
( sleep "${VM_TIMEOUT:-150}"; echo "=== GUEST: VM_TIMEOUT reached"; poweroff -f ) &

# The second camera is whichever capture node vivid instance 1 got.
HALL=
for d in /sys/class/video4linux/video*; do
  n=${d##*/}
  if grep -q vivid-001 "$d/device/uevent" 2>/dev/null || [ "$(cat $d/name 2>/dev/null)" = "vivid-001-vid-cap" ]; then HALL=/dev/$n; fi
done
echo "=== GUEST: nodes: $(ls /dev/video* | tr '\n' ' ') second camera: ${HALL:-none}"

mkdir -p /tmp/state /www/cgi-bin
cat > /www/cgi-bin/ctl <<'EOF'
#!/bin/sh
echo "Content-Type: text/plain"
echo
case "$QUERY_STRING" in
  unplug) v4l2-ctl -d /dev/video0 -c disconnect=1 2>&1; echo "rc=$?";;
  streamon-error) v4l2-ctl -d /dev/video0 -c inject_vidioc_streamon_error=1 2>&1; echo "rc=$?";;
  # vivid's "Percentage of Dropped Buffers": at 100 the camera stays open but
  # delivers nothing, like a stuck driver.
  drop=*) v4l2-ctl -d /dev/video0 -c percentage_of_dropped_buffers=${QUERY_STRING#drop=} 2>&1; echo "rc=$?";;
  ctrls) v4l2-ctl -d /dev/video0 -l 2>&1;;
  list) /usr/bin/kindercam --list-devices 2>&1; echo "rc=$?";;
  holders) p=$(pidof kindercam); n=0
    for f in /proc/$p/fd/*; do case "$(readlink $f)" in /dev/video*) n=$((n+1));; esac; done
    echo "$n";;
  pid) pidof kindercam;;
  log) tail -n 40 /tmp/kc.log;;
  poweroff) touch /tmp/poweroff; echo bye;;
  *) echo "unknown: $QUERY_STRING";;
esac
EOF
chmod +x /www/cgi-bin/ctl
httpd -p 8081 -h /www

# A stable name for the second camera, as udev would make it (there is no udev
# here): kindercam must accept it and --list-devices must suggest it.
mkdir -p /dev/v4l/by-id
[ -n "$HALL" ] && ln -s "../../${HALL#/dev/}" /dev/v4l/by-id/platform-vivid-001-video-index0
# Cameras from the TOML file: the first by node, the second by its by-id link with
# its own format and size (NV12 at 320x180 exercises another encode path) and a
# privacy mask, burned into its NV12 planes before the encode.
cat > /tmp/kindercam.toml <<TOML
source = "/dev/video0"
width = 640
height = 480
interval_ms = ${KC_INTERVAL:-200}

[[camera]]
name = "hall"
source = "/dev/v4l/by-id/platform-vivid-001-video-index0"
format = "nv12"
width = 320
height = 180
masks = [{x = 0.25, y = 0.25, w = 0.5, h = 0.5}]
TOML
KINDERCAM_LOG=${KC_LOG:-info} /usr/bin/kindercam --config /tmp/kindercam.toml \
  --http-listen 0.0.0.0:8080 --ws-listen 0.0.0.0:9000 --state-dir /tmp/state \
  --viewer-code vm-viewer-code --staff-code vm-staff-code \
  > /tmp/kc.log 2>&1 &
echo "=== GUEST READY: kindercam pid $! at $(cut -d' ' -f1 /proc/uptime)s"

while [ ! -e /tmp/poweroff ]; do
  if ! pidof kindercam >/dev/null; then echo "=== GUEST: kindercam exited"; break; fi
  sleep 0.2
done
echo "=== GUEST: kindercam log"
sed 's/^/[kindercam] /' /tmp/kc.log
echo "=== GUEST DONE at $(cut -d' ' -f1 /proc/uptime)s"
poweroff -f
