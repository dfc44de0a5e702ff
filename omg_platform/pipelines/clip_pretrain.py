"""CLIP pretraining as a pipeline stage: a Ray Train job that trains a tiny open_clip model on the omg-shapes captions
(``omg/training/clip_pretrain.py``: open_clip's own loss), tracked in MLflow (the loss every step; zero-shot image ->
caption and caption -> image accuracy on the val captions, the model's before and after), and writes weights that
``model.pretrained=PATH`` accepts like any other local open_clip weights.

    python -m omg_platform.pipelines.clip_pretrain --root runs/data/omg-shapes --variant tiny_convnext --steps 400 \\
        --out runs/clip/tiny_convnext.pt
    ray job submit --working-dir . -- python -m omg_platform.pipelines.clip_pretrain ...      # on a cluster

A finished output (the weights and their ``.json`` record, with the same root, variant and settings) is not trained
again: the command says so and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from omg.env import apply_env_defaults, runs_dir
from omg.training.clip_pretrain import ClipPretrainConfig
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg_platform.errors import usage_error

log = get_logger(__name__)

EXPERIMENT = "clip-pretrain"


def train_loop_per_worker(loop_config: dict) -> None:
    import logging

    import ray.train
    import ray.train.torch
    import torch

    from omg.training.clip_pretrain import (
        CaptionPairs,
        build_clip,
        pretrain,
        retrieval_accuracy,
        save_weights,
    )

    # Ray Train echoes a worker's print through the root logger when that logs INFO: one line each, not two (and
    # open_clip narrates at INFO), as joint_train's workers do
    logging.getLogger().setLevel(logging.WARNING)
    config: ClipPretrainConfig = loop_config["config"]
    root, out, track = loop_config["root"], loop_config["out"], loop_config["mlflow"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    setup_logging("clip_pretrain", rank=rank)
    torch.set_num_threads(max(1, int(loop_config["threads"])))
    model, tokenizer = build_clip(config.variant, config.seed)
    val = CaptionPairs(root, "val", config.variant)
    before = retrieval_accuracy(model, tokenizer, val) if rank == 0 else None
    ddp = ray.train.torch.prepare_model(model) if world > 1 else model
    run = None
    if rank == 0 and track:
        import mlflow

        from omg_platform.tracking import setup

        setup(EXPERIMENT, loop_config["tracking_uri"])
        run = mlflow.start_run(
            run_name=f"clip-{config.variant}", tags={"omg.kind": "clip-pretrain", **loop_config["tags"]}
        )
        mlflow.log_params(
            {
                **{f"clip.{k}": v for k, v in dataclasses.asdict(config).items()},
                "clip.workers": world,
                "clip.root": root,
                "clip.out": out,
            }
        )
        mlflow.log_metrics({f"val/{k}": v for k, v in before.items() if k != "n"}, step=0)
    t0 = time.monotonic()

    def on_step(step: int, loss: float) -> None:
        if rank != 0:
            return
        if run is not None:
            import mlflow

            mlflow.log_metric("train/loss", loss, step=step)
        if step == 1 or step % 25 == 0 or step == config.steps:
            rate = step / max(time.monotonic() - t0, 1e-9)
            eta = (config.steps - step) / max(rate, 1e-9)
            log.info(
                f"[clip] step {step}/{config.steps} ({100 * step // config.steps}%) loss {loss:.3f} "
                f"{rate * config.batch_size * world:.1f} pairs/s ETA {eta:.0f}s"
            )

    trained, tokenizer, losses = pretrain(config, root, rank, world, model=ddp, on_step=on_step)
    if rank == 0:
        after = retrieval_accuracy(trained, tokenizer, val)
        save_weights(trained, out)
        record = {
            "config": dataclasses.asdict(config),
            "root": root,
            "workers": world,
            "steps": config.steps,
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "val_before": before,
            "val_after": after,
            "mlflow_run_id": run.info.run_id if run is not None else None,
            "seconds": round(time.monotonic() - t0, 1),
        }
        uio.write_json(out + ".json", record)
        if run is not None:
            import mlflow

            mlflow.log_metrics({f"val/{k}": v for k, v in after.items() if k != "n"}, step=config.steps)
            mlflow.log_artifact(out + ".json")
            mlflow.end_run()
        log.info(
            f"[clip] val zero-shot image->caption {100 * before['image_to_text']:.1f}% -> "
            f"{100 * after['image_to_text']:.1f}% (chance {100 / after['n']:.1f}%); weights {out}"
        )


def build_parser() -> argparse.ArgumentParser:
    d = ClipPretrainConfig()
    p = argparse.ArgumentParser(prog="clip_pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--root",
        default=os.path.join(runs_dir("data"), "omg-shapes"),
        help="the omg-shapes root with captions/ (omg data captions --root ROOT)",
    )
    p.add_argument("--variant", default=d.variant, help=f"a tiny backbone variant (default {d.variant})")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per worker")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--region-weight",
        type=float,
        default=d.region_weight,
        help="the region loss on the captions' panoptic regions (omg/training/clip_pretrain.py; default "
        f"{d.region_weight}: the image-level CLIP recipe)",
    )
    p.add_argument("--region-images", type=int, default=d.region_images, help="images per step in the region loss")
    p.add_argument("--region-size", type=int, default=d.region_size, help="their size (the segmenter's test size)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    p.add_argument("--cpus-per-worker", type=int, default=2)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--out", default=None, help="the weights' path (default: runs/clip/<variant>.pt)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/)")
    p.add_argument("--no-mlflow", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("clip_pretrain")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    try:
        # every field the command line sets (the rest: the config's defaults)
        config = ClipPretrainConfig(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(ClipPretrainConfig) if hasattr(args, f.name)}
        )
        from omg.training.clip_pretrain import CaptionPairs, CaptionRegions

        root = str(Path(args.root).resolve()) if "://" not in args.root else args.root
        # a missing or broken file: said before Ray starts
        pairs = {split: CaptionPairs(root, split, config.variant) for split in ("train", "val")}
        if config.region_weight > 0:
            CaptionRegions(root, "train", pairs["train"])
    except (ValueError, FileNotFoundError, KeyError) as err:
        return usage_error("clip_pretrain", err)
    out = args.out or os.path.join(runs_dir("clip"), f"{config.variant}.pt")
    out = str(Path(out).resolve()) if "://" not in out else out
    record_uri = out + ".json"
    if uio.exists(out) and uio.exists(record_uri):
        old = uio.read_json(record_uri)
        if old.get("config") == dataclasses.asdict(config) and old.get("root") == root:
            log.info(
                f"[clip] {out} is already trained with these settings (val image->caption "
                f"{100 * old['val_after']['image_to_text']:.1f}%); nothing to do"
            )
            print(json.dumps({"weights": out, **{k: old[k] for k in ("val_before", "val_after", "mlflow_run_id")}}))
            return 0
    from ray.train import RunConfig, ScalingConfig

    from omg_platform.pipelines.cluster import init_ray, run_trainer, torch_trainer, worker_env

    owned = init_ray(args.num_cpus)
    storage = str(Path(runs_dir("clip")).resolve())
    trainer = torch_trainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config,
            "root": root,
            "out": out,
            "mlflow": not args.no_mlflow,
            "tracking_uri": args.tracking_uri,
            "threads": args.cpus_per_worker,
            "tags": {"omg.ray_job_id": os.environ.get("RAY_JOB_ID", "")},
        },
        scaling_config=ScalingConfig(num_workers=args.workers, resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=RunConfig(
            name=f"clip-{config.variant}", storage_path=storage, worker_runtime_env={"env_vars": worker_env()}
        ),
    )
    rc = run_trainer(trainer, owned, "clip_pretrain", lambda: "nothing was written (the same command starts again)")
    if rc:
        return rc
    record = uio.read_json(record_uri)
    print(json.dumps({"weights": out, **{k: record[k] for k in ("val_before", "val_after", "mlflow_run_id")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
