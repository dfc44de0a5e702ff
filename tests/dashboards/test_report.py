"""omg_platform/dashboards/report.py on a made-up MLflow store: a grid run with the trials' own CLIPs and again with
``--clip-weights`` gets a section each and a table of both side by side."""

from __future__ import annotations

import csv
from pathlib import Path


def _grid_run(mlflow, exp_id: str, clip_weights: str | None, pq: dict[str, float], grid: dict | None = None) -> str:
    tags = {"omg.grid": "g", "omg.kind": "ablation-grid", "omg.baseline": "a", "omg.axes": "x"}
    if clip_weights is not None:  # a grid run from before the tag existed has none
        tags["omg.clip_weights"] = clip_weights
    with mlflow.start_run(experiment_id=exp_id, run_name="grid-g", tags=tags) as parent:
        mlflow.log_params({"trials": ",".join(pq), "description": "made up"})
        if grid is not None:  # what omg ablate logs: the grid as it ran
            mlflow.log_dict(grid, "grid.json")
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
    exp_id = mlflow.create_experiment("ablations", artifact_location=(tmp_path / "artifacts").as_uri())
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


def test_the_paper_beside_each_axis_and_deltas_within_the_noise(tmp_path):
    """A grid with the paper's figures (ablations.yaml ``paper``) shows them under the axis's table with their own
    delta, in the columns of the tasks they stand for; a delta within twice the measured seed-to-seed spread
    (``noise``) is marked ~noise instead of better or worse."""
    import mlflow

    from omg_platform.dashboards.report import build_report

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp_id = mlflow.create_experiment("ablations", artifact_location=(tmp_path / "artifacts").as_uri())
    grid = {
        "paper": {"source": "made-up paper", "axes": {"x": {"a": {"ds/PQ": 49.9}, "b": {"ds/PQ": 45.2}}}},
        "noise": {"source": "3 seeds", "std": {"ds/PQ": 1.5}},
    }
    _grid_run(mlflow, exp_id, None, {"a": 30.0, "b": 28.0, "c": 25.0}, grid)
    html = Path(build_report(tmp_path / "r", grid="g", tracking_uri=uri, with_gallery=False)).read_text()
    assert "the paper: <b>b</b></td><td>45.2 <span class=worse>(-4.70)</span>" in html
    assert "made-up paper" in html and "3 seeds" in html
    assert "<span class=same>(-2.00 ~noise)</span>" in html and "<span class=worse>(-5.00)</span>" in html
    rows = {r["setting"]: r for r in csv.DictReader(open(tmp_path / "r" / "grid-g.csv"))}
    assert rows["b"]["ds/PQ delta"] == "-2.00 ~noise" and rows["c"]["ds/PQ delta"] == "-5.00"


def test_mlflow_ui_stops_with_every_child_on_sigterm(tmp_path):
    """`omg mlflow-ui` starts `mlflow server` (uvicorn and its workers): SIGTERM to the command, as a supervisor or
    `kill` sends it, stops every one of them and frees the port (they used to keep holding it); the address it prints
    opens the runs (MLflow 3 opens in its GenAI view otherwise)."""
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time

    import psutil

    from tests.services import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "omg_platform.cli", "mlflow-ui", "--port", str(port)]
    ui = subprocess.Popen(
        [*cmd, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    family: list = []
    try:
        # the address it prints opens the runs' view ("machine learning"), not MLflow 3's GenAI home
        address = ui.stdout.readline().split()[2]
        threading.Thread(target=ui.stdout.read, daemon=True).start()  # the server's own lines, drained
        assert address == f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning", address
        deadline = time.monotonic() + 120
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert ui.poll() is None and time.monotonic() < deadline, "the MLflow UI did not start"
            time.sleep(0.5)
        family = psutil.Process(ui.pid).children(recursive=True)
        assert family, "the server runs as a child"
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.pid for p in alive]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the port is free"
    finally:
        if ui.poll() is None:
            family += [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
        for p in family:
            try:
                p.kill()  # nothing outlives the test, whatever failed
            except psutil.Error:
                pass


def test_a_grid_report_never_overwrites_the_demos(monkeypatch, tmp_path):
    """`omg dashboard --grid cpu` (as docs/training.md says) writes its own folder: the demo's report, with its Models
    section, stays (it used to be rewritten without it)."""
    from omg_platform.dashboards.cli import default_out

    monkeypatch.setenv("OMG_RUNS_DIR", str(tmp_path))
    demo_report = tmp_path / "dashboard" / "index.html"
    assert default_out("cpu") == str(tmp_path / "dashboard" / "cpu")
    assert default_out(None) == str(tmp_path / "dashboard" / "runs")
    assert str(demo_report.parent) not in (default_out("cpu"), default_out(None))


def test_an_axis_ends_at_or_above_the_highest_value():
    """A curve stays inside its chart: the last tick is never below the highest value (0..7.9 used to end at 7.5)."""
    from omg_platform.dashboards.svg import nice_ticks

    for lo, hi in ((0, 7.9), (0, 9.6), (0.2, 0.93), (-3, 41), (12.5, 12.5), (0, 1e-3)):
        ticks = nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 12, (lo, hi, ticks)
