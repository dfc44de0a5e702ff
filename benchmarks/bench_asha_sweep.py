"""Early stopping against the full sweep: the same random sweep of the cpu grid, every trial to its end (``fifo``) and
with ASHA, on omg-shapes.

    python benchmarks/bench_asha_sweep.py --data-root runs/data/omg-shapes --shards runs/shards [--samples 8]
        [--set validation.every_steps=25]

Both runs draw the same ``--samples`` configurations (``--seed``) from the cpu grid's ``sweep`` space
(``omg_platform/pipelines/configs/ablations.yaml``) and evaluate every trial that reaches its last step. Prints, per
trial, its sampled settings, the steps it trained in each run and its evaluation PQ; then the best PQ of the full
sweep, the PQ of the configuration ASHA ranks first (its best finished trial) in both runs, and the ratio of ASHA's
trial-steps to the full sweep's (the baseline: every trial to its end, measured in the same run of this script).
The data: ``omg data synth --out DIR`` and ``omg preprocess`` into ``--shards`` (the demo's ``runs/data`` and
``runs/shards`` serve).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

GRID = "cpu"
SHAPES = ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps")


def sweep(storage: Path, scheduler: str, args, env: dict) -> float:
    cmd = [
        sys.executable,
        "-m",
        "omg_platform.pipelines.ablations",
        "--grid",
        GRID,
        "--search",
        "random",
        "--samples",
        str(args.samples),
        "--seed",
        str(args.seed),
        "--scheduler",
        scheduler,
        "--storage",
        str(storage),
        "--set",
        f"data.shards={args.shards}",
        *(x for kv in args.set for x in ("--set", kv)),
    ]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited with {out.returncode}:\n{out.stderr[-4000:]}")
    return time.monotonic() - t0


def trials(storage: Path, scheduler: str, samples: int, seed: int) -> dict[str, dict]:
    """trial -> {steps it trained, its sampled settings, its evaluation PQ (None: stopped)}, from the Tune
    experiment's per-trial results and the trials' records."""
    experiment = storage / GRID / f"sweep-random-n{samples}-seed{seed}{'-asha' if scheduler == 'asha' else ''}"
    out = {}
    for folder in sorted(p for p in experiment.iterdir() if p.is_dir()):
        name = folder.name.rsplit("-", 1)[0]
        results = [json.loads(x) for x in (folder / "result.json").read_text().splitlines() if x.strip()]
        record = storage / GRID / name / "trial.json"
        pq = json.loads(record.read_text())["metrics"].get("omg-shapes/PQ") if record.exists() else None
        params = json.loads((folder / "params.json").read_text())["sample"]
        out[name] = {"steps": max(r.get("step", 0) for r in results), "params": params, "pq": pq}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="an omg-shapes root (omg data synth)")
    p.add_argument("--shards", required=True, help="its training shards (omg preprocess)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for both sweeps, e.g. --set validation.every_steps=25 (ASHA's first rung: the validation "
        "interval)",
    )
    args = p.parse_args()
    args.shards = os.path.abspath(args.shards)
    with tempfile.TemporaryDirectory(prefix="omg-bench-asha-") as tmp:
        env = dict(os.environ, OMG_RUNS_DIR=tmp, MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db")
        for name in SHAPES:
            env["OMG_ROOT_" + name.upper().replace("-", "_")] = os.path.abspath(args.data_root)
        wall = {s: sweep(Path(tmp) / s, s, args, env) for s in ("fifo", "asha")}
        full = trials(Path(tmp) / "fifo", "fifo", args.samples, args.seed)
        asha = trials(Path(tmp) / "asha", "asha", args.samples, args.seed)
    print(f"{'trial':14s} {'settings':60s} {'steps full':>10s} {'steps asha':>10s} {'PQ full':>8s} {'PQ asha':>8s}")
    for name, f in full.items():
        a = asha.get(name, {"steps": 0, "pq": None})
        settings = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in f["params"].items())
        cell = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8s}"  # noqa: E731
        print(f"{name:14s} {settings:60s} {f['steps']:10d} {a['steps']:10d} {cell(f['pq'])} {cell(a['pq'])}")
    best = max(full, key=lambda t: full[t]["pq"])
    pick = max((t for t in asha if asha[t]["pq"] is not None), key=lambda t: asha[t]["pq"])
    steps_full, steps_asha = sum(t["steps"] for t in full.values()), sum(t["steps"] for t in asha.values())
    print(f"full sweep: best {best} PQ {full[best]['pq']:.2f}; {steps_full} trial-steps in {wall['fifo']:.0f} s")
    print(
        f"ASHA: picks {pick} PQ {asha[pick]['pq']:.2f} (the full sweep's run of it: {full[pick]['pq']:.2f}, "
        f"{full[best]['pq'] - full[pick]['pq']:.2f} below its best); {steps_asha} trial-steps in {wall['asha']:.0f} s"
    )
    print(f"ratio ASHA / full sweep: trial-steps {steps_asha / steps_full:.2f}, wall {wall['asha'] / wall['fifo']:.2f}")


if __name__ == "__main__":
    main()
