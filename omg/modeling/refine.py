"""Interactive refinement: positive and negative clicks and the previous mask of an object (docs/model.md §7.3).

An extension of the released model (``ModelConfig.refinement``; off by default, and then nothing here runs). The
released location query of an object is built from its first prompt (a click's pseudo-box or a box, §7.2); with
refinement every click on the object, its label and the object's previous mask enter in three places:

1. **Click tokens the query attends to.** Each click becomes a token: the pixel features under it (bilinear, on
   the mask-feature grid) projected, plus a learned positive/negative embedding; its position is the sine encoding
   of the click, projected. The location query cross-attends (one attention layer, residual, layer norm) to its
   own object's tokens and a learned null token (so a box with no click attends to something); the previous mask
   adds its mask-pooled features, projected, to the query's content.
2. **The previous mask as the first masked-attention prior.** Mask2Former's first decoder layer attends where the
   prediction from the initial queries says the object is; with a previous mask, where that mask says it is
   (the later layers use their own predictions, as before).
3. **A correction head on the last prediction set.** A small convolutional network reads, per object, the
   decoder's mask logits, the previous mask (probability and a has-a-mask plane) and Gaussian maps of the
   positive and negative clicks on the mask grid, and adds its output to the logits. Its last layer starts at
   zero, so a fresh head leaves the decoder's masks unchanged.

Inputs: :class:`~omg.modeling.prompts.Prompts` with ``clicks`` (N x P x K x 2, XY in input pixels),
``click_labels`` (N x P x K: 1 positive, 0 negative, -1 no click) and ``prev_masks`` (N x P x h4 x w4 logits on
the mask grid, a binary mask as :func:`binary_prev` makes it; an object whose plane is NaN has no previous mask),
each optional: without ``clicks`` a point prompt is its own positive click.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omg.modeling.heads import mask_pool
from omg.modeling.position import coordinate_to_encoding
from omg.modeling.prompts import Prompts
from omg.modeling.transformer_decoder import Attention

#: the click maps' Gaussian width, in cells of the mask grid (stride 4: 8 input pixels)
CLICK_SIGMA = 2.0
#: a previous mask enters as a binary mask, these logits inside and minus these outside (probability 0.98 / 0.02):
#: what a user or a stateless client holds is the binary mask it was shown, so training feeds the same
PREV_LOGIT = 3.8918


def binary_prev(logits: torch.Tensor) -> torch.Tensor:
    """Mask logits -> the previous-mask input: +PREV_LOGIT where the mask is (logit > 0), -PREV_LOGIT elsewhere;
    NaN planes (no previous mask) stay NaN."""
    out = torch.where(logits > 0, PREV_LOGIT, -PREV_LOGIT).to(logits.dtype)
    return torch.where(logits.isnan(), logits, out)


def clicks_of(prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x P x K x 2 clicks, N x P x K labels): the prompts' own, or each point prompt as its one positive click
    (a box prompt: no click) when they carry none."""
    if prompts.clicks is not None:
        return prompts.clicks, prompts.click_labels
    b = prompts.boxes
    centres = torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2], -1)[:, :, None]
    labels = torch.where(prompts.is_point & prompts.valid, 1, -1).long()[:, :, None]
    return centres, labels


def click_maps(clicks: torch.Tensor, labels: torch.Tensor, grid: tuple[int, int], stride: float) -> torch.Tensor:
    """N x P x K x 2 clicks (input pixels), N x P x K labels -> N x P x 2 x h x w: the largest Gaussian of the
    positive clicks, then of the negative ones, on the mask grid (``stride`` input pixels a cell)."""
    h, w = grid
    ys = (torch.arange(h, device=clicks.device, dtype=clicks.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=clicks.device, dtype=clicks.dtype) + 0.5) * stride
    dy = ys[:, None] - clicks[..., 1, None, None]  # N x P x K x h x 1
    dx = xs[None, :] - clicks[..., 0, None, None]  # N x P x K x 1 x w
    g = torch.exp(-(dy**2 + dx**2) / (2 * (CLICK_SIGMA * stride) ** 2))  # N x P x K x h x w
    pos = (g * (labels == 1)[..., None, None]).amax(2)
    neg = (g * (labels == 0)[..., None, None]).amax(2)
    return torch.stack([pos, neg], 2)


