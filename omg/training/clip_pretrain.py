"""Contrastive pretraining of a tiny CLIP on the omg-shapes captions (``omg/data/captions.py``).

The model is the open_clip model of a backbone variant (``open_clip.create_model(variant.clip_model)``, both towers
trained) with open_clip's own loss (``open_clip.loss.ClipLoss``: the symmetric InfoNCE of image and text embeddings
with CLIP's learned temperature, clamped at 100 as open_clip's trainer does). The result is the open_clip model's state
dict: ``ModelConfig(pretrained=PATH)`` (``CLIPBackbone.load_pretrained``) loads it like any open_clip weights.

Images are read at the CLIP's input size (the tiny towers': 128) and normalised with the variant's pixel statistics,
as the segmentation model normalises them; the text is open_clip's tokenizer of the variant.
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

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (a contrastive batch needs negatives)")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0 and warmup_steps >= 0")


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

    def images(self, indices) -> torch.Tensor:
        """N x 3 x S x S normalised images (S: the CLIP's input size)."""
        arrays = [uio.decode_rgb(uio.read_bytes(uio.join(self.base, self.paths[i])), self.paths[i]) for i in indices]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
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
    opt = torch.optim.AdamW(_param_groups(inner, config.weight_decay), lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    per_epoch = len(pairs) // (config.batch_size * world)
    losses = []
    model.train()
    for step in range(config.steps):
        epoch, k = divmod(step, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(pairs))
        start = (k * world + rank) * config.batch_size
        idx = order[start : start + config.batch_size]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        image_features, text_features, logit_scale = model(pairs.images(idx), tokenizer([pairs.titles[i] for i in idx]))
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


def save_weights(model, uri: str) -> None:
    """The open_clip model's state dict (what ``model.pretrained=URI`` loads)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    uio.write_bytes(uri, buf.getvalue())
