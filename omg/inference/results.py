"""Typed prediction results. Masks are at the original image size; H x W = image height x width,
T = frames, K = instances or tracks, P = prompts."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Sequence, Union

import numpy as np

from omg.data.masks import mask_box, rle_encode


@dataclass
class SegmentInfo:
    """A panoptic segment (image) or track (video). ``id`` is its value in the id map(s);
    ``label`` indexes the vocabulary; ``box`` is XYXY (image), of the first frame present (video)."""

    id: int
    label: int
    name: str
    score: float
    isthing: bool
    area: int
    box: list[int]


@dataclass
class PanopticResult:
    """panoptic: H x W int32 segment ids (0 = VOID)."""

    panoptic: np.ndarray
    segments: list[SegmentInfo]
    vocabulary: list[str]

    @cached_property
    def rles(self) -> dict[int, dict]:
        """Per-segment compressed RLE, by segment id."""
        return {s.id: rle_encode(self.panoptic == s.id) for s in self.segments}


@dataclass
class InstanceResult:
    """masks K x H x W bool; labels K; scores K; boxes K x 4 XYXY; sorted by score."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    names: list[str]
    vocabulary: list[str]

    @cached_property
    def boxes(self) -> np.ndarray:
        out = np.zeros((len(self.masks), 4), dtype=np.float32)
        for k, m in enumerate(self.masks):
            out[k] = mask_box(m)
        return out

    @cached_property
    def rles(self) -> list[dict]:
        return [rle_encode(m) for m in self.masks]


@dataclass
class SemanticResult:
    """labels: H x W int32 vocabulary indices."""

    labels: np.ndarray
    vocabulary: list[str]


@dataclass
class InteractiveResult:
    """One mask per prompt: masks P x H x W bool; scores P (mean mask probability inside the mask);
    with a vocabulary, labels P / label_scores P / names / label_sources P (where each label came from:
    ``"queries"``, the class probability of the object query whose mask best matches it; ``"clip"``, the frozen
    CLIP's probability; see :data:`omg.inference.predictor.PROMPT_LABELS`). ``logits``: P x h4 x w4 float32, each
    mask's logits on the model's mask grid, to give back as an :class:`~omg.inference.objects.ObjectPrompt`'s
    previous ``mask`` with the next click."""

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    label_scores: np.ndarray | None = None
    names: list[str] | None = None
    label_sources: list[str] | None = None

    @cached_property
    def rles(self) -> list[dict]:
        return [rle_encode(m) for m in self.masks]


@dataclass
class VideoInstanceResult:
    """masks K x T x H x W bool; labels, scores K (video level); track_ids K (the query index + 1)."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray
    names: list[str]
    vocabulary: list[str]

    def rles(self, k: int) -> list[dict | None]:
        """Per-frame RLE of track k (None where the track is absent)."""
        return [rle_encode(m) if m.any() else None for m in self.masks[k]]

    @classmethod
    def concat(cls, parts: Sequence["VideoInstanceResult"]) -> "VideoInstanceResult":
        """Consecutive parts (frames) of one video -> the video's result. A track is a (track id, label) pair, listed
        in the order of its first appearance; its masks are empty in the frames of a part that does not list it; its
        score is the mean over *all* frames of the parts' scores (0 where absent), as the YouTube-VIS metric reads a
        track whose per-frame score is class score x that frame's mask score (the released fusion head)."""
        num_frames = sum(p.masks.shape[1] for p in parts)
        keys: dict[tuple[int, int], int] = {}
        for p in parts:
            for tid, lab in zip(p.track_ids.tolist(), p.labels.tolist()):
                keys.setdefault((tid, lab), len(keys))
        size = parts[0].masks.shape[2:] if parts and parts[0].masks.ndim == 4 else (0, 0)
        masks = np.zeros((len(keys), num_frames, *size), bool)
        total = np.zeros(len(keys), np.float64)
        t = 0
        for p in parts:
            for k, (tid, lab) in enumerate(zip(p.track_ids.tolist(), p.labels.tolist())):
                masks[keys[(tid, lab)], t : t + p.masks.shape[1]] = p.masks[k]
                total[keys[(tid, lab)]] += float(p.scores[k]) * p.masks.shape[1]
            t += p.masks.shape[1]
        order = list(keys)
        vocabulary = parts[0].vocabulary if parts else []
        labels = np.array([lab for _, lab in order], np.int64)
        return cls(
            masks,
            labels,
            (total / max(num_frames, 1)).astype(np.float32),
            np.array([tid for tid, _ in order], np.int64),
            [vocabulary[k] for k in labels],
            vocabulary,
        )


@dataclass
class VideoPanopticResult:
    """panoptic: T x H x W int32 ids; a thing keeps its id (query index + 1) in every frame, a stuff
    class has id Q + 1 + label. ``segments`` lists every id with its per-video area."""

    panoptic: np.ndarray
    segments: list[SegmentInfo]
    vocabulary: list[str]
    frame_segments: list[list[int]] = field(default_factory=list)

    @classmethod
    def concat(cls, parts: Sequence["VideoPanopticResult"]) -> "VideoPanopticResult":
        """Consecutive parts of one video -> the video's result: a segment keeps the label, score and box of its
        first appearance; its area is summed over the parts."""
        info: dict[int, SegmentInfo] = {}
        for p in parts:
            for s in p.segments:
                if s.id in info:
                    info[s.id].area += s.area
                else:
                    info[s.id] = replace(s, box=list(s.box))
        return cls(
            np.concatenate([p.panoptic for p in parts]),
            sorted(info.values(), key=lambda s: s.id),
            parts[0].vocabulary,
            [ids for p in parts for ids in p.frame_segments],
        )


@dataclass
class VideoSemanticResult:
    """labels: T x H x W int32 vocabulary indices."""

    labels: np.ndarray
    vocabulary: list[str]

    @classmethod
    def concat(cls, parts: Sequence["VideoSemanticResult"]) -> "VideoSemanticResult":
        return cls(np.concatenate([p.labels for p in parts]), parts[0].vocabulary)


@dataclass
class VOSResult:
    """masks: T x H x W uint8 object ids (0 = background), as in DAVIS annotations."""

    masks: np.ndarray
    object_ids: list[int]
    queries: dict[int, int]

    @classmethod
    def concat(cls, parts: Sequence["VOSResult"]) -> "VOSResult":
        return cls(np.concatenate([p.masks for p in parts]), parts[0].object_ids, parts[0].queries)


VideoResult = Union[VideoInstanceResult, VideoPanopticResult, VideoSemanticResult, VOSResult]


@dataclass
class VideoFrame:
    """One frame of a streamed video (:meth:`omg.inference.predictor.OMGPredictor.stream`): its index, the RGB frame
    itself, and the task's result for this frame alone (a video result with T = 1; ``concat`` of a video's frames is
    the whole video's result)."""

    index: int
    image: np.ndarray
    result: VideoResult
