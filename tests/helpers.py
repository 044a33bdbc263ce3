"""Helpers shared by integration tests: MPEG-TS remuxes, damaged copies and a loopback HTTP
stream that drops. Derived files always go to the caller's tmp_path."""

from __future__ import annotations

import contextlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av

# The AVI header claims 682 frames at 50 fps; the H.264 stream really holds 341 pictures at
# 25 fps, which is what PyAV decodes.
CROWD_FRAMES = 341
CROWD_FPS = 25.0
CROWD_HW = (720, 1280)


def remux_to_mpegts(src: Path, dst: Path, max_s: float | None = None) -> Path:
    """Copy the H.264 packets of ``src`` (first ``max_s`` seconds) into MPEG-TS, no re-encode."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            if max_s is not None and packet.dts * packet.time_base >= max_s:
                break
            packet.stream = out_stream
            out.mux(packet)
    return dst


def damage_middle(src: Path, dst: Path, n_bytes: int = 65536, seed: int = 0) -> Path:
    """Copy ``src`` with ``n_bytes`` at its middle overwritten by seeded random bytes.

    On an MPEG-TS file the demuxer resyncs on its 188-byte packets and hands the decoder the
    damaged PES, which H.264 conceals and flags corrupt (the recipe of test_sources_real).
    """
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle : middle + n_bytes] = random.Random(seed).randbytes(n_bytes)
    dst.write_bytes(bytes(data))
    return dst


class FlakyHttpStream:
    """Loopback HTTP server of one payload: the 1st response is cut after ``cut_fraction`` of
    the bytes (connection closed), the 2nd is whole, every later request gets 404."""

    def __init__(self, payload: bytes, cut_fraction: float) -> None:
        self.requests = 0
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                flaky.requests += 1
                if flaky.requests > 2:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                cut = len(payload) if flaky.requests == 2 else int(len(payload) * cut_fraction)
                with contextlib.suppress(OSError):  # the client went away first
                    self.wfile.write(payload[:cut])
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/live.ts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
