"""Ablation grids and sweeps on Ray Tune: every trial a training run plus the evaluation fan-out, tracked in MLflow.

    python -m omg_platform.pipelines.ablations --grid cpu                   # the CPU grid on omg-shapes
    python -m omg_platform.pipelines.ablations --grid backbone --list       # what a grid would run
    python -m omg_platform.pipelines.ablations --grid cpu --search random --samples 8 --scheduler asha
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m omg_platform.pipelines.ablations --grid backbone \
        --storage s3://bucket/omg/ablations

Grids live in ``omg_platform/pipelines/configs/ablations.yaml``: a base run config, overrides, a baseline trial,
trials (overrides + the axis values they stand for), and optionally a ``sweep`` space (ranges of settings around the
baseline) with the ``metric`` a scheduler or search decides on. One run is one Ray Tune experiment
(``<storage>/<grid>/tune*`` or ``sweep-*``): each trial is a Tune trial that launches the training run's Ray Train
``TorchTrainer`` (a child MLflow run of the grid's parent run, tagged ``omg.axis.<axis>=<value>``), whose workers
report every validation to Tune, then evaluates the model into the same child run and leaves
``<storage>/<grid>/<trial>/trial.json``. Trials run as the cluster's CPUs (GPUs) allow. ``--scheduler asha`` stops
the losers at their validations (marked ``omg.stopped`` in MLflow); ``--search random|optuna --samples N`` samples
the sweep space. The same command run again restores the experiment (``Tuner.restore``): finished trials are not
trained again, the others resume from their runs' newest checkpoints. ``omg dashboard`` turns a grid's runs into
the paper-shaped tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
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
from omg_platform.errors import UsageError, describe, root_cause, usage_error
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
class Domain:
    """One swept setting of a grid's ``sweep`` space: exactly one of a log-uniform or uniform range ``[low, high]``,
    an integer range ``[low, high)``, or a choice of values."""

    loguniform: list[float] | None = None
    uniform: list[float] | None = None
    randint: list[int] | None = None
    choice: list[Any] | None = None

    def __post_init__(self):
        given = [k for k in ("loguniform", "uniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            got = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of loguniform, uniform, randint, choice (got {got})")
        values = getattr(self, given[0])
        if given[0] != "choice" and (len(values) != 2 or not values[0] < values[1]):
            raise ValueError(f"{given[0]}: expected [low, high] with low < high, got {values}")
        if given[0] == "loguniform" and values[0] <= 0:
            raise ValueError(f"loguniform: the range must be positive, got {values}")
        if given[0] == "choice" and not values:
            raise ValueError("choice: no values")

    def tune_domain(self):
        from ray import tune

        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.randint is not None:
            return tune.randint(*self.randint)
        return tune.choice(list(self.choice))

    def __str__(self) -> str:
        kind = next(k for k in ("loguniform", "uniform", "randint", "choice") if getattr(self, k) is not None)
        return f"{kind} {list(getattr(self, kind))}"


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
    #: what a scheduler (``--scheduler asha``) or a search (``--search optuna``) decides on: what the trials report
    #: at every validation while they train (``val/<dataset>/<metric>``, or ``train/loss``: the mean loss since the
    #: last validation), and whether more is better
    metric: str = ""
    mode: str = "max"
    #: dotted config key -> its range, sampled around the baseline trial by ``--search random|optuna``
    sweep: dict[str, Domain] = field(default_factory=dict)
    #: dotted config keys a run of the grid must be given (``--set KEY=VALUE``), e.g. the model a fine-tuning grid
    #: starts from
    needs: tuple[str, ...] = ()

    def __post_init__(self):
        if self.baseline not in self.trials:
            raise ValueError(f"baseline {self.baseline!r} is not one of the trials ({', '.join(self.trials)})")
        axes = {tuple(sorted(t.axes)) for t in self.trials.values()}
        if len(axes) != 1:
            raise ValueError("every trial must give a value for the same axes")
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {self.mode!r}")


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


def base_config(grid: Grid, grids_dir: Path = GRIDS_FILE.parent) -> dict:
    """The grid's base run config (``base``, relative to the grids file) as a plain dict."""
    path = grids_dir / grid.base
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise SchemaError(str(path), "", f"cannot read the grid's base config: {err}") from None


