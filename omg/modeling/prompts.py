"""Location queries: point and box prompts encoded as decoder queries (docs/model.md §7.2).

A prompt is a box in input pixels (XYXY). A point is encoded as the released code does: a
small pseudo-box ``[x - r, y - r, x + r, y + r]`` (r = 3 px) of prompt type 0 — the model is
trained and evaluated that way; real boxes go through the same encoder.

Encoding: normalise by the unpadded image size, convert to (cx, cy, w, h), sine-encode the
4 numbers (``coordinate_to_encoding``: y, x, w, h) and project (``pos_linear``) -> the
query's positional part. The content part is ``pb_embedding[0] + mask_tokens[0]``, shared by
all location queries: prompts differ only through their positions, and image content enters
through masked cross-attention. Between location queries, self-attention is *masked* (each
query attends to itself only; the paper's setting) or *full* (the ablation of Table 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from omg.modeling.position import coordinate_to_encoding

POINT_BOX_RADIUS = 3.0


@dataclass
class Prompts:
    """A batch of prompts.

    boxes: N x P x 4 float, XYXY in pixels of the (resized, unpadded) model input.
    valid: N x P bool (False = padding, when images have different numbers of prompts).
    image_sizes: N x 2 long, (height, width) of each unpadded input.
    is_point: N x P bool, which prompts were points (informational; they are already pseudo-boxes).

    Corrections of an object (only a model with ``refinement``; docs/model.md §7.3), each optional:
    clicks: N x P x K x 2 float, every click on the object, XY in input pixels (K: the most clicks of any object).
    click_labels: N x P x K long, 1 positive, 0 negative, -1 no click (padding).
    prev_masks: N x P x H/4 x W/4 float, the object's previous mask logits on the mask-feature grid.
    """

    boxes: torch.Tensor
    valid: torch.Tensor
    image_sizes: torch.Tensor
    is_point: torch.Tensor
    clicks: torch.Tensor | None = None
    click_labels: torch.Tensor | None = None
    prev_masks: torch.Tensor | None = None

    def __post_init__(self):
        if (self.clicks is None) != (self.click_labels is None):
            raise ValueError("Prompts: clicks and click_labels go together")

    @property
    def num_prompts(self) -> int:
        return self.boxes.shape[1]

    @property
    def has_corrections(self) -> bool:
        """More than the released prompt (one click or one box per object): a negative click, a second click, a
        click on a boxed object, or a previous mask."""
        if self.prev_masks is not None:
            return True
        if self.clicks is None:
            return False
        clicked = (self.click_labels >= 0).sum(-1)
        return bool((clicked > 1).any() or (self.click_labels == 0).any() or ((clicked > 0) & ~self.is_point).any())

    def check_released(self) -> None:
        """Raise the error a model without refinement gives for corrections (:attr:`has_corrections`)."""
        if self.has_corrections:
            raise ValueError(
                "this model takes one click or one box per object (the released OMG-Seg): negative clicks, several "
                "clicks on an object, a click with a box or a previous mask need a model trained with "
                "model.refinement: true"
            )

    def to(self, device) -> "Prompts":
        def move(x):
            return None if x is None else x.to(device)

        return Prompts(
            self.boxes.to(device),
            self.valid.to(device),
            self.image_sizes.to(device),
            self.is_point.to(device),
            move(self.clicks),
            move(self.click_labels),
            move(self.prev_masks),
        )

    @staticmethod
    def from_lists(
        points: list[torch.Tensor | None],
        boxes: list[torch.Tensor | None],
        image_sizes: list[tuple[int, int]],
        radius: float = POINT_BOX_RADIUS,
    ) -> "Prompts":
        """Per image: points (K x 2, XY) and/or boxes (K x 4, XYXY) in input pixels -> a padded batch.

        Raises ``ValueError`` naming the image and prompt when a prompt lies outside its image,
        a box is inverted, or an image has no prompt.
        """
        rows, kinds = [], []
        for i, (pts, bxs, (h, w)) in enumerate(zip(points, boxes, image_sizes)):
            parts, flags = [], []
            if pts is not None and len(pts):
                pts = torch.as_tensor(pts, dtype=torch.float32).reshape(-1, 2)
                bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
                if bad.any():
                    k = int(bad.nonzero()[0])
                    raise ValueError(f"image {i}: point {k} {pts[k].tolist()} lies outside the {w}x{h} image")
                parts.append(points_to_boxes(pts, radius))
                flags += [True] * len(pts)
            if bxs is not None and len(bxs):
                bxs = torch.as_tensor(bxs, dtype=torch.float32).reshape(-1, 4)
                bad = (
                    (bxs[:, 0] < 0)
                    | (bxs[:, 1] < 0)
                    | (bxs[:, 2] > w)
                    | (bxs[:, 3] > h)
                    | (bxs[:, 2] <= bxs[:, 0])
                    | (bxs[:, 3] <= bxs[:, 1])
                )
                if bad.any():
                    k = int(bad.nonzero()[0])
                    raise ValueError(
                        f"image {i}: box {k} {bxs[k].tolist()} is not an XYXY box inside the {w}x{h} image"
                    )
                parts.append(bxs)
                flags += [False] * len(bxs)
            if not parts:
                raise ValueError(f"image {i}: no prompt (give at least one point or box)")
            rows.append(torch.cat(parts))
            kinds.append(torch.tensor(flags))
        p = max(r.shape[0] for r in rows)
        n = len(rows)
        out = torch.zeros(n, p, 4)
        valid = torch.zeros(n, p, dtype=torch.bool)
        is_point = torch.zeros(n, p, dtype=torch.bool)
        for i, (r, k) in enumerate(zip(rows, kinds)):
            out[i, : len(r)] = r
            valid[i, : len(r)] = True
            is_point[i, : len(r)] = k
        return Prompts(out, valid, torch.tensor(image_sizes, dtype=torch.long), is_point)


def points_to_boxes(points: torch.Tensor, radius: float = POINT_BOX_RADIUS) -> torch.Tensor:
    """K x 2 XY points -> K x 4 pseudo-boxes ``[x - r, y - r, x + r, y + r]``, not clipped to the image, as the
    released preprocessor builds them (``ovsam_preprocessor.py`` ``use_point_pseudo_box``: ``points -+ 3``)."""
    x, y = points[:, 0], points[:, 1]
    return torch.stack([x - radius, y - radius, x + radius, y + radius], dim=-1)


class LocationQueryEncoder(nn.Module):
    def __init__(self, dim: int, jitter: float = 0.4 * 0.01, sampled_content: bool = False):
        super().__init__()
        self.dim = dim
        self.jitter = jitter
        self.pos_linear = nn.Linear(2 * dim, dim)
        self.pb_embedding = nn.Embedding(2, dim)  # 0 = box / pseudo-box (the released model's only type)
        self.mask_tokens = nn.Embedding(1, dim)
        #: projection of the features sampled under a prompt (only with ``location_content: sampled``)
        self.content_proj = nn.Linear(dim, dim) if sampled_content else None

    def sample_content(self, features: torch.Tensor, prompts: Prompts, padded: tuple[int, int]) -> torch.Tensor:
        """Mean of ``features`` (N x D x h x w, covering the padded input) at a 3 x 3 grid inside each
        prompt's box (a point's pseudo-box: around the click) -> N x P x D, projected."""
        ph, pw = padded
        b = prompts.boxes
        frac = torch.tensor([0.25, 0.5, 0.75], device=b.device, dtype=b.dtype)
        xs = b[..., 0:1] + (b[..., 2:3] - b[..., 0:1]) * frac  # N x P x 3
        ys = b[..., 1:2] + (b[..., 3:4] - b[..., 1:2]) * frac
        gx = (xs[..., None, :].expand(*xs.shape[:2], 3, 3) / pw) * 2 - 1
        gy = (ys[..., :, None].expand(*ys.shape[:2], 3, 3) / ph) * 2 - 1
        grid = torch.stack([gx, gy], -1).flatten(2, 3)  # N x P x 9 x 2
        sampled = torch.nn.functional.grid_sample(
            features, grid.to(features.dtype), mode="bilinear", align_corners=False
        )  # N x D x P x 9
        return self.content_proj(sampled.mean(-1).transpose(1, 2))

    def forward(self, prompts: Prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (query_feat, query_pos), each N x P x D."""
        boxes = prompts.boxes
        hw = prompts.image_sizes.to(boxes.dtype)
        scale = torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], -1)[:, None, :]
        b = boxes / scale
        cxcywh = torch.stack(
            [(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]],
            dim=-1,
        )
        if self.training and self.jitter > 0:
            wh = cxcywh[..., 2:]
            amp = torch.cat([wh / 2, wh], -1) * self.jitter
            cxcywh = cxcywh + (torch.rand_like(cxcywh) * 2 - 1) * amp
        cxcywh = cxcywh.clamp(0.0, 1.0)
        pos = self.pos_linear(coordinate_to_encoding(cxcywh, num_feats=self.dim // 2))
        content = self.pb_embedding.weight[0] + self.mask_tokens.weight[0]
        feat = content.expand(boxes.shape[0], boxes.shape[1], self.dim)
        return feat, pos


def location_self_attn_mask(valid: torch.Tensor, mode: Literal["masked", "full"]) -> torch.Tensor:
    """Self-attention mask between location queries: N x P x P bool, True = blocked (shared by the heads).

    ``masked``: every off-diagonal entry blocked (each query attends to itself only).
    ``full``: queries attend to every valid prompt of their image (padding blocked).
    """
    n, p = valid.shape
    eye = torch.eye(p, dtype=torch.bool, device=valid.device)
    if mode == "masked":
        mask = ~eye[None].expand(n, p, p)
    elif mode == "full":
        mask = ~valid[:, None, :].expand(n, p, p) & ~eye[None]
    else:
        raise ValueError(f"interactive_self_attn must be 'masked' or 'full', got {mode!r}")
    return mask
