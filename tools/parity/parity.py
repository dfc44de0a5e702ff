"""Parity of our model with the released OMG-Seg code: same weights, same input, every intermediate compared.

    python tools/parity/parity.py --omgseg /path/to/OMG-Seg --json-out parity.json

Not part of CI (it needs a checkout of lxtGH/OMG-Seg and mmengine / mmcv-lite / mmdet importable; see README.md
here). The official modules are built from that checkout with random weights, their state dict is converted with
``omg.modeling.official`` (the converter a user runs on the released weights), and both models see the same image
and prompts. Compared: the four backbone features, the pixel decoder's memories and mask features, and every
prediction set's mask logits, class logits and objectness, for object queries and for point and box prompts.

The official code runs unmodified. Three things are adapted at run time, never by copying its code: mmcv-lite's
version is reported as 2.1.0 to mmdet's import check (mmdet 3.3.0 predates mmcv 2.2.0); mmcv's compiled-op
loader returns stubs that fail when called (on CPU mmcv uses its pure-PyTorch deformable attention; no compiled op
runs); tensors the head creates on ``cuda`` are created on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import torch

from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging

log = get_logger("omg.tools.parity")


# ----------------------------------------------------------------------------- run-time adaptations


def shim_mmcv() -> None:
    import mmcv
    import mmcv.utils.ext_loader as ext_loader

    mmcv.__version__ = "2.1.0"  # mmdet 3.3.0 asserts mmcv < 2.2.0; mmcv-lite 2.2.0 has the same Python API

    class _NoCompiledOps:
        def __getattr__(self, name):
            def missing(*args, **kwargs):
                raise RuntimeError(f"compiled mmcv op {name} called: not available in mmcv-lite")

            return missing

    ext_loader.load_ext = lambda name, funcs: _NoCompiledOps()


@contextlib.contextmanager
def cuda_on_cpu():
    """Tensors the official code creates with device='cuda' (or moves .to('cuda')) are created on the CPU."""
    factories = {n: getattr(torch, n) for n in ("zeros", "empty", "ones", "tensor")}
    to = torch.Tensor.to

    def cpu(kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return kwargs

    def patched_to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return to(self, *args, **cpu(kwargs))

    try:
        for n, f in factories.items():
            setattr(torch, n, (lambda f: lambda *a, **k: f(*a, **cpu(k)))(f))
        torch.Tensor.to = patched_to
        yield
    finally:
        for n, f in factories.items():
            setattr(torch, n, f)
        torch.Tensor.to = to


def import_official(omgseg: Path):
    """The official head (and backbone, when its vendored open_clip imports) from a checkout, without running the
    package ``__init__`` files that import every detector, dataset and hook."""
    for name, sub in (("seg", "seg"), ("seg.models", "seg/models")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(omgseg / sub)]
        sys.modules[name] = pkg
    sys.path.insert(0, str(omgseg))

    def load(name: str, rel: str):
        spec = importlib.util.spec_from_file_location(name, omgseg / rel)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    head = load("seg.models.heads.mask2former_vid", "seg/models/heads/mask2former_vid.py")
    try:
        backbone = load("seg.models.backbones.openclip_backbone", "seg/models/backbones/openclip_backbone.py")
    except Exception as err:  # noqa: BLE001 - the vendored open_clip may not import with this environment's timm
        log.warning(
            f"official backbone not importable ({type(err).__name__}: {err}); backbone compared by construction only"
        )
        backbone = None
    return head, backbone


# ----------------------------------------------------------------------------- the official model, tiny or full


def head_config(
    d: int, queries: int, enc: int, enc_ffn: int, dec: int, dec_ffn: int, heads: int, channels, classifier: str
) -> dict:
    """The released eval config (``seg/configs/m2ov_val/models/m2_convl_300q.py``) at the given sizes, with the
    box/point queries of the released training config (``enable_box_query=True``)."""
    from mmdet.models import CrossEntropyLoss, DiceLoss, FocalLoss, MSDeformAttnPixelDecoder
    from mmengine.config import ConfigDict
    from torch.nn import GroupNorm, ReLU

    return ConfigDict(
        sphere_cls=True,
        ov_classifier_name=classifier,
        logit=None,
        in_channels=list(channels),
        strides=[4, 8, 16, 32],
        feat_channels=d,
        out_channels=d,
        num_things_classes=0,
        num_stuff_classes=0,
        num_queries=queries,
        num_transformer_feat_level=3,
        enable_box_query=True,
        pixel_decoder=dict(
            type=MSDeformAttnPixelDecoder,
            num_outs=3,
            norm_cfg=dict(type=GroupNorm, num_groups=32),
            act_cfg=dict(type=ReLU),
            encoder=dict(
                num_layers=enc,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=d, num_heads=heads, num_levels=3, num_points=4, dropout=0.0, batch_first=True
                    ),
                    ffn_cfg=dict(
                        embed_dims=d,
                        feedforward_channels=enc_ffn,
                        num_fcs=2,
                        ffn_drop=0.0,
                        act_cfg=dict(type=ReLU, inplace=True),
                    ),
                ),
            ),
            positional_encoding=dict(num_feats=d // 2, normalize=True),
        ),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=d // 2, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=dec,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=d, num_heads=heads, dropout=0.0, batch_first=True),
                cross_attn_cfg=dict(embed_dims=d, num_heads=heads, dropout=0.0, batch_first=True),
                ffn_cfg=dict(
                    embed_dims=d,
                    feedforward_channels=dec_ffn,
                    num_fcs=2,
                    ffn_drop=0.0,
                    act_cfg=dict(type="ReLU", inplace=True),
                ),
            ),
            init_cfg=None,
        ),
        loss_cls=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=2.0, reduction="mean", class_weight=None),
        loss_mask=dict(type=CrossEntropyLoss, use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(
            type=DiceLoss, use_sigmoid=True, activate=True, reduction="mean", naive_dice=True, eps=1.0, loss_weight=5.0
        ),
        loss_iou=dict(type=FocalLoss, use_sigmoid=True, loss_weight=2.0, reduction="mean"),
        train_cfg=None,
        test_cfg=dict(panoptic_on=True, semantic_on=False, instance_on=True),
    )


def backbone_state(model) -> dict[str, torch.Tensor]:
    """Our model's visual trunk under the official backbone's names (openclip_backbone.py L119-176)."""
    out = {}
    for k, v in model.backbone.clip.visual.state_dict().items():
        for ours, theirs in (
            ("trunk.stem.", "stem."),
            ("trunk.norm_pre.", "norm_pre."),
            ("trunk.head.", "head.0."),
            ("head.", "head.1."),
        ):
            if k.startswith(ours):
                out["backbone." + theirs + k[len(ours) :]] = v.clone()
                break
        else:
            if k.startswith("trunk.stages."):
                i, rest = k[len("trunk.stages.") :].split(".", 1)
                out[f"backbone.layer{int(i) + 1}.{rest}"] = v.clone()
    return out


# ----------------------------------------------------------------------------- comparison


def threshold_flips(name: str, k: int, ours: torch.Tensor, theirs: torch.Tensor, mems) -> dict[str, int]:
    """Where the two sides' mask logits fall on different sides of 0 in prediction set ``k``: at the mask
    resolution (the class branch pools the mask features under ``logit > 0``) and at the next layer's
    cross-attention resolution (its attention mask is ``sigmoid(bilinear(logit)) < 0.5``). Logits within float32
    rounding of 0 can land on either side; what follows then differs by more than rounding."""
    import torch.nn.functional as F

    size = mems[k % len(mems)].shape[-2:]
    a = F.interpolate(ours, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(theirs, size=size, mode="bilinear", align_corners=False)
    return {f"{name}/pool": int(((ours > 0) != (theirs > 0)).sum()), f"{name}/attn": int(((a > 0) != (b > 0)).sum())}


def after_a_flip(key: str, value: float, flips: dict[str, int]) -> str | None:
    """Why a difference above 1e-4 is not a discrepancy: a threshold flipped before it (see threshold_flips)."""
    if value <= 1e-4:
        return None
    kind, set_name, what = key.split("/")
    k = int(set_name[3:])
    if what == "class_logits" and flips.get(f"{kind}/set{k}/pool"):
        return f"pooling threshold: {flips[f'{kind}/set{k}/pool']} mask logit(s) on the other side of 0 in this set"
    earlier = [j for j in range(k) if flips.get(f"{kind}/set{j}/attn")]
    if earlier:
        return (
            f"attention-mask threshold flipped in set {earlier[0]} ({flips[f'{kind}/set{earlier[0]}/attn']} pixel(s))"
        )
    return None


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max())


def main(argv=None) -> int:
    setup_logging("parity")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--omgseg", required=True, help="a checkout of lxtGH/OMG-Seg")
    p.add_argument("--variant", default="tiny_convnext", help="our backbone variant (convnext_large_d_320 = released)")
    p.add_argument("--size", type=int, default=128, help="image side (a multiple of 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out")
    args = p.parse_args(argv)

    shim_mmcv()
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.official import convert_official
    from omg.modeling.prompts import Prompts
    from omg.modeling.text import TextEmbedder
    from omg.utils.vocabulary import Vocabulary

    head_mod, backbone_mod = import_official(Path(args.omgseg))
    torch.manual_seed(args.seed)
    # the released head's sizes (its prompt encoding hard-codes 128 sine features per coordinate, i.e. 256-d)
    sizes = dict(
        hidden_dim=256, num_queries=300, enc_layers=6, enc_ffn_dim=1024, dec_layers=9, dec_ffn_dim=2048, nheads=8
    )
    ours_random = build_model(ModelConfig(variant=args.variant, **sizes)).eval()
    channels = ours_random.backbone.channels
    text = TextEmbedder(ours_random.backbone, use_disk_cache=False).embed(
        Vocabulary.of(["circle", "square, box", "sky"])
    )
    figures: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as home:
        os.environ["HOME"] = home  # the head reads the class embeddings from ~/.cache/embd/<name>.pth
        os.makedirs(os.path.join(home, ".cache", "embd"))
        torch.save(text.cpu(), os.path.join(home, ".cache", "embd", "parity.pth"))
        with cuda_on_cpu():
            head = head_mod.Mask2FormerVideoHead(
                **head_config(
                    sizes["hidden_dim"],
                    sizes["num_queries"],
                    sizes["enc_layers"],
                    sizes["enc_ffn_dim"],
                    sizes["dec_layers"],
                    sizes["dec_ffn_dim"],
                    sizes["nheads"],
                    channels,
                    "parity",
                )
            )
            head.init_weights()
        head.eval()
        official = {f"panoptic_head.{k}": v for k, v in head.state_dict().items()}
        official.update(backbone_state(ours_random))
        clip_file = os.path.join(home, "clip.pt")
        torch.save(ours_random.backbone.clip.state_dict(), clip_file)
        model, report = convert_official(official, args.variant, clip_file, sizes["nheads"])
        official_backbone = None
        if backbone_mod is not None and args.variant == "convnext_large_d_320":  # the released backbone
            bb_file = os.path.join(home, "backbone.pth")
            torch.save({"state_dict": {k: v for k, v in official.items() if k.startswith("backbone.")}}, bb_file)
            official_backbone = backbone_mod.OpenCLIPBackbone(
                model_name="convnext_large_d_320",
                fix=True,
                init_cfg=dict(type="Pretrained", checkpoint=bb_file, prefix="backbone."),
            ).eval()
    log.info(f"[parity] converted {report.mapped} tensors ({len(official)} in the official state dict)")

    image = torch.rand(1, 3, args.size, args.size) * 255
    with torch.no_grad():
        feats = model.backbone(image)
        if official_backbone is not None:
            mean = torch.tensor(model.backbone.variant.pixel_mean).view(1, 3, 1, 1)
            std = torch.tensor(model.backbone.variant.pixel_std).view(1, 3, 1, 1)
            feats_o = official_backbone((image - mean) / std)  # the released preprocessor normalises first
            for i, (a, b) in enumerate(zip(feats, feats_o)):
                figures[f"backbone/res{i + 2}"] = diff(a, b)
            pooled = torch.randn(1, 5, feats[-1].shape[1])
            figures["backbone/clip_head"] = diff(
                model.backbone.clip_image_head(pooled), official_backbone.forward_feat(pooled)
            )
        else:
            log.info("[parity] backbone: compared only with --variant convnext_large_d_320 (the released one)")
        mask_feat_o, mem_o = head.pixel_decoder(feats)
        mask_feat, mems = model.pixel_decoder(feats)
        figures["pixel_decoder/mask_features"] = diff(mask_feat, mask_feat_o)
        for i, (a, b) in enumerate(zip(mems, mem_o)):
            figures[f"pixel_decoder/memory{i}"] = diff(a, b)

        sample = DetDataSample(
            metainfo=dict(
                img_shape=(args.size, args.size),
                batch_input_shape=(args.size, args.size),
                pad_shape=(args.size, args.size),
            )
        )
        sample.data_tag = "coco"  # object queries (the released forward's non-prompt branch)
        cls_o, masks_o, _ = head.forward(list(feats), [sample])
        out = model(image, text.to(image))
        flips: dict[str, int] = {}
        for k, (pred, c, m) in enumerate(zip(out.predictions, cls_o, masks_o)):
            figures[f"objects/set{k}/mask_logits"] = diff(pred.masks[:, :, 0], m)
            figures[f"objects/set{k}/class_logits"] = diff(pred.logits, c[..., :-1])
            figures[f"objects/set{k}/objectness"] = diff(pred.objectness, c[..., -1:])
            flips.update(threshold_flips(f"objects/set{k}", k, pred.masks[:, :, 0], m, mems))

        # prompts: a point (the released pseudo-box, point -+ 3 px) and a box, as the released preprocessor gives them
        pts = torch.tensor([[40.0, 30.0]])
        box = torch.tensor([[10.0, 20.0, 90.0, 100.0]])
        coords = torch.cat([torch.cat([pts - 3, pts + 3], 1), box])
        sam = DetDataSample(
            metainfo=dict(
                img_shape=(args.size, args.size),
                batch_input_shape=(args.size, args.size),
                pad_shape=(args.size, args.size),
            )
        )
        sam.gt_instances = InstanceData(point_coords=coords, bp=torch.zeros(2, dtype=torch.long))
        sam.data_tag = "sam"
        with cuda_on_cpu():
            cls_p, masks_p, _ = head.forward(list(feats), [sam])
        prompts = Prompts.from_lists([pts], [box], [(args.size, args.size)])
        out_p = model(image, text.to(image), prompts)
        for k, (pred, c, m) in enumerate(zip(out_p.predictions, cls_p, masks_p)):
            figures[f"prompts/set{k}/mask_logits"] = diff(pred.masks[:, :, 0], m)
            figures[f"prompts/set{k}/class_logits"] = diff(pred.logits, c[..., :-1])
            figures[f"prompts/set{k}/objectness"] = diff(pred.objectness, c[..., -1:])
            flips.update(threshold_flips(f"prompts/set{k}", k, pred.masks[:, :, 0], m, mems))

    explained = {k: why for k in figures if (why := after_a_flip(k, figures[k], flips))}
    worst = max(v for k, v in figures.items() if k not in explained)
    width = max(len(k) for k in figures)
    for k, v in figures.items():
        print(f"{k:{width}s} {v:.3e}{'  (' + explained[k] + ')' if k in explained else ''}")
    print(
        f"max abs difference {worst:.3e} over the {len(figures) - len(explained)} tensors before any threshold flip "
        f"({'within' if worst <= 1e-4 else 'ABOVE'} 1e-4); {len(explained)} above 1e-4 after a mask logit crossed 0 "
        f"differently (float32 rounding); backbone {args.variant}, the released head's sizes, {args.size}x{args.size}, "
        f"torch {torch.__version__}"
    )
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "figures": figures,
                    "max": worst,
                    "explained": sorted(explained),
                    "threshold_flips": flips,
                    "variant": args.variant,
                    "size": args.size,
                    "seed": args.seed,
                    "torch": torch.__version__,
                },
                indent=1,
            )
        )
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
