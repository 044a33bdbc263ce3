"""What every benchmark script shares: percentiles, the machine it ran on, writing its JSON.

The scripts run as ``python bench/NAME.py``, so this folder is on ``sys.path`` and they
import it as ``from _common import ...``.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pct(values: Sequence[float] | np.ndarray, *, count: bool = True) -> dict[str, float]:
    """p50/p95/p99 of ``values`` (milliseconds) rounded to 0.01, with ``n`` unless ``count``
    is False."""
    arr = np.asarray(values, np.float64)
    p50, p95, p99 = (float(v) for v in np.percentile(arr, [50, 95, 99]))
    out = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "p99_ms": round(p99, 2)}
    if count:
        out["n"] = int(arr.size)
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(**extra: Any) -> dict[str, Any]:
    """The machine block every result records: CPU model, usable cores, Python, platform and
    the load average when the run started (a busy machine explains a slow run)."""
    from tapetum.detect.runtime import available_cores

    return {
        "cpu": cpu_model(),
        "cpu_cores": available_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **extra,
    }


def write_result(result: dict[str, Any], out: Path) -> None:
    """Write ``result`` as indented JSON to ``out`` (creating its folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
