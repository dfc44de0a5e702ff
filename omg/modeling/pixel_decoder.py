"""Pixel decoder: multi-scale deformable-attention encoder + FPN step to stride 4 (docs/model.md §4).

Mask2Former's ``MSDeformAttnPixelDecoder`` in plain PyTorch. Deformable attention samples
the value maps with ``grid_sample`` (bilinear, zero padding, ``align_corners=False``), so it
runs on CPU and CUDA alike without a compiled extension.

Shapes: ``features`` = the backbone's [res2, res3, res4, res5] (N x C_i x H_i x W_i).
Outputs: ``mask_features`` N x D x H/4 x W/4 and ``memories`` = [s32, s16, s8] maps, N x D x h x w.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omg.modeling.position import sine_2d


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def ms_deform_attn_core(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention by bilinear sampling.

    value: N x S x M x Dh (S = sum of h*w over levels, M heads); sampling_locations:
    N x Q x M x L x P x 2 in [0, 1] (x, y); attention_weights: N x Q x M x L x P.
    Returns N x Q x (M*Dh).
    """
    n, _, m, dh = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, q, levels, points)
    out = None
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * m, dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (N*M) x Q x P x 2
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N*M) x Dh x Q x P
        part = (sampled * weights[..., lvl, :]).sum(-1)
        out = part if out is None else out + part
    return out.view(n, m * dh, q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    def __init__(self, dim: int = 256, levels: int = 3, heads: int = 8, points: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (
            (grid / grid.abs().max(-1, keepdim=True)[0])
            .view(self.heads, 1, 1, 2)
            .repeat(1, self.levels, self.points, 1)
        )
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """query N x Q x D; reference_points N x Q x L x 2 in [0, 1]; value N x S x D."""
        n, q, _ = query.shape
        v = self.value_proj(value).view(n, value.shape[1], self.heads, self.dim // self.heads)
        offsets = self.sampling_offsets(query).view(n, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(n, q, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(n, q, self.heads, self.levels, self.points)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(v, shapes, locations, weights))


class DeformEncoderLayer(nn.Module):
    """Post-norm: self deformable attention -> add & norm -> FFN -> add & norm."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src, pos, reference_points, shapes):
        src = self.norm1(src + self.attn(src + pos, reference_points, src, shapes))
        return self.norm2(src + self.ffn(src))


def reference_points(shapes: list[tuple[int, int]], levels: int, device, dtype) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: S x L x 2 (no padding, valid ratio 1)."""
    pts = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, device=device, dtype=dtype) / h,
            torch.linspace(0.5, w - 0.5, w, device=device, dtype=dtype) / w,
            indexing="ij",
        )
        pts.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
    return torch.cat(pts, 0)[:, None, :].expand(-1, levels, 2)


class PixelDecoder(nn.Module):
    def __init__(
        self,
        in_channels: tuple[int, int, int, int],
        dim: int = 256,
        enc_layers: int = 6,
        enc_ffn_dim: int = 1024,
        heads: int = 8,
        points: int = 4,
    ):
        super().__init__()
        self.dim = dim
        self.levels = 3
        # input projections for C5, C4, C3 (low resolution first)
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, dim, kernel_size=1), _gn(dim)) for c in in_channels[1:][::-1]]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.level_embed = nn.Parameter(torch.empty(self.levels, dim))
        nn.init.normal_(self.level_embed)
        self.layers = nn.ModuleList(
            [DeformEncoderLayer(dim, enc_ffn_dim, heads, self.levels, points) for _ in range(enc_layers)]
        )
        # the released init (mmdet MSDeformAttnPixelDecoder.init_weights, called from OMG-Seg's
        # mask2former_vid.py L259): Xavier-normal for every encoder parameter with dim > 1 (the FFN's too),
        # then each deformable attention's own init
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.layers:
            layer.attn._reset_parameters()
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_channels[0], dim, kernel_size=1, bias=False), _gn(dim))
        self.output_conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False), _gn(dim), nn.ReLU(inplace=True)
        )
        self.mask_features = nn.Conv2d(dim, dim, kernel_size=1)
        for conv in (self.lateral_conv[0], self.output_conv[0]):
            nn.init.kaiming_uniform_(conv.weight, a=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        c2 = features[0]
        srcs = [proj(f) for proj, f in zip(self.input_proj, features[1:][::-1])]  # s32, s16, s8
        n = c2.shape[0]
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        tokens, pos = [], []
        for lvl, s in enumerate(srcs):
            h, w = s.shape[-2:]
            tokens.append(s.flatten(2).transpose(1, 2))
            p = sine_2d(h, w, self.dim // 2, device=s.device).to(s.dtype)
            pos.append((p.flatten(1).transpose(0, 1) + self.level_embed[lvl])[None].expand(n, -1, -1))
        src = torch.cat(tokens, 1)
        pos_all = torch.cat(pos, 1)
        ref = reference_points(shapes, self.levels, src.device, src.dtype)[None].expand(n, -1, -1, -1)
        for layer in self.layers:
            src = layer(src, pos_all, ref, shapes)
        memories = [
            t.transpose(1, 2).reshape(n, self.dim, h, w)
            for t, (h, w) in zip(src.split([h * w for h, w in shapes], 1), shapes)
        ]
        x = self.lateral_conv(c2) + F.interpolate(
            memories[-1], size=c2.shape[-2:], mode="bilinear", align_corners=False
        )
        x = self.output_conv(x)
        return self.mask_features(x), memories
