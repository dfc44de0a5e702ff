"""Training-ingest benchmarks: samples/s from shards vs from the official files, and peak memory.

Baseline ("files"): the straightforward loader a COCO-panoptic training script would write
with PIL + pycocotools-style masks: parse the panoptic JSON once, then per sample open the
JPEG and the PNG from disk, decode both at full size, build one boolean mask per segment,
and run the *same* augmentation (resize, flip, crop) on the image and every mask.

Ours ("shards"): ``omg.data.ingest.BatchBuilder`` reading the Parquet shards written by
``omg_platform/pipelines/preprocess.py``: the same samples, the same augmentation draws, decoding the
JPEG at the scale the augmentation needs and pushing one id map (not S masks) through it.

    python benchmarks/bench_ingest.py --image-size 512 --crop 384 --samples 150

Generates omg-shapes at the requested size (cached under --work), preprocesses it (Ray, 2
CPUs), and prints samples/s for both, their ratio (target >= 2x), and the peak RSS of the
shard ingest measured in a separate process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from omg.env import runs_dir


def naive_loader(root: str, crop: int, resize_range):
    from omg.data.masks import rgb2id
    from omg.data.transforms import Augment, apply, draw

    doc = json.load(open(os.path.join(root, "annotations/panoptic_train.json")))
    images = {im["id"]: im for im in doc["images"]}
    anns = sorted(doc["annotations"], key=lambda a: str(a["image_id"]))
    aug = Augment((crop, crop), resize_range)

    def load(i: int, seed: int):
        rng = np.random.default_rng(seed)
        ann = anns[i]
        im = images[ann["image_id"]]
        frame = np.array(Image.open(os.path.join(root, "images/train", im["file_name"])).convert("RGB"))
        pan = rgb2id(
            np.array(Image.open(os.path.join(root, "annotations/panoptic_train", ann["file_name"])).convert("RGB"))
        )
        segs = [s for s in ann["segments_info"] if not s["iscrowd"]]
        masks = np.stack([pan == s["id"] for s in segs])[:, None]
        p = draw(aug, frame.shape[:2], 1, rng)
        f, m = apply(p, aug.crop, frame[None], masks)
        return f, m

    return load, len(anns)


def measure(fn, n: int, seeds) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i, int(seeds[i]))
    return n / (time.perf_counter() - t0)


def shard_builder(shards: str, crop: int, resize_range):
    from omg.data.catalog import Sampling
    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig

    cfg = IngestConfig(
        crop_size=(crop, crop),
        batch_size=1,
        datasets=(
            DatasetSpec(
                "omg-shapes", os.path.join(shards, "omg-shapes/train"), Sampling(1.0, "image", tuple(resize_range))
            ),
        ),
    )
    b = BatchBuilder(cfg)
    return (lambda i, s: b.example("omg-shapes", i, s)), len(b.reader("omg-shapes"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=runs_dir("bench-ingest"))
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--max-things", type=int, default=12)
    p.add_argument("--crop", type=int, default=384)
    p.add_argument("--resize", type=float, nargs=2, default=(0.8, 2.0))
    p.add_argument("--samples", type=int, default=150)
    p.add_argument(
        "--json-out", help="also write the figures to this JSON file (used by omg_platform/pipelines/nightly.py)"
    )
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    data = os.path.join(args.work, f"shapes-{args.image_size}-{args.images}")
    shards = os.path.join(args.work, f"shards-{args.image_size}-{args.images}")
    if args.memory_child:  # peak RSS of the shard ingest alone, and after the imports only
        import omg.data.ingest  # noqa: F401  (torch, pyarrow, PIL)

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(base)
        fn, n = shard_builder(shards, args.crop, args.resize)
        seeds = np.random.default_rng(0).integers(0, 2**31 - 1, args.samples)
        for i in range(args.samples):
            fn(i % n, int(seeds[i]))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        return 0
    from omg.data.synthetic import SynthOptions, generate
    from omg.env import apply_env_defaults

    apply_env_defaults()
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
            max_things=args.max_things,
        ),
        progress=False,
    )
    subprocess.run(
        [
            sys.executable,
            "omg_platform/pipelines/preprocess.py",
            "--dataset",
            "omg-shapes",
            "--split",
            "train",
            "--root",
            data,
            "--out",
            shards,
            "--quiet",
            "--num-cpus",
            "2",
        ],
        check=True,
    )  # no-op when up to date
    seeds = np.random.default_rng(0).integers(0, 2**31 - 1, args.samples)
    n = min(args.samples, args.images)
    files_fn, _ = naive_loader(data, args.crop, args.resize)
    shard_fn, _ = shard_builder(shards, args.crop, args.resize)
    files_fn(0, 0), shard_fn(0, 0)  # warm up (imports, first shard read)
    rates = {"files": [], "shards": []}
    for _ in range(3):  # interleaved repeats
        rates["files"].append(measure(files_fn, n, seeds))
        rates["shards"].append(measure(shard_fn, n, seeds))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    base, peak = map(
        int,
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                "--work",
                args.work,
                "--image-size",
                str(args.image_size),
                "--images",
                str(args.images),
                "--crop",
                str(args.crop),
                "--samples",
                str(args.samples),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(),
    )
    print(f"omg-shapes {args.image_size}px, crop {args.crop}, resize {tuple(args.resize)}, {n} samples x 3 repeats")
    print(
        f"  official files (PIL, per-segment masks): {med['files']:7.1f} samples/s  "
        f"{[round(r, 1) for r in rates['files']]}"
    )
    print(
        f"  shards (omg ingest):                     {med['shards']:7.1f} samples/s  "
        f"{[round(r, 1) for r in rates['shards']]}"
    )
    print(f"  ratio shards/files: {med['shards'] / med['files']:.2f}x (target >= 2x)")
    print(
        f"  peak RSS of the shard ingest process: {peak} MiB ({base} MiB after importing torch/pyarrow/PIL, "
        f"+{peak - base} MiB for the ingest)"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "files_samples_per_s": med["files"],
                    "shards_samples_per_s": med["shards"],
                    "shards_vs_files": med["shards"] / med["files"],
                    "peak_rss_mib": peak,
                },
                f,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
