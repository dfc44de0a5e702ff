"""MLflow helpers shared by the pipelines: where runs go, experiments with their artifacts under runs/.

Default tracking store: ``sqlite:///<repo>/runs/mlflow.db`` (MLflow 3's file store is in
maintenance mode); artifacts of experiments created here go to ``runs/mlartifacts``.
``MLFLOW_TRACKING_URI`` (or a config value) overrides it, e.g. a shared ``http://`` server.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from pathlib import Path
from typing import Iterator

from omg.env import runs_dir
from omg.utils import io as uio
from omg.utils.log import get_logger

log = get_logger(__name__)


def tracking_uri(configured: str | None = None) -> str:
    """The MLflow tracking store: ``configured``, else ``$MLFLOW_TRACKING_URI``, else a sqlite file in the runs
    folder (which must then be on this machine's disk: a team's runs on object storage are tracked by a server)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if "://" in runs_dir():
        raise ValueError(
            f"OMG_RUNS_DIR is {runs_dir()}, and MLflow's default store (a sqlite file in it) cannot "
            "live on object storage: set MLFLOW_TRACKING_URI to the tracking server (ray_cluster.yaml "
            "starts one on the head: http://<head>:5000)"
        )
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
    """MLflow metric keys allow letters, digits, _ - . space and /: ``eval/omg-shapes/VPQ@1`` ->
    ``eval/omg-shapes/VPQ_1``, ``NoC>=20@85`` -> ``NoC_ge20_85``."""
    return "/".join(_BAD.sub("_", p.replace(">=", "_ge").replace("@", "_").replace("&", "")) for p in parts)


# ----------------------------------------------------------------------------- models that ship

HERE = Path(__file__).resolve().parent
#: the direct dependencies the pyfunc model needs at inference time (their pins come from requirements.txt)
INFERENCE_REQUIREMENTS = (
    "torch",
    "torchvision",
    "open_clip_torch",
    "timm",
    "numpy",
    "pillow",
    "pycocotools",
    "simplejpeg",
    "fsspec",
    "pyyaml",
    "scipy",
    "mlflow",
)


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
    (``omg_platform/pipelines/pyfunc_model.py``: models from code, the weights as an artifact, the ``omg`` package as
    code),
    with an input example (a click on a 64x64 image) and the signature MLflow derives from the model's type hints;
    with ``register_as``, a new version of that registered model. Returns MLflow's ``ModelInfo``."""
    import mlflow
    import numpy as np

    from omg.inference.schema import b64_png

    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)], -1).astype(np.uint8)
    example = [{"task": "interactive", "image": b64_png(image), "points": [[32, 32]]}]
    with (
        warnings.catch_warnings()
    ):  # the schema validates requests, not MLflow (see omg_platform/pipelines/pyfunc_model.py)
        warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(HERE / "pipelines" / "pyfunc_model.py"),
            artifacts={"checkpoint": checkpoint},
            code_paths=[str(HERE.parent / "omg")],
            input_example=example,
            pip_requirements=inference_requirements(),
            registered_model_name=register_as,
        )


def is_model_uri(uri: str | None) -> bool:
    """An MLflow model or run artifact URI (``models:/...``, ``runs:/...``), resolved where it is used."""
    return bool(uri) and str(uri).startswith(("models:/", "runs:/"))


def pin_model_uri(uri: str, tracking: str | None = None) -> str:
    """A ``models:/NAME@ALIAS`` or ``models:/NAME/latest`` URI -> ``models:/NAME/VERSION``, the version it names
    now, so that every node and every later step of a job use the same model when the alias moves. Other URIs
    (a version, ``models:/m-<id>``, ``runs:/``, paths) are returned as they are."""
    if not uri.startswith("models:/"):
        return uri
    import mlflow
    from mlflow.exceptions import MlflowException

    body = uri[len("models:/") :].rstrip("/")
    store = tracking_uri(tracking)
    client = mlflow.MlflowClient(tracking_uri=store)
    try:
        if "@" in body:
            name, alias = body.rsplit("@", 1)
            return f"models:/{name}/{client.get_model_version_by_alias(name, alias).version}"
        name, _, version = body.rpartition("/")
        if name and version.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise FileNotFoundError(f"{uri}: registered model {name!r} has no version (tracking store {store})")
            return f"models:/{name}/{max(int(v.version) for v in versions)}"
    except MlflowException as err:
        raise FileNotFoundError(f"{uri}: {err.message} (tracking store {store})") from None
    return uri


