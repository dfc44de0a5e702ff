"""Training ingest: shards of several datasets -> augmented, collated training batches.

- :func:`build_label_space` merges the datasets' classes (``omg.data.labels``);
- :func:`omg.data.sampling.epoch_plan` balances them with repeat factors;
- :class:`BatchBuilder` turns one plan item (a batch from one dataset) into numpy arrays:
  decode, clip sampling, augmentation, targets in the merged label space, prompts for
  interactive (class-agnostic) datasets. It is a callable for Ray Data's ``map_batches``
  (the Ray Train path, built in ``omg_platform/pipelines/``) and the body of :class:`PlanDataset`, a
  plain ``torch.utils.data.Dataset`` (notebooks, tests, single-process training).
  ``omg.training.inputs.to_model_inputs`` turns a built batch into model inputs.

Everything is deterministic for a given seed: each sample's augmentation draws from its own
generator seeded by the plan.

A built batch (numpy, B samples of one dataset):
``images`` B x T x H x W x 3 uint8; ``kind`` "object" | "location"; ``dataset``;
``labels`` (sum M) int64 and ``masks`` (sum M) x T x H x W bool with ``counts`` B (M per sample);
``boxes`` B x P x 4 float32 (XYXY; a point is a zero-size box), ``is_point`` B x P bool,
``image_sizes`` B x 2 int (valid height, width before padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from omg.data.catalog import Sampling
from omg.data.decode import decode_frames, decode_id_maps, decode_masks
from omg.data.labels import IGNORE, DatasetClasses, LabelSpace, merge_label_spaces
from omg.data.sampling import PlanItem, epoch_plan, worker_plan
from omg.data.shards import ShardReader, read_manifest
from omg.data.transforms import Augment, apply, clip_indices, clip_span, draw, sample_prompts


@dataclass(frozen=True)
class DatasetSpec:
    """One preprocessed dataset and how it is sampled (the catalog's :class:`Sampling`, with a run's overrides:
    ``omg.config.DatasetConfig.sampling_over``)."""

    name: str
    manifest: str
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class IngestConfig:
    crop_size: tuple[int, int] = (736, 1280)
    batch_size: int = 1
    num_prompts: int = 20
    box_prompt_prob: float = 0.0
    #: COCO-SAM drops masks smaller than this (pixels, after augmentation)
    min_prompt_area: int = 32
    seed: int = 0
    datasets: tuple[DatasetSpec, ...] = field(default_factory=tuple)


def build_label_space(manifests: dict[str, dict]) -> LabelSpace:
    return merge_label_spaces([DatasetClasses.from_manifest(m) for m in manifests.values()])


class BatchBuilder:
    def __init__(self, config: IngestConfig, label_space: LabelSpace | None = None):
        self.config = config
        self.specs = {d.name: d for d in config.datasets}
        self.manifests = {d.name: read_manifest(d.manifest) for d in config.datasets}
        for d in config.datasets:
            if self.manifests[d.name]["dataset"] != d.name:
                raise ValueError(
                    f"{d.manifest}: manifest is for {self.manifests[d.name]['dataset']!r}, configured as {d.name!r}"
                )
        self.label_space = label_space or build_label_space(self.manifests)
        self._readers: dict[str, ShardReader] = {}

    def reader(self, name: str) -> ShardReader:
        if name not in self._readers:
            self._readers[name] = ShardReader(self.manifests[name])
        return self._readers[name]

    def sizes(self) -> dict[str, int]:
        return {name: int(m["rows"]) for name, m in self.manifests.items()}

    def plan(self, epoch: int, rank: int = 0, world: int = 1) -> list[PlanItem]:
        repeat = {d.name: d.sampling.repeat_factor for d in self.config.datasets}
        full = epoch_plan(self.sizes(), repeat, self.config.batch_size, self.config.seed, epoch)
        return worker_plan(full, rank, world)

    def steps_per_epoch(self, world: int = 1) -> int:
        """Batches each of ``world`` workers gets in an epoch (epoch 0's plan; the schedule's estimate)."""
        return len(self.plan(0, 0, world))

    def kind(self, name: str) -> str:
        return "location" if self.manifests[name]["class_agnostic"] else "object"

    # ------------------------------------------------------------------ one sample
    def example(self, name: str, index: int, seed: int) -> dict:
        spec = self.specs[name].sampling
        rng = np.random.default_rng(seed)
        sample = self.reader(name)[index]
        if spec.mode == "clip":
            index, sample = self.long_enough(name, index, sample, rng)
            idx = clip_indices(sample.num_frames, spec.clip_length, spec.clip_interval, rng)
        elif spec.mode == "pseudo_video":
            idx = [0, 0]
        else:
            idx = [0]
        kind = self.kind(name)
        segs = [k for k, s in enumerate(sample.segments) if not s.iscrowd]
        aug = Augment(self.config.crop_size, tuple(spec.resize_range), independent_crops=spec.mode == "pseudo_video")
        if kind == "location":
            return self._location_example(name, index, sample, idx, segs, aug, rng)
        p = draw(aug, (sample.height, sample.width), len(idx), rng)
        frames, masks = self._augmented(sample, idx, segs, p, aug)
        labels = np.array([self.label_space.map(name, sample.segments[k].category_id) for k in segs], dtype=np.int64)
        keep = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
        return {"images": frames, "masks": masks[keep], "labels": labels[keep], "image_size": np.array(p.valid)}

    #: draws before giving up on finding a video long enough for a clip (mmengine's ``max_refetch``)
    MAX_REFETCH = 1000

    def long_enough(self, name: str, index: int, sample, rng: np.random.Generator):
        """A video too short for the clip is replaced by another random video of the dataset, as the released
        ``VideoClipSample`` returns None and mmengine's dataset refetches a random index."""
        spec = self.specs[name].sampling
        need = clip_span(spec.clip_length, spec.clip_interval)
        rows = int(self.manifests[name]["rows"])
        for _ in range(self.MAX_REFETCH):
            if sample.num_frames >= need:
                return index, sample
            index = int(rng.integers(rows))
            sample = self.reader(name)[index]
        raise ValueError(
            f"{name}: no video of at least {need} frames (clip_length {spec.clip_length}, clip_interval "
            f"{spec.clip_interval}) in {self.MAX_REFETCH} random draws; lower them in the catalog's sampling"
        )

    def _augmented(self, sample, idx, segs, p, aug) -> tuple[np.ndarray, np.ndarray]:
        """Decode at the scale the augmentation needs, then resize/flip/crop frames and masks together."""
        frames = decode_frames(sample, idx, min_size=p.size, as_pil=True)
        decoded = decode_id_maps(sample, idx)
        if decoded is not None:  # one id map through the augmentation, then a mask per segment
            ids, values = decoded
            f, m = apply(p, aug.crop, frames, ids, fill=255 if sample.mask_kind == "semantic" else 0)
            return f, m[0][None] == values[segs][:, None, None, None]
        return apply(p, aug.crop, frames, decode_masks(sample, idx)[segs])

    def _location_example(self, name, index, sample, idx, segs, aug, rng) -> dict:
        for _attempt in range(5):
            p = draw(aug, (sample.height, sample.width), len(idx), rng)
            f, m = self._augmented(sample, idx, segs, p, aug)
            keep = m[:, 0].sum((1, 2)) >= self.config.min_prompt_area
            if keep.any():
                break
        else:  # no usable segment in 5 crops: take the image at scale 1 of the crop, unflipped
            p = draw(Augment(self.config.crop_size, (1.0, 1.0), 0.0), (sample.height, sample.width), len(idx), rng)
            f, m = self._augmented(sample, idx, segs, p, aug)
            keep = m[:, 0].sum((1, 2)) > 0
            if not keep.any():
                raise ValueError(f"{name} row {index}: no segment to prompt")
        m = m[keep]
        boxes, is_point, order = sample_prompts(m[:, 0], self.config.num_prompts, rng, self.config.box_prompt_prob)
        return {
            "images": f,
            "masks": m[order],
            "labels": np.full(len(order), IGNORE, dtype=np.int64),
            "boxes": boxes,
            "is_point": is_point,
            "image_size": np.array(p.valid),
        }

    # ------------------------------------------------------------------ one batch
    def build(self, item: PlanItem | dict) -> dict:
        if isinstance(item, dict):
            item = PlanItem(item["dataset"], tuple(item["indices"]), tuple(item["seeds"]))
        exs = [self.example(item.dataset, i, s) for i, s in zip(item.indices, item.seeds)]
        kind = self.kind(item.dataset)
        out = {
            "dataset": item.dataset,
            "kind": kind,
            "indices": np.array(item.indices, dtype=np.int64),
            "seeds": np.array(item.seeds, dtype=np.int64),
            "images": np.stack([e["images"] for e in exs]),
            "labels": np.concatenate([e["labels"] for e in exs]),
            "masks": np.concatenate([e["masks"] for e in exs]),
            "counts": np.array([len(e["labels"]) for e in exs], dtype=np.int64),
            "image_sizes": np.stack([e["image_size"] for e in exs]).astype(np.int64),
        }
        if kind == "location":
            out["boxes"] = np.stack([e["boxes"] for e in exs])
            out["is_point"] = np.stack([e["is_point"] for e in exs])
        else:  # same columns for every batch (Arrow needs them): no prompts
            out["boxes"] = np.zeros((len(exs), 0, 4), dtype=np.float32)
            out["is_point"] = np.zeros((len(exs), 0), dtype=bool)
        return out

    def __call__(self, batch: dict) -> dict:
        """Ray Data ``map_batches`` entry: rows of plan items -> rows of built batches (one per item)."""
        built = [
            self.build({"dataset": d, "indices": list(i), "seeds": list(s)})
            for d, i, s in zip(batch["dataset"], batch["indices"], batch["seeds"])
        ]
        return {k: [b[k] for b in built] for k in built[0]}


class PlanDataset(torch.utils.data.Dataset):
    """A worker's share of an epoch as a map-style dataset of built batches (use ``batch_size=None``)."""

    def __init__(self, builder: BatchBuilder, epoch: int = 0, rank: int = 0, world: int = 1):
        self.builder = builder
        self.items = builder.plan(epoch, rank, world)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.builder.build(self.items[i])
