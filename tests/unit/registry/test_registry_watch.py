"""AliasWatcher against an in-memory registry: it hands over each new version once, keeps
the current model when the swap fails (and does not retry that version until asked), and
survives a registry that is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tapetum.errors import ConfigError, RegistryUnavailableError
from tapetum.registry import AliasWatcher, ArtifactCache, ModelRef, ResolvedModel, VersionInfo

pytestmark = pytest.mark.timeout(30)


class FakeRegistry:
    """The two calls the watcher makes: the alias's version, and its file."""

    shown_uri = "fake://registry"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.version = 1
        self.down = False
        self.lookups = 0

    def get_version(self, ref: ModelRef) -> VersionInfo:
        self.lookups += 1
        if self.down:
            raise RegistryUnavailableError("cannot reach fake://registry")
        return VersionInfo("m", self.version, {"tapetum.sha256": f"{self.version:064x}"})

    def fetch(self, info: VersionInfo, cache: ArtifactCache) -> Path:
        path = self.tmp / f"v{info.version}.onnx"
        path.write_bytes(b"x")
        return path


def _watcher(
    reg: FakeRegistry, on_change: Callable[[ResolvedModel], None], poll_s: float = 60.0
) -> tuple[AliasWatcher, ResolvedModel]:
    current = ResolvedModel(Path("v1.onnx"), "m", 1, f"{1:064x}", "champion")
    watcher = AliasWatcher(
        "models:/m@champion",
        on_change,
        poll_s=poll_s,
        registry=reg,
        cache_dir=reg.tmp / "cache",
        current=current,
    )
    return watcher, current


def test_each_new_version_is_handed_over_once(tmp_path: Path) -> None:
    reg, seen = FakeRegistry(tmp_path), list[ResolvedModel]()
    watcher, _ = _watcher(reg, seen.append)
    assert watcher.check_now() is None  # still version 1: nothing to do
    reg.version = 2
    new = watcher.check_now()
    assert new is not None and new.version == 2 and new.alias == "champion"
    assert watcher.check_now() is None
    assert [m.version for m in seen] == [2] and watcher.current == new
    swap = watcher.swaps[0]
    assert swap.previous is not None and swap.previous.version == 1
    assert swap.as_dict()["to"] == "models:/m/2" and swap.trigger == "manual"


def test_a_failed_swap_keeps_the_current_model_until_the_alias_moves_or_a_manual_check(
    tmp_path: Path,
) -> None:
    reg, attempts = FakeRegistry(tmp_path), list[int]()

    def broken(model: ResolvedModel) -> None:
        attempts.append(model.version)
        raise RuntimeError("input size mismatch")

    watcher, current = _watcher(reg, broken)
    reg.version = 2
    assert watcher.check_now(manual=False) is None
    assert watcher.check_now(manual=False) is None  # not retried by the poll
    assert attempts == [2] and watcher.current == current and watcher.errors == 1
    assert "kept the current: input size mismatch" in (watcher.last_error or "")
    watcher.check_now(manual=True)  # SIGHUP / admin reload: try again
    assert attempts == [2, 2]
    reg.version = 3
    watcher.check_now(manual=False)  # a new version is tried at once
    assert attempts == [2, 2, 3]


def test_a_registry_outage_is_counted_and_the_next_poll_recovers(tmp_path: Path) -> None:
    reg, seen = FakeRegistry(tmp_path), list[ResolvedModel]()
    swapped = threading.Event()

    def on_change(model: ResolvedModel) -> None:
        seen.append(model)
        swapped.set()

    watcher, _ = _watcher(reg, on_change, poll_s=0.05)
    reg.down, reg.version = True, 2
    watcher.start()
    deadline = time.monotonic() + 5
    while watcher.errors < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watcher.errors >= 2 and not seen
    reg.down = False
    assert swapped.wait(5)
    watcher.stop()
    assert [m.version for m in seen] == [2] and watcher.swaps[0].trigger == "poll"


def test_trigger_checks_at_once_instead_of_waiting_for_the_poll(tmp_path: Path) -> None:
    reg, swapped = FakeRegistry(tmp_path), threading.Event()
    watcher, _ = _watcher(reg, lambda model: swapped.set(), poll_s=3600)
    watcher.start()
    reg.version = 2
    watcher.trigger()
    assert swapped.wait(5)
    watcher.stop()
    assert watcher.swaps[0].trigger == "manual"


def test_only_an_alias_can_be_followed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only an alias"):
        AliasWatcher("models:/m/3", lambda model: None)
    with pytest.raises(ConfigError, match="> 0"):
        AliasWatcher("m@champion", lambda model: None, poll_s=0)
