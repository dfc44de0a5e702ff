"""Process-wide environment defaults for the offline / Ray / MLflow stack.

One place, used by the ``omg`` CLI, the ``pipelines/`` entry points and the tests
(``tests/conftest.py``). Each value is a *default*: a variable the user already set
is left alone.

- ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``: no model weights are ever fetched
  from a hub; weights come from an open_clip pretrained tag already in the cache, a
  local path or an fsspec URI.
- ``RAY_AUTH_MODE=disabled``: a fresh ``ray.init()`` otherwise enables token auth and
  later ``ray job submit`` calls fail with "Missing authentication token".
- ``RAY_USAGE_STATS_ENABLED=0``: no usage reporting (there is no network anyway).
- ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false``: progress bars of artifact uploads
  would interleave with the pipelines' own progress output.
- ``TOKENIZERS_PARALLELISM=false``: quiet fork warnings in Ray workers.
"""

from __future__ import annotations

import os

DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_env_defaults(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set every default that is not already set; return the ones this call set."""
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in DEFAULTS.items():
        if key not in env:
            env[key] = value
            applied[key] = value
    return applied
