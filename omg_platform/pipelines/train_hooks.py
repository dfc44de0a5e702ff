"""The training loop's hooks: what happens around each step, composed rather than written into the loop.

The loop (``omg_platform/pipelines/joint_train.py``: ``train_loop_per_worker``) calls every hook at these points and
knows
nothing else about them::

    on_start(ctx)                 after the model is built and the run resumed, before the first step
    on_step_begin(ctx, step)      before the step with this (0-based) index
    on_step_end(ctx, step, batch) after the optimiser update of that step
    after_step(ctx, state)        then, with the loop's state (``state.step`` = steps done, the checkpoint step)
    on_end(ctx, state)            after the last step (not after a failure)

``ctx`` is a :class:`HookContext`, ``state`` a :class:`StepState`. The loop's own work is hooks too, in this
order: :class:`ProgressLog` (losses to MLflow, a progress line), :class:`Validation` (periodic validation),
:class:`Checkpointing` (periodic checkpoints). Hooks given with ``--hook MODULE:NAME[:KEY=VALUE,...]`` run before
them; they are built on the driver and travel to the workers with the loop's config, so a hook class must be
importable on every worker (this module is). The resilience tests' hooks are below (:class:`FaultInjection`,
:class:`Stall`, :class:`SampleTrace`); a profiler or a custom logger is written the same way.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.progress import format_duration

log = get_logger(__name__)


@dataclass(frozen=True)
class HookContext:
    rank: int
    world_size: int
    #: the run's folder in the checkpoint storage (``<storage_path>/<run name>``)
    run_dir: str


@dataclass
class StepState:
    """The loop's state after a step, as the hooks see it."""

    #: steps done (the step a checkpoint, a metric point or a validation is recorded at)
    step: int
    total: int
    #: the step's losses (``loss/total``, ``loss/cls``, ...)
    stats: dict[str, float]
    #: samples the step trained on, every worker's
    samples: int
    #: the model (unwrapped from DDP), its optimiser and schedule
    model: Any
    optimizer: Any
    scheduler: Any


class TrainHook:
    """Base class: every callback is optional."""

    def on_start(self, ctx: HookContext) -> None:
        pass

    def on_step_begin(self, ctx: HookContext, step: int) -> None:
        pass

    def on_step_end(self, ctx: HookContext, step: int, batch: dict) -> None:
        pass

    def after_step(self, ctx: HookContext, state: StepState) -> None:
        pass

    def on_end(self, ctx: HookContext, state: StepState) -> None:
        pass


# ----------------------------------------------------------------------------- the loop's own work


@dataclass
class ProgressLog(TrainHook):
    """Rank 0, every ``every`` steps and at the last: the step's losses, learning rate, samples/s and epoch to
    ``log(metrics, step)`` (the MLflow tracker) and a progress line with the ETA."""

    every: int
    steps_per_epoch: int
    log: Callable[[dict, int], None]
    start_step: int = 0
    _t0: float = field(default=0.0, init=False)
    _last: float = field(default=0.0, init=False)
    _samples: int = field(default=0, init=False)

    def on_start(self, ctx: HookContext) -> None:
        self._t0 = self._last = time.monotonic()

    def after_step(self, ctx: HookContext, state: StepState) -> None:
        self._samples += state.samples
        if ctx.rank != 0 or not (state.step % self.every == 0 or state.step == state.total):
            return
        now = time.monotonic()
        rate = self._samples / max(now - self._last, 1e-9)
        self._last, self._samples = now, 0
        stats = dict(
            state.stats,
            lr=state.optimizer.param_groups[0]["lr"],
            samples_per_s=rate,
            epoch=state.step / self.steps_per_epoch,
        )
        self.log(stats, state.step)
        eta = (now - self._t0) / max(state.step - self.start_step, 1) * (state.total - state.step)
        log.info(
            f"[train] step {state.step}/{state.total} ({100 * state.step / state.total:.0f}%) loss "
            f"{stats['loss/total']:.3f} (cls {stats['loss/cls']:.2f} mask {stats['loss/mask']:.2f} dice "
            f"{stats['loss/dice']:.2f} obj {stats['loss/obj']:.2f}) {rate:.1f} samples/s lr {stats['lr']:.2e} "
            f"ETA {format_duration(eta)}"
        )


@dataclass
class Validation(TrainHook):
    """Rank 0, every ``every`` steps before the last (0: never): ``validate(model, step)`` (the final validation
    belongs to the export). With ``report``, every rank then calls ``report(`` :meth:`result` ``)`` (rank 0's
    validation metrics; the others' are empty): ``ray.train.report``, which a Tune trial's scheduler decides on."""

    every: int
    validate: Callable[[Any, int], dict]
    report: Callable[[dict], None] | None = None
    _losses: list = field(default_factory=list, init=False)

    def after_step(self, ctx: HookContext, state: StepState) -> None:
        if self.report is not None:  # the losses since the last report, for train/loss (kept only when reporting)
            self._losses.append(state.stats["loss/total"])
        if not (self.every and state.step % self.every == 0 and state.step < state.total):
            return
        metrics = self.validate(state.model, state.step) if ctx.rank == 0 else {}
        if self.report is not None:
            self.report(self.result(state.step, metrics))

    def result(self, step: int, metrics: dict) -> dict:
        """What a validation reports: ``step``, ``train/loss`` (the mean total loss of the steps since the last
        report: an early signal where a task metric is still 0 for every trial) and the validation metrics."""
        loss = float(np.mean(self._losses)) if self._losses else float("nan")
        self._losses = []
        return {"step": step, "train/loss": loss, **metrics}


