"""The nightly benchmark run: speed benchmarks + a short train-and-evaluate, compared with the last night
and a stored baseline; exits non-zero with a readable report when a figure regresses.

    python -m omg_platform.pipelines.nightly                                    # the full suite (~15 min on 2 cores)
    python -m omg_platform.pipelines.nightly --suite smoke                      # minutes; what the tests run
    python -m omg_platform.pipelines.nightly --update-baseline                  # accept today's figures as the baseline
    ray job submit --address http://HEAD:8265 --working-dir . -- python -m omg_platform.pipelines.nightly
    # cron (02:00 every night, from a checkout with `make install` done):
    0 2 * * * cd /srv/omg && .venv/bin/python -m omg_platform.pipelines.nightly >> runs/nightly/cron.log 2>&1

Figures (each with its direction and tolerance, see ``FIGURES``):

- speed, from the scripts in ``benchmarks/`` (each run with ``--json-out``): preprocessing 2 vs 1
  workers, ingest shards vs official files, predictor latency of the tiny model, training samples/s
  1 and 2 workers; PQ / YouTube-VIS vs the official code when ``--panopticapi`` / ``--ytvos``
  checkouts are given; forward time vs Hugging Face Mask2Former when ``transformers`` is installed.
  A speed figure regresses when it is worse than the reference by more than its ratio tolerance.
- accuracy: omg-shapes data is generated and preprocessed, ``omg_platform/pipelines/joint_train.py`` trains the
  fixed-seed nightly config and ``omg_platform/pipelines/evaluate.py`` scores it (PQ, VIS AP, VPQ, interactive
  mIoU). An accuracy figure regresses when it drops by more than its absolute tolerance.

Every run is an MLflow run in experiment ``nightly`` (metrics = figures, tags = commit, suite,
status); the previous night is the newest earlier run of the same suite. The baseline is a JSON
file in the repository (``benchmarks/nightly_baseline_<suite>.json``), refreshed with
``--update-baseline`` after an intended change. ``--inject NAME=FACTOR`` multiplies a measured
figure (a drill: it proves that the alarm goes off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omg.env import apply_env_defaults, runs_dir
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.progress import format_duration

ROOT = Path(__file__).resolve().parents[2]  # the repository
BENCH = ROOT / "benchmarks"


@dataclass(frozen=True)
class Figure:
    better: str  # "higher" | "lower"
    kind: str  # "speed" (ratio tolerance) | "accuracy" (absolute tolerance, points)
    tolerance: float


#: every figure the nightly run can produce (a suite measures a subset)
FIGURES: dict[str, Figure] = {
    "preprocess/speedup_2v1": Figure("higher", "speed", 1.3),
    "preprocess/rows_per_s_1": Figure("higher", "speed", 1.4),
    "ingest/shards_vs_files": Figure("higher", "speed", 1.3),
    "ingest/shards_samples_per_s": Figure("higher", "speed", 1.4),
    "ingest/peak_rss_mib": Figure("lower", "speed", 1.25),
    "predict/set_image_ms": Figure("lower", "speed", 1.5),
    "predict/panoptic_ms": Figure("lower", "speed", 1.5),
    "predict/click_ms": Figure("lower", "speed", 1.5),
    "predict/video_ms_per_frame": Figure("lower", "speed", 1.5),
    "train/samples_per_s_1": Figure("higher", "speed", 1.4),
    "train/speedup_2v1": Figure("higher", "speed", 1.3),
    "metrics/pq_speedup": Figure("higher", "speed", 1.3),
    "metrics/ytvis_speedup": Figure("higher", "speed", 1.3),
    "model/ratio_forward": Figure("lower", "speed", 1.3),
    "accuracy/omg-shapes/PQ": Figure("higher", "accuracy", 5.0),
    "accuracy/omg-shapes-vis/AP": Figure("higher", "accuracy", 5.0),
    "accuracy/omg-shapes-vps/VPQ": Figure("higher", "accuracy", 5.0),
    "accuracy/omg-shapes-sam/mIoU": Figure("higher", "accuracy", 5.0),
}

#: suite -> benchmark invocations and the accuracy run's config
SUITES = {
    "full": {
        "bench": {
            "preprocess": ["bench_preprocess.py", "--images", "200", "--repeats", "2"],
            "ingest": ["bench_ingest.py", "--images", "80", "--samples", "80"],
            # medians of 15: a 4 ms figure's median of 5 swung by x1.7 between quiet runs of the same code
            "predict": ["bench_predict_latency.py", "--variants", "tiny_convnext", "--repeats", "15"],
            "train": ["bench_train.py", "--steps", "20"],
        },
        # the demo config on a learned backbone (a random CLIP frozen would measure little): the baseline's figures
        "config": "shapes_demo.yaml",
        "overrides": [
            "scaling.num_workers=2",
            "validation.pairs=[]",
            "model.variant=tiny_convnext_learned",
            "optim.max_steps=1500",
        ],
        "eval_limit": 30,
        "synth": {},
    },
    "smoke": {
        "bench": {
            "predict": [
                "bench_predict_latency.py",
                "--variants",
                "tiny_convnext",
                "--image-size",
                "128",
                "--frames",
                "2",
                "--repeats",
                "3",
            ],
        },
        "config": "shapes_smoke.yaml",
        "overrides": [
            "scaling.num_workers=1",
            "optim.max_steps=4",
            "checkpoint.every_steps=4",
            "validation.pairs=[]",
            "tracking.log_model=false",
        ],
        "eval_limit": 3,
        "synth": dict(
            image_size=64,
            num_train_images=16,
            num_val_images=4,
            num_val_ov_images=2,
            num_train_videos=3,
            num_val_videos=2,
            min_frames=8,
            max_frames=10,
        ),
    },
}
ACCURACY_PAIRS = (
    "omg-shapes:val:panoptic",
    "omg-shapes-vis:val:vis",
    "omg-shapes-vps:val:vps",
    "omg-shapes-sam:val:interactive",
)
ACCURACY_METRICS = {"omg-shapes": "PQ", "omg-shapes-vis": "AP", "omg-shapes-vps": "VPQ", "omg-shapes-sam": "mIoU"}


log = get_logger(__name__)


def run_bench(name: str, cmd: list[str], work: Path, env: dict) -> dict[str, float]:
    out = work / f"bench-{name}.json"
    out.unlink(missing_ok=True)
    full = [sys.executable, str(BENCH / cmd[0]), *cmd[1:], "--json-out", str(out)]
    if name not in ("predict", "model"):  # the benchmarks that write scratch files take --work
        full += ["--work", str(work / f"bench-{name}")]
    t0 = time.monotonic()
    r = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True)
    (work / f"bench-{name}.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"benchmark {cmd[0]} failed (exit {r.returncode}); log {work / f'bench-{name}.log'}:\n"
            + (r.stdout + r.stderr)[-1500:]
        )
    doc = json.loads(out.read_text())
    log.info(f"[nightly] {name}: {format_duration(time.monotonic() - t0)}")
    if name == "predict":  # {variant: {figure: value}}: the tiny model's
        doc = next(iter(doc.values()))
    if name == "model":
        doc = {"ratio_forward": doc["ratio_forward"]}
    return {f"{name}/{k}": float(v) for k, v in doc.items() if f"{name}/{k}" in FIGURES}


def prepare_data(work: Path, seed: int, synth: dict) -> tuple[str, str]:
    """omg-shapes and its training shards, once per work dir (both steps skip what exists), on the Ray
    :func:`run_accuracy` started."""
    from omg.data.catalog import load_catalog
    from omg.data.synthetic import SynthOptions, generate
    from omg_platform.pipelines.preprocess import preprocess_split

    data = work / f"omg-shapes-seed{seed}"
    generate(str(data), seed=seed, opts=SynthOptions(**synth), progress=False)
    shards = work / f"shards-seed{seed}"
    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):
        preprocess_split(catalog[name], "train", str(shards), str(data), progress=False, log=lambda _: None)
    return str(data), str(shards)


def run_accuracy(suite: dict, work: Path, env: dict, seed: int) -> dict[str, float]:
    """Train the suite's config and evaluate it: preprocessing, training and evaluation share one Ray (started here
    unless RAY_ADDRESS names one), so it starts once, not three times."""
    import ray

    from omg_platform.pipelines.cluster import init_ray, shutdown_ray

    owned = init_ray(None)
    try:
        if owned:
            env = dict(env, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
        return _train_and_evaluate(suite, work, env, seed)
    finally:
        shutdown_ray(owned)


def _train_and_evaluate(suite: dict, work: Path, env: dict, seed: int) -> dict[str, float]:
    t0 = time.monotonic()
    data, shards = prepare_data(work, seed, suite["synth"])
    env = dict(
        env,
        **{
            f"OMG_ROOT_{n.upper().replace('-', '_')}": data
            for n in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps")
        },
    )
    run_dir = work / "train"
    name = f"nightly-{int(time.time())}"
    cmd = [
        sys.executable,
        str(ROOT / "omg_platform" / "pipelines" / "joint_train.py"),
        "--config",
        str(ROOT / "omg_platform" / "pipelines" / "configs" / suite["config"]),
        *suite["overrides"],
        f"seed={seed}",
        f"name={name}",
        f"data.shards={shards}",
        f"checkpoint.storage_path={run_dir}",
        "--no-mlflow",
    ]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (work / "train.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(
            f"nightly training failed (exit {r.returncode}); log {work / 'train.log'}:\n"
            + (r.stdout + r.stderr)[-2000:]
        )
    model = run_dir / name / "model.pt"
    cmd = [
        sys.executable,
        str(ROOT / "omg_platform" / "pipelines" / "evaluate.py"),
        "--checkpoint",
        str(model),
        "--out",
        str(work / "eval"),
        "--limit",
        str(suite["eval_limit"]),
        "--no-mlflow",
        "--quiet",
    ]
    cmd += [a for p in ACCURACY_PAIRS for a in ("--pair", p)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (work / "eval.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(
            f"nightly evaluation failed (exit {r.returncode}); log {work / 'eval.log'}:\n"
            + (r.stdout + r.stderr)[-2000:]
        )
    figures = {}
    for result in (work / "eval").glob("*/*/*/*/result.json"):
        doc = json.loads(result.read_text())
        metric = ACCURACY_METRICS.get(doc["dataset"])
        if metric and metric in doc["metrics"]:
            figures[f"accuracy/{doc['dataset']}/{metric}"] = float(doc["metrics"][metric])
    log.info(f"[nightly] accuracy (train {suite['config']} + evaluate): {format_duration(time.monotonic() - t0)}")
    return figures


def regressed(name: str, value: float, ref: float | None) -> tuple[bool, str]:
    """(regressed?, what the comparison says) of ``value`` against a reference value."""
    if ref is None:
        return False, "–"
    f = FIGURES[name]
    if f.kind == "accuracy":
        drop = (ref - value) if f.better == "higher" else (value - ref)
        return drop > f.tolerance, f"{ref:.3g} ({value - ref:+.2f}, tolerance {f.tolerance:g} points)"
    if ref <= 0 or value <= 0:
        return False, f"{ref:.3g}"
    factor = ref / value if f.better == "higher" else value / ref  # > 1: worse
    return (
        factor > f.tolerance,
        f"{ref:.3g} ({'x' if factor >= 1 else '/'}{max(factor, 1 / factor):.2f} "
        f"{'worse' if factor > 1 else 'better'}, tolerance x{f.tolerance:g})",
    )


def compare(figures: dict[str, float], previous: dict[str, float], baseline: dict[str, float]) -> tuple[list[str], str]:
    """(names that regressed, the report table)."""
    bad, lines = [], [f"{'figure':34s} {'today':>10s}  {'vs previous night':42s} {'vs baseline':42s} status"]
    for name in sorted(figures):
        v = figures[name]
        r_prev, t_prev = regressed(name, v, previous.get(name))
        r_base, t_base = regressed(name, v, baseline.get(name))
        status = "REGRESSED" if (r_prev or r_base) else "ok"
        if r_prev or r_base:
            bad.append(name)
        lines.append(f"{name:34s} {v:10.3g}  {t_prev:42s} {t_base:42s} {status}")
    return bad, "\n".join(lines)


def previous_night(suite: str, tracking: str | None) -> tuple[str | None, dict[str, float]]:
    """(newest earlier run of ``suite``, each figure's newest earlier value): a night that measured only some
    groups (``--only``) does not hide the others' last values. Drills (``--inject``) are never a reference."""
    import mlflow

    from omg_platform.tracking import setup

    exp_id = setup("nightly", tracking)
    runs = mlflow.search_runs(
        [exp_id],
        filter_string=f"tags.`omg.suite` = '{suite}' and tags.`omg.injected` = 'none'",
        order_by=["start_time DESC"],
        max_results=50,
        output_format="list",
    )
    figures: dict[str, float] = {}
    for run in runs:
        for k, v in run.data.metrics.items():
            if k in FIGURES:
                figures.setdefault(k, v)
    return (runs[0].info.run_id if runs else None), figures


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nightly", description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", choices=sorted(SUITES), default="full", help="full (default) or smoke")
    p.add_argument(
        "--work", default=runs_dir("nightly"), help="scratch dir (default $OMG_RUNS_DIR/nightly, runs/nightly)"
    )
    p.add_argument("--baseline", help="baseline JSON (default benchmarks/nightly_baseline_<suite>.json)")
    p.add_argument("--update-baseline", action="store_true", help="write today's figures as the baseline")
    p.add_argument(
        "--only",
        action="append",
        choices=["preprocess", "ingest", "predict", "train", "metrics", "model", "accuracy"],
        help="measure only these groups (repeatable)",
    )
    p.add_argument("--panopticapi", help="checkout of cocodataset/panopticapi: adds the PQ speed figure")
    p.add_argument("--ytvos", help="checkout of youtubevos/cocoapi (with --panopticapi): adds the YT-VIS figure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--inject",
        action="append",
        default=[],
        metavar="NAME=FACTOR",
        help="multiply a measured figure (a regression drill), e.g. accuracy/omg-shapes/PQ=0.5",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("nightly")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    suite = SUITES[args.suite]
    inject = {}
    for spec in args.inject:
        name, _, factor = spec.partition("=")
        if name not in FIGURES:
            log.error(f"--inject {spec!r}: no figure {name!r} (figures: {', '.join(FIGURES)})")
            return 2
        inject[name] = float(factor)
    if inject and args.update_baseline:
        log.error("--inject with --update-baseline: a drill never becomes the baseline")
        return 2
    baseline_path = Path(args.baseline or BENCH / f"nightly_baseline_{args.suite}.json")
    work = Path(args.work).resolve() / args.suite
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    groups = dict(suite["bench"])
    if args.panopticapi and args.ytvos and args.suite == "full":
        groups["metrics"] = ["bench_metrics.py", "--panopticapi", args.panopticapi, "--ytvos", args.ytvos]
    try:
        import transformers  # noqa: F401

        if args.suite == "full":
            groups["model"] = ["bench_model_vs_hf.py", "--repeats", "2"]
    except ImportError:
        pass
    wanted = set(args.only or [*groups, "accuracy"])
    figures: dict[str, float] = {}
    try:
        for name, cmd in groups.items():
            if name in wanted:
                figures.update(run_bench(name, cmd, work, env))
        if "accuracy" in wanted:
            figures.update(run_accuracy(suite, work, env, args.seed))
    except RuntimeError as err:
        log.error(err)
        return 1
    for name, factor in inject.items():
        if name in figures:
            log.info(
                f"[nightly] injected regression: {name} x{factor:g} "
                f"({figures[name]:.4g} -> {figures[name] * factor:.4g})"
            )
            figures[name] *= factor
    import mlflow

    prev_id, previous = previous_night(args.suite, args.tracking_uri)
    baseline = json.loads(baseline_path.read_text())["figures"] if baseline_path.exists() else {}
    bad, report = compare(figures, previous, baseline)
    print(
        f"nightly ({args.suite}) on {platform.node()}, {os.cpu_count()} CPUs; previous night: {prev_id or 'none'}; "
        f"baseline: {baseline_path if baseline else 'none'}\n{report}"
    )
    from omg_platform.pipelines.joint_train import git_commit

    with mlflow.start_run(
        run_name=f"nightly-{args.suite}-{time.strftime('%Y%m%d-%H%M')}",
        tags={
            "omg.suite": args.suite,
            "git_commit": git_commit(),
            "omg.injected": ",".join(inject) or "none",
            "omg.regressed": ",".join(bad) or "none",
            "omg.previous_run": prev_id or "none",
        },
    ) as run:
        mlflow.log_metrics(figures)
        mlflow.log_text(report, "report.txt")
        mlflow.set_tag("omg.status", "regressed" if bad else "ok")
    if args.update_baseline:
        baseline_path.write_text(
            json.dumps(
                {
                    "suite": args.suite,
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                    "date": time.strftime("%Y-%m-%d"),
                    "git_commit": git_commit(),
                    "figures": figures,
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
        print(f"baseline written: {baseline_path}")
    print(f"MLflow run {run.info.run_id} (experiment nightly) [{format_duration(time.monotonic() - t0)}]")
    if bad:
        print(f"REGRESSION: {', '.join(bad)}")
        return 1
    print("no regression")
    return 0


if __name__ == "__main__":
    sys.exit(main())
