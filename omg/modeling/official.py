"""The released OMG-Seg checkpoints (lxtGH/OMG-Seg, mmdet/mmengine layout) in this project's model.

``convert_official(state_dict, variant, pretrained)`` -> (model, report). The released model is mmdet's
Mask2Former head with OMG-Seg's additions (``seg/models/heads/mask2former_vid.py``), mmdet's
``MSDeformAttnPixelDecoder`` and OMG-Seg's ``OpenCLIPBackbone`` (``seg/models/backbones/openclip_backbone.py``);
the renames below are the whole mapping (no reshapes: every tensor keeps its shape). mmcv's
``ConvModule`` names its parts ``conv`` / ``gn``; mmdet's FFN is ``layers.0.0`` (Linear in a Sequential with
the activation) and ``layers.1``; ``norms.k`` are a layer's LayerNorms in the order they are applied (the
decoder layer: cross-attention, self-attention, FFN; the encoder layer: self-attention, FFN).

What the released file lacks, the conversion takes elsewhere: the CLIP text tower (and any CLIP weight the
backbone wrapper leaves out) from ``pretrained`` (an open_clip tag, path or URI, as ``ModelConfig.pretrained``);
the class embeddings are not weights (a non-persistent buffer there; here text embeddings computed per
vocabulary). Every source tensor must be used and every model tensor filled, else :class:`ConversionError`
lists the names.

Loading is safe: ``torch.load(weights_only=True)``; the mmengine / numpy metadata objects the released files
carry are allow-listed by name and replaced by inert stand-ins (never unpickled as themselves).
"""

from __future__ import annotations

import dataclasses
import io
import re
from dataclasses import dataclass, field

import torch

from omg.modeling.model import ModelConfig, OMGSeg, build_model

