#!/usr/bin/env python3
"""Host side of the VM test: talks to kindercam in the guest through QEMU's
forwarded ports, drives the guest's control API (tests/vm/init.sh), and checks
what a viewer would notice. Standard library only: a minimal WebSocket client
is included. Every wait has a deadline; the last line is `vm: N passed, M failed`.

usage: client.py HTTP_PORT WS_PORT CTL_PORT
"""

import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"
AUTH = "Basic " + base64.b64encode(b"vm:vm-viewer-code").decode()
WIDTH, HEIGHT = 640, 480


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


# ---------------------------------------------------------------- helpers

def ctl(port, command, timeout=20):
    url = f"http://{HOST}:{port}/cgi-bin/ctl?{command}"
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode(errors="replace").strip()


def http_get(port, path, timeout=10):
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", headers={"Authorization": AUTH})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def jpeg_size(data):
    """(width, height) from the SOF segment, after checking SOI and EOI."""
    check(data[:2] == b"\xff\xd8", "frame starts with SOI")
    check(data.rstrip(b"\x00")[-2:] == b"\xff\xd9", "frame ends with EOI")
    pos = 2
    while pos + 4 <= len(data):
        check(data[pos] == 0xFF, f"marker at {pos}")
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            return w, h
        if marker == 0xDA:
            break
        pos += 2 + length
    raise Failure("no SOF segment in frame")


def has_dht(data):
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xC4:
            return True
        if marker == 0xDA:
            return False
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return False


def wait_until(what, deadline_s, probe, every=0.2):
    """Polls `probe` (an observation, not a guess) until it returns a truthy value."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        try:
            last = probe()
            if last:
                return last
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(every)
    raise Failure(f"timed out after {deadline_s}s waiting for {what} (last: {last!r})")


class Ws:
    """A minimal RFC 6455 client: enough to read kindercam's /video streams."""

    def __init__(self, port, path, timeout=10):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {AUTH}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            check(chunk, f"handshake for {path}: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode()
        check(" 101 " in status, f"handshake for {path}: {status}")

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout):
        """Next (opcode, payload), or None when nothing came within `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                b0, b1 = self._read(2, deadline)
                opcode, n = b0 & 0x0F, b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2, deadline))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8, deadline))[0]
                payload = self._read(n, deadline)
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode == 0x8:
                    raise Failure(f"server closed the socket: {payload[2:].decode(errors='replace')}")
                return opcode, payload
        except socket.timeout:
            return None

    def _send(self, opcode, payload):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode, 0x80 | len(payload)]) + mask
        self.sock.sendall(head + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self):
        try:
            self._send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


def next_message(ws, what, timeout):
    got = ws.recv(timeout)
    if got is None:
        raise Failure(f"no message within {timeout}s while waiting for {what}")
    opcode, payload = got
    if opcode == 0x1:
        return "status", json.loads(payload)
    return "frame", payload


def wait_status(ws, state, timeout, contains=None):
    """Reads until a status message with `state`; returns (status, frames seen before it)."""
    end = time.monotonic() + timeout
    frames = []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise Failure(f"no {state!r} status within {timeout}s")
        kind, msg = next_message(ws, f"status {state}", left)
        if kind == "frame":
            frames.append(msg)
            continue
        check(msg.get("type") == "status", f"status message: {msg}")
        if msg.get("state") == state:
            if contains:
                check(contains in msg.get("message", ""), f"{contains!r} in status {msg}")
            return msg, frames


def camera_frames(ws, count, timeout, size=(WIDTH, HEIGHT)):
    """`count` frames of the camera's size, with the time each arrived."""
    out = []
    end = time.monotonic() + timeout
    while len(out) < count:
        left = end - time.monotonic()
        if left <= 0:
            raise Failure(f"only {len(out)} of {count} frames within {timeout}s")
        kind, msg = next_message(ws, "a frame", left)
        if kind == "status":
            # "waiting" comes before the first frame of a camera that was idle.
            allowed = ("live", "waiting") if not out else ("live",)
            check(msg.get("state") in allowed, f"unexpected status while live: {msg}")
            continue
        check(jpeg_size(msg) == size, f"frame size {jpeg_size(msg)}, expected {size}")
        out.append((time.monotonic(), msg))
    return out


# ---------------------------------------------------------------- scenarios

