"""Self-describing model checkpoints: the model config, the weights and metadata in one file.

``save_checkpoint(model, uri, metadata)`` writes ``{"format", "model_config", "state_dict",
"metadata"}`` with ``torch.save`` to a path or any fsspec URI; ``load_checkpoint(uri)``
rebuilds the model from its config and loads the weights with ``weights_only=True``.
Metadata is plain data (e.g. the training vocabulary, the run config) and travels with it; its ``clip_weights``
says where the CLIP's weights came from (``model.pretrained``, passed on through fine-tuning; None: random init),
since the file holds the weights but not their origin (:func:`clip_weights`).
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch

from omg.modeling.model import ModelConfig, OMGSeg, build_model
from omg.modeling.variants import VARIANTS
from omg.utils import io as uio

FORMAT = "omg-seg-checkpoint/1"


def save_checkpoint(model: OMGSeg, uri: str, metadata: dict[str, Any] | None = None) -> None:
    """``metadata["clip_weights"]`` defaults to the model's ``config.pretrained``."""
    config = dataclasses.replace(model.config, pretrained=None, init_from=None)  # the weights are in the file
    metadata = dict(metadata or {})
    metadata.setdefault("clip_weights", model.config.pretrained or None)
    doc = {
        "format": FORMAT,
        "model_config": dataclasses.asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    buf = io.BytesIO()
    torch.save(doc, buf)
    uio.write_bytes(uri, buf.getvalue())


def read_checkpoint(uri: str) -> dict:
    """The checkpoint's contents; a missing file, a folder or another kind of file raises with what to do."""
    fs, path = uio.fs_and_path(uri)
    if fs.isdir(path):
        hint = [n for n in ("model.pt",) if fs.exists(uio.join(path, n))]
        raise ValueError(
            f"{uri}: is a folder, not a checkpoint file"
            + (f"; did you mean {uio.join(uri, hint[0])}?" if hint else " (give the model.pt a training run exported)")
        )
    try:
        data = uio.read_bytes(uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such checkpoint file") from None
    try:
        doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{uri}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(
            f"{uri}: not an OMG-Seg checkpoint (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
            f"expected {FORMAT!r})"
        )
    return doc


def load_checkpoint(uri: str, device: str | torch.device = "cpu") -> tuple[OMGSeg, dict]:
    """-> (model in eval mode on ``device``, metadata). Weights that do not fit the checkpoint's own model
    config (missing or unexpected names, other shapes) raise ``ValueError`` naming the first few."""
    doc = read_checkpoint(uri)
    try:
        config = ModelConfig(**doc["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{uri}: model_config does not fit this version of omg: {err}") from err
    model = build_model(config, device=device)
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} (the config's model has {tuple(own[k].shape)})"
        for k, v in doc["state_dict"].items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        raise ValueError(
            f"{uri}: weights do not fit the checkpoint's model config ({config.variant}, hidden_dim "
            f"{config.hidden_dim}): {len(wrong)} with another shape, e.g. {'; '.join(wrong[:3])}"
        )
    result = model.load_state_dict(doc["state_dict"], strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{uri}: weights do not fit the checkpoint's model config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval(), doc["metadata"]


#: model config fields that describe how weights were obtained, not the architecture
_PROVENANCE = ("pretrained", "init_from")


def config_differences(config: ModelConfig, uri: str) -> list[str]:
    """How ``config`` differs from the model config stored in checkpoint ``uri`` (architecture fields)."""
    stored = read_checkpoint(uri)["model_config"]
    out = []
    for f in dataclasses.fields(ModelConfig):
        if f.name in _PROVENANCE:
            continue
        mine, theirs = getattr(config, f.name), stored.get(f.name, f.default)
        if f.name == "variant" and same_architecture(mine, theirs):
            continue  # the same CLIP, frozen or learned: fine-tuning may unfreeze it (the ablation grid "finetune")
        if (list(mine) if isinstance(mine, tuple) else mine) != (list(theirs) if isinstance(theirs, tuple) else theirs):
            out.append(f"model.{f.name} is {mine!r} here, {theirs!r} in the checkpoint")
    return out


def same_architecture(variant: str, other: str) -> bool:
    """Whether two backbone variants are the same network, frozen or learned (``tiny_convnext`` and
    ``tiny_convnext_learned``): the same weights fit both."""
    if variant not in VARIANTS or other not in VARIANTS:
        return variant == other
    skip = {"name", "frozen", "lr_mult", "description"}
    a, b = VARIANTS[variant], VARIANTS[other]
    return all(getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a) if f.name not in skip)


def clip_weights(model_config: ModelConfig, metadata: dict[str, Any] | None) -> str | None:
    """Where a model's CLIP weights came from: the checkpoint's record, else the config's ``pretrained`` (a model
    built in memory); None for a random CLIP (its open-vocabulary scores and prompted-mask labels are arbitrary)."""
    return (metadata or {}).get("clip_weights") or model_config.pretrained or None


def init_weights(model: OMGSeg, uri: str) -> dict[str, Any]:
    """Load an OMG-Seg checkpoint's weights into ``model`` (fine-tuning); every weight must fit. -> its metadata."""
    doc = read_checkpoint(uri)
    own = model.state_dict()
    wrong = [k for k, v in doc["state_dict"].items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    result = model.load_state_dict({k: v for k, v in doc["state_dict"].items() if k not in wrong}, strict=False)
    if wrong or result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{uri}: its weights do not fit this model (other shapes {wrong[:3]}, missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); use the checkpoint's "
            "model config"
        )
    return doc["metadata"]
