"""Video files and network streams, decoded in-process by FFmpeg through PyAV.

One ``VideoSource`` reads one file or one live URL (``rtsp://``, ``rtsps://``, ``http(s)://``,
``udp://``, ``tcp://``, ``rtmp://``) and yields BGR ``Frame``s. Damaged data is counted and
skipped, never raised mid-stream; a live stream that drops is reopened with exponential
backoff and keeps its frame indexes and timestamps running.

Example::

    import threading
    from tapetum.sources import VideoSource

    source = VideoSource("crowd_720p.avi", realtime=True)
    for frame in source.frames(threading.Event()):
        print(frame.index, frame.timestamp_s, frame.image.shape)  # (720, 1280, 3)
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import av
import numpy as np
import numpy.typing as npt
from av.container import InputContainer

from tapetum.core.frame import Frame
from tapetum.errors import ConfigError, SourceError
from tapetum.sources.base import SourceBase, SourceStats

logger = logging.getLogger(__name__)

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "udp", "tcp", "rtmp"})
"""URL schemes read as live streams: paced by their own clock and reconnected when they drop."""

#: FFmpeg protocols each kind of URI may use, nested opens included (an HLS playlist's
#: segments, RTP under RTSP): a playlist or a redirect cannot reach ``file:`` or another
#: protocol. Key None: a local file.
PROTOCOL_WHITELIST: dict[str | None, str] = {
    None: "file",
    "http": "http,https,tcp,tls,crypto",
    "https": "http,https,tcp,tls,crypto",
    "rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "rtsps": "rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "rtmp": "rtmp,rtmps,tcp,tls",
    "udp": "udp,rtp",
    "tcp": "tcp",
}

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MICROSECONDS_PER_S = 1_000_000
# A paced file more than this far behind its schedule is re-anchored instead of bursting
# frames to catch up (the consumer was stalled; a camera would have dropped those frames).
_MAX_PACING_LAG_S = 0.5
# Frame interval assumed when the container states no frame rate.
_FALLBACK_FRAME_INTERVAL_S = 1 / 25


def url_scheme(uri: str) -> str | None:
    """Lower-case scheme of ``uri`` (``"rtsp"``), or None for a plain path."""
    match = _URL_SCHEME.match(uri)
    return match.group(1).lower() if match else None


def is_live_url(uri: str) -> bool:
    """True when ``uri`` names a network stream that ``VideoSource`` reads as live."""
    return url_scheme(uri) in LIVE_SCHEMES


def redact_url(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, safe for logs and error messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def display_url(uri: str) -> str:
    """``uri`` as logs, listings and metrics show it: the user name, password, query string
    and fragment removed (they often carry credentials or tokens). A plain path is returned
    unchanged; a URL that does not parse shows only its scheme.

    >>> display_url("rtsp://admin:pw@10.0.0.7:554/Streaming/101?token=abc")
    'rtsp://10.0.0.7:554/Streaming/101'
    >>> display_url("http://[::1/x")
    'http://<malformed>'
    """
    scheme = url_scheme(uri)
    if scheme is None:
        return uri
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://<malformed>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def sanitise_source_id(text: str) -> str:
    """``text`` reduced to ``[A-Za-z0-9._-]`` (runs of anything else become ``_``)."""
    return _UNSAFE_ID_CHARS.sub("_", text).strip("._-") or "source"


def default_source_id(uri: str | os.PathLike[str]) -> str:
    """Source id derived from a URI: host, port and path of a URL, or a path's stem.

    >>> default_source_id("rtsp://admin:pw@10.0.0.7:554/Streaming/101")
    '10.0.0.7_554_Streaming_101'
    >>> default_source_id("/data/videos/gate-3.mp4")
    'gate-3'
    """
    text = os.fspath(uri)
    if url_scheme(text) is None:
        path = Path(text)
        return sanitise_source_id(path.stem if path.suffix else path.name)
    parts = urlsplit(text)
    port = f":{parts.port}" if parts.port else ""
    return sanitise_source_id(f"{parts.hostname or ''}{port}{parts.path}")


class _PresentationClock:
    """Turns decoder pts/dts into strictly increasing seconds on the source's clock.

    Per connection it picks pts or dts the way FFmpeg's ``best_effort_timestamp`` does
    (PyAV does not expose it): pts while it increases, dts once pts has gone backwards more
    often than dts. AVI files carry decode-order pts that come out of a B-frame decoder
    shuffled, so this matters for real files. Whatever still goes backwards (the last frame
    of such a file, a stream restarting at 0 after a reconnect) shifts every later timestamp
    to continue one frame interval after the previous one.
    """

    def __init__(self, frame_interval_s: float) -> None:
        self._frame_interval_s = frame_interval_s
        self._offset_s = 0.0
        self._last_s: float | None = None
        self.new_connection()

    def new_connection(self) -> None:
        self._faulty_pts = 0
        self._faulty_dts = 0
        self._last_pts: int | None = None
        self._last_dts: int | None = None

    def _best_effort(self, pts: int | None, dts: int | None) -> int | None:
        # Mirrors guess_correct_pts() in libavcodec/decode.c.
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts

    def seconds(
        self, pts: int | None, dts: int | None, time_base: Fraction | None, index: int
    ) -> float:
        best = self._best_effort(pts, dts)
        if best is not None and time_base is not None:
            raw_s = float(best * time_base)
        else:
            raw_s = index * self._frame_interval_s
        timestamp_s = raw_s + self._offset_s
        if self._last_s is not None and timestamp_s <= self._last_s:
            continued_s = self._last_s + self._frame_interval_s
            self._offset_s += continued_s - timestamp_s
            timestamp_s = continued_s
        self._last_s = timestamp_s
        return timestamp_s


class VideoSource(SourceBase):
    """A video file or live network stream decoded with FFmpeg threaded decoding.

    The container is opened (and probed) in the constructor, so a bad path or an unreachable
    URL fails fast with ``SourceError``; ``frames`` then reads it. Each call of ``frames``
    starts from the beginning of a file (or a fresh connection to a stream).

    Args:
        uri: path of a video file, or a URL whose scheme is in ``LIVE_SCHEMES``.
        source_id: name of the source; defaults to ``default_source_id(uri)``.
        realtime: pace a file at its native rate (pts against a monotonic clock) as a
            camera would deliver it. Ignored for live streams, which arrive at their own pace.
        reconnect_initial_delay_s: wait before the first reconnect attempt of a live stream;
            doubles with each failed attempt.
        reconnect_max_delay_s: cap on the wait between reconnect attempts.
        reconnect_max_attempts: consecutive failed attempts (open failures or connections
            that yield no frame) after which a live stream is given up: ``frames`` raises
            ``SourceError`` saying so (a pipeline records it as the stream's error). None
            never gives up (a camera that must be back whenever it comes back), retrying
            every ``reconnect_max_delay_s`` once the backoff has grown to it.
        open_timeout_s: longest wait for a stream to open (connect, handshake, probe).
        read_timeout_s: longest wait for data from an open stream before it counts as
            dropped. Also bounds how long ``stop`` can take to act during a blocked read.
        rtsp_transport: ``"tcp"`` (default: no packet loss, passes NAT) or ``"udp"``.
        err_detect: FFmpeg decoder ``err_detect`` flags (e.g. ``"crccheck+bitstream"``).
            Default None keeps FFmpeg's: damaged pictures are concealed and flagged corrupt,
            which this source counts and skips. ``"explode"`` drops whole packets on the
            first bitstream error instead, losing every frame until the next keyframe.
        loop: a file starts over when it ends, until ``stop`` is set (soak tests, a demo
            screen): frame indexes and timestamps keep counting up across the passes, as
            a camera's would. Ignored for live streams, which reconnect instead.
        decoder_threads: FFmpeg decoder threads; 0 lets FFmpeg pick one per core. The
            default 1 suits the pipeline, which already runs streams and stages in
            parallel: frame threading adds a frame of delay per extra thread and, with
            several streams, oversubscribes the cores (``bench/pipeline.py``, 4 × 15 FPS
            streams on 2 cores: end-to-end p99 89 ms with FFmpeg's choice vs 80 ms with 1).
        ffmpeg_options: extra demuxer/protocol options; they override the defaults.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        *,
        source_id: str | None = None,
        realtime: bool = False,
        reconnect_initial_delay_s: float = 0.5,
        reconnect_max_delay_s: float = 10.0,
        reconnect_max_attempts: int | None = 10,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        rtsp_transport: str = "tcp",
        err_detect: str | None = None,
        loop: bool = False,
        decoder_threads: int = 1,
        ffmpeg_options: Mapping[str, str] | None = None,
    ) -> None:
        self._uri = os.fspath(uri)
        self._scheme = url_scheme(self._uri)
        self._live = self._scheme in LIVE_SCHEMES
        if self._scheme is not None and not self._live:
            supported = ", ".join(sorted(LIVE_SCHEMES))
            raise SourceError(
                f"cannot open {display_url(self._uri)}: unsupported URL scheme "
                f"'{self._scheme}' (supported: {supported}, or a file path)"
            )
        if reconnect_initial_delay_s <= 0 or reconnect_max_delay_s <= 0:
            raise ConfigError(
                "reconnect delays must be > 0, got reconnect_initial_delay_s="
                f"{reconnect_initial_delay_s}, reconnect_max_delay_s={reconnect_max_delay_s}"
            )
        attempts = 0 if reconnect_max_attempts is None else reconnect_max_attempts
        if attempts < 0 or open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ConfigError(
                "reconnect_max_attempts must be >= 0 (or None) and timeouts > 0, got "
                f"{reconnect_max_attempts}, {open_timeout_s} s, {read_timeout_s} s"
            )
        self._source_id = source_id or default_source_id(self._uri)
        self._realtime = realtime and not self._live
        self._loop = loop and not self._live
        self._reconnect_initial_delay_s = reconnect_initial_delay_s
        self._reconnect_max_delay_s = reconnect_max_delay_s
        self._reconnect_max_attempts = reconnect_max_attempts
        self._last_failure: str | None = None  # why the latest reconnect attempt failed
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._rtsp_transport = rtsp_transport
        self._err_detect = err_detect
        self._decoder_threads = decoder_threads
        self._ffmpeg_options = dict(ffmpeg_options or {})
        self._stats = SourceStats()

        self._container: InputContainer | None = self._open()
        stream = self._container.streams.video[0]
        rate = stream.guessed_rate or stream.average_rate
        self._fps: float | None = float(rate) if rate else None
        self._width = int(stream.codec_context.width)
        self._height = int(stream.codec_context.height)

    @property
    def width(self) -> int:
        """Frame width in pixels, as probed when the source was opened."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels, as probed when the source was opened."""
        return self._height

    def close(self) -> None:
        """Release the container probed at construction if ``frames`` never took it."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield decoded frames until the source ends or ``stop`` is set.

        Frames the decoder flags corrupt, and packets it rejects, are counted in
        ``stats.frames_corrupt`` and skipped (a flagged frame keeps its index, leaving a gap).
        A live stream that errors or ends is reopened with backoff; after
        ``reconnect_max_attempts`` consecutive failures it is given up: ``SourceError``
        says so, after every frame read before it was yielded. A looped file is reopened
        at its end; a pass that yields no frame ends it (nothing to loop over).

        Raises:
            SourceError: when the source cannot be opened at all, a looped file has gone
                when it is reopened, or a live stream is given up.
        """
        current: InputContainer | None = (
            self._container if self._container is not None else self._open()
        )
        self._container = None
        frame_interval_s = 1 / self._fps if self._fps else _FALLBACK_FRAME_INTERVAL_S
        clock = _PresentationClock(frame_interval_s)
        next_index = 0
        failed_attempts = 0
        try:
            while current is not None:
                first_index = next_index
                next_index = yield from self._decode(current, stop, clock, next_index)
                current.close()
                current = None
                if stop.is_set():
                    return
                if not self._live:
                    if not self._loop or next_index == first_index:
                        return
                    current = self._open()
                    clock.new_connection()  # pts restart at 0: the clock carries on
                    continue
                # A connection that yielded no frame counts as a failed attempt, so a server
                # that accepts and hangs up at once cannot keep the source alive forever.
                if next_index > first_index:
                    failed_attempts = 0
                else:
                    failed_attempts += 1
                    self._last_failure = "the connection ended before a frame arrived"
                current, failed_attempts = self._reopen(stop, failed_attempts)
                if current is None and not stop.is_set():
                    raise SourceError(
                        f"{self._describe()}: gave up after {failed_attempts} failed "
                        "reconnect attempts in a row"
                        + (f" (last: {self._last_failure})" if self._last_failure else "")
                    )
                clock.new_connection()
        finally:
            if current is not None:
                current.close()

    def _decode(
        self,
        container: InputContainer,
        stop: threading.Event,
        clock: _PresentationClock,
        index: int,
    ) -> Generator[Frame, None, int]:
        """Yield the frames of one open container; return the next frame index.

        Returns when the container ends, fails to read, or ``stop`` is set; a live stream's
        drop is counted in ``stats.errors`` here.
        """
        stream = container.streams.video[0]
        pace_anchor_s: float | None = None
        packets = container.demux(stream)
        while not stop.is_set():
            try:
                packet = next(packets)
            except StopIteration:
                if self._live:
                    self._stats.errors += 1
                    logger.warning("%s: stream ended", self._describe())
                return index
            except (av.FFmpegError, OSError, EOFError) as exc:
                self._stats.errors += 1
                logger.warning("%s: read failed: %s", self._describe(), _reason(exc))
                return index
            try:
                decoded = packet.decode()
            except (av.FFmpegError, ValueError) as exc:
                self._stats.frames_corrupt += 1
                logger.debug("%s: packet rejected by decoder: %s", self._describe(), exc)
                continue
            for av_frame in decoded:
                if stop.is_set():
                    return index
                frame_index = index
                index += 1
                if av_frame.is_corrupt:
                    self._stats.frames_corrupt += 1
                    continue
                try:
                    image = cast(npt.NDArray[np.uint8], av_frame.to_ndarray(format="bgr24"))
                except (av.FFmpegError, ValueError) as exc:
                    self._stats.frames_corrupt += 1
                    logger.debug("%s: frame not convertible: %s", self._describe(), exc)
                    continue
                arrival_s = time.perf_counter()
                timestamp_s = clock.seconds(
                    av_frame.pts, av_frame.dts, av_frame.time_base, frame_index
                )
                if self._realtime:
                    # Pacing stands in for a camera's clock: the frame "arrives" when it is
                    # due, so arrival_s is taken after the wait, which is not pipeline latency.
                    now_s = time.monotonic()
                    if pace_anchor_s is None:
                        pace_anchor_s = now_s - timestamp_s
                    due_in_s = pace_anchor_s + timestamp_s - now_s
                    if due_in_s > 0:
                        if stop.wait(due_in_s):
                            return index
                    elif due_in_s < -_MAX_PACING_LAG_S:
                        pace_anchor_s = now_s - timestamp_s
                    arrival_s = time.perf_counter()
                self._stats.frames_decoded += 1
                yield Frame(
                    source_id=self._source_id,
                    index=frame_index,
                    image=image,
                    timestamp_s=timestamp_s,
                    arrival_s=arrival_s,
                )
        return index

    def _reopen(
        self, stop: threading.Event, failed_attempts: int
    ) -> tuple[InputContainer | None, int]:
        """Reopen a dropped live stream with exponential backoff.

        ``failed_attempts`` counts failures since a connection last yielded a frame. Returns
        the open container (None when given up or stopped) and the updated count.
        """
        limit = self._reconnect_max_attempts
        while limit is None or failed_attempts < limit:
            delay_s = min(
                self._reconnect_initial_delay_s * 2**failed_attempts, self._reconnect_max_delay_s
            )
            if stop.wait(delay_s):
                return None, failed_attempts
            try:
                container = self._open()
            except SourceError as exc:
                self._stats.errors += 1
                failed_attempts += 1
                self._last_failure = str(exc)
                logger.info(
                    "reconnect %d/%s failed: %s",
                    failed_attempts,
                    "inf" if limit is None else limit,
                    exc,
                )
                continue
            self._stats.reconnects += 1
            logger.info("%s: reconnected", self._describe())
            return container, failed_attempts
        return None, failed_attempts

    def _open(self) -> InputContainer:
        """Open and probe the container, set up threaded decoding of its first video stream."""
        if not self._live:
            path = Path(self._uri)
            if not path.exists():
                raise SourceError(f"cannot open video {self._uri}: no such file")
            if path.is_dir():
                raise SourceError(
                    f"cannot open video {self._uri}: it is a directory "
                    "(use ImageFolderSource for a folder of images)"
                )
        try:
            container = av.open(
                self._uri,
                mode="r",
                options=self._container_options(),
                timeout=(self._open_timeout_s, self._read_timeout_s),
            )
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(self._open_failure(exc)) from exc
        if not container.streams.video:
            kinds = ", ".join(sorted({str(stream.type) for stream in container.streams}))
            container.close()
            raise SourceError(
                f"cannot open {self._describe()}: no video stream "
                f"(streams found: {kinds or 'none'})"
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._decoder_threads
        if self._err_detect is not None:
            stream.codec_context.options = {"err_detect": self._err_detect}
        return container

    def _container_options(self) -> dict[str, str]:
        whitelist = {"protocol_whitelist": PROTOCOL_WHITELIST.get(self._scheme, "file")}
        if not self._live:
            return {**whitelist, **self._ffmpeg_options}
        read_timeout_us = str(int(self._read_timeout_s * _MICROSECONDS_PER_S))
        # rw_timeout bounds every read of any protocol; "timeout" is the socket timeout of
        # rtsp/http/tcp/udp (microseconds) but means a listen timeout in seconds for rtmp.
        options = {**whitelist, "rw_timeout": read_timeout_us}
        if self._scheme != "rtmp":
            options["timeout"] = read_timeout_us
        if self._scheme in {"rtsp", "rtsps"}:
            options["rtsp_transport"] = self._rtsp_transport
        options.update(self._ffmpeg_options)
        return options

    def _open_failure(self, exc: BaseException) -> str:
        reason = _reason(exc)
        if not self._live:
            if isinstance(exc, av.error.InvalidDataError):
                reason = f"not a video FFmpeg can read ({reason})"
            return f"cannot open video {self._uri}: {reason}"
        if isinstance(exc, av.error.ExitError | av.error.TimeoutError):
            reason = f"no answer within {self._open_timeout_s:g} s ({reason})"
        return f"cannot open stream {display_url(self._uri)}: {reason}"

    def _describe(self) -> str:
        kind = "stream" if self._live else "video"
        return f"{kind} {display_url(self._uri)}"


def _reason(exc: BaseException) -> str:
    """FFmpeg's one-line reason for ``exc`` (its strerror), without the repeated URL."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)