#: (pattern, replacement) applied in order; the first that matches renames the tensor. Sources:
#: mmdet ``mmdet/models/layers/msdeformattn_pixel_decoder.py`` (``input_convs``, ``encoder``, ``level_encoding``,
#: ``lateral_convs``, ``output_convs``, ``mask_feature``), ``mmdet/models/layers/transformer/mask2former_layers.py``
#: and ``deformable_detr_layers.py`` (``self_attn``, ``cross_attn.attn``, ``ffn.layers``, ``norms``, ``post_norm``),
#: OMG-Seg ``seg/models/heads/mask2former_vid.py`` L112-246 (``query_embed``, ``query_feat``, ``level_embed``,
#: ``mask_embed``, ``iou_embed``, ``cls_proj``, ``mask_pooling_proj``, ``mask_tokens``, ``pb_embedding``,
#: ``pos_linear``) and ``seg/models/backbones/openclip_backbone.py`` L119-176 (``stem``, ``layerN``, ``head``).
PD = r"panoptic_head\.pixel_decoder\."
TD = r"panoptic_head\.transformer_decoder\."
RENAMES: tuple[tuple[str, str], ...] = (
    # backbone, ConvNeXt (the released model): the open_clip model's visual trunk and its CLIP head
    (r"^backbone\.stem\.", "backbone.clip.visual.trunk.stem."),
    (r"^backbone\.layer1\.", "backbone.clip.visual.trunk.stages.0."),
    (r"^backbone\.layer2\.", "backbone.clip.visual.trunk.stages.1."),
    (r"^backbone\.layer3\.", "backbone.clip.visual.trunk.stages.2."),
    (r"^backbone\.layer4\.", "backbone.clip.visual.trunk.stages.3."),
    (r"^backbone\.norm_pre\.", "backbone.clip.visual.trunk.norm_pre."),
    (r"^backbone\.head\.0\.", "backbone.clip.visual.trunk.head."),
    (r"^backbone\.head\.1\.", "backbone.clip.visual.head."),
    # pixel decoder (MSDeformAttnPixelDecoder)
    (rf"^{PD}input_convs\.(\d+)\.conv\.", r"pixel_decoder.input_proj.\1.0."),
    (rf"^{PD}input_convs\.(\d+)\.gn\.", r"pixel_decoder.input_proj.\1.1."),
    (rf"^{PD}encoder\.layers\.(\d+)\.self_attn\.", r"pixel_decoder.layers.\1.attn."),
    (rf"^{PD}encoder\.layers\.(\d+)\.ffn\.layers\.0\.0\.", r"pixel_decoder.layers.\1.ffn.0."),
    (rf"^{PD}encoder\.layers\.(\d+)\.ffn\.layers\.1\.", r"pixel_decoder.layers.\1.ffn.2."),
    (rf"^{PD}encoder\.layers\.(\d+)\.norms\.0\.", r"pixel_decoder.layers.\1.norm1."),
    (rf"^{PD}encoder\.layers\.(\d+)\.norms\.1\.", r"pixel_decoder.layers.\1.norm2."),
    (rf"^{PD}level_encoding\.weight$", "pixel_decoder.level_embed"),
    (rf"^{PD}lateral_convs\.0\.conv\.", "pixel_decoder.lateral_conv.0."),
    (rf"^{PD}lateral_convs\.0\.gn\.", "pixel_decoder.lateral_conv.1."),
    (rf"^{PD}output_convs\.0\.conv\.", "pixel_decoder.output_conv.0."),
    (rf"^{PD}output_convs\.0\.gn\.", "pixel_decoder.output_conv.1."),
    (rf"^{PD}mask_feature\.", "pixel_decoder.mask_features."),
    # transformer decoder (Mask2FormerTransformerDecoder): cross-attention, self-attention, FFN per layer
    (rf"^{TD}layers\.(\d+)\.cross_attn\.attn\.", r"decoder.layers.\1.cross_attn."),
    (rf"^{TD}layers\.(\d+)\.self_attn\.attn\.", r"decoder.layers.\1.self_attn."),
    (rf"^{TD}layers\.(\d+)\.ffn\.layers\.0\.0\.", r"decoder.layers.\1.ffn.0."),
    (rf"^{TD}layers\.(\d+)\.ffn\.layers\.1\.", r"decoder.layers.\1.ffn.2."),
    (rf"^{TD}layers\.(\d+)\.norms\.0\.", r"decoder.layers.\1.norm1."),
    (rf"^{TD}layers\.(\d+)\.norms\.1\.", r"decoder.layers.\1.norm2."),
    (rf"^{TD}layers\.(\d+)\.norms\.2\.", r"decoder.layers.\1.norm3."),
    (rf"^{TD}post_norm\.", "decoder.post_norm."),
    # the head's own modules
    (r"^panoptic_head\.level_embed\.", "decoder.level_embed."),
    (r"^panoptic_head\.query_embed\.", "query_embed."),
    (r"^panoptic_head\.query_feat\.", "query_feat."),
    (r"^panoptic_head\.mask_embed\.0\.", "decoder.mask_head.mask_embed.layers.0."),
    (r"^panoptic_head\.mask_embed\.2\.", "decoder.mask_head.mask_embed.layers.1."),
    (r"^panoptic_head\.mask_embed\.4\.", "decoder.mask_head.mask_embed.layers.2."),
    (r"^panoptic_head\.iou_embed\.0\.", "decoder.objectness.layers.0."),
    (r"^panoptic_head\.iou_embed\.2\.", "decoder.objectness.layers.1."),
    (r"^panoptic_head\.iou_embed\.4\.", "decoder.objectness.layers.2."),
    (r"^panoptic_head\.cls_proj\.0\.", "decoder.classifier.cls_proj.layers.0."),
    (r"^panoptic_head\.cls_proj\.2\.", "decoder.classifier.cls_proj.layers.1."),
    (r"^panoptic_head\.cls_proj\.4\.", "decoder.classifier.cls_proj.layers.2."),
    (r"^panoptic_head\.mask_pooling_proj\.([01])\.", r"decoder.classifier.maskpool_proj.\1."),
    (r"^panoptic_head\.mask_tokens\.", "location_encoder.mask_tokens."),
    (r"^panoptic_head\.pb_embedding\.", "location_encoder.pb_embedding."),
    (r"^panoptic_head\.pos_linear\.", "location_encoder.pos_linear."),
)
_COMPILED = tuple((re.compile(p), r) for p, r in RENAMES)

