"""Dataset-scale inference: Ray Data batch prediction with 2 actors vs 1 and vs ``omg predict`` in one process,
data-parallel evaluation on 2 chunks vs 1, and the forward pass's achieved GFLOP/s against this machine's fp32
matmul peak.

    python benchmarks/bench_batch_predict.py --checkpoint runs/train/<demo run>/model.pt \\
        --input runs/data/omg-shapes/images/val --images 200 [--roofline-size 512]

Each command runs as a user meets it (Ray start, model loads, writing the files included), all in one run on
this machine: ``omg predict`` (one process, PyTorch on every core), then ``omg_platform/pipelines/predict.py``
with ``--actors 1`` and ``--actors 2`` (1 CPU each), the same images and task; each on the first quarter of the
images and on all of them: the whole-command rate of the full run, and the steady rate (the three quarters more
over the seconds more), which leaves the fixed costs (start, model loads) out. Peak memory per actor: the largest
resident set of an actor process while it ran (sampled from /proc). The evaluation: ``omg eval`` of each
``--eval-pair`` with ``--chunks 1`` and ``--chunks 2``. The roofline: FLOPs of one panoptic prediction of the
paper's model (ConvNeXt-L CLIP, 300 queries, random weights) counted under a dispatch mode with
``torch.utils.flop_counter``'s formulas at ``--roofline-size``, divided by its median time, against the median
GFLOP/s of a 2048^3 fp32 matmul on the same threads.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, median_seconds
from PIL import Image


def _peak_rss(pattern: str, stop: threading.Event, out: dict) -> None:
    """Sample /proc every 0.2 s: the largest RSS (MiB) of a process whose command line holds ``pattern``."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                if pattern.encode() not in cmd:
                    continue
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out["mib"] = max(out.get("mib", 0.0), int(line.split()[1]) / 1024)
            except OSError:
                continue
        stop.wait(0.2)


def timed(cmd: list[str], env: dict, rss_of: str | None = None) -> tuple[float, float | None]:
    """-> (wall seconds of the command, peak RSS MiB of the processes matching ``rss_of``)."""
    stop, peak = threading.Event(), {}
    sampler = threading.Thread(target=_peak_rss, args=(rss_of, stop, peak), daemon=True) if rss_of else None
    if sampler:
        sampler.start()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    stop.set()
    if out.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return wall, peak.get("mib")


