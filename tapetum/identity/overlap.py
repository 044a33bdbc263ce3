"""Simultaneous sightings on cameras whose views overlap: who is the same person *now*.

Two cameras that see the same ground see each person at the same moment in both views,
standing at one spot of that ground. Appearance alone links such sightings poorly (the
views differ in angle, light and scale), so each moment is matched by **position** as well:

* **geometry** — with a ground-plane homography per camera (topology file), two foot
  points (bottom centre of the box) are compared on the ground plane, in its units,
  gated by the link's ``max_distance``. Without homographies the pair's mapping from one
  image's ground to the other's (itself a homography: both views see one plane) is
  **learned online from co-occurrence**: every moment, each pair of people *moving* in
  both views at once is a candidate correspondence; the true pairs agree on one mapping
  and the others scatter, so RANSAC over the recent candidates finds it
  (:class:`CoOccurrenceCalibrator`). Standing people and static false detections are
  left out: they pair with everyone and would pull the fit towards a degenerate map.
* **moments** — each camera keeps its last frames; every arriving frame is matched with
  the other camera's frame nearest in time (within ``sync_tolerance_s``), so streams that
  arrive interleaved, or one a few frames behind the other, still meet.
* **one-to-one** — per moment, the sightings of the two cameras are matched by an
  optimal assignment on position (normalised to the gate) plus a weighted appearance
  distance of the tracks' mean embeddings; a pair matched at enough moments (and the best
  partner of both) is a link for the identity service to make.

The recent moments are kept (``replay_s``): when the learned mapping first becomes
available, they are replayed, so the people seen before calibration are linked too.

Example:
    >>> import numpy as np
    >>> moment = Moment(0.0, np.array([1]), np.array([[100.0, 200.0]]), np.array([80.0]),
    ...                 np.array([[40.0, 0.0]]))
    >>> moment.size
    1
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tapetum._types import BoolArray, Float64Array, IntArray
from tapetum.errors import ConfigError
from tapetum.identity.topology import apply_homography
from tapetum.track.assignment import linear_assignment

_GATED = 1e6
#: Seconds a pair's votes are kept after its last match.
_VOTE_MEMORY_S = 30.0

#: ``(serials_a, serials_b) -> (Na, Nb)`` cosine similarity of the tracks' mean embeddings,
#: NaN where a track has no appearance yet (the identity service passes a bound method).
SimilarityFn = Callable[[IntArray, IntArray], Float64Array]


@dataclass(frozen=True, slots=True)
class OverlapConfig:
    """How simultaneous sightings are matched.

    Attributes:
        sync_tolerance_s: frames of two cameras closer in time than this are one moment
            (a little over a frame interval: people move a few centimetres in it).
        gate_h: with a learned mapping, the largest distance between a mapped foot point
            and the other camera's, in that camera's box heights.
        min_similarity: appearance gate (cosine of the tracks' mean embeddings); lenient,
            position decides among nearby people.
        appearance_weight: weight of the appearance distance against the normalised
            position distance in the matching cost.
        min_votes: moments a pair must be matched at before it is a link.
        learn: learn the mapping from co-occurrence when the topology gives no
            homographies.
        min_samples: candidate correspondences needed before the first fit.
        min_pairs: distinct track pairs among the fit's inliers (each with at least
            ``min_pair_inliers``) for a fit to be accepted.
        min_pair_inliers: inliers a track pair needs to count towards ``min_pairs``.
        refit_every: new candidates between two fits.
        max_samples: candidates kept (the most recent).
        ransac_threshold_h: RANSAC inlier distance, in the target camera's box heights.
        min_speed_h_per_s: a candidate needs both people moving at least this fast, in
            box heights per second.
        replay_s: moments kept for replay after the first fit.
    """

    sync_tolerance_s: float = 0.05
    gate_h: float = 0.5
    min_similarity: float = 0.5
    appearance_weight: float = 0.5
    min_votes: int = 10
    learn: bool = True
    min_samples: int = 80
    min_pairs: int = 3
    min_pair_inliers: int = 8
    refit_every: int = 80
    max_samples: int = 4000
    ransac_threshold_h: float = 0.15
    min_speed_h_per_s: float = 0.1
    replay_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("sync_tolerance_s", "gate_h", "ransac_threshold_h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"OverlapConfig.{name} must be > 0, got {value}")
        for name in ("appearance_weight", "min_speed_h_per_s", "replay_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"OverlapConfig.{name} must be ≥ 0, got {value}")
        if not -1.0 <= self.min_similarity < 1.0:
            raise ConfigError(
                f"OverlapConfig.min_similarity must be in [-1, 1), got {self.min_similarity}"
            )
        counts = (
            "min_votes",
            "min_samples",
            "min_pairs",
            "min_pair_inliers",
            "refit_every",
            "max_samples",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise ConfigError(f"OverlapConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.max_samples < self.min_samples:
            raise ConfigError("OverlapConfig.max_samples must be ≥ min_samples")


@dataclass(frozen=True, slots=True)
class Moment:
    """One camera's tracked people at one frame.

    Attributes:
        timestamp_s: frame time.
        serials: (N,) the identity service's track serials.
        foot: (N, 2) foot points (bottom centre of the box), pixels.
        height: (N,) box heights, pixels.
        velocity: (N, 2) foot velocity, pixels per second.
    """

    timestamp_s: float
    serials: IntArray
    foot: Float64Array
    height: Float64Array
    velocity: Float64Array

    @property
    def size(self) -> int:
        return int(self.serials.shape[0])


class PairGeometry:
    """Distance between two cameras' sightings, normalised so that 1 is the gate."""

    def distance(self, a: Moment, b: Moment) -> Float64Array:
        """(Na, Nb) normalised distances; ``inf`` where a point maps nowhere."""
        raise NotImplementedError


