"""Ablation grids: definitions, trial configs, the settings a finished trial is reused under, and a rerun that skips
finished trials (the smoke grid's training end to end: tests/pipelines/test_cluster.py and the quick demo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omg.config import TrainConfig
from omg.data.catalog import load_catalog
from omg.utils.typed import SchemaError
from omg_platform.pipelines.ablations import axis_values, load_grids, trial_config
from tests import ROOT

GRIDS = ROOT / "omg_platform" / "pipelines" / "configs" / "ablations.yaml"


def test_every_grid_builds_valid_trial_configs(tmp_path):
    grids = load_grids(GRIDS)
    assert {"cpu", "smoke", "backbone", "resnet", "interactive", "cotraining"} <= set(grids)
    catalog = load_catalog()
    for name, grid in grids.items():
        for trial in grid.trials:
            cfg = trial_config(grid, trial, str(tmp_path), "parent123", "ablations")
            assert isinstance(cfg, TrainConfig) and cfg.name == f"{name}-{trial}"
            assert cfg.tracking.parent_run_id == "parent123"
            assert cfg.tracking.tags["omg.grid"] == name and cfg.tracking.tags["omg.trial"] == trial
            assert all(d.name in catalog for d in cfg.data.datasets)
            assert cfg.checkpoint.storage_path == f"{tmp_path}/{name}"
        for d in grid.eval.datasets:
            assert d in catalog, f"grid {name}: eval dataset {d}"


def test_the_cpu_grid_varies_one_axis_per_trial():
    grid = load_grids(GRIDS)["cpu"]
    base = trial_config(grid, grid.baseline, "/tmp/x", None, "ablations")
    assert (base.model.variant, base.model.interactive_self_attn) == ("tiny_convnext_learned", "masked")
    seen = {}
    for trial, spec in grid.trials.items():
        cfg = trial_config(grid, trial, "/tmp/x", None, "ablations")
        changed = [a for a, v in spec.axes.items() if v != grid.trials[grid.baseline].axes[a]]
        assert len(changed) <= 1, trial
        seen[trial] = (cfg.model.variant, cfg.model.interactive_self_attn, cfg.model.is_frozen)
    assert seen["vit-learned-masked"][0] == "tiny_vit_learned"
    assert seen["convnext-frozen-masked"][2] is True and seen["convnext-learned-masked"][2] is False
    assert seen["convnext-learned-full"][1] == "full"
    assert axis_values(grid) == {
        "backbone": ["convnext", "vit"],
        "backbone_training": ["learned", "frozen"],
        "interactive_attention": ["masked", "full"],
    }
    # --clip-weights: the ConvNeXt trials, frozen and learned, start from the given CLIP; the ViT trial keeps its own
    weights = {"omg_tiny_convnext": "/runs/clip/tiny_convnext.pt"}
    pretrained = {
        t: trial_config(grid, t, "/tmp/x", None, "ablations", clip_weights=weights).model.pretrained
        for t in grid.trials
    }
    assert pretrained == {
        "convnext-learned-masked": "/runs/clip/tiny_convnext.pt",
        "vit-learned-masked": None,
        "convnext-frozen-masked": "/runs/clip/tiny_convnext.pt",
        "convnext-learned-full": "/runs/clip/tiny_convnext.pt",
    }


def test_bad_grids_are_rejected_with_the_grid_named(tmp_path):
    bad = tmp_path / "grids.yaml"
    bad.write_text(
        "g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: nope\n  trials:\n    a: {axes: {x: '1'}}\n"
    )
    with pytest.raises(SchemaError, match="g.*baseline 'nope' is not one of the trials"):
        load_grids(bad)
    bad.write_text(
        "g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: a\n"
        "  trials:\n    a: {axes: {x: '1'}}\n    b: {axes: {y: '2'}}\n"
    )
    with pytest.raises(SchemaError, match="same axes"):
        load_grids(bad)
    bad.write_text(
        "g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: a\n"
        "  trials:\n    a: {axes: {x: '1'}, overrides: {model.hidden_dim: 62}}\n"
    )
    grid = load_grids(bad)["g"]
    with pytest.raises(SchemaError, match="trial a.*hidden_dim"):
        trial_config(grid, "a", str(tmp_path), None, "ablations", ROOT / "omg_platform" / "pipelines" / "configs")


# The smoke grid end to end (trials, MLflow parent and children, the dashboard) runs on a 2-node loopback cluster
# in tests/pipelines/test_cluster.py, and on one node in the quick demo (tests/test_cli.py).


def _finish_trials(grid, storage: str, shards: str, metrics: dict[str, dict[str, float]]) -> None:
    """The grid's trials as finished ones: the trial.json that ``run_trial`` writes
    (omg_platform/pipelines/ablations.py)."""
    from omg.utils import io as uio
    from omg_platform.pipelines.ablations import trial_settings

    for t in grid.trials:
        cfg = trial_config(grid, t, storage, None, "ablations", extra={"data.shards": shards})
        uio.write_json(
            f"{storage}/{grid.name}/{t}/trial.json",
            {
                "grid": grid.name,
                "trial": t,
                "axes": grid.trials[t].axes,
                "node": "127.0.0.1",
                "status": "finished",
                "settings": trial_settings(cfg),
                "model": f"{storage}/{grid.name}/{cfg.name}/model.pt",
                "step": 2,
                "metrics": metrics[t],
                "seconds": 1.0,
            },
        )


def test_a_rerun_skips_finished_trials_and_reuses_the_parent_run(ray_local, tmp_path, capsys):
    """Trials already finished in the storage (with the settings of this run) are not trained again, on any rerun;
    the grid keeps its one MLflow parent run (found by grid and storage) and the summary still compares them."""
    import mlflow

    from omg_platform.pipelines.ablations import main

    grid = load_grids()["smoke"]
    storage, shards, uri = str(tmp_path / "abl"), str(tmp_path / "shards"), f"sqlite:///{tmp_path}/m.db"
    _finish_trials(
        grid, storage, shards, {"convnext-masked": {"omg-shapes/PQ": 40.0}, "convnext-full": {"omg-shapes/PQ": 42.5}}
    )
    argv = ["--grid", "smoke", "--storage", storage, "--set", f"data.shards={shards}", "--tracking-uri", uri]
    for _ in range(2):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert err.count("finished earlier") == 2 and "2 trials, 0 to run" in err, err
        assert "convnext-full" in out and "42.50 ( +2.50)" in out, out
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ablations"], output_format="list")
    assert [(r.data.tags["omg.kind"], r.info.status) for r in runs] == [("ablation-grid", "FINISHED")], (
        "one parent run, reused by the rerun"
    )


def test_a_finished_trial_of_other_settings_is_not_taken_for_this_run(tmp_path, capsys):
    """A rerun into the same storage reuses finished trials; one whose settings changed since (here the CLIP it
    starts from, as --clip-weights gives) would put an old result under new settings: refused, before Ray starts."""
    from omg_platform.pipelines.ablations import changed_settings, main, trial_settings

    grid = load_grids()["smoke"]
    storage = str(tmp_path / "abl")
    shards = str(tmp_path / "shards")
    _finish_trials(grid, storage, shards, {t: {} for t in grid.trials})  # with the trials' own CLIPs
    weights = str(tmp_path / "clip.pt")
    rc = main(
        [
            "--grid",
            "smoke",
            "--storage",
            storage,
            "--set",
            f"data.shards={shards}",
            "--clip-weights",
            f"tiny_convnext={weights}",
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "finished with other settings (model.pretrained: None -> " in err and "another --storage" in err
    assert not (tmp_path / "m.db").exists(), "refused before the MLflow parent run"
    a = trial_settings(trial_config(grid, "convnext-masked", storage, None, "ablations"))
    b = trial_settings(trial_config(grid, "convnext-full", storage, None, "ablations"))
    assert changed_settings(a, a) == [] and changed_settings(a, b) == [
        "model.interactive_self_attn: 'masked' -> 'full'"
    ]


# ----------------------------------------------------------------------------- a sweep on Ray Tune, end to end

SWEEP_GRID = """
tiny:
  description: a random sweep at test size, its validation a Tune scheduler decides on
  base: shapes_smoke.yaml
  overrides:
    scaling.num_workers: 1
    optim.max_steps: 4
    checkpoint.every_steps: 2
    validation.every_steps: 2
    validation.limit: 2
    validation.pairs: ["omg-shapes-sam:val:interactive"]
    tracking.log_model: false
  baseline: a
  trials:
    a: {axes: {x: a}}
  # min, not max: of these draws the first trial scores lowest at step 2, so ASHA keeps it and stops the second
  metric: val/omg-shapes-sam/mIoU
  mode: min
  sweep:
    optim.lr: {loguniform: [1.0e-5, 1.0e-1]}
  eval:
    pairs: ["omg-shapes-sam:val:interactive"]
    limit: 2
