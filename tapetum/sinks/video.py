"""Annotated video output: boxes, class, track id and short trails (supervision), encoded
with PyAV (H.264 where available)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from tapetum.core.result import FrameResult
from tapetum.errors import SinkError

_CODEC_PREFERENCE = ("libx264", "h264", "mpeg4")


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container: Any = av.open(str(self.path), mode="w")
        except (OSError, av.error.FFmpegError) as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc
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
        """The frame with boxes, labels (``#id class conf``) and trails drawn (a copy)."""
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
        if self._trace is not None:
            scene = self._trace.annotate(scene, sv_det)
        scene = self._box.annotate(scene, sv_det)
        return self._label.annotate(scene, sv_det, labels=labels)

    def write(self, result: FrameResult) -> None:
        import av

        if self.source_id is not None and result.source_id != self.source_id:
            return
        image = self.annotate(result)
        if self._stream is None:
            self._open_stream(image.shape[1], image.shape[0])
        h, w = self._stream.height, self._stream.width
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.written += 1

    def close(self) -> None:
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None
