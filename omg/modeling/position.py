"""Sine positional encodings (mmdet / Mask2Former conventions, docs/model.md §4, §5 and §7.2)."""

from __future__ import annotations

import math

import torch


def _freqs(num_feats: int, temperature: float, device, dtype=torch.float32) -> torch.Tensor:
    dim_t = torch.arange(num_feats, device=device, dtype=dtype)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave(pos: torch.Tensor) -> torch.Tensor:
    """... x F -> ... x F with sin on even and cos on odd frequencies, interleaved as (sin0, cos1, sin2, ...)."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_2d(
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device=None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Normalised 2-D sine encoding (no padding mask): (2*num_feats) x H x W, y part first."""
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)[None, :].expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = _freqs(num_feats, temperature, device)
    pos_x = _interleave(x[..., None] / dim_t)
    pos_y = _interleave(y[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)


def sine_3d(
    frames: int,
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device=None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """3-D encoding of a T x H x W tube: T x (2*num_feats) x H x W.

    x and y use ``num_feats`` frequencies each, concatenated (y, x); the t part uses
    ``2*num_feats`` frequencies and is *added* (mmdet ``SinePositionalEncoding3D``).
    For a single frame the t part is a constant.
    """
    xy = sine_2d(height, width, num_feats, temperature, scale, device, eps)  # 2F x H x W
    t = torch.arange(1, frames + 1, device=device, dtype=torch.float32) / (frames + eps) * scale
    dim_t = _freqs(2 * num_feats, temperature, device)
    pos_t = _interleave(t[:, None] / dim_t)  # T x 2F
    return xy[None] + pos_t[:, :, None, None]


def coordinate_to_encoding(
    coords: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Normalised (cx, cy, w, h) in [0, 1] (... x 4) -> ... x (4*num_feats), order (y, x, w, h)."""
    dim_t = _freqs(num_feats, temperature, coords.device)
    parts = [_interleave((coords[..., i] * scale)[..., None] / dim_t) for i in range(coords.shape[-1])]
    if coords.shape[-1] == 2:
        return torch.cat((parts[1], parts[0]), dim=-1)
    if coords.shape[-1] == 4:
        return torch.cat((parts[1], parts[0], parts[2], parts[3]), dim=-1)
    raise ValueError(f"coordinates must have 2 or 4 values, got {coords.shape[-1]}")
