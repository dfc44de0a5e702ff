"""Decode a :class:`~omg.data.records.Sample` into arrays (the first step of the training ingest)."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

from omg.data.masks import rgb2id, rle_decode
from omg.data.records import Sample


def decode_frames(sample: Sample, indices: Sequence[int] | None = None) -> np.ndarray:
    """-> T x H x W x 3 uint8 RGB for the chosen frames (all by default)."""
    idx = range(sample.num_frames) if indices is None else indices
    return np.stack([np.array(Image.open(io.BytesIO(sample.frames[t])).convert("RGB")) for t in idx])


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
    ids = np.array([seg.id for seg in sample.segments])
    for j, t in enumerate(idx):
        img = Image.open(io.BytesIO(sample.masks[t]))
        if sample.mask_kind == "panoptic":
            frame = rgb2id(np.array(img.convert("RGB")))
        else:  # semantic label map or DAVIS index map: the value is the segment id
            frame = np.array(img).astype(np.int64)
        out[:, j] = frame[None] == ids[:, None, None]
    return out