def split_prev(prev_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """N x P x h x w previous-mask logits, NaN planes for objects without one -> (the logits with those planes at
    -inf-like -100, N x P float: 1 where the object has a previous mask)."""
    missing = prev_masks.isnan().flatten(2).any(-1)
    return prev_masks.nan_to_num(-100.0), (~missing).to(prev_masks.dtype)


class Refinement(nn.Module):
    """The refinement parts of the model: click tokens and their attention, the previous mask's content, the
    correction head (see the module docstring)."""

    def __init__(self, dim: int, heads: int, hidden: int = 32):
        super().__init__()
        self.dim = dim
        self.label_embed = nn.Embedding(2, dim)  # 0 negative, 1 positive
        self.null_token = nn.Embedding(1, dim)
        self.click_content = nn.Linear(dim, dim)
        self.click_pos = nn.Linear(dim, dim)
        self.attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.prev_content = nn.Linear(dim, dim)
        self.head = nn.Sequential(
            nn.Conv2d(5, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def queries(
        self, q: torch.Tensor, prompts: Prompts, mask_features: torch.Tensor, padded: tuple[int, int]
    ) -> torch.Tensor:
        """The location queries' content (N x P x D) after attending to their clicks and adding the previous
        mask's pooled features. ``mask_features`` N x D x h x w (one frame), covering the ``padded`` input."""
        n, p, d = q.shape
        clicks, labels = clicks_of(prompts)
        k = clicks.shape[2]
        ph, pw = padded
        grid = torch.stack([clicks[..., 0] / pw, clicks[..., 1] / ph], -1) * 2 - 1  # N x P x K x 2
        sampled = F.grid_sample(mask_features, grid.to(mask_features.dtype), mode="bilinear", align_corners=False)
        content = self.click_content(sampled.permute(0, 2, 3, 1))  # N x P x K x D
        content = content + self.label_embed(labels.clamp(min=0))
        xy = torch.stack([clicks[..., 0] / pw, clicks[..., 1] / ph], -1).clamp(0.0, 1.0)
        pos = self.click_pos(coordinate_to_encoding(xy, num_feats=d // 2))
        tokens = torch.cat([self.null_token.weight.expand(n, p, 1, d), content + pos], 2).flatten(0, 1)
        blocked = torch.cat([labels.new_zeros(n, p, 1, dtype=torch.bool), labels < 0], 2).flatten(0, 1)[:, None]
        x = self.attn(q.reshape(n * p, 1, d), tokens, tokens, blocked.expand(n * p, 1, k + 1))
        q = self.norm(q + x.view(n, p, d))
        if prompts.prev_masks is not None:
            prev, has = split_prev(prompts.prev_masks)
            pooled = mask_pool(mask_features[:, :, None], prev[:, :, None])  # N x P x D
            q = q + self.prev_content(pooled) * has[..., None]
        return q

    def correct(self, masks: torch.Tensor, prompts: Prompts, padded: tuple[int, int]) -> torch.Tensor:
        """N x P x T x h x w mask logits -> the same plus the correction head's output."""
        n, p, t, h, w = masks.shape
        clicks, labels = clicks_of(prompts)
        maps = click_maps(clicks.to(masks.dtype), labels, (h, w), padded[0] / h)  # N x P x 2 x h x w
        if prompts.prev_masks is not None:
            prev, has = split_prev(prompts.prev_masks.to(masks.dtype))
            prev = prev.sigmoid() * has[..., None, None]
            has = has[..., None, None].expand_as(prev)
        else:
            prev = has = masks.new_zeros(n, p, h, w)
        planes = torch.cat([prev[:, :, None], has[:, :, None], maps], 2)  # N x P x 4 x h x w
        planes = planes[:, :, None].expand(n, p, t, 4, h, w)
        x = torch.cat([masks[:, :, :, None], planes], 3).reshape(n * p * t, 5, h, w)
        return masks + self.head(x).view(n, p, t, h, w)
