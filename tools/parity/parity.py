"""Parity of our model with the released OMG-Seg code: same weights, same inputs, every intermediate compared.

    python tools/parity/parity.py --omgseg /path/to/OMG-Seg --json-out parity.json

Not part of CI (it needs a checkout of lxtGH/OMG-Seg and mmengine / mmcv-lite / mmdet importable; see README.md
here). The official modules are built from that checkout with random weights, their state dict is converted with
``omg.modeling.official`` (the converter a user runs on the released weights), and both models see the same inputs
(a square image; a padded batch of two non-square ones), text embeddings and prompts. Compared, each value against
``atol + rtol |theirs|``: the four backbone features and the CLIP head, the pixel decoder's memories and mask
features, every prediction set's mask logits, class logits and objectness for object queries (the released
panoptic evaluation config) and for point and box prompts (its point-prompt config), and the open-vocabulary fused
class scores (``Mask2formerVideo.open_voc_inference``). Where a logit rounds to the other side of 0 at a threshold,
ours goes on with the official binary mask (:class:`Thresholds`), so nothing after it needs excusing.

The official code runs unmodified. What is adapted at run time, never by copying its code: mmcv-lite's version is
reported as 2.1.0 to mmdet's import check (mmdet 3.3.0 predates mmcv 2.2.0); mmcv's compiled-op loader returns
stubs that fail when called (on CPU mmcv uses its pure-PyTorch deformable attention; no compiled op runs); tensors
the head creates on ``cuda`` are created on the CPU; the official binary masks are recorded by wrapping the head's
``_forward_head`` and ``mask_pooling`` and the detector module's ``mask_pool`` (each calls the original).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import sys
import tempfile
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

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
    """The official head, detector class (and backbone, when its vendored open_clip imports) from a checkout,
    without running the package ``__init__`` files that import every detector, dataset and hook."""
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
    detector = load("seg.models.detectors.mask2former_vid", "seg/models/detectors/mask2former_vid.py")
    fusion = load("seg.models.fusion_head.omgseg_fusionhead", "seg/models/fusion_head/omgseg_fusionhead.py")
    try:
        backbone = load("seg.models.backbones.openclip_backbone", "seg/models/backbones/openclip_backbone.py")
    except Exception as err:  # noqa: BLE001 - the vendored open_clip may not import with this environment's timm
        log.warning(
            f"official backbone not importable ({type(err).__name__}: {err}); backbone compared by construction only"
        )
        backbone = None
    return head, backbone, detector, fusion


# ----------------------------------------------------------------------------- the official model, tiny or full

#: the released evaluation's test_cfg (seg/configs/m2ov_val/models/m2_convl_300q.py L134-146), head and fusion head
RELEASED_TEST_CFG = dict(
    panoptic_on=True,
    semantic_on=False,
    instance_on=True,
    max_per_image=100,
    iou_thr=0.8,
    filter_low_score=True,
    object_mask_thr=0.0,
)


def head_config(
    d: int,
    queries: int,
    enc: int,
    enc_ffn: int,
    dec: int,
    dec_ffn: int,
    heads: int,
    channels,
    classifier: str,
    box_query: bool,
) -> dict:
    """The released evaluation config (``seg/configs/m2ov_val/models/m2_convl_300q.py``) at the given sizes; with
    ``box_query`` its point-prompt evaluation (``eval_m2_convl_ov_coco_pan_point.py`` L11 sets
    ``enable_box_query=True``), else the panoptic one (the option's default, False)."""
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
        enable_box_query=box_query,
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
        test_cfg=dict(RELEASED_TEST_CFG),
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


@dataclass(frozen=True)
class Tolerance:
    """``|ours - theirs| <= atol + rtol * |theirs|`` per element (torch.isclose's rule)."""

    atol: float
    rtol: float

    def ratio(self, ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
        """Per element, the difference over what the tolerance allows there (float64): a value passes at <= 1."""
        a, b = ours.double(), theirs.double()
        return (a - b).abs() / (self.atol + self.rtol * b.abs())


@dataclass
class Compared:
    """One tensor of both sides: the largest absolute difference, and the largest difference over what the
    tolerance allows there (``worst``, at most 1 passes). Every element is held to the tolerance."""

    name: str
    shape: list[int]
    max_abs: float
    worst: float
    why: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.worst <= 1.0


def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor, tol: Tolerance) -> Compared:
    if ours.shape != theirs.shape:
        return Compared(name, list(ours.shape), math.inf, math.inf, f"shapes differ: {tuple(theirs.shape)}")
    absdiff = (ours.double() - theirs.double()).abs()
    if bool(absdiff.isnan().any()):
        return Compared(name, list(ours.shape), math.inf, math.inf, "NaN on one side")
    worst = float(tol.ratio(ours, theirs).max()) if ours.numel() else 0.0
    return Compared(name, list(ours.shape), float(absdiff.max()) if ours.numel() else 0.0, worst)


# ----------------------------------------------------------------------------- thresholds, held in step


class Thresholds:
    """The three places where a logit becomes a binary mask at 0, held in step on the two sides.

    The class branch pools the mask features under ``mask logit > 0``; the next decoder layer's cross-attention
    mask is ``sigmoid(bilinear(logit)) < 0.5`` (theirs) / ``bilinear(logit) < 0`` (ours); the open-vocabulary
    branch pools the CLIP features under ``bilinear(logit) > 0`` at stride 32. The two implementations agree to
    float32 rounding, so a logit within that distance of 0 can land on either side, and everything after it then
    differs by more than rounding. The official forward runs first and its binary masks are recorded; ours then
    computes its own (its code runs: the comparison counts where they differ) and goes on with the official ones.
    Nothing is excused: every value after a flip is held to the tolerance like every value before it, and a flip
    counts only where the two sides' logits there are themselves within the tolerance of each other (else it is a
    failure: a real difference in the logits, not rounding)."""

    def __init__(self, tol: Tolerance):
        self.tol = tol
        self.attn: list[torch.Tensor] = []  # official, per set: (N x Q x HW blocked, N x Q x h x w logits at size)
        self.pool: list[torch.Tensor] = []  # official, per set: N x Q x H x W binary (logit > 0)
        self.clip: list[torch.Tensor] = []  # official: N x Q x h32 x w32 logits (its binary is logit > 0)
        self.logits: list[torch.Tensor] = []  # official mask logits per set (to check a flip's margin)
        self.flips: dict[str, int] = {}
        self.bad: list[str] = []

    def reset(self) -> None:
        self.attn, self.pool, self.clip, self.logits = [], [], [], []

    # -- the official side, recorded
    @contextlib.contextmanager
    def record_official(self, head, detector_mod):
        forward_head, mask_pooling, clip_pool = head._forward_head, head.mask_pooling, detector_mod.mask_pool

        def on_forward_head(decoder_out, mask_feature, size, num_frames=0):
            cls_pred, mask_pred, attn_mask = forward_head(decoder_out, mask_feature, size, num_frames)
            n, q = mask_pred.shape[:2]
            # a view: the decoder loop unblocks fully blocked rows in place before using it, as ours does
            self.attn.append(attn_mask.view(n, head.num_heads, q, -1)[:, 0])
            self.logits.append(mask_pred.detach())
            return cls_pred, mask_pred, attn_mask

        def on_mask_pooling(x, mask):
            self.pool.append(mask.detach() > 0)
            return mask_pooling(x=x, mask=mask)

        def on_clip_pool(x, mask):
            self.clip.append(mask.detach())
            return clip_pool(x, mask)

        head._forward_head, head.mask_pooling, detector_mod.mask_pool = on_forward_head, on_mask_pooling, on_clip_pool
        try:
            yield
        finally:
            head._forward_head, head.mask_pooling, detector_mod.mask_pool = forward_head, mask_pooling, clip_pool

    # -- ours, held to the recorded masks
    def _flip(self, where: str, ours_on: torch.Tensor, theirs_on: torch.Tensor, ours_x, theirs_x) -> None:
        """Count where the binary masks differ; each such element must be a rounding flip: the two logits there
        within the tolerance of each other."""
        differ = ours_on != theirs_on
        self.flips[where] = int(differ.sum())
        if differ.any():
            ratio = self.tol.ratio(ours_x[differ], theirs_x[differ])
            if float(ratio.max()) > 1.0:
                self.bad.append(
                    f"{where}: a threshold differs where the logits differ by {float(ratio.max()):.1f} x "
                    "the tolerance (not rounding)"
                )

    @contextlib.contextmanager
    def hold_ours(self, model, name: str):
        import omg.inference.open_vocab as ov
        import omg.modeling.heads as heads

        decoder = model.decoder
        attn_mask, mask_pool, clip_pooled = decoder.attn_mask, heads.mask_pool, ov.clip_pooled
        calls = {"attn": 0, "pool": 0, "clip": 0}

        def held_attn_mask(masks, size):
            k = calls["attn"]
            calls["attn"] += 1
            ours = attn_mask(masks, size)
            theirs = self.attn[k]
            n, q = ours.shape[:2]

            def resize(m):
                m = F.interpolate(m.flatten(0, 1)[:, None], size=size, mode="bilinear", align_corners=False)
                return m.view(n, q, -1)

            self._flip(f"{name}/set{k}/attn", ours, theirs, resize(masks[:, :, 0]), resize(self.logits[k]))
            return theirs

        def held_mask_pool(features, mask_logits):
            k = calls["pool"]
            calls["pool"] += 1
            theirs = self.pool[k]
            self._flip(f"{name}/set{k}/pool", mask_logits[:, :, 0] > 0, theirs, mask_logits[:, :, 0], self.logits[k])
            return mask_pool(features, torch.where(theirs, 1.0, -1.0)[:, :, None])  # our pooling, their mask

        def held_clip_pooled(clip_features, mask_logits):
            calls["clip"] += 1
            theirs = self.clip[-1]
            ours = F.interpolate(mask_logits[:, :, 0], size=theirs.shape[-2:], mode="bilinear", align_corners=False)
            self._flip(f"{name}/open_vocab/clip_pool", ours > 0, theirs > 0, ours, theirs)
            return clip_pooled(clip_features, torch.where(theirs > 0, 1.0, -1.0)[:, :, None])  # at stride 32 already

        decoder.attn_mask, heads.mask_pool, ov.clip_pooled = held_attn_mask, held_mask_pool, held_clip_pooled
        try:
            yield calls
        finally:
            del decoder.attn_mask  # the instance attribute; the method again
            heads.mask_pool, ov.clip_pooled = mask_pool, clip_pooled


def compare_sets(kind: str, ours_sets, cls_o, masks_o, tol: Tolerance) -> tuple[list[Compared], str | None]:
    """Every prediction set of one forward: mask logits, class logits, objectness (their iou column).
    -> (the compared tensors, the count error or None)."""
    if not (len(ours_sets) == len(cls_o) == len(masks_o)):
        return [], (
            f"{kind}: {len(ours_sets)} prediction sets on our side, {len(cls_o)} class and {len(masks_o)} mask "
            "sets on theirs"
        )
    out = []
    for k, (pred, c, m) in enumerate(zip(ours_sets, cls_o, masks_o)):
        out.append(compare(f"{kind}/set{k}/mask_logits", pred.masks[:, :, 0], m, tol))
        out.append(compare(f"{kind}/set{k}/class_logits", pred.logits, c[..., :-1], tol))
        out.append(compare(f"{kind}/set{k}/objectness", pred.objectness, c[..., -1:], tol))
    return out, None


# ----------------------------------------------------------------------------- the run


@dataclass
class Sides:
    """Both models and what they share: ours converted from the official state dict, the official head under the
    released panoptic evaluation config and under its point-prompt one (the same weights), the official backbone
    (None for our tiny variants), the detector module, the text embeddings and the vocabulary they embed."""

    model: torch.nn.Module
    head_eval: torch.nn.Module
    head_point: torch.nn.Module
    backbone: torch.nn.Module | None
    detector_mod: types.ModuleType
    fusion: torch.nn.Module
    text: torch.Tensor
    vocab: object


def case_shapes(size: int) -> dict[str, list[tuple[int, int]]]:
    """One square image, and a batch of two non-square images of different sizes (the second padded to the first:
    portrait inside landscape), every side a multiple of 32."""
    r32 = lambda x: max(32, int(round(x / 32)) * 32)  # noqa: E731
    return {"square": [(size, size)], "batch": [(size, r32(size * 1.5)), (r32(size * 0.75), size)]}


def official_inputs(raw: list[torch.Tensor], mean: torch.Tensor, std: torch.Tensor, padded: tuple[int, int]):
    """The released preprocessor's batch: each image normalised, then padded with 0 (mmdet's DetDataPreprocessor)."""
    batch = torch.zeros(len(raw), 3, *padded)
    for i, x in enumerate(raw):
        batch[i, :, : x.shape[-2], : x.shape[-1]] = (x - mean[0]) / std[0]
    return batch


def official_open_vocab(detector_cls, backbone, head, feats, samples, overlapping):
    """The released open-vocabulary path: the head's ``predict`` (last set, masks upsampled to the padded input)
    and ``Mask2formerVideo.open_voc_inference`` (mask pooling of the frozen CLIP's last stage, the geometric
    ensemble), called on the official modules. -> (N x Q x (C + 1) fused log-probabilities, N x Q x H x W mask
    logits upsampled to the padded input)."""
    cls, masks, _ = head.predict(list(feats), samples)
    detector = types.SimpleNamespace(backbone=backbone, panoptic_head=head, OVERLAPPING=overlapping)
    detector.alpha, detector.beta = 0.4, 0.8  # Mask2formerVideo.__init__'s values (mask2former_vid.py L57-58)
    return detector_cls.open_voc_inference(detector, feats, cls, masks), masks


def blob_inputs(size: tuple[int, int], n: int, classes: int, queries: int = 40, seed: int = 0):
    """Post-processing inputs where segments survive: each query a disc of logits (+8 at its centre, 0 at its
    radius), class logits peaked on one class (background included); 40 queries, as the released instance
    post-processing takes a top-100 over queries x classes. -> (N x Q x classes, N x Q x H x W)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    centres = torch.rand(n, queries, 2, generator=g) * torch.tensor([h, w])
    radius = (0.04 + 0.1 * torch.rand(n, queries, generator=g)) * min(h, w)
    dist = ((ys - centres[..., 0, None, None]) ** 2 + (xs - centres[..., 1, None, None]) ** 2).sqrt()
    masks = 8.0 * (1 - dist / radius[..., None, None])
    logits = torch.randn(n, queries, classes, generator=g)
    logits.scatter_add_(-1, torch.randint(classes, (n, queries, 1), generator=g), torch.full((n, queries, 1), 4.0))
    return logits, masks


def rounding_ties(logits: torch.Tensor, mlog: torch.Tensor, where: torch.Tensor, tol: Tolerance) -> bool:
    """Whether every pixel in ``where`` is one the panoptic post-processing decides on a rounding tie: the two
    largest ``score x sigmoid(mask logit)`` of the kept queries within the tolerance of each other (the pixel's
    argmax), or a kept query's logit within the tolerance of 0 (its ``sigmoid >= 0.5`` filter)."""
    if not bool(where.any()):
        return True
    scores, labels = logits.float().softmax(-1).max(-1)
    keep = labels != logits.shape[-1] - 1
    x = mlog[keep][:, where].float()  # K x P
    prob = scores[keep, None] * x.sigmoid()
    near_zero = (x.abs() <= tol.atol).any(0)
    if prob.shape[0] < 2:
        return bool(near_zero.all())
    top = prob.topk(2, dim=0).values
    return bool(((top[0] - top[1] <= tol.atol + tol.rtol * top[0]) | near_zero).all())


def compare_postprocess(name: str, fusion, fused_o, masks_up, samples, fused, mlogs, tol) -> list[Compared]:
    """The released fusion head (``OMGFusionHead.predict``: crop, panoptic and instance post-processing, the
    released test_cfg) on the official fused scores and masks (N x Q x H x W, the padded input), against ours
    (``panoptic_inference`` with the released segment ids, ``instance_inference``) on ours (``mlogs``: each image's
    Q x h x w mask logits, cropped), image by image. Panoptic maps must be equal pixel for pixel (theirs ``class +
    k * 1000``, void = C; ours the same + 1, void = 0) except on rounding ties (:func:`rounding_ties`); instances
    are matched one to one by label and mask (pixels may differ only where our logit rounds at 0), their scores
    within the tolerance."""
    from omg.inference.postprocess import instance_inference, panoptic_inference

    isthing = torch.tensor([i < fusion.num_things_classes for i in range(fusion.num_classes)])
    results = fusion.predict(fused_o, masks_up, samples, rescale=True)
    out = []
    for i, (res, mlog) in enumerate(zip(results, mlogs)):
        pan, _ = panoptic_inference(fused[i], mlog, isthing, ids="released")
        theirs = res["pan_results"].sem_seg[0].long()
        theirs = torch.where(theirs == fusion.num_classes, 0, theirs + 1)
        where = pan != theirs
        differ, rounding = int(where.sum()), rounding_ties(fused[i], mlog, where, tol)
        note = f"{len(theirs.unique()) - int((theirs == 0).any())} segments, {int((theirs == 0).sum())} void pixels"
        out.append(
            Compared(
                f"{name}/postprocess/image{i}/panoptic_ids",
                list(pan.shape),
                float(differ),
                0.0 if rounding else math.inf,
                "" if rounding else f"{differ} pixel(s) with another segment, not all on a rounding tie",
                note + (f", {differ} pixel(s) on a rounding tie" if differ else ""),
            )
        )
        ours = instance_inference(fused[i], mlog, isthing)
        ins = res["ins_results"]
        # matched one to one by label and mask (the two top-k orders differ: theirs unsorted, ours by class score);
        # a mask may differ only in pixels where our logit is within the tolerance of 0 (a rounding flip of
        # ``logit > 0``, as in Thresholds)
        left = list(range(len(ins.labels)))
        matched, unmatched, flipped = [], 0, 0
        for label, mask, score, q in zip(ours.labels.tolist(), ours.masks, ours.scores.tolist(), ours.queries):
            near_zero = mlog[q].abs() <= tol.atol
            best = None
            for j in left:
                if int(ins.labels[j]) != label:
                    continue
                differ = mask != ins.masks[j]
                if not bool((differ & ~near_zero).any()) and (best is None or differ.sum() < best[1]):
                    best = (j, int(differ.sum()))
            if best is None:
                unmatched += 1
                continue
            left.remove(best[0])
            flipped += best[1]
            matched.append((score, float(ins.scores[best[0]])))
        unmatched += len(left)
        a, b = (torch.tensor([m[k] for m in matched], dtype=torch.float64) for k in (0, 1))
        record = compare(f"{name}/postprocess/image{i}/instance_scores", a, b, tol)
        record.note = f"{len(matched)} instances" + (
            f", {flipped} mask pixel(s) flipped by rounding" if flipped else ""
        )
        if unmatched:
            record.worst, record.why = math.inf, f"{unmatched} instance(s) without the same label and mask"
        out.append(record)
    return out


def run_case(name: str, shapes, sides: Sides, th: Thresholds, seen: list[bool]) -> tuple[list, list]:
    """Every compared tensor of one input (single image or padded batch) -> (compared, count errors)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from omg.inference.core import PredictorCore
    from omg.modeling.prompts import Prompts

    model, text, tol = sides.model, sides.text, th.tol
    padded = (max(h for h, _ in shapes), max(w for _, w in shapes))
    variant = model.backbone.variant
    mean = torch.tensor(variant.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(variant.pixel_std).view(1, 3, 1, 1)
    raw = [torch.rand(3, h, w) * 255 for h, w in shapes]
    ours_in = mean.repeat(len(raw), 1, *padded)  # our preprocessor pads with the mean (omg/inference/core.py)
    for i, x in enumerate(raw):
        ours_in[i, :, : x.shape[-2], : x.shape[-1]] = x
    theirs_in = official_inputs(raw, mean, std, padded)

    def metas():
        return [
            DetDataSample(metainfo=dict(img_shape=hw, batch_input_shape=padded, pad_shape=padded, ori_shape=hw))
            for hw in shapes
        ]

    compared, errors = [], []
    with torch.no_grad():
        # one pass of ours: the backbone's four levels as extract computes them, caught on their way
        levels: list = []
        hook = model.backbone.register_forward_hook(lambda _module, _inputs, output: levels.append(output))
        try:
            features = model.extract(ours_in)
        finally:
            hook.remove()
        feats = levels[0]
        if sides.backbone is not None:
            feats_o = sides.backbone(theirs_in)
            if len(feats) != len(feats_o):
                errors.append(f"{name}/backbone: {len(feats)} levels on our side, {len(feats_o)} on theirs")
            for i, (a, b) in enumerate(zip(feats, feats_o)):
                compared.append(compare(f"{name}/backbone/res{i + 2}", a, b, tol))
            pooled = torch.randn(len(shapes), 5, feats[-1].shape[1])
            compared.append(
                compare(
                    f"{name}/backbone/clip_head",
                    model.backbone.clip_image_head(pooled),
                    sides.backbone.forward_feat(pooled),
                    tol,
                )
            )
            clip_side = sides.backbone
        else:  # our tiny trunk: the official code's two backbone calls of the open-vocabulary path, on our modules
            clip_side = types.SimpleNamespace(
                get_clip_feature=lambda _: features.clip_features[:, :, 0],
                forward_feat=model.backbone.clip_image_head,
            )
        mask_feat_o, mem_o = sides.head_eval.pixel_decoder(feats)
        mask_feat, mems = features.mask_features[:, :, 0], [m[:, :, 0] for m in features.memories]  # one frame
        compared.append(compare(f"{name}/pixel_decoder/mask_features", mask_feat, mask_feat_o, tol))
        if len(mems) != len(mem_o):
            errors.append(f"{name}/pixel_decoder: {len(mems)} memories on our side, {len(mem_o)} on theirs")
        for i, (a, b) in enumerate(zip(mems, mem_o)):
            compared.append(compare(f"{name}/pixel_decoder/memory{i}", a, b, tol))

        # object queries under the released panoptic evaluation config, then the open-vocabulary path end to end:
        # the released fusion (the head's predict + open_voc_inference) vs our predictor's class logits
        samples = metas()
        for s in samples:
            s.data_tag = "coco"  # the released forward's object-query branch
        cls_o, masks_o, _ = sides.head_eval.forward(list(feats), samples)  # every prediction set
        th.reset()
        with th.record_official(sides.head_eval, sides.detector_mod):  # the thresholds of its one forward
            fused_o, masks_up = official_open_vocab(
                sides.detector_mod.Mask2formerVideo,
                clip_side,
                sides.head_eval,
                list(feats),
                metas(),
                [float(s) for s in seen],
            )
        core = PredictorCore(model, device="cpu")
        core.training_vocabulary = type(sides.vocab).of([n for n, s in zip(sides.vocab.names, seen) if s])
        if not torch.equal(core.text(sides.vocab), text):
            errors.append(f"{name}/open_vocab: our predictor's text embeddings differ from the ones both sides got")
        with th.hold_ours(model, f"{name}/objects") as calls:
            out = model.decode(features, text)
            fused = core.class_logits(out.class_embed, out.pred_masks, features.clip_features, sides.vocab, True)
        errors += held_counts(f"{name}/objects", calls, len(cls_o), th)
        got, error = compare_sets(f"{name}/objects", out.predictions, cls_o, masks_o, tol)
        compared += got + [compare(f"{name}/open_vocab/fused_log_probs", fused, fused_o, tol)]
        errors += [error] if error else []
        mlogs = [core.output_logits(out.pred_masks[i, :, 0], padded, hw, hw) for i, hw in enumerate(shapes)]
        compared += compare_postprocess(f"{name}/model", sides.fusion, fused_o, masks_up, metas(), fused, mlogs, tol)
        # random weights leave no panoptic segment (every query loses most of its mask: iou_thr 0.8): the same
        # post-processing on blob-shaped masks and peaked class scores, where segments survive
        cls_b, masks_b = blob_inputs(padded, len(shapes), len(sides.vocab.names) + 1)
        mlogs = [masks_b[i, :, :h, :w] for i, (h, w) in enumerate(shapes)]
        compared += compare_postprocess(f"{name}/blobs", sides.fusion, cls_b, masks_b, metas(), cls_b, mlogs, tol)

        # point and box prompts, under the released point-prompt evaluation config (a point is its +-3 px box)
        pts = [torch.tensor([[w * 0.3, h * 0.25]]) for h, w in shapes]
        boxes = [torch.tensor([[w * 0.1, h * 0.15, w * 0.7, h * 0.8]]) for h, w in shapes]
        sam = metas()
        for s, p, b in zip(sam, pts, boxes):
            s.gt_instances = InstanceData(
                point_coords=torch.cat([torch.cat([p - 3, p + 3], 1), b]), bp=torch.zeros(2, dtype=torch.long)
            )
            s.data_tag = "sam"
        th.reset()
        with th.record_official(sides.head_point, sides.detector_mod), cuda_on_cpu():
            cls_p, masks_p, _ = sides.head_point.forward(list(feats), sam)
        with th.hold_ours(model, f"{name}/prompts") as calls:
            out_p = model.decode(features, text, Prompts.from_lists(pts, boxes, list(shapes)))
        errors += held_counts(f"{name}/prompts", calls, len(cls_p), th, clip=False)
        got, error = compare_sets(f"{name}/prompts", out_p.predictions, cls_p, masks_p, tol)
        compared += got
        errors += [error] if error else []
    return compared, errors


def held_counts(name: str, calls: dict, sets: int, th: Thresholds, clip: bool = True) -> list[str]:
    """Both sides went through the same thresholds the same number of times (a set or a layer more or less on one
    side is an error, not something to compare around)."""
    want = {"attn": sets - 1, "pool": sets, "clip": 1 if clip else 0}
    have = {"attn": len(th.attn) - 1, "pool": len(th.pool), "clip": len(th.clip)}
    return [
        f"{name}: {k} thresholds: ours {calls[k]}, the official {have[k]}, expected {want[k]}"
        for k in want
        if not calls[k] == have[k] == want[k]
    ]


def build_sides(args, head_mod, backbone_mod, detector_mod, fusion_mod, home: str) -> tuple[Sides, int, int]:
    """Ours (random weights) -> its text embeddings; the official head with its own initialisation under both
    evaluation configs; the official state dict converted into our model. -> (sides, tensors mapped, in the file)."""
    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.official import convert_official
    from omg.modeling.text import TextEmbedder
    from omg.utils.vocabulary import Vocabulary

    # the released head's sizes (its prompt encoding hard-codes 128 sine features per coordinate, i.e. 256-d)
    sizes = dict(
        hidden_dim=256, num_queries=300, enc_layers=6, enc_ffn_dim=1024, dec_layers=9, dec_ffn_dim=2048, nheads=8
    )
    ours_random = build_model(ModelConfig(variant=args.variant, **sizes)).eval()
    vocab = Vocabulary.of(["circle", "square, box", "sky"])
    text = TextEmbedder(ours_random.backbone, use_disk_cache=False).embed(vocab)
    os.environ["HOME"] = home  # the head reads the class embeddings from ~/.cache/embd/<name>.pth
    os.makedirs(os.path.join(home, ".cache", "embd"))
    torch.save(text.cpu(), os.path.join(home, ".cache", "embd", "parity.pth"))
    dims = [sizes[k] for k in ("hidden_dim", "num_queries", "enc_layers", "enc_ffn_dim", "dec_layers")]
    dims += [sizes["dec_ffn_dim"], sizes["nheads"], ours_random.backbone.channels, "parity"]
    with cuda_on_cpu():
        head_point = head_mod.Mask2FormerVideoHead(**head_config(*dims, box_query=True))
        head_point.init_weights()
        head_eval = head_mod.Mask2FormerVideoHead(**head_config(*dims, box_query=False))
    # the released checkpoint holds the prompt weights (trained with enable_box_query=True); the panoptic config
    # builds the head without them and loads the rest
    missing, unexpected = head_eval.load_state_dict(head_point.state_dict(), strict=False)
    if missing or not all(k.split(".")[0] in ("mask_tokens", "pb_embedding", "pos_linear") for k in unexpected):
        raise RuntimeError(f"the two evaluation configs' heads differ: missing {missing}, unexpected {unexpected}")
    head_point.eval(), head_eval.eval()
    official = {f"panoptic_head.{k}": v for k, v in head_point.state_dict().items()}
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
    # the released fusion head under the released test_cfg; "circle" and "square, box" things, "sky" stuff
    fusion = fusion_mod.OMGFusionHead(num_things_classes=2, num_stuff_classes=1, test_cfg=dict(RELEASED_TEST_CFG))
    sides = Sides(model.eval(), head_eval, head_point, official_backbone, detector_mod, fusion, text, vocab)
    return sides, report.mapped, len(official)


def official_versions() -> dict[str, str]:
    from importlib.metadata import version

    import mmdet
    import mmengine

    return {"mmengine": mmengine.__version__, "mmdet": mmdet.__version__, "mmcv-lite": version("mmcv-lite")}


def checkout_commit(omgseg: Path) -> str:
    """The checkout's commit (``git rev-parse``), or what a ``COMMIT`` file in it says (an exported tree)."""
    import subprocess

    out = subprocess.run(["git", "-C", str(omgseg), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if out.returncode == 0:
        return out.stdout.strip()
    marker = omgseg / "COMMIT"
    return marker.read_text().strip() if marker.exists() else "unknown"


def machine() -> str:
    """'<CPU model>, <n> CPUs' from lscpu (every figure names its CPU)."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


def inject_error(model, layer: int, seed: int) -> None:
    """A deliberate discrepancy: 1e-3 x N(0, 1) noise added to the output of our decoder layer ``layer`` (a fixed
    draw, not a constant: the post-norms would remove a constant shift). The harness must fail with it."""
    g = torch.Generator().manual_seed(seed)
    cache: dict[tuple, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        if output.shape not in cache:
            cache[output.shape] = 1e-3 * torch.randn(output.shape, generator=g)
        return output + cache[output.shape]

    model.decoder.layers[layer].register_forward_hook(hook)


def main(argv=None) -> int:
    setup_logging("parity")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--omgseg", required=True, help="a checkout of lxtGH/OMG-Seg")
    p.add_argument("--variant", default="tiny_convnext", help="our backbone variant (convnext_large_d_320 = released)")
    p.add_argument(
        "--size",
        type=int,
        default=128,
        help="the square image's side (a multiple of 32); the batch's "
        "two images are size x 1.5 size and 0.75 size x size",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=2e-5, help="absolute tolerance (default %(default)s)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default %(default)s)")
    p.add_argument(
        "--inject-error",
        type=int,
        metavar="LAYER",
        help="add a 1e-3 error to our decoder layer LAYER (0-8): the run must fail (a check of the harness itself)",
    )
    p.add_argument("--json-out", help="the figures as JSON (tools/parity/report.py writes docs/parity.md from them)")
    args = p.parse_args(argv)
    if args.size % 32:
        p.error(f"--size must be a multiple of 32, got {args.size}")

    shim_mmcv()
    head_mod, backbone_mod, detector_mod, fusion_mod = import_official(Path(args.omgseg))
    torch.manual_seed(args.seed)
    tol = Tolerance(args.atol, args.rtol)
    with tempfile.TemporaryDirectory() as home:
        sides, mapped, total = build_sides(args, head_mod, backbone_mod, detector_mod, fusion_mod, home)
    log.info(f"[parity] converted {mapped} tensors ({total} in the official state dict)")
    if args.inject_error is not None:
        inject_error(sides.model, args.inject_error, args.seed)
    seen = [True, False, True]  # "square, box" unseen: the beta branch of the ensemble runs too
    compared, errors, shapes, th = [], [], case_shapes(args.size), Thresholds(tol)
    for name, case in shapes.items():
        got, errs = run_case(name, case, sides, th, seen)
        compared += got
        errors += errs

    width = max(len(c.name) for c in compared)
    for c in compared:
        print(
            f"{c.name:{width}s} max {c.max_abs:.3e} {c.worst:7.3f} x tol{'' if c.ok else '  FAIL ' + c.why}"
            + (f"  ({c.note})" if c.note else "")
        )
    flipped = {k: v for k, v in th.flips.items() if v}
    for k, v in flipped.items():
        print(f"threshold flip {k}: {v} element(s) held to the official side")
    errors += th.bad
    for e in errors:
        print(f"error: {e}")
    failed = [c for c in compared if not c.ok]
    worst = max(compared, key=lambda c: c.worst)
    print(
        f"{len(compared)} tensors, {len(failed)} beyond |ours - theirs| <= {tol.atol:g} + {tol.rtol:g} |theirs| "
        f"(worst {worst.worst:.3f} x the tolerance, {worst.name}); {sum(flipped.values())} thresholded element(s) on "
        f"the other side of 0 in {len(flipped)} place(s), held in step; {len(errors)} error(s); backbone "
        f"{args.variant}, {args.size} px, torch {torch.__version__}"
        + (f"; a 1e-3 error injected into decoder layer {args.inject_error}" if args.inject_error is not None else "")
    )
    if args.json_out:
        doc = {
            "settings": {
                "variant": args.variant,
                "size": args.size,
                "seed": args.seed,
                "atol": tol.atol,
                "rtol": tol.rtol,
                "inject_error": args.inject_error,
                "shapes": shapes,
                "torch": torch.__version__,
                "tensors_mapped": mapped,
                "tensors_official": total,
                "official_backbone": sides.backbone is not None,
                "libraries": official_versions(),
                "omgseg_commit": checkout_commit(Path(args.omgseg)),
                "machine": machine(),
            },
            "tensors": [asdict(c) for c in compared],
            "flips": th.flips,
            "count_errors": errors,
            "ok": not failed and not errors,
        }
        Path(args.json_out).write_text(json.dumps(doc, indent=1, default=lambda x: list(x)))
    return 0 if not failed and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
