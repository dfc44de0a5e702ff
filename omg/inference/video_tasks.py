"""The video tasks (VIS, VPS, VSS, VOS) on a :class:`VideoState` the caller holds, and on a stream of frames.

``init_state`` keeps the frames; the first task decodes them clip by clip (features for one clip at a time) and
keeps on the state what every video task needs, so the next task or vocabulary costs no backbone call. ``stream``
runs one task over frames as they arrive, holding a bounded number of clips; both paths decode, associate, decide
and emit with the same functions, frame by frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omg.data.masks import mask_box
from omg.inference import open_vocab as ov
from omg.inference.core import PredictorCore, as_image, to_original
from omg.inference.image_tasks import ImageTasks
from omg.inference.postprocess import mask_scores, panoptic_inference, semantic_inference
from omg.inference.results import (
    SegmentInfo,
    VideoFrame,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoResult,
    VideoSemanticResult,
    VOSResult,
)
from omg.inference.tasks import VIDEO_TASKS
from omg.inference.video import associate, clip_length, split_clips, stream_clips, vos_match, vos_paint
from omg.modeling.heads import class_logits
from omg.utils.vocabulary import Vocabulary

#: VOS proposals matched to the first frame's objects (the released DAVIS config's ``num_proposals``)
VOS_PROPOSALS = 25
#: clips decoded past a clip before :meth:`VideoTasks.stream` decides it (a video of up to 9 clips is decided with
#: its whole evidence: 45 frames at YouTube-VIS / DAVIS clip length 5, 18 at VIPSeg's 2)
LOOKAHEAD = 8


@dataclass
class Clip:
    """One decoded clip; its queries in the video's order (associated with the previous clip's)."""

    start: int  # index of its first frame in the video
    masks: torch.Tensor  # Q x t x h4 x w4 mask logits (float16, CPU)
    embed: torch.Tensor  # Q x E class embeddings
    objectness: torch.Tensor  # Q logits
    pooled: torch.Tensor  # Q x C5: CLIP features pooled over the clip's masks, times their area
    area: torch.Tensor  # Q: the masks' area at stride 32 over the clip
    query: torch.Tensor  # Q x D raw query embeddings (what the next clip's association needs)
    image_size: tuple[int, int]  # padded network input
    resized: tuple[int, int]  # resized frame inside it
    original: tuple[int, int]  # the frames' size


@dataclass
class Evidence:
    """The class evidence of the clips decoded so far, as running sums (bounded whatever the video's length). With
    ``keep_embeds`` every clip's class embeddings are kept instead of the sum of one vocabulary's logits, so that any
    vocabulary can be asked later (a :class:`VideoState`); a stream knows its vocabulary."""

    keep_embeds: bool
    clips: int = 0
    objectness: torch.Tensor | None = None  # sum of the objectness logits
    pooled: torch.Tensor | None = None  # sum of the pooled CLIP features x area
    area: torch.Tensor | None = None  # sum of the areas
    embeds: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None  # sum of one vocabulary's class logits

    def add(self, clip: Clip, logits: torch.Tensor | None = None) -> None:
        first = self.clips == 0
        self.clips += 1
        self.objectness = clip.objectness if first else self.objectness + clip.objectness
        self.pooled = clip.pooled if first else self.pooled + clip.pooled
        self.area = clip.area if first else self.area + clip.area
        if logits is not None:
            self.logits = logits if first else self.logits + logits
        elif self.keep_embeds:
            self.embeds.append(clip.embed)


@dataclass
class DecodedVideo:
    clips: list[Clip]
    evidence: Evidence


@dataclass
class Decision:
    logits: torch.Tensor | None  # Q x (C + 1) video-level class logits (None for VOS)
    objectness: torch.Tensor  # Q, in 0..1


@dataclass(frozen=True)
class VideoJob:
    """One video task's request: what :meth:`VideoTasks.decide` and :meth:`VideoTasks.emit` read."""

    task: str
    vocab: Vocabulary | None
    open_vocab: bool | str
    topk: int = 100
    track_ids: str = "released"


@dataclass
class VosTarget:
    masks: np.ndarray  # K x H x W bool, the first frame's objects
    object_ids: list[int]
    queries: dict[int, int] | None = None  # object id -> query, fixed on the first frame


@dataclass
class VideoState:
    """A video's frames and what its tasks decoded from them (:meth:`VideoTasks.init_state`). Hold it to ask any
    number of video tasks and vocabularies of the same video: each clip length is decoded once."""

    frames: list[np.ndarray]
    decoded: dict[int, DecodedVideo] = field(default_factory=dict)  # by clip length


def _checked_frames(source: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each frame checked as an image, all of frame 0's size."""
    size = None
    for t, a in enumerate(source):
        a = as_image(a, f"frame {t}")
        if size is None:
            size = a.shape[:2]
        elif a.shape[:2] != size:
            raise ValueError(f"frame {t} is {a.shape[1]}x{a.shape[0]}, frame 0 is {size[1]}x{size[0]}")
        yield a


class VideoTasks:
    def __init__(self, core: PredictorCore, images: ImageTasks):
        self.core = core
        self.images = images  # VOS from prompts on the first frame asks the interactive task

    def init_state(self, frames: np.ndarray | Iterable[np.ndarray]) -> VideoState:
        """Keep the frames (T x H x W x 3 uint8 RGB, or an iterable of H x W x 3 frames)."""
        arrays = list(frames)
        if not arrays:
            raise ValueError("set_video got no frames")
        return VideoState(list(_checked_frames(arrays)))

    # ------------------------------------------------------------------ decode, decide, emit
    def decode_clip(
        self, frames: list[np.ndarray], start: int, previous: torch.Tensor | None, text: torch.Tensor
    ) -> Clip:
        """Decode one clip with tube queries (its features only), its queries re-ordered to line up with
        ``previous``, the previous clip's (already re-ordered) raw query embeddings."""
        core = self.core
        batch, sizes = core.prepare(frames)
        feats = core.model.extract(batch[None])  # 1 x T x 3 x H x W
        core.stats["backbone_calls"] += 1
        out = core.model.decode(feats, text)
        core.stats["decoder_calls"] += 1
        raw = out.query_embed[0]
        perm = torch.arange(raw.shape[0]) if previous is None else associate(previous, raw)
        m = out.pred_masks[0, perm]  # Q x t x h4 x w4
        pool, _ = ov.clip_pooled(feats.clip_features, m[None])
        h, w = feats.clip_features.shape[-2:]
        area = (
            F.interpolate(m.float().flatten(0, 1)[:, None], size=(h, w), mode="bilinear", align_corners=False)
            .gt(0)
            .view(m.shape[0], -1)
            .sum(1)
            .float()
        )
        return Clip(
            start,
            m.half().cpu(),
            out.class_embed[0, perm],
            out.pred_objectness[0, perm, 0],
            pool[0] * area[:, None],
            area,
            raw[perm],
            feats.image_size,
            sizes[0],
            frames[0].shape[:2],
        )

    def decoded(self, state: VideoState, task: str) -> DecodedVideo:
        """The video decoded clip by clip at ``task``'s clip length (kept on the state: every task and vocabulary
        after the first reuses it)."""
        length = clip_length(task, len(state.frames))
        if length not in state.decoded:
            text = self.core.decoder_text()
            clips, evidence, previous = [], Evidence(keep_embeds=True), None
            for c in split_clips(len(state.frames), length):
                clip = self.decode_clip([state.frames[t] for t in c], c.start, previous, text)
                evidence.add(clip)
                clips.append(clip)
                previous = clip.query
            state.decoded[length] = DecodedVideo(clips, evidence)
        return state.decoded[length]

    def decide(self, ev: Evidence, job: VideoJob) -> Decision:
        """The video-level decision from the evidence: class logits = the mean over clips (the released
        ``sum(out_cls) / num_tubes``), with the CLIP ensemble on the features pooled over every decoded frame;
        objectness = the sigmoid of the clip-mean objectness logit."""
        core = self.core
        objectness = (ev.objectness / ev.clips).sigmoid()
        if job.vocab is None:
            return Decision(None, objectness)
        text = core.text(job.vocab)
        scale = core.logit_scale
        total = ev.logits if ev.logits is not None else sum(class_logits(e, text, scale) for e in ev.embeds)
        logits = total / ev.clips
        use, seen = core.use_open_vocab(job.vocab, job.open_vocab)
        if use:
            emb = F.normalize(
                core.model.backbone.clip_image_head(ev.pooled / ev.area.clamp(min=1)[:, None]).float(), dim=-1
            )
            clip = class_logits(emb, text, scale)[..., :-1]
            logits = ov.geometric_ensemble(logits, clip, seen, ev.area > 0)
        return Decision(logits, objectness)

    def frame_logits(self, clip: Clip, t: int, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Q x h x w mask logits of the clip's frame t (only ``queries`` when given) where post-processing runs."""
        m = clip.masks[:, t] if queries is None else clip.masks[queries.cpu(), t]
        return self.core.output_logits(m.float().to(self.core.device), clip.image_size, clip.resized, clip.original)

    def job(self, task: str, vocabulary, open_vocab, topk: int = 100, track_ids: str = "released") -> VideoJob:
        if task not in VIDEO_TASKS:
            raise ValueError(f"unknown video task {task!r}; video tasks: {', '.join(VIDEO_TASKS)}")
        if track_ids not in ("released", "stable"):
            raise ValueError(f"track_ids must be 'released' or 'stable', got {track_ids!r}")
        return VideoJob(task, None if task == "vos" else self.core.vocabulary(vocabulary), open_vocab, topk, track_ids)

    def vos_target(self, frame0: np.ndarray, first_frame_masks, object_ids, points, boxes) -> VosTarget:
        """The objects to follow: the first frame's masks (K x H x W bool, or an H x W id map whose non-zero values
        other than 255 are the objects), or the masks that ``points`` / ``boxes`` on the first frame prompt."""
        size = frame0.shape[:2]
        if first_frame_masks is None:
            if points is None and boxes is None:
                raise ValueError(
                    "task 'vos' needs first_frame_masks (K x H x W bool, or an H x W id map) or "
                    "points / boxes on the first frame"
                )
            first = self.images.init_state(frame0)
            given = self.images.interactive(first, points=points, boxes=boxes).masks
        else:
            if points is not None or boxes is not None:
                raise ValueError("task 'vos' takes first_frame_masks or prompts on the first frame, not both")
            given = np.asarray(first_frame_masks)
            if given.ndim == 2:
                ids = [int(v) for v in np.unique(given) if v not in (0, 255)]
                given = np.stack([given == v for v in ids]) if ids else np.zeros((0, *given.shape), bool)
                object_ids = object_ids or ids
        object_ids = list(object_ids or range(1, len(given) + 1))
        if given.shape[1:] != tuple(size) or len(object_ids) != len(given):
            raise ValueError(f"first_frame_masks must be K x {size[0]} x {size[1]} with one id per mask")
        return VosTarget(given.astype(bool), object_ids)

    def emit(self, clip: Clip, decision: Decision, job: VideoJob, vos: VosTarget | None) -> Iterator[VideoResult]:
        """The clip's frames' results (one video result with T = 1 per frame) under ``decision``, frame by frame."""
        frames = range(clip.masks.shape[1])
        size = clip.original
        vocab, logits = job.vocab, decision.logits
        if job.task == "vss":
            for t in frames:
                labels = semantic_inference(logits, self.frame_logits(clip, t))[0]
                yield VideoSemanticResult(to_original(labels, size)[None].astype(np.int32), vocab.display)
            return
        if job.task == "vps":
            isthing = torch.tensor(vocab.isthing, device=logits.device)
            for t in frames:
                pan, segs = panoptic_inference(logits, self.frame_logits(clip, t), isthing, ids=job.track_ids)
                full = to_original(pan, size).astype(np.int32)
                infos = []
                for s in segs:
                    m = full == s.id
                    area = int(m.sum())
                    if area:
                        infos.append(
                            SegmentInfo(s.id, s.label, vocab.display[s.label], s.score, s.isthing, area, mask_box(m))
                        )
                yield VideoPanopticResult(full[None], infos, vocab.display, [[s.id for s in infos]])
            return
        if job.task == "vis":
            isthing = torch.tensor(vocab.isthing, device=logits.device)
            c = len(vocab)
            scores = logits.float().softmax(-1)[:, :c]
            top, flat = scores.flatten().topk(min(job.topk, scores.numel()))
            labels, queries = flat % c, flat // c
            keep = isthing[labels]
            top, labels, queries = top[keep], labels[keep], queries[keep]
            lab = labels.cpu().numpy()
            names, ids = [vocab.display[k] for k in lab], (queries + 1).cpu().numpy()
            # a query may pair with several classes: its mask is computed once
            unique, pair = torch.unique(queries, return_inverse=True)
            pair_np = pair.cpu().numpy()
            for t in frames:
                # per frame as the released fusion head (FH.instance_postprocess): class score x the mean probability
                # inside the frame's mask (0 where it is empty); the video's score is the mean over frames (concat)
                if len(queries):
                    lg = self.frame_logits(clip, t, unique)
                    masks = to_original(lg > 0, size)[pair_np][:, None]
                    sc = (top * mask_scores(lg)[pair]).cpu().numpy()
                else:
                    masks, sc = np.zeros((0, 1, *size), bool), np.zeros(0, np.float32)
                yield VideoInstanceResult(masks, lab, sc, ids, names, vocab.display)
            return
        # vos: the objects take their queries on the video's first frame, from the best proposals by objectness;
        # each frame paints the matched proposals from the lowest objectness to the highest
        objectness = decision.objectness.cpu().numpy()
        rank = np.argsort(-objectness, kind="stable")
        if vos.queries is None:
            top = rank[:VOS_PROPOSALS]
            first = to_original(self.frame_logits(clip, 0, torch.as_tensor(top)) > 0, size)
            vos.queries = {obj: int(top[p]) for obj, p in vos_match(first, vos.masks, vos.object_ids).items()}
        position = np.empty_like(rank)
        position[rank] = np.arange(len(rank))
        order = sorted(vos.queries.values(), key=lambda q: position[q])  # highest objectness first
        matched = {obj: order.index(q) for obj, q in vos.queries.items()}
        for t in frames:
            props = (
                to_original(self.frame_logits(clip, t, torch.as_tensor(order)) > 0, size)
                if order
                else np.zeros((0, *size), bool)
            )
            yield VOSResult(vos_paint(props, matched)[None], vos.object_ids, dict(vos.queries))

    def _whole_video(self, state: VideoState, job: VideoJob, vos: VosTarget | None = None) -> list[VideoResult]:
        dv = self.decoded(state, job.task)
        decision = self.decide(dv.evidence, job)
        return [r for clip in dv.clips for r in self.emit(clip, decision, job, vos)]

    # ------------------------------------------------------------------ the tasks
    @torch.no_grad()
    def vos(
        self,
        state: VideoState,
        first_frame_masks=None,
        object_ids: Sequence[int] | None = None,
        points=None,
        boxes=None,
    ) -> VOSResult:
        self.decoded(state, "vos")
        target = self.vos_target(state.frames[0], first_frame_masks, object_ids, points, boxes)
        return VOSResult.concat(self._whole_video(state, self.job("vos", None, False), target))

    @torch.no_grad()
    def vis(
        self,
        state: VideoState,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
        topk: int = 100,
    ) -> VideoInstanceResult:
        self.decoded(state, "vis")
        return VideoInstanceResult.concat(self._whole_video(state, self.job("vis", vocabulary, open_vocab, topk)))

    @torch.no_grad()
    def vss(
        self, state: VideoState, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
    ) -> VideoSemanticResult:
        self.decoded(state, "vss")
        return VideoSemanticResult.concat(self._whole_video(state, self.job("vss", vocabulary, open_vocab)))

    @torch.no_grad()
    def vps(
        self,
        state: VideoState,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
        track_ids: str = "released",
    ) -> VideoPanopticResult:
        job = self.job("vps", vocabulary, open_vocab, track_ids=track_ids)
        self.decoded(state, "vps")
        return VideoPanopticResult.concat(self._whole_video(state, job))

    @torch.no_grad()
    def stream(
        self,
        frames: Iterable[np.ndarray],
        task: str,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
        topk: int = 100,
        track_ids: str = "released",
        first_frame_masks=None,
        object_ids: Sequence[int] | None = None,
        points=None,
        boxes=None,
        lookahead: int | None = LOOKAHEAD,
    ) -> Iterator[VideoFrame]:
        """See :meth:`omg.inference.predictor.OMGPredictor.stream`."""
        if lookahead is not None and (not isinstance(lookahead, int) or lookahead < 0):
            raise ValueError(f"lookahead must be a number of clips >= 0 or None, got {lookahead!r}")
        job = self.job(task, vocabulary, open_vocab, topk, track_ids)
        if task != "vos" and (
            first_frame_masks is not None or points is not None or boxes is not None or object_ids is not None
        ):
            raise ValueError(f"task {task!r} takes no first-frame masks or prompts (those are for task 'vos')")
        core = self.core
        text = None if job.vocab is None else core.text(job.vocab)
        scale = core.logit_scale
        decoder_text = core.decoder_text()
        evidence, previous, target = Evidence(keep_embeds=False), None, None
        pending: deque[tuple[Clip, list[np.ndarray]]] = deque()

        def release() -> Iterator[VideoFrame]:
            clip, images = pending.popleft()
            for t, r in enumerate(self.emit(clip, self.decide(evidence, job), job, target)):
                yield VideoFrame(clip.start + t, images[t], r)

        for start, images in stream_clips(_checked_frames(frames), task):
            if task == "vos" and target is None:
                target = self.vos_target(images[0], first_frame_masks, object_ids, points, boxes)
            clip = self.decode_clip(images, start, previous, decoder_text)
            previous = clip.query
            evidence.add(clip, None if text is None else class_logits(clip.embed, text, scale))
            pending.append((clip, images))
            while lookahead is not None and len(pending) > lookahead:
                yield from release()
        while pending:
            yield from release()
