"""Evaluate a checkpoint on many (dataset, split, task) pairs: one Ray task per pair, results to MLflow.

    python -m omg_platform.pipelines.evaluate --checkpoint runs/demo/model.pt \
        --dataset omg-shapes --dataset omg-shapes-vis
    python -m omg_platform.pipelines.evaluate --checkpoint s3://bucket/ckpt.pt --pair coco-panoptic:val:panoptic --root s3://bucket/coco
    ray job submit --working-dir . -- python -m omg_platform.pipelines.evaluate --checkpoint ... --dataset vipseg

Each pair runs as a Ray task (on a GPU when the cluster has one) that predicts, writes the
official prediction files under ``<out>/<checkpoint digest>/<dataset>/<split>/<task>/`` and
scores them; the driver logs ``eval/<dataset>/<metric>`` metrics, the per-class tables and a
few overlays to MLflow (the ``--run-id`` run, e.g. the training run, or a new run tagged with
the checkpoint). A failing pair is retried once and reported; it does not stop the others. A
rerun skips pairs already evaluated for the same checkpoint (same bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time

from omg.data.catalog import get_entry, load_catalog
from omg.env import apply_env_defaults, runs_dir
from omg.evaluation.evaluators import TASK_FORMATS, EvalOptions
from omg.evaluation.runner import PairSpec, default_pairs
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.options import add_options, options_from_args
from omg.utils.progress import Progress
from omg_platform.errors import fail, usage_error
from omg_platform.pipelines.cluster import shared_location

logger = get_logger(__name__)


def checkpoint_digest(uri: str) -> str:
    h = hashlib.sha256()
    with uio.local_file(uri) as path, open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _on_this_node(spec: PairSpec, tracking: str | None) -> PairSpec:
    """``spec`` with its checkpoint on this node: a ``models:/`` or ``runs:/`` checkpoint is fetched here, into this
    node's cache (the driver's copy is on the driver's disk)."""
    from omg_platform.tracking import resolve_model_uri

    return dataclasses.replace(spec, checkpoint=resolve_model_uri(spec.checkpoint, tracking))


def eval_task(spec: PairSpec, limit: int | None, tracking: str | None) -> dict:
    """One pair, on whichever node Ray chose (its address goes in the result as ``node``)."""
    import ray

    from omg.evaluation.runner import evaluate_spec

    result = evaluate_spec(_on_this_node(spec, tracking), limit).to_dict()
    return {**result, "node": ray.util.get_node_ip_address()}


def chunk_task(spec: PairSpec, chunk: int, chunks: int, limit: int | None, tracking: str | None) -> dict:
    """Chunk ``chunk`` of ``chunks`` of a pair's records (``--chunks``) -> what its evaluator gathered, and this
    node's address."""
    import ray

    from omg.evaluation.runner import evaluate_chunk

    partial = evaluate_chunk(_on_this_node(spec, tracking), chunk, chunks, limit)
    return {"partial": partial, "node": ray.util.get_node_ip_address()}


def score_task(spec: PairSpec, tracking: str | None, *chunks: dict) -> dict:
    """The chunks' gathered state, in record order -> the pair's result (that of one task on the whole split)."""
    from omg.evaluation.runner import score_chunks

    result = score_chunks(_on_this_node(spec, tracking), [c["partial"] for c in chunks]).to_dict()
    nodes = sorted({c["node"] for c in chunks})
    return {**result, "node": nodes[0], "nodes": nodes}


def plan(args, catalog) -> list[tuple]:
    pairs = []
    for name in args.dataset or []:
        entry = catalog[name]
        pairs += [(entry, split, task) for split, task in default_pairs(entry)]
    for spec in args.pair or []:
        try:
            name, split, task = spec.split(":")
        except ValueError:
            raise ValueError(f"--pair {spec!r}: expected DATASET:SPLIT:TASK") from None
        entry = get_entry(name, catalog)
        if split not in entry.splits:
            raise ValueError(f"--pair {spec!r}: {name} has no split {split!r}")
        if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
            raise ValueError(f"--pair {spec!r}: task {task!r} cannot be evaluated on format {entry.format}")
        pairs.append((entry, split, task))
    if not pairs:
        raise ValueError("nothing to evaluate: give --dataset NAME or --pair DATASET:SPLIT:TASK")
    return pairs


