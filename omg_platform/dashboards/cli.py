"""``omg dashboard`` (the static report) and ``omg mlflow-ui`` (the MLflow UI on a loopback port)."""

from __future__ import annotations

import argparse
import subprocess
import sys

from omg.env import runs_dir
from omg.utils.log import get_logger

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
        "--out", default=runs_dir("dashboard"), help="report folder (default $OMG_RUNS_DIR/dashboard, runs/dashboard)"
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    from omg_platform.dashboards.report import build_report

    if not args.grid and not args.run:
        log.error("give --grid NAME and/or --run RUN_ID")
        return 2
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


def cmd_mlflow_ui(args: argparse.Namespace) -> int:
    cmd = ui_command(args.port, args.tracking_uri)
    print(
        f"MLflow UI: http://127.0.0.1:{args.port}  "
        f"(store {cmd[cmd.index('--backend-store-uri') + 1]}; Ctrl-C stops it)",
        flush=True,
    )
    try:
        return subprocess.run(cmd).returncode
    except KeyboardInterrupt:
        return 0
