"""Ablation grids: definitions, trial configs, and the smoke grid end to end (Ray tasks, MLflow parent and
child runs, rerun skips finished trials) followed by its dashboard."""

from __future__ import annotations


import pytest

from omg.config import TrainConfig
from omg.data.catalog import load_catalog
from omg.utils.typed import SchemaError
from pipelines.ablations import axis_values, load_grids, trial_config
from tests import ROOT

GRIDS = ROOT / "pipelines" / "configs" / "ablations.yaml"


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
    assert axis_values(grid) == {"backbone": ["convnext", "vit"], "backbone_training": ["learned", "frozen"],
                                 "interactive_attention": ["masked", "full"]}
    # --clip-weights: the ConvNeXt trials, frozen and learned, start from the given CLIP; the ViT trial keeps its own
    weights = {"omg_tiny_convnext": "/runs/clip/tiny_convnext.pt"}
    pretrained = {t: trial_config(grid, t, "/tmp/x", None, "ablations", clip_weights=weights).model.pretrained
                  for t in grid.trials}
    assert pretrained == {"convnext-learned-masked": "/runs/clip/tiny_convnext.pt", "vit-learned-masked": None,
                          "convnext-frozen-masked": "/runs/clip/tiny_convnext.pt",
                          "convnext-learned-full": "/runs/clip/tiny_convnext.pt"}


def test_bad_grids_are_rejected_with_the_grid_named(tmp_path):
    bad = tmp_path / "grids.yaml"
    bad.write_text("g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: nope\n"
                   "  trials:\n    a: {axes: {x: '1'}}\n")
    with pytest.raises(SchemaError, match="g.*baseline 'nope' is not one of the trials"):
        load_grids(bad)
    bad.write_text("g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: a\n"
                   "  trials:\n    a: {axes: {x: '1'}}\n    b: {axes: {y: '2'}}\n")
    with pytest.raises(SchemaError, match="same axes"):
        load_grids(bad)
    bad.write_text("g:\n  description: x\n  base: shapes_smoke.yaml\n  baseline: a\n"
                   "  trials:\n    a: {axes: {x: '1'}, overrides: {model.hidden_dim: 62}}\n")
    grid = load_grids(bad)["g"]
    with pytest.raises(SchemaError, match="trial a.*hidden_dim"):
        trial_config(grid, "a", str(tmp_path), None, "ablations", ROOT / "pipelines" / "configs")


# The smoke grid end to end (trials, MLflow parent and children, a rerun that skips them, the dashboard) runs on
# a 2-node loopback cluster in tests/test_cluster.py, and on one node in the quick demo (tests/test_cli.py).


def test_a_finished_trial_of_other_settings_is_not_taken_for_this_run(tmp_path, capsys):
    """A rerun into the same storage reuses finished trials; one whose settings changed since (here the CLIP it
    starts from, as --clip-weights gives) would put an old result under new settings: refused, before Ray starts."""
    from pipelines.ablations import changed_settings, main, trial_settings
    from omg.utils import io as uio

    grid = load_grids()["smoke"]
    storage = str(tmp_path / "abl")
    shards = str(tmp_path / "shards")
    for t in grid.trials:  # both trials finished with the trials' own CLIPs
        cfg = trial_config(grid, t, storage, None, "ablations", extra={"data.shards": shards})
        uio.write_json(f"{storage}/smoke/{t}/trial.json", {"trial": t, "axes": grid.trials[t].axes,
                                                          "status": "finished", "settings": trial_settings(cfg)})
    weights = str(tmp_path / "clip.pt")
    rc = main(["--grid", "smoke", "--storage", storage, "--set", f"data.shards={shards}",
               "--clip-weights", f"tiny_convnext={weights}", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "finished with other settings (model.pretrained: None -> " in err and "another --storage" in err
    assert not (tmp_path / "m.db").exists(), "refused before the MLflow parent run"
    a = trial_settings(trial_config(grid, "convnext-masked", storage, None, "ablations"))
    b = trial_settings(trial_config(grid, "convnext-full", storage, None, "ablations"))
    assert changed_settings(a, a) == [] and changed_settings(a, b) == ["model.interactive_self_attn: 'masked' -> 'full'"]