def log_results(
    results: list[dict],
    run_id: str | None,
    checkpoint: str,
    digest: str,
    metadata: dict,
    tracking: str | None,
    experiment: str,
) -> str:
    import mlflow

    from omg_platform.tracking import metric_key, setup

    if run_id:
        # log into an existing run (e.g. an ablation trial's training run): select its experiment
        setup(experiment, tracking)
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(run_id).info.experiment_id)
    else:
        setup(experiment, tracking)
    tags = {"omg.checkpoint": checkpoint, "omg.checkpoint_sha256": digest, "omg.kind": "evaluation"}
    if metadata.get("mlflow_run_id"):
        tags["omg.train_run_id"] = metadata["mlflow_run_id"]
    ctx = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=f"eval-{digest[:12]}", tags=tags)
    with ctx as run:
        if run_id:
            mlflow.set_tags(tags)
        for r in results:
            metrics = {
                metric_key("eval", r["dataset"], k): float(v)
                for k, v in r["metrics"].items()
                if v is not None and v == v
            }
            mlflow.log_metrics(metrics)
            for k, v in enumerate((r["tables"] or {}).get("mIoU_by_click", ()), start=1):  # the curve: step = click
                mlflow.log_metric(metric_key("eval", r["dataset"], "mIoU_by_click"), float(v), step=k)
            base = f"eval/{r['dataset']}/{r['split']}/{r['task']}"
            mlflow.log_dict(r["metrics"], f"{base}/metrics.json")
            if r["tables"]:
                mlflow.log_dict(json.loads(json.dumps(r["tables"], default=float)), f"{base}/tables.json")
            for f in r["files"]:
                if "/overlays/" in f:  # on this disk or in object storage (a cluster's --out)
                    with uio.local_file(f) as local:
                        mlflow.log_artifact(local, f"{base}/overlays")
        return run.info.run_id


