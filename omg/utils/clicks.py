"""The RITM click rule (SamsungLabs/ritm_interactive_segmentation ``isegm/inference/clicker.py``), shared by the
interactive evaluation (:mod:`omg.evaluation.interactive`, NoC) and the refinement's simulated training clicks
(:mod:`omg.training.corrections`): false negatives and false positives, each 1-px zero-padded and
Euclidean-distance-transformed (exact); clicked pixels are zeroed; the next click is positive iff max(dt_fn) >
max(dt_fp) (a tie gives a negative click), at the first row-major pixel of the maximum."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt


@dataclass
class Click:
    y: int
    x: int
    positive: bool


def edt_padded(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, mode="constant")
    return distance_transform_edt(padded)[1:-1, 1:-1]


@dataclass
class Clicker:
    """The RITM click simulator for one object. ``gt``: H x W int (1 object, 0 background, -1 ignore)."""

    gt: np.ndarray
    clicks: list[Click] = field(default_factory=list)

    def __post_init__(self):
        self.gt_mask = self.gt == 1
        self.not_ignore = self.gt != -1
        self.not_clicked = np.ones(self.gt.shape, dtype=bool)

    def next_click(self, pred: np.ndarray) -> Click:
        fn = self.gt_mask & ~pred & self.not_ignore
        fp = ~self.gt_mask & pred & self.not_ignore
        dt_fn = edt_padded(fn) * self.not_clicked
        dt_fp = edt_padded(fp) * self.not_clicked
        fn_max, fp_max = dt_fn.max(), dt_fp.max()
        positive = bool(fn_max > fp_max)
        ys, xs = np.nonzero(dt_fn == fn_max) if positive else np.nonzero(dt_fp == fp_max)
        click = Click(int(ys[0]), int(xs[0]), positive)
        self.clicks.append(click)
        self.not_clicked[click.y, click.x] = False
        return click
