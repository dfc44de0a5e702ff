"""``omg dashboard`` (the static report) and ``omg mlflow-ui`` (the MLflow UI on a loopback port)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from omg.env import runs_dir
from omg.utils.log import get_logger
from omg_platform.errors import interruptible

log = get_logger(__name__)


def register(sub) -> None:
    d = sub.add_parser(
        "dashboard",
        help="MLflow runs -> static HTML report + CSV tables (ablation grids, models)",
        description="Build the report from MLflow: paper-shaped tables (rows = settings, columns = tasks) with "
        "deltas against the grid's baseline, one table per ablation axis, per-task bar charts, "
        "training curves and an overlay gallery. Writes OUT/index.html, OUT/*.csv and OUT/gallery/.",
    )
    d.add_argument("--grid", help="an ablation grid that ran (omg ablate --grid NAME); its newest run is used")
    d.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="[NAME=]RUN_ID",
        help="also show this MLflow run as a model row (repeatable)",
    )
    d.add_argument(
        "--out",
        help="report folder (default $OMG_RUNS_DIR/dashboard/<grid>, or .../dashboard/runs for --run only: the demo's "
        "own report, $OMG_RUNS_DIR/dashboard/index.html, is never overwritten)",
    )
    d.add_argument("--experiment", default="ablations", help="MLflow experiment of the grid (default ablations)")
    d.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    d.add_argument("--no-gallery", action="store_true", help="skip downloading overlay images")
    d.set_defaults(func=cmd_dashboard)

    ui = sub.add_parser(
        "mlflow-ui",
        help="start the MLflow UI on 127.0.0.1 for this project's runs and print its address",
        description="Runs `mlflow server` on a loopback port (never another interface) over the project's "
        "tracking store, in the foreground until Ctrl-C.",
    )
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.add_argument("--tracking-uri", help="backend store (default: $MLFLOW_TRACKING_URI or runs/mlflow.db)")
    ui.set_defaults(func=cmd_mlflow_ui)


def default_out(grid: str | None) -> str:
    """Where a report goes by default: a folder of its own under the runs folder's dashboard/, beside the demo's."""
    return runs_dir("dashboard", grid or "runs")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from omg_platform.dashboards.report import build_report

    if not args.grid and not args.run:
        log.error("give --grid NAME and/or --run RUN_ID")
        return 2
    args.out = args.out or default_out(args.grid)
    try:
        path = build_report(
            args.out,
            grid=args.grid,
            runs=args.run,
            experiment=args.experiment,
            tracking_uri=args.tracking_uri,
            with_gallery=not args.no_gallery,
        )
    except LookupError as err:
        log.error(err.args[0])
        return 2
    print(f"report: {path}")
    return 0


def ui_command(port: int, tracking_uri: str | None = None) -> list[str]:
    from omg_platform.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise ValueError(f"the tracking store {uri} is already a server: open it in a browser")
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


#: the MLflow UI's page of experiments in its "machine learning" view (MLflow 3 opens in its GenAI view, where
#: runs, metrics and models are one toggle away; the view is the page's ``workflowType`` parameter)
UI_PAGE = "/#/experiments?workflowType=machine_learning"


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    cmd = ui_command(args.port, args.tracking_uri)
    print(
        f"MLflow UI: http://127.0.0.1:{args.port}{UI_PAGE}  "
        f"(store {cmd[cmd.index('--backend-store-uri') + 1]}; Ctrl-C stops it)",
        flush=True,
    )
    # the server, its uvicorn and its workers in a process group of their own: Ctrl-C or SIGTERM here stops them all
    server = subprocess.Popen(cmd, start_new_session=True)
    try:
        with interruptible():
            return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(server)


def stop_group(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop ``proc`` and every process of its group (SIGTERM, then SIGKILL after ``timeout_s``)."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; its group may still hold workers
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
