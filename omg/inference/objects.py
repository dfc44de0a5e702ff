"""Object prompts of interactive refinement (docs/model.md §7.3): one object's clicks, each positive or negative,
an optional box and an optional previous mask, in pixels of the original image; checked, scaled to the network's
input and padded into the model's :class:`~omg.modeling.prompts.Prompts`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omg.modeling.prompts import Prompts, points_to_boxes
from omg.modeling.refine import binary_prev
from omg.utils.zoom import Roi, clicks_in


@dataclass
class ObjectPrompt:
    """One object's prompts for a model with ``refinement``, in pixels of the original image: ``points`` K x 2
    (x, y) with ``labels`` K (1 positive, the default; 0 negative), an optional ``box`` (XYXY) and an optional
    previous ``mask``: the ``logits`` plane of this object from the last
    :class:`~omg.inference.results.InteractiveResult` (the mask grid, as returned), or an H x W bool /
    probability mask of the image. The object's location query is built from its box, else from its first
    positive click (the released encoding); every click enters as a token. One positive click and nothing else
    is the released prompt."""

    points: Any = ()
    labels: Any = None
    box: Any = None
    mask: np.ndarray | None = None

    def checked(self, j: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """-> (points K x 2, labels K, box 4 or None), checked against the image ``size`` (height, width); the
        errors name object ``j`` and the field."""
        h, w = size
        pts, labels = np.asarray(self.points, dtype=np.float32).reshape(-1, 2), self.label_array
        if len(labels) != len(pts):
            raise ValueError(f"object {j}: {len(pts)} points but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"object {j}: labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
        bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"object {j}: point {k} {pts[k].tolist()} lies outside the {w}x{h} image")
        box = None
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float32).reshape(-1)
            if box.shape != (4,) or box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h or (box[2:] <= box[:2]).any():
                raise ValueError(f"object {j}: box {box.tolist()} is not an XYXY box inside the {w}x{h} image")
        if box is None and not (labels == 1).any():
            raise ValueError(f"object {j}: needs a positive click or a box")
        return pts, labels.astype(np.int64), box

    @property
    def num_clicks(self) -> int:
        return len(np.asarray(self.points).reshape(-1, 2))

    @property
    def label_array(self) -> np.ndarray:
        """The clicks' labels (all positive when ``labels`` is not given)."""
        return np.ones(self.num_clicks, np.int64) if self.labels is None else np.asarray(self.labels).reshape(-1)

    def replay_start(self) -> int:
        """How many clicks the first pass of a replay takes (0: no replay, the object as given): an object with
        clicks and no previous mask is answered click by click from its first positive click (or its first click,
        with a box)."""
        labels = self.label_array
        if self.mask is not None or len(labels) == 0:
            return 0
        return 1 if self.box is not None or labels[0] == 1 else int(np.argmax(labels == 1)) + 1

    def key(self, n: int) -> tuple:
        """The object after its first ``n`` clicks, as a hashable key: (its box, its clicks (x, y, label))."""
        labels, pts = self.label_array, np.asarray(self.points, dtype=np.float64).reshape(-1, 2)[:n]
        box = None if self.box is None else tuple(float(v) for v in np.asarray(self.box).reshape(-1))
        return box, tuple((float(x), float(y), int(v)) for (x, y), v in zip(pts, labels[:n]))

    def anchors(self, n: int) -> np.ndarray:
        """What a zoom-in crop must hold besides the object's mask (K x 2, x y): its positive clicks among the first
        ``n`` and its box's corners."""
        pts = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)[:n][self.label_array[:n] == 1]
        if self.box is None:
            return pts
        x0, y0, x1, y1 = np.asarray(self.box, dtype=np.float32).reshape(-1)
        return np.concatenate([pts, [[x0, y0], [max(x0, x1 - 1), max(y0, y1 - 1)]]])

    def cropped(self, roi: Roi, mask: np.ndarray | None) -> "ObjectPrompt":
        """The object in the pixels of the zoom-in crop ``roi`` (:mod:`omg.utils.zoom`): its clicks inside the crop,
        its box clipped to it, ``mask`` (already the crop's) as its previous mask."""
        pts, labels = clicks_in(roi, self.points, self.label_array)
        box = None
        if self.box is not None:
            x0, y0, x1, y1 = roi.box
            box = np.clip(np.asarray(self.box, np.float32).reshape(-1) - [x0, y0, x0, y0], 0, [x1 - x0, y1 - y0] * 2)
        return ObjectPrompt(pts, labels, box, mask)

    def first_clicks(self, n: int, mask: np.ndarray | None) -> "ObjectPrompt":
        """The object after its first ``n`` clicks, with ``mask`` as its previous mask."""
        labels = None if self.labels is None else np.asarray(self.labels).reshape(-1)[:n]
        return ObjectPrompt(np.asarray(self.points, dtype=np.float32).reshape(-1, 2)[:n], labels, self.box, mask)


