"""What the predictor's image and video parts share (:mod:`omg.inference.image_tasks`,
:mod:`omg.inference.video_tasks`): the model on its device, the checkpoint's metadata and training vocabulary,
text embeddings, the test-time resize and where post-processing runs.

Test-time resize: keep ratio with (long side, short side) limits ``test_size`` and mmcv's rounding
(``int(x * f + 0.5)``); the image is padded to the backbone's size divisibility with the pixel mean, i.e. with 0
after normalisation, as the released data preprocessor pads.

Resolution of the post-processing (``postprocess_at``):

- ``"original"`` (default, the released code: ``seg/models/fusion_head/omgseg_fusionhead.py``
  ``predict``, ``rescale=True``): every query's mask logits are cropped to the resized image and
  upsampled bilinearly to the original size, then panoptic / instance / semantic / VIS / VOS
  post-processing runs there;
- ``"input"`` (an option): post-processing at the resized input resolution, the final id maps
  and masks upscaled to the original size (nearest). Identical when the image is not resized,
  far cheaper in memory and time on large images (a 2048 x 1024 Cityscapes image holds 300
  full-size logit maps in the default).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omg.inference import open_vocab as ov
from omg.inference.tasks import POSTPROCESS_AT, PROMPT_LABELS
from omg.modeling.heads import class_logits
from omg.modeling.model import OMGSeg
from omg.modeling.text import TextEmbedder
from omg.utils.typed import from_dict
from omg.utils.vocabulary import Vocabulary
from omg.utils.zoom import ZoomIn


def as_image(a: Any, where: str) -> np.ndarray:
    """``a`` checked as an H x W x 3 RGB image (uint8, or float in 0..255); ``where`` names it in the error."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array (H x W x 3 RGB), got {type(a).__name__}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{where}: expected an H x W x 3 RGB array, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{where}: expected uint8 (or float 0..255) pixels, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{where}: float pixels must lie in 0..255")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise ValueError(f"{where}: image {a.shape[1]}x{a.shape[0]} is too small")
    return a


