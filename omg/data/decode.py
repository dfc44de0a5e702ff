"""Decode a :class:`~omg.data.records.Sample` into arrays (the first step of the training ingest)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

from omg.data.masks import rgb2id, rle_decode
from omg.data.records import Sample


def decode_frames(
    sample: Sample, indices: Sequence[int] | None = None, min_size: tuple[int, int] | None = None, as_pil: bool = False
):
    """-> T x h x w x 3 uint8 RGB for the chosen frames (all by default); a list of RGB
    ``PIL.Image`` with ``as_pil`` (saves a copy when Pillow resamples them next).

    ``min_size`` (h, w) lets a JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) that is
    still at least that large: much less work when training shrinks the image anyway.
    """
    idx = range(sample.num_frames) if indices is None else indices
    out = []
    for t in idx:
        img = Image.open(io.BytesIO(sample.frames[t]))
        if min_size is not None and img.format == "JPEG":
            img.draft("RGB", (max(1, min_size[1]), max(1, min_size[0])))
        if img.mode != "RGB":
            img = img.convert("RGB")
        out.append(img if as_pil else np.array(img))
    return out if as_pil else np.stack(out)


def decode_id_maps(sample: Sample, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """-> (1 x T x H x W id maps, the value of each segment in them), or None for RLE masks.

    A segment's mask is ``maps == values[k]``. Augmenting one id map instead of S boolean
    masks is S times cheaper. Unlabelled pixels hold 0 (VOID), or 255 for semantic maps.
    """
    if sample.mask_kind == "rle":
        return None
    idx = range(sample.num_frames) if indices is None else indices
    frames = []
    for t in idx:
        img = Image.open(io.BytesIO(sample.masks[t]))
        if sample.mask_kind == "panoptic":
            frames.append(rgb2id(np.array(img.convert("RGB"))))
        else:
            frames.append(np.array(img))
    if sample.mask_kind == "segment_index":
        values = np.arange(1, len(sample.segments) + 1)
    else:  # panoptic ids, semantic class ids, DAVIS object ids
        values = np.array([seg.id for seg in sample.segments], dtype=np.int64)
    return np.stack(frames)[None], values


def decode_masks(sample: Sample, indices: Sequence[int] | None = None) -> np.ndarray:
    """-> S x T x H x W bool, one row per ``sample.segments`` entry, for the chosen frames."""
    idx = list(range(sample.num_frames)) if indices is None else list(indices)
    s, h, w = len(sample.segments), sample.height, sample.width
    out = np.zeros((s, len(idx), h, w), dtype=bool)
    if s == 0:
        return out
    if sample.mask_kind == "rle":
        for i, seg in enumerate(sample.segments):
            for j, t in enumerate(idx):
                if seg.rles[t]:
                    out[i, j] = rle_decode({"size": [h, w], "counts": seg.rles[t]})
        return out
    maps, values = decode_id_maps(sample, idx)
    return maps[0][None] == values[:, None, None, None]
