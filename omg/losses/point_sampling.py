"""Point sampling of mask logits (Mask2Former / PointRend)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``masks`` (M x H x W) at ``coords`` (M x P x 2 or P x 2, (x, y) in [0, 1]) -> M x P."""
    if coords.dim() == 2:
        coords = coords[None].expand(masks.shape[0], -1, -1)
    grid = (2.0 * coords - 1.0)[:, :, None, :]
    return F.grid_sample(masks[:, None], grid.to(masks.dtype), mode="bilinear", align_corners=False)[:, 0, :, 0]


def uncertain_points(
    logits: torch.Tensor, num_points: int, oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75
) -> torch.Tensor:
    """Importance sampling: M x H x W logits -> M x num_points x 2 coordinates in [0, 1].

    Draw ``oversample_ratio * num_points`` uniform points, keep the
    ``importance_sample_ratio * num_points`` most uncertain (``-|logit|`` highest), and add
    uniform points for the rest.
    """
    m = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(m, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, coords).abs()
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    picked = torch.gather(coords, 1, idx[..., None].expand(-1, -1, 2))
    if num_random > 0:
        picked = torch.cat([picked, torch.rand(m, num_random, 2, device=logits.device)], dim=1)
    return picked