class FlopCount:
    """FLOPs of the aten ops ``torch.utils.flop_counter`` knows (matmuls, convolutions, attention), counted under a
    dispatch mode: its ``FlopCounterMode`` tracks modules with autograd hooks, which inference mode refuses."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                count = flop_registry.get(func._overloadpacket)
                if count is not None:
                    counter.total += count(*args, **(kwargs or {}), out_val=out)
                return out

        self.total, self.mode = 0, Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def roofline(size: int, threads: int) -> None:
    import numpy as np
    import torch

    from omg.inference.predictor import OMGPredictor
    from omg.modeling.model import ModelConfig, build_model

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t_mm = median_seconds(lambda: a @ b, 5)
    peak = 2 * 2048**3 / t_mm / 1e9
    meta = {
        "label_space": {"names": [["circle"], ["sky"]], "isthing": [True, False], "mappings": {}, "class_agnostic": []},
        "test_size": [size, size],
    }
    pred = OMGPredictor(build_model(ModelConfig(variant="convnext_large_d_320")), meta)
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)

    def forward():
        pred.set_image(image)
        pred.predict("panoptic")

    forward()  # the vocabulary's text embeddings are computed once and cached: not part of an image's forward
    counter = FlopCount()
    with counter:
        forward()
    flops = counter.total
    t = median_seconds(forward, 3)
    print(
        f"roofline ({threads} threads): fp32 matmul 2048^3 {peak:.1f} GFLOP/s; ConvNeXt-L OMG-Seg forward at "
        f"{size}x{size}: {flops / 1e9:.1f} GFLOP in {t:.2f} s = {flops / t / 1e9:.1f} GFLOP/s = "
        f"{100 * flops / t / 1e9 / peak:.0f} % of the matmul peak",
        flush=True,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", required=True, help="a folder of images (repeated up to --images)")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--image-size", type=int, help="resize the images to this square size (default: as they are)")
    p.add_argument("--task", default="panoptic")
    p.add_argument("--data-root", help="omg-shapes root for the evaluation (default: the input's dataset)")
    p.add_argument(
        "--eval-pair",
        nargs="+",
        default=["omg-shapes:val:panoptic", "omg-shapes-vis:val:vis"],
        help="DATASET:SPLIT:TASK",
    )
    p.add_argument("--roofline-size", type=int, default=512)
    p.add_argument("--skip", nargs="*", default=[], choices=["predict", "eval", "roofline"])
    args = p.parse_args(argv)
    cores = os.cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(PYTHONPATH=str(ROOT), RAY_TMPDIR=str(tmp / "ray"))
    (tmp / "ray").mkdir()
    try:
        if "predict" not in args.skip:
            src = sorted(p for p in Path(args.input).iterdir() if p.suffix.lower() in (".jpg", ".png"))
            images = tmp / "images"
            images.mkdir()
            for k in range(args.images):  # the input's images, repeated under new names (resized: --image-size)
                image = Image.open(src[k % len(src)]).convert("RGB")
                if args.image_size:
                    image = image.resize((args.image_size, args.image_size), Image.BILINEAR)
                image.save(images / f"{k:06d}.png")
            quarter = tmp / "quarter"  # the first quarter of them: the fixed costs apart (see the docstring)
            quarter.mkdir()
            for f in sorted(images.iterdir())[: args.images // 4]:
                shutil.copy(f, quarter / f.name)
            n_q = args.images // 4
            size = f"{args.image_size}x{args.image_size}" if args.image_size else "as given"
            print(f"{args.images} images ({size}), task {args.task}, {cores} cores", flush=True)
            commands = {
                "omg predict": [sys.executable, "-m", "omg_platform.cli", "predict"],
                **{
                    f"{n} actor{'s' * (n > 1)}": [sys.executable, "-m", "omg_platform.pipelines.predict", "--quiet"]
                    + ["--num-cpus", str(cores), "--actors", str(n)]
                    for n in (1, 2)
                },
            }
            rates = {}
            for label, cmd in commands.items():
                walls, rss = {}, None
                for folder, n in ((quarter, n_q), (images, args.images)):
                    base = ["--checkpoint", args.checkpoint, "--task", args.task, "--input", str(folder)]
                    out = tmp / f"{label.replace(' ', '-')}-{n}"
                    walls[n], rss = timed(cmd + base + ["--out", str(out)], env, "BatchPredictor")
                steady = (args.images - n_q) / (walls[args.images] - walls[n_q])
                rates[label] = (args.images / walls[args.images], steady)
                memory = f", peak RSS per actor {rss:.0f} MiB" if rss else ""
                print(
                    f"{label:12s} {args.images} images {walls[args.images]:6.1f} s ({rates[label][0]:.2f} img/s), "
                    f"{n_q} images {walls[n_q]:6.1f} s; steady {steady:.2f} img/s{memory}",
                    flush=True,
                )
            for what, k in (("whole command", 0), ("steady", 1)):
                print(
                    f"ratios ({what}): 2 actors / 1 actor {rates['2 actors'][k] / rates['1 actor'][k]:.2f}x; "
                    f"2 actors / omg predict {rates['2 actors'][k] / rates['omg predict'][k]:.2f}x",
                    flush=True,
                )
        if "eval" not in args.skip:
            root = args.data_root or str(Path(args.input).parent.parent)
            for pair in args.eval_pair:
                ev = [sys.executable, "-m", "omg_platform.pipelines.evaluate", "--checkpoint", args.checkpoint]
                ev += ["--pair", pair, "--root", root, "--no-mlflow", "--num-cpus", str(cores), "--quiet"]
                walls = {}
                for n in (1, 2):
                    walls[n], _ = timed(ev + ["--chunks", str(n), "--out", str(tmp / f"eval{n}")], env)
                    print(f"evaluate {pair} --chunks {n}: {walls[n]:6.1f} s", flush=True)
                print(f"ratio: 2 chunks / 1 chunk {walls[1] / walls[2]:.2f}x faster", flush=True)
        if "roofline" not in args.skip:
            roofline(args.roofline_size, cores)
    finally:
        subprocess.run(["pkill", "-9", "-f", str(tmp / "ray")], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
