"""Balanced joint-training sampling with per-dataset repeat factors (docs/model.md §10.1).

An epoch plan is a list of *batches*, each drawn from a single dataset (so the tensors of a
batch share a shape and a query kind). A dataset of n samples with repeat factor r
contributes floor(r) copies of every sample plus, per sample, one more with probability
frac(r); its samples are shuffled and chunked into batches, and all batches are shuffled.
The plan is a pure function of (sizes, factors, batch size, seed, epoch); each worker takes
every ``world``-th batch starting at its ``rank``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlanItem:
    dataset: str
    indices: tuple[int, ...]
    #: seeds of each sample's augmentation
    seeds: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "indices": list(self.indices), "seeds": list(self.seeds)}


def epoch_plan(
    sizes: dict[str, int], repeat: dict[str, float], batch_size: int, seed: int, epoch: int
) -> list[PlanItem]:
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    batches: list[PlanItem] = []
    for name in sorted(sizes):
        n, r = sizes[name], repeat.get(name, 0.0)
        if n == 0 or r <= 0:
            continue
        whole, frac = math.floor(r), r - math.floor(r)
        idx = np.tile(np.arange(n), whole)
        if frac > 0:
            idx = np.concatenate([idx, np.flatnonzero(rng.random(n) < frac)])
        idx = rng.permutation(idx)
        seeds = rng.integers(0, 2**31 - 1, size=len(idx))
        for s in range(0, len(idx) - batch_size + 1, batch_size):
            batches.append(
                PlanItem(
                    name,
                    tuple(int(x) for x in idx[s : s + batch_size]),
                    tuple(int(x) for x in seeds[s : s + batch_size]),
                )
            )
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def worker_plan(plan: list[PlanItem], rank: int, world: int) -> list[PlanItem]:
    """Every ``world``-th batch from ``rank``, truncated so that all workers get the same count."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    per_worker = len(plan) // world
    return plan[rank::world][:per_worker]
