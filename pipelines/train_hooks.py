"""Callbacks for the training loop (``pipelines/joint_train.py --hook MODULE:NAME[:KEY=VALUE,...]``).

The loop calls every hook at three points and knows nothing else about them::

    on_start(ctx)                 after the model is built and the run resumed, before the first step
    on_step_begin(ctx, step)      before the step with this (0-based) index
    on_step_end(ctx, step, batch) after the optimiser update of that step

``ctx`` is a :class:`HookContext`. Hooks are built on the driver and travel to the workers with the
loop's config, so a hook class must be importable on every worker (this module is). The two below are
what the resilience tests install; a profiler or a custom logger is written the same way.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from omg.utils import io as uio


@dataclass(frozen=True)
class HookContext:
    rank: int
    world_size: int
    #: the run's folder in the checkpoint storage (``<storage_path>/<run name>``)
    run_dir: str


class TrainHook:
    """Base class: every callback is optional."""

    def on_start(self, ctx: HookContext) -> None:
        pass

    def on_step_begin(self, ctx: HookContext, step: int) -> None:
        pass

    def on_step_end(self, ctx: HookContext, step: int, batch: dict) -> None:
        pass


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
        print(f"[train] fault injection: rank {ctx.rank} dies at step {step}", flush=True)
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
            print(f"[train] stall: rank {ctx.rank} waits before step {step}", flush=True)
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
    """``"pipelines.train_hooks:FaultInjection:step=3,mode=raise"`` -> ``FaultInjection(step="3", mode="raise")``
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
        raise ValueError(f"--hook {spec!r}: {module}:{name} is not a pipelines.train_hooks.TrainHook")
    return hook
