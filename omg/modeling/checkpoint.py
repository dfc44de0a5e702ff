"""Self-describing model checkpoints: the model config, the weights and metadata in one file.

``save_checkpoint(model, uri, metadata)`` writes ``{"format", "model_config", "state_dict",
"metadata"}`` with ``torch.save`` to a path or any fsspec URI; ``load_checkpoint(uri)``
rebuilds the model from its config and loads the weights with ``weights_only=True``.
Metadata is plain data (e.g. the training vocabulary, the run config) and travels with it.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch

from omg.data import io as uio
from omg.modeling.model import ModelConfig, OMGSeg, build_model

FORMAT = "omg-seg-checkpoint/1"


def save_checkpoint(model: OMGSeg, uri: str, metadata: dict[str, Any] | None = None) -> None:
    config = dataclasses.replace(model.config, pretrained=None)  # the weights are in the file
    doc = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    buf = io.BytesIO()
    torch.save(doc, buf)
    uio.write_bytes(uri, buf.getvalue())


def read_checkpoint(uri: str) -> dict:
    try:
        doc = torch.load(io.BytesIO(uio.read_bytes(uri)), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{uri}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{uri}: not an OMG-Seg checkpoint (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    return doc


def load_checkpoint(uri: str, device: str | torch.device = "cpu") -> tuple[OMGSeg, dict]:
    """-> (model in eval mode on ``device``, metadata)."""
    doc = read_checkpoint(uri)
    try:
        config = ModelConfig(**doc["model_config"])
    except TypeError as err:
        raise ValueError(f"{uri}: model_config does not fit this version of omg: {err}") from err
    model = build_model(config, device=device)
    result = model.load_state_dict(doc["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{uri}: weights do not fit the model: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return model.eval(), doc["metadata"]
