"""One optimisation step and the resumable training state (plain PyTorch; the Ray loop calls these)."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from omg.losses.criterion import Criterion
from omg.training.corrections import ClickSimulator
from omg.training.inputs import to_model_inputs

#: a model with refinement: the share of location batches trained on their prompts as given (the released task)
PLAIN_PROMPT_FRACTION = 0.5


def train_step(
    model,
    batch: dict,
    text: torch.Tensor,
    criterion: Criterion,
    optimizer,
    scheduler,
    grad_clip: float,
    device,
    amp: bool = False,
    refine_rounds: int = 0,
) -> dict[str, float]:
    """Forward, loss (every prediction set), backward, clip, step. ``model`` may be DDP-wrapped. A location batch of a
    model with refinement trains, half the time, the answer to its prompts as given (one click or one box: the
    released prompt) and otherwise the answer after 1..``refine_rounds`` rounds (uniform) of simulated corrections
    run without gradient (:mod:`omg.training.corrections`; RITM draws 0..``max_num_next_clicks`` uniformly, which
    on the tests' tiny model left box prompts at a third of their IoU)."""
    inner = model.module if hasattr(model, "module") else model
    images, targets, prompts = to_model_inputs(batch, device, pad_value=inner.backbone.variant.pixel_mean)
    corrections, rounds = None, 0
    if prompts is not None and inner.refinement is not None and refine_rounds > 0:
        corrections = ClickSimulator(targets)
        rounds = 0 if random.random() < PLAIN_PROMPT_FRACTION else random.randint(1, refine_rounds)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with ctx:
        out = model(images, text, prompts, corrections, rounds)
    loss = criterion(
        [p for p in out.predictions],
        targets,
        location=prompts is not None,
        valid=prompts.valid if prompts is not None else None,
    )
    total = loss.total + inner.zero_touch()  # every trainable parameter takes part (DDP)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], grad_clip if grad_clip > 0 else float("inf")
    )
    optimizer.step()
    scheduler.step()
    stats = {f"loss/{k}": float(v.detach()) for k, v in loss.terms.items()}
    stats["loss/total"] = float(loss.total.detach())
    stats["grad_norm"] = float(grad_norm)
    return stats


def rng_state() -> dict:
    """Every random generator a worker uses, in a form ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
