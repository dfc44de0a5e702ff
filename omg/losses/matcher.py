"""Hungarian matching of predictions to ground truth (docs/model.md §9.1).

Cost = 2 * class + 5 * BCE + 5 * Dice, with the mask terms on points shared by all
predictions and targets of a sample (12544 uniform points by default); scipy's
``linear_sum_assignment`` solves it. Video masks are tubes: (T, H, W) stacked into one
tall (T*H, W) image, so a clip is matched as a whole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from omg.losses.point_sampling import point_sample


def class_cost(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-softmax probability of each target's class: Q x M. Ignore labels (-1) cost 0."""
    prob = logits.float().softmax(-1)
    cost = -prob[:, labels.clamp(min=0)]
    return cost * (labels >= 0).to(cost.dtype)[None]


def bce_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over points: pred logits Q x P, targets M x P in {0, 1} -> Q x M."""
    p = pred.shape[1]
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ tgt.T + neg @ (1 - tgt).T) / p


def dice_cost(pred: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """1 - (2 sum(p g) + 1) / (sum(p) + sum(g) + 1), p = sigmoid(pred): Q x M."""
    p = pred.sigmoid()
    numerator = 2 * p @ tgt.T
    denominator = p.sum(-1)[:, None] + tgt.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def stack_frames(masks: torch.Tensor) -> torch.Tensor:
    """... x T x H x W -> ... x (T*H) x W (a clip as one tall image)."""
    return masks.reshape(*masks.shape[:-3], masks.shape[-3] * masks.shape[-2], masks.shape[-1])


class HungarianMatcher:
    def __init__(
        self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ):
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, tgt_masks: torch.Tensor
    ) -> torch.Tensor:
        """logits Q x (C+1); masks Q x T x h x w logits; labels M; tgt_masks M x T x H x W -> Q x M."""
        coords = torch.rand(self.num_points, 2, device=masks.device)
        pred = point_sample(stack_frames(masks).float(), coords)
        tgt = point_sample(stack_frames(tgt_masks).float(), coords)
        return (
            self.cost_class * class_cost(logits, labels)
            + self.cost_mask * bce_cost(pred, tgt)
            + self.cost_dice * dice_cost(pred, tgt)
        )

    @torch.no_grad()
    def match(
        self, logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, tgt_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (prediction indices, target indices), each of length min(Q, M)."""
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.long, device=masks.device)
            return empty, empty
        cost = self.cost_matrix(logits, masks, labels, tgt_masks)
        rows, cols = solve(cost)
        return torch.as_tensor(rows, device=masks.device), torch.as_tensor(cols, device=masks.device)


def solve(cost: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a Q x M matrix (non-finite costs are replaced by a large value)."""
    c = cost.detach().float().cpu().numpy()
    if not np.isfinite(c).all():
        finite = c[np.isfinite(c)]
        big = (np.abs(finite).max() if finite.size else 1.0) * 1e3 + 1e3
        c = np.nan_to_num(c, nan=big, posinf=big, neginf=-big)
    rows, cols = linear_sum_assignment(c)
    return rows.astype(np.int64), cols.astype(np.int64)
