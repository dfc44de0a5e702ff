"""`omg serve`: the interactive web demo (see :mod:`omg.serve.app`)."""

from __future__ import annotations

import os
from pathlib import Path

from omg.inference.schema import Limits
from omg.serve.app import ServeApp
from omg.serve.remote import RemoteModel
from omg.serve.server import make_server
from omg.utils import io as uio

__all__ = [
    "Limits",
    "RemoteModel",
    "ServeApp",
    "make_server",
    "default_checkpoint",
    "find_samples",
]


def default_checkpoint(runs_dir: str) -> str | None:
    """The newest model a training run exported under ``runs_dir/train/<run>/model.pt`` (after ``make demo``: the
    demo model), or None."""
    models = [p for p in (Path(runs_dir) / "train").glob("*/model.pt") if p.is_file()]
    return str(max(models, key=lambda p: p.stat().st_mtime)) if models else None


def find_samples(data_dir: str | None, limit: int = 24) -> dict[str, str]:
    """``{name: URI}`` of omg-shapes validation images under ``data_dir`` (a path or any fsspec URI): the page's
    sample picker. A root without ``images/val`` gives none."""
    if not data_dir:
        return {}
    folder = uio.join(data_dir, "images", "val")
    if not uio.exists(folder):
        return {}
    files = [n for n in uio.listdir(folder) if os.path.splitext(n)[1].lower() in (".jpg", ".jpeg", ".png")][:limit]
    return {os.path.splitext(n)[0]: uio.join(folder, n) for n in files}
