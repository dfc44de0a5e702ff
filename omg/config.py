"""Typed run configs: YAML files with ``key=value`` overrides.

    cfg = load_config(
        "omg_platform/pipelines/configs/shapes_demo.yaml", ["optim.max_steps=200", "scaling.num_workers=1"]
    )

Unknown keys and bad values are rejected with the key's dotted name and the file. Every
section has paper defaults (docs/model.md §10); the YAML files under
``omg_platform/pipelines/configs/`` name the recipes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from omg.data.catalog import Sampling
from omg.env import runs_dir
from omg.modeling.model import ModelConfig
from omg.utils.typed import SchemaError, from_dict, to_dict, yaml_problem
from omg.utils.zoom import ZoomIn


@dataclass(frozen=True)
class DatasetConfig:
    """One training dataset; None fields take the catalog entry's ``sampling`` defaults."""

    name: str
    split: str = "train"
    repeat_factor: float | None = None
    mode: Literal["image", "pseudo_video", "clip"] | None = None
    resize_range: tuple[float, ...] | None = None

    def sampling_over(self, base: Sampling) -> Sampling:
        """The catalog entry's sampling with this config's overrides (the one place they are merged)."""
        changes = {
            "repeat_factor": self.repeat_factor,
            "mode": self.mode,
            "resize_range": tuple(self.resize_range) if self.resize_range else None,
        }
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class ValidationConfig:
    """Periodic validation on a small held-out subset (rank 0), logged as ``val/<dataset>/<metric>``."""

    every_steps: int = 0  # 0 = only at the end
    limit: int = 8  # images or videos per (dataset, task)
    pairs: tuple[str, ...] = ()  # "DATASET:SPLIT:TASK"


