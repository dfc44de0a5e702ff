"""Ablation grids: every trial a training run plus the evaluation fan-out, tracked in MLflow.

    python -m omg_platform.pipelines.ablations --grid cpu                   # the CPU grid on omg-shapes
    python -m omg_platform.pipelines.ablations --grid backbone --list       # what a grid would run
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m omg_platform.pipelines.ablations --grid backbone \
        --storage s3://bucket/omg/ablations

Grids live in ``omg_platform/pipelines/configs/ablations.yaml``: a base run config, overrides, a baseline trial
and trials (overrides + the axis values they stand for). The driver opens one MLflow parent run per
grid (experiment ``ablations``); each trial is a Ray task that runs ``omg_platform/pipelines/joint_train.py`` (a
child run tagged ``omg.axis.<axis>=<value>``) and then ``omg_platform/pipelines/evaluate.py`` into the same child
run. Trials run concurrently as the cluster's CPUs (GPUs) allow. A finished trial leaves
``<storage>/<grid>/<trial>/trial.json``; rerunning the grid skips those and resumes the others from
their last checkpoint. ``omg dashboard`` turns the runs into the paper-shaped tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from omg.config import TrainConfig, apply_values
from omg.data.catalog import load_catalog
from omg.env import apply_env_defaults, runs_dir
from omg.modeling.model import ModelConfig
from omg.modeling.variants import get_variant
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.progress import Progress, format_duration
from omg.utils.typed import SchemaError, from_dict, to_dict
from omg_platform.errors import usage_error
from omg_platform.pipelines.cluster import shared_location

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
GRIDS_FILE = HERE / "configs" / "ablations.yaml"
EXPERIMENT = "ablations"


@dataclass(frozen=True)
class TrialSpec:
    #: axis name -> value this trial stands for (tags ``omg.axis.<axis>``)
    axes: dict[str, str]
    #: dotted config key -> value, applied after the grid's overrides
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSpec:
    datasets: tuple[str, ...] = ()  # every default (split, task) pair of these catalog entries
    pairs: tuple[str, ...] = ()  # and/or explicit DATASET:SPLIT:TASK
    limit: int | None = None  # images/videos per pair (None = the whole split)


@dataclass(frozen=True)
class PaperReference:
    """The paper's numbers for an axis's settings, shown beside the grid's by the dashboard: ``axes`` maps axis ->
    axis value -> {"<dataset>/<metric>" of this grid: the paper's figure for the task that dataset stands for}."""

    source: str  # where the figures are and what they measure (model, datasets, scale)
    axes: dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Noise:
    """How much a metric moves between seeds of the baseline trial (sample standard deviation), measured: the
    dashboard calls a delta within twice it noise."""

    source: str  # how it was measured (seeds, machine, date)
    std: dict[str, float]  # "<dataset>/<metric>" -> standard deviation


@dataclass(frozen=True)
class Grid:
    description: str
    base: str  # a run config, relative to the grids file
    baseline: str
    trials: dict[str, TrialSpec]
    overrides: dict[str, Any] = field(default_factory=dict)
    eval: EvalSpec = field(default_factory=EvalSpec)
    name: str = ""
    paper: PaperReference | None = None
    noise: Noise | None = None

    def __post_init__(self):
        if self.baseline not in self.trials:
            raise ValueError(f"baseline {self.baseline!r} is not one of the trials ({', '.join(self.trials)})")
        axes = {tuple(sorted(t.axes)) for t in self.trials.values()}
        if len(axes) != 1:
            raise ValueError("every trial must give a value for the same axes")


def load_grids(path: str | Path = GRIDS_FILE) -> dict[str, Grid]:
    data = yaml.safe_load(Path(path).read_text()) or {}
    grids = {}
    for name, body in data.items():
        if not isinstance(body, dict):
            raise SchemaError(str(path), name, "expected a mapping (a grid)")
        for trial in (body.get("trials") or {}).values():
            if isinstance(trial, dict) and isinstance(trial.get("axes"), dict):  # YAML may read values as numbers
                trial["axes"] = {k: str(v) for k, v in trial["axes"].items()}
        grids[name] = from_dict(Grid, {**body, "name": name}, str(path), name)
    return grids


def axis_values(grid: Grid) -> dict[str, list[str]]:
    """axis -> its values in trial order (the baseline's first)."""
    out: dict[str, list[str]] = {}
    for spec in [grid.trials[grid.baseline], *grid.trials.values()]:
        for axis, value in spec.axes.items():
            if value not in out.setdefault(axis, []):
                out[axis].append(value)
    return out


def trial_config(
    grid: Grid,
    trial: str,
    storage: str,
    parent_run_id: str | None,
    experiment: str,
    grids_dir: Path = GRIDS_FILE.parent,
    extra: dict | None = None,
    clip_weights: dict[str, str] | None = None,
) -> TrainConfig:
    """The trial's full run config (validated): base + grid overrides + trial overrides + tracking.
    ``clip_weights`` (open_clip model name -> weights): ``model.pretrained`` of every trial whose backbone variant
    is that CLIP model, frozen or learned (``--clip-weights``)."""
    base = grids_dir / grid.base
    try:
        data = yaml.safe_load(base.read_text()) or {}
    except OSError as err:
        raise SchemaError(str(base), "", f"cannot read the grid's base config: {err}") from None
    spec = grid.trials[trial]
    data = apply_values(data, grid.overrides, f"grid {grid.name} overrides")
    data = apply_values(data, spec.overrides, f"grid {grid.name} trial {trial}")
    data = apply_values(data, extra or {}, "command-line overrides")
    clip_model = get_variant(data.get("model", {}).get("variant", ModelConfig.variant)).clip_model
    if clip_model in (clip_weights or {}):
        data = apply_values(data, {"model.pretrained": clip_weights[clip_model]}, "--clip-weights")
    tags = {
        "omg.grid": grid.name,
        "omg.trial": trial,
        "omg.kind": "ablation-trial",
        **{f"omg.axis.{k}": v for k, v in spec.axes.items()},
    }
    data = apply_values(
        data,
        {
            "name": f"{grid.name}-{trial}",
            "data.shards": shared_location(data.get("data", {}).get("shards", runs_dir("shards")), "data.shards"),
            "checkpoint.storage_path": uio.join(storage, grid.name),
            "tracking.experiment": experiment,
            "tracking.parent_run_id": parent_run_id,
            "tracking.tags": tags,
        },
        "ablations",
    )
    return from_dict(TrainConfig, data, f"{base} (grid {grid.name}, trial {trial})")


#: the parts of a trial's config that make its result (a finished trial is reused only if they are unchanged)
SETTINGS = ("seed", "model", "data", "optim", "scaling")


def trial_settings(cfg: TrainConfig) -> dict:
    """What a finished trial's record keeps of its config, as JSON would give it back."""
    d = to_dict(cfg)
    return json.loads(json.dumps({k: d[k] for k in SETTINGS}))


def changed_settings(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two :func:`trial_settings`."""
    out = []
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def eval_args(grid: Grid) -> list[str]:
    args = [a for d in grid.eval.datasets for a in ("--dataset", d)]
    args += [a for p in grid.eval.pairs for a in ("--pair", p)]
    if grid.eval.limit:
        args += ["--limit", str(grid.eval.limit)]
    return args


def dataset_root_env(names: set[str]) -> dict[str, str]:
    """``OMG_ROOT_<NAME>`` with absolute roots, so trials on other nodes (other working dirs) find local data."""
    catalog = load_catalog()
    env = {}
    for name in names:
        if name in catalog:
            entry = catalog[name]
            env[entry.env_var()] = shared_location(entry.resolve_root(), f"the root of {name}")
    return env


def datasets_of(grid: Grid, cfg: TrainConfig) -> set[str]:
    names = set(grid.eval.datasets) | {p.split(":")[0] for p in grid.eval.pairs}
    return names | {p.split(":")[0] for p in cfg.validation.pairs}


# ============================================================================= one trial (a Ray task)


class TrialLog:
    """A trial's output, at ``<storage>/<grid>/<trial>/trial.log`` whatever the storage: appended as it comes when
    the storage is this disk; else kept in a local file and copied to the storage every ``every`` seconds and when
    closed (a trial runs on any node: its log must not stay on that node's disk). A rerun appends to the log."""

    def __init__(self, uri: str, every: float = 30.0):
        import tempfile

        self.uri, self.every = uri, every
        fs, path = uio.fs_and_path(uri)
        self._tmp = None
        if uio.is_remote(fs):
            self._tmp = tempfile.mkdtemp(prefix="omg-trial-")
            self.path = os.path.join(self._tmp, "trial.log")
            Path(self.path).write_bytes(uio.read_bytes(uri) if uio.exists(uri) else b"")
        else:
            self.path = path
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._published = time.monotonic()

    def write(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)
        if self._tmp and time.monotonic() - self._published > self.every:
            self.publish()

    def publish(self) -> None:
        if self._tmp:
            uio.write_bytes(self.uri, Path(self.path).read_bytes())
            self._published = time.monotonic()

    def close(self) -> None:
        if self._tmp:
            import shutil

            try:
                self.publish()
            finally:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def run(self, cmd: list[str], env: dict, cwd: str) -> int:
        """Run ``cmd`` with its output (stdout and stderr) into the log; -> its exit status."""
        self.write(f"\n$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            self.write(chunk)
        rc = proc.wait()
        self.publish()
        return rc


@dataclass(frozen=True)
class TrialJob:
    """One trial as the driver hands it to its Ray task."""

    grid: str
    trial: str
    name: str  # the training run's name
    axes: dict[str, Any]
    config: TrainConfig
    storage: str
    ray_address: str
    eval_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # dataset roots, MLflow URI

    @property
    def trial_dir(self) -> str:
        return uio.join(self.storage, self.grid, self.trial)


def run_trial(job: TrialJob) -> dict:
    """Train, then evaluate into the trial's child run. Returns the trial record (the trial.json document)."""
    import tempfile

    import ray

    t0 = time.monotonic()
    trial_dir = job.trial_dir
    env = dict(os.environ, **job.env)
    env["RAY_ADDRESS"] = job.ray_address
    cwd = str(HERE.parents[1])  # the repository
    log = TrialLog(uio.join(trial_dir, "trial.log"))
    record = {
        "grid": job.grid,
        "trial": job.trial,
        "axes": job.axes,
        "node": ray.util.get_node_ip_address(),
        "log": log.uri,
        "status": "failed",
        "settings": trial_settings(job.config),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="omg-trial-config-") as tmp:  # read only by this node's process
            config_path = os.path.join(tmp, "config.yaml")
            Path(config_path).write_text(yaml.safe_dump(to_dict(job.config), sort_keys=False))
            rc = log.run([sys.executable, str(HERE / "joint_train.py"), "--config", config_path], env, cwd)
        if rc != 0:
            record["error"] = f"training exited with {rc} (see {log.uri})"
            return record
        info = uio.read_json(uio.join(job.storage, job.grid, job.name, "run.json"))
        record.update(model=info["model"], run_id=info.get("mlflow_run_id"), step=info.get("step"))
        cmd = [
            sys.executable,
            str(HERE / "evaluate.py"),
            "--checkpoint",
            info["model"],
            "--out",
            uio.join(trial_dir, "eval"),
            "--quiet",
            *job.eval_args,
        ]
        cmd += ["--run-id", info["mlflow_run_id"]] if info.get("mlflow_run_id") else ["--no-mlflow"]
        rc = log.run(cmd, env, cwd)
        metrics = collect_eval(uio.join(trial_dir, "eval"))
        record.update(metrics=metrics, seconds=round(time.monotonic() - t0, 1))
        if rc != 0:
            record["error"] = f"evaluation exited with {rc} (see {log.uri})"
            return record
        record["status"] = "finished"
        uio.write_json(uio.join(trial_dir, "trial.json"), record)
        return record
    finally:
        log.close()


def collect_eval(out_dir: str) -> dict[str, float]:
    """``{"<dataset>/<metric>": value}`` from every result.json under an evaluate.py output dir."""
    metrics = {}
    for path in uio.glob(out_dir, "**/result.json"):
        r = uio.read_json(path)
        metrics.update({f"{r['dataset']}/{k}": float(v) for k, v in r["metrics"].items() if v is not None and v == v})
    return metrics


# ============================================================================= the driver


class ParentRun:
    """The grid's MLflow parent run: found again by (grid, storage) on a rerun. Tagged ``omg.clip_weights`` with the
    ``--clip-weights`` it ran with (``VARIANT=PATH;...``, empty: the trials' own CLIPs), which the dashboard
    groups grids by."""

    def __init__(self, grid: Grid, storage: str, experiment: str, tracking: str | None, clip_weights: str = ""):
        import mlflow

        from omg_platform.tracking import setup

        self.mlflow = mlflow
        exp_id = setup(experiment, tracking)
        runs = mlflow.search_runs(
            [exp_id],
            filter_string=f"tags.`omg.grid` = '{grid.name}' and "
            f"tags.`omg.kind` = 'ablation-grid' and tags.`omg.storage` = '{storage}'",
            output_format="list",
        )
        tags = {
            "omg.grid": grid.name,
            "omg.kind": "ablation-grid",
            "omg.storage": storage,
            "omg.baseline": grid.baseline,
            "omg.axes": ",".join(next(iter(grid.trials.values())).axes),
            "omg.clip_weights": clip_weights,
        }
        if runs:
            self.run = mlflow.start_run(run_id=runs[0].info.run_id)
        else:
            self.run = mlflow.start_run(run_name=f"grid-{grid.name}", tags=tags)
            mlflow.log_dict(to_dict(grid), "grid.json")
            mlflow.log_params(
                {
                    "description": grid.description[:500],
                    "base": grid.base,
                    "baseline": grid.baseline,
                    "trials": ",".join(grid.trials),
                }
            )
        self.run_id = self.run.info.run_id

    def finish(self, records: list[dict], ok: bool) -> None:
        rows = [{"trial": r["trial"], **r["axes"], "status": r["status"], **r.get("metrics", {})} for r in records]
        self.mlflow.log_dict({"trials": rows}, "trials.json")
        self.mlflow.end_run("FINISHED" if ok else "FAILED")


def cluster_slots(cfg: TrainConfig) -> int:
    """How many trials of this size the cluster holds at once."""
    import ray

    res = ray.cluster_resources()
    if cfg.scaling.use_gpu:
        return max(1, int(res.get("GPU", 0) // cfg.scaling.num_workers))
    return max(1, int(res.get("CPU", 1) // (cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)))


def summary_table(grid: Grid, records: dict[str, dict]) -> str:
    """Plain-text table: trials x metrics, with deltas against the baseline."""
    base = records.get(grid.baseline, {}).get("metrics", {})
    keys = sorted({k for r in records.values() for k in r.get("metrics", {})})
    keys = [k for k in keys if k.split("/")[-1] in HEADLINE] or keys
    lines = [f"{'trial':28s} " + " ".join(f"{k:>22s}" for k in keys)]
    for name in grid.trials:
        r = records.get(name)
        if not r:
            continue
        cells = []
        for k in keys:
            v = r.get("metrics", {}).get(k)
            if v is None:
                cells.append(f"{'-':>22s}")
            elif name == grid.baseline or k not in base:
                cells.append(f"{v:22.2f}")
            else:
                cells.append(f"{v:13.2f} ({v - base[k]:+6.2f})")
        lines.append(f"{name + (' *' if name == grid.baseline else ''):28s} " + " ".join(cells))
    return "\n".join(lines)


#: the paper's headline figure of each task
HEADLINE = ("PQ", "AP", "mIoU", "VPQ", "J&F-Mean", "OV_PQ_heldout")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablations", description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", help="grid name (see --list)")
    p.add_argument(
        "--grids-file",
        default=str(GRIDS_FILE),
        help="YAML of grids (default omg_platform/pipelines/configs/ablations.yaml)",
    )
    p.add_argument("--trial", action="append", help="run only this trial (repeatable)")
    p.add_argument("--list", action="store_true", help="print the grids (or the grid's trials and configs) and exit")
    p.add_argument(
        "--storage",
        default=runs_dir("ablations"),
        help="checkpoints, logs and results: <storage>/<grid>/<trial>/ (default runs/ablations)",
    )
    p.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment (default: ablations)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster holds)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every trial, e.g. --set optim.max_steps=50",
    )
    p.add_argument(
        "--clip-weights",
        action="append",
        default=[],
        metavar="VARIANT=PATH",
        help="CLIP weights for the trials whose backbone has VARIANT's CLIP model, frozen or learned, e.g. "
        "tiny_convnext=runs/clip/tiny_convnext.pt (omg_platform/pipelines/clip_pretrain.py); the others keep theirs",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("ablations")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    from omg.config import parse_override

    try:
        grids = load_grids(args.grids_file)
        if args.list and not args.grid:
            for name, g in grids.items():
                print(f"{name:12s} {len(g.trials)} trials  {g.description}")
            return 0
        if not args.grid or args.grid not in grids:
            raise ValueError(
                f"--grid: choose one of {', '.join(grids)}" + (f" (not {args.grid!r})" if args.grid else "")
            )
        grid = grids[args.grid]
        unknown = [t for t in args.trial or [] if t not in grid.trials]
        if unknown:
            raise ValueError(f"--trial {unknown[0]!r}: grid {grid.name} has {', '.join(grid.trials)}")
        extra = {".".join(k): v for k, v in (parse_override(s) for s in args.set)}
        clip_weights, clip_given = {}, []
        for item in args.clip_weights:
            variant, sep, path = item.partition("=")
            try:
                if not sep or not path:
                    raise KeyError("expected VARIANT=PATH")
                clip_weights[get_variant(variant).clip_model] = shared_location(path, "--clip-weights")
                clip_given.append(f"{variant}={shared_location(path, '--clip-weights')}")
            except KeyError as err:
                raise ValueError(f"--clip-weights {item!r}: {err.args[0]}") from None
        storage = shared_location(args.storage, "--storage")
        configs = {
            t: trial_config(grid, t, storage, None, args.experiment, Path(args.grids_file).parent, extra, clip_weights)
            for t in grid.trials
        }
    except (SchemaError, ValueError, OSError) as err:
        return usage_error("ablations", err)
    if args.list:
        print(f"grid {grid.name}: {grid.description}\nbaseline: {grid.baseline}\n")
        for t, cfg in configs.items():
            spec = grid.trials[t]
            print(
                f"{t}: {spec.axes}\n  overrides {dict(grid.overrides, **spec.overrides)}\n"
                f"  variant {cfg.model.variant}, "
                f"{cfg.optim.max_steps or str(cfg.optim.epochs) + ' epochs'} steps, {cfg.scaling.num_workers} workers"
            )
        return 0
    import ray

    from omg_platform.pipelines.cluster import init_ray
    from omg_platform.tracking import tracking_uri

    t0 = time.monotonic()
    uri = tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:") or "://" not in uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the trials' processes log to the same store
    selected = args.trial or list(grid.trials)
    records: dict[str, dict] = {}
    todo = []
    for t in selected:
        done = uio.join(storage, grid.name, t, "trial.json")
        if uio.exists(done) and uio.read_json(done).get("status") == "finished":
            records[t] = uio.read_json(done)
            log.info(f"[ablate] {grid.name}/{t}: finished earlier ({done})")
        else:
            todo.append(t)
    changed = {
        t: changed_settings(r["settings"], trial_settings(configs[t])) for t, r in records.items() if "settings" in r
    }
    changed = {t: c for t, c in changed.items() if c}
    if changed:
        t, diff = next(iter(changed.items()))
        log.error(
            f"{uio.join(storage, grid.name, t)} finished with other settings "
            f"({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}): its result is not this run's; give "
            f"another --storage (or remove it to train again)"
        )
        return 2
    parent = ParentRun(grid, storage, args.experiment, args.tracking_uri, ";".join(sorted(clip_given)))
    init_ray(args.num_cpus)
    address = ray.get_runtime_context().gcs_address
    first = configs[selected[0]]
    slots = args.max_concurrent or cluster_slots(first)
    log.info(
        f"[ablate] grid {grid.name}: {len(selected)} trials, {len(todo)} to run, {slots} at a time; "
        f"MLflow parent run {parent.run_id} (experiment {args.experiment})"
    )
    # SPREAD: trial drivers go to different nodes (their training workers go where the CPUs/GPUs are)
    remote = ray.remote(run_trial).options(num_cpus=0, max_retries=0, scheduling_strategy="SPREAD")
    pending: dict = {}
    failures = []
    with Progress(f"ablate {grid.name}", total=len(todo), unit="trial") as prog:
        while todo or pending:
            while todo and len(pending) < slots:
                t = todo.pop(0)
                cfg = trial_config(
                    grid, t, storage, parent.run_id, args.experiment, Path(args.grids_file).parent, extra, clip_weights
                )
                job = TrialJob(
                    grid=grid.name,
                    trial=t,
                    name=cfg.name,
                    axes=grid.trials[t].axes,
                    config=cfg,
                    storage=storage,
                    ray_address=address,
                    eval_args=tuple(eval_args(grid)),
                    env={
                        **dataset_root_env(datasets_of(grid, cfg)),
                        **(
                            {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
                            if "MLFLOW_TRACKING_URI" in os.environ
                            else {}
                        ),
                    },
                )
                pending[remote.remote(job)] = t
                log.info(f"[ablate] {grid.name}/{t}: started ({grid.trials[t].axes})")
            ready, _ = ray.wait(list(pending), num_returns=1)
            t = pending.pop(ready[0])
            try:
                r = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 - the task itself died (node lost, ...): reported, not raised
                r = {
                    "trial": t,
                    "axes": grid.trials[t].axes,
                    "status": "failed",
                    "error": f"{type(err).__name__}: {err}",
                }
            records[t] = r
            if r["status"] != "finished":
                failures.append(t)
            prog.update(
                extra=f"{t} {r['status']} on {r.get('node', '?')}"
                + (f" in {format_duration(r['seconds'])}" if r.get("seconds") else "")
            )
    ok = not failures
    parent.finish([records[t] for t in selected if t in records], ok)
    print(summary_table(grid, records))
    for t in failures:
        print(f"FAILED {grid.name}/{t}: {records[t].get('error')}")
    print(
        f"MLflow parent run {parent.run_id}; trials under {uio.join(storage, grid.name)} "
        f"[{format_duration(time.monotonic() - t0)}]; report: omg dashboard --grid {grid.name}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
