"""Evaluate a checkpoint on one (dataset, split, task): the task's evaluator predicts, writes the official
prediction files and scores them (:mod:`omg.evaluation.evaluators`).

``evaluate_pair(checkpoint, entry, split, task, root, out_dir)`` is what one Ray task of
``omg_platform/pipelines/evaluate.py`` runs (and what a notebook can call directly): it sets the predictor up for the
dataset (the catalog's test size, the options' post-processing), feeds the evaluator the split's records
with a progress line, and writes ``result.json``.

Data-parallel: :func:`evaluate_chunk` processes one contiguous chunk of a pair's records (anywhere: a Ray task
each) and :func:`score_chunks` merges the chunks' gathered state in record order and scores it: the metrics and
files of ``evaluate_pair``, exactly.

Returns an :class:`EvalResult`: flat metrics (``{"PQ": 52.3, ...}``, percentages as the papers print them),
per-class tables, the options, and the files written (predictions, overlays).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from omg.data.catalog import DatasetEntry
from omg.data.formats import get_reader
from omg.evaluation.evaluators import (
    EVALUATORS,
    OPEN_VOCAB_TASKS,
    TASK_FORMATS,
    EvalContext,
    EvalOptions,
    TaskEvaluator,
)
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


@dataclass(frozen=True)
class PairSpec:
    """One (dataset, split, task) to evaluate: the checkpoint, where the dataset is (``root``: default the
    catalog's) and where its files go, and how (device, overlays kept, conventions). Picklable: the Ray tasks of a
    data-parallel evaluation each get one."""

    checkpoint: str
    entry: DatasetEntry
    split: str
    task: str
    root: str | None
    out_dir: str
    device: str | None = None
    overlays: int = 4
    options: EvalOptions = field(default_factory=EvalOptions)

    def __post_init__(self):
        if self.task not in TASK_FORMATS or self.entry.format not in TASK_FORMATS[self.task]:
            raise ValueError(
                f"task {self.task!r} cannot be evaluated on {self.entry.name} (format {self.entry.format})"
            )

    def predictor(self, given: OMGPredictor | None = None) -> OMGPredictor:
        return given or OMGPredictor.from_checkpoint(self.checkpoint, device=self.device)

    @contextmanager
    def evaluator(self, pred: OMGPredictor) -> Iterator[TaskEvaluator]:
        """The pair's evaluator, with the predictor set up for the dataset (the options' test size, else the
        catalog's, the options' post-processing) while it is used, as it was afterwards."""
        saved = pred.test_size, pred.postprocess_at, pred.prompt_labels, pred.zoom
        # the options' test size, else the released config's for the dataset, else the model's
        pred.test_size = self.options.test_size or tuple(self.entry.test_size) or pred.test_size
        pred.postprocess_at, pred.prompt_labels = self.options.postprocess_at, self.options.prompt_labels
        if self.options.zoom_in != "model":
            pred.zoom = self.options.zoom_in == "on"
        reader = get_reader(self.entry, self.split, self.root)
        try:
            yield EVALUATORS[self.task](
                EvalContext(pred, self.entry, reader, self.out_dir, self.options, self.overlays)
            )
        finally:
            pred.test_size, pred.postprocess_at, pred.prompt_labels, pred.zoom = saved

    def result(self, scores, t0: float) -> EvalResult:
        """The scores as an :class:`EvalResult`, also written to ``result.json``."""
        result = EvalResult(
            self.entry.name,
            self.split,
            self.task,
            scores.metrics,
            {**scores.tables, "options": self.options.to_dict()},
            scores.files,
            time.monotonic() - t0,
        )
        uio.write_json(uio.join(self.out_dir, "result.json"), result.to_dict())
        return result


def _process(evaluator: TaskEvaluator, records: list[dict], label: str, progress: bool) -> None:
    with Progress(label, total=len(records), unit=evaluator.unit, enabled=progress) as prog:
        for record in records:
            evaluator.process(record)
            prog.update()


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
    spec = PairSpec(checkpoint, entry, split, task, root, out_dir, device, overlays, options or EvalOptions())
    return evaluate_spec(spec, limit, predictor, progress)


def evaluate_spec(
    spec: PairSpec, limit: int | None = None, predictor: OMGPredictor | None = None, progress: bool = False
) -> EvalResult:
    """:func:`evaluate_pair` of a :class:`PairSpec`: every record (the first ``limit``) in this process."""
    t0 = time.monotonic()
    with spec.evaluator(spec.predictor(predictor)) as evaluator:
        _process(evaluator, evaluator.records(limit), f"eval {spec.entry.name} {spec.task}", progress)
        scores = evaluator.evaluate()
    return spec.result(scores, t0)


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """``n`` records in ``chunks`` contiguous (start, stop) ranges, the first ones a record longer."""
    size, extra = divmod(n, chunks)
    bounds, start = [], 0
    for k in range(chunks):
        stop = start + size + (k < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def evaluate_chunk(
    spec: PairSpec, chunk: int, chunks: int, limit: int | None = None, predictor: OMGPredictor | None = None
) -> dict[str, object]:
    """Process chunk ``chunk`` of ``chunks`` of the pair's records (:func:`chunk_bounds`; the files each record
    gives are written under ``out_dir`` as the one-process run writes them) -> what the evaluator gathered, for
    :func:`score_chunks`. Data-parallel evaluation: the chunks run anywhere, in any order."""
    with spec.evaluator(spec.predictor(predictor)) as evaluator:
        records = evaluator.records(limit)
        start, stop = chunk_bounds(len(records), chunks)[chunk]
        evaluator.first = start
        _process(evaluator, records[start:stop], f"eval {spec.entry.name} {spec.task} [{chunk + 1}/{chunks}]", False)
        return evaluator.partial()


def score_chunks(
    spec: PairSpec, partials: list[dict[str, object]], predictor: OMGPredictor | None = None
) -> EvalResult:
    """What :func:`evaluate_chunk` gathered from each chunk, in chunk order -> the pair's scores and
    ``result.json``: those of :func:`evaluate_pair` on the same records."""
    t0 = time.monotonic()
    with spec.evaluator(spec.predictor(predictor)) as evaluator:
        for partial in partials:
            evaluator.absorb(partial)
        scores = evaluator.evaluate()
    return spec.result(scores, t0)


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
