"""Training augmentation (model spec section 10.2), shared by every frame of a clip.

Random resize: a scale s in ``resize_range`` times the crop size gives a target box; the
frames are resized to fit it, keeping their aspect ratio. Then a random crop of the crop
size (independent per frame for COCO's 2-frame pseudo-videos), a horizontal flip, and
zero padding to the crop size (masks: False). Crops may be empty of objects.

Arrays: frames T x H x W x 3 uint8; masks S x T x H x W bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Augment:
    crop: tuple[int, int]  # (H, W)
    resize_range: tuple[float, float] = (0.8, 2.0)
    flip_prob: float = 0.5
    independent_crops: bool = False


def resize(frames: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear (Pillow, antialiased when shrinking) for frames, nearest for masks.

    Pillow's integer arithmetic gives the same bytes in every process, whatever its thread
    settings, so a training batch is reproducible wherever it is built.
    """
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames, masks
    frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in frames])
    src_h, src_w = masks.shape[2:] if masks.ndim == 4 else (0, 0)
    if masks.size:
        rows = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
        masks = masks[:, :, rows][:, :, :, cols]
    else:
        masks = np.zeros((masks.shape[0], frames.shape[0], h, w), dtype=bool)
    return frames, masks


def augment(frames: np.ndarray, masks: np.ndarray, aug: Augment, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """-> (frames T x cH x cW x 3, masks S x T x cH x cW, (valid h, valid w) of the content before padding)."""
    ch, cw = aug.crop
    h, w = frames.shape[1:3]
    s = rng.uniform(*aug.resize_range)
    factor = min(s * ch / h, s * cw / w)
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    frames, masks = resize(frames, masks, (nh, nw))
    if rng.random() < aug.flip_prob:
        frames = frames[:, :, ::-1]
        masks = masks[..., ::-1]
    t = frames.shape[0]
    out_f = np.zeros((t, ch, cw, 3), dtype=np.uint8)
    out_m = np.zeros((masks.shape[0], t, ch, cw), dtype=bool)
    vh, vw = min(nh, ch), min(nw, cw)
    y0 = x0 = 0
    for k in range(t):
        if k == 0 or aug.independent_crops:
            y0 = int(rng.integers(0, nh - vh + 1))
            x0 = int(rng.integers(0, nw - vw + 1))
        out_f[k, :vh, :vw] = frames[k, y0:y0 + vh, x0:x0 + vw]
        out_m[:, k, :vh, :vw] = masks[:, k, y0:y0 + vh, x0:x0 + vw]
    return out_f, out_m, (vh, vw)


def clip_indices(num_frames: int, length: int, interval: int, rng: np.random.Generator) -> list[int]:
    """``length`` frames ``interval`` apart at a random start (the interval shrinks for short videos)."""
    if num_frames <= 0:
        raise ValueError("a video needs at least one frame")
    interval = max(1, min(interval, (num_frames - 1) // max(1, length - 1))) if length > 1 else 1
    span = (length - 1) * interval
    if span >= num_frames:
        return [min(i, num_frames - 1) for i in range(length)]
    start = int(rng.integers(0, num_frames - span))
    return [start + i * interval for i in range(length)]


def sample_prompts(masks: np.ndarray, num_prompts: int, rng: np.random.Generator, box_prob: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Location-query prompts for one image (model spec 7.2).

    masks: S x H x W bool (annotation order). If there are fewer than ``num_prompts``
    segments the list is repeated; the first ``num_prompts`` are taken. Each becomes one
    uniformly random interior point (or, with probability ``box_prob``, its tight box).
    Returns (points_or_boxes P x 4 float: XYXY, a point as a zero-size box; is_point P bool;
    target index P int into ``masks``).
    """
    s = masks.shape[0]
    if s == 0:
        raise ValueError("no segment to prompt")
    order = np.resize(np.arange(s), max(num_prompts, 1))[:num_prompts]
    boxes = np.zeros((num_prompts, 4), dtype=np.float32)
    is_point = np.ones(num_prompts, dtype=bool)
    for p, k in enumerate(order):
        ys, xs = np.nonzero(masks[k])
        if rng.random() < box_prob:
            boxes[p] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            is_point[p] = False
        else:
            j = int(rng.integers(len(ys)))
            x, y = xs[j] + 0.5, ys[j] + 0.5
            boxes[p] = [x, y, x, y]
    return boxes, is_point, order
