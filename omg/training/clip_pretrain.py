"""Contrastive pretraining of a tiny CLIP on the omg-shapes captions (``omg/data/captions.py``).

The model is the open_clip model of a backbone variant (``open_clip.create_model(variant.clip_model)``, both towers
trained) with open_clip's own loss (``open_clip.loss.ClipLoss``: the symmetric InfoNCE of image and text embeddings
with CLIP's learned temperature, clamped at 100 as open_clip's trainer does). The result is the open_clip model's state
dict: ``ModelConfig(pretrained=PATH)`` (``CLIPBackbone.load_pretrained``) loads it like any open_clip weights.

Images are read at the CLIP's input size (the tiny towers': 128) and normalised with the variant's pixel statistics,
as the segmentation model normalises them; the text is open_clip's tokenizer of the variant.

**Shape batches** (``shape_steps``): after each caption batch, ``shape_steps`` batches of the captions' ``shapes``
split, close-ups labelled by their shape, at ``shape_size`` pixels, with the image-to-label half of UniCL's loss (Yang
et al., "Unified Contrastive Learning in Image-Text-Label Space", CVPR 2022): the texts are one caption per shape ("a
hexagon", "a photo of a six-sided shape": a synonym drawn for each batch), and each image's cross-entropy over them
at CLIP's learned temperature has its shape's caption as the target. In the mixed corpus the contrastive
loss is met by hue, pattern and stuff words; in a shape batch only the silhouette tells the captions apart
(``docs/experiments.md``, "Shape batches").
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
    #: shape batches after each caption batch (the captions' ``shapes`` split, the labels' loss); 0: none
    shape_steps: int = 2
    #: the shape batches' image size
    shape_size: int = 64
    #: the first steps are shape batches only (a curriculum: the silhouettes first)
    shape_first: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (a contrastive batch needs negatives)")
        if self.shape_steps < 0 or self.shape_size < 32:
            raise ValueError(f"shape_steps must be >= 0 and shape_size >= 32, got {self.shape_steps}, {self.shape_size}")

    def stream(self, step: int) -> tuple[str, int]:
        """-> ("captions" | "shapes", the index of the step's batch in that stream): each caption batch is followed
        by ``shape_steps`` shape batches."""
        if step < self.shape_first:
            return ("shapes", step)
        cycle, k = divmod(step - self.shape_first, 1 + self.shape_steps)
        return ("captions", cycle) if k == 0 else ("shapes", self.shape_first + cycle * self.shape_steps + k - 1)
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0 and warmup_steps >= 0")


class CaptionPairs:
    """The (image, caption) rows of ``<root>/captions/<split>.csv``, read and normalised for a variant; ``labels``: the
    rows' shapes where the file has a ``shape`` column (the ``shapes`` split), else None."""

    def __init__(self, root: str, split: str, variant: str):
        self.base = uio.join(root, "captions")
        csv = uio.join(self.base, f"{split}.csv")
        if not uio.exists(csv):
            raise FileNotFoundError(f"{csv}: no captions (generate them: omg data captions --root {root})")
        lines = uio.read_bytes(csv).decode("utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        if header not in (["filepath", "title"], ["filepath", "title", "shape"]):
            raise ValueError(f"{csv}: expected a 'filepath<TAB>title' or 'filepath<TAB>title<TAB>shape' header")
        self.paths, self.titles = [], []
        self.labels: list[str] | None = [] if len(header) == 3 else None
        for n, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            if len(parts) != len(header) or not all(p.strip() for p in parts[1:]):
                raise ValueError(f"{csv}: line {n}: expected {'<TAB>'.join(header)}")
            self.paths.append(parts[0])
            self.titles.append(parts[1])
            if self.labels is not None:
                self.labels.append(parts[2])
        v = get_variant(variant)
        self.mean = torch.tensor(v.pixel_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(v.pixel_std).view(1, 3, 1, 1)
        self.size = image_size(variant)

    def __len__(self) -> int:
        return len(self.paths)

    def images(self, indices, size: int | None = None) -> torch.Tensor:
        """N x 3 x S x S normalised images (S: ``size``, by default the CLIP's input size)."""
        size = size or self.size
        arrays = [uio.decode_rgb(uio.read_bytes(uio.join(self.base, self.paths[i])), self.paths[i]) for i in indices]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std


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
    shapes = ShapeBatches(root, config, rank, world) if config.shape_steps or config.shape_first else None
    opt = torch.optim.AdamW(_param_groups(inner, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    losses = []
    model.train()
    for step in range(config.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        stream, n = config.stream(step)
        if stream == "shapes":
            images, labels, texts = shapes.batch(n)
            image_features, text_features, logit_scale = model(images, tokenizer(texts))
            loss = F.cross_entropy(logit_scale * image_features @ text_features.T, labels)
        else:
            idx = _share(len(pairs), n, config, rank, world, stream=0)
            image_features, text_features, logit_scale = model(
                pairs.images(idx), tokenizer([pairs.titles[i] for i in idx])
            )
            loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            inner.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    return inner, tokenizer, losses


def _share(size: int, n: int, config: ClipPretrainConfig, rank: int, world: int, stream: int) -> np.ndarray:
    """The row indices of a stream's ``n``-th batch on rank ``rank``: each epoch a shuffled order of the ``size``
    rows, each batch ``batch_size`` of it per rank (a stream: the captions' 0, the shape batches' 1)."""
    per_epoch = size // (config.batch_size * world)
    epoch, k = divmod(n, per_epoch)
    order = np.random.default_rng([config.seed, epoch] + ([stream] if stream else [])).permutation(size)
    start = (k * world + rank) * config.batch_size
    return order[start : start + config.batch_size]


class ShapeBatches:
    """The shape batches of a pretraining: close-ups of the captions' ``shapes`` split, their shapes' indices and one
    caption per shape (a synonym and prefix drawn for each batch, ``omg.data.captions.shape_caption``)."""

    def __init__(self, root: str, config: ClipPretrainConfig, rank: int, world: int):
        self.pairs = CaptionPairs(root, "shapes", config.variant)
        if self.pairs.labels is None:
            raise ValueError(f"{self.pairs.base}/shapes.csv: expected a 'shape' column (the shape batches' labels)")
        if len(self.pairs) < config.batch_size * world:
            raise ValueError(
                f"{len(self.pairs)} shape close-ups for a global batch of {config.batch_size * world}: generate more "
                "(omg data captions --num-shapes N), lower batch_size or set shape_steps=0"
            )
        self.classes = sorted(set(self.pairs.labels))
        self.config, self.rank, self.world = config, rank, world

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """-> (images, each one's index into the texts, one caption per shape) of the ``n``-th shape batch."""
        from omg.data.captions import shape_caption

        idx = _share(len(self.pairs), n, self.config, self.rank, self.world, stream=1)
        rng = np.random.default_rng([self.config.seed, 11, n])  # the same texts on every rank
        texts = [shape_caption(rng, c) for c in self.classes]
        labels = torch.tensor([self.classes.index(self.pairs.labels[i]) for i in idx])
        return self.pairs.images(idx, self.config.shape_size), labels, texts


def save_weights(model, uri: str) -> None:
    """The open_clip model's state dict (what ``model.pretrained=URI`` loads)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    uio.write_bytes(uri, buf.getvalue())
