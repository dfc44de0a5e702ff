"""Model introspection: parameters per component and GFLOPs (``omg model-info``).

Large variants are built on the meta device (no memory, no weights); FLOPs are counted
with ``torch.utils.flop_counter.FlopCounterMode`` on a forward pass of the object-query
path at the given input size, padded up to the variant's size divisibility (1200x800 ->
1216x800 for stride-32 backbones), against a vocabulary of ``num_classes`` classes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from omg.modeling.model import ModelConfig, OMGSeg, build_model

#: component name -> parameter-name prefixes (first match wins; order matters)
COMPONENTS: "OrderedDict[str, tuple[str, ...]]" = OrderedDict(
    [
        (
            "backbone.clip_image_head",
            (
                "backbone.clip.visual.head.",
                "backbone.clip.visual.attnpool.",
                "backbone.clip.visual.ln_post.",
                "backbone.clip.visual.proj",
            ),
        ),
        ("backbone.image_tower", ("backbone.clip.visual.",)),
        ("backbone.text_tower", ("backbone.clip.",)),
        ("pixel_decoder", ("pixel_decoder.",)),
        ("transformer_decoder", ("decoder.layers.", "decoder.post_norm.", "decoder.level_embed.")),
        ("heads", ("decoder.mask_head.", "decoder.classifier.", "decoder.objectness.")),
        ("object_queries", ("query_feat.", "query_embed.")),
        ("location_queries", ("location_encoder.",)),
    ]
)


def parameter_counts(model: OMGSeg) -> dict:
    """-> {"total", "trainable", "frozen", "inference" (total without the text tower), "components": {name: {...}}}.

    Tiny variants are counted with :meth:`ModelConfig.tiny` sizes, the others with the paper's.
    """
    comps = {name: {"total": 0, "trainable": 0, "frozen": 0} for name in COMPONENTS}
    for pname, p in model.named_parameters():
        for comp, prefixes in COMPONENTS.items():
            if pname.startswith(prefixes):
                break
        else:
            raise KeyError(f"parameter {pname} belongs to no component; extend omg.modeling.info.COMPONENTS")
        n = p.numel()
        comps[comp]["total"] += n
        comps[comp]["trainable" if p.requires_grad else "frozen"] += n
    total = sum(c["total"] for c in comps.values())
    trainable = sum(c["trainable"] for c in comps.values())
    return {
        "total": total,
        "trainable": trainable,
        "frozen": total - trainable,
        "inference": total - comps["backbone.text_tower"]["total"],
        "components": comps,
    }


def count_flops(
    model: OMGSeg, height: int = 800, width: int = 1200, num_classes: int = 133, device: str | torch.device = "meta"
) -> tuple[float, tuple[int, int]]:
    """GFLOPs of one image forward (object queries). Returns (gflops, padded (H, W))."""
    from torch.utils.flop_counter import FlopCounterMode

    d = model.size_divisibility
    h, w = -(-height // d) * d, -(-width // d) * d
    embed = model.backbone.variant.embed_dim
    images = torch.zeros(1, 3, h, w, device=device)
    text = torch.nn.functional.normalize(torch.ones(num_classes, 1, embed, device=device), dim=-1)
    counter = FlopCounterMode(display=False)
    with counter:
        model(images, text)
    return counter.get_total_flops() / 1e9, (h, w)


def model_info(
    variant: str,
    config: ModelConfig | None = None,
    flops: bool = True,
    height: int = 800,
    width: int = 1200,
    device: str = "meta",
) -> dict:
    if config is None:
        from omg.modeling.variants import get_variant

        config = ModelConfig.tiny(variant) if get_variant(variant).tiny else ModelConfig(variant=variant)
    model = build_model(config, device=device).eval()
    info = {"variant": variant, **parameter_counts(model)}
    if flops:
        gflops, (h, w) = count_flops(model, height, width, device=device)
        info["gflops"] = gflops
        info["gflops_input"] = [h, w]
    return info