#: names the released files may carry that are not weights (mmengine keeps buffers it does not need)
IGNORED = (re.compile(r"^data_preprocessor\."), re.compile(r"\.num_batches_tracked$"))


class ConversionError(ValueError):
    """A source that does not convert completely; the message lists the names."""


@dataclass
class ConversionReport:
    """What the conversion did: the model config it inferred, how many tensors it mapped, what came from the
    pretrained CLIP weights instead."""

    config: ModelConfig
    mapped: int
    from_pretrained: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


class _Inert:
    """Stand-in for any pickled global of a checkpoint (a class, a function): takes any arguments and state, keeps
    nothing, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()


def load_official_state_dict(data: bytes, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of a released OMG-Seg (mmengine) checkpoint file's bytes, without executing anything: PyTorch's
    ``weights_only`` unpickler rebuilds the tensors and plain containers, and every other pickled global — the
    runner's ``message_hub`` (mmengine's ``HistoryBuffer``, which pickles ``builtins.getattr``), numpy values,
    whatever a file holds — is an inert stand-in that runs no code and keeps nothing."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception as err:
        raise ConversionError(f"{where}: not a PyTorch checkpoint file ({type(err).__name__}: {err})") from err
    try:
        with torch.serialization.safe_globals([(_Inert, g) for g in unsafe]):
            doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        # PyTorch's own refusal (a module its weights-only unpickler blocks outright: os, posix, subprocess ...)
        # is one line of its long message
        why = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), f"{type(err).__name__}: {err}")
        raise ConversionError(
            f"{where}: cannot be read safely ({why}): the file holds code to run, not only weights and metadata; "
            "convert the released checkpoint itself (lxtGH/OMG-Seg), or a file saved by mmengine's runner"
        ) from err
    if isinstance(doc, dict) and isinstance(doc.get("state_dict"), dict):
        doc = doc["state_dict"]
    if not isinstance(doc, dict) or not doc or not all(torch.is_tensor(v) for v in doc.values()):
        raise ConversionError(
            f"{where}: holds no state dict (expected {{'state_dict': {{name: tensor}}}} or {{name: tensor}})"
        )
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in doc.items()}
    if not any(k.startswith("panoptic_head.") for k in sd):
        raise ConversionError(
            f"{where}: not an OMG-Seg checkpoint: no panoptic_head.* weights (first names: {', '.join(list(sd)[:3])})"
        )
    return sd


def official_name(name: str) -> str | None:
    """Our name for a released checkpoint's tensor name (None: no rule)."""
    for pattern, repl in _COMPILED:
        if pattern.match(name):
            return pattern.sub(repl, name, count=1)
    return None


def _count(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in sd if (m := pat.match(k))})


