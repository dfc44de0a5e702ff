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
    sample picker. Up to ``limit`` of ``images/val`` (the shapes segmentation was trained on) and of
    ``images/val_ov`` (each holds a held-out shape, a hexagon or a cross: type its name into the classes to find
    it). The two splits' file names differ (their image ids do). A root without them gives none."""
    if not data_dir:
        return {}
    out = {}
    for split in ("val", "val_ov"):
        folder = uio.join(data_dir, "images", split)
        if not uio.exists(folder):
            continue
        names = [n for n in uio.listdir(folder) if os.path.splitext(n)[1].lower() in (".jpg", ".jpeg", ".png")]
        out.update({os.path.splitext(n)[0]: uio.join(folder, n) for n in names[:limit]})
    return out
