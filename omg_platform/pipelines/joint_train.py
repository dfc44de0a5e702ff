"""Joint training of OMG-Seg on every dataset at once, with Ray Train and MLflow.

    python -m omg_platform.pipelines.joint_train --config omg_platform/pipelines/configs/shapes_demo.yaml
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m omg_platform.pipelines.joint_train --config omg_platform/pipelines/configs/omg_convnext_l.yaml \
            optim.max_steps=1000

Reads top to bottom: setup (config, Ray) -> build (datasets, label space, trainer) -> resume
(the run name is derived from the config, so relaunching the same command continues from the
last checkpoint: step, optimiser, schedule, sampler position and RNG state) -> train (Ray Train
``TorchTrainer``: DDP with gloo on CPU, NCCL on GPU; bf16 autocast on GPU) -> evaluate
(periodic and final validation on a held-out subset) -> export (a self-describing checkpoint
the predictor loads: model config, weights, training vocabulary).

Rank 0 logs to MLflow: the resolved config (params and artifact), per-step losses, learning
rate, samples/s, system metrics, the shard manifests as dataset inputs, git commit and Ray job
id tags, validation metrics, the final model. The run ends FINISHED or FAILED, never RUNNING.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omg.config import TrainConfig, config_dict, load_config
from omg.data.catalog import load_catalog
from omg.data.ingest import IngestConfig
from omg.data.labels import LabelSpace
from omg.env import apply_env_defaults
from omg.training.checkpointer import Checkpointer
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.typed import SchemaError, to_dict
from omg_platform.errors import UsageError, fail, usage_error
from omg_platform.pipelines.cluster import init_ray, run_trainer, shared_location, torch_trainer, worker_env
from omg_platform.pipelines.train_hooks import parse_hook

log = get_logger(__name__)

SMOKE_OVERRIDES = [
    "optim.max_steps=4",
    "checkpoint.every_steps=2",
    "tracking.log_every=1",
    "validation.limit=2",
    "optim.num_points=1024",
    "optim.warmup_iters=2",
]


# ============================================================================= build (driver)


def shared_locations(cfg: TrainConfig) -> TrainConfig:
    """``data.shards``, ``checkpoint.storage_path`` and ``model.init_from`` as every worker must see them
    (:func:`omg_platform.pipelines.cluster.shared_location`: absolute, or a URI; a relative path in a Ray job is
    refused)."""
    import dataclasses

    model = cfg.model
    if model.init_from:
        model = dataclasses.replace(model, init_from=shared_location(model.init_from, "model.init_from"))
    return dataclasses.replace(
        cfg,
        model=model,
        data=dataclasses.replace(cfg.data, shards=shared_location(cfg.data.shards, "data.shards")),
        checkpoint=dataclasses.replace(
            cfg.checkpoint, storage_path=shared_location(cfg.checkpoint.storage_path, "checkpoint.storage_path")
        ),
    )


def resolve_datasets(cfg: TrainConfig) -> tuple[list, dict]:
    """Catalog defaults filled in; manifests read (they must exist: run omg_platform/pipelines/preprocess.py first)."""
    from omg.data.ingest import DatasetSpec
    from omg.data.shards import read_manifest

    catalog = load_catalog()
    specs, manifests = [], {}
    for d in cfg.data.datasets:
        if d.name not in catalog:
            raise SchemaError("config", "data.datasets", f"no catalog dataset named {d.name!r}")
        uri = uio.join(cfg.data.shards, d.name, d.split)
        manifests[d.name] = read_manifest(uri)
        specs.append(DatasetSpec(d.name, uri, d.sampling_over(catalog[d.name].sampling)))
    if not specs:
        raise SchemaError("config", "data.datasets", "no training dataset")
    return specs, manifests


def ingest_config(cfg: TrainConfig, specs: list):
    from omg.data.ingest import IngestConfig

    return IngestConfig(
        crop_size=tuple(cfg.data.crop_size),
        batch_size=cfg.data.batch_size,
        num_prompts=cfg.data.num_prompts,
        box_prompt_prob=cfg.data.box_prompt_prob,
        seed=cfg.seed,
        datasets=tuple(specs),
    )


def git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ============================================================================= train (every worker)


@dataclass(frozen=True)
class WorkerSpec:
    """What every training worker is given (Ray Train carries it as ``train_loop_config={"spec": ...}``)."""

    config: TrainConfig
    label_space: LabelSpace
    ingest: IngestConfig
    name: str  # the run name (derived from the config: a relaunch resumes it)
    storage: str  # checkpoint storage root; the run's folder is storage/name
    manifests: dict[str, dict]  # dataset -> its shard manifest (the document preprocess wrote)
    git_commit: str
    val_root: dict[str, str]  # dataset -> the root its validation pairs read
    ray_job_id: str
    mlflow: bool
    start_step: int  # the step the driver resumed at (its Ray dataset starts there)
    hooks: tuple = ()  # omg_platform.pipelines.train_hooks callbacks
    report: bool = False  # every validation's metrics to ray.train.report (a Tune trial's scheduler reads them)

    @property
    def run_dir(self) -> str:
        return uio.join(self.storage, self.name)


def train_loop_per_worker(loop_config: dict) -> None:
    import logging

    import ray.train
    import ray.train.torch
    import torch

    from omg.data.ingest import BatchBuilder
    from omg.losses.criterion import Criterion
    from omg.modeling.model import build_model
    from omg.modeling.text import TextEmbedder
    from omg.modeling.variants import get_variant
    from omg.training.optim import build_optimizer, build_scheduler
    from omg.training.step import train_step
    from omg_platform.pipelines.train_hooks import Checkpointing, HookContext, ProgressLog, StepState, Validation
    from omg_platform.tracking import TrainingTracker

    logging.getLogger().setLevel(logging.WARNING)  # open_clip narrates every model build at INFO
    spec: WorkerSpec = loop_config["spec"]
    cfg, label_space = spec.config, spec.label_space
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup_logging("joint_train", rank=rank)  # rank 0 says what it does; the others only warnings and errors
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    torch.manual_seed(cfg.seed * 1000 + rank)
    np.random.seed(cfg.seed * 1000 + rank)
    random.seed(cfg.seed * 1000 + rank)

    # ---- build (fine-tuning starts from init_from's weights; a resume overrides them below)
    model = build_model(cfg.model)
    clip_source = cfg.model.pretrained or None  # where the CLIP's weights came from (the checkpoint records it)
    if cfg.model.init_from:
        from omg.modeling.checkpoint import clip_weights, init_weights

        clip_source = clip_weights(cfg.model, init_weights(model, cfg.model.init_from))
    model = model.to(device)
    text = TextEmbedder(model.backbone).embed(label_space.vocabulary).to(device)
    builder = BatchBuilder(spec.ingest, label_space)
    steps_per_epoch = builder.steps_per_epoch(world)
    if steps_per_epoch == 0:
        raise ValueError("an epoch has no batch for this worker: more data, a smaller batch or fewer workers")
    total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
    variant = get_variant(cfg.model.variant)
    lr_mult = cfg.optim.backbone_lr_mult if cfg.optim.backbone_lr_mult is not None else variant.lr_mult
    optimizer = build_optimizer(model, cfg.optim, cfg.data.batch_size * world, lr_mult)
    scheduler = build_scheduler(optimizer, cfg.optim, steps_per_epoch, total)

    # ---- resume (the newest complete checkpoint of this run, if any)
    checkpointer = Checkpointer(spec.run_dir, rank, world, cfg.checkpoint.num_to_keep, barrier=_barrier(world))
    step, run_id = 0, None
    latest = checkpointer.latest()
    if latest is not None:
        restored = checkpointer.restore(latest, model, optimizer, scheduler)
        step, run_id = restored.step, restored.mlflow_run_id
        if rank == 0:
            log.info(
                f"[train] resumed from the checkpoint of step {step} ({latest.uri})"
                + ("" if restored.rng_restored else "; written by fewer workers: this rank's RNG starts fresh")
            )
    checkpointer.clean()  # collective: rank 0 removes folders a crash left incomplete
    model = ray.train.torch.prepare_model(model)
    inner = model.module if hasattr(model, "module") else model
    criterion = Criterion(num_points=cfg.optim.num_points, reduce_fn=_mean_over_workers(world))
    amp = cfg.amp == "auto" and device.type == "cuda"

    # ---- the hooks: the user's, then logging, validation, checkpoints (omg_platform/pipelines/train_hooks.py)
    report = ray.train.report if spec.report else None
    tracker = TrainingTracker(spec, rank, run_id, resumed=step > 0)
    validation = Validation(cfg.validation.every_steps, lambda m, s: validate(spec, tracker, m, s), report)
    hook_ctx = HookContext(rank=rank, world_size=world, run_dir=spec.run_dir)
    hooks = [
        *spec.hooks,
        ProgressLog(cfg.tracking.log_every, steps_per_epoch, tracker.log, start_step=step),
        validation,
        Checkpointing(cfg.checkpoint.every_steps, lambda s, m, o, sc: checkpointer.save(s, m, o, sc, tracker.run_id)),
    ]
    try:
        # ---- train
        if cfg.data.ingest == "ray":
            from omg_platform.pipelines.ingest import iter_shard_batches

            batches = iter_shard_batches(ray.train.get_dataset_shard("train"))
            # the driver's dataset starts at the step it saw; after a restart inside this fit, skip to ours
            batches = itertools.islice(batches, max(0, step - spec.start_step), None)
        else:
            batches = local_batches(builder, step, total, rank, world, cfg.data.loader_workers)
        for hook in hooks:
            hook.on_start(hook_ctx)
        state = StepState(step, total, {}, 0, inner, optimizer, scheduler)
        for batch in batches:
            if step >= total:
                break
            for hook in hooks:
                hook.on_step_begin(hook_ctx, step)
            stats = train_step(
                model,
                batch,
                text,
                criterion,
                optimizer,
                scheduler,
                cfg.optim.grad_clip,
                device,
                amp,
                refine_rounds=cfg.data.refine_rounds,
            )
            for hook in hooks:
                hook.on_step_end(hook_ctx, step, batch)
            step += 1
            state = StepState(step, total, stats, len(batch["images"]) * world, inner, optimizer, scheduler)
            for hook in hooks:
                hook.after_step(hook_ctx, state)
        for hook in hooks:
            hook.on_end(hook_ctx, state)
        # ---- evaluate + export
        final = {}
        if rank == 0:
            final = validate(spec, tracker, inner, step)
            export(spec, tracker, inner, step, clip_source)
        if report is not None:
            report(validation.result(step, final))
        tracker.finish("FINISHED")
    except BaseException:
        tracker.finish("FAILED")
        raise


def _mean_over_workers(world: int):
    """The criterion's normalisers averaged over the workers (None with one worker)."""
    if world == 1:
        return None
    import torch
    import torch.distributed as dist

    def reduce_fn(x: torch.Tensor) -> torch.Tensor:
        y = x.detach().clone().float()
        dist.all_reduce(y)
        return y / world

    return reduce_fn


