"""OMG-Seg: one Mask2Former-style model for every segmentation task.

``build_model(ModelConfig(...))`` builds the components with explicit builder functions and
hands them to :class:`OMGSeg`. A forward pass takes either the learned object queries
(panoptic / instance / semantic, video tasks, open vocabulary) or location queries from
point and box prompts (interactive) — never both at once.

Input conventions: images are float RGB in 0..255, ``N x 3 x H x W`` (an image) or
``N x T x 3 x H x W`` (a clip of T frames); H and W must be multiples of the variant's
``size_divisibility`` (pad first). Text embeddings are ``C x K x E`` unit vectors (C classes,
K synonyms), from :class:`omg.modeling.text.TextEmbedder`.

The split into :meth:`OMGSeg.extract` (backbone + pixel decoder, the expensive part) and
:meth:`OMGSeg.decode` (queries, heads) lets a predictor compute image features once and
decode any number of prompt sets or vocabularies against them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from omg.modeling.backbone import CLIPBackbone
from omg.modeling.pixel_decoder import PixelDecoder
from omg.modeling.prompts import LocationQueryEncoder, Prompts, location_self_attn_mask
from omg.modeling.refine import Refinement
from omg.modeling.transformer_decoder import MaskDecoder, PredictionSet
from omg.modeling.variants import get_variant
from omg.utils.typed import FieldError


@dataclass(frozen=True)
class ModelConfig:
    """Model hyper-parameters. Defaults are the paper's (docs/model.md §4-§7)."""

    variant: str = "convnext_large_d_320"
    #: None = the variant's default (frozen for every paper variant)
    frozen: bool | None = None
    #: CLIP weights: an open_clip pretrained tag, a local path or an fsspec URI; None = random init
    pretrained: str | None = None
    hidden_dim: int = 256
    num_queries: int = 300
    enc_layers: int = 6
    enc_ffn_dim: int = 1024
    enc_points: int = 4
    dec_layers: int = 9
    dec_ffn_dim: int = 2048
    nheads: int = 8
    #: self-attention between location queries: "masked" (self only; the paper) or "full" (Table 3 ablation)
    interactive_self_attn: Literal["masked", "full"] = "masked"
    #: content of a location query: "embedding" (the released model: one shared learned vector; prompts
    #: differ only by position) or "sampled" (an improvement: plus the pixel features sampled inside the
    #: prompt's box, so a query starts from what is under the click; learns much faster on small budgets)
    location_content: Literal["embedding", "sampled"] = "embedding"
    #: interactive refinement (ours; docs/model.md §7.3): positive and negative clicks and the previous mask of an
    #: object correct its mask. False: the released model, which takes one click or one box per object
    refinement: bool = False
    #: fine-tuning: an OMG-Seg checkpoint (path or fsspec URI) whose weights the training starts from; its model
    #: config must equal this one (the vocabulary may differ: classes are text embeddings). Not kept in exports.
    init_from: str | None = None

    def __post_init__(self):
        try:
            get_variant(self.variant)
        except KeyError as err:  # names the known variants
            raise FieldError("variant", err.args[0]) from None
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by nheads ({self.nheads})")
        if self.hidden_dim % 4:
            raise ValueError("hidden_dim must be a multiple of 4 (sine encodings)")
        if self.interactive_self_attn not in ("masked", "full"):
            raise ValueError(f"interactive_self_attn must be 'masked' or 'full', got {self.interactive_self_attn!r}")
        if self.location_content not in ("embedding", "sampled"):
            raise ValueError(f"location_content must be 'embedding' or 'sampled', got {self.location_content!r}")
        for name in ("num_queries", "enc_layers", "dec_layers", "enc_points"):
            if getattr(self, name) < (0 if name == "enc_layers" else 1):
                raise ValueError(f"{name} must be positive")

    @property
    def is_frozen(self) -> bool:
        return get_variant(self.variant).frozen if self.frozen is None else self.frozen

    @staticmethod
    def tiny(variant: str = "tiny_convnext", **overrides) -> "ModelConfig":
        """A CPU-sized model: 64-d, 2 encoder and 3 decoder layers, 20 queries."""
        base = dict(
            variant=variant,
            hidden_dim=64,
            num_queries=20,
            enc_layers=2,
            enc_ffn_dim=128,
            dec_layers=3,
            dec_ffn_dim=128,
            nheads=4,
        )
        base.update(overrides)
        return ModelConfig(**base)


