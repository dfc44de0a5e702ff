"""Ablation grids: definitions, trial configs, the settings a finished trial is reused under, and a rerun that skips
finished trials (the smoke grid's training end to end: tests/pipelines/test_cluster.py and the quick demo)."""

from __future__ import annotations

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
