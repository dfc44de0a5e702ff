"""Post-processing of one image's (or one frame's) predictions into panoptic, instance and semantic
outputs (docs/model.md §11).

Inputs: class logits Q x (C + 1) (background last) and mask logits Q x H x W at the output
resolution; ``isthing`` C bool (things first in the merged layout, but any order works).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PanopticSegment:
    """One segment of a panoptic map. ``query`` is the query that produced it (-1 for merged stuff
    keeps the first query)."""

    id: int
    label: int
    isthing: bool
    score: float
    area: int
    query: int


#: segment ids of :func:`panoptic_inference`
SEGMENT_IDS = ("sequential", "released", "stable")


def released_offset(num_classes: int) -> int:
    """mmdet's ``INSTANCE_OFFSET`` (1000), or the next power of ten above a vocabulary that does not fit under it."""
    offset = 1000
    while offset <= num_classes + 1:
        offset *= 10
    return offset


def panoptic_inference(
    logits: torch.Tensor,
    masks: torch.Tensor,
    isthing: torch.Tensor,
    object_mask_thr: float = 0.0,
    iou_thr: float = 0.8,
    filter_low_score: bool = True,
    ids: str = "sequential",
) -> tuple[torch.Tensor, list[PanopticSegment]]:
    """-> (H x W int64 segment ids, 0 = VOID; the segments).

    1. softmax over C + 1; (score, label) = max; keep label != background and score > ``object_mask_thr``;
    2. every pixel goes to the kept query with the largest score x sigmoid(mask);
    3. a query keeps its segment only if the pixels it won are at least ``iou_thr`` of its own
       mask (sigmoid >= 0.5); with ``filter_low_score`` only won pixels with sigmoid >= 0.5 count;
    4. stuff segments of one class merge; unassigned pixels are VOID.

    Segment ids (``ids``):

    - ``"sequential"``: 1, 2, ... in query order (an image's panoptic map);
    - ``"released"`` (video panoptic, the default there): as the released fusion head numbers a frame
      (``omgseg_fusionhead.py`` ``panoptic_postprocess``: ``class + instance_id * INSTANCE_OFFSET``, mmdet's
      offset 1000, ``instance_id`` a counter over the frame's kept things from 1, stuff ``instance_id`` 0),
      shifted by 1 so that 0 stays VOID: things ``label + 1 + k * offset``, stuff ``label + 1``. A track's
      identity is (class, place among the frame's things), so it shifts when an earlier thing vanishes;
    - ``"stable"`` (an option): things the query index + 1, stuff ``Q + 1 + label``: a track keeps its
      id in every frame even when another segment vanishes.
    """
    if ids not in SEGMENT_IDS:
        raise ValueError(f"ids must be one of {', '.join(SEGMENT_IDS)}, got {ids!r}")
    q, c1 = logits.shape
    num_classes = c1 - 1
    probs = logits.float().softmax(-1)
    scores, labels = probs.max(-1)
    keep = (labels != num_classes) & (scores > object_mask_thr)
    h, w = masks.shape[-2:]
    pan = torch.zeros((h, w), dtype=torch.int64, device=masks.device)
    segments: list[PanopticSegment] = []
    if not keep.any():
        return pan, segments
    idx = keep.nonzero()[:, 0]
    cur_masks = masks[idx].float().sigmoid()
    cur_prob = scores[idx][:, None, None] * cur_masks
    winner = cur_prob.argmax(0)
    stuff_ids: dict[int, int] = {}
    next_id = 1  # "sequential": every segment; "released": things only (the frame's instance_id)
    offset = released_offset(num_classes)
    for k in range(len(idx)):
        label = int(labels[idx[k]])
        thing = bool(isthing[label])
        won = winner == k
        own = cur_masks[k] >= 0.5
        area, original = int(won.sum()), int(own.sum())
        mask = won & own if filter_low_score else won
        if area == 0 or original == 0 or int(mask.sum()) == 0 or area / original < iou_thr:
            continue
        if not thing and label in stuff_ids:
            sid = stuff_ids[label]
            pan[mask] = sid
            seg = next(s for s in segments if s.id == sid)
            seg.area += int(mask.sum())
            continue
        if ids == "stable":
            sid = int(idx[k]) + 1 if thing else q + 1 + label
        elif ids == "released":
            sid = label + 1 + (next_id * offset if thing else 0)
            next_id += int(thing)
        else:
            sid = next_id
            next_id += 1
        if not thing:
            stuff_ids[label] = sid
        pan[mask] = sid
        segments.append(PanopticSegment(sid, label, thing, float(scores[idx[k]]), int(mask.sum()), int(idx[k])))
    return pan, segments


@dataclass
class InstancePredictions:
    """K instances: masks K x H x W bool, labels K, scores K (class score x mask score), queries K."""

    masks: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    queries: torch.Tensor


def instance_inference(
    logits: torch.Tensor, masks: torch.Tensor, isthing: torch.Tensor, topk: int = 100
) -> InstancePredictions:
    """Top-``topk`` (query, class) pairs over Q x C (background dropped), things only; binary mask =
    logit > 0; score = class score x mean sigmoid inside the binary mask."""
    q, c1 = logits.shape
    c = c1 - 1
    scores = logits.float().softmax(-1)[:, :c]
    k = min(topk, q * c)
    top, flat = scores.flatten().topk(k, sorted=True)
    labels = flat % c
    queries = flat // c
    thing = isthing[labels].bool()
    top, labels, queries = top[thing], labels[thing], queries[thing]
    m = masks[queries].float()
    return InstancePredictions(m > 0, labels, top * mask_scores(m), queries)


def mask_scores(masks: torch.Tensor) -> torch.Tensor:
    """K x H x W mask logits -> K: the mean sigmoid inside each binary mask (logit > 0), 0 for an empty mask
    (the released fusion head's ``instance_postprocess``: sum / (area + 1e-6))."""
    m = masks.float()
    binary = m > 0
    return (m.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)


def semantic_inference(logits: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask2Former-style: per pixel, argmax over classes of sum_q softmax(cls_q)[:C] * sigmoid(mask_q).

    -> (H x W int64 labels, C x H x W scores)."""
    c = logits.shape[-1] - 1
    probs = logits.float().softmax(-1)[:, :c]
    seg = torch.einsum("qc,qhw->chw", probs, masks.float().sigmoid())
    return seg.argmax(0), seg
