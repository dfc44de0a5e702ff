"""Process-wide environment defaults for the offline / Ray / MLflow stack.

One place, used by the ``omg`` CLI, the ``omg_platform/pipelines/`` entry points and the tests
(``tests/conftest.py``). Each value is a *default*: a variable the user already set
is left alone.

- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: no model weights are ever fetched
  from a hub; weights come from an open_clip pretrained tag already in the cache, a
  local path or an fsspec URI.
- ``RAY_AUTH_MODE=disabled``: a fresh ``ray.init()`` otherwise enables token auth and
  later ``ray job submit`` calls fail with "Missing authentication token".
- ``RAY_USAGE_STATS_ENABLED=0``: no usage reporting (there is no network anyway).
- ``RAY_worker_niceness=0``: Ray runs every task and actor at nice 15, so on a machine where any
  other process is busy its workers get a few percent of the CPU (measured: the 6-step smoke training
  took 633 s instead of 39 s beside two busy processes on 2 cores). The workers are where our work
  runs, so they run at the normal priority (for Ray started by this process; a cluster's nodes take
  the variable from the ``ray start`` environment).
- ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``: progress bars of artifact uploads
  would interleave with the pipelines' own progress output.
- ``TOKENIZERS_PARALLELISM=false``: quiet fork warnings in Ray workers.
- ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: an ``mlflow server`` started from here (``omg mlflow-ui``, the
  tests' servers) runs no job runner: the platform submits no MLflow server jobs (GenAI evaluation), and the
  runner's store is a folder in /dev/shm that MLflow never removes.
"""

from __future__ import annotations

import os
from typing import Mapping

DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_worker_niceness": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def runs_dir(*parts: str, environ: Mapping[str, str] | None = None) -> str:
    """Where everything a run writes goes: ``$OMG_RUNS_DIR`` (read at each call; from ``environ`` when given),
    else ``runs`` (relative to the working directory); ``parts`` are joined under it. The one place every default
    output path comes from."""
    env = os.environ if environ is None else environ
    return os.path.join(env.get("OMG_RUNS_DIR") or "runs", *parts)


#: the dataset folders ``omg demo`` generates under the data directory: the full demo's, then ``--quick``'s
DEMO_DATASETS = ("omg-shapes", "omg-shapes-quick")


def data_dir() -> str:
    """Where generated datasets go: ``$OMG_DATA_DIR`` (read at each call), else ``runs/data`` under the runs folder."""
    return os.environ.get("OMG_DATA_DIR") or runs_dir("data")


def cache_dir(*parts: str, environ: Mapping[str, str] | None = None) -> str:
    """This node's cache (``$OMG_CACHE_DIR``, else ``~/.cache/omg``; read at each call): what is rebuilt where it
    is missing (text embeddings, models downloaded from MLflow), never shared between nodes. ``parts`` are joined
    under it."""
    env = os.environ if environ is None else environ
    return os.path.join(env.get("OMG_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "omg"), *parts)


def apply_env_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set every default that is not already set; return the ones this call set."""
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in DEFAULTS.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied
