"""Follow an alias: notice when ``models:/NAME@ALIAS`` moves and hand over the new version.

:class:`AliasWatcher` polls the alias every ``poll_s`` seconds in a daemon thread (one
cheap registry read; the file is fetched and hashed only when the version changes) and
calls ``on_change(resolved)``; :meth:`AliasWatcher.trigger` asks for a check now (a SIGHUP,
an admin "reload" call). The callback loads, warms and swaps the model in; if it raises,
the current model stays and that version is not retried until the alias moves again or a
check is triggered by hand. A registry that cannot be reached is logged and retried at the
next poll; the current model keeps running.

Example (what ``tapetum run --model models:/yolox_nano@champion`` does)::

    def swap(resolved: ResolvedModel) -> None:
        detector = load_detector(resolved.path, config=config)
        pipeline.swap_detector(detector)            # warms it, then swaps it in

    watcher = AliasWatcher("models:/yolox_nano@champion", swap, poll_s=10,
                           current=initial)       # the version loaded at start
    watcher.start()
    ...
    watcher.trigger()                              # e.g. from a SIGHUP
    watcher.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tapetum.errors import ConfigError, TapetumError
from tapetum.registry.cache import ArtifactCache
from tapetum.registry.records import ResolvedModel
from tapetum.registry.settings import model_cache_dir
from tapetum.registry.uri import ModelRef, parse_model_ref

if TYPE_CHECKING:
    from tapetum.registry.records import VersionInfo

__all__ = ["AliasWatcher", "ModelSwap", "VersionSource"]

log = logging.getLogger(__name__)


class VersionSource(Protocol):
    """What the watcher needs of a registry (:class:`~tapetum.registry.ModelRegistry` is
    one): the version a reference names now, and that version's hash-checked file."""

    @property
    def shown_uri(self) -> str: ...

    def get_version(self, ref: ModelRef) -> VersionInfo: ...

    def fetch(self, info: VersionInfo, cache: ArtifactCache) -> Path: ...


@dataclass(frozen=True, slots=True)
class ModelSwap:
    """One change the watcher handed over.

    Attributes:
        previous: the model that was in use (None: the first one).
        current: the model now in use.
        at: wall-clock time of the swap (Unix seconds).
        seconds: time the callback took (load + warm-up + swap).
        trigger: ``poll`` or ``manual``.
    """

    previous: ResolvedModel | None
    current: ResolvedModel
    at: float
    seconds: float
    trigger: str

    def as_dict(self) -> dict[str, object]:
        return {
            "from": self.previous.uri if self.previous else None,
            "to": self.current.uri,
            "sha256": self.current.sha256,
            "at": round(self.at, 3),
            "seconds": round(self.seconds, 3),
            "trigger": self.trigger,
        }


@dataclass(slots=True)
class _Counters:
    checks: int = 0
    errors: int = 0
    last_error: str | None = None
    swaps: list[ModelSwap] = field(default_factory=list)


class AliasWatcher:
    """Polls ``ref``'s alias and calls ``on_change`` with each new version.

    Args:
        ref: ``models:/NAME@ALIAS`` (or ``NAME@ALIAS``, or a :class:`ModelRef` with an
            alias).
        on_change: called in the watcher's thread with the new, hash-checked file; it
            swaps the model in. Exceptions keep the current model (logged).
        poll_s: seconds between checks (> 0).
        registry: a store URI or an open :class:`ModelRegistry` (or any
            :class:`VersionSource`; default: the configured store).
        cache_dir: the local model cache.
        current: the version in use now (so the first poll does not swap it again).
    """

    def __init__(
        self,
        ref: ModelRef | str,
        on_change: Callable[[ResolvedModel], None],
        *,
        poll_s: float = 30.0,
        registry: str | VersionSource | None = None,
        cache_dir: str | Path | None = None,
        current: ResolvedModel | None = None,
    ) -> None:
        self.ref = ref if isinstance(ref, ModelRef) else parse_model_ref(ref)
        if self.ref.alias is None:
            raise ConfigError(f"{self.ref}: only an alias can be followed (NAME@ALIAS)")
        if not poll_s > 0:
            raise ConfigError(f"poll interval must be > 0 seconds, got {poll_s}")
        self.on_change = on_change
        self.poll_s = float(poll_s)
        self._registry_arg = registry
        self._registry: VersionSource | None = None
        self._cache = ArtifactCache(model_cache_dir(cache_dir))
        self._current = current
        self._failed: set[tuple[int, str]] = set()
        self._counters = _Counters()
        self._check_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._manual = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state
    @property
    def current(self) -> ResolvedModel | None:
        """The version handed over last (or given at construction)."""
        return self._current

    @property
    def swaps(self) -> list[ModelSwap]:
        """Every swap so far, oldest first."""
        return list(self._counters.swaps)

    @property
    def checks(self) -> int:
        return self._counters.checks

    @property
    def errors(self) -> int:
        """Checks that failed (registry unreachable, bad artifact, callback raised)."""
        return self._counters.errors

    @property
    def last_error(self) -> str | None:
        return self._counters.last_error

    # ------------------------------------------------------------------ control
    def start(self) -> AliasWatcher:
        """Start polling in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._loop, name="alias-watcher", daemon=True)
        self._thread.start()
        return self

    def trigger(self) -> None:
        """Check now instead of at the next poll, retrying a version that failed before.
        Thread-safe; do not call it from a signal handler (count the signal there and call
        this from the main loop)."""
        self._manual = True
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop polling; waits for a check in progress (up to ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            manual, self._manual = self._manual, False
            self.check_now(manual=manual)

    # ------------------------------------------------------------------ checking
    def _reg(self) -> VersionSource:
        from tapetum.registry.store import registry_for

        if self._registry is None:
            arg = self._registry_arg
            self._registry = registry_for(arg) if arg is None or isinstance(arg, str) else arg
        return self._registry

    def check_now(self, *, manual: bool = True) -> ResolvedModel | None:
        """Look at the alias once (in the calling thread); returns the new model when it
        was handed over, else None. Never raises for registry or callback failures: they
        are logged and counted (see :attr:`errors`)."""
        with self._check_lock:
            self._counters.checks += 1
            if manual:
                self._failed.clear()
            try:
                reg = self._reg()
                info = reg.get_version(self.ref)
            except TapetumError as exc:
                self._error(f"checking {self.ref}: {exc}")
                return None
            current = self._current
            key = (info.version, info.sha256)
            if current is not None and (current.version, current.sha256) == key:
                return None
            if key in self._failed:
                return None
            try:
                path = reg.fetch(info, self._cache)
            except TapetumError as exc:
                self._failed.add(key)
                self._error(f"fetching {info.short}: {exc}")
                return None
            resolved = ResolvedModel(
                path, info.name, info.version, info.sha256, self.ref.alias, reg.shown_uri
            )
            started = time.perf_counter()
            try:
                self.on_change(resolved)
            except Exception as exc:
                self._failed.add(key)
                self._error(f"switching to {resolved.describe()} failed, kept the current: {exc}")
                return None
            swap = ModelSwap(
                current,
                resolved,
                time.time(),
                time.perf_counter() - started,
                "manual" if manual else "poll",
            )
            self._counters.swaps.append(swap)
            self._current = resolved
            log.info(
                "model swap: %s → %s in %.2f s (%s)",
                current.describe() if current else "none",
                resolved.describe(),
                swap.seconds,
                swap.trigger,
            )
            return resolved

    def _error(self, message: str) -> None:
        self._counters.errors += 1
        self._counters.last_error = message
        log.error("%s", message)