@dataclass
class Checkpointing(TrainHook):
    """Every ``every`` steps and at the last, collectively: ``save(step, model, optimizer, scheduler)`` (the
    checkpointer's, with the MLflow run id)."""

    every: int
    save: Callable[[int, Any, Any, Any], Any]

    def after_step(self, ctx: HookContext, state: StepState) -> None:
        if state.step % self.every == 0 or state.step == state.total:
            self.save(state.step, state.model, state.optimizer, state.scheduler)


# ----------------------------------------------------------------------------- the resilience tests' hooks


@dataclass
class FaultInjection(TrainHook):
    """Worker ``rank`` dies before step ``step``, once per run (a marker file in the run folder prevents a
    repeat after the restart). ``mode``: ``kill`` (the process exits at once, as a crashed node would) or
    ``raise`` (an exception, as a bug would)."""

    step: int
    rank: int = 1
    mode: str = "kill"

    def __post_init__(self):
        self.step, self.rank = int(self.step), int(self.rank)
        if self.mode not in ("kill", "raise"):
            raise ValueError(f"FaultInjection mode must be kill or raise, got {self.mode!r}")

    def marker(self, ctx: HookContext) -> str:
        return uio.join(ctx.run_dir, "fault_injected")

    def on_step_begin(self, ctx: HookContext, step: int) -> None:
        if ctx.rank != self.rank or step != self.step or uio.exists(self.marker(ctx)):
            return
        uio.write_bytes(self.marker(ctx), f"rank {ctx.rank} step {step}".encode())
        log.warning(f"[train] fault injection: rank {ctx.rank} dies at step {step}")
        if self.mode == "kill":
            os._exit(1)
        raise RuntimeError(f"injected failure at step {step}")


@dataclass
class Stall(TrainHook):
    """Every worker stops before step ``step`` and waits (up to ``seconds``), as a hung job would: an interrupt sent
    while it waits lands mid-run whatever the machine's load (the interrupt tests)."""

    step: int
    seconds: float = 600.0

    def __post_init__(self):
        self.step, self.seconds = int(self.step), float(self.seconds)

    def on_step_begin(self, ctx: HookContext, step: int) -> None:
        if step == self.step:
            log.warning(f"[train] stall: rank {ctx.rank} waits before step {step}")
            time.sleep(self.seconds)


@dataclass
class SampleTrace(TrainHook):
    """Appends ``{"step", "dataset", "indices", "seeds"}`` of every trained batch to
    ``<run_dir>/trace/rank<r>.jsonl`` in the run's storage (any URI; object storage has no append, so each step
    writes the rank's whole trace, which a restarted worker reads back first): which samples each step saw,
    across restarts."""

    def uri(self, ctx: HookContext) -> str:
        return uio.join(ctx.run_dir, "trace", f"rank{ctx.rank}.jsonl")

    def on_start(self, ctx: HookContext) -> None:
        self._trace = uio.read_bytes(self.uri(ctx)) if uio.exists(self.uri(ctx)) else b""

    def on_step_end(self, ctx: HookContext, step: int, batch: dict) -> None:
        self._trace += (
            json.dumps(
                {
                    "step": step,
                    "dataset": str(batch["dataset"]),
                    "indices": np.asarray(batch["indices"]).tolist(),
                    "seeds": np.asarray(batch["seeds"]).tolist(),
                }
            )
            + "\n"
        ).encode()
        uio.write_bytes(self.uri(ctx), self._trace)


def parse_hook(spec: str) -> TrainHook:
    """``"omg_platform.pipelines.train_hooks:FaultInjection:step=3,mode=raise"`` ->
    ``FaultInjection(step="3", mode="raise")``
    (values arrive as strings; the hook converts them)."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"--hook {spec!r}: expected MODULE:NAME[:KEY=VALUE,...]")
    module, name = parts[0], parts[1]
    kwargs = {}
    for kv in parts[2].split(",") if len(parts) == 3 and parts[2] else []:
        if "=" not in kv:
            raise ValueError(f"--hook {spec!r}: {kv!r} is not KEY=VALUE")
        k, v = kv.split("=", 1)
        kwargs[k.strip()] = v.strip()
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--hook {spec!r}: cannot import {module}:{name} ({err})") from None
    try:
        hook = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--hook {spec!r}: {err}") from None
    if not isinstance(hook, TrainHook):
        raise ValueError(f"--hook {spec!r}: {module}:{name} is not a omg_platform.pipelines.train_hooks.TrainHook")
    return hook
