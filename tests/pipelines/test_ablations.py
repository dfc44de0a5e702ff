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
