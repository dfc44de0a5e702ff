"""What the benchmark scripts share: the repository on ``sys.path`` (they import ``tests.helpers`` and
``tests.services``), one timer, and HTTP helpers.

The scripts run as ``python benchmarks/bench_x.py``, so this folder is on ``sys.path`` and ``import common``
finds this module.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.services import free_port  # noqa: E402 - after the repository is on sys.path

__all__ = ["ROOT", "free_port", "post_json", "seconds", "median_seconds", "write_figures"]


def seconds(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median of :func:`seconds`."""
    return statistics.median(seconds(fn, repeats))


def post_json(url: str, doc, headers: dict | None = None, timeout: float = 300) -> dict:
    """POST ``doc`` as JSON; -> the JSON answer."""
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def write_figures(path: str | None, figures: dict) -> None:
    """A benchmark's ``--json-out``: its figures as JSON at ``path`` (nothing when None)."""
    if path:
        Path(path).write_text(json.dumps(figures, indent=1))
