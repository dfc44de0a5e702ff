"""Long videos: peak memory and frames/s of `omg predict` streaming a generated video file, for several lengths,
against the whole-video path (set_video + the task, the baseline) on the shortest.

    python benchmarks/bench_long_video.py [--frames 100 1000 5000] [--task vis] [--size 512 288] [--json-out F]

Each run is a fresh process (peak RSS is its own, from wait4): `omg predict --input video.mp4 --task TASK` on an H.264
video of moving shapes (written first with PyAV), with the tiny variant at its test size = the frame size (no
resize), writing the official files and the overlay video as a user would. frames/s is the predict stage's own rate
(decode + predict + write, after the model is loaded). The baseline process reads every frame, set_video, the task
and the same frame-by-frame writers. Targets (issue 21): peak RSS at the longest within 1.1x of the shortest;
streaming frames/s within 0.9x of the baseline on the short video.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT

BASELINE = r"""
import resource, sys, time
from omg.inference.media import VideoSource
from omg.inference.predictor import OMGPredictor
from omg.inference.writers import VideoOutput
ckpt, video, task, out = sys.argv[1:5]
p = OMGPredictor.from_checkpoint(ckpt)
t0 = time.monotonic()
src = VideoSource.open(video)
names, frames = zip(*src)
p.set_video(list(frames))
r = p.predict(task)
o = VideoOutput(out, task, p.training_vocabulary.isthing)
o.start(src.name, overlay_frames=False, overlay_video=out + "/o.mp4", fps=src.fps)
from omg.inference.writers import frame_of
for t, name in enumerate(names):
    o.add(name, frames[t], frame_of(r, t))
o.close()
print("RATE", len(names) / (time.monotonic() - t0))
"""


def make_video(path: str, num_frames: int, w: int, h: int) -> None:
    from omg.inference.media import VideoWriter

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 16, w // 16, 3)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    with VideoWriter(path, fps=25) as v:
        for t in range(num_frames):
            f = base.copy()
            for k in range(3):  # three squares drifting at different speeds
                x = (t * (k + 2)) % (w - 48)
                y = 20 + 80 * k
                f[y : y + 48, x : x + 48] = ((80 * k + 60) % 255, 200 - 60 * k, 40 + 90 * k)
            v.add(f)


def run(cmd: list[str], env: dict) -> tuple[str, float, float]:
    """-> (output, peak RSS MiB of the process, wall seconds)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        log.seek(0)
        text = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text[-3000:]}")
    return text, usage.ru_maxrss / 1024, time.monotonic() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--task", default="vis", choices=["vis", "vps", "vss", "vos"])
    ap.add_argument("--size", type=int, nargs=2, default=[512, 288], metavar=("W", "H"))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json-out")
    args = ap.parse_args(argv)
    import torch

    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model
    from tests.helpers import LABEL_SPACE

    w, h = args.size
    work = Path(tempfile.mkdtemp(prefix="omg-longvideo-"))
    torch.manual_seed(0)
    ckpt = str(work / "tiny.pt")
    save_checkpoint(build_model(ModelConfig.tiny()), ckpt, {"label_space": LABEL_SPACE, "test_size": [w, h]})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    extra = []
    if args.task == "vos":
        extra = ["--points", f"{w // 2},{h // 2}"]
    results = {"task": args.task, "size": [w, h], "runs": []}
    for n in sorted(args.frames):
        video = str(work / f"v{n}.mp4")
        make_video(video, n, w, h)
        out = str(work / f"out{n}")
        text, rss, wall = run(
            [
                sys.executable,
                "-m",
                "omg_platform.cli",
                "predict",
                "--checkpoint",
                ckpt,
                "--input",
                video,
                "--task",
                args.task,
                "--out",
                out,
                *extra,
            ],
            env,
        )
        rate = float(re.findall(r"\(100%\) ([0-9.]+) frame/s", text)[-1])
        row = {
            "frames": n,
            "path": "stream (omg predict)",
            "peak_rss_mib": round(rss, 1),
            "frames_per_s": rate,
            "wall_s": round(wall, 1),
        }
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
        if n == min(args.frames) and args.task != "vos":
            text, rss, wall = run([sys.executable, "-c", BASELINE, ckpt, video, args.task, str(work / f"base{n}")], env)
            rate = float(re.findall(r"RATE ([0-9.]+)", text)[-1])
            row = {
                "frames": n,
                "path": "whole video (set_video + task)",
                "peak_rss_mib": round(rss, 1),
                "frames_per_s": round(rate, 2),
                "wall_s": round(wall, 1),
            }
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
    streams = [r for r in results["runs"] if r["path"].startswith("stream")]
    short, long = streams[0], streams[-1]
    results["memory_ratio"] = round(long["peak_rss_mib"] / short["peak_rss_mib"], 3)
    base = [r for r in results["runs"] if r["path"].startswith("whole")]
    if base:
        results["speed_ratio"] = round(short["frames_per_s"] / base[0]["frames_per_s"], 3)
    print(f"peak RSS {long['frames']} frames / {short['frames']} frames: x{results['memory_ratio']} (target <= 1.1)")
    if base:
        print(
            f"frames/s streaming / whole video at {short['frames']} frames: x{results['speed_ratio']} (target >= 0.9)"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
