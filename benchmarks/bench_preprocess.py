"""Preprocessing throughput: rows/s of omg_platform/pipelines/preprocess.py with 1 vs 2 concurrent Ray Data workers.

    python benchmarks/bench_preprocess.py --images 400 --image-size 256

Generates omg-shapes (cached under --work), then shards its image train split twice into
fresh folders, once with ``--num-workers 1`` and once with 2, in one local Ray (2 CPUs).
Time is the Ray Data job (listing, loading, validating, encoding Parquet, writing), without
``ray.init`` and after a warm-up run that starts both worker processes. Prints rows/s of both and the speed-up
(target >= 1.6x on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

from omg.env import runs_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=runs_dir("bench-preprocess"))
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--json-out", help="also write the figures to this JSON file (used by omg_platform/pipelines/nightly.py)"
    )
    args = p.parse_args(argv)

    import ray

    from omg.data.catalog import get_entry
    from omg.data.synthetic import SynthOptions, generate
    from omg.env import apply_env_defaults
    from omg_platform.pipelines.cluster import init_ray
    from omg_platform.pipelines.preprocess import preprocess_split

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
    init_ray(num_cpus=2)
    entry = get_entry("omg-shapes")
    rates: dict[int, list[float]] = {1: [], 2: []}
    # warm-up: start both worker processes (and their imports) before anything is timed
    warm = os.path.join(args.work, "out-warm")
    preprocess_split(
        entry,
        "train",
        warm,
        data,
        shard_size=args.shard_size,
        concurrency=2,
        progress=False,
        log=lambda _: None,
        limit=4 * args.shard_size,
    )
    shutil.rmtree(warm, ignore_errors=True)
    for r in range(args.repeats):
        for workers in (1, 2):
            out = os.path.join(args.work, f"out-{workers}-{r}")
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            m = preprocess_split(
                entry,
                "train",
                out,
                data,
                shard_size=args.shard_size,
                concurrency=workers,
                progress=False,
                log=lambda _: None,
            )
            rates[workers].append(m["rows"] / (time.perf_counter() - t0))
            shutil.rmtree(out, ignore_errors=True)
    ray.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"omg-shapes images/train: {args.images} rows of {args.image_size}px, shards of {args.shard_size}")
    for k in (1, 2):
        print(f"  {k} worker(s): {med[k]:7.1f} rows/s  {[round(x, 1) for x in rates[k]]}")
    print(f"  speed-up 2 vs 1 workers: {med[2] / med[1]:.2f}x (target >= 1.6x)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows_per_s_1": med[1], "rows_per_s_2": med[2], "speedup_2v1": med[2] / med[1]}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
