"""omg_platform/dashboards/report.py on a made-up MLflow store: a grid run with the trials' own CLIPs and again with
``--clip-weights`` gets a section each and a table of both side by side."""

from __future__ import annotations

import csv
from pathlib import Path


def _grid_run(mlflow, exp_id: str, clip_weights: str | None, pq: dict[str, float]) -> str:
    tags = {"omg.grid": "g", "omg.kind": "ablation-grid", "omg.baseline": "a", "omg.axes": "x"}
    if clip_weights is not None:  # a grid run from before the tag existed has none
        tags["omg.clip_weights"] = clip_weights
    with mlflow.start_run(experiment_id=exp_id, run_name="grid-g", tags=tags) as parent:
        mlflow.log_params({"trials": "a,b", "description": "made up"})
        for trial, value in pq.items():
            with mlflow.start_run(
                experiment_id=exp_id, run_name=trial, nested=True, tags={"omg.trial": trial, "omg.axis.x": trial}
            ):
                mlflow.log_metric("eval/ds/PQ", value)
    return parent.info.run_id


def test_a_grid_run_with_each_clip_setting_side_by_side(tmp_path):
    import mlflow

    from omg_platform.dashboards.report import build_report, find_grids

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.create_experiment("ablations")
    _grid_run(mlflow, exp_id, None, {"a": 10.0, "b": 12.0})
    html = Path(build_report(tmp_path / "one", grid="g", tracking_uri=uri, with_gallery=False)).read_text()
    assert "Ablation grid “g”</h2>" in html and "side by side" not in html, "one CLIP setting: one section, as before"

    _grid_run(mlflow, exp_id, "", {"a": 11.0, "b": 13.0})  # the newer run of the same setting replaces it
    _grid_run(mlflow, exp_id, "tiny_convnext=/w/clip.pt;tiny_vit=/w/vit.pt", {"a": 30.0, "b": 25.0})
    runs = find_grids("g")
    assert [g.clip_label for g in runs] == [
        "the trials' own CLIPs",
        "pretrained tiny_convnext (clip.pt), tiny_vit (vit.pt)",
    ]
    assert [r.metrics["ds/PQ"] for r in runs[0].rows] == [11.0, 13.0]

    html = Path(build_report(tmp_path / "two", grid="g", tracking_uri=uri, with_gallery=False)).read_text()
    assert "CLIP: the trials&#x27; own CLIPs" in html and "CLIP: pretrained tiny_convnext (clip.pt)" in html
    side = list(csv.DictReader(open(tmp_path / "two" / "grid-g-clips.csv")))
    assert [(r["setting"], float(r["ds/PQ"])) for r in side] == [
        ("a (the trials' own CLIPs)", 11.0),
        ("a (pretrained tiny_convnext (clip.pt), tiny_vit (vit.pt))", 30.0),
        ("b (the trials' own CLIPs)", 13.0),
        ("b (pretrained tiny_convnext (clip.pt), tiny_vit (vit.pt))", 25.0),
    ]
    assert (tmp_path / "two" / "grid-g.csv").exists() and (tmp_path / "two" / "grid-g-clip1.csv").exists()