"""


def _after_the_next_state_save(folder: Path, proc, deadline: float) -> None:
    """Return right after Tune next rewrites its ``experiment_state-*.json`` under ``folder`` (whole JSON)."""

    def state():
        files = sorted(folder.glob("*/experiment_state-*.json"))
        return (files[-1], files[-1].stat().st_mtime_ns) if files else (None, None)

    _, before = state()
    while True:
        path, mtime = state()
        if path is not None and mtime != before:
            try:
                json.loads(path.read_text())
                return
            except ValueError:  # caught mid-write: the next look sees it whole
                pass
        assert proc.poll() is None and time.monotonic() < deadline, "Tune did not save its state"
        time.sleep(0.02)


@pytest.mark.slow(seconds=150)
def test_an_asha_sweep_stops_a_loser_and_a_killed_driver_resumes_without_retraining(
    smoke_shards, tiny_shapes, tmp_path
):
    """``--search random --scheduler asha``: 3 draws, one at a time. The first trains to the end and is evaluated;
    the driver (and its Ray) is SIGKILLed as the second starts. The same command restores the Tune experiment: the
    finished trial is not trained or evaluated again, the second runs (the first at its rung in the restored
    scheduler: it goes on), and ASHA stops the third at its first validation, which scores worse (its workers
    killed mid-run: its MLflow run KILLED and tagged, no evaluation). The draws' validation mIoU at step 2 is
    14.20, 14.67 and 14.71 (training is deterministic): with ``mode: min`` the third is the loser."""
    import shutil

    import mlflow

    shutil.copy(ROOT / "omg_platform" / "pipelines" / "configs" / "shapes_smoke.yaml", tmp_path)
    (tmp_path / "grids.yaml").write_text(SWEEP_GRID)
    storage, uri = tmp_path / "sweeps", f"sqlite:///{tmp_path}/m.db"
    env = dict(os.environ, OMG_ROOT_OMG_SHAPES_SAM=tiny_shapes, MLFLOW_TRACKING_URI=uri, OMG_RUNS_DIR=str(tmp_path))
    # Tune saves its experiment's state every 10 s or more by default (a trial that ended within that window before
    # the kill is resumed as unfinished); every 2 s here. The kill comes right after a save that followed the second
    # trial's start (so the state records the first trial's end), not during one: a SIGKILL mid-copy leaves a
    # truncated experiment_state file, which Tune cannot restore (seen once with a save every loop)
    env["TUNE_GLOBAL_CHECKPOINT_S"] = "2"
    cmd = [
        sys.executable,
        "-m",
        "omg_platform.pipelines.ablations",
        *("--grid", "tiny", "--grids-file", str(tmp_path / "grids.yaml"), "--storage", str(storage)),
        *("--set", f"data.shards={smoke_shards}", "--search", "random", "--samples", "3", "--scheduler", "asha"),
        *("--reduction-factor", "2", "--max-concurrent", "1", "--num-cpus", "2"),
    ]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (storage / "tiny" / "tiny-sample-00001" / "config.json").exists():  # the second trial starts
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the second trial did not start"
            time.sleep(0.2)
        _after_the_next_state_save(storage / "tiny", proc, deadline)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    first = storage / "tiny" / "sample-00000" / "trial.json"
    assert json.loads(first.read_text())["status"] == "finished"
    assert not (storage / "tiny" / "tiny-sample-00001" / "checkpoints").exists(), "killed before its first step"
    written = first.stat().st_mtime_ns

    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "resuming the Tune experiment" in out.stderr, out.stderr[-3000:]
    assert first.stat().st_mtime_ns == written, "the finished trial was not trained or evaluated again"
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("sample-")}
    assert set(rows) == {"sample-00000", "sample-00001", "sample-00002"}, out.stdout
    assert "finished" in rows["sample-00000"] and "finished" in rows["sample-00001"], out.stdout
    assert "stopped at step 2" in rows["sample-00002"], out.stdout

    mlflow.set_tracking_uri(uri)
    runs = {
        r.data.tags.get("omg.trial", r.info.run_name): r
        for r in mlflow.search_runs(experiment_names=["ablations"], output_format="list")
    }
    assert (
        runs["sample-00000"].info.status == "FINISHED"
        and "eval/omg-shapes-sam/mIoU" in runs["sample-00000"].data.metrics
    )
    stopped = runs["sample-00002"]
    assert stopped.info.status == "KILLED", stopped.info.status
    assert stopped.data.tags["omg.stopped"] == "step 2: stopped by ASHA on val/omg-shapes-sam/mIoU"
    assert stopped.data.tags["omg.kind"] == "sweep-trial" and "omg.axis.optim.lr" in stopped.data.tags
    assert not any(k.startswith("eval/") for k in stopped.data.metrics), "a stopped trial is not evaluated"
    assert runs["sweep-tiny"].data.tags["omg.kind"] == "sweep"


def test_an_interrupted_grid_says_so_and_exits_130(tmp_path, capsys, monkeypatch):
    """Ctrl-C (or SIGTERM) stops Tune, which saves its experiment and returns: the trials that neither ended nor failed
    are interrupted, not "stopped by the scheduler"; the driver says that the same command resumes them and exits
    130, so that a caller (the demo) does not take the grid for done. Tune itself is replaced here: Tune's reaction
    to the signal is Ray's."""
    import mlflow

    from omg_platform.pipelines import ablations, cluster

    def tune_interrupted(plan, selected, todo, settings, first, slots, prog):
        return [(t, {}, {"step": 1}, None) for t in todo], len(todo)

    monkeypatch.setattr(cluster, "init_ray", lambda num_cpus=None: None)
    monkeypatch.setattr(ablations, "run_tune", tune_interrupted)
    uri = f"sqlite:///{tmp_path}/m.db"
    argv = ["--grid", "smoke", "--storage", str(tmp_path / "s"), "--tracking-uri", uri, "--max-concurrent", "1"]
    assert ablations.main(argv) == 130
    out, err = capsys.readouterr()
    said = "ablations: interrupted with 2 of 2 trials unfinished; the same command resumes them (finished trials"
    assert err.strip().splitlines()[-1].endswith(f"{said} are not trained again)")
    assert [line.split()[0] for line in out.splitlines() if line.startswith("convnext-")] == [
        "convnext-masked",
        "convnext-full",
    ]
    mlflow.set_tracking_uri(uri)
    (parent,) = mlflow.search_runs(experiment_names=["ablations"], output_format="list")
    assert parent.info.status == "FAILED" and "omg.stopped" not in parent.data.tags