def earlier_result(out_dir: str, limit: int | None, options: EvalOptions) -> dict | None:
    """The ``result.json`` of an earlier evaluation of this pair that stands for the one asked: made with the same
    ``--limit`` (a result of the first N items is not the whole split's, nor the other way round) and the same
    conventions (a result without recorded options predates them). None when the pair must run."""
    done = uio.join(out_dir, "result.json")
    if not uio.exists(done):
        return None
    cached = uio.read_json(done)
    if cached.get("limit") != limit or cached.get("tables", {}).get("options") != options.to_dict():
        return None
    return cached


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint",
        required=True,
        help="OMG-Seg checkpoint: path, fsspec URI, or MLflow models:/NAME/VERSION or runs:/ID/PATH",
    )
    p.add_argument("--dataset", action="append", help="evaluate every task of this catalog entry (repeatable)")
    p.add_argument("--pair", action="append", help="DATASET:SPLIT:TASK (repeatable)")
    p.add_argument("--root", help="dataset root URI (overrides the catalog root; one root for all datasets)")
    p.add_argument(
        "--out", default=runs_dir("eval"), help="where prediction files go (default $OMG_RUNS_DIR/eval, runs/eval)"
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N images/videos of each split")
    p.add_argument(
        "--chunks",
        type=int,
        default=1,
        help="data-parallel: split each pair's images/videos into N contiguous chunks, a Ray task (a CPU or GPU) "
        "each, merged into exactly the metrics and files of one task (default 1: a task per pair)",
    )
    p.add_argument("--run-id", help="log into this MLflow run (e.g. the training run) instead of a new one")
    p.add_argument("--experiment", default="eval", help="MLflow experiment of a new run (default: eval)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument("--no-mlflow", action="store_true", help="only print and write result.json files")
    p.add_argument("--smoke-test", action="store_true", help="--limit 2")
    conv = p.add_argument_group("conventions", "the defaults are the released OMG-Seg code's (docs/evaluation.md)")
    add_options(conv, EvalOptions)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("evaluate")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    limit = 2 if args.smoke_test else args.limit
    if args.chunks < 1:
        return usage_error("evaluate", f"--chunks {args.chunks}: give 1 or more")
    options = options_from_args(EvalOptions, args)
    log = (lambda m: None) if args.quiet else logger.info
    try:
        pairs = plan(args, load_catalog())
    except (ValueError, KeyError) as err:
        return usage_error("evaluate", err.args[0] if isinstance(err, KeyError) else err)
    from omg_platform.tracking import is_model_uri, pin_model_uri, resolve_model_uri, tracking_uri

    try:
        args.out = shared_location(args.out, "--out")  # as the cluster's workers must see it
        if args.root:
            args.root = shared_location(args.root, "--root")
        if is_model_uri(args.checkpoint):
            # the tasks fetch it on their own nodes: the same version everywhere, from the same store
            args.tracking_uri = tracking_uri(args.tracking_uri)
            args.checkpoint = pin_model_uri(args.checkpoint, args.tracking_uri)
        local = resolve_model_uri(args.checkpoint, args.tracking_uri)  # this driver's copy (digest, metadata)
        if not uio.exists(local):
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        if not is_model_uri(args.checkpoint):
            args.checkpoint = local = shared_location(local, "--checkpoint")
        # the roots are resolved here: the tasks' workers belong to the cluster and do not see this shell's
        # $OMG_ROOT_* / $OMG_DATA_DIR, nor its working directory
        roots = {
            entry.name: shared_location(args.root or entry.resolve_root(), f"the root of {entry.name}")
            for entry, _, _ in pairs
        }
    except ValueError as err:
        return usage_error("evaluate", err)
    except OSError as err:
        return fail("evaluate", err, 2)
    import ray

    from omg.modeling.checkpoint import read_checkpoint
    from omg_platform.pipelines.cluster import init_ray

    t0 = time.monotonic()
    digest = checkpoint_digest(local)
    metadata = read_checkpoint(local).get("metadata", {})
    results, failures, todo = [], [], []
    for entry, split, task in pairs:
        out_dir = uio.join(args.out, digest[:12], entry.name, split, task)
        cached = earlier_result(out_dir, limit, options)
        if cached is not None:
            log(f"[eval] {entry.name}/{split}/{task}: already evaluated for this checkpoint ({out_dir}/result.json)")
            results.append(cached)
        else:
            todo.append((entry, split, task, out_dir))
    pending, gpus = {}, False
    if todo:  # Ray only when there is something to run: a rerun of a finished evaluation takes seconds
        init_ray(args.num_cpus)
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        # DEFAULT: placed on the cluster even when this driver is a Tune trial (whose placement group would
        # otherwise capture them, and holds no CPU)
        placed = dict(
            num_cpus=1, num_gpus=1 if gpus else 0, max_retries=1, retry_exceptions=True, scheduling_strategy="DEFAULT"
        )
        remote = ray.remote(eval_task).options(**placed)
        chunk_remote, score_remote = ray.remote(chunk_task).options(**placed), ray.remote(score_task).options(**placed)
    device = "cuda" if gpus else None
    for entry, split, task, out_dir in todo:
        spec = PairSpec(args.checkpoint, entry, split, task, roots[entry.name], out_dir, device, options=options)
        if args.chunks == 1:
            ref = remote.remote(spec, limit, args.tracking_uri)
        else:  # the score task starts when every chunk has returned (Ray resolves its arguments first)
            chunks = [chunk_remote.remote(spec, k, args.chunks, limit, args.tracking_uri) for k in range(args.chunks)]
            ref = score_remote.remote(spec, args.tracking_uri, *chunks)
        pending[ref] = (entry.name, split, task, out_dir)
    log(
        f"[eval] checkpoint {args.checkpoint} ({digest[:12]}): {len(pairs)} pairs, {len(pending)} to run, "
        f"{'GPU' if gpus else 'CPU'} tasks" + (f", {args.chunks} chunks each" if args.chunks > 1 else "")
    )
    with Progress("eval", total=len(pending), unit="pair", enabled=not args.quiet) as prog:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name, split, task, out_dir = pending.pop(ready[0])
            try:
                r = ray.get(ready[0])
                r["limit"] = limit
                uio.write_json(uio.join(out_dir, "result.json"), r)
                results.append(r)
                head = ", ".join(f"{k} {v:.2f}" for k, v in list(r["metrics"].items())[:3])
                prog.update(extra=f"{name}/{split}/{task}: {head}")
            except Exception as err:  # noqa: BLE001 - retried once by Ray already; reported, the other pairs go on
                cause = getattr(err, "cause", None) or err
                failures.append((name, split, task, f"{type(cause).__name__}: {cause}"))
                prog.update(extra=f"{name}/{split}/{task} FAILED")
    run_id = None
    if results and not args.no_mlflow:
        run_id = log_results(
            results, args.run_id, args.checkpoint, digest, metadata, args.tracking_uri, args.experiment
        )
    for r in sorted(results, key=lambda r: (r["dataset"], r["task"])):
        figures = "  ".join(f"{k} {v:.2f}" for k, v in r["metrics"].items() if v == v)
        print(f"{r['dataset']}/{r['split']}/{r['task']}: {figures}")
    for name, split, task, why in failures:
        print(f"FAILED {name}/{split}/{task}: {why}")
    if run_id:
        print(f"MLflow run {run_id} ({len(results)} pairs) [{time.monotonic() - t0:.1f}s]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
