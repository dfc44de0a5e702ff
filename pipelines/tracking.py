"""MLflow helpers shared by the pipelines: where runs go, experiments with their artifacts under runs/.

Default tracking store: ``sqlite:///<repo>/runs/mlflow.db`` (MLflow 3's file store is in
maintenance mode); artifacts of experiments created here go to ``runs/mlartifacts``.
``MLFLOW_TRACKING_URI`` (or a config value) overrides it, e.g. a shared ``http://`` server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omg.env import runs_dir


def tracking_uri(configured: str | None = None) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    Path(runs_dir()).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(runs_dir('mlflow.db')).resolve()}"


def setup(experiment: str, configured_uri: str | None = None) -> str:
    """Point MLflow at the tracking store and select (or create) ``experiment``; return its id."""
    import mlflow

    uri = tracking_uri(configured_uri)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        artifacts = None
        if uri.startswith("sqlite:"):
            artifacts = Path(runs_dir("mlartifacts")).resolve().as_uri()
        exp_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


_BAD = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_key(*parts: str) -> str:
    """MLflow metric keys allow letters, digits, _ - . space and /: ``eval/omg-shapes/VPQ@1`` -> ``eval/omg-shapes/VPQ_1``,
    ``NoC>=20@85`` -> ``NoC_ge20_85``."""
    return "/".join(_BAD.sub("_", p.replace(">=", "_ge").replace("@", "_").replace("&", "")) for p in parts)