def trial_config(
    grid: Grid,
    trial: str,
    storage: str,
    parent_run_id: str | None,
    experiment: str,
    grids_dir: Path = GRIDS_FILE.parent,
    extra: dict | None = None,
    clip_weights: dict[str, str] | None = None,
    sample: dict[str, Any] | None = None,
    base: dict | None = None,
) -> TrainConfig:
    """The trial's full run config (validated): base + grid overrides + trial overrides + tracking.
    ``clip_weights`` (open_clip model name -> weights): ``model.pretrained`` of every trial whose backbone variant
    is that CLIP model, frozen or learned (``--clip-weights``). ``sample``: a sweep trial (named ``trial``) is the
    baseline trial with these values of the sweep space set, and stands for them as its axes. ``base``: the grid's
    base config as :func:`base_config` read it (a trial on another node has no copy of the grids folder)."""
    data = base if base is not None else base_config(grid, grids_dir)
    spec = grid.trials[grid.baseline if sample else trial]
    data = apply_values(data, grid.overrides, f"grid {grid.name} overrides")
    data = apply_values(data, spec.overrides, f"grid {grid.name} trial {trial}")
    data = apply_values(data, extra or {}, "command-line overrides")
    if sample:
        data = apply_values(data, sample, f"grid {grid.name} sweep sample {trial}")
        spec = TrialSpec(axes=sample_axes(sample))
    clip_model = get_variant(data.get("model", {}).get("variant", ModelConfig.variant)).clip_model
    if clip_model in (clip_weights or {}):
        data = apply_values(data, {"model.pretrained": clip_weights[clip_model]}, "--clip-weights")
    tags = {
        "omg.grid": grid.name,
        "omg.trial": trial,
        "omg.kind": "sweep-trial" if sample else "ablation-trial",
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
    return from_dict(TrainConfig, data, f"{grid.base} (grid {grid.name}, trial {trial})")


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


# ============================================================================= one trial (a Tune trial)


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one ``omg ablate`` run is given (``tune.with_parameters``): how to build a trial's config
    (:func:`trial_config`'s arguments), the evaluation that follows its training, and the environment its training
    workers and evaluation tasks need on any node (dataset roots, the MLflow URI)."""

    grid: Grid
    storage: str
    parent_run_id: str
    experiment: str
    base: dict  # the grid's base config, read by the driver
    extra: dict[str, Any]
    clip_weights: dict[str, str]
    eval_args: tuple[str, ...]
    env: dict[str, str]

    def config(self, trial: str, sample: dict[str, Any] | None = None) -> TrainConfig:
        return trial_config(
            self.grid,
            trial,
            self.storage,
            self.parent_run_id,
            self.experiment,
            extra=self.extra,
            clip_weights=self.clip_weights,
            sample=sample,
            base=self.base,
        )


def sample_name(trial_id: str) -> str:
    """A sweep trial's name from its Tune trial id (``3f2a1_00004`` -> ``sample-00004``): stable when the experiment
    is restored, so a restored trial resumes its own training run."""
    return f"sample-{trial_id.rsplit('_', 1)[-1]}"


def run_trial(params: dict, plan: TrialPlan) -> None:
    """One trial, in its Tune trial actor: the training run (Ray Train ``TorchTrainer`` launched from here; its
    workers report every validation to Tune, whose scheduler may stop the trial there), then the evaluation
    fan-out into the trial's MLflow run, then ``<storage>/<grid>/<trial>/trial.json`` (the trial's record)."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from omg_platform.pipelines import evaluate, joint_train

    t0 = time.monotonic()
    os.environ.update(plan.env)  # this actor's process: its training workers and evaluation tasks inherit them
    sample = params.get("sample")
    trial = params["trial"] if not sample else sample_name(tune.get_context().get_trial_id())
    cfg = plan.config(trial, sample)
    run = joint_train.prepare_run(cfg)
    joint_train.build_trainer(run, callbacks=(TuneReportCallback(),), report=True).fit()
    info = uio.read_json(uio.join(run.storage, run.name, "run.json"))
    trial_dir = uio.join(plan.storage, plan.grid.name, trial)
    cmd = ["--checkpoint", info["model"], "--out", uio.join(trial_dir, "eval"), "--quiet", *plan.eval_args]
    cmd += ["--run-id", info["mlflow_run_id"]] if info.get("mlflow_run_id") else ["--no-mlflow"]
    rc = evaluate.main(cmd)
    record = {
        "grid": plan.grid.name,
        "trial": trial,
        "axes": sample_axes(sample) if sample else plan.grid.trials[trial].axes,
        "node": info.get("node") or ray.util.get_node_ip_address(),
        "status": "finished" if rc == 0 else "failed",
        "settings": trial_settings(cfg),
        "model": info["model"],
        "run_id": info.get("mlflow_run_id"),
        "step": info.get("step"),
        "metrics": collect_eval(uio.join(trial_dir, "eval")),
        "seconds": round(time.monotonic() - t0, 1),
    }
    uio.write_json(uio.join(trial_dir, "trial.json"), record)
    if rc != 0:
        raise RuntimeError(f"{plan.grid.name}/{trial}: the evaluation of {info['model']} failed (exit status {rc})")


def sample_axes(sample: dict[str, Any]) -> dict[str, str]:
    """A sweep trial's sampled values as axis values (MLflow tags): numbers to 4 significant digits."""
    return {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in sample.items()}


def collect_eval(out_dir: str) -> dict[str, float]:
    """``{"<dataset>/<metric>": value}`` from every result.json under an evaluate.py output dir."""
    metrics = {}
    for path in uio.glob(out_dir, "**/result.json"):
        r = uio.read_json(path)
        metrics.update({f"{r['dataset']}/{k}": float(v) for k, v in r["metrics"].items() if v is not None and v == v})
    return metrics


# ============================================================================= the driver


class ParentRun:
    """The grid's MLflow parent run: found again by (grid, storage, kind) on a rerun. Tagged ``omg.clip_weights``
    with the ``--clip-weights`` it ran with (``VARIANT=PATH;...``, empty: the trials' own CLIPs), which the
    dashboard groups grids by. ``kind``: ``ablation-grid`` (the dashboard's tables) or ``sweep``."""

    def __init__(
        self,
        grid: Grid,
        storage: str,
        experiment: str,
        tracking: str | None,
        clip_weights: str = "",
        kind: str = "ablation-grid",
        extra_tags: dict[str, str] | None = None,
    ):
        import mlflow

        from omg_platform.tracking import setup

        self.mlflow = mlflow
        exp_id = setup(experiment, tracking)
        tags = {
            "omg.grid": grid.name,
            "omg.kind": kind,
            "omg.storage": storage,
            "omg.baseline": grid.baseline,
            "omg.axes": ",".join(next(iter(grid.trials.values())).axes),
            "omg.clip_weights": clip_weights,
            **(extra_tags or {}),
        }
        keys = ("omg.grid", "omg.kind", "omg.storage", *(extra_tags or {}))
        found = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys)
        runs = mlflow.search_runs([exp_id], filter_string=found, output_format="list")
        if runs:
            self.run = mlflow.start_run(run_id=runs[0].info.run_id)
        else:
            prefix = "grid" if kind == "ablation-grid" else kind
            self.run = mlflow.start_run(run_name=f"{prefix}-{grid.name}", tags=tags)
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

    def mark_stopped(self, trial: str, step: int, why: str) -> None:
        """The child run of a trial the scheduler stopped (its workers were killed mid-run: it is still RUNNING):
        KILLED, tagged ``omg.stopped`` with the step and the reason (the dashboard shows it)."""
        client = self.mlflow.MlflowClient()
        runs = self.mlflow.search_runs(
            [self.run.info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}' and tags.`omg.trial` = '{trial}'",
            output_format="list",
        )
        for run in runs:
            client.set_tag(run.info.run_id, "omg.stopped", f"step {step}: {why}")
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "KILLED")

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