@contextlib.contextmanager
def _store(store: str) -> Iterator[None]:
    """MLflow's tracking and registry URIs are ``store`` inside the block, through the environment (restored after,
    exactly): some of its calls ignore the URIs they are given and fall back on the environment's, whose default
    without MLFLOW_TRACKING_URI is ``sqlite:///mlflow.db`` in the working directory, not this project's store."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in names}
    os.environ.update({k: store for k in names})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_model_uri(uri: str, tracking: str | None = None) -> str:
    """``models:/NAME/VERSION`` (or ``models:/NAME@alias``, ``models:/m-<model id>``), ``runs:/RUN_ID/PATH`` -> a
    checkpoint file on this node: the ``checkpoint`` artifact of a pyfunc model logged by :func:`log_pyfunc`, or the
    file a ``runs:/`` URI names, downloaded from the tracking store (``tracking``, else as :func:`tracking_uri`)
    into this node's cache (``$OMG_CACHE_DIR/models/<digest of store and URI>``; a model version once, a ``runs:/``
    artifact at every call; remove the folder to reclaim the space). Call it where the file is read (a Ray task
    resolves the URI on its own node: a path from the driver's disk means nothing elsewhere). Any other URI is
    returned as it is."""
    if not is_model_uri(uri):
        return uri
    import hashlib
    import shutil
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    from omg.env import cache_dir

    store = tracking_uri(tracking)
    pinned = pin_model_uri(uri, store)
    movable = pinned.startswith("runs:/")  # a run's artifact can be logged again; a model version cannot change
    folder = Path(cache_dir("models", hashlib.sha256(f"{store}\n{pinned}".encode()).hexdigest()[:20]))
    if movable or not (folder / ".complete").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
        try:
            with _store(store):  # a models:/ version of a logged model resolves its source through the global store
                mlflow.artifacts.download_artifacts(
                    artifact_uri=pinned, dst_path=str(tmp), tracking_uri=store, registry_uri=store
                )
            (tmp / ".source").write_text(f"{store} {pinned}\n")
            (tmp / ".complete").touch()
            if folder.exists() and (movable or not (folder / ".complete").is_file()):
                shutil.rmtree(folder, ignore_errors=True)
            try:
                tmp.rename(folder)  # atomic; another process of this node may have won the race: its copy serves
            except OSError:
                if not (folder / ".complete").is_file():
                    raise
        except MlflowException as err:
            raise FileNotFoundError(f"{uri}: {err.message} (tracking store {store})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) == 1:  # a runs:/ URI of one file
        return str(files[0])
    found = sorted((folder / "artifacts").glob("*.pt")) or sorted(p for p in files if p.suffix == ".pt")
    if not found:
        raise FileNotFoundError(f"{uri}: no checkpoint (.pt) in the logged model (downloaded to {folder})")
    return str(found[0])


# ----------------------------------------------------------------------------- metrics that survive the server


class MetricLog:
    """The metrics of one MLflow run, sent from a background thread, so that training never waits for the
    tracking server: :meth:`log` returns at once; the points go out in order in batches. While the server cannot
    be reached they wait in memory and are sent when it is back (MLflow's own retries, then ours, every few
    seconds, for as long as the run lasts); :meth:`close` waits up to ``timeout`` seconds for the last ones and
    returns those it could not send.

    A resumed run trains again the steps after its last checkpoint, which the first attempt may have logged: a
    point whose step is not above the last step the run already holds for that key (``resume=True`` reads them
    from the server) is not sent, so every curve keeps one point per step."""

    BATCH = 1000  # MLflow's log_batch limit

    def __init__(self, run_id: str, tracking: str, resume: bool = False):
        import threading

        import mlflow

        self.run_id = run_id
        self.client = mlflow.MlflowClient(tracking_uri=tracking)
        self.tracking = tracking
        self.last_step: dict[str, int] = {}
        if resume:
            self.last_step = {m.key: m.step for m in self.client.get_run(run_id).data._metric_objs}
        self._queue: list = []
        self._cond = threading.Condition()
        self._closing = False
        self.sent = 0
        self.error: str | None = None  # the last failure to send, while it lasts
        self._thread = threading.Thread(target=self._run, name="omg-metric-log", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, step) for k, v in metrics.items() if step > self.last_step.get(k, -1)]
        if points:
            with self._cond:
                self._queue.extend(points)
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def _run(self) -> None:
        delay = 1.0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue[: self.BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as err:  # noqa: BLE001 - unreachable, 5xx...: kept, tried again
                self.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                with self._cond:
                    self._cond.wait(delay)  # close() wakes it up to try again at once
                delay = min(delay * 2, 15.0)
                continue
            delay, self.error = 1.0, None
            with self._cond:
                del self._queue[: len(batch)]
                self.sent += len(batch)
                self._cond.notify_all()

    def close(self, timeout: float) -> list:
        """Wait up to ``timeout`` seconds for every point to be sent; -> the points that were not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._queue and time.monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            left = list(self._queue)
            self._queue.clear()  # the thread stops: nothing more to send
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return left


# ----------------------------------------------------------------------------- a training run in MLflow


class TrainingTracker:
    """A training run in MLflow, on rank 0 (a no-op elsewhere): starts the run, or resumes the run of a relaunched
    name (by its checkpoint's run id, else by name and storage), logs the resolved config, the shard manifests as
    dataset inputs, the tags (git commit, Ray job, variant, an ablation's axes); metrics through :class:`MetricLog`;
    the model at the end; and ends the run FINISHED or FAILED, never RUNNING. ``spec`` is the loop's
    ``WorkerSpec`` (omg_platform/pipelines/joint_train.py)."""

    def __init__(self, spec, rank: int, run_id: str | None, resumed: bool):
        from omg.config import config_dict, flat_params

        self.spec, self.cfg, self.rank = spec, spec.config, rank
        cfg = self.cfg
        self.run_id = run_id
        self.finished = False
        self.active = rank == 0 and spec.mlflow
        if not self.active:
            return
        import mlflow

        setup(cfg.tracking.experiment, cfg.tracking.tracking_uri)
        if self.run_id is None:  # a relaunch before the first checkpoint: the run of this name and storage
            runs = mlflow.search_runs(
                filter_string=f"tags.`omg.run_name` = '{spec.name}' and tags.`omg.storage` = '{spec.storage}'",
                output_format="list",
            )
            self.run_id = runs[0].info.run_id if runs else None
        existing = self.run_id is not None
        tags = {
            "omg.run_name": spec.name,
            "omg.storage": spec.storage,
            "git_commit": spec.git_commit,
            "ray_job_id": spec.ray_job_id,
            "omg.variant": cfg.model.variant,
            **cfg.tracking.tags,
        }
        if cfg.tracking.parent_run_id:
            tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
        run = mlflow.start_run(
            run_id=self.run_id,
            run_name=None if self.run_id else spec.name,
            tags=tags,
            log_system_metrics=cfg.tracking.system_metrics,
        )
        self.run_id = run.info.run_id
        # every metric point goes through here: sent in the background, held while the server is unreachable, and
        # a step the run already holds (trained again after a restart) not sent twice
        self.metrics = MetricLog(self.run_id, tracking_uri(cfg.tracking.tracking_uri), resume=existing)
        if not resumed:
            mlflow.log_params(flat_params(cfg))
            mlflow.log_dict(config_dict(cfg), "config.json")
            for name, m in spec.manifests.items():
                self._log_input(mlflow, name, m)
        else:
            mlflow.set_tag("omg.resumed", "true")

    @staticmethod
    def _log_input(mlflow, name: str, manifest: dict) -> None:
        """The shard manifest as an MLflow dataset input (one row per shard: path, rows, bytes, sha256)."""
        import pandas as pd

        df = pd.DataFrame(manifest["shards"]).astype({"rows": "float64", "bytes": "float64"})
        with warnings.catch_warnings():  # MLflow's hints about integer columns and local sources
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(
                df, source=manifest["_uri"], name=f"{name}/{manifest['split']}", digest=manifest["listing_digest"][:32]
            )
            mlflow.log_input(ds, context="training")

    def log(self, stats: dict, step: int) -> None:
        """A training step's statistics as ``train/...`` metrics (``loss/x`` -> ``train/loss_x``)."""
        self.log_metrics(
            {k.replace("loss/", "train/loss_") if k.startswith("loss/") else f"train/{k}": v for k, v in stats.items()},
            step,
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            self.metrics.log(metrics, step)

    def log_model(self, checkpoint: str) -> dict:
        """The exported checkpoint (any URI) as the run's pyfunc model (``tracking.log_model``; registered as
        ``tracking.register_as``), else as a plain artifact; -> ``{"logged_model", "registered_model"}`` (what
        there is) for the run record."""
        if not self.active:
            return {}
        import mlflow

        record = {}
        with uio.local_file(checkpoint) as local:  # MLflow logs local files (same base name: model.pt)
            if not self.cfg.tracking.log_model:
                mlflow.log_artifact(local, "checkpoint")
                return record
            info = log_pyfunc(local, register_as=self.cfg.tracking.register_as)
        record["logged_model"] = info.model_uri
        if info.registered_model_version is not None:
            record["registered_model"] = f"models:/{self.cfg.tracking.register_as}/{info.registered_model_version}"
        log.info(
            f"[train] logged the pyfunc model {info.model_uri}"
            + (f", registered as {record['registered_model']}" if "registered_model" in record else "")
        )
        return record

    def finish(self, status: str) -> None:
        """Send the metrics still held (waiting up to ``tracking.flush_timeout_s`` for an unreachable server, 30 s
        at most when the run failed anyway) and end the MLflow run. Points the server never took are saved to
        ``<run_dir>/unsent_metrics.jsonl`` and fail the run: its checkpoints are complete, a relaunch resumes."""
        if not self.active or self.finished:
            return
        self.finished = True
        import json

        import mlflow

        timeout = (
            self.cfg.tracking.flush_timeout_s if status == "FINISHED" else min(30.0, self.cfg.tracking.flush_timeout_s)
        )
        left = self.metrics.close(timeout)
        if left:
            uri = uio.join(self.spec.run_dir, "unsent_metrics.jsonl")
            lines = [
                json.dumps({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}) for m in left
            ]
            uio.write_bytes(uri, "".join(line + "\n" for line in lines).encode())
            if status == "FINISHED":
                # (the run stays RUNNING in MLflow: the server cannot be told otherwise; a relaunch ends it)
                raise RuntimeError(
                    f"the MLflow tracking server {self.metrics.tracking} did not take {len(left)} "
                    f"metric points in {timeout:.0f} s ({self.metrics.error}): they are saved in {uri}; "
                    f"the checkpoints in {self.spec.run_dir} are complete"
                )
        if mlflow.active_run() is not None:
            mlflow.end_run(status)
