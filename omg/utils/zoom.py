"""RITM's zoom-in for interactive segmentation (SamsungLabs/ritm_interactive_segmentation at b9b4460,
``isegm/inference/transforms/zoom_in.py`` L9-175 and ``isegm/utils/misc.py`` L36-79): after the first click, an
object is answered on a crop of the image around its previous mask and its positive clicks, expanded, so that
the network sees the object larger; the answer is pasted back into the image. The crop is kept while the
positive clicks stay inside it and the new one overlaps it enough, so that a run of corrections usually costs one
backbone pass on the crop.

Ours for the refinement model (docs/model.md §7.3, "Zoom-in"); the released OMG-Seg has no such step. The crop is
resized like any image, by the predictor's test-time resize (RITM resizes its long side to 400 px; ``target_size``).
RITM's ``min_crop_size`` is 200 px on benchmark images of ~480 px; here it is a fraction of the image's longer side,
so that one setting fits any image size. Pure NumPy: the predictor (:mod:`omg.inference.image_tasks`) runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from omg.utils.typed import FieldError


class Roi(NamedTuple):
    """A crop, RITM's inclusive pixel bounds: rows ``top..bottom``, columns ``left..right``."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """XYXY, exclusive right and bottom (slicing and pasting)."""
        return self.left, self.top, self.right + 1, self.bottom + 1

    def crop(self, a: np.ndarray) -> np.ndarray:
        """The crop of an H x W (x C) array, contiguous."""
        return np.ascontiguousarray(a[self.top : self.bottom + 1, self.left : self.right + 1])


def _segments_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return inter / max(1e-6, max(a[1], b[1]) - min(a[0], b[0]) + 1)


def roi_iou(a: Roi, b: Roi) -> float:
    """RITM's ``get_bbox_iou``: the product of the row and the column overlaps (not the area IoU)."""
    return _segments_iou((a.top, a.bottom), (b.top, b.bottom)) * _segments_iou((a.left, a.right), (b.left, b.right))


@dataclass(frozen=True)
class ZoomIn:
    """The settings (RITM's defaults of its CVPR evaluation mode but ``min_crop``, see the module)."""

    #: the crop is the box of the previous mask and the positive clicks, scaled by this about its centre
    expansion: float = 1.4
    #: the crop's smallest height and width, as a fraction of the image's longer side
    min_crop: float = 0.4
    #: the first ``skip_clicks`` clicks of an object see the whole image
    skip_clicks: int = 1
    #: a new crop replaces the kept one when a positive click falls outside the kept one or their overlap
    #: (:func:`roi_iou`) is below this
    recompute_iou: float = 0.5

    def __post_init__(self):
        if not self.expansion >= 1:
            raise FieldError("expansion", f"must be >= 1, got {self.expansion}")
        if not 0 < self.min_crop <= 1:
            raise FieldError("min_crop", f"must be in (0, 1], got {self.min_crop}")
        if self.skip_clicks < 0:
            raise FieldError("skip_clicks", f"must be >= 0, got {self.skip_clicks}")
        if not 0 <= self.recompute_iou <= 1:
            raise FieldError("recompute_iou", f"must be in [0, 1], got {self.recompute_iou}")

    def object_roi(self, mask: np.ndarray, positives: np.ndarray) -> Roi:
        """RITM's ``get_object_roi``: the box of ``mask`` (H x W bool) with the positive clicks (K x 2, x y in
        pixels) set, expanded by ``expansion`` to at least ``min_crop`` of the longer side, clamped to the image."""
        h, w = mask.shape
        m = mask.copy()
        for x, y in np.asarray(positives, dtype=np.float64).reshape(-1, 2):
            m[min(int(y), h - 1), min(int(x), w - 1)] = True
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        rc, cc = 0.5 * (top + bottom), 0.5 * (left + right)
        least = self.min_crop * max(h, w)
        height = max(self.expansion * (bottom - top + 1), least)
        width = max(self.expansion * (right - left + 1), least)
        return Roi(
            max(0, int(round(rc - 0.5 * height))),
            min(h - 1, int(round(rc + 0.5 * height))),
            max(0, int(round(cc - 0.5 * width))),
            min(w - 1, int(round(cc + 0.5 * width))),
        )

    def next_roi(self, clicks: int, mask: np.ndarray | None, positives: np.ndarray, kept: Roi | None) -> Roi | None:
        """The crop an object's next pass runs on (RITM's ``ZoomIn.transform``): None (the whole image) for its
        first ``skip_clicks`` clicks or without a previous answer (``mask``, H x W bool, None or empty); else the
        ``kept`` crop, unless a positive click (K x 2, x y) lies outside it or the new crop overlaps it less than
        ``recompute_iou``, then the new one."""
        if clicks <= self.skip_clicks or mask is None or not mask.any():
            return None
        new = self.object_roi(mask, positives)
        if kept is None or roi_iou(new, kept) < self.recompute_iou:
            return new
        for x, y in np.asarray(positives, dtype=np.float64).reshape(-1, 2):  # RITM's check_object_roi
            if not (kept.top <= y < kept.bottom and kept.left <= x < kept.right):
                return new
        return kept


def clicks_in(roi: Roi, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The clicks (K x 2, x y in image pixels) inside ``roi``, in the crop's pixels, with their labels (a negative
    click outside the crop has nothing there to remove)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    x0, y0, x1, y1 = roi.box
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    return pts[inside] - np.array([x0, y0], np.float32), np.asarray(labels)[inside]


def paste(crop_mask: np.ndarray, roi: Roi, size: Sequence[int]) -> np.ndarray:
    """A crop's H' x W' bool mask -> the image's H x W mask (nothing outside the crop)."""
    out = np.zeros(tuple(size), dtype=bool)
    out[roi.top : roi.bottom + 1, roi.left : roi.right + 1] = crop_mask
    return out