def s_list_devices(p):
    out = ctl(p["ctl"], "list")
    if os.environ.get("VM_VERBOSE"):
        print(out)
    for needle in ("/dev/video0", "vivid", "YUYV", "640x480", "fps"):
        check(needle in out, f"--list-devices mentions {needle!r}:\n{out}")
    check("video output, not a camera" in out, f"the output node is refused clearly:\n{out}")
    check("use: --source /dev/v4l/by-id/platform-vivid-001-video-index0" in out,
          f"the stable by-id name is suggested:\n{out}")
    check(out.rstrip().endswith("rc=0"), f"--list-devices exits 0:\n{out}")


def s_idle_closed(p):
    check(ctl(p["ctl"], "holders") == "0", "camera closed while nobody watches (on demand)")


def s_streamon_error(p):
    out = ctl(p["ctl"], "streamon-error")
    check(out.endswith("rc=0"), f"error injected: {out}")
    ws = Ws(p["ws"], "/video?format=binary")
    p["viewer"] = ws
    # Documented handling: the viewer is told the camera is offline with the
    # driver's error and sees the placeholder; kindercam reopens the camera after
    # a short pause, and the live picture follows without any restart.
    status, _ = wait_status(ws, "offline", 20, contains="start streaming")
    kind, placeholder = next_message(ws, "the offline placeholder", 10)
    check(kind == "frame" and jpeg_size(placeholder) == (WIDTH, HEIGHT), "placeholder picture shown")
    wait_status(ws, "live", 20)
    camera_frames(ws, 2, 10)


def s_stream(p):
    ws = p["viewer"]
    check(int(ctl(p["ctl"], "holders")) >= 1, "camera open while watched")
    frames = camera_frames(ws, 8, 20)
    pictures = [f for _, f in frames]
    check(len(set(pictures)) >= 4, "the picture is live (frames differ)")
    check(all(has_dht(f) for f in pictures), "every frame carries Huffman tables")
    gaps = sorted(b[0] - a[0] for a, b in zip(frames, frames[1:]))
    median = gaps[len(gaps) // 2]
    check(0.1 <= median <= 0.6, f"about one frame per --interval-ms 200 (median gap {median:.3f}s)")
    status, ctype, body = http_get(p["http"], "/snapshot.jpg")
    check(status == 200 and ctype.startswith("image/jpeg"), f"snapshot: {status} {ctype}")
    check(jpeg_size(body) == (WIDTH, HEIGHT), "snapshot size")


HALL_SIZE = (320, 180)


def s_second_camera(p):
    ws = Ws(p["ws"], "/video/hall?format=binary")
    try:
        frames = camera_frames(ws, 3, 20, size=HALL_SIZE)
        check(len({f for _, f in frames}) >= 2, "the second camera is live too")
    finally:
        ws.close()


# The hall camera's privacy mask in init.sh, x 0.25-0.75 by y 0.25-0.75, in
# pixels rounded outward to the encoder's 16x16 MCUs at 320x180.
HALL_MASK = (80, 32, 240, 144)


def luma(jpeg):
    """The Y plane of a 4:2:0 JPEG as kindercam encodes it, decoded by the host's
    ffmpeg (without conversion: full-range YUV out, as it is in the file)."""
    import subprocess
    try:
        out = subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-f", "mjpeg", "-i", "-",
             "-f", "rawvideo", "-pix_fmt", "yuvj420p", "-"],
            input=jpeg, capture_output=True, timeout=20, check=True).stdout
    except FileNotFoundError:
        raise Failure("ffmpeg is needed on the host to decode the masked frames")
    w, h = jpeg_size(jpeg)
    check(len(out) >= w * h, f"ffmpeg decoded {len(out)} bytes")
    return out[:w * h], w


