"""Training throughput with 1 vs 2 Ray Train workers on the CPU, peak memory per worker, time to first step.

    python benchmarks/bench_train.py --steps 30

Runs ``omg_platform/pipelines/joint_train.py`` (the smoke config's tiny model, omg-shapes shards built under
--work) twice in fresh Python processes: ``scaling.num_workers=1`` and ``=2`` with the same
per-worker batch. Reads back from the run's trace/log: samples/s over the steps after the first
five (steady state), the peak RSS of each worker process (sampled every 0.5 s with psutil), and
the time from launching the command to the first finished step. Prints the speed-up (target
>= 1.5x). On a GPU machine ``--gpu`` trains the given config with ``scaling.use_gpu=true``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import psutil

from omg.env import runs_dir


def sample_memory(stop: threading.Event, peaks: dict[int, float], root_pid: int) -> None:
    root = psutil.Process(root_pid)
    while not stop.is_set():
        try:
            for p in root.children(recursive=True) + [root]:
                try:
                    if "RayTrainWorker" in " ".join(p.cmdline()) or p.name().startswith("ray::RayTrainWorker"):
                        peaks[p.pid] = max(peaks.get(p.pid, 0.0), p.memory_info().rss / 2**20)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        except psutil.NoSuchProcess:
            return
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                if p.info["name"] and p.info["name"].startswith("ray::RayTrainWorker"):
                    peaks[p.pid] = max(peaks.get(p.pid, 0.0), p.memory_info().rss / 2**20)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        time.sleep(0.5)


def run(workers: int, args, shards: str, storage: str) -> dict:
    cmd = [
        sys.executable,
        "omg_platform/pipelines/joint_train.py",
        "--config",
        args.config,
        f"data.shards={shards}",
        f"checkpoint.storage_path={storage}",
        f"scaling.num_workers={workers}",
        f"optim.max_steps={args.steps}",
        f"checkpoint.every_steps={args.steps}",
        "tracking.log_every=1",
        "validation.pairs=[]",
        "tracking.log_model=false",
        *args.overrides,
        "--no-mlflow",
        "--num-cpus",
        "2",
    ]
    t0 = time.monotonic()
    peaks: dict[int, float] = {}
    stop = threading.Event()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    th = threading.Thread(target=sample_memory, args=(stop, peaks, proc.pid), daemon=True)
    th.start()
    steps: dict[int, float] = {}
    first = None
    for line in proc.stdout:
        m = re.search(r"\[train\] step (\d+)/", line)
        if m:
            steps[int(m.group(1))] = time.monotonic()
            if first is None:
                first = time.monotonic() - t0
    proc.wait()
    stop.set()
    if proc.returncode != 0:
        raise SystemExit(f"training with {workers} worker(s) failed (exit {proc.returncode})")
    warm = 5
    n = args.steps - warm
    span = steps[args.steps] - steps[warm]
    batch = args.batch * workers
    return {
        "workers": workers,
        "samples_per_s": n * batch / span,
        "first_step_s": first,
        "peak_rss_mib_per_worker": sorted(round(v) for v in peaks.values()),
        "wall_s": time.monotonic() - t0,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="omg_platform/pipelines/configs/shapes_smoke.yaml")
    p.add_argument("--work", default=runs_dir("bench-train"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=2, help="the config's data.batch_size (per worker)")
    p.add_argument(
        "--json-out", help="also write the figures to this JSON file (used by omg_platform/pipelines/nightly.py)"
    )
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    from omg.data.catalog import load_catalog
    from omg.data.synthetic import SynthOptions, generate
    from omg.env import apply_env_defaults
    from omg_platform.pipelines.cluster import init_ray
    from omg_platform.pipelines.preprocess import preprocess_split

    apply_env_defaults()
    data = os.path.join(args.work, "shapes")
    generate(
        data,
        seed=0,
        opts=SynthOptions(
            image_size=64,
            num_train_images=200,
            num_val_images=4,
            num_val_ov_images=2,
            num_train_videos=20,
            num_val_videos=2,
            min_frames=8,
            max_frames=10,
        ),
        progress=False,
    )
    shards = os.path.abspath(os.path.join(args.work, "shards"))
    init_ray(2)
    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):
        preprocess_split(catalog[name], "train", shards, data, shard_size=64, progress=False, log=lambda _: None)
    import ray

    ray.shutdown()
    results = [
        run(w, args, shards, os.path.abspath(os.path.join(args.work, f"train-{w}-{time.time_ns()}"))) for w in (1, 2)
    ]
    for r in results:
        print(json.dumps(r))
    speedup = results[1]["samples_per_s"] / results[0]["samples_per_s"]
    print(f"speed-up 2 vs 1 workers: {speedup:.2f}x (target >= 1.5x)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "samples_per_s_1": results[0]["samples_per_s"],
                    "samples_per_s_2": results[1]["samples_per_s"],
                    "speedup_2v1": speedup,
                },
                f,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
