"""MLflow helpers shared by the pipelines: where runs go, experiments with their artifacts under runs/.

Default tracking store: ``sqlite:///<repo>/runs/mlflow.db`` (MLflow 3's file store is in
maintenance mode); artifacts of experiments created here go to ``runs/mlartifacts``.
``MLFLOW_TRACKING_URI`` (or a config value) overrides it, e.g. a shared ``http://`` server.
"""

from __future__ import annotations

import os
import re
import warnings
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


# ----------------------------------------------------------------------------- models that ship

HERE = Path(__file__).resolve().parent
#: the direct dependencies the pyfunc model needs at inference time (their pins come from requirements.txt)
INFERENCE_REQUIREMENTS = ("torch", "torchvision", "open_clip_torch", "timm", "numpy", "pillow", "pycocotools",
                          "simplejpeg", "fsspec", "pyyaml", "scipy", "mlflow")


def inference_requirements() -> list[str]:
    """The pinned lines of requirements.txt for :data:`INFERENCE_REQUIREMENTS` (names alone when it is absent,
    e.g. in an installed wheel)."""
    pins = {}
    req = HERE.parent / "requirements.txt"
    if req.is_file():
        for line in req.read_text().splitlines():
            m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==", line)
            if m:
                pins[m.group(1).lower().replace("_", "-")] = line.split("#")[0].strip()
    return [pins.get(n.lower().replace("_", "-"), n) for n in INFERENCE_REQUIREMENTS]


def log_pyfunc(checkpoint: str, register_as: str | None = None, name: str = "model"):
    """Log ``checkpoint`` (a local file) to the active run as an MLflow LoggedModel in the pyfunc flavour
    (``pipelines/pyfunc_model.py``: models from code, the weights as an artifact, the ``omg`` package as code),
    with an input example (a click on a 64x64 image) and the signature MLflow derives from the model's type hints;
    with ``register_as``, a new version of that registered model. Returns MLflow's ``ModelInfo``."""
    import mlflow
    import numpy as np

    from omg.inference.schema import b64_png

    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)], -1).astype(np.uint8)
    example = [{"task": "interactive", "image": b64_png(image), "points": [[32, 32]]}]
    with warnings.catch_warnings():  # the schema validates requests, not MLflow (see pipelines/pyfunc_model.py)
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(HERE / "pyfunc_model.py"), artifacts={"checkpoint": checkpoint},
            code_paths=[str(HERE.parent / "omg")], input_example=example, pip_requirements=inference_requirements(),
            registered_model_name=register_as)


def resolve_model_uri(uri: str, tracking: str | None = None) -> str:
    """``models:/NAME/VERSION`` (or ``models:/NAME@alias``, ``models:/m-<model id>``), ``runs:/RUN_ID/PATH`` -> a
    local checkpoint file: the ``checkpoint`` artifact of a pyfunc model logged by :func:`log_pyfunc`, or the file a
    ``runs:/`` URI names, downloaded from the tracking store (``tracking``, else as :func:`tracking_uri`). Any other
    URI is returned as it is."""
    if not uri.startswith(("models:/", "runs:/")):
        return uri
    import mlflow
    from mlflow.exceptions import MlflowException

    store = tracking_uri(tracking)
    mlflow.set_tracking_uri(store)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as err:
        raise FileNotFoundError(f"{uri}: {err.message} (tracking store {store})") from None
    if local.is_file():
        return str(local)
    found = sorted((local / "artifacts").glob("*.pt")) or sorted(local.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{uri}: no checkpoint (.pt) in the logged model at {local}")
    return str(found[0])