def inference_metadata(spec: WorkerSpec) -> dict:
    """What a predictor reads of the run (the checkpoint's metadata; the live model's at validation): the training
    vocabulary, the test-time resize, the zoom-in of corrections."""
    zoom = spec.config.data.zoom_in
    return {
        "label_space": spec.label_space.to_dict(),
        "test_size": list(spec.config.data.test_size),
        "zoom_in": None if zoom is None else to_dict(zoom),
    }


def validate(spec: WorkerSpec, tracker, inner, step: int) -> dict:
    """Rank 0: the validation pairs on the live model (their first ``validation.limit`` samples), written under
    ``<run_dir>/val/step<N>/`` and logged as ``val/<dataset>/<metric>`` at ``step`` (only with MLflow on)."""
    cfg = spec.config
    if not tracker.active or not cfg.validation.pairs:
        return {}
    from omg.evaluation.runner import evaluate_pair
    from omg.inference.predictor import OMGPredictor
    from omg_platform.tracking import metric_key

    inner.eval()
    catalog = load_catalog()
    predictor = OMGPredictor(inner, inference_metadata(spec))
    out = {}
    try:
        for pair in cfg.validation.pairs:
            name, split, task = pair.split(":")
            r = evaluate_pair(
                "<live model>",
                catalog[name],
                split,
                task,
                spec.val_root.get(name),
                uio.join(spec.run_dir, "val", f"step{step}", name, split, task),
                limit=cfg.validation.limit,
                predictor=predictor,
            )
            for k, v in r.metrics.items():
                if v == v:
                    out[metric_key("val", name, k)] = v
            log.info(
                f"[val] step {step} {name}/{split}/{task}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in list(r.metrics.items())[:4])
            )
    finally:
        inner.train()
    tracker.log_metrics(out, step)
    return out


