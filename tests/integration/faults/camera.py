"""A network camera on loopback, to be killed and restarted: serves an MPEG-TS file over
TCP (to one client at a time) or sends it over UDP, paced at the file's own rate, looping
it for as long as it runs. Standard library only, so a restart costs a bare Python start.

Run as a script: ``python camera.py FILE tcp|udp PORT SECONDS``, where SECONDS is the
file's duration (the pace is its size over that). It prints ``ready`` once it serves. A
TCP client gets the first second at once (a camera's buffered GOP, so a reconnecting
reader finds a keyframe without waiting), then the rest in real time.

:class:`Camera` drives it from a test: ``start``, ``kill`` (SIGKILL, no goodbye),
``restart``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

TS_PACKET = 188
CHUNK = 7 * TS_PACKET  # one UDP datagram, as FFmpeg's own MPEG-TS senders do


def _paced_chunks(data: bytes, bytes_per_s: float, burst_s: float) -> Iterator[bytes]:
    """Chunks of ``data`` forever, each yielded when it is due at ``bytes_per_s``."""
    started = time.monotonic()
    sent = 0
    while True:
        for offset in range(0, len(data) - CHUNK + 1, CHUNK):
            due = started + sent / bytes_per_s - burst_s
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield data[offset : offset + CHUNK]
            sent += CHUNK


def _serve_tcp(data: bytes, port: int, bytes_per_s: float) -> None:
    server = socket.create_server(("127.0.0.1", port))  # SO_REUSEADDR: restart at once
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)  # little kept in flight
        try:
            for chunk in _paced_chunks(data, bytes_per_s, burst_s=1.0):
                conn.sendall(chunk)
        except OSError:  # the reader went away: wait for the next one
            conn.close()


def _send_udp(data: bytes, port: int, bytes_per_s: float) -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("ready", flush=True)
    for chunk in _paced_chunks(data, bytes_per_s, burst_s=0.0):
        with contextlib.suppress(OSError):  # nobody listening now: a camera keeps sending
            sender.sendto(chunk, ("127.0.0.1", port))


def main() -> None:
    path, kind, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    data = Path(path).read_bytes()
    data = data[: len(data) - len(data) % TS_PACKET]
    bytes_per_s = len(data) / seconds
    if kind == "tcp":
        _serve_tcp(data, port, bytes_per_s)
    else:
        _send_udp(data, port, bytes_per_s)


class Camera:
    """The script above in a subprocess: ``url`` is what a reader opens."""

    def __init__(self, clip: Path, kind: str, port: int, clip_s: float) -> None:
        self.args = [sys.executable, __file__, str(clip), kind, str(port), str(clip_s)]
        self.url = f"{kind}://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it serves (or dies)
        assert line.strip() == "ready", f"camera did not start: {line!r}"
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


if __name__ == "__main__":
    main()
