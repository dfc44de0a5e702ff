"""Prediction heads on the post-normed decoder queries (docs/model.md §6).

Shapes: queries N x Q x D; mask features N x D x T x h x w (T frames of a clip, T = 1 for images).
"""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class MaskHead(nn.Module):
    """mask logits = MLP(q) . mask_features, a tube over the T frames: N x Q x T x h x w."""

    def __init__(self, dim: int):
        super().__init__()
        self.mask_embed = MLP(dim, dim, dim, 3)

    def forward(self, q: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = mask_features.shape
        return torch.bmm(self.mask_embed(q), mask_features.reshape(n, c, t * h * w)).view(n, -1, t, h, w)


def mask_pool(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mean of ``features`` (N x C x T x h x w) over pixels where the detached mask logit > 0.

    ``mask_logits`` N x Q x T x h x w (same resolution). A query with an empty mask pools to 0.
    Returns N x Q x C.
    """
    m = (mask_logits.detach() > 0).to(features.dtype).flatten(2)  # N x Q x THW
    area = m.sum(-1).clamp(min=1.0)
    return torch.bmm(m, features.flatten(2).transpose(1, 2)) / area[..., None]


class TextClassifier(nn.Module):
    """FC-CLIP-style in-vocabulary classifier against CLIP text embeddings.

    ``cls_embd = cls_proj(maskpool_proj(maskpool(mask_features)) + q)``;
    ``logit_c = exp(logit_scale) * max_k cos(cls_embd, t_ck)``; the background logit is 0
    (an all-zero class embedding, docs/model.md §6). ``logit_scale`` is a fixed buffer 4.6052 (the released value,
    ~ln 100).
    """

    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.maskpool_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.cls_proj = MLP(dim, dim, embed_dim, 3)
        # the released value (mask2former_vid.py L221-224: "4.6052 is np.log(1 / 0.01)"), exp = 100.0030
        self.register_buffer("logit_scale", torch.tensor(4.6052), persistent=False)

    def embed(self, q: torch.Tensor, mask_logits: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        return self.cls_proj(self.maskpool_proj(mask_pool(mask_features, mask_logits)) + q)

    def forward(
        self, q: torch.Tensor, mask_logits: torch.Tensor, mask_features: torch.Tensor, text_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (N x Q x (C + 1) logits, N x Q x E unit class embeddings); ``text_embeddings`` C x K x E, unit
        norm (K synonyms). The embeddings do not depend on the vocabulary: logits for another
        vocabulary are ``class_logits(embeddings, other_text, scale)``."""
        e = nn.functional.normalize(self.embed(q, mask_logits, mask_features), dim=-1)
        return class_logits(e, text_embeddings, self.logit_scale.exp()), e


def class_logits(embeddings: torch.Tensor, text_embeddings: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Unit embeddings (... x E) vs text (C x K x E) -> ... x (C + 1): scale * max over synonyms, then a 0
    background."""
    cos = torch.einsum("...e,cke->...ck", embeddings, text_embeddings.to(embeddings.dtype)).amax(-1)
    logits = cos * scale
    return torch.cat([logits, logits.new_zeros(logits.shape[:-1] + (1,))], dim=-1)