#: how trials are chosen (``--search``) and stopped (``--scheduler``)
SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha")


@dataclass(frozen=True)
class TuneSettings:
    """How an ``omg ablate`` run drives Ray Tune: the grid's trials (``grid``) or ``samples`` draws from the grid's
    ``sweep`` space (``random``, ``optuna``); every trial to its end (``fifo``) or the losers stopped at their
    validations by ASHA (``asha``, on the grid's ``metric``)."""

    search: str = "grid"
    samples: int = 8
    scheduler: str = "fifo"
    seed: int = 0
    grace_steps: int | None = None  # ASHA's first rung (default: the validation interval)
    reduction_factor: int = 3

    def experiment(self, grid: Grid, selected: list[str]) -> str:
        """The Tune experiment's folder under ``<storage>/<grid>/``: the same command finds it again (and restores
        it); another selection, search or scheduler is another experiment."""
        if self.search == "grid":
            name = "tune"
            if selected != list(grid.trials):
                name += "-" + hashlib.sha256(",".join(sorted(selected)).encode()).hexdigest()[:8]
        else:
            name = f"sweep-{self.search}-n{self.samples}-seed{self.seed}"
        return name + ("-asha" if self.scheduler == "asha" else "")


def search_space(grid: Grid, todo: list[str], settings: TuneSettings, slots: int) -> tuple[dict, Any, int]:
    """-> (Tune's param space, its search algorithm, num_samples); at most ``slots`` trials at once."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if settings.search == "grid":
        return {"trial": tune.grid_search(todo)}, BasicVariantGenerator(max_concurrent=slots), 1
    space = {"trial": grid.baseline, "sample": {k: d.tune_domain() for k, d in grid.sweep.items()}}
    if settings.search == "random":
        return space, BasicVariantGenerator(random_state=settings.seed, max_concurrent=slots), settings.samples
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as err:
        raise UsageError(f"--search optuna needs Optuna: pip install optuna ({err})") from None
    search = OptunaSearch(metric=grid.metric, mode=grid.mode, seed=settings.seed)
    return space, ConcurrencyLimiter(search, max_concurrent=slots), settings.samples


def scheduler_for(grid: Grid, cfg: TrainConfig, settings: TuneSettings):
    """ASHA on the grid's validation metric, in training steps (the workers report ``step`` with every validation):
    first rung at ``grace_steps``, the last at ``optim.max_steps``; None for ``fifo``."""
    if settings.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="step",
        metric=grid.metric,
        mode=grid.mode,
        max_t=cfg.optim.max_steps + 1,  # a trial that reaches the end is evaluated, not stopped for being done
        grace_period=settings.grace_steps or cfg.validation.every_steps,
        reduction_factor=settings.reduction_factor,
    )


def check_metric(grid: Grid, cfg: TrainConfig, settings: TuneSettings) -> None:
    """ASHA and Optuna decide on the grid's ``metric``: it must be one the trials' validations report."""
    if settings.scheduler == "fifo" and settings.search != "optuna":
        return
    what = f"--scheduler {settings.scheduler}" if settings.scheduler != "fifo" else "--search optuna"
    if not grid.metric:
        raise UsageError(f"{what}: grid {grid.name} names no metric (metric: val/DATASET/METRIC in its YAML)")
    parts = grid.metric.split("/")
    datasets = {p.split(":")[0] for p in cfg.validation.pairs}
    if grid.metric != "train/loss" and (len(parts) != 3 or parts[0] != "val" or parts[1] not in datasets):
        raise UsageError(
            f"{what}: grid {grid.name}'s metric {grid.metric!r} is not reported during training: it must be "
            f"train/loss or val/DATASET/METRIC of a validation pair ({', '.join(cfg.validation.pairs) or 'none'})"
        )
    if not cfg.validation.every_steps or cfg.optim.max_steps is None:
        raise UsageError(f"{what}: the trials need validation.every_steps and optim.max_steps (steps are ASHA's time)")


def trial_progress(prog: Progress, grid: str, every: float = 5.0):
    """A Tune callback: a line when a trial starts, the progress line (with ETA) when one ends, and every few
    seconds the placement groups of trials' dead training controllers released
    (:func:`~omg_platform.pipelines.cluster.release_orphaned_placement_groups`)."""
    from ray import tune

    from omg_platform.pipelines.cluster import release_orphaned_placement_groups

    class _Callback(tune.Callback):
        _last = 0.0

        def on_step_begin(self, iteration, trials, **info):
            if time.monotonic() - self._last > every:
                self._last = time.monotonic()
                released = release_orphaned_placement_groups()
                if released:
                    log.info(f"[ablate] released the CPUs/GPUs of {released} ended training run(s)")

        def on_trial_start(self, iteration, trials, trial, **info):
            log.info(f"[ablate] {grid}/{trial_name(trial.config, trial.trial_id)}: started")

        def on_trial_complete(self, iteration, trials, trial, **info):
            step = (trial.last_result or {}).get("step")
            prog.update(extra=f"{trial_name(trial.config, trial.trial_id)} ended at step {step}")

        def on_trial_error(self, iteration, trials, trial, **info):
            prog.update(extra=f"{trial_name(trial.config, trial.trial_id)} FAILED")

    return _Callback()


def trial_name(config: dict, trial_id: str | None) -> str:
    return sample_name(trial_id or "?") if config.get("sample") else config["trial"]


def run_tune(
    plan: TrialPlan,
    selected: list[str],
    todo: list[str],
    settings: TuneSettings,
    first: TrainConfig,
    slots: int,
    prog: Progress,
) -> tuple[list[tuple[str, dict, dict, Exception | None]], int]:
    """Run the Tune experiment of this selection and settings, or restore it where a killed driver left it (its
    finished trials are not trained again, the others resume from their runs' newest checkpoints): -> ((trial, its
    parameters, its last reported result, its error) per trial, how many trials neither ended nor failed: Tune
    stopped by Ctrl-C or SIGTERM, its experiment saved for the same command to resume)."""
    from ray import tune

    path = uio.join(plan.storage, plan.grid.name)
    name = settings.experiment(plan.grid, selected)
    # the trial's training workers (their own placement group) and its evaluation tasks hold its CPUs/GPUs; the
    # trial itself only waits on them, so it asks for next to nothing (Tune refuses a request of nothing at all)
    trainable = tune.with_resources(tune.with_parameters(run_trial, plan=plan), {"memory": 1})
    where = uio.join(path, name)
    if tune.Tuner.can_restore(where):
        log.info(f"[ablate] resuming the Tune experiment {where}: its finished trials are not trained again")
        tuner = tune.Tuner.restore(where, trainable, resume_unfinished=True, resume_errored=True)
    else:
        space, search, samples = search_space(plan.grid, todo, settings, slots)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=samples,
                search_alg=search,
                scheduler=scheduler_for(plan.grid, first, settings),
                trial_dirname_creator=lambda t: f"{trial_name(t.config, t.trial_id)}-{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=path,
                verbose=0,  # our progress line instead of Tune's tables
                callbacks=[trial_progress(prog, plan.grid.name)],
            ),
        )
    results = tuner.fit()
    unfinished = len(results) - results.num_terminated - results.num_errors
    return [
        (trial_name(r.config, r.metrics.get("trial_id")), r.config, r.metrics, r.error) for r in results
    ], unfinished


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
HEADLINE = ("PQ", "AP", "mIoU", "VPQ", "J&F-Mean", "OV_PQ", "OV_PQ_heldout")


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
        help="checkpoints, Tune experiments and results: <storage>/<grid>/ (default runs/ablations)",
    )
    p.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment (default: ablations)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as the cluster holds)")
    t = p.add_argument_group("search and early stopping (Ray Tune)")
    t.add_argument(
        "--search",
        choices=SEARCHES,
        default="grid",
        help="grid: the grid's trials (default); random or optuna: --samples draws from its sweep space",
    )
    t.add_argument("--samples", type=int, default=8, help="trials of a random or optuna search (default 8)")
    t.add_argument("--seed", type=int, default=0, help="the search's seed (default 0: the same draws every time)")
    t.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="fifo",
        help="fifo: every trial to its end (default); asha: stop the losers at their validations (the grid's metric)",
    )
    t.add_argument("--grace-steps", type=int, help="ASHA: steps before a trial can be stopped (default: validation)")
    t.add_argument("--reduction-factor", type=int, default=3, help="ASHA: 1 in N trials goes on at a rung (default 3)")
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


def sweep_table(grid: Grid, records: dict[str, dict]) -> str:
    """Plain-text table of a sweep: the sampled values, the status and the headline metrics, best first."""
    keys = sorted({k for r in records.values() for k in r.get("metrics", {}) if k.split("/")[-1] in HEADLINE})
    params = list(grid.sweep)
    head = f"{'trial':14s} " + " ".join(f"{p:>16s}" for p in params) + f" {'status':>22s} "
    lines = [head + " ".join(f"{k:>22s}" for k in keys)]
    target = grid.metric.replace("val/", "", 1)
    sign = -1 if grid.mode == "max" else 1
    order = sorted(records, key=lambda t: (sign * records[t].get("metrics", {}).get(target, -sign * math.inf), t))
    for t in order:
        r = records[t]
        cells = [f"{r['axes'].get(p, '-'):>16s}" for p in params] + [f"{r['status']:>22s}"]
        cells += [f"{r['metrics'][k]:22.2f}" if k in r.get("metrics", {}) else f"{'-':>22s}" for k in keys]
        lines.append(f"{t:14s} " + " ".join(cells))
    return "\n".join(lines)


def settings_from(args: argparse.Namespace, grid: Grid) -> TuneSettings:
    settings = TuneSettings(
        search=args.search,
        samples=args.samples,
        scheduler=args.scheduler,
        seed=args.seed,
        grace_steps=args.grace_steps,
        reduction_factor=args.reduction_factor,
    )
    if settings.search != "grid":
        if not grid.sweep:
            raise UsageError(f"--search {settings.search}: grid {grid.name} has no sweep space (sweep: in its YAML)")
        if args.trial:
            raise UsageError(f"--trial selects a grid's trials; --search {settings.search} samples its sweep space")
    if settings.samples < 1 or settings.reduction_factor < 2:
        raise UsageError("--samples must be at least 1 and --reduction-factor at least 2")
    return settings


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
            raise UsageError(
                f"--grid: choose one of {', '.join(grids)}" + (f" (not {args.grid!r})" if args.grid else "")
            )
        grid = grids[args.grid]
        unknown = [t for t in args.trial or [] if t not in grid.trials]
        if unknown:
            raise UsageError(f"--trial {unknown[0]!r}: grid {grid.name} has {', '.join(grid.trials)}")
        settings = settings_from(args, grid)
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
                raise UsageError(f"--clip-weights {item!r}: {err.args[0]}") from None
        storage = shared_location(args.storage, "--storage")
        configs = {
            t: trial_config(grid, t, storage, None, args.experiment, Path(args.grids_file).parent, extra, clip_weights)
            for t in grid.trials
        }
        check_metric(grid, configs[grid.baseline], settings)
        missing = [k for k in grid.needs if k not in extra]
        if missing and not args.list:
            raise UsageError(f"grid {grid.name} needs --set {missing[0]}=... ({grid.description})")
    except (SchemaError, ValueError, OSError, UsageError) as err:
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
        if grid.sweep:
            print(f"\nsweep space (--search random|optuna, around {grid.baseline}; metric {grid.metric or '-'}):")
            for k, d in grid.sweep.items():
                print(f"  {k}: {d}")
        return 0
    from omg_platform.pipelines.cluster import init_ray
    from omg_platform.tracking import tracking_uri

    t0 = time.monotonic()
    uri = tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:") or "://" not in uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the trials log to the same store
    sweep = settings.search != "grid"
    selected = [] if sweep else args.trial or list(grid.trials)
    records: dict[str, dict] = {}
    for t in selected:
        done = uio.join(storage, grid.name, t, "trial.json")
        if uio.exists(done) and uio.read_json(done).get("status") == "finished":
            records[t] = uio.read_json(done)
    changed = {
        t: changed_settings(r["settings"], trial_settings(configs[t])) for t, r in records.items() if "settings" in r
    }
    changed = {t: c for t, c in changed.items() if c}
    if changed:
        t, diff = next(iter(changed.items()))
        return usage_error(
            "ablations",
            f"{uio.join(storage, grid.name, t)} finished with other settings "
            f"({'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}): its result is not this run's; give "
            f"another --storage (or remove it to train again)",
        )
    todo = [t for t in selected if t not in records]
    for t in records:
        log.info(f"[ablate] {grid.name}/{t}: finished earlier ({uio.join(storage, grid.name, t, 'trial.json')})")
    parent = ParentRun(
        grid,
        storage,
        args.experiment,
        args.tracking_uri,
        ";".join(sorted(clip_given)),
        kind="sweep" if sweep else "ablation-grid",
        extra_tags={"omg.tune_experiment": settings.experiment(grid, selected)},
    )
    plan = TrialPlan(
        grid=grid,
        storage=storage,
        parent_run_id=parent.run_id,
        experiment=args.experiment,
        base=base_config(grid, Path(args.grids_file).parent),
        extra=extra,
        clip_weights=clip_weights,
        eval_args=tuple(eval_args(grid)),
        env={
            **dataset_root_env(datasets_of(grid, configs[grid.baseline])),
            **{k: os.environ[k] for k in ("MLFLOW_TRACKING_URI",) if k in os.environ},
        },
    )
    first = configs[selected[0] if selected else grid.baseline]
    count = settings.samples if sweep else len(todo)
    if count:  # Ray only when there is something to run
        init_ray(args.num_cpus)
    slots = args.max_concurrent or (cluster_slots(first) if count else 1)
    log.info(
        f"[ablate] grid {grid.name}: {count if sweep else len(selected)} trials, {count} to run, {slots} at a time "
        f"({settings.search} search, {settings.scheduler} scheduler); MLflow parent run {parent.run_id} "
        f"(experiment {args.experiment})"
    )
    outcome, unfinished = [], 0
    if count:
        with Progress(f"ablate {grid.name}", total=count, unit="trial") as prog:
            outcome, unfinished = run_tune(plan, selected, todo, settings, first, slots, prog)
    failures = []
    for t, params, last, error in outcome:
        done = uio.join(storage, grid.name, t, "trial.json")
        record = uio.read_json(done) if uio.exists(done) else {"trial": t, "axes": {}, "status": "failed"}
        if error is not None:
            record.update(status="failed", error=describe(root_cause(error)))
        elif record["status"] != "finished":  # no error and no record: interrupted, or the scheduler stopped it
            record["axes"] = sample_axes(params["sample"]) if sweep else grid.trials[t].axes
            if unfinished:  # Ctrl-C or SIGTERM: the same command resumes it
                record.update(status="interrupted")
            else:
                record.update(status=f"stopped at step {last.get('step')}", step=last.get("step"))
                record["metrics"] = {k[len("val/") :]: v for k, v in last.items() if k.startswith("val/")}
                why = f"stopped by {settings.scheduler.upper()} on {grid.metric}"
                parent.mark_stopped(t, last.get("step"), why)
        records[t] = record
        if record["status"] == "failed":
            failures.append(t)
    ok = not failures and not unfinished
    parent.finish(list(records.values()), ok)
    print(sweep_table(grid, records) if sweep else summary_table(grid, records))
    for t in failures:
        print(f"FAILED {grid.name}/{t}: {records[t].get('error')}")
    print(
        f"MLflow parent run {parent.run_id}; trials under {uio.join(storage, grid.name)} "
        f"[{format_duration(time.monotonic() - t0)}]" + ("" if sweep else f"; report: omg dashboard --grid {grid.name}")
    )
    if unfinished:
        log.error(
            f"ablations: interrupted with {unfinished} of {len(outcome)} trials unfinished; the same command resumes "
            "them (finished trials are not trained again)"
        )
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
