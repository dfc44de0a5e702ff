"""Evaluate a checkpoint on one (dataset, split, task): the task's evaluator predicts, writes the official
prediction files and scores them (:mod:`omg.evaluation.evaluators`).

``evaluate_pair(checkpoint, entry, split, task, root, out_dir)`` is what one Ray task of
``omg_platform/pipelines/evaluate.py`` runs (and what a notebook can call directly): it sets the predictor up for the
dataset (the catalog's test size, the options' post-processing), feeds the evaluator the split's records
with a progress line, and writes ``result.json``.

Returns an :class:`EvalResult`: flat metrics (``{"PQ": 52.3, ...}``, percentages as the papers print them),
per-class tables, the options, and the files written (predictions, overlays).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from omg.data.catalog import DatasetEntry
from omg.data.formats import get_reader
from omg.evaluation.evaluators import EVALUATORS, OPEN_VOCAB_TASKS, TASK_FORMATS, EvalContext, EvalOptions
from omg.inference.predictor import OMGPredictor
from omg.utils import io as uio
from omg.utils.progress import Progress


@dataclass
class EvalResult:
    dataset: str
    split: str
    task: str
    metrics: dict[str, float]
    tables: dict[str, object] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "task": self.task,
            "metrics": self.metrics,
            "tables": self.tables,
            "files": self.files,
            "seconds": self.seconds,
        }


def evaluate_pair(
    checkpoint: str,
    entry: DatasetEntry,
    split: str,
    task: str,
    root: str | None,
    out_dir: str,
    limit: int | None = None,
    device: str | None = None,
    overlays: int = 4,
    predictor: OMGPredictor | None = None,
    progress: bool = False,
    options: EvalOptions | None = None,
) -> EvalResult:
    if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
        raise ValueError(f"task {task!r} cannot be evaluated on {entry.name} (format {entry.format})")
    t0 = time.monotonic()
    pred = predictor or OMGPredictor.from_checkpoint(checkpoint, device=device)
    opts = options or EvalOptions()
    saved = pred.test_size, pred.postprocess_at, pred.prompt_labels
    pred.test_size = tuple(entry.test_size) or pred.test_size  # the released config's test size for this dataset
    pred.postprocess_at, pred.prompt_labels = opts.postprocess_at, opts.prompt_labels
    try:
        evaluator = EVALUATORS[task](EvalContext(pred, entry, get_reader(entry, split, root), out_dir, opts, overlays))
        records = evaluator.records(limit)
        with Progress(f"eval {entry.name} {task}", total=len(records), unit=evaluator.unit, enabled=progress) as prog:
            for record in records:
                evaluator.process(record)
                prog.update()
        scores = evaluator.evaluate()
    finally:
        pred.test_size, pred.postprocess_at, pred.prompt_labels = saved
    result = EvalResult(
        entry.name,
        split,
        task,
        scores.metrics,
        {**scores.tables, "options": opts.to_dict()},
        scores.files,
        time.monotonic() - t0,
    )
    uio.write_json(uio.join(out_dir, "result.json"), result.to_dict())
    return result


def default_pairs(entry: DatasetEntry) -> list[tuple[str, str]]:
    """(split, task) pairs a catalog entry is evaluated on: its tasks on its validation split(s)."""
    pairs = []
    val = [s for s in entry.splits if s.startswith("val")] or [s for s in entry.splits if s != "train"]
    for task in entry.tasks:
        if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
            continue
        if task in OPEN_VOCAB_TASKS:
            ov = [s for s in entry.splits if s.endswith("_ov")]
            if ov:
                pairs.append((ov[0], task))
            continue
        splits = [s for s in val if not s.endswith("_ov")]
        if splits:
            pairs.append((splits[0], task))
    return pairs
