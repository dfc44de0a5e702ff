"""The training criterion (docs/model.md §9): class CE, mask BCE, Dice, objectness focal loss.

Object-query batches: every prediction set is Hungarian-matched to the targets on its own;
unmatched queries are background. Location-query batches: fixed one-to-one supervision
(prompt i <-> target i), class loss ignored (labels -1), objectness multiplied by 0.
All prediction sets are supervised with equal weight (deep supervision).

Normalisers are all-reduced across data-parallel workers through ``reduce_fn`` (sum over
workers / number of workers, i.e. a mean; the identity by default), as in the paper's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from omg.losses.matcher import HungarianMatcher, stack_frames
from omg.losses.point_sampling import point_sample, uncertain_points
from omg.modeling.transformer_decoder import PredictionSet


@dataclass
class Target:
    """Ground truth of one image or clip.

    labels: M long, class index in the model's vocabulary; -1 = ignore (class-agnostic data).
    masks: M x T x H x W bool at the (padded) input resolution; T = 1 for images.
    """

    labels: torch.Tensor
    masks: torch.Tensor

    def __post_init__(self):
        if self.masks.dim() == 3:
            self.masks = self.masks[:, None]
        if self.masks.dim() != 4 or self.labels.dim() != 1 or self.labels.shape[0] != self.masks.shape[0]:
            raise ValueError(
                f"Target needs labels (M,) and masks (M, T, H, W); got {tuple(self.labels.shape)} "
                f"and {tuple(self.masks.shape)}"
            )

    def to(self, device) -> "Target":
        return Target(self.labels.to(device), self.masks.to(device))


@dataclass
class LossOutput:
    """total: the weighted sum to back-propagate. terms: each weighted term summed over prediction
    sets ("cls", "mask", "dice", "obj"). per_set: the same for each set (first = before layer 0)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    per_set: list[dict[str, torch.Tensor]] = field(default_factory=list)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (not reduced)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def dice_loss(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Naive Dice per mask: 1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1), pred logits M x P -> M."""
    p = pred.sigmoid()
    return 1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum(-1) + 1)


class Criterion:
    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        weight_cls: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        weight_obj: float = 2.0,
        background_weight: float = 0.1,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.matcher = matcher or HungarianMatcher(num_points=num_points)
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.weights = {"cls": weight_cls, "mask": weight_mask, "dice": weight_dice, "obj": weight_obj}
        self.background_weight = background_weight
        self.reduce_fn = reduce_fn or (lambda x: x)

    def __call__(
        self,
        predictions: list[PredictionSet],
        targets: list[Target],
        location: bool = False,
        valid: torch.Tensor | None = None,
    ) -> LossOutput:
        """``valid`` (N x P bool) marks real prompts in a location batch (padding is not supervised)."""
        if len(targets) != predictions[-1].logits.shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {predictions[-1].logits.shape[0]}")
        device = predictions[-1].masks.device
        plans = [self._class_targets(p, targets, location, valid) for p in predictions]
        # every normaliser of the call in one all-reduce: the mask count, then each set's class weights
        local = torch.stack(
            [self._local_num_masks(targets, location, valid, device)] + [plan[2].sum() for plan in plans]
        )
        reduced = self.reduce_fn(local)
        num_masks = reduced[0].clamp(min=1.0)
        per_set = [
            self._set_losses(p, targets, plan, reduced[k + 1].clamp(min=1.0), num_masks)
            for k, (p, plan) in enumerate(zip(predictions, plans))
        ]
        terms = {k: sum(s[k] for s in per_set) for k in self.weights}
        total = sum(terms.values())
        return LossOutput(total, terms, per_set)

    # -------------------------------------------------------------------------
    def _local_num_masks(self, targets, location, valid, device) -> torch.Tensor:
        if location and valid is not None:
            n = float(valid.sum())
        else:
            n = float(sum(len(t.labels) for t in targets))
        return torch.tensor(n, device=device)

    def _assign(self, pred: PredictionSet, targets, location, valid):
        """Per sample: (prediction indices, target indices)."""
        out = []
        for i, t in enumerate(targets):
            if location:
                q = pred.logits.shape[1]
                idx = torch.arange(q, device=pred.logits.device)
                if valid is not None:
                    idx = idx[valid[i]]
                if len(idx) > len(t.labels):
                    raise ValueError(f"sample {i}: {len(idx)} prompts but {len(t.labels)} targets")
                out.append((idx, idx.clone()))
            else:
                out.append(self.matcher.match(pred.logits[i], pred.masks[i], t.labels, t.masks))
        return out

    def _class_targets(self, pred: PredictionSet, targets, location, valid):
        """Assignment, class targets, class weights (N x Q) and matched flags of one prediction set."""
        n, q, c1 = pred.logits.shape
        device = pred.logits.device
        assignment = self._assign(pred, targets, location, valid)
        cls_target = torch.full((n, q), c1 - 1, dtype=torch.long, device=device)
        cls_weight = torch.full((n, q), self.background_weight, device=device)
        matched = torch.zeros(n, q, device=device)
        for i, (pi, ti) in enumerate(assignment):
            labels = targets[i].labels[ti]
            cls_target[i, pi] = labels.clamp(min=0)
            cls_weight[i, pi] = (labels >= 0).to(cls_weight.dtype)
            matched[i, pi] = 1.0
        if location and valid is not None:
            cls_weight = cls_weight * valid.to(cls_weight.dtype)
        return assignment, cls_target, cls_weight, matched, location

    def _set_losses(self, pred: PredictionSet, targets, plan, cls_norm, num_masks) -> dict[str, torch.Tensor]:
        n, q, c1 = pred.logits.shape
        assignment, cls_target, cls_weight, matched, location = plan
        ce = F.cross_entropy(pred.logits.float().reshape(n * q, c1), cls_target.reshape(-1), reduction="none")
        loss_cls = (ce * cls_weight.reshape(-1)).sum() / cls_norm
        loss_obj = sigmoid_focal_loss(pred.objectness[..., 0].float(), matched).sum() / cls_norm
        if location:
            loss_obj = loss_obj * 0.0

        # masks: matched pairs only, on importance-sampled points
        src = torch.cat([pred.masks[i, pi] for i, (pi, _) in enumerate(assignment)])
        if src.shape[0] == 0:
            zero = pred.masks.sum() * 0.0
            loss_mask = loss_dice = zero
        else:
            tgt = torch.cat([targets[i].masks[ti] for i, (_, ti) in enumerate(assignment)]).to(src.dtype)
            src_flat, tgt_flat = stack_frames(src).float(), stack_frames(tgt).float()
            with torch.no_grad():
                coords = uncertain_points(
                    src_flat, self.num_points, self.oversample_ratio, self.importance_sample_ratio
                )
                tgt_pts = point_sample(tgt_flat, coords)
            src_pts = point_sample(src_flat, coords)
            loss_mask = F.binary_cross_entropy_with_logits(src_pts, tgt_pts, reduction="none").mean(1).sum() / num_masks
            loss_dice = dice_loss(src_pts, tgt_pts).sum() / num_masks
        w = self.weights
        return {
            "cls": w["cls"] * loss_cls,
            "mask": w["mask"] * loss_mask,
            "dice": w["dice"] * loss_dice,
            "obj": w["obj"] * loss_obj,
        }