def test_the_placement_group_of_a_dead_actor_is_released(ray_local):
    """A placement group whose creating actor died (a Ray Train controller killed with its stopped Tune trial) is
    removed, so its CPUs come back to the next trial; one a driver created (Tune's own) and a live actor's stay."""
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    from omg_platform.pipelines.cluster import release_orphaned_placement_groups

    @ray_local.remote(num_cpus=0)
    class Creator:
        def reserve(self) -> str:
            pg = placement_group([{"CPU": 0.1}])
            ray_local.get(pg.ready())
            return pg.id.hex()

    mine = placement_group([{"CPU": 0.1}])
    ray_local.get(mine.ready())
    dead, alive = Creator.remote(), Creator.remote()
    orphan, kept = ray_local.get(dead.reserve.remote()), ray_local.get(alive.reserve.remote())
    ray_local.kill(dead)
    deadline = time.monotonic() + 30
    while placement_group_table()[orphan]["state"] != "REMOVED":
        release_orphaned_placement_groups()
        assert time.monotonic() < deadline, "the dead actor's placement group stayed"
        time.sleep(0.2)
    table = placement_group_table()
    assert table[kept]["state"] == "CREATED" and table[mine.id.hex()]["state"] == "CREATED"
    ray_local.kill(alive)
    remove_placement_group(mine)
    release_orphaned_placement_groups()