@dataclass(frozen=True)
class GroundPlaneGeometry(PairGeometry):
    """Both cameras' homographies to one ground plane (given in the topology).

    Attributes:
        to_ground_a, to_ground_b: (3, 3) image → ground of each camera.
        max_distance: gate on the ground plane, in its units.
    """

    to_ground_a: Float64Array
    to_ground_b: Float64Array
    max_distance: float

    def distance(self, a: Moment, b: Moment) -> Float64Array:
        ga = apply_homography(self.to_ground_a, a.foot)
        gb = apply_homography(self.to_ground_b, b.foot)
        d = np.linalg.norm(ga[:, None, :] - gb[None, :, :], axis=2) / self.max_distance
        out: Float64Array = np.where(np.isfinite(d), d, np.inf)
        return out


@dataclass(frozen=True)
class LearnedImageGeometry(PairGeometry):
    """A learned mapping from camera a's image ground to camera b's (a homography),
    compared in both images in units of the box heights there.

    Attributes:
        a_to_b: (3, 3) homography, image a → image b.
        gate_h: gate, in box heights.
        inliers: correspondences that supported the fit.
        pairs: distinct track pairs among them.
    """

    a_to_b: Float64Array
    gate_h: float
    inliers: int = 0
    pairs: int = 0
    b_to_a: Float64Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "b_to_a", np.linalg.inv(self.a_to_b))

    def distance(self, a: Moment, b: Moment) -> Float64Array:
        ab = apply_homography(self.a_to_b, a.foot)
        ba = apply_homography(self.b_to_a, b.foot)
        in_b = np.linalg.norm(ab[:, None, :] - b.foot[None, :, :], axis=2) / b.height[None, :]
        in_a = np.linalg.norm(a.foot[:, None, :] - ba[None, :, :], axis=2) / a.height[:, None]
        d = 0.5 * (in_a + in_b) / self.gate_h
        out: Float64Array = np.where(np.isfinite(d), d, np.inf)
        return out


