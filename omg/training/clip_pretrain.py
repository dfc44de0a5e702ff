"""Contrastive pretraining of a tiny CLIP on the omg-shapes captions (``omg/data/captions.py``).

The model is the open_clip model of a backbone variant (``open_clip.create_model(variant.clip_model)``, both towers
trained) with open_clip's own loss (``open_clip.loss.ClipLoss``: the symmetric InfoNCE of image and text embeddings
with CLIP's learned temperature, clamped at 100 as open_clip's trainer does). The result is the open_clip model's state
dict: ``ModelConfig(pretrained=PATH)`` (``CLIPBackbone.load_pretrained``) loads it like any open_clip weights.

Images are read at the CLIP's input size (the tiny towers': 128) and normalised with the variant's pixel statistics,
as the segmentation model normalises them; the text is open_clip's tokenizer of the variant.

**Region loss** (``region_weight`` > 0; not the paper's recipe, whose CLIP is a web-scale image-level one): the
captions are grounded (``captions/panoptic_<split>.json``: where each named thing and stuff is), and each step adds
``region_weight`` times a region loss on ``region_images`` of its images, upsampled to ``region_size`` as the
segmenter's test size upsamples them: every segment is mask-pooled over the stride-32 features exactly as the
open-vocabulary branch pools a query's mask (``clip_pooled``), mapped through the CLIP image head, and classified
among the corpus's classes by cross-entropy at CLIP's temperature, each class's text a ViLD prompt template (the
inference's, ``omg.modeling.text.VILD_TEMPLATES``) around one of its synonyms, drawn per step. An image-level
InfoNCE alone leaves a tiny CLIP's pooled features naming the stuff around a small shape, not the shape
(docs/experiments.md, "Grounded captions: a region loss at the test grid").
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from omg.modeling.variants import get_variant, register_tiny_configs
from omg.utils import io as uio


@dataclass(frozen=True)
class ClipPretrainConfig:
    variant: str = "tiny_convnext"
    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    seed: int = 0
    #: the region loss (module docstring): its weight (0: the image-level CLIP recipe), images per step, their size
    region_weight: float = 0.0
    region_images: int = 8
    region_size: int = 256

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (a contrastive batch needs negatives)")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0 and warmup_steps >= 0")
        if self.region_weight < 0 or not 1 <= self.region_images <= self.batch_size or self.region_size % 32:
            raise ValueError(
                f"region_weight must be >= 0 (got {self.region_weight}), region_images in [1, batch_size] (got "
                f"{self.region_images}) and region_size a multiple of 32 (got {self.region_size})"
            )


class CaptionPairs:
    """The (image, caption) rows of ``<root>/captions/<split>.csv``, read and normalised for a variant."""

    def __init__(self, root: str, split: str, variant: str):
        self.base = uio.join(root, "captions")
        csv = uio.join(self.base, f"{split}.csv")
        if not uio.exists(csv):
            raise FileNotFoundError(f"{csv}: no captions (generate them: omg data captions --root {root})")
        lines = uio.read_bytes(csv).decode("utf-8").splitlines()
        if not lines or lines[0].split("\t") != ["filepath", "title"]:
            raise ValueError(f"{csv}: expected a 'filepath<TAB>title' header")
        self.paths, self.titles = [], []
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            if len(parts) != 2 or not parts[1].strip():
                raise ValueError(f"{csv}: line {n}: expected 'filepath<TAB>title'")
            self.paths.append(parts[0])
            self.titles.append(parts[1])
        v = get_variant(variant)
        self.mean = torch.tensor(v.pixel_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(v.pixel_std).view(1, 3, 1, 1)
        self.size = image_size(variant)

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, indices, size: int) -> torch.Tensor:
        """N x 3 x size x size RGB in 0..255."""
        arrays = [uio.decode_rgb(uio.read_bytes(uio.join(self.base, self.paths[i])), self.paths[i]) for i in indices]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x

    def images(self, indices) -> torch.Tensor:
        """N x 3 x S x S normalised images (S: the CLIP's input size)."""
        return self.normalise(self.pixels(indices, self.size))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..255 pixels -> the variant's normalised input."""
        return (pixels - self.mean) / self.std


class CaptionRegions:
    """Where each named thing and stuff of ``<root>/captions/<split>.csv``'s images is: the companion's COCO panoptic
    annotations (``panoptic_<split>.json`` and its PNGs), in the CSV's order."""

    def __init__(self, root: str, split: str, pairs: CaptionPairs):
        self.base = uio.join(root, "captions")
        uri = uio.join(self.base, f"panoptic_{split}.json")
        if not uio.exists(uri):
            raise FileNotFoundError(
                f"{uri}: captions without regions (captions version < 4); the region loss needs them: "
                f"regenerate the captions (omg data captions --root {root}) or set region_weight 0"
            )
        doc = uio.read_json(uri)
        by_file = {im["file_name"]: im["id"] for im in doc["images"]}
        anns = {a["image_id"]: a for a in doc["annotations"]}
        missing = [p for p in pairs.paths if by_file.get(p) not in anns]
        if missing:
            raise ValueError(
                f"{uri}: no annotation of {len(missing)} captioned images, e.g. {missing[0]!r}: the regions are of "
                f"other captions; regenerate them (delete {self.base} and run omg data captions --root {root})"
            )
        self.split = split
        self.annotations = [anns[by_file[p]] for p in pairs.paths]
        #: the classes in id order: (id, name, synonyms)
        self.classes = [(c["id"], c["name"], tuple(c.get("synonyms") or [c["name"]])) for c in doc["categories"]]
        self.index = {cid: k for k, (cid, _, _) in enumerate(self.classes)}

    def segments(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(class indices Q, masks Q x H x W float) of image ``i``'s non-crowd segments."""
        from omg.data.masks import rgb2id

        ann = self.annotations[i]
        rel = f"panoptic_{self.split}/{ann['file_name']}"
        ids = rgb2id(uio.decode_rgb(uio.read_bytes(uio.join(self.base, rel)), rel))
        segs = [s for s in ann["segments_info"] if not s.get("iscrowd")]
        labels = torch.tensor([self.index[s["category_id"]] for s in segs], dtype=torch.long)
        masks = torch.from_numpy(np.stack([ids == s["id"] for s in segs]) if segs else np.zeros((0, *ids.shape)))
        return labels, masks.float()


def region_loss(
    backbone, regions: CaptionRegions, indices, pixels: torch.Tensor, size: int, text: torch.Tensor, scale
) -> tuple[torch.Tensor, float]:
    """Images ``indices`` (their pixels N x 3 x H x W, 0..255) -> (cross-entropy of their segments, mask-pooled at
    ``size`` as the open-vocabulary branch pools a mask, against the class texts C x E; the fraction named right)."""
    from omg.modeling.backbone import clip_pooled, mask_logits_at_stride4

    x = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    feats = backbone(x)[-1]  # N x C5 x size/32 x size/32
    drawn = [regions.segments(i) for i in indices]
    q = max(1, max(len(labels) for labels, _ in drawn))
    logits = torch.full((len(indices), q, 1, size // 4, size // 4), -10.0, device=feats.device)
    labels = torch.full((len(indices), q), -1, dtype=torch.long, device=feats.device)
    for n, (lab, masks) in enumerate(drawn):
        if len(lab):
            logits[n, : len(lab), 0] = mask_logits_at_stride4(masks, (size, size), (size, size))
            labels[n, : len(lab)] = lab
    pooled, nonempty = clip_pooled(feats[:, :, None], logits)
    keep = nonempty & (labels >= 0)
    if not keep.any():  # every segment smaller than a cell: nothing to name (a zero loss that keeps the graph)
        return feats.sum() * 0.0, 0.0
    emb = F.normalize(backbone.clip_image_head(pooled[keep]), dim=-1)
    scores = scale * emb @ text.T
    target = labels[keep]
    return F.cross_entropy(scores, target), float((scores.argmax(-1) == target).float().mean())


def region_texts(regions: CaptionRegions, rng: np.random.Generator) -> list[str]:
    """One prompt per class: a ViLD template (the inference's) around one of its synonyms, drawn from ``rng``."""
    from omg.modeling.text import VILD_TEMPLATES

    out = []
    for _, _, synonyms in regions.classes:
        template = VILD_TEMPLATES[int(rng.integers(len(VILD_TEMPLATES)))]
        out.append(template.format(synonyms[int(rng.integers(len(synonyms)))]))
    return out


def image_size(variant: str) -> int:
    from omg.modeling.variants import TINY_OPEN_CLIP_CONFIGS

    v = get_variant(variant)
    cfg = TINY_OPEN_CLIP_CONFIGS.get(v.clip_model)
    if cfg is None:
        raise ValueError(f"CLIP pretraining here is for the tiny variants, not {variant!r} (use its released weights)")
    return int(cfg["vision_cfg"]["image_size"])


def build_clip(variant: str, seed: int = 0):
    """-> (a randomly initialised open_clip model of the variant, its tokenizer)."""
    import open_clip

    from omg.modeling.backbone import _quiet_random_init

    register_tiny_configs()
    v = get_variant(variant)
    torch.manual_seed(seed)
    with _quiet_random_init():  # "no pretrained weights loaded": that is the point here
        model = open_clip.create_model(v.clip_model, pretrained=None)
    return model, open_clip.get_tokenizer(v.clip_model)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's trainer: no weight decay on gains, biases, norms and the temperature."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (rest if p.ndim < 2 or "logit_scale" in name or "bn" in name or "ln" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_at(step: int, config: ClipPretrainConfig) -> float:
    """Linear warmup, then cosine to 0 (open_clip's ``cosine_lr``)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    e = step - config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * e / span)) * config.lr


@torch.no_grad()
def retrieval_accuracy(model, tokenizer, pairs: CaptionPairs, limit: int = 256) -> dict[str, float]:
    """Zero-shot image -> caption and caption -> image top-1 accuracy over the first ``limit`` pairs of a split the
    model did not train on (chance: 1 / n)."""
    n = min(limit, len(pairs))
    was = model.training
    model.eval()
    try:
        img = F.normalize(model.encode_image(pairs.images(range(n))), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(pairs.titles[:n])), dim=-1)
    finally:
        model.train(was)
    sim = img @ txt.T
    target = torch.arange(n)
    return {
        "image_to_text": float((sim.argmax(1) == target).float().mean()),
        "text_to_image": float((sim.argmax(0) == target).float().mean()),
        "n": n,
    }


def pretrain(
    config: ClipPretrainConfig,
    root: str,
    rank: int = 0,
    world: int = 1,
    model=None,
    on_step: Callable[[int, float], None] | None = None,
):
    """Train on ``<root>/captions/train.csv``; rank ``rank`` of ``world`` takes its share of each epoch's shuffled
    order (``model`` may be the DDP-wrapped model of a Ray Train worker). -> (model, tokenizer, losses)."""
    from open_clip.loss import ClipLoss

    if model is None:
        model, tokenizer = build_clip(config.variant, config.seed)
    else:
        import open_clip

        tokenizer = open_clip.get_tokenizer(get_variant(config.variant).clip_model)
    inner = getattr(model, "module", model)
    pairs = CaptionPairs(root, "train", config.variant)
    if len(pairs) < config.batch_size * world:
        raise ValueError(
            f"{len(pairs)} training captions for a global batch of {config.batch_size * world}: "
            "generate more (omg data captions --num-train N) or lower batch_size"
        )
    # several workers: each scores its images against every worker's texts and back (open_clip's --local-loss
    # --gather-with-grad), and DDP averages the gradients
    loss_fn = ClipLoss(local_loss=world > 1, gather_with_grad=world > 1, rank=rank, world_size=world)
    opt = torch.optim.AdamW(_param_groups(inner, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    per_epoch = len(pairs) // (config.batch_size * world)
    backbone = regions = None
    if config.region_weight > 0:
        from omg.modeling.backbone import CLIPBackbone

        regions = CaptionRegions(root, "train", pairs)
        backbone = CLIPBackbone.wrapping(inner, get_variant(config.variant))
    losses = []
    model.train()
    for step in range(config.steps):
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(pairs))
        start = (k * world + rank) * config.batch_size
        idx = order[start : start + config.batch_size]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        pixels = pairs.pixels(idx, pairs.size)  # read once: the batch, and the region loss's first images
        texts = tokenizer([pairs.titles[i] for i in idx])
        image_features, text_features, logit_scale = model(pairs.normalise(pixels), texts)
        loss = loss_fn(image_features, text_features, logit_scale)
        if regions is not None:
            k = config.region_images
            texts = region_texts(regions, np.random.default_rng([config.seed, 5, step, rank]))
            text = inner.encode_text(tokenizer(texts), normalize=True)
            reg, _ = region_loss(backbone, regions, idx[:k], pixels[:k], config.region_size, text, logit_scale)
            loss = loss + config.region_weight * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            inner.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    return inner, tokenizer, losses


def save_weights(model, uri: str) -> None:
    """The open_clip model's state dict (what ``model.pretrained=URI`` loads)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    uio.write_bytes(uri, buf.getvalue())