def s_masked(p):
    ws = Ws(p["ws"], "/video/hall?format=binary")
    try:
        frames = camera_frames(ws, 3, 20, size=HALL_SIZE)
    finally:
        ws.close()
    x0, y0, x1, y1 = HALL_MASK
    outside = []
    for _, frame in frames:
        y, w = luma(frame)
        inside = [y[row * w + x0:row * w + x1] for row in range(y0, y1)]
        bright = max(max(r) for r in inside)
        check(bright == 0, f"the masked rectangle is black (brightest luma {bright})")
        outside.append(bytes(v for i, v in enumerate(y)
                             if not (y0 <= i // w < y1 and x0 <= i % w < x1)))
    check(max(outside) > bytes(len(outside[0])), "the picture outside the mask is not black")
    check(len(set(outside)) >= 2, "the picture outside the mask still changes")
    status, _, body = http_get(p["http"], "/stats.json")
    hall = [s for s in json.loads(body)["streams"] if s["name"] == "hall"]
    check(status == 200 and hall and hall[0]["masks"] == 1, f"stats show the mask: {hall}")


def s_unplug(p):
    ws = p["viewer"]
    pid = ctl(p["ctl"], "pid")
    camera_frames(ws, 1, 10)
    out = ctl(p["ctl"], "unplug")
    check(out.endswith("rc=0"), f"unplug: {out}")
    status, _ = wait_status(ws, "offline", 15, contains="unplugged")
    kind, placeholder = next_message(ws, "the offline placeholder", 10)
    check(kind == "frame" and jpeg_size(placeholder) == (WIDTH, HEIGHT), "placeholder picture shown")
    # vivid reconnects once every handle and mapping of the old device is gone:
    # frames resuming proves kindercam released them and reopened by itself.
    wait_status(ws, "live", 30)
    frames = camera_frames(ws, 3, 15)
    check(frames[-1][1] != placeholder, "camera frames, not the placeholder")
    check(ctl(p["ctl"], "pid") == pid, "same kindercam process (no restart)")


def s_stalled(p):
    ws = p["viewer"]
    pid = ctl(p["ctl"], "pid")
    camera_frames(ws, 1, 10)
    out = ctl(p["ctl"], "drop=100")
    check(out.endswith("rc=0"), f"vivid drops every buffer: {out}")
    try:
        # The device stays open and healthy-looking but sends nothing: detected,
        # reported, and the capture restarted.
        wait_status(ws, "offline", 20, contains="no frame")
        kind, placeholder = next_message(ws, "the offline placeholder", 10)
        check(kind == "frame" and jpeg_size(placeholder) == (WIDTH, HEIGHT), "placeholder shown")
    finally:
        ctl(p["ctl"], "drop=0")
    wait_status(ws, "live", 30)
    camera_frames(ws, 2, 15)
    check(ctl(p["ctl"], "pid") == pid, "same kindercam process (no restart)")


def s_on_demand(p):
    p.pop("viewer").close()
    wait_until("camera closed after the last viewer left", 15,
               lambda: ctl(p["ctl"], "holders") == "0", every=0.5)
    # A snapshot while idle opens the camera briefly and gets a fresh picture.
    status, ctype, body = http_get(p["http"], "/snapshot.jpg")
    check(status == 200, f"idle snapshot: {status} {body[:200]!r}")
    check(jpeg_size(body) == (WIDTH, HEIGHT), "idle snapshot size")
    status, ctype, body = http_get(p["http"], "/snapshot.jpg?stream=hall")
    check(status == 200, f"idle snapshot of the second camera: {status} {body[:200]!r}")
    check(jpeg_size(body) == HALL_SIZE, "idle snapshot size (hall)")
    wait_until("cameras closed again after the snapshots", 15,
               lambda: ctl(p["ctl"], "holders") == "0", every=0.5)


SCENARIOS = [
    ("list-devices shows vivid and its formats", s_list_devices),
    ("camera closed while nobody watches", s_idle_closed),
    ("stream-on error: offline, then live without restart", s_streamon_error),
    ("YUYV from /dev/video0 served at 640x480", s_stream),
    ("second camera (TOML [[camera]], by-id link, NV12 320x180) as stream hall", s_second_camera),
    ("privacy mask on the second camera: black in its NV12 planes, the rest live", s_masked),
    ("unplug: placeholder, then frames resume, same process", s_unplug),
    ("stalled camera (no frames) detected and restarted", s_stalled),
    ("on demand: closed when unwatched, snapshot opens briefly", s_on_demand),
]


def main():
    http_port, ws_port, ctl_port = (int(a) for a in sys.argv[1:4])
    p = {"http": http_port, "ws": ws_port, "ctl": ctl_port}
    only = os.environ.get("VM_ONLY")
    passed = failed = 0
    try:
        wait_until("the guest's control API", 90, lambda: ctl(ctl_port, "pid", timeout=3), every=0.5)
        wait_until("kindercam's /healthz", 30,
                   lambda: http_get(http_port, "/healthz", timeout=3)[0] == 200, every=0.3)
    except Failure as e:
        print(f"FAIL guest never became ready: {e}")
        print("vm: 0 passed, 1 failed")
        return 1
    for name, scenario in SCENARIOS:
        if only and only not in name:
            continue
        started = time.monotonic()
        try:
            scenario(p)
            passed += 1
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
        except (Failure, OSError, ValueError) as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            try:
                print("     kindercam log tail:\n" + ctl(ctl_port, "log", timeout=5), flush=True)
            except OSError:
                pass
    if "viewer" in p:
        p["viewer"].close()
    try:
        ctl(ctl_port, "poweroff", timeout=5)
    except OSError:
        pass
    print(f"vm: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