def export(spec: WorkerSpec, tracker, inner, step: int, clip_source: str | None) -> None:
    """Rank 0: the self-describing checkpoint ``<run_dir>/model.pt`` (model config, weights, training vocabulary,
    test size, the run), the MLflow model (``tracking.log_model``, registered as ``tracking.register_as``), and
    ``<run_dir>/run.json`` saying where both are (and the node rank 0 ran on)."""
    from omg.modeling.checkpoint import save_checkpoint

    cfg = spec.config
    uri = uio.join(spec.run_dir, "model.pt")
    meta = {
        **inference_metadata(spec),
        "train_config": config_dict(cfg),
        "step": step,
        "mlflow_run_id": tracker.run_id,
        "run_name": spec.name,
        "clip_weights": clip_source,
    }
    save_checkpoint(inner, uri, meta)
    log.info(f"[train] exported {uri}")
    import ray

    record = {
        "model": uri,
        "mlflow_run_id": tracker.run_id,
        "step": step,
        "node": ray.util.get_node_ip_address(),  # where rank 0 trained
        **tracker.log_model(uri),
    }
    uio.write_json(uio.join(spec.run_dir, "run.json"), record)


def _barrier(world: int):
    if world == 1:
        return lambda: None
    import torch.distributed as dist

    return dist.barrier


