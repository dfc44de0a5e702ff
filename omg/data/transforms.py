"""Training augmentation (docs/model.md §10.2), shared by every frame of a clip.

Random resize: a scale s in ``resize_range`` times the crop size gives the (long side, short
side) limits of a keep-ratio resize, as mmcv's ``RandomResize(scale=(1280, 736), keep_ratio=True)``
in the released configs (a portrait image's long side meets the crop's long side). Then a random crop of the crop
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


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation for a sample of T frames of size (H, W)."""

    size: tuple[int, int]  # resized (h, w)
    flip: bool
    offsets: tuple[tuple[int, int], ...]  # crop (y0, x0) per frame
    valid: tuple[int, int]  # content size inside the crop


def draw(aug: Augment, src_size: tuple[int, int], num_frames: int, rng: np.random.Generator) -> AugmentParams:
    ch, cw = aug.crop
    h, w = src_size
    s = rng.uniform(*aug.resize_range)
    # mmcv's keep-ratio resize to the scale s x crop: the crop's long side limits the image's long side and its
    # short side the short one, whatever the orientation (a portrait image is not shrunk to fit a landscape box)
    factor = s * min(max(ch, cw) / max(h, w), min(ch, cw) / min(h, w))
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    flip = bool(rng.random() < aug.flip_prob)
    vh, vw = min(nh, ch), min(nw, cw)
    offsets = []
    for k in range(num_frames):
        if k == 0 or aug.independent_crops:
            y0 = int(rng.integers(0, nh - vh + 1))
            x0 = int(rng.integers(0, nw - vw + 1))
        offsets.append((y0, x0))
    return AugmentParams((nh, nw), flip, tuple(offsets), (vh, vw))


def apply(
    p: AugmentParams, crop: tuple[int, int], frames: np.ndarray, maps: np.ndarray, fill: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """frames T x h x w x 3 (any decoded size; or a list of T RGB ``PIL.Image``) and maps K x T x h' x w'
    (masks or id maps, any size)
    -> T x cH x cW x 3 (zero-padded) and K x T x cH x cW (padded with ``fill``: 0 / False, or 255
    for semantic label maps, where 0 is a class).

    Equivalent to resizing to ``p.size``, flipping and cropping, but only the crop window is
    ever computed: the frame's source box is resampled straight to the crop (Pillow, bilinear,
    antialiased when shrinking) and the maps are sampled at the crop's pixel centres.
    """
    pil = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    t = len(pil)
    ch, cw = crop
    vh, vw = p.valid
    nh, nw = p.size
    fw, fh = pil[0].size
    mh, mw = maps.shape[-2:]
    out_f = np.zeros((t, ch, cw, 3), dtype=np.uint8)
    out_m = np.full((maps.shape[0], t, ch, cw), fill, dtype=maps.dtype)
    for k, (y0, x0) in enumerate(p.offsets):
        if p.flip:  # the crop of the flipped image is the mirrored crop of the unflipped one
            x0 = nw - x0 - vw
        box = (x0 * fw / nw, y0 * fh / nh, (x0 + vw) * fw / nw, (y0 + vh) * fh / nh)
        f = np.asarray(pil[k].resize((vw, vh), Image.Resampling.BILINEAR, box=box))
        rows = np.minimum(((y0 + np.arange(vh) + 0.5) * mh / nh).astype(np.int64), mh - 1)
        cols = np.minimum(((x0 + np.arange(vw) + 0.5) * mw / nw).astype(np.int64), mw - 1)
        m = maps[:, k][:, rows][:, :, cols]
        if p.flip:
            f, m = f[:, ::-1], m[..., ::-1]
        out_f[k, :vh, :vw] = f
        out_m[:, k, :vh, :vw] = m
    return out_f, out_m


def augment(
    frames: np.ndarray, masks: np.ndarray, aug: Augment, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Draw and apply: frames T x H x W x 3, masks (or id maps) K x T x H x W -> cropped, plus the valid size."""
    p = draw(aug, frames.shape[1:3], len(frames), rng)
    f, m = apply(p, aug.crop, frames, masks)
    return f, m, p.valid


def clip_span(length: int, interval: int) -> int:
    """Frames a clip of ``length`` frames ``interval`` apart covers (the released ``VideoClipSample``)."""
    return length + (length - 1) * (interval - 1)


def clip_indices(num_frames: int, length: int, interval: int, rng: np.random.Generator) -> list[int]:
    """``length`` frames ``interval`` apart at a uniformly random start, as the released ``VideoClipSample``
    (OMG-Seg ``seg/datasets/pipelines/frame_sampling.py``). A video shorter than :func:`clip_span` is an
    error here: the sampler draws another video instead (``BatchBuilder.example``)."""
    span = clip_span(length, interval)
    if num_frames < span:
        raise ValueError(f"a clip of {length} frames {interval} apart needs {span} frames, the video has {num_frames}")
    start = int(rng.integers(0, num_frames - span + 1))
    return [start + i * interval for i in range(length)]


def sample_prompts(
    masks: np.ndarray, num_prompts: int, rng: np.random.Generator, box_prob: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Location-query prompts for one image (docs/model.md §7.2).

    masks: S x H x W bool (annotation order). If there are fewer than ``num_prompts``
    segments the list is repeated; the first ``num_prompts`` are taken. Each becomes one
    uniformly random interior pixel, at its integer coordinates (``ovsam_preprocessor.py``
    ``get_random_points``), or, with probability ``box_prob``, its tight box.
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
            x, y = xs[j], ys[j]  # the pixel's integer coordinates, as the released get_random_points
            boxes[p] = [x, y, x, y]
    return boxes, is_point, order