class CoOccurrenceCalibrator:
    """Learns the a → b ground mapping from people moving in both views at once.

    Candidates are all pairs of moving people at a moment (the true pairs among them
    agree on one homography); :meth:`fit` runs RANSAC over the most recent
    ``max_samples`` and accepts the result only when it is supported by several distinct
    track pairs, maps people one-to-one (no sighting in a agrees with two in b at one
    moment) and is well conditioned.
    """

    def __init__(self, config: OverlapConfig) -> None:
        self.config = config
        cap = config.max_samples
        self._foot_a = np.zeros((cap, 2))
        self._foot_b = np.zeros((cap, 2))
        self._height_b = np.zeros(cap)
        self._key = np.zeros((cap, 2), np.int64)  # track serials (a, b)
        self._moment = np.zeros(cap, np.int64)
        self._n = 0
        self._head = 0
        self._since_fit = 0
        self._moments = 0
        #: Fits tried and accepted so far.
        self.fits_tried = 0
        self.fits_accepted = 0

    def __len__(self) -> int:
        return self._n

    def add(self, a: Moment, b: Moment) -> None:
        """Record the candidates of one moment: every pair of people moving in both."""
        cfg = self.config
        self._moments += 1
        move_a = np.linalg.norm(a.velocity, axis=1) >= cfg.min_speed_h_per_s * a.height
        move_b = np.linalg.norm(b.velocity, axis=1) >= cfg.min_speed_h_per_s * b.height
        ia, ib = np.flatnonzero(move_a), np.flatnonzero(move_b)
        if ia.size == 0 or ib.size == 0:
            return
        pa, pb = np.repeat(ia, ib.size), np.tile(ib, ia.size)
        k = pa.shape[0]
        slots = (self._head + np.arange(k)) % self.config.max_samples
        self._foot_a[slots] = a.foot[pa]
        self._foot_b[slots] = b.foot[pb]
        self._height_b[slots] = b.height[pb]
        self._key[slots, 0] = a.serials[pa]
        self._key[slots, 1] = b.serials[pb]
        self._moment[slots] = self._moments
        self._head = int((self._head + k) % self.config.max_samples)
        self._n = min(self._n + k, self.config.max_samples)
        self._since_fit += k

    @property
    def due(self) -> bool:
        """Enough new candidates for another fit: ``refit_every`` at first, twice as many
        after each accepted fit (up to 64 times): a settled mapping needs few refits, and
        each costs a RANSAC run on the frame that triggers it."""
        wait = self.config.refit_every << min(self.fits_accepted, 6)
        return self._n >= self.config.min_samples and self._since_fit >= wait

    def fit(self) -> LearnedImageGeometry | None:
        """RANSAC over the kept candidates; None when no acceptable mapping is found."""
        import cv2

        cfg = self.config
        self._since_fit = 0
        self.fits_tried += 1
        n = self._n
        src, dst = self._foot_a[:n], self._foot_b[:n]
        threshold = cfg.ransac_threshold_h * float(np.median(self._height_b[:n]))
        h, mask = cv2.findHomography(
            src.astype(np.float32),
            dst.astype(np.float32),
            cv2.RANSAC,
            threshold,
            maxIters=3000,
            confidence=0.999,
        )
        if h is None or mask is None:
            return None
        inlier = mask.ravel().astype(np.bool_)
        if not self._acceptable(np.asarray(h, np.float64), inlier):
            return None
        keys = self._key[:n][inlier]
        _, counts = np.unique(keys, axis=0, return_counts=True)
        pairs = int(np.count_nonzero(counts >= cfg.min_pair_inliers))
        self.fits_accepted += 1
        return LearnedImageGeometry(np.asarray(h, np.float64), cfg.gate_h, int(inlier.sum()), pairs)

    def _acceptable(self, h: Float64Array, inlier: BoolArray) -> bool:
        cfg = self.config
        n = self._n
        if inlier.sum() < cfg.min_samples // 3:
            return False
        sv = np.linalg.svd(h, compute_uv=False)
        if sv[-1] / sv[0] < 1e-9:
            return False
        keys = self._key[:n][inlier]
        _, counts = np.unique(keys, axis=0, return_counts=True)
        if np.count_nonzero(counts >= cfg.min_pair_inliers) < cfg.min_pairs:
            return False
        # One-to-one: at one moment, a person in a agrees with at most one person in b
        # (and the other way round). A degenerate map squeezing a region of a onto one
        # spot of b agrees with everyone there.
        moment = self._moment[:n][inlier]
        for side in (0, 1):
            combo = np.stack([moment, keys[:, side]], axis=1)
            _, c = np.unique(combo, axis=0, return_counts=True)
            if np.count_nonzero(c > 1) > 0.1 * c.shape[0]:
                return False
        # The inliers must cover some ground, not one spot.
        spread = np.ptp(self._foot_b[:n][inlier], axis=0).max()
        return bool(spread >= 2.0 * float(np.median(self._height_b[:n][inlier])))