def test_sweep_settings_are_checked_before_anything_runs(tmp_path, capsys):
    """A sweep needs a sweep space; ASHA and Optuna need a metric the trials' validations report; a range is one
    kind with low < high. Each is said in one line before Ray or MLflow starts."""
    from omg_platform.pipelines.ablations import Domain, TuneSettings, main, search_space

    for argv, says in (
        (["--grid", "smoke", "--search", "random"], "grid smoke has no sweep space"),
        (["--grid", "smoke", "--scheduler", "asha"], "grid smoke names no metric"),
        (["--grid", "cpu", "--search", "random", "--trial", "vit-learned-masked"], "--trial selects a grid's trials"),
        (["--grid", "finetune"], "grid finetune needs --set model.init_from=..."),  # the model it fine-tunes
    ):
        assert main([*argv, "--storage", str(tmp_path)]) == 2
        assert says in capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(ValueError, match="low < high"):
        Domain(loguniform=[1e-3, 1e-4])
    with pytest.raises(ValueError, match="exactly one"):
        Domain(uniform=[0, 1], choice=[1])
    grid = load_grids(GRIDS)["cpu"]
    assert grid.metric == "train/loss" and set(grid.sweep) == {
        "optim.lr",
        "optim.weight_decay",
        "model.num_queries",
    }
    optuna = TuneSettings(search="optuna", samples=4)
    space, search, samples = search_space(grid, [], optuna, slots=2)
    assert samples == 4 and type(search).__name__ == "ConcurrencyLimiter" and set(space["sample"]) == set(grid.sweep)
    assert optuna.experiment(grid, []) == "sweep-optuna-n4-seed0"
    assert TuneSettings(scheduler="asha").experiment(grid, list(grid.trials)) == "tune-asha"
    assert TuneSettings().experiment(grid, ["vit-learned-masked"]).startswith("tune-")
