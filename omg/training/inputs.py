"""A built training batch (:mod:`omg.data.ingest`, numpy) -> the model's inputs: image tensors padded as the
released pipeline pads, targets for the criterion, prompts for location queries."""

from __future__ import annotations

import numpy as np
import torch

from omg.losses.criterion import Target
from omg.modeling.prompts import POINT_BOX_RADIUS, Prompts, points_to_boxes


def fill_padding(images: torch.Tensor, sizes, pad_value) -> torch.Tensor:
    """Set every pixel outside each sample's valid ``sizes[b] = (h, w)`` to ``pad_value`` (3 floats, RGB 0..255),
    in place. With the backbone's pixel mean the padding normalises to exactly 0, as the official pipeline pads
    after normalising (OMG-Seg ``seg/models/data_preprocessor/vidseg_data_preprocessor.py`` L116-131: normalise,
    then ``stack_batch(..., pad_value=0)``; training: mmdet ``BatchFixedSizePad``, pad value 0)."""
    value = torch.as_tensor(pad_value, dtype=images.dtype, device=images.device).view(3, 1, 1)
    for b, (h, w) in enumerate(torch.as_tensor(sizes).tolist()):
        images[b, ..., h:, :] = value
        images[b, ..., :h, w:] = value
    return images


def to_model_inputs(
    batch: dict, device: str | torch.device = "cpu", pad_value=None
) -> tuple[torch.Tensor, list[Target], Prompts | None]:
    """A built batch -> (images B x T x 3 x H x W float 0..255, targets, prompts or None). ``pad_value`` (the
    backbone's pixel mean; see :func:`fill_padding`) replaces the crop's zero padding; None keeps it black."""

    def tensor(x, dtype) -> torch.Tensor:  # a copy: Ray hands out read-only arrays
        return torch.from_numpy(np.array(x, dtype=dtype))

    images = tensor(batch["images"], np.uint8).to(device).permute(0, 1, 4, 2, 3).float()
    if pad_value is not None:
        fill_padding(images, batch["image_sizes"], pad_value)
    counts = np.asarray(batch["counts"]).tolist()
    labels = tensor(batch["labels"], np.int64)
    masks = tensor(batch["masks"], bool)
    targets, start = [], 0
    for c in counts:
        targets.append(Target(labels[start : start + c].to(device), masks[start : start + c].to(device)))
        start += c
    prompts = None
    if batch["kind"] == "location":
        boxes = tensor(batch["boxes"], np.float32)
        is_point = tensor(batch["is_point"], bool)
        sizes = tensor(batch["image_sizes"], np.int64)
        out = boxes.clone()
        for b in range(boxes.shape[0]):
            pts = boxes[b, is_point[b], :2]
            if len(pts):
                out[b, is_point[b]] = points_to_boxes(pts, POINT_BOX_RADIUS)
        prompts = Prompts(out, torch.ones_like(is_point), sizes, is_point).to(device)
    return images, targets, prompts
