"""Backbone variants as data: name -> open_clip model, pretrained tag, features, normalisation, defaults.

A variant says everything the rest of the model needs to know about its CLIP backbone:
the open_clip architecture and the pretrained tag of the paper, the channels and strides
of the four feature levels, the input normalisation, whether it is frozen by default, and
the learning-rate multiplier when it is not. Tiny variants are registered with open_clip
at run time (:func:`register_tiny_configs`) for CPU tests and the demo.

=====================  ===========================  =========================  =============
variant                open_clip model / tag         channels (strides)          default
=====================  ===========================  =========================  =============
convnext_large_d_320   convnext_large_d_320 /        192 384 768 1536 (4..32)    frozen (paper)
                       laion2b_s29b_b131k_ft_soup
convnext_base_w        convnext_base_w /             128 256 512 1024 (4..32)    frozen
                       laion2b_s13b_b82k_augreg
RN50                   RN50 / openai                 256 512 1024 2048 (4..32)   frozen
ViT-L-14               ViT-L-14 / openai             1024 x 4 (3.5 7 14 28)      frozen
ViT-L-14-learned       ViT-L-14 / openai             1024 x 4 (3.5 7 14 28)      learned, lr x0.1
tiny_convnext          omg_tiny_convnext (atto)      40 80 160 320 (4..32)       frozen
tiny_convnext_learned  omg_tiny_convnext (atto)      40 80 160 320 (4..32)       learned, lr x1
tiny_vit               omg_tiny_vit (patch 16)       128 x 4 (4 8 16 32)         frozen
tiny_vit_learned       omg_tiny_vit (patch 16)       128 x 4 (4 8 16 32)         learned, lr x1
=====================  ===========================  =========================  =============

ViT variants build the 4-level pyramid from the last token map (stride = patch size) by
bilinear resizing x4, x2, x1, x0.5 (docs/model.md §3).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Literal

#: ImageNet statistics in 0..255 RGB (OMG-Seg normalises with these, not CLIP's; docs/model.md §3)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class BackboneVariant:
    name: str
    #: open_clip architecture name (a built-in config, or one registered by register_tiny_configs)
    clip_model: str
    #: open_clip pretrained tag of the paper's weights (None: no published weights, e.g. tiny variants)
    pretrained_tag: str | None
    kind: Literal["convnext", "resnet", "vit"]
    channels: tuple[int, int, int, int]
    strides: tuple[float, float, float, float]
    #: CLIP joint embedding width (the text classifier's dimension)
    embed_dim: int
    frozen: bool = True
    #: learning-rate multiplier of the backbone when it is learned
    lr_mult: float = 0.1
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    #: ViT: patch size; the input is padded to a multiple of it
    patch_size: int | None = None
    #: inputs are padded to a multiple of this
    size_divisibility: int = 32
    tiny: bool = False
    description: str = ""


_VIT_L = dict(
    clip_model="ViT-L-14",
    pretrained_tag="openai",
    kind="vit",
    channels=(1024,) * 4,
    strides=(3.5, 7.0, 14.0, 28.0),
    embed_dim=768,
    patch_size=14,
    size_divisibility=28,
)
_TINY_CONVNEXT = dict(
    clip_model="omg_tiny_convnext",
    pretrained_tag=None,
    kind="convnext",
    channels=(40, 80, 160, 320),
    strides=(4.0, 8.0, 16.0, 32.0),
    embed_dim=128,
    tiny=True,
)
_TINY_VIT = dict(
    clip_model="omg_tiny_vit",
    pretrained_tag=None,
    kind="vit",
    channels=(128,) * 4,
    strides=(4.0, 8.0, 16.0, 32.0),
    embed_dim=128,
    patch_size=16,
    tiny=True,
    size_divisibility=32,
)

VARIANTS: dict[str, BackboneVariant] = {
    v.name: v
    for v in [
        BackboneVariant(
            "convnext_large_d_320",
            "convnext_large_d_320",
            "laion2b_s29b_b131k_ft_soup",
            "convnext",
            (192, 384, 768, 1536),
            (4.0, 8.0, 16.0, 32.0),
            768,
            description="the paper's default: frozen CLIP ConvNeXt-L (LAION-2B)",
        ),
        BackboneVariant(
            "convnext_base_w",
            "convnext_base_w",
            "laion2b_s13b_b82k_augreg",
            "convnext",
            (128, 256, 512, 1024),
            (4.0, 8.0, 16.0, 32.0),
            640,
            description="CLIP ConvNeXt-B (wide text), frozen",
        ),
        BackboneVariant(
            "RN50",
            "RN50",
            "openai",
            "resnet",
            (256, 512, 1024, 2048),
            (4.0, 8.0, 16.0, 32.0),
            1024,
            description="the supplementary's ResNet-50 row (OpenAI CLIP RN50), frozen",
        ),
        BackboneVariant("ViT-L-14", **_VIT_L, description="the supplementary's frozen ViT-L/14 (fake pyramid)"),
        BackboneVariant(
            "ViT-L-14-learned",
            **_VIT_L,
            frozen=False,
            lr_mult=0.1,
            description="the supplementary's learned ViT-L/14 (backbone lr x0.1)",
        ),
        BackboneVariant(
            "tiny_convnext", **_TINY_CONVNEXT, description="ConvNeXt-atto trunk, 2-layer text tower: CPU tests and demo"
        ),
        BackboneVariant(
            "tiny_convnext_learned",
            **_TINY_CONVNEXT,
            frozen=False,
            lr_mult=1.0,
            description="tiny ConvNeXt, learned (CPU ablation: frozen vs learned)",
        ),
        BackboneVariant(
            "tiny_vit", **_TINY_VIT, description="4-layer width-128 ViT, patch 16: CPU ablation ViT vs ConvNeXt"
        ),
        BackboneVariant("tiny_vit_learned", **_TINY_VIT, frozen=False, lr_mult=1.0, description="tiny ViT, learned"),
    ]
}

#: open_clip configs of the tiny variants (random init only; registered at run time)
TINY_OPEN_CLIP_CONFIGS: dict[str, dict] = {
    "omg_tiny_convnext": {
        "embed_dim": 128,
        "vision_cfg": {
            "timm_model_name": "convnext_atto",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 128,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
    "omg_tiny_vit": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 128, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
    },
}

_registered = False
_lock = threading.Lock()


def register_tiny_configs() -> None:
    """Register the tiny open_clip configs (idempotent, thread-safe)."""
    global _registered
    with _lock:
        if _registered:
            return
        import open_clip

        # open_clip reads the files once, at registration, and keeps the configs in memory (a later
        # rescan skips a folder that is gone), so the folder does not outlive this call
        with tempfile.TemporaryDirectory(prefix="omg-open-clip-configs-") as folder:
            for name, cfg in TINY_OPEN_CLIP_CONFIGS.items():
                with open(os.path.join(folder, f"{name}.json"), "w") as f:
                    json.dump(cfg, f)
            open_clip.add_model_config(folder)
        _registered = True


def get_variant(name: str) -> BackboneVariant:
    if name not in VARIANTS:
        raise KeyError(f"unknown backbone variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]