@dataclass
class Features:
    """What :meth:`OMGSeg.extract` computes once per image or clip.

    mask_features: N x D x T x H/4 x W/4. memories: [s32, s16, s8], each N x D x T x h x w.
    clip_features: the backbone's stride-32 level, N x C5 x T x H/32 x W/32 (open vocabulary).
    image_size: (H, W) of the (padded) input.
    """

    mask_features: torch.Tensor
    memories: list[torch.Tensor]
    clip_features: torch.Tensor
    image_size: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return self.mask_features.shape[2]


@dataclass
class OMGOutput:
    """Predictions of one forward pass. Q = queries (object or location), C = vocabulary size.

    pred_logits: N x Q x (C + 1) class logits of the last layer (background last, fixed at 0).
    pred_masks: N x Q x T x H/4 x W/4 mask logits of the last layer (T = 1 for images).
    pred_objectness: N x Q x 1 objectness logits of the last layer.
    class_embed: N x Q x E unit class embeddings of the last layer (logits for any vocabulary:
    ``omg.modeling.heads.class_logits(class_embed, text, 100)``).
    predictions: every prediction set (before the first layer and after each), last one = the above.
    query_embed: N x Q x D last-layer queries before the post-norm (used for video association).
    location: True when the queries were location queries from prompts.
    """

    pred_logits: torch.Tensor
    pred_masks: torch.Tensor
    pred_objectness: torch.Tensor
    class_embed: torch.Tensor
    predictions: list[PredictionSet]
    query_embed: torch.Tensor
    location: bool