def local_batches(builder, step: int, total: int, rank: int, world: int, loader_workers: int):
    """This worker's deterministic batches from ``step`` on (epoch plans in order; exact resume).

    Epochs are walked by their real plan lengths: with fractional repeat factors an epoch's plan
    can be a few batches shorter or longer than another's (and than the schedule's estimate)."""
    import torch

    from omg.data.ingest import PlanDataset

    def plan(epoch: int) -> PlanDataset:
        ds = PlanDataset(builder, epoch, rank, world)
        if len(ds) == 0:
            raise ValueError(
                f"epoch {epoch} has no batch for worker {rank} of {world}: too little data for "
                "the batch size and worker count"
            )
        return ds

    epoch, offset = 0, step
    ds = plan(epoch)
    while offset >= len(ds):  # the epoch and position of ``step``
        offset -= len(ds)
        epoch += 1
        ds = plan(epoch)
    while step < total:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, list(range(offset, len(ds)))),
            batch_size=None,
            num_workers=loader_workers,
            prefetch_factor=2 if loader_workers else None,
        )
        for batch in loader:
            yield batch
            step += 1
            if step >= total:
                return
        epoch, offset = epoch + 1, 0
        ds = plan(epoch)


# ============================================================================= the driver


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="joint_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a YAML run config (omg_platform/pipelines/configs/)")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. optim.max_steps=100 scaling.num_workers=2")
    p.add_argument("--smoke-test", action="store_true", help="4 steps, checkpoints every 2, tiny validation")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument("--no-mlflow", action="store_true", help="no MLflow logging")
    p.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="MODULE:NAME[:KEY=VALUE,...]",
        help="a training-loop callback (omg_platform/pipelines/train_hooks.py), e.g. "
        "omg_platform.pipelines.train_hooks:FaultInjection:step=100,mode=kill; repeatable",
    )
    return p


