"""The CLIP backbone: an open_clip model whose image tower gives 4 feature levels.

``CLIPBackbone`` wraps a whole open_clip model (image tower, CLIP image head, text tower):

- :meth:`forward` normalises 0..255 RGB input and returns the 4 feature maps
  ``[res2, res3, res4, res5]`` (strides and channels from the variant);
- :meth:`clip_image_head` maps mask-pooled stage-4 features into the CLIP joint space
  (the open-vocabulary branch, docs/model.md §8.4);
- :meth:`encode_text` embeds tokenised prompts (used by :mod:`omg.modeling.text`).

Frozen (the default of every paper variant): every parameter has ``requires_grad=False``,
the module stays in eval mode whatever ``train()`` says (drop-path off), and the forward
runs under ``torch.no_grad()`` so no autograd graph is built.

Weights: random init, or :meth:`load_pretrained` from an open_clip pretrained tag (taken
from the local cache; nothing is downloaded when ``HF_HUB_OFFLINE=1``), a local path or any
fsspec URI of an open_clip checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from omg.modeling.variants import BackboneVariant, register_tiny_configs

#: parameter-name prefixes of the CLIP image head (image embedding for the text space) by backbone kind
_CLIP_HEADS = {
    "convnext": ("visual.trunk.head.", "visual.head."),
    "vit": ("visual.ln_post.", "visual.proj"),
    "resnet": ("visual.attnpool.",),
}


class CLIPBackbone(nn.Module):
    def __init__(self, variant: BackboneVariant, frozen: bool | None = None, device: str | torch.device | None = None):
        super().__init__()
        import open_clip

        register_tiny_configs()
        self.variant = variant
        self.frozen = variant.frozen if frozen is None else frozen
        dev = torch.device(device) if device is not None else torch.get_default_device()
        with _quiet_random_init():
            self.clip = open_clip.create_model(variant.clip_model, pretrained=None, device=dev)
        if variant.kind == "vit":
            self.clip.visual.output_tokens = True
        self._register_pixel_stats(dev)
        if self.frozen:
            for p in self.clip.parameters():
                p.requires_grad_(False)
            self.clip.eval()
        else:
            # learned: the image tower's feature path trains; the text tower and the CLIP image head
            # stay frozen (they serve the open-vocabulary branch and take no part in the training
            # losses: trainable-but-unused parameters would also break DDP's gradient reduction)
            for name, p in self.clip.named_parameters():
                if not name.startswith("visual.") or name.startswith(_CLIP_HEADS.get(variant.kind, ())):
                    p.requires_grad_(False)

    @classmethod
    def wrapping(cls, clip: nn.Module, variant: BackboneVariant) -> "CLIPBackbone":
        """A trainable view of an existing open_clip model of ``variant`` (its parameters shared, none frozen): how
        the CLIP pretraining's region loss reads stage-4 features and the CLIP image head during training."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.variant, self.frozen, self.clip = variant, False, clip
        self._register_pixel_stats(next(clip.parameters()).device)
        return self

    def _register_pixel_stats(self, dev: torch.device) -> None:
        for name, values in (("pixel_mean", self.variant.pixel_mean), ("pixel_std", self.variant.pixel_std)):
            self.register_buffer(name, torch.tensor(values, device=dev).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "CLIPBackbone":
        super().train(mode)
        if self.frozen:
            self.clip.eval()
        return self

    @property
    def channels(self) -> tuple[int, ...]:
        return self.variant.channels

    @property
    def strides(self) -> tuple[float, ...]:
        return self.variant.strides

    # ------------------------------------------------------------------ image features
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """N x 3 x H x W float RGB in 0..255 -> [res2, res3, res4, res5] (N x C_i x H/s_i x W/s_i)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"backbone input must be N x 3 x H x W, got {tuple(images.shape)}")
        x = (images - self.pixel_mean) / self.pixel_std
        if self.frozen:
            with torch.no_grad():
                return self._features(x)
        return self._features(x)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        v = self.clip.visual
        kind = self.variant.kind
        if kind == "convnext":
            return list(v.trunk.forward_intermediates(x, indices=4, intermediates_only=True))
        if kind == "resnet":
            x = v.act1(v.bn1(v.conv1(x)))
            x = v.act2(v.bn2(v.conv2(x)))
            x = v.act3(v.bn3(v.conv3(x)))
            x = v.avgpool(x)
            feats = []
            for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
                x = layer(x)
                feats.append(x)
            return feats
        if kind == "vit":
            tokens = self._vit_tokens(x)  # N x C x h x w at stride = patch size
            h, w = tokens.shape[-2:]
            return [
                F.interpolate(
                    tokens, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False
                )
                if s != 1
                else tokens
                for s in (4.0, 2.0, 1.0, 0.5)
            ]
        raise ValueError(f"unknown backbone kind {kind!r}")

    def _vit_tokens(self, x: torch.Tensor) -> torch.Tensor:
        v = self.clip.visual
        p = self.variant.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"ViT input {tuple(x.shape[-2:])} must be a multiple of the patch size {p}")
        x = v.conv1(x)  # N x C x h x w
        n, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        pos = v.positional_embedding.to(x.dtype)
        cls_pos, grid_pos = pos[:1], pos[1:]
        g = int(round(grid_pos.shape[0] ** 0.5))
        if (g, g) != (h, w):
            grid_pos = (
                F.interpolate(
                    grid_pos.reshape(1, g, g, c).permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False
                )
                .permute(0, 2, 3, 1)
                .reshape(h * w, c)
            )
        cls = (v.class_embedding + cls_pos).to(x.dtype).expand(n, 1, c)
        x = torch.cat([cls, x + grid_pos], dim=1)
        x = v.ln_pre(v.patch_dropout(x))
        x = v.transformer(x)
        return x[:, 1:].transpose(1, 2).reshape(n, c, h, w)

    # ------------------------------------------------------------------ CLIP heads
    def clip_image_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mask-pooled stage-4 features (... x C) -> CLIP image embeddings (... x D), not normalised.

        ConvNeXt: trunk head norm -> flatten -> CLIP projection (docs/model.md §8.4). ViT: ``ln_post`` ->
        ``proj``. ResNet: the value path of the attention pool (``c_proj(v_proj(x))``), the
        standard dense use of CLIP ResNets, since attention pooling needs the whole map.
        """
        v = self.clip.visual
        shape = pooled.shape
        x = pooled.reshape(-1, shape[-1])
        kind = self.variant.kind
        if kind == "convnext":
            x = v.trunk.head.norm(x[:, :, None, None]).flatten(1)
            x = v.head(x)
        elif kind == "vit":
            x = v.ln_post(x)
            if v.proj is not None:
                x = x @ v.proj
        else:
            ap = v.attnpool
            x = ap.c_proj(ap.v_proj(x))
        return x.reshape(*shape[:-1], x.shape[-1])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokenised prompts (N x 77) -> L2-normalised text embeddings (N x D)."""
        return self.clip.encode_text(tokens, normalize=True)

    # ------------------------------------------------------------------ weights
    def load_pretrained(self, source: str, cache_dir: str | None = None) -> str:
        """Load CLIP weights from an open_clip pretrained tag, a local path or an fsspec URI.

        Returns a description of what was loaded. A tag is resolved through open_clip's
        cache (``HF_HUB_OFFLINE=1`` forbids downloads: an uncached tag raises with the
        path to place the file at instead).
        """
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(self.variant.clip_model)
        if source in tags:
            cfg = open_clip.get_pretrained_cfg(self.variant.clip_model, source)
            try:
                path = open_clip.download_pretrained(cfg, cache_dir=cache_dir)
            except Exception as err:  # network disabled or unreachable
                raise RuntimeError(
                    f"pretrained tag {source!r} of {self.variant.clip_model} is not in the local cache and cannot "
                    f"be downloaded here ({type(err).__name__}: {err}). Download it where a network is available "
                    f"and pass the file's path or URI instead (e.g. model.pretrained=/path/open_clip_model.safetensors)"
                ) from err
            self._load_file(path)
            return f"open_clip tag {source} ({path})"
        if "://" in source and not source.startswith("file://"):
            from omg.utils import io as uio

            with uio.local_file(source) as local:
                self._load_file(local)
            return f"checkpoint {source}"
        path = source[len("file://") :] if source.startswith("file://") else source
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"pretrained weights {source!r}: neither an existing file nor an open_clip tag of "
                f"{self.variant.clip_model} (tags: {', '.join(tags) or 'none'})"
            )
        self._load_file(path)
        return f"checkpoint {path}"

    def _load_file(self, path: str) -> None:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            for key in ("state_dict", "model"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
        state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
        result = self.clip.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{path}: not an open_clip {self.variant.clip_model} checkpoint: "
                f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
            )


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    """open_clip warns on every random-init build; weights are loaded separately here (load_pretrained)."""
    root = logging.getLogger()
    flt = _DropRandomInitNotice()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def mask_logits_at_stride4(masks: torch.Tensor, resized: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Q x H x W masks (0/1, an image's own size) -> Q x H4 x W4 mask logits (+-10 where a stride-4 cell is mostly
    in / out): each mask resized as its image was (nearest), placed in the padded input and area-averaged to the
    stride-4 grid, as a query's mask logits are: what :func:`clip_pooled` pools a known segment with."""
    m = F.interpolate(masks.float()[:, None], size=resized, mode="nearest")
    full = m.new_zeros(m.shape[0], 1, *padded)
    full[..., : resized[0], : resized[1]] = m
    return F.interpolate(full, size=(padded[0] // 4, padded[1] // 4), mode="area")[:, 0] * 20 - 10


def clip_pooled(clip_features: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask pooling of the stride-32 CLIP features (the open-vocabulary branch, docs/model.md §8.4; the CLIP
    pretraining's region loss pools its regions with it too).

    clip_features N x C5 x T x h x w; mask_logits N x Q x T x H4 x W4 -> (N x Q x C5 pooled, N x Q bool non-empty).
    """
    n, q, t = mask_logits.shape[:3]
    h, w = clip_features.shape[-2:]
    m = F.interpolate(
        mask_logits.detach().float().flatten(0, 2)[:, None], size=(h, w), mode="bilinear", align_corners=False
    ).view(n, q, t * h * w)
    binary = (m > 0).to(clip_features.dtype)
    area = binary.sum(-1)
    feats = clip_features.flatten(2)  # N x C5 x (T h w)
    pooled = torch.bmm(binary, feats.transpose(1, 2)) / area.clamp(min=1.0)[..., None]
    return pooled, area > 0