class _Scaled(NamedTuple):
    query_box: np.ndarray  # 4: the box, or the first positive click (a point: x y x y), in input pixels
    is_point: bool
    clicks: np.ndarray  # K x 2, input pixels
    labels: np.ndarray  # K
    prev: torch.Tensor | None  # h4 x w4 logits


def prev_logits(
    mask: np.ndarray, j: int, original: tuple[int, int], resized: tuple[int, int], padded: tuple[int, int], grid
) -> torch.Tensor:
    """Object j's previous mask -> h4 x w4 logits of a binary mask (:func:`~omg.modeling.refine.binary_prev`):
    the ``logits`` plane an interactive result returned, or an H x W bool / probability mask of the image (resized
    to the input, padded, averaged over each cell of the mask grid: > 0.5 is in the mask)."""
    m = np.asarray(mask)
    if m.shape == tuple(grid):
        return binary_prev(torch.from_numpy(m.astype(np.float32)))
    if m.shape != tuple(original):
        raise ValueError(
            f"object {j}: mask of shape {m.shape} is neither the image's {tuple(original)} nor the mask grid "
            f"{tuple(grid)} of the logits an interactive result returns"
        )
    prob = torch.from_numpy(m.astype(np.float32)).clamp(0, 1)[None, None]
    (rh, rw), (ph, pw) = resized, padded
    prob = F.pad(F.interpolate(prob, size=(rh, rw), mode="bilinear", align_corners=False), (0, pw - rw, 0, ph - rh))
    return binary_prev(F.adaptive_avg_pool2d(prob, tuple(grid))[0, 0] - 0.5)


def to_prompts(
    per_image: Sequence[Sequence[ObjectPrompt]],
    original: Sequence[tuple[int, int]],
    resized: Sequence[tuple[int, int]],
    padded: tuple[int, int],
    grid: tuple[int, int],
) -> Prompts:
    """Each image's objects -> location prompts with every click, its label and the previous masks (NaN planes for
    objects without one), scaled to the network's input (``resized`` of each image, ``padded`` the input's size,
    ``grid`` the mask features' size)."""
    if len(per_image) != len(original):
        raise ValueError(f"objects for {len(per_image)} images, but {len(original)} image(s) are set")
    if any(not objs for objs in per_image):
        raise ValueError("task 'interactive': every image needs at least one object")
    rows = []
    for i, objs in enumerate(per_image):
        (h, w), (rh, rw) = original[i], resized[i]
        scale = np.array([rw / w, rh / h], dtype=np.float32)
        row = []
        for j, obj in enumerate(objs):
            pts, labels, box = obj.checked(j, (h, w))
            pts = pts * scale
            first = pts[int(np.flatnonzero(labels == 1)[0])] if box is None else None
            query = np.concatenate([first, first]) if box is None else box * np.concatenate([scale, scale])
            prev = None if obj.mask is None else prev_logits(obj.mask, j, (h, w), (rh, rw), padded, grid)
            row.append(_Scaled(query, box is None, pts, labels, prev))
        rows.append(row)
    n, p = len(rows), max(len(r) for r in rows)
    k = max(1, max(len(o.clicks) for r in rows for o in r))
    boxes, valid, is_point = (
        torch.zeros(n, p, 4),
        torch.zeros(n, p, dtype=torch.bool),
        torch.zeros(n, p, dtype=torch.bool),
    )
    xy, labels = torch.zeros(n, p, k, 2), torch.full((n, p, k), -1, dtype=torch.long)
    prev = torch.full((n, p, *grid), float("nan"))
    for i, row in enumerate(rows):
        for j, o in enumerate(row):
            valid[i, j], is_point[i, j] = True, o.is_point
            q = torch.from_numpy(o.query_box)
            boxes[i, j] = points_to_boxes(q[None, :2])[0] if o.is_point else q
            xy[i, j, : len(o.clicks)] = torch.from_numpy(o.clicks)
            labels[i, j, : len(o.labels)] = torch.from_numpy(o.labels)
            if o.prev is not None:
                prev[i, j] = o.prev
    sizes = torch.tensor(list(resized), dtype=torch.long)
    return Prompts(boxes, valid, sizes, is_point, xy, labels, None if prev.isnan().all() else prev)
