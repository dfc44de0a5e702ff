"""Object storage vs the local disk: preprocessing rows/s and training-ingest samples/s with the data on S3.

    python benchmarks/bench_storage.py --images 400 --image-size 256

Starts an S3 server on loopback (SeaweedFS, as the cluster test does: tests/services.py), generates omg-shapes
(cached under --work) and copies it into a bucket, then, interleaved over --repeats rounds in one local Ray
(2 CPUs):

- preprocessing: ``preprocess_split`` of images/train, source and shards on the local disk vs both on S3;
- training ingest: ``BatchBuilder.example`` (Parquet shard reads, decode, augmentation, targets) over shards on
  the local disk vs the same shards on S3, after a warm-up that reads every shard once per side (the reader
  keeps a few decoded shards in memory: the steady state of an epoch).

Prints the medians and the ratio S3 / local of each (1.0: object storage costs nothing). Loopback S3 has no
network latency; a real bucket adds its round trips, which the preprocessing's per-file reads feel most.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: F401 - puts the repository on sys.path (tests.services)

from omg.env import runs_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=runs_dir("bench-storage"))
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=50)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from omg.data.catalog import Sampling, get_entry
    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig
    from omg.data.synthetic import SynthOptions, generate
    from omg.env import apply_env_defaults
    from omg.utils import io as uio
    from omg_platform.pipelines.cluster import init_ray
    from omg_platform.pipelines.preprocess import preprocess_split
    from tests.services import S3Server, running

    apply_env_defaults()
    data = os.path.join(args.work, f"shapes-{args.image_size}-{args.images}")
    generate(
        data,
        seed=0,
        opts=SynthOptions(
            image_size=args.image_size,
            num_train_images=args.images,
            num_val_images=0,
            num_val_ov_images=0,
            num_train_videos=0,
            num_val_videos=0,
        ),
        progress=False,
    )
    entry = get_entry("omg-shapes")
    with tempfile.TemporaryDirectory(prefix="omg-bench-s3-") as tmp, running(S3Server(Path(tmp) / "s3", "bench")) as s3:
        os.environ.update(s3.env)
        t0 = time.perf_counter()
        uio.put_tree(data, "s3://bench/data")
        upload = time.perf_counter() - t0
        init_ray(num_cpus=2)
        sides = {"local": (data, os.path.join(tmp, "shards")), "s3": ("s3://bench/data", "s3://bench/shards")}
        # warm-up: both Ray workers started, s3fs clients made
        for root, out in sides.values():
            preprocess_split(
                entry,
                "train",
                out + "-warm",
                root,
                shard_size=args.shard_size,
                concurrency=2,
                progress=False,
                log=lambda _: None,
                limit=2 * args.shard_size,
            )
        rows: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.repeats):
            for side, (root, out) in sides.items():
                target = f"{out}-{r}"
                t0 = time.perf_counter()
                m = preprocess_split(
                    entry,
                    "train",
                    target,
                    root,
                    shard_size=args.shard_size,
                    concurrency=2,
                    progress=False,
                    log=lambda _: None,
                )
                rows[side].append(m["rows"] / (time.perf_counter() - t0))
        # training ingest over the shards of round 0 on each side
        seeds = np.random.default_rng(0).integers(0, 2**31 - 1, args.samples)
        builders = {}
        for side, (_, out) in sides.items():
            cfg = IngestConfig(
                crop_size=(args.crop, args.crop),
                batch_size=1,
                datasets=(
                    DatasetSpec("omg-shapes", uio.join(f"{out}-0", "omg-shapes", "train"), Sampling(1.0, "image")),
                ),
            )
            b = BatchBuilder(cfg)
            n = len(b.reader("omg-shapes"))
            for i in range(n):  # warm-up: every shard read once
                b.example("omg-shapes", i, 0)
            builders[side] = (b, n)
        samples: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.repeats):
            for side, (b, n) in builders.items():
                t0 = time.perf_counter()
                for i in range(args.samples):
                    b.example("omg-shapes", i % n, int(seeds[i]))
                samples[side].append(args.samples / (time.perf_counter() - t0))
    med_rows = {k: statistics.median(v) for k, v in rows.items()}
    med_samples = {k: statistics.median(v) for k, v in samples.items()}
    print(
        f"omg-shapes images/train: {args.images} rows of {args.image_size}px, shards of {args.shard_size}; "
        f"copied into the bucket in {upload:.1f} s"
    )
    print("preprocessing (2 Ray workers), rows/s:")
    for k in sides:
        print(f"  {k:5s} {med_rows[k]:7.1f}  {[round(x, 1) for x in rows[k]]}")
    print(f"  ratio s3/local: {med_rows['s3'] / med_rows['local']:.2f}x")
    print(f"training ingest (one process, crop {args.crop}), samples/s:")
    for k in sides:
        print(f"  {k:5s} {med_samples[k]:7.1f}  {[round(x, 1) for x in samples[k]]}")
    print(f"  ratio s3/local: {med_samples['s3'] / med_samples['local']:.2f}x")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"preprocess_rows_per_s": med_rows, "ingest_samples_per_s": med_samples}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