@dataclass(frozen=True)
class Prepared:
    """What the driver settled before Ray starts: the config, the run's name and storage, the data."""

    config: TrainConfig
    name: str
    storage: str
    specs: list
    manifests: dict[str, dict]
    label_space: LabelSpace
    ingest: IngestConfig
    val_root: dict[str, str]
    hooks: tuple


def prepare(args: argparse.Namespace) -> Prepared:
    """The config (overrides applied, locations as every node sees them), the fine-tuning checkpoint's fit, the
    datasets' manifests and label space, the validation roots, the hooks, and the storage's first file. A mistake
    in what was asked raises :class:`~omg_platform.errors.UsageError`; a storage that takes no file, ``OSError``."""
    try:
        cfg = load_config(args.config, list(args.overrides) + (SMOKE_OVERRIDES if args.smoke_test else []))
        hooks = tuple(parse_hook(h) for h in args.hook)
    except (SchemaError, ValueError) as err:
        raise UsageError(err) from None
    return prepare_run(cfg, Path(args.config).stem, hooks)


def prepare_run(cfg: TrainConfig, stem: str = "omg", hooks: tuple = ()) -> Prepared:
    """:func:`prepare` for a config already built (an ablation trial's): the run is named ``cfg.name``, else
    ``<stem>-<digest>``."""
    from omg.data.ingest import build_label_space

    try:
        cfg = shared_locations(cfg)
    except ValueError as err:
        raise UsageError(err) from None
    if cfg.model.init_from:  # fine-tuning: the checkpoint's architecture must be this config's
        from omg.modeling.checkpoint import config_differences

        try:
            diffs = config_differences(cfg.model, cfg.model.init_from)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"model.init_from: {err}") from None
        if diffs:
            raise UsageError(
                f"model.init_from={cfg.model.init_from}: the model section must be the checkpoint's: {'; '.join(diffs)}"
            )
        log.info(f"[train] starting from the weights of {cfg.model.init_from}")
    name, storage = cfg.run_name(stem), cfg.checkpoint.storage_path
    log.info(f"[train] run {name} (storage {storage})")
    log.info("[train] resolved config:\n" + json.dumps(config_dict(cfg), indent=1))
    try:
        specs, manifests = resolve_datasets(cfg)
    except (SchemaError, FileNotFoundError, ValueError) as err:
        raise UsageError(err) from None
    catalog = load_catalog()
    val_root = {}
    for pair in cfg.validation.pairs:
        ds = pair.split(":")[0]
        if ds not in catalog:
            raise UsageError(f"validation pair {pair!r}: no catalog dataset {ds!r}")
        try:
            val_root[ds] = shared_location(catalog[ds].resolve_root(), f"the root of {ds}")
        except ValueError as err:
            raise UsageError(f"validation pair {pair!r}: {err}") from None
    # the storage must take our files before any worker starts: a read-only or full disk is said here
    uio.write_json(uio.join(storage, name, "config.json"), config_dict(cfg))
    return Prepared(
        cfg, name, storage, specs, manifests, build_label_space(manifests), ingest_config(cfg, specs), val_root, hooks
    )


