"""A camera's reference profile: what each drift signal looked like when all was well.

Built from a window of the camera's frames (or a folder of images, a data set) run
through the same detector and tracker as in production: a :class:`ProfileRecorder` sink
records every signal's observations, then :meth:`ProfileRecorder.build` fits each
signal's reference (:func:`~tapetum.monitor.drift_signals.fit_reference`) and calibrates
its threshold on the reference itself:

1. slide a window of the signal's length over the reference, a step of ``step_s``;
2. score each window against the reference *without* that window (leave-one-block-out,
   so a window is never compared with itself);
3. the threshold is ``max(floor, margin × the largest of those scores)``.

So the threshold is what this camera's own natural variation (people walking through,
clouds, a slow trend) never reached, with a margin, and never below the signal's practical
floor. A signal whose reference is too short for ``min_blocks`` windows is kept but not
scored (its ``note`` says why): the tracking signals want a few minutes of video.

The profile is one JSON file (``tapetum drift profile SOURCE -o ref.json``), validated
with pydantic when read; arrays are stored as base64.

Example:
    >>> recorder = ProfileRecorder(fps=25.0)                 # doctest: +SKIP
    >>> Pipeline([src], detector, sinks=[recorder]).run()    # doctest: +SKIP
    >>> recorder.build(source="cam1").save("ref.json")       # doctest: +SKIP
    >>> DriftProfile.load("ref.json").references.keys()      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tapetum.core.result import FrameResult
from tapetum.errors import DriftProfileError
from tapetum.monitor.drift_features import FeatureExtractor
from tapetum.monitor.drift_signals import (
    SIGNALS,
    SignalKind,
    SignalReference,
    SignalSpec,
    fit_reference,
    score_window,
)

__all__ = ["PROFILE_FORMAT", "DriftProfile", "ProfileRecorder", "calibrate"]

PROFILE_FORMAT = "tapetum-drift-profile"
PROFILE_VERSION = 1

Payload = npt.NDArray[Any]

#: Most calibration windows per signal (evenly spread over a long reference).
MAX_BLOCKS = 120


@dataclass(slots=True)
class DriftProfile:
    """One camera's reference, per signal.

    Attributes:
        source: the camera (source id) or data set it was built from.
        frames: frames observed.
        duration_s: seconds of video they cover.
        fps: the frame rate time was measured with.
        image_hz: image statistics per second of video (the monitor uses the same).
        model: the detector's file name, if the model signals were recorded.
        margin: the calibration margin (threshold = margin × the largest null score).
        references: fitted and calibrated reference of each signal seen, by name.
        created_at: ISO time of creation (UTC).
    """

    source: str
    frames: int
    duration_s: float
    fps: float
    image_hz: float
    model: str | None
    margin: float
    references: dict[str, SignalReference] = field(default_factory=dict)
    created_at: str = ""

    def scored(self) -> list[SignalReference]:
        """The references that have a threshold (the ones a monitor scores)."""
        return [r for r in self.references.values() if r.threshold is not None]

    # ------------------------------------------------------------------ file format
    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "source": self.source,
            "created_at": self.created_at,
            "frames": self.frames,
            "duration_s": self.duration_s,
            "fps": self.fps,
            "image_hz": self.image_hz,
            "model": self.model,
            "margin": self.margin,
            "signals": [_reference_json(r) for r in self.references.values()],
        }

    def save(self, path: str | Path) -> Path:
        """Write the profile as JSON; returns the path."""
        out = Path(path)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise DriftProfileError(f"cannot write drift profile {out}: {exc}") from None
        return out

    @classmethod
    def load(cls, path: str | Path) -> DriftProfile:
        """Read and validate a profile file.

        Raises:
            DriftProfileError: missing, not JSON, not a profile, another version, or a
                field that does not validate (the message names it).
        """
        src = Path(path)
        try:
            raw = json.loads(src.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DriftProfileError(f"drift profile {src} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DriftProfileError(f"drift profile {src} is not readable JSON: {exc}") from None
        return cls.from_json(raw, str(src))

    @classmethod
    def from_json(cls, raw: Any, where: str = "drift profile") -> DriftProfile:
        from pydantic import ValidationError

        try:
            model = _profile_schema().model_validate(raw).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise DriftProfileError(
                f"{where} is not a valid drift profile: {loc}: {first['msg']}"
            ) from None
        refs = {s["name"]: _reference_from(s) for s in model["signals"]}
        return cls(
            source=model["source"],
            frames=model["frames"],
            duration_s=model["duration_s"],
            fps=model["fps"],
            image_hz=model["image_hz"],
            model=model["model"],
            margin=model["margin"],
            references=refs,
            created_at=model["created_at"],
        )


# --------------------------------------------------------------------------- building


class ProfileRecorder:
    """A sink that records every signal's observations of one stream, to build a profile.

    Args:
        fps: the stream's nominal frame rate (time is ``index / fps``).
        image_hz: image statistics per second of video.
    """

    def __init__(self, fps: float = 25.0, image_hz: float = 4.0) -> None:
        self.extractor = FeatureExtractor(fps, image_hz)
        self.times: dict[str, list[float]] = {}
        self.payloads: dict[str, list[Payload]] = {}
        self.frames = 0
        self._first_s: float | None = None
        self._last_s = 0.0

    def write(self, result: FrameResult) -> None:
        self._add(self.extractor.time_s(result), self.extractor.observe(result))

    def write_image(self, index: int, image: npt.NDArray[np.uint8]) -> None:
        """Record the image signals of a frame without a model (image-only profiles)."""
        t = index / self.extractor.fps
        self._add(t, self.extractor.observe_image(image) if self.extractor.image_due(t) else {})

    def close(self) -> None:
        """Nothing to flush (the sink protocol)."""

    def _add(self, t: float, obs: dict[str, Payload]) -> None:
        self.frames += 1
        if self._first_s is None:
            self._first_s = t
        self._last_s = t
        for name, payload in obs.items():
            self.times.setdefault(name, []).append(t)
            self.payloads.setdefault(name, []).append(payload)

    def build(
        self,
        source: str,
        *,
        model: str | None = None,
        margin: float = 1.5,
        step_s: float = 1.0,
        min_blocks: int = 3,
    ) -> DriftProfile:
        """Fit and calibrate every signal observed (see the module docstring).

        Raises:
            DriftProfileError: nothing was recorded.
        """
        if self.frames == 0 or self._first_s is None:
            raise DriftProfileError(f"no frames were read from {source}: nothing to profile")
        fps = self.extractor.fps
        start, end = self._first_s, self._last_s + 1.0 / fps
        refs: dict[str, SignalReference] = {}
        for spec in SIGNALS:
            if spec.name not in self.payloads:
                continue
            times = np.asarray(self.times[spec.name], np.float64)
            refs[spec.name] = calibrate(
                spec,
                times,
                self.payloads[spec.name],
                (start, end),
                margin=margin,
                step_s=step_s,
                min_blocks=min_blocks,
            )
        return DriftProfile(
            source=source,
            frames=self.frames,
            duration_s=round(end - start, 3),
            fps=fps,
            image_hz=round(1.0 / self.extractor.image_period_s, 6),
            model=model,
            margin=margin,
            references=refs,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )


def calibrate(
    spec: SignalSpec,
    times: npt.NDArray[np.float64],
    payloads: list[Payload],
    span: tuple[float, float],
    *,
    margin: float = 1.5,
    step_s: float = 1.0,
    min_blocks: int = 3,
) -> SignalReference:
    """Fit ``spec``'s reference on all observations and calibrate its threshold by
    leave-one-block-out windows (see the module docstring).

    ``times`` (K,) are the observations' seconds, ``span`` the (start, end) seconds the
    reference covers (a signal may be silent for part of it)."""
    start, end = span
    duration = end - start
    ref = fit_reference(spec, payloads, duration)
    window = spec.window_s
    starts = np.arange(start, end - window + 1e-9, step_s)
    if starts.size > MAX_BLOCKS:
        starts = starts[np.linspace(0, starts.size - 1, MAX_BLOCKS).round().astype(np.int64)]
    scores: list[float] = []
    idx = np.arange(times.size)
    for t0 in starts:
        inside = (times >= t0) & (times < t0 + window)
        rest = fit_reference(spec, [payloads[i] for i in idx[~inside]], duration - window)
        score = score_window(rest, [payloads[i] for i in idx[inside]], window)
        if score is not None and np.isfinite(score):
            scores.append(score)
    if len(scores) < min_blocks:
        ref.note = (
            f"not scored: {len(scores)} windows of {window:.0f} s with enough data in "
            f"{duration:.0f} s of reference; calibration needs {min_blocks}"
        )
        return ref
    ref.null_max = float(max(scores))
    ref.threshold = float(max(spec.floor, margin * ref.null_max))
    return ref


# ------------------------------------------------------------------------ JSON helpers


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        dtype = "float16" if value.ndim == 2 else str(value.dtype)
        arr = np.ascontiguousarray(value.astype(dtype))
        return {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data": base64.b64encode(arr.tobytes()).decode("ascii"),
        }
    return float(value)


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        raw = base64.b64decode(value["data"])
        arr = np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"])
        return arr.astype(np.float64 if value["dtype"].startswith("float") else np.int64)
    return float(value)


def _reference_json(ref: SignalReference) -> dict[str, Any]:
    s = ref.spec
    return {
        "name": s.name,
        "family": s.family,
        "kind": s.kind.value,
        "window_s": s.window_s,
        "floor": s.floor,
        "min_count": s.min_count,
        "scale_floor": s.scale_floor,
        "count": ref.count,
        "threshold": ref.threshold,
        "null_max": ref.null_max,
        "note": ref.note,
        "params": {k: _encode(v) for k, v in ref.params.items()},
    }


def _reference_from(d: dict[str, Any]) -> SignalReference:
    spec = SignalSpec(
        d["name"],
        d["family"],
        SignalKind(d["kind"]),
        d["window_s"],
        d["floor"],
        d["min_count"],
        d["scale_floor"],
    )
    params = {k: _decode(v) for k, v in d["params"].items()}
    return SignalReference(spec, d["count"], params, d["threshold"], d["null_max"], d["note"])


@functools.cache
def _profile_schema() -> Any:
    """The pydantic model of the file (built on first use: pydantic loads only then)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class ArrayField(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dtype: Literal["float16", "float32", "float64", "int64"]
        shape: list[int] = Field(max_length=2)
        data: str

        @model_validator(mode="after")
        def _size_matches(self) -> ArrayField:
            expected = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
            if len(base64.b64decode(self.data, validate=True)) != expected:
                raise ValueError(f"data is not {self.shape} {self.dtype}")
            return self

    class SignalField(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str
        family: str
        kind: Literal["shift", "ks", "psi", "psi_binned", "mmd", "rate", "share"]
        window_s: float = Field(gt=0)
        floor: float = Field(ge=0)
        min_count: int = Field(ge=0)
        scale_floor: float = Field(ge=0)
        count: int = Field(ge=0)
        threshold: float | None = Field(default=None, gt=0)
        null_max: float | None = None
        note: str = ""
        params: dict[str, float | ArrayField]

    class ProfileFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        format: Literal["tapetum-drift-profile"]
        version: Literal[1]
        source: str
        created_at: str = ""
        frames: int = Field(ge=1)
        duration_s: float = Field(ge=0)
        fps: float = Field(gt=0)
        image_hz: float = Field(gt=0)
        model: str | None = None
        margin: float = Field(gt=0)
        signals: list[SignalField]

    return ProfileFile
