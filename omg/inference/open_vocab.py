"""Open-vocabulary classification: the frozen CLIP branch and the geometric ensemble (docs/model.md §8.4).

1. CLIP branch: mask-pool the frozen backbone's stride-32 features with each query's binary
   mask (logit > 0 after resizing the mask to stride 32; over all frames of a video), map the
   pooled vector through the CLIP image head, and score it against the text embeddings with
   the same x100 scale and max over synonyms -> ``p_clip`` (softmax over classes).
2. In-vocabulary branch: the model's class logits without the background -> ``p_in``.
3. Fusion: seen classes ``log(p_in^(1-alpha) p_clip^alpha)``, unseen ``log(p_in^(1-beta) p_clip^beta)``
   (alpha = 0.4, beta = 0.8, FC-CLIP's values); a query whose stride-32 mask is empty uses p_in only.
4. Void: ``p_void`` = the background column of the softmax over the original logits; the final
   probabilities are ``[softmax(fused) * (1 - p_void), p_void]``, returned as ``log(p + 1e-8)``.

"Seen" is computed against the training vocabulary a checkpoint records: a test class is seen
if any of its synonyms is a synonym of a training class (:meth:`omg.utils.vocabulary.Vocabulary.seen_in`) (not
against a vocabulary that contains the test set itself, the released code's ADE quirk).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omg.modeling.backbone import clip_pooled
from omg.modeling.heads import class_logits

__all__ = ["ALPHA", "BETA", "clip_logits", "clip_pooled", "geometric_ensemble"]

ALPHA = 0.4
BETA = 0.8


def clip_logits(
    backbone,
    clip_features: torch.Tensor,
    mask_logits: torch.Tensor,
    text_embeddings: torch.Tensor,
    scale: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (N x Q x C CLIP logits without background, N x Q bool non-empty masks). ``scale``: the head's
    ``logit_scale.exp()``, as the released CLIP branch scores with the head's ``forward_logit`` (100.003)."""
    pooled, nonempty = clip_pooled(clip_features, mask_logits)
    with torch.no_grad():
        emb = F.normalize(backbone.clip_image_head(pooled).float(), dim=-1)
    return class_logits(emb, text_embeddings, scale)[..., :-1], nonempty


def geometric_ensemble(
    in_logits: torch.Tensor,
    clip_logit: torch.Tensor,
    seen: torch.Tensor,
    nonempty: torch.Tensor | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
) -> torch.Tensor:
    """in_logits ... x (C + 1) (background last); clip_logit ... x C; seen C bool; nonempty ... bool.

    -> ... x (C + 1) log-probabilities to use as logits in post-processing.
    """
    p_void = in_logits.float().softmax(-1)[..., -1:]
    # log(p_in^(1-a) p_clip^a) as the released code writes it (mask2former_vid.py L305-312), in log space: the
    # same value wherever the released product is finite, and no -inf (NaN after its 0/1 masking) where a
    # probability underflows
    log_in = in_logits[..., :-1].float().log_softmax(-1)
    log_clip = clip_logit.float().log_softmax(-1)
    a = torch.where(seen.to(log_in.device), torch.tensor(alpha), torch.tensor(beta)).to(log_in)
    a = a.expand_as(log_in)
    if nonempty is not None:
        a = a * nonempty[..., None].to(a.dtype)
    fused = (1 - a) * log_in + a * log_clip
    probs = torch.cat([fused.softmax(-1) * (1 - p_void), p_void], dim=-1)
    return torch.log(probs + 1e-8)
