"""AdamW with the paper's parameter groups and the step schedule (docs/model.md §10.3).

- lr = ``optim.lr`` x global batch / ``optim.base_batch`` (mmengine ``auto_scale_lr``);
- no weight decay on ``query_feat``, ``query_embed``, the transformer decoder's ``level_embed`` and every
  normalisation layer's parameters (the released ``schedule_12e.py`` ``custom_keys``, which mmengine matches
  as substrings of the parameter names: the pixel decoder's level encoding, ``level_encoding`` there, does
  not match ``level_embed`` and is decayed);
- a learned backbone trains at ``backbone_lr_mult`` x lr (the variant's default: 0.1 for the
  paper's learned ViT-L); a frozen one has no trainable parameters;
- linear warm-up from ``warmup_ratio`` x lr over ``warmup_iters`` iterations, then x ``gamma`` at
  each milestone epoch (8 and 11 of 12).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from omg.config import OptimConfig

NO_DECAY_NAMES = ("query_feat", "query_embed", "level_embed")


def _no_decay(model: nn.Module) -> set[int]:
    ids = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) or type(module).__name__.startswith(
            "LayerNorm"
        ):
            ids.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        if any(key in _released_name(name) for key in NO_DECAY_NAMES):  # mmengine: substring match
            ids.add(id(p))
    return ids


def _released_name(name: str) -> str:
    """The released checkpoint's name where ours differs in a way the no-decay keys see."""
    return name.replace("pixel_decoder.level_embed", "pixel_decoder.level_encoding")


def param_groups(model: nn.Module, cfg: OptimConfig, lr: float, backbone_lr_mult: float) -> list[dict]:
    no_decay = _no_decay(model)
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone.") or ".backbone." in name, id(p) in no_decay)
        groups.setdefault(key, []).append(p)
    out = []
    for (backbone, nd), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (backbone_lr_mult if backbone else 1.0),
                "weight_decay": 0.0 if nd else cfg.weight_decay,
                "name": f"{'backbone' if backbone else 'head'}{'-no_decay' if nd else ''}",
            }
        )
    return out


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, global_batch: int, backbone_lr_mult: float
) -> torch.optim.AdamW:
    lr = cfg.lr * global_batch / cfg.base_batch
    return torch.optim.AdamW(param_groups(model, cfg, lr, backbone_lr_mult), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)


def schedule_factor(step: int, cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base lr at ``step`` (0-based): warm-up, then step decay at the milestones.

    With ``max_steps`` the milestones keep their fraction of the schedule (8/12 and 11/12 of it).
    """
    warm = 1.0
    if step < cfg.warmup_iters:
        warm = cfg.warmup_ratio + (1 - cfg.warmup_ratio) * step / cfg.warmup_iters
    if cfg.max_steps is not None:
        marks = [math.floor(total_steps * m / cfg.epochs) for m in cfg.milestones]
    else:
        marks = [steps_per_epoch * m for m in cfg.milestones]
    decay = cfg.gamma ** sum(step >= m for m in marks)
    return warm * decay


def build_scheduler(optimizer, cfg: OptimConfig, steps_per_epoch: int, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(step, cfg, steps_per_epoch, total_steps)
    )
