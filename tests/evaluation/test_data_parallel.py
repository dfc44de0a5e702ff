"""Data-parallel evaluation (omg/evaluation/runner.py): a pair's records in contiguous chunks, each processed by its
own evaluator (a Ray task each in omg_platform/pipelines/evaluate.py --chunks), merged in record order: the metrics,
tables and every file of the one-process run, exactly, for every task of every omg-shapes dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omg.data.catalog import get_entry
from omg.evaluation.runner import (
    PairSpec,
    chunk_bounds,
    default_pairs,
    evaluate_chunk,
    evaluate_pair,
    score_chunks,
)
from omg.inference.predictor import OMGPredictor

DATASETS = ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos")


def test_chunk_bounds_cover_the_records_in_order():
    assert chunk_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert chunk_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)], "more chunks than records: the last ones are empty"
    for n in range(12):
        for k in range(1, 5):
            flat = [i for a, b in chunk_bounds(n, k) for i in range(a, b)]
            assert flat == list(range(n))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow(seconds=40)
def test_three_chunks_give_the_one_process_metrics_and_files(interactive_checkpoint, tiny_shapes, tmp_path):
    """The interactive test model (trained: the metrics are not all zeros) on 5 records of each pair, in 3 chunks
    of 2, 2 and 1 (the overlays and NoC's first objects span chunks)."""
    pred = OMGPredictor.from_checkpoint(interactive_checkpoint)
    checked = 0
    for name in DATASETS:
        entry = get_entry(name)
        for split, task in default_pairs(entry):
            one, three = tmp_path / f"{name}-{task}-1", tmp_path / f"{name}-{task}-3"
            whole = evaluate_pair("", entry, split, task, tiny_shapes, str(one), limit=5, predictor=pred)
            spec = PairSpec("", entry, split, task, tiny_shapes, str(three))
            partials = [  # in any order: the merge puts them in record order
                evaluate_chunk(spec, k, 3, limit=5, predictor=pred) for k in (2, 0, 1)
            ]
            merged = score_chunks(spec, [partials[1], partials[2], partials[0]], predictor=pred)
            where = f"{name}/{split}/{task}"
            assert json.dumps(merged.metrics) == json.dumps(whole.metrics), where
            assert json.dumps(merged.tables, default=str) == json.dumps(whole.tables, default=str), where
            assert [f.replace(str(three), "") for f in merged.files] == [f.replace(str(one), "") for f in whole.files]
            a, b = _files(one), _files(three)
            a.pop("result.json"), b.pop("result.json")
            assert a.keys() == b.keys() and a == b, where
            checked += 1
    assert checked == 12
