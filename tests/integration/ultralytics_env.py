"""Ultralytics in tests: offline, quiet, settings in a scratch folder.

Ultralytics checks the network when imported (``ONLINE``), may pip-install missing
requirements and fetch fonts; with ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL=false`` it does
neither. The variables must be set before the first ``import ultralytics``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest


def offline_ultralytics(config_dir: Path) -> ModuleType:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    # Through the export module, which undoes Ultralytics' global patch of PIL.Image.open
    # (the server tests in this process decode corrupt uploads through Pillow).
    from tapetum.detect.export import _ultralytics

    return _ultralytics()
