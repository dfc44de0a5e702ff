"""A model behind another server, for the web app in front of it (``omg serve --model-url``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

from omg.inference import schema
from omg.inference.schema import RequestError


class RemoteModel:
    """A model behind another server that speaks the inference schema: an MLflow scoring server (``mlflow models
    serve``; a URL ending in ``/invocations``) or a schema endpoint (``.../api/predict``: ``omg serve``, the Ray
    Serve app). Its 4xx answers become the same 4xx here; an unreachable or failing server is a 502."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        self.url, self.timeout_s = url, timeout_s
        self.mlflow = url.rstrip("/").endswith("/invocations")

    def __call__(self, req: schema.Request) -> schema.Response:
        doc = req.to_json()
        body = json.dumps({"inputs": [doc]} if self.mlflow else doc).encode()
        http = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as err:
            try:
                said = json.loads(err.read())
                said = str(said.get("error") or said.get("message") or said)
            except ValueError:
                said = str(err.reason)
            # MLflow's scoring server prefixes the whole input ("Failed to predict data '<input>'. \nError: ...")
            said = said.rsplit("\nError: ", 1)[-1]
            if self.mlflow:  # the pyfunc model names the request in its batch: here there is one
                said = said.removeprefix("request 0: ")
            if 400 <= err.code < 500:
                raise RequestError(err.code, said) from None
            raise RequestError(502, f"the model server {self.url} answered {err.code}: {said}") from None
        except (OSError, ValueError) as err:
            raise RequestError(502, f"the model server {self.url} cannot be reached: {err}") from None
        return schema.Response.from_json(answer["predictions"][0] if self.mlflow else answer)

    def vocabulary(self) -> list[str]:
        """The class names the model answers with by default (asked with a panoptic request on a blank image)."""
        blank = schema.Request("panoptic", (np.zeros((32, 32, 3), np.uint8),))
        answer = self(blank)
        return list(answer.classes or answer.vocabulary or [])