def config_from_official(
    sd: dict[str, torch.Tensor], variant: str = "convnext_large_d_320", nheads: int = 8, **overrides
) -> ModelConfig:
    """The model config of a released state dict: sizes from its tensor shapes (the number of attention heads is
    not in the weights: the released configs use 8)."""

    def shape(name: str) -> tuple[int, ...]:
        if name not in sd:
            raise ConversionError(f"the checkpoint has no {name}: not a released OMG-Seg model")
        return tuple(sd[name].shape)

    hidden = shape("panoptic_head.query_feat.weight")[1]
    levels = shape("panoptic_head.pixel_decoder.level_encoding.weight")[0]
    offsets = shape("panoptic_head.pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight")[0]
    points, rest = divmod(offsets, nheads * levels * 2)
    if rest:
        raise ConversionError(
            f"sampling_offsets has {offsets} outputs: not {nheads} heads x {levels} levels x points x 2"
        )
    return ModelConfig(
        **{
            **dict(
                variant=variant,
                hidden_dim=hidden,
                num_queries=shape("panoptic_head.query_feat.weight")[0],
                enc_layers=_count(sd, "panoptic_head.pixel_decoder.encoder.layers."),
                enc_ffn_dim=shape("panoptic_head.pixel_decoder.encoder.layers.0.ffn.layers.0.0.weight")[0],
                enc_points=points,
                dec_layers=_count(sd, "panoptic_head.transformer_decoder.layers."),
                dec_ffn_dim=shape("panoptic_head.transformer_decoder.layers.0.ffn.layers.0.0.weight")[0],
                nheads=nheads,
            ),
            **overrides,
        }
    )


#: the CLIP image tower in our model: the released file holds it (a file that lacks part of it is truncated)
IMAGE_TOWER = "backbone.clip.visual."


def convert_official(
    sd: dict[str, torch.Tensor],
    variant: str = "convnext_large_d_320",
    pretrained: str | None = None,
    nheads: int = 8,
    fill_image_tower: bool = False,
) -> tuple[OMGSeg, ConversionReport]:
    """A released state dict (:func:`load_official_state_dict`) -> our model with every tensor filled.

    ``pretrained``: the CLIP weights (open_clip tag, path or URI) the released file does not hold (the text
    tower); without it the conversion fails listing those names. Only the text tower is taken from it: an image
    tower tensor the file lacks is an error naming it (a truncated or foreign file), unless ``fill_image_tower``
    (then the CLIP's image weights fill it too; the report lists every filled tensor)."""
    config = config_from_official(sd, variant, nheads)
    model = build_model(dataclasses.replace(config, pretrained=pretrained))
    own = model.state_dict()
    converted, unmapped, ignored, wrong = {}, [], [], []
    for name, tensor in sd.items():
        if any(p.search(name) for p in IGNORED):
            ignored.append(name)
            continue
        ours = official_name(name)
        if ours is None or ours not in own:
            unmapped.append(name if ours is None else f"{name} (-> {ours}, not in the model)")
            continue
        if tuple(tensor.shape) != tuple(own[ours].shape):
            wrong.append(f"{name} {tuple(tensor.shape)} -> {ours} {tuple(own[ours].shape)}")
            continue
        converted[ours] = tensor
    rest = [k for k in own if k not in converted]
    fillable = [
        k for k in rest if k.startswith("backbone.clip.") and (fill_image_tower or not k.startswith(IMAGE_TOWER))
    ]
    filled = set(fillable)
    missing = [k for k in rest if k not in filled] + ([] if pretrained else fillable)
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} source tensor(s) with no place in the model: {', '.join(unmapped[:8])}")
    if wrong:
        problems.append(f"{len(wrong)} with another shape: {'; '.join(wrong[:5])}")
    if missing:
        hint = ""
        if any(k.startswith(IMAGE_TOWER) for k in missing) and not fill_image_tower:
            hint = (
                " (the released file holds the CLIP image tower: this one lacks part of it; "
                "--fill-image-tower takes those from --pretrained)"
            )
        elif any(k.startswith("backbone.clip.") for k in missing):
            hint = (
                " (the CLIP text tower is not in the released file: pass the open_clip weights, --pretrained TAG|PATH)"
            )
        problems.append(f"{len(missing)} model tensor(s) not filled{hint}: {', '.join(missing[:8])}")
    if problems:
        raise ConversionError("; ".join(problems))
    model.load_state_dict(converted, strict=False)
    return model.eval(), ConversionReport(config, len(converted), fillable, ignored)