class OMGSeg(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        backbone: CLIPBackbone,
        pixel_decoder: PixelDecoder,
        decoder: MaskDecoder,
        location_encoder: LocationQueryEncoder,
    ):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.location_encoder = location_encoder
        self.query_feat = nn.Embedding(config.num_queries, config.hidden_dim)
        self.query_embed = nn.Embedding(config.num_queries, config.hidden_dim)
        self.refinement = Refinement(config.hidden_dim, config.nheads) if config.refinement else None

    @property
    def size_divisibility(self) -> int:
        return self.backbone.variant.size_divisibility

    # ------------------------------------------------------------------ features
    def extract(self, images: torch.Tensor) -> Features:
        """Backbone + pixel decoder on an image batch (N x 3 x H x W) or clip batch (N x T x 3 x H x W)."""
        if not torch.is_tensor(images) or not images.is_floating_point():
            raise ValueError(
                f"images must be a float tensor (RGB 0..255), got {getattr(images, 'dtype', type(images))}"
            )
        if images.dim() == 4:
            images = images[:, None]
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be N x 3 x H x W or N x T x 3 x H x W, got shape {tuple(images.shape)}")
        n, t, _, h, w = images.shape
        d = self.size_divisibility
        if h % d or w % d:
            raise ValueError(
                f"image size {h}x{w} must be a multiple of {d} for {self.backbone.variant.name}; pad it first"
            )
        feats = self.backbone(images.flatten(0, 1))
        mask_features, memories = self.pixel_decoder(feats)

        def tube(x: torch.Tensor) -> torch.Tensor:  # (N*T) x C x h x w -> N x C x T x h x w (contiguous:
            return x.view(n, t, *x.shape[1:]).transpose(1, 2).contiguous()  # the heads read it 2x per layer)

        return Features(tube(mask_features), [tube(m) for m in memories], tube(feats[3]), (h, w))

    # ------------------------------------------------------------------ queries
    def decode(self, features: Features, text_embeddings: torch.Tensor, prompts: Prompts | None = None) -> OMGOutput:
        """Object queries (``prompts=None``) or location queries from ``prompts`` (with their clicks and previous
        masks when the model has ``refinement``)."""
        if text_embeddings.dim() != 3 or text_embeddings.shape[0] == 0:
            raise ValueError(f"text_embeddings must be C x K x E with C >= 1, got shape {tuple(text_embeddings.shape)}")
        n = features.mask_features.shape[0]
        first_mask = None
        if prompts is None:
            q = self.query_feat.weight[None].expand(n, -1, -1)
            q_pos = self.query_embed.weight[None].expand(n, -1, -1)
            self_mask = None
        else:
            if prompts.boxes.shape[0] != n:
                raise ValueError(f"prompts are for {prompts.boxes.shape[0]} images, features for {n}")
            if self.refinement is None:
                prompts.check_released()
            q, q_pos = self.location_encoder(prompts)
            if self.config.location_content == "sampled":
                q = q + self.location_encoder.sample_content(
                    features.mask_features[:, :, 0], prompts, features.image_size
                )
            if self.refinement is not None:
                q = self.refinement.queries(q, prompts, features.mask_features[:, :, 0], features.image_size)
                if prompts.prev_masks is not None:
                    first_mask = prompts.prev_masks[:, :, None]
            self_mask = location_self_attn_mask(prompts.valid, self.config.interactive_self_attn)
        preds, raw = self.decoder(
            q, q_pos, features.memories, features.mask_features, text_embeddings, self_mask, first_mask
        )
        if prompts is not None and self.refinement is not None:
            last = preds[-1]
            masks = self.refinement.correct(last.masks, prompts, features.image_size)
            preds[-1] = PredictionSet(last.logits, masks, last.objectness, last.class_embed)
        last = preds[-1]
        return OMGOutput(last.logits, last.masks, last.objectness, last.class_embed, preds, raw, prompts is not None)

    def forward(
        self,
        images: torch.Tensor,
        text_embeddings: torch.Tensor,
        prompts: Prompts | None = None,
        corrections: Callable[[OMGOutput, Prompts], Prompts] | None = None,
        rounds: int = 0,
    ) -> OMGOutput:
        """Features, then the queries. With ``corrections`` (training the refinement: simulated clicks), ``rounds``
        decodes without gradient first, each followed by ``prompts = corrections(output, prompts)`` (a click on
        each object's largest error and its mask as the previous mask); the output is the last decode's."""
        features = self.extract(images)
        if corrections is not None and rounds > 0:
            if prompts is None or self.refinement is None:
                raise ValueError("simulated corrections need prompts and a model with refinement")
            with torch.no_grad():
                for _ in range(rounds):
                    prompts = corrections(self.decode(features, text_embeddings, prompts), prompts)
        return self.decode(features, text_embeddings, prompts)

    def zero_touch(self) -> torch.Tensor:
        """0 x every query parameter of both kinds: keeps DDP's gradient buckets complete on
        batches that use only one query type (docs/model.md §7.2, the DDP note)."""
        params = [self.query_feat.weight, self.query_embed.weight, *self.location_encoder.parameters()]
        if self.refinement is not None:
            params += list(self.refinement.parameters())
        return sum(p.sum() * 0.0 for p in params)


def build_backbone(config: ModelConfig, device=None) -> CLIPBackbone:
    backbone = CLIPBackbone(get_variant(config.variant), frozen=config.frozen, device=device)
    if config.pretrained:
        backbone.load_pretrained(config.pretrained)
    return backbone


def build_pixel_decoder(config: ModelConfig, in_channels: tuple[int, ...]) -> PixelDecoder:
    return PixelDecoder(
        tuple(in_channels), config.hidden_dim, config.enc_layers, config.enc_ffn_dim, config.nheads, config.enc_points
    )


def build_decoder(config: ModelConfig, embed_dim: int) -> MaskDecoder:
    return MaskDecoder(config.hidden_dim, config.nheads, config.dec_ffn_dim, config.dec_layers, embed_dim)


def build_model(config: ModelConfig, device=None) -> OMGSeg:
    """Build OMG-Seg. ``device="meta"`` builds it without memory (parameter counts, FLOPs)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        backbone = build_backbone(config, device=device)
        variant = backbone.variant
        model = OMGSeg(
            config,
            backbone,
            build_pixel_decoder(config, variant.channels),
            build_decoder(config, variant.embed_dim),
            LocationQueryEncoder(config.hidden_dim, sampled_content=config.location_content == "sampled"),
        )
    return model
