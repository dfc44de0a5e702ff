"""Typed prediction results. Masks are at the original image size; H x W = image height x width,
T = frames, K = instances or tracks, P = prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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
    with a vocabulary, labels P / label_scores P / names (CLIP scores of the prompted masks)."""

    masks: np.ndarray
    scores: np.ndarray
    labels: np.ndarray | None = None
    label_scores: np.ndarray | None = None
    names: list[str] | None = None

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


@dataclass
class VideoPanopticResult:
    """panoptic: T x H x W int32 ids; a thing keeps its id (query index + 1) in every frame, a stuff
    class has id Q + 1 + label. ``segments`` lists every id with its per-video area."""

    panoptic: np.ndarray
    segments: list[SegmentInfo]
    vocabulary: list[str]
    frame_segments: list[list[int]] = field(default_factory=list)


@dataclass
class VideoSemanticResult:
    """labels: T x H x W int32 vocabulary indices."""

    labels: np.ndarray
    vocabulary: list[str]


@dataclass
class VOSResult:
    """masks: T x H x W uint8 object ids (0 = background), as in DAVIS annotations."""

    masks: np.ndarray
    object_ids: list[int]
    queries: dict[int, int]