class OverlapPair:
    """Matching of simultaneous sightings between two overlapping cameras ``a`` < ``b``.

    Args:
        a, b: camera indexes.
        config: matching and learning settings.
        geometry: a given ground-plane geometry; None learns one (if ``config.learn``).
    """

    def __init__(
        self, a: int, b: int, config: OverlapConfig, geometry: PairGeometry | None = None
    ) -> None:
        self.a, self.b = a, b
        self.config = config
        self.geometry = geometry
        self.calibrator = (
            CoOccurrenceCalibrator(config) if geometry is None and config.learn else None
        )
        self._recent: dict[int, deque[Moment]] = {a: deque(maxlen=64), b: deque(maxlen=64)}
        self._history: deque[tuple[Moment, Moment]] = deque()
        self._votes: dict[tuple[int, int], int] = {}
        self._last_vote_s: dict[tuple[int, int], float] = {}
        #: Moments evaluated so far.
        self.moments = 0

    @property
    def calibrated(self) -> bool:
        return self.geometry is not None

    def observe(
        self, camera: int, moment: Moment, similarity: SimilarityFn
    ) -> list[tuple[int, int, int]]:
        """Take one camera's frame and match it with the other camera's frame nearest in
        time (within ``sync_tolerance_s``); returns ``(serial_a, serial_b, votes)`` for the
        pairs matched (none when the other camera has no frame that close yet, or no
        mapping is known). Streams that arrive interleaved match every frame twice, once
        on each arrival, a frame interval apart at most; one that lags matches when it
        catches up.

        Args:
            camera: ``a`` or ``b``.
            moment: that camera's tracked people at this frame.
            similarity: ``(serials_a, serials_b) -> (Na, Nb)`` cosine of the tracks' mean
                embeddings (NaN where one has no appearance yet).
        """
        other = self.b if camera == self.a else self.a
        self._recent[camera].append(moment)
        match = self._find(other, moment.timestamp_s)
        if match is None or moment.size == 0 or match.size == 0:
            return []
        ma, mb = (moment, match) if camera == self.a else (match, moment)
        return self._evaluate(ma, mb, similarity, learn=True)

    def _find(self, camera: int, t: float) -> Moment | None:
        """The other camera's kept frame nearest to ``t``, if within the tolerance."""
        best, best_dt = None, self.config.sync_tolerance_s
        for m in reversed(self._recent[camera]):
            dt = abs(m.timestamp_s - t)
            if dt <= best_dt:
                best, best_dt = m, dt
            if m.timestamp_s < t - self.config.sync_tolerance_s:
                break
        return best

    def _evaluate(
        self, a: Moment, b: Moment, similarity: SimilarityFn, *, learn: bool
    ) -> list[tuple[int, int, int]]:
        cfg = self.config
        self.moments += 1
        if learn:
            self._remember(a, b)
        if self.calibrator is not None and learn:
            self.calibrator.add(a, b)
            if self.calibrator.due:
                fitted = self.calibrator.fit()
                if fitted is not None:
                    first = self.geometry is None
                    self.geometry = fitted
                    if first:
                        return self._replay(similarity)
        if self.geometry is None:
            return []
        if self.moments % 256 == 0:
            self._drop_stale_votes(max(a.timestamp_s, b.timestamp_s))
        dist = self.geometry.distance(a, b)
        sim = similarity(a.serials, b.serials)
        known = np.isfinite(sim)
        app = np.where(known, np.clip((1.0 - sim) / (1.0 - cfg.min_similarity), 0.0, None), 0.5)
        ok = (dist <= 1.0) & (~known | (sim >= cfg.min_similarity))
        cost = np.where(ok, dist + cfg.appearance_weight * app, _GATED)
        matches, _, _ = linear_assignment(cost, 1.0 + cfg.appearance_weight * 1.0)
        out = []
        for i, j in matches.tolist():
            key = (int(a.serials[i]), int(b.serials[j]))
            votes = self._votes.get(key, 0) + 1
            self._votes[key] = votes
            self._last_vote_s[key] = max(a.timestamp_s, b.timestamp_s)
            out.append((key[0], key[1], votes))
        return out

    def _remember(self, a: Moment, b: Moment) -> None:
        if self.geometry is not None:
            self._history.clear()
            return
        self._history.append((a, b))
        horizon = a.timestamp_s - self.config.replay_s
        while self._history and self._history[0][0].timestamp_s < horizon:
            self._history.popleft()

    def _replay(self, similarity: SimilarityFn) -> list[tuple[int, int, int]]:
        history, self._history = list(self._history), deque()
        out: list[tuple[int, int, int]] = []
        for a, b in history:
            out += self._evaluate(a, b, similarity, learn=False)
        return out

    def best_partner(self, serial_a: int, serial_b: int, recent_s: float = 1.0) -> bool:
        """True when no other pair of either track, matched within the last ``recent_s``
        before this pair's latest match, has more votes: a partner of long ago (before a
        tracker handed the track to someone else) does not count."""
        key = (serial_a, serial_b)
        v, now = self._votes.get(key, 0), self._last_vote_s.get(key, -math.inf)
        for (x, y), w in self._votes.items():
            if (
                (x == serial_a) != (y == serial_b)
                and w > v
                and self._last_vote_s[(x, y)] >= now - recent_s
            ):
                return False
        return True

    def _drop_stale_votes(self, now: float) -> None:
        """Votes of pairs not matched for ``_VOTE_MEMORY_S`` no longer decide anything (a
        partner counts only while recent, see :meth:`best_partner`): drop them, so the
        table holds the pairs of the last half minute, not of the stream's life."""
        horizon = now - _VOTE_MEMORY_S
        stale = [k for k, t in self._last_vote_s.items() if t < horizon]
        for k in stale:
            del self._votes[k]
            del self._last_vote_s[k]

    def rename(self, old: int, new: int) -> None:
        """A track goes on under a new serial (the service cut it): its votes follow."""

        def renamed(key: tuple[int, int]) -> tuple[int, int]:
            return (new if key[0] == old else key[0], new if key[1] == old else key[1])

        self._votes = {renamed(k): v for k, v in self._votes.items()}
        self._last_vote_s = {renamed(k): v for k, v in self._last_vote_s.items()}

    def forget(self, serials: npt.ArrayLike) -> None:
        """Drop the votes of tracks the service no longer keeps."""
        gone = set(np.asarray(serials, np.int64).reshape(-1).tolist())
        if gone:
            self._votes = {
                k: v for k, v in self._votes.items() if k[0] not in gone and k[1] not in gone
            }
            self._last_vote_s = {k: self._last_vote_s[k] for k in self._votes}

    @property
    def pairs_with_votes(self) -> int:
        return len(self._votes)
