"""Mask encodings shared by readers, writers and metrics.

- Panoptic id maps in PNG: RGB with ``id = R + 256 * G + 256**2 * B``; id 0 is VOID.
- COCO RLE via pycocotools: ``{"size": [H, W], "counts": str}`` (compressed, ASCII for JSON).
- Boxes are XYXY ``[x0, y0, x1, y1]`` in pixel edges in code (:func:`mask_box`); COCO ``[x, y, w, h]``
  (``w = x_max - x_min + 1``) only in files (:func:`coco_bbox`, :func:`xywh`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W int64 segment ids."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """H x W ids in [0, 2**24) -> H x W x 3 uint8."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
        raise ValueError("panoptic ids must lie in [0, 2**24)")
    out = np.empty(ids.shape + (3,), dtype=np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = (ids // 256) % 256
    out[..., 2] = ids // 65536
    return out


def rle_encode(mask: np.ndarray) -> dict:
    """H x W bool -> compressed COCO RLE with ``counts`` as ``str`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (compressed ``str``/``bytes`` counts, or uncompressed list counts) -> H x W bool."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """COCO polygon list -> H x W bool."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_box(mask: np.ndarray) -> list[int]:
    """Tight box ``[x0, y0, x1, y1]`` of a bool mask (pixel edges: ``x1`` = last column + 1); zeros when empty.

    XYXY is the one box convention in code (prompts, results, the web API); COCO's ``[x, y, w, h]``
    (:func:`xywh`) appears only in the files the datasets and the official tools read and write."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] + 1), int(ys[-1] + 1)]


def xywh(box: Sequence[float]) -> list:
    """XYXY -> COCO ``[x, y, w, h]`` (for files only)."""
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]


def coco_bbox(mask: np.ndarray) -> list[int]:
    """The tight COCO ``[x, y, w, h]`` of a bool mask, as annotation and result files carry it."""
    return xywh(mask_box(mask))


def segment_areas(ids: np.ndarray) -> dict[int, int]:
    """Pixel count of every non-zero id of an id map."""
    values, counts = np.unique(ids, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts) if v != 0}
