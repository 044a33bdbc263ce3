"""Annotated video output: boxes, class, track id and short trails (supervision), encoded
with PyAV (H.264 where available).

An MP4 is written fragmented (an empty ``moov`` up front, then a fragment per second), so
the file stays readable up to its last whole fragment when the run cannot finish it: the
disk filled, or the process was killed. A plain MP4 keeps its index at the end and is
unreadable without it."""

from __future__ import annotations

import contextlib
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tapetum.core.detections import Detections
from tapetum.core.result import FrameResult
from tapetum.errors import SinkError

_CODEC_PREFERENCE = ("libx264", "h264", "mpeg4")
#: Containers whose muxer (FFmpeg's mov) can write fragments.
_FRAGMENTED_SUFFIXES = frozenset({".mp4", ".m4v", ".mov"})
#: Fragmented MP4: readable up to its last whole fragment, one fragment per second.
_FRAGMENT_OPTIONS = {
    "movflags": "empty_moov+default_base_moof+frag_keyframe",
    "frag_duration": "1000000",
}


class AnnotatedVideoSink:
    """Draws tracks on each frame of one source and encodes them to a video file.

    Args:
        path: output file (``.mp4`` recommended).
        fps: output frame rate (the source's native rate keeps motion natural).
        source_id: only results of this source are drawn (None = accept any; use one sink
            per source when a pipeline has several).
        trail_length: trail points per track (0 disables trails).
        preset: x264 speed/size trade-off; ``superfast`` keeps a 720p stream well above
            real time on 2 cores (~58 FPS for the whole run vs ~50 with ``veryfast``, at
            1.6 × the file size).

    A write that fails (disk full, a file-size limit) closes the file where it stands,
    readable to its last whole fragment, and raises ``SinkError``; every later write
    raises ``SinkError`` too without trying (the pipeline counts each as a sink error).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = 30.0,
        source_id: str | None = None,
        trail_length: int = 30,
        preset: str = "superfast",
    ) -> None:
        import av
        import supervision as sv

        self.path = Path(path)
        self.source_id = source_id
        self._preset = preset
        self._fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        options = _FRAGMENT_OPTIONS if self.path.suffix.lower() in _FRAGMENTED_SUFFIXES else {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container: Any = av.open(str(self.path), mode="w", container_options=options)
        except (OSError, av.error.FFmpegError) as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc
        #: why the file was closed early (a failed write); None while it is healthy.
        self.failure: str | None = None
        self._stream: Any = None
        self._box = sv.BoxAnnotator(thickness=2, color_lookup=sv.ColorLookup.TRACK)
        self._label = sv.LabelAnnotator(
            text_scale=0.45, text_padding=3, color_lookup=sv.ColorLookup.TRACK
        )
        self._trace = (
            sv.TraceAnnotator(
                trace_length=trail_length, thickness=2, color_lookup=sv.ColorLookup.TRACK
            )
            if trail_length > 0
            else None
        )
        self.written = 0

    def _open_stream(self, width: int, height: int) -> None:
        import av

        for codec in _CODEC_PREFERENCE:
            if codec in av.codecs_available:
                try:
                    stream = self._container.add_stream(codec, rate=self._fps)
                except (ValueError, av.error.FFmpegError):
                    continue
                break
        else:  # pragma: no cover - every PyAV build ships mpeg4
            raise SinkError("no usable video encoder found in this PyAV build")
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.thread_type = "AUTO"
        if stream.codec_context.name in ("libx264", "h264"):
            stream.options = {"preset": self._preset, "crf": "23"}
        self._stream = stream

    def annotate(self, result: FrameResult) -> np.ndarray:
        """The frame with boxes, labels (``#id class conf``, then `` | label`` once the
        classification stage has labelled the track) and trails drawn (a copy)."""
        det = result.detections
        scene = result.frame.image.copy()
        if len(det) == 0:
            return scene
        sv_det = det.to_supervision()
        names = result.class_names
        labels = [
            f"#{tid} {names[cid] if 0 <= cid < len(names) else cid} {conf:.2f}"
            for tid, cid, conf in zip(
                det.tracker_id.tolist(),
                det.class_id.tolist(),
                det.confidence.tolist(),
                strict=True,
            )
        ]
        classified = det.data.get("label")
        if classified is not None:  # the classification stage's per-track label
            labels = [
                f"{text} | {label}" if label is not None else text
                for text, label in zip(labels, classified.tolist(), strict=True)
            ]
        if self._trace is not None:
            scene = self._trace.annotate(scene, sv_det)
        scene = self._box.annotate(scene, sv_det)
        scene = self._label.annotate(scene, sv_det, labels=labels)
        return draw_forecasts(scene, det)

    def state_sizes(self) -> dict[str, int]:
        """Trail points held (the last ``trail_length`` frames' track centres)."""
        return {"trail_points": len(self._trace.trace.xy) if self._trace is not None else 0}

    def write(self, result: FrameResult) -> None:
        import av

        if self.source_id is not None and result.source_id != self.source_id:
            return
        if self.failure is not None:
            raise SinkError(f"video {self.path} was closed after a failed write ({self.failure})")
        image = self.annotate(result)
        if self._stream is None:
            self._open_stream(image.shape[1], image.shape[0])
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (OSError, av.error.FFmpegError) as exc:  # disk full, file-size limit
            self._fail(exc)
        self.written += 1

    def _fail(self, exc: BaseException) -> None:
        """Close the file where it stands after a failed write, then raise ``SinkError``."""
        self.failure = str(getattr(exc, "strerror", None) or exc)
        container, self._container = self._container, None
        # The trailer may fail too (the first failure is the one to report); then the file
        # is cut after its last whole fragment, so it decodes to its end.
        with contextlib.suppress(Exception):
            container.close()
        self._cut_to_whole_fragments()
        raise SinkError(
            f"cannot write video {self.path}: {self.failure}; the file is closed after "
            f"{self.written} frames, readable up to its last whole fragment"
        ) from None

    def _cut_to_whole_fragments(self) -> None:
        """Truncate a fragmented MP4 after its last whole fragment (a write that failed
        mid-fragment leaves half a ``moof``/``mdat`` that decoders reject)."""
        if self.path.suffix.lower() not in _FRAGMENTED_SUFFIXES:
            return
        with contextlib.suppress(OSError), self.path.open("r+b") as fh:
            end = whole_fragments_end(fh)
            if end is not None:
                fh.truncate(end)

    def close(self) -> None:
        import av

        if self._container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        except (OSError, av.error.FFmpegError) as exc:
            self.failure = str(getattr(exc, "strerror", None) or exc)
            self._cut_to_whole_fragments()
            raise SinkError(
                f"cannot finish video {self.path}: {self.failure}; readable up to its last "
                "whole fragment"
            ) from None
        finally:
            self._container = None


def whole_fragments_end(fh: BinaryIO) -> int | None:
    """Where the whole top-level boxes of an MP4 end: after ``moov`` and after each
    ``mdat`` whose box is complete (a fragment is a ``moof`` then its ``mdat``). None when
    not even the ``moov`` is whole. Reads only the 8- or 16-byte box headers."""
    size = fh.seek(0, 2)
    pos, end = 0, None
    while pos + 8 <= size:
        fh.seek(pos)
        header = fh.read(16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        if box_size == 1 and len(header) == 16:
            box_size = struct.unpack(">Q", header[8:16])[0]
        if box_size < 8 or pos + box_size > size:
            break  # cut short (or size 0, "to the end", which a fragment never uses)
        pos += box_size
        if kind in (b"moov", b"mdat", b"mfra"):
            end = pos
    return end


def draw_forecasts(scene: np.ndarray, det: Detections, n_sigma: float = 2.0) -> np.ndarray:
    """Draw each track's forecast (``data["forecast_xy"]``/``["forecast_cov"]``): a path
    from the box centre through the forecast points, with an ``n_sigma`` ellipse at the
    first horizon.
    Rows without a forecast (NaN) are skipped; ``scene`` is drawn on in place."""
    import cv2
    import supervision as sv

    from tapetum.track.forecast import forecast_ellipses

    xy, cov = det.data.get("forecast_xy"), det.data.get("forecast_cov")
    if xy is None or cov is None or len(det) == 0:
        return scene
    n, h = xy.shape[0], xy.shape[1] // 2
    pts, c = xy.reshape(n, h, 2), cov.reshape(n, h, 3)
    cov22 = np.stack((c[..., 0], c[..., 2], c[..., 2], c[..., 1]), -1).reshape(n, h, 2, 2)
    ell = forecast_ellipses(np.nan_to_num(cov22), n_sigma)
    centers = det.center
    palette = sv.ColorPalette.DEFAULT
    for i in np.flatnonzero(np.isfinite(pts).all(axis=(1, 2))).tolist():
        color = palette.by_idx(int(det.tracker_id[i])).as_bgr()
        path = np.vstack((centers[i : i + 1], pts[i])).round().astype(np.int32)
        cv2.polylines(scene, [path], False, color, 1, cv2.LINE_AA)
        for k in range(h):
            p = (round(float(pts[i, k, 0])), round(float(pts[i, k, 1])))
            axes = (
                max(1, round(float(ell.semi_major_px[i, k]))),
                max(1, round(float(ell.semi_minor_px[i, k]))),
            )
            cv2.circle(scene, p, 3, color, -1, cv2.LINE_AA)
            if k == 0:  # the nearest horizon's ellipse; later ones only clutter a crowd
                cv2.ellipse(
                    scene, p, axes, float(ell.angle_deg[i, k]), 0, 360, color, 1, cv2.LINE_AA
                )
    return scene
