"""The Ray Data side of the training ingest: a plan of batches -> a Ray Dataset of built batches.

The heavy work (decoding, augmentation, targets, prompts) is ``omg.data.ingest.BatchBuilder``
running in a pool of Ray Data actors, so CPU decoding scales across the cluster; Ray Train
workers consume their part with ``ray.train.get_dataset_shard("train")`` and
:func:`iter_shard_batches`. The plan covers ``epochs`` epochs in order; each epoch's plan
is the deterministic one of ``BatchBuilder.plan``. Which worker gets which batch is decided
by Ray's streaming split (dynamic); the content of every batch is fixed by the plan.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from omg.data.ingest import BatchBuilder, IngestConfig
from omg.data.labels import LabelSpace


def plan_rows(builder: BatchBuilder, epochs: int, start_epoch: int = 0) -> list[dict]:
    rows = []
    for epoch in range(start_epoch, start_epoch + epochs):
        rows += [item.to_dict() for item in builder.plan(epoch)]
    return rows


def ray_training_dataset(
    config: IngestConfig,
    label_space: LabelSpace,
    epochs: int = 1,
    start_epoch: int = 0,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1.0,
    rows: tuple[int, int] | None = None,
):
    """``rows=(start, stop)`` keeps that slice of the plan's batches (resuming at global batch ``start``)."""
    import ray

    builder = BatchBuilder(config, label_space)
    rows = plan_rows(builder, epochs, start_epoch)[slice(*rows) if rows else slice(None)]
    if not rows:
        raise ValueError("the training plan is empty: check the datasets' repeat factors and the batch size")
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64))
    return ds.map_batches(
        BatchBuilder,
        fn_constructor_args=(config, label_space),
        batch_size=1,
        concurrency=concurrency,
        num_cpus=num_cpus,
        batch_format="numpy",
    )


def iter_shard_batches(shard) -> Iterator[dict]:
    """Built batches (as ``BatchBuilder.build`` returns them) from a Ray Dataset shard or dataset."""
    for row in shard.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
        yield {
            k: (
                v[0].item()
                if isinstance(v[0], np.generic) or (isinstance(v[0], np.ndarray) and v[0].ndim == 0)
                else v[0]
            )
            for k, v in row.items()
        }
