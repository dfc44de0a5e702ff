"""The MLflow pyfunc model of an OMG-Seg checkpoint.

Logged as MLflow "models from code" (``omg_platform/tracking.py`` ``log_pyfunc``): MLflow stores this file
with the model and runs it to load the model, so nothing is pickled; the weights are the model's
``checkpoint`` artifact, read with ``torch.load(weights_only=True)``. The ``omg`` package travels with
the model too (``code_paths``), so it loads wherever its pip requirements are installed.

It speaks the inference schema of ``omg/inference/schema.py``, like ``omg serve`` and the Ray Serve app:

    model = mlflow.pyfunc.load_model("models:/omg-seg-demo/1")
    model.predict([{"task": "interactive", "image": "<base64 PNG>", "points": [[120, 80]]}])

    mlflow models serve -m models:/omg-seg-demo/1 --env-manager local -h 127.0.0.1 -p 5001
    curl -X POST 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [{"task": "panoptic", "image": "<base64 PNG>"}]}'    # -> {"predictions": [...]}

A request the schema refuses, or the model cannot take, fails the call with MLflow's
INVALID_PARAMETER_VALUE (HTTP 400 from ``mlflow models serve``) naming the request and the field.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# the requests are validated by the schema (omg/inference/schema.py), not by MLflow: its note that it does not
# validate ``Any`` is expected here, and would be printed on every load
warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")


class OMGSegModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from omg.inference.predictor import OMGPredictor
        from omg.inference.schema import Limits

        self.predictor = OMGPredictor.from_checkpoint(context.artifacts["checkpoint"])
        self.limits = Limits()
        self.lock = threading.Lock()  # the predictor holds one image's state: one request at a time

    def predict(
        self, context, model_input: list[dict[str, Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        from omg.inference import schema

        out = []
        with self.lock:
            for i, doc in enumerate(model_input):
                try:
                    out.append(schema.predict(self.predictor, schema.Request.from_json(doc, self.limits)).to_json())
                except schema.RequestError as err:
                    raise MlflowException(f"request {i}: {err}", error_code=INVALID_PARAMETER_VALUE) from None
        return out


mlflow.models.set_model(OMGSegModel())