@dataclass(frozen=True)
class DataConfig:
    #: where ``omg_platform/pipelines/preprocess.py`` wrote the shards (``<shards>/<dataset>/<split>/manifest.json``)
    shards: str = field(default_factory=lambda: runs_dir("shards"))  # $OMG_RUNS_DIR/shards, runs/shards
    datasets: tuple[DatasetConfig, ...] = ()
    #: training crop (H, W); the paper's is 736 x 1280
    crop_size: tuple[int, ...] = (736, 1280)
    batch_size: int = 1  # per worker (the paper: 1 sample per GPU)
    num_prompts: int = 20
    box_prompt_prob: float = 0.0
    #: a model with ``model.refinement``: half the location batches first run 1..N rounds (uniform) of simulated
    #: corrections without gradient (a click on each object's error, its mask as the previous mask; docs/model.md
    #: §7.3), the other half train the prompts as given. Ignored by a model without refinement
    refine_rounds: int = 3
    #: "local": each worker decodes its own deterministic share (exact resume); "ray": a Ray Data
    #: pipeline decodes on the cluster's CPUs and streams batches to the workers
    ingest: Literal["local", "ray"] = "local"
    loader_workers: int = 0
    ray_data_concurrency: int = 1
    #: test-time resize recorded in the exported model: (long side, short side)
    test_size: tuple[int, ...] = (1333, 800)
    #: zoom-in of a refinement model's corrections, recorded in the exported model (ours, RITM's test-time step;
    #: omg.utils.zoom, docs/model.md §7.3): null = none (the released model has no corrections to zoom)
    zoom_in: ZoomIn | None = None

    def __post_init__(self):
        if len(self.crop_size) != 2 or min(self.crop_size) < 32:
            raise ValueError(f"data.crop_size must be [height, width] >= 32, got {list(self.crop_size)}")
        if self.batch_size < 1:
            raise ValueError("data.batch_size must be >= 1")
        if self.refine_rounds < 0:
            raise ValueError(f"data.refine_rounds must be >= 0, got {self.refine_rounds}")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    #: lr is scaled by global batch / base_batch (mmengine auto_scale_lr)
    base_batch: int = 16
    weight_decay: float = 0.05
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.01
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    epochs: int = 12
    milestones: tuple[int, ...] = (8, 11)  # epochs
    gamma: float = 0.1
    #: stop after this many steps (overrides epochs); milestones then scale to it
    max_steps: int | None = None
    #: None = the backbone variant's default (0.1 for learned paper backbones)
    backbone_lr_mult: float | None = None
    #: criterion points per mask (12544 in the paper)
    num_points: int = 12544

    def __post_init__(self):
        if self.lr <= 0 or self.grad_clip < 0 or self.epochs < 1:
            raise ValueError("optim.lr must be > 0, optim.grad_clip >= 0, optim.epochs >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("optim.max_steps must be >= 1")


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError("scaling.num_workers must be >= 1")


@dataclass(frozen=True)
class CheckpointConfig:
    #: local path or fsspec URI (Ray Train's storage_path)
    storage_path: str = field(default_factory=lambda: runs_dir("train"))  # $OMG_RUNS_DIR/train, runs/train
    every_steps: int = 500
    num_to_keep: int = 2
    #: worker-group restarts from the last checkpoint after a failure
    max_failures: int = 2


@dataclass(frozen=True)
class TrackingConfig:
    #: None = $MLFLOW_TRACKING_URI or sqlite in runs/
    tracking_uri: str | None = None
    experiment: str = "omg-train"
    log_every: int = 10
    system_metrics: bool = True
    #: log the exported checkpoint as an MLflow pyfunc model (omg_platform/pipelines/pyfunc_model.py)
    log_model: bool = True
    #: register that model under this name in the MLflow Model Registry (a new version per run)
    register_as: str | None = None
    #: make the run a child of this MLflow run (an ablation grid's parent run)
    parent_run_id: str | None = None
    #: extra tags of the run (e.g. an ablation trial's axis values)
    tags: dict[str, str] = field(default_factory=dict)
    #: metric points wait in memory while the tracking server is unreachable; at the end of the run, how long to
    #: wait for it to take them (then the run fails, its checkpoints complete, the points saved beside them)
    flush_timeout_s: float = 600.0


@dataclass(frozen=True)
class TrainConfig:
    #: run name; None = derived from the config (the same command resumes the same run)
    name: str | None = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    #: bf16 autocast on GPU ("auto" = when training on GPU)
    amp: Literal["auto", "off"] = "auto"

    def run_name(self, stem: str = "omg") -> str:
        """Explicit name, else ``<stem>-<digest of what changes the training>``."""
        if self.name:
            return self.name
        key = {k: to_dict(getattr(self, k)) for k in ("seed", "model", "data", "optim")}
        key["workers"] = self.scaling.num_workers
        return f"{stem}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]}"


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected KEY=VALUE (e.g. optim.lr=2e-4)")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_values(data: dict, values: dict, source: str) -> dict:
    """A copy of ``data`` with each ``{"dotted.key": value}`` set (sections created as needed)."""
    data = json.loads(json.dumps(data))
    for dotted, value in values.items():
        keys = dotted.split(".")
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k, {}), dict):
                raise SchemaError(source, dotted, f"{k} is not a section")
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(json.dumps(value))
    return data


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """``["optim.lr=2e-4", ...]`` applied to a copy of ``data``."""
    return apply_values(data, {".".join(k): v for k, v in map(parse_override, overrides)}, source)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    source = str(path) if path else "<defaults>"
    data = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as err:
            raise SchemaError(source, "", f"cannot read: {err}") from None
        except yaml.YAMLError as err:
            raise SchemaError(source, "", yaml_problem(err)) from None
    data = apply_overrides(data, overrides or [], source + " (with overrides)" if overrides else source)
    return from_dict(TrainConfig, data, source)


def config_dict(cfg: TrainConfig) -> dict:
    return to_dict(cfg)


def config_from_dict(data: dict) -> TrainConfig:
    return from_dict(TrainConfig, data, "<config>")


def flat_params(cfg: TrainConfig) -> dict[str, str]:
    """Dotted key -> value strings (for MLflow params)."""
    out = {}

    def walk(prefix: str, obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(obj, list) and obj and isinstance(obj[0], dict):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = json.dumps(obj) if not isinstance(obj, str) else obj

    walk("", to_dict(cfg))
    return out


def replace(cfg: TrainConfig, **sections) -> TrainConfig:
    return dataclasses.replace(cfg, **sections)
