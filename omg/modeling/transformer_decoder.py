"""Mask decoder: masked cross-attention -> self-attention -> FFN, with heads after every layer (docs/model.md §5).

Level schedule: layer i attends to level ``i % 3`` of the memories [s32, s16, s8]. Keys
are memory + learned level embedding, with a 3-D sine position (T frames of a clip are
concatenated into T*h*w tokens). Predictions are made from the raw initial queries and
after every layer (``dec_layers + 1`` sets); each set's mask logits, resized to the next
layer's level, give that layer's attention mask: a key is blocked where sigmoid < 0.5, and
a query whose whole row would be blocked attends everywhere (the all-blocked-row fix).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omg.modeling.heads import MLP, MaskHead, TextClassifier
from omg.modeling.position import sine_3d


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters, on ``scaled_dot_product_attention``.

    Masks are boolean with True = *blocked* (the ``nn.MultiheadAttention`` convention) and
    broadcast over heads: N x Q x K or N x 1 x Q x K, so a mask is never copied per head.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def forward(self, q, k, v, blocked: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, d = q.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        h, dh = self.heads, d // self.heads

        def split(x, w, b):
            return F.linear(x, w, b).view(n, x.shape[1], h, dh).transpose(1, 2)

        allowed = None
        if blocked is not None:
            allowed = ~(blocked[:, None] if blocked.dim() == 3 else blocked)
        out = F.scaled_dot_product_attention(split(q, wq, bq), split(k, wk, bk), split(v, wv, bv), attn_mask=allowed)
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, d))


class DecoderLayer(nn.Module):
    """Post-norm: masked cross-attention, self-attention, FFN (mmdet ``Mask2FormerTransformerDecoderLayer``)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, q, q_pos, memory, key_pos, attn_mask=None, self_attn_mask=None):
        x = self.cross_attn(q + q_pos, memory + key_pos, memory, attn_mask)
        q = self.norm1(q + x)
        x = self.self_attn(q + q_pos, q + q_pos, q, self_attn_mask)
        q = self.norm2(q + x)
        return self.norm3(q + self.ffn(q))


@dataclass
class PredictionSet:
    """One set of predictions. Q = queries, C = vocabulary size.

    logits: N x Q x (C + 1), last column = background (always 0 before softmax).
    masks: N x Q x T x H/4 x W/4 mask logits.
    objectness: N x Q x 1 logits.
    class_embed: N x Q x E unit class embeddings (vocabulary-independent; ``logits`` are their
    scaled cosines with the text embeddings), or None.
    """

    logits: torch.Tensor
    masks: torch.Tensor
    objectness: torch.Tensor
    class_embed: torch.Tensor | None = None


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, embed_dim: int, levels: int = 3):
        super().__init__()
        self.dim, self.heads, self.levels = dim, heads, levels
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim) for _ in range(layers))
        self.post_norm = nn.LayerNorm(dim)
        self.level_embed = nn.Embedding(levels, dim)
        self.mask_head = MaskHead(dim)
        self.classifier = TextClassifier(dim, embed_dim)
        self.objectness = MLP(dim, dim, 1, 3)
        for layer in self.layers:
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)

    def predict(
        self, q: torch.Tensor, mask_features: torch.Tensor, text_embeddings: torch.Tensor
    ) -> tuple[PredictionSet, torch.Tensor]:
        """Heads on the post-normed queries. Returns the predictions and the normed queries."""
        qn = self.post_norm(q)
        masks = self.mask_head(qn, mask_features)
        logits, embed = self.classifier(qn, masks, mask_features, text_embeddings)
        return PredictionSet(logits, masks, self.objectness(qn), embed), qn

    def attn_mask(self, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """N x Q x T x h4 x w4 logits -> N x Q x (T*h*w) bool, True = blocked (shared by the heads).

        sigmoid(x) < 0.5 is x < 0; a row with every key blocked is fully unblocked.
        """
        n, q, t = masks.shape[:3]
        m = F.interpolate(masks.detach().flatten(0, 2)[:, None], size=size, mode="bilinear", align_corners=False)
        blocked = (m < 0).view(n, q, t * size[0] * size[1])
        return blocked & ~blocked.all(-1, keepdim=True)

    def forward(
        self,
        query_feat: torch.Tensor,
        query_pos: torch.Tensor,
        memories: list[torch.Tensor],
        mask_features: torch.Tensor,
        text_embeddings: torch.Tensor,
        self_attn_mask: torch.Tensor | None = None,
        first_mask: torch.Tensor | None = None,
    ) -> tuple[list[PredictionSet], torch.Tensor]:
        """Run the decoder.

        query_feat, query_pos: N x Q x D. memories: [s32, s16, s8], each N x D x T x h x w.
        mask_features: N x D x T x H/4 x W/4. text_embeddings: C x K x E. ``first_mask`` (N x Q x T x H/4 x W/4
        logits): the first layer's attention mask instead of the initial queries' prediction (refinement: an
        object's previous mask; a query whose plane is NaN keeps its prediction).
        Returns the ``layers + 1`` prediction sets and the last layer's raw (pre-post-norm) queries.
        """
        n, _, t = mask_features.shape[:3]
        keys, key_pos, sizes = [], [], []
        for lvl, mem in enumerate(memories):
            h, w = mem.shape[-2:]
            sizes.append((h, w))
            keys.append(mem.flatten(2).transpose(1, 2) + self.level_embed.weight[lvl])
            pos = sine_3d(t, h, w, self.dim // 2, device=mem.device).to(mem.dtype)  # T x D x h x w
            key_pos.append(pos.permute(0, 2, 3, 1).reshape(1, t * h * w, self.dim).expand(n, -1, -1))
        q = query_feat
        preds = []
        pred, _ = self.predict(q, mask_features, text_embeddings)
        preds.append(pred)
        for i, layer in enumerate(self.layers):
            lvl = i % self.levels
            prior = pred.masks
            if i == 0 and first_mask is not None:
                prior = torch.where(first_mask.isnan(), pred.masks, first_mask.to(pred.masks.dtype))
            mask = self.attn_mask(prior, sizes[lvl])
            q = layer(q, query_pos, keys[lvl], key_pos[lvl], attn_mask=mask, self_attn_mask=self_attn_mask)
            pred, _ = self.predict(q, mask_features, text_embeddings)
            preds.append(pred)
        return preds, q