def build_trainer(run: Prepared, mlflow: bool = True, callbacks: tuple = (), report: bool = False):
    """The run's :func:`~omg_platform.pipelines.cluster.torch_trainer` (Ray must be up): its Ray dataset (``ray``
    ingest) starting at the step of the newest complete checkpoint, the workers' spec, scaling and storage.
    ``callbacks``: Ray Train callbacks (a Tune trial's ``TuneReportCallback``); ``report``: the workers report every
    validation's metrics and ``step`` with ``ray.train.report`` (what a Tune scheduler decides on)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    cfg, name, storage = run.config, run.name, run.storage
    # ---- resume (the same record the workers read: the newest complete checkpoint of this run)
    latest = Checkpointer(uio.join(storage, name)).latest()
    start = latest.step if latest else 0
    if start:
        log.info(f"[train] resuming {name} from step {start}: the newest complete checkpoint ({latest.uri})")
    datasets = {}
    if cfg.data.ingest == "ray":
        from omg.data.ingest import BatchBuilder
        from omg_platform.pipelines.ingest import ray_training_dataset

        per_epoch = BatchBuilder(run.ingest, run.label_space).steps_per_epoch(cfg.scaling.num_workers)
        total = cfg.optim.max_steps or cfg.optim.epochs * per_epoch
        datasets["train"] = ray_training_dataset(
            run.ingest,
            run.label_space,
            epochs=-(-total // max(per_epoch, 1)),
            concurrency=cfg.data.ray_data_concurrency,
            rows=(start * cfg.scaling.num_workers, total * cfg.scaling.num_workers),
        )
    spec = WorkerSpec(
        config=cfg,
        label_space=run.label_space,
        ingest=run.ingest,
        name=name,
        storage=storage,
        manifests=run.manifests,
        git_commit=git_commit(),
        val_root=run.val_root,
        ray_job_id=os.environ.get("RAY_JOB_ID") or ray.get_runtime_context().get_job_id(),
        mlflow=mlflow,
        start_step=start,
        hooks=run.hooks,
        report=report,
    )
    return torch_trainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
            worker_runtime_env={"env_vars": worker_env()},
            callbacks=list(callbacks) or None,
        ),
        datasets=datasets or None,
    )


def main(argv: list[str] | None = None) -> int:
    setup_logging("joint_train")
    # ---- setup
    apply_env_defaults()
    args = build_parser().parse_intermixed_args(argv)  # KEY=VALUE and --options in any order
    try:
        run = prepare(args)
    except UsageError as err:
        return usage_error("joint_train", err)
    except OSError as err:
        return fail("joint_train", err)
    cfg, name, storage = run.config, run.name, run.storage
    owned = init_ray(args.num_cpus)
    trainer = build_trainer(run, mlflow=not args.no_mlflow)

    # ---- train (Ctrl-C or SIGTERM: a clean stop, the MLflow run marked KILLED, a relaunch resumes)
    def interrupted() -> str:
        latest = tidy_checkpoints(storage, name)  # one the interrupt caught mid-write leaves no orphan folder
        mark_interrupted(cfg, name, storage, args.no_mlflow)
        return (
            f"the same command resumes {name} from step {latest.step if latest else 0} (its newest complete checkpoint)"
        )

    t0 = time.monotonic()
    rc = run_trainer(trainer, owned, "joint_train", interrupted, on_failure=lambda: tidy_checkpoints(storage, name))
    if rc:
        return rc
    record = uio.join(storage, name, "run.json")
    info = uio.read_json(record) if uio.exists(record) else {}
    print(
        json.dumps(
            {
                "run": name,
                "step": info.get("step"),
                "model": info.get("model"),
                "mlflow_run_id": info.get("mlflow_run_id"),
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
    )
    return 0


def tidy_checkpoints(storage: str, name: str):
    """After the workers are gone: remove checkpoint folders left incomplete; -> the newest complete one."""
    checkpointer = Checkpointer(uio.join(storage, name))
    try:
        checkpointer.clean()
        return checkpointer.latest()
    except OSError as err:  # the storage itself failed: that error is reported by the caller
        log.warning(f"could not tidy {checkpointer.root}: {err}")
        return None


def mark_interrupted(cfg: TrainConfig, name: str, storage: str, no_mlflow: bool) -> None:
    """The MLflow run of this name and storage, left RUNNING by the killed workers, becomes KILLED."""
    if no_mlflow:
        return
    try:
        import mlflow

        from omg_platform.tracking import setup

        setup(cfg.tracking.experiment, cfg.tracking.tracking_uri)
        runs = mlflow.search_runs(
            filter_string=f"tags.`omg.run_name` = '{name}' and tags.`omg.storage` = "
            f"'{storage}' and attributes.status = 'RUNNING'",
            output_format="list",
        )
        for run in runs:
            mlflow.MlflowClient().set_terminated(run.info.run_id, "KILLED")
    except Exception as err:  # noqa: BLE001 - the interrupt must not turn into a traceback
        log.warning(f"could not mark the MLflow run KILLED ({type(err).__name__}: {err})")


if __name__ == "__main__":
    sys.exit(main())