def to_original(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """... x h x w (ids or bool) -> ... x H x W (nearest)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m.cpu().numpy()
    shape = m.shape
    x = m.reshape(-1, 1, *shape[-2:]).float()
    x = F.interpolate(x, size=size, mode="nearest")
    return x.reshape(*shape[:-2], *size).to(m.dtype).cpu().numpy()


def zoom_setting(zoom: ZoomIn | bool | None, metadata: dict) -> ZoomIn | None:
    """The zoom-in a predictor runs: ``zoom`` as given (True: :class:`ZoomIn`'s defaults, False: none), or with
    None the checkpoint's (its metadata's ``zoom_in``: the training config's ``data.zoom_in``)."""
    if zoom is None:
        recorded = metadata.get("zoom_in")
        return None if recorded is None else from_dict(ZoomIn, recorded, "checkpoint metadata 'zoom_in'")
    if isinstance(zoom, bool):
        return ZoomIn() if zoom else None
    if not isinstance(zoom, ZoomIn):
        raise TypeError(f"zoom must be a ZoomIn, True, False or None, got {type(zoom).__name__}")
    return zoom


class PredictorCore:
    """The model and the settings every task reads. ``stats`` counts backbone and decoder calls (what the caches
    save is visible)."""

    def __init__(
        self,
        model: OMGSeg,
        metadata: dict | None = None,
        device: str | torch.device | None = None,
        test_size: tuple[int, int] | None = None,
        postprocess_at: str = "original",
        prompt_labels: str = "queries",
        zoom: ZoomIn | bool | None = None,
    ):
        if postprocess_at not in POSTPROCESS_AT:
            raise ValueError(f"postprocess_at must be one of {', '.join(POSTPROCESS_AT)}, got {postprocess_at!r}")
        if prompt_labels not in PROMPT_LABELS:
            raise ValueError(f"prompt_labels must be one of {', '.join(PROMPT_LABELS)}, got {prompt_labels!r}")
        self.postprocess_at = postprocess_at
        self.prompt_labels = prompt_labels
        metadata = metadata or {}
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.metadata = metadata
        # the one metadata schema for classes: the training label space (omg.data.labels.LabelSpace.to_dict)
        ls = metadata.get("label_space")
        self.training_vocabulary = None if ls is None else Vocabulary.from_dict(ls)
        #: (long side, short side) limits of the test-time resize (keep ratio)
        self.test_size = tuple(test_size or metadata.get("test_size") or (1333, 800))
        #: zoom-in of a refinement model's corrections (:mod:`omg.utils.zoom`; None: off): ``zoom`` None takes the
        #: checkpoint's (``zoom_in`` in its metadata), True RITM's settings, False none
        self.zoom = zoom_setting(zoom, metadata)
        self.embedder = TextEmbedder(self.model.backbone)
        self.stats = {"backbone_calls": 0, "decoder_calls": 0}

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self, items: Sequence[Any] | Vocabulary | None) -> Vocabulary:
        """``items`` parsed (:meth:`Vocabulary.parse`); the training vocabulary when None."""
        if items is None:
            if self.training_vocabulary is None:
                raise ValueError("this checkpoint records no training vocabulary: pass vocabulary=[...]")
            return self.training_vocabulary
        return Vocabulary.parse(items, self.training_vocabulary)

    def text(self, vocab: Vocabulary) -> torch.Tensor:
        """The vocabulary's text embeddings (cached by the embedder)."""
        return self.embedder.embed(vocab).to(self.device)

    def use_open_vocab(self, vocab: Vocabulary, open_vocab: bool | str) -> tuple[bool, torch.Tensor]:
        """(whether the CLIP ensemble runs, which classes training saw): ``open_vocab`` True / False / "auto" (the
        ensemble when a class is unseen)."""
        if self.training_vocabulary is None:
            seen = torch.zeros(len(vocab), dtype=torch.bool)
        else:
            seen = torch.tensor(vocab.seen_in(self.training_vocabulary), dtype=torch.bool)
        if open_vocab == "auto":
            return bool((~seen).any()), seen
        return bool(open_vocab), seen

    @property
    def logit_scale(self) -> torch.Tensor:
        """The scale of every class logit, the decoder's and the CLIP branch's: the head's ``logit_scale.exp()``
        (100.003, as the released ``forward_logit`` scores both)."""
        return self.model.decoder.classifier.logit_scale.exp()

    def decoder_text(self) -> torch.Tensor:
        """The text embeddings the decoder runs with: the training vocabulary's (a placeholder without one; the
        masks and class embeddings do not depend on it, only the decoder's own logits, which are not used)."""
        if self.training_vocabulary is not None:
            return self.text(self.training_vocabulary)
        return F.normalize(torch.ones(1, 1, self.model.backbone.variant.embed_dim, device=self.device), dim=-1)

    def class_logits(
        self,
        embed: torch.Tensor,
        masks: torch.Tensor,
        clip_features: torch.Tensor,
        vocab: Vocabulary,
        open_vocab: bool | str,
    ) -> torch.Tensor:
        """N x Q x (C + 1) logits for ``vocab``, with the CLIP ensemble when asked (or 'auto' and unseen classes)."""
        text = self.text(vocab)
        scale = self.logit_scale
        logits = class_logits(embed, text, scale)
        use, seen = self.use_open_vocab(vocab, open_vocab)
        if use:
            clip, nonempty = ov.clip_logits(self.model.backbone, clip_features, masks, text, scale)
            logits = ov.geometric_ensemble(logits, clip, seen, nonempty)
        return logits

    # ------------------------------------------------------------------ inputs and outputs
    def resize_factor(self, h: int, w: int) -> float:
        long_max, short_max = self.test_size
        return min(long_max / max(h, w), short_max / min(h, w))

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) an h x w image has at the network's input (before padding)."""
        f = self.resize_factor(h, w)
        return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))  # mmcv's _scale_size rounding

    def prepare(self, arrays: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize (keep ratio) to the test size, pad to a common size divisible by the backbone's. -> (N x 3 x H x W
        batch on the device, the resized (height, width) of each)."""
        tensors, sizes = [], []
        for a in arrays:
            h, w = a.shape[:2]
            rh, rw = self.input_size(h, w)
            t = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
            if (rh, rw) != (h, w):
                t = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0, 255)
            tensors.append(t[0])
            sizes.append((rh, rw))
        d = self.model.size_divisibility
        ph = -(-max(s[0] for s in sizes) // d) * d
        pw = -(-max(s[1] for s in sizes) // d) * d
        # padded with the pixel mean: zero after the backbone's normalisation, as the official pipeline pads
        # (normalise, then pad with 0; omg.training.inputs.fill_padding)
        mean = torch.tensor(self.model.backbone.variant.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        batch = mean.repeat(len(tensors), 1, ph, pw)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
        return batch.to(self.device), sizes

    def output_logits(
        self, masks: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int], original: tuple[int, int]
    ) -> torch.Tensor:
        """Q x h4 x w4 mask logits -> Q x h x w where post-processing runs: bilinear to the padded input, crop to
        the resized image, and (``postprocess_at="original"``) bilinear to the original size."""
        rh, rw = resized
        up = F.interpolate(masks[None].float(), size=padded, mode="bilinear", align_corners=False)[0][:, :rh, :rw]
        if self.postprocess_at == "original" and (rh, rw) != tuple(original):
            up = F.interpolate(up[None], size=tuple(original), mode="bilinear", align_corners=False)[0]
        return up
