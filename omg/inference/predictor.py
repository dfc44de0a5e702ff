"""OMGPredictor: one model, every task, features computed once.

    predictor = OMGPredictor.from_checkpoint("runs/demo/model.pt")      # any path or fsspec URI
    predictor.set_image(image)                                         # H x W x 3 uint8 RGB (or a list)
    pan = predictor.panoptic()                                         # training vocabulary
    ov = predictor.panoptic(vocabulary=["hexagon, six-sided shape", "stuff:sky"])
    clicks = predictor.interactive(points=[[40, 52]], boxes=[[10, 10, 60, 60]],
                                   vocabulary=["circle", "square"])    # masks + open-vocabulary labels
    predictor.set_video(frames)                                        # T x H x W x 3 uint8 (or a list)
    tracks = predictor.vis()                                           # also .vps(), .vss(), .vos(first_frame_masks)
    for f in predictor.stream(VideoSource.open("long.mp4").frames(), task="vps"):  # any length, bounded memory
        f.index, f.image, f.result                                     # this frame's VideoPanopticResult (T = 1)

One typed entry point per task (``panoptic``, ``instance``, ``semantic``, ``interactive``; ``vis``, ``vps``,
``vss``, ``vos``), each returning its result type; ``predict(task, **kwargs)`` dispatches to them and rejects
an argument the task does not take. Boxes are XYXY in pixels of the original image (the one box convention
in code; COCO's XYWH appears only in the files :mod:`omg.inference.writers` writes and the readers read).

``set_image`` runs the backbone and pixel decoder once; every ``predict`` after it reuses
them. The object queries' masks and class embeddings do not depend on the vocabulary, so a
new vocabulary costs one text embedding (cached) and a matrix product; prompts cost one
decoder pass. ``set_video`` keeps the frames; the first video ``predict`` decodes clip by
clip (features for one clip at a time) and caches what every video task needs. ``stream`` runs one
video task over frames as they arrive, holding a bounded number of clips (:meth:`OMGPredictor.stream`);
both paths decode, associate, decide and emit with the same functions, frame by frame.

Resolution of the post-processing (``postprocess_at``):

- ``"original"`` (default, the released code: ``seg/models/fusion_head/omgseg_fusionhead.py``
  ``predict``, ``rescale=True``): every query's mask logits are cropped to the resized image and
  upsampled bilinearly to the original size, then panoptic / instance / semantic / VIS / VOS
  post-processing runs there;
- ``"input"`` (an option): post-processing at the resized input resolution, the final id maps
  and masks upscaled to the original size (nearest). Identical when the image is not resized,
  far cheaper in memory and time on large images (a 2048 x 1024 Cityscapes image holds 300
  full-size logit maps in the default).

Test-time resize: keep ratio with (long side, short side) limits ``test_size`` and mmcv's
rounding (``int(x * f + 0.5)``); the image is padded to the backbone's size divisibility with
the pixel mean, i.e. with 0 after normalisation, as the released data preprocessor pads.
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omg.data.masks import mask_box
from omg.inference import open_vocab as ov
from omg.inference.postprocess import instance_inference, mask_scores, panoptic_inference, semantic_inference
from omg.inference.results import (
    InstanceResult,
    InteractiveResult,
    PanopticResult,
    SegmentInfo,
    SemanticResult,
    VideoFrame,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoResult,
    VideoSemanticResult,
    VOSResult,
)
from omg.inference.video import associate, clip_length, split_clips, stream_clips, vos_match, vos_paint
from omg.modeling.checkpoint import load_checkpoint
from omg.modeling.heads import class_logits
from omg.modeling.model import Features, OMGSeg
from omg.modeling.prompts import Prompts
from omg.modeling.text import TextEmbedder
from omg.utils.vocabulary import Vocabulary

IMAGE_TASKS = ("panoptic", "instance", "semantic", "interactive")
POSTPROCESS_AT = ("original", "input")
#: how a prompted mask gets its label when a vocabulary is given (the released code labels none; both are ours):
#: "queries", the class of the object query whose mask best matches it (as panoptic classifies it), the frozen
#: CLIP's where no query's mask overlaps it; "clip", the frozen CLIP alone (the open-vocabulary branch's pooling)
PROMPT_LABELS = ("queries", "clip")
#: VOS proposals matched to the first frame's objects (the released DAVIS config's ``num_proposals``)
VOS_PROPOSALS = 25
VIDEO_TASKS = ("vis", "vps", "vss", "vos")
#: clips decoded past a clip before :meth:`OMGPredictor.stream` decides it (a video of up to 9 clips is decided with
#: its whole evidence: 45 frames at YouTube-VIS / DAVIS clip length 5, 18 at VIPSeg's 2)
LOOKAHEAD = 8


@dataclass
class _ObjectQueries:
    """The object queries' outputs on the current image(s); they do not depend on the vocabulary."""

    masks: torch.Tensor  # N x Q x h4 x w4 mask logits
    embed: torch.Tensor  # N x Q x E class embeddings
    objectness: torch.Tensor  # N x Q logits


@dataclass
class _ImageState:
    features: Features
    original: list[tuple[int, int]]
    resized: list[tuple[int, int]]
    batched: bool
    objects: _ObjectQueries | None = None


@dataclass
class _Clip:
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
class _Evidence:
    """The class evidence of the clips decoded so far, as running sums (bounded whatever the video's length). With
    ``keep_embeds`` every clip's class embeddings are kept instead of the sum of one vocabulary's logits, so that any
    vocabulary can be asked later (``set_video``); a stream knows its vocabulary."""

    keep_embeds: bool
    clips: int = 0
    objectness: torch.Tensor | None = None  # sum of the objectness logits
    pooled: torch.Tensor | None = None  # sum of the pooled CLIP features x area
    area: torch.Tensor | None = None  # sum of the areas
    embeds: list[torch.Tensor] = field(default_factory=list)
    logits: torch.Tensor | None = None  # sum of one vocabulary's class logits

    def add(self, clip: _Clip, logits: torch.Tensor | None = None) -> None:
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
class _DecodedVideo:
    clips: list[_Clip]
    evidence: _Evidence


@dataclass
class _Decision:
    logits: torch.Tensor | None  # Q x (C + 1) video-level class logits (None for VOS)
    objectness: torch.Tensor  # Q, in 0..1


@dataclass(frozen=True)
class _VideoJob:
    task: str
    vocab: Vocabulary | None
    open_vocab: bool | str
    topk: int = 100
    track_ids: str = "released"


@dataclass
class _VosTarget:
    masks: np.ndarray  # K x H x W bool, the first frame's objects
    object_ids: list[int]
    queries: dict[int, int] | None = None  # object id -> query, fixed on the first frame


@dataclass
class _VideoState:
    frames: list[np.ndarray]
    decoded: dict[int, _DecodedVideo] = field(default_factory=dict)  # by clip length


def _as_image(a: Any, where: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array (H x W x 3 RGB), got {type(a).__name__}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{where}: expected an H x W x 3 RGB array, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{where}: expected uint8 (or float 0..255) pixels, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{where}: float pixels must lie in 0..255")
    if a.shape[0] < 8 or a.shape[1] < 8:
        raise ValueError(f"{where}: image {a.shape[1]}x{a.shape[0]} is too small")
    return a


class OMGPredictor:
    def __init__(
        self,
        model: OMGSeg,
        metadata: dict | None = None,
        device: str | torch.device | None = None,
        test_size: tuple[int, int] | None = None,
        postprocess_at: str = "original",
        prompt_labels: str = "queries",
    ):
        if postprocess_at not in POSTPROCESS_AT:
            raise ValueError(f"postprocess_at must be one of {', '.join(POSTPROCESS_AT)}, got {postprocess_at!r}")
        if prompt_labels not in PROMPT_LABELS:
            raise ValueError(f"prompt_labels must be one of {', '.join(PROMPT_LABELS)}, got {prompt_labels!r}")
        self.postprocess_at = postprocess_at
        self.prompt_labels = prompt_labels
        metadata = metadata or {}
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.metadata = metadata
        # the one metadata schema for classes: the training label space (omg.data.labels.LabelSpace.to_dict)
        ls = metadata.get("label_space")
        self.training_vocabulary = None if ls is None else Vocabulary.from_dict(ls)
        #: (long side, short side) limits of the test-time resize (keep ratio)
        self.test_size = tuple(test_size or metadata.get("test_size") or (1333, 800))
        self.embedder = TextEmbedder(self.model.backbone)
        self.stats = {"backbone_calls": 0, "decoder_calls": 0}
        self._image: _ImageState | None = None
        self._video: _VideoState | None = None

    @property
    def clip_pretrained(self) -> bool:
        """Whether the model's CLIP started from pretrained weights (``model.pretrained``): without them the CLIP's
        labels of prompted masks and its open-vocabulary scores are arbitrary."""
        from omg.modeling.checkpoint import clip_weights

        return clip_weights(self.model.config, self.metadata) is not None

    @classmethod
    def from_checkpoint(cls, uri: str, device: str | torch.device | None = None, **kwargs) -> "OMGPredictor":
        model, metadata = load_checkpoint(uri, device=device or "cpu")
        return cls(model, metadata, device=device, **kwargs)

    # ------------------------------------------------------------------ vocabulary
    def vocabulary(self, items: Sequence[Any] | None) -> Vocabulary:
        if items is None:
            if self.training_vocabulary is None:
                raise ValueError("this checkpoint records no training vocabulary: pass vocabulary=[...]")
            return self.training_vocabulary
        return Vocabulary.parse(items, self.training_vocabulary)

    def _text(self, vocab: Vocabulary) -> torch.Tensor:
        return self.embedder.embed(vocab).to(self.device)

    def _use_open_vocab(self, vocab: Vocabulary, open_vocab: bool | str) -> tuple[bool, torch.Tensor]:
        if self.training_vocabulary is None:
            seen = torch.zeros(len(vocab), dtype=torch.bool)
        else:
            seen = torch.tensor(vocab.seen_in(self.training_vocabulary), dtype=torch.bool)
        if open_vocab == "auto":
            return bool((~seen).any()), seen
        return bool(open_vocab), seen

    # ------------------------------------------------------------------ inputs
    def _resize_factor(self, h: int, w: int) -> float:
        long_max, short_max = self.test_size
        return min(long_max / max(h, w), short_max / min(h, w))

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) an h x w image has at the network's input (before padding)."""
        f = self._resize_factor(h, w)
        return max(1, int(h * f + 0.5)), max(1, int(w * f + 0.5))  # mmcv's _scale_size rounding

    def _prepare(self, arrays: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize (keep ratio) to the test size, pad to a common size divisible by the backbone's."""
        tensors, sizes = [], []
        for a in arrays:
            h, w = a.shape[:2]
            rh, rw = self.input_size(h, w)
            t = torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None]
            if (rh, rw) != (h, w):
                t = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0, 255)
            tensors.append(t[0])
            sizes.append((rh, rw))
        d = self.model.size_divisibility
        ph = -(-max(s[0] for s in sizes) // d) * d
        pw = -(-max(s[1] for s in sizes) // d) * d
        # padded with the pixel mean: zero after the backbone's normalisation, as the official pipeline pads
        # (normalise, then pad with 0; omg.training.inputs.fill_padding)
        mean = torch.tensor(self.model.backbone.variant.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        batch = mean.repeat(len(tensors), 1, ph, pw)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
        return batch.to(self.device), sizes

    # ------------------------------------------------------------------ images
    @torch.no_grad()
    def set_image(self, image: np.ndarray | Sequence[np.ndarray]) -> None:
        """Compute the image features once (H x W x 3 RGB uint8, or a list of such images)."""
        batched = not isinstance(image, np.ndarray)
        arrays = [_as_image(a, f"image {i}") for i, a in enumerate(image)] if batched else [_as_image(image, "image")]
        if not arrays:
            raise ValueError("set_image got an empty list")
        batch, sizes = self._prepare(arrays)
        feats = self.model.extract(batch)
        self.stats["backbone_calls"] += 1
        self._image = _ImageState(feats, [a.shape[:2] for a in arrays], sizes, batched)
        self._video = None

    def _decoder_text(self) -> torch.Tensor:
        """The text embeddings the decoder runs with: the training vocabulary's (a placeholder without one; the
        masks and class embeddings do not depend on it, only the decoder's own logits, which are not used)."""
        if self.training_vocabulary is not None:
            return self._text(self.training_vocabulary)
        return F.normalize(torch.ones(1, 1, self.model.backbone.variant.embed_dim, device=self.device), dim=-1)

    def _objects(self) -> _ObjectQueries:
        st = self._image
        if st.objects is None:
            out = self.model.decode(st.features, self._decoder_text())
            self.stats["decoder_calls"] += 1
            st.objects = _ObjectQueries(out.pred_masks[:, :, 0], out.class_embed, out.pred_objectness[..., 0])
        return st.objects

    def _output_logits(
        self, masks: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int], original: tuple[int, int]
    ) -> torch.Tensor:
        """Q x h4 x w4 mask logits -> Q x h x w where post-processing runs: bilinear to the padded input, crop to
        the resized image, and (``postprocess_at="original"``) bilinear to the original size."""
        rh, rw = resized
        up = F.interpolate(masks[None].float(), size=padded, mode="bilinear", align_corners=False)[0][:, :rh, :rw]
        if self.postprocess_at == "original" and (rh, rw) != tuple(original):
            up = F.interpolate(up[None], size=tuple(original), mode="bilinear", align_corners=False)[0]
        return up

    def _input_logits(self, masks: torch.Tensor, i: int) -> torch.Tensor:
        st = self._image
        return self._output_logits(masks, st.features.image_size, st.resized[i], st.original[i])

    @staticmethod
    def _to_original(m: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """... x h x w (ids or bool) -> ... x H x W (nearest)."""
        if tuple(m.shape[-2:]) == tuple(size):
            return m.cpu().numpy()
        shape = m.shape
        x = m.reshape(-1, 1, *shape[-2:]).float()
        x = F.interpolate(x, size=size, mode="nearest")
        return x.reshape(*shape[:-2], *size).to(m.dtype).cpu().numpy()

    def _class_logits(
        self,
        embed: torch.Tensor,
        masks: torch.Tensor,
        clip_features: torch.Tensor,
        vocab: Vocabulary,
        open_vocab: bool | str,
    ) -> torch.Tensor:
        """N x Q x (C + 1) logits for ``vocab``, with the CLIP ensemble when asked (or 'auto' and unseen classes)."""
        text = self._text(vocab)
        logits = class_logits(embed, text, self.model.decoder.classifier.logit_scale.exp())
        use, seen = self._use_open_vocab(vocab, open_vocab)
        if use:
            clip, nonempty = ov.clip_logits(self.model.backbone, clip_features, masks, text)
            logits = ov.geometric_ensemble(logits, clip, seen, nonempty)
        return logits

    @torch.no_grad()
    def image_state(self) -> _ImageState:
        """The current image's features (opaque): keep it to switch back later without recomputing."""
        if self._image is None:
            raise ValueError("no image is set: call set_image() first")
        return self._image

    def restore_image_state(self, state: _ImageState) -> None:
        """Make a state from :meth:`image_state` current again (no backbone call)."""
        self._image, self._video = state, None

    # ------------------------------------------------------------------ image tasks
    def _image_set(self, task: str) -> _ImageState:
        if self._image is None:
            raise ValueError(f"task {task!r} needs an image: call set_image() first")
        return self._image

    def _per_image(self, task: str, run) -> Any:
        st = self._image_set(task)
        results = [run(i) for i in range(len(st.original))]
        return results if st.batched else results[0]

    def _image_inputs(self, i: int, vocab: Vocabulary, open_vocab: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Image i's (Q x (C + 1) class logits for ``vocab``, Q x h x w mask logits where post-processing runs)."""
        obj = self._objects()
        masks = obj.masks[i : i + 1]
        logits = self._class_logits(
            obj.embed[i : i + 1], masks[:, :, None], self._image.features.clip_features[i : i + 1], vocab, open_vocab
        )[0]
        return logits, self._input_logits(masks[0], i)

    @torch.no_grad()
    def panoptic(
        self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
    ) -> PanopticResult | list[PanopticResult]:
        """Panoptic segmentation of the current image(s) (a list when ``set_image`` got a list).

        ``vocabulary``: class names (see :meth:`Vocabulary.parse`), the training vocabulary when None;
        ``open_vocab``: True / False / "auto" (the CLIP ensemble when a class is unseen in training)."""
        self._image_set("panoptic")
        vocab = self.vocabulary(vocabulary)

        def run(i: int) -> PanopticResult:
            logits, mlog = self._image_inputs(i, vocab, open_vocab)
            pan, segs = panoptic_inference(logits, mlog, torch.tensor(vocab.isthing, device=mlog.device))
            pan_full = self._to_original(pan, self._image.original[i]).astype(np.int32)
            infos = []
            for s in segs:
                m = pan_full == s.id
                infos.append(
                    SegmentInfo(s.id, s.label, vocab.display[s.label], s.score, s.isthing, int(m.sum()), mask_box(m))
                )
            return PanopticResult(pan_full, [s for s in infos if s.area > 0], vocab.display)

        return self._per_image("panoptic", run)

    @torch.no_grad()
    def instance(
        self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto", topk: int = 100
    ) -> InstanceResult | list[InstanceResult]:
        """Instance segmentation (things only, the ``topk`` best query-class pairs, by score)."""
        self._image_set("instance")
        vocab = self.vocabulary(vocabulary)

        def run(i: int) -> InstanceResult:
            logits, mlog = self._image_inputs(i, vocab, open_vocab)
            inst = instance_inference(logits, mlog, torch.tensor(vocab.isthing, device=mlog.device), topk=topk)
            order = inst.scores.argsort(descending=True)
            masks_full = self._to_original(inst.masks[order], self._image.original[i]).astype(bool)
            labels = inst.labels[order].cpu().numpy()
            return InstanceResult(
                masks_full, labels, inst.scores[order].cpu().numpy(), [vocab.display[k] for k in labels], vocab.display
            )

        return self._per_image("instance", run)

    @torch.no_grad()
    def semantic(
        self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
    ) -> SemanticResult | list[SemanticResult]:
        """Semantic segmentation: a label map over ``vocabulary``."""
        self._image_set("semantic")
        vocab = self.vocabulary(vocabulary)

        def run(i: int) -> SemanticResult:
            logits, mlog = self._image_inputs(i, vocab, open_vocab)
            labels, _ = semantic_inference(logits, mlog)
            return SemanticResult(self._to_original(labels, self._image.original[i]).astype(np.int32), vocab.display)

        return self._per_image("semantic", run)

    @torch.no_grad()
    def interactive(
        self, points=None, boxes=None, vocabulary: Sequence[Any] | Vocabulary | None = None
    ) -> InteractiveResult | list[InteractiveResult]:
        """One mask per prompt: ``points`` (K x 2, x y) and / or ``boxes`` (K x 4, XYXY), in pixels of the original
        image (per image when batched). With a ``vocabulary`` each mask gets a label, by :attr:`prompt_labels`
        (:data:`PROMPT_LABELS`)."""
        st = self._image_set("interactive")
        if points is None and boxes is None:
            raise ValueError("task 'interactive' needs points and / or boxes")
        prompts = self._scaled_prompts(points, boxes)
        out = self.model.decode(st.features, self._decoder_text(), prompts)
        self.stats["decoder_calls"] += 1
        vocab = self.vocabulary(vocabulary) if vocabulary is not None else None
        results = []
        for i in range(len(st.original)):
            valid = prompts.valid[i]
            m = out.pred_masks[i, valid, 0]
            mlog = self._input_logits(m, i)
            prob = mlog.sigmoid()
            binary = prob > 0.5
            scores = ((prob * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)).cpu().numpy()
            res = InteractiveResult(self._to_original(binary, st.original[i]).astype(bool), scores)
            if vocab is not None:
                p = ov.clip_logits(
                    self.model.backbone, st.features.clip_features[i : i + 1], m[None, :, None], self._text(vocab)
                )[0][0].softmax(-1)
                sc, lab = p.max(-1)
                matched = torch.zeros_like(lab, dtype=torch.bool)
                if self.prompt_labels == "queries":
                    ql, qs, matched = self._prompt_labels_by_queries(i, m, vocab)
                    lab, sc = torch.where(matched, ql, lab), torch.where(matched, qs, sc)
                res.labels, res.label_scores = lab.cpu().numpy(), sc.cpu().numpy()
                res.names = [vocab.display[k] for k in res.labels]
                res.label_sources = ["queries" if b else "clip" for b in matched.tolist()]
            results.append(res)
        return results if st.batched else results[0]

    def _prompt_labels_by_queries(
        self, i: int, m: torch.Tensor, vocab: Vocabulary
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image i's prompted masks (P x h4 x w4 logits) labelled by the object queries of the same image: the query
        whose mask best matches the prompted one (the largest IoU at stride 4 x the query's top class probability)
        gives its class and that probability, classified as panoptic classifies (the CLIP ensemble when a class
        is unseen). -> (labels P, scores P, matched P: False where no query's mask overlaps the prompted one)."""
        obj = self._objects()
        logits = self._class_logits(
            obj.embed[i : i + 1],
            obj.masks[i : i + 1, :, None],
            self._image.features.clip_features[i : i + 1],
            vocab,
            "auto",
        )[0]
        top, cls = logits.float().softmax(-1)[:, :-1].max(-1)  # Q: the best class and its probability
        q = (obj.masks[i] > 0).flatten(1).float()  # Q x h4w4
        p = (m > 0).flatten(1).float()  # P x h4w4
        inter = p @ q.T
        iou = inter / (p.sum(1, keepdim=True) + q.sum(1)[None] - inter).clamp(min=1)
        fit, k = (iou * top[None]).max(-1)
        return cls[k], top[k], fit > 0

    def predict(self, task: str, **kwargs):
        """``getattr(self, task)(**kwargs)`` for a task of :data:`IMAGE_TASKS` or :data:`VIDEO_TASKS`, rejecting an
        argument that task does not take (a misspelt or misplaced one is an error, never ignored)."""
        if task not in IMAGE_TASKS + VIDEO_TASKS:
            raise ValueError(
                f"unknown task {task!r}; image tasks: {', '.join(IMAGE_TASKS)}; video tasks: {', '.join(VIDEO_TASKS)}"
            )
        entry = getattr(self, task)
        takes = list(inspect.signature(entry).parameters)
        unknown = [k for k in kwargs if k not in takes]
        if unknown:
            if task in IMAGE_TASKS and {"points", "boxes"} & set(unknown):
                raise ValueError(f"task {task!r} takes no prompts (use task='interactive')")
            raise TypeError(
                f"task {task!r} takes no argument {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(takes) or 'nothing'}"
            )
        return entry(**kwargs)

    def _scaled_prompts(self, points, boxes) -> Prompts:
        st = self._image
        n = len(st.original)
        if not st.batched:
            points = [points] if points is not None else [None]
            boxes = [boxes] if boxes is not None else [None]
        points = points if points is not None else [None] * n
        boxes = boxes if boxes is not None else [None] * n
        if len(points) != n or len(boxes) != n:
            raise ValueError(f"prompts for {max(len(points), len(boxes))} images, but {n} image(s) are set")
        pts, bxs = [], []
        for i in range(n):
            h, w = st.original[i]
            rh, rw = st.resized[i]
            sy, sx = rh / h, rw / w
            p = None if points[i] is None else np.asarray(points[i], dtype=np.float32).reshape(-1, 2)
            b = None if boxes[i] is None else np.asarray(boxes[i], dtype=np.float32).reshape(-1, 4)
            if p is not None:
                bad = (p[:, 0] < 0) | (p[:, 0] > w) | (p[:, 1] < 0) | (p[:, 1] > h)
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    raise ValueError(f"image {i}: point {k} {p[k].tolist()} lies outside the {w}x{h} image")
                p = p * np.array([sx, sy], dtype=np.float32)
            if b is not None:
                bad = (
                    (b[:, 0] < 0)
                    | (b[:, 1] < 0)
                    | (b[:, 2] > w)
                    | (b[:, 3] > h)
                    | (b[:, 2] <= b[:, 0])
                    | (b[:, 3] <= b[:, 1])
                )
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    raise ValueError(f"image {i}: box {k} {b[k].tolist()} is not an XYXY box inside the {w}x{h} image")
                b = b * np.array([sx, sy, sx, sy], dtype=np.float32)
            pts.append(None if p is None else torch.from_numpy(p))
            bxs.append(None if b is None else torch.from_numpy(b))
        return Prompts.from_lists(pts, bxs, st.resized).to(self.device)

    # ------------------------------------------------------------------ videos
    def set_video(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Keep the frames (T x H x W x 3 uint8 RGB, or an iterable of H x W x 3 frames). For a video too long to
        hold, :meth:`stream` it instead."""
        arrays = list(frames)
        if not arrays:
            raise ValueError("set_video got no frames")
        arrays = [_as_image(a, f"frame {t}") for t, a in enumerate(arrays)]
        size = arrays[0].shape[:2]
        for t, a in enumerate(arrays):
            if a.shape[:2] != size:
                raise ValueError(f"frame {t} is {a.shape[1]}x{a.shape[0]}, frame 0 is {size[1]}x{size[0]}")
        self._video = _VideoState(arrays)
        self._image = None

    def _decode_clip(
        self, frames: list[np.ndarray], start: int, previous: torch.Tensor | None, text: torch.Tensor
    ) -> _Clip:
        """Decode one clip with tube queries (its features only), its queries re-ordered to line up with
        ``previous``, the previous clip's (already re-ordered) raw query embeddings."""
        batch, sizes = self._prepare(frames)
        feats = self.model.extract(batch[None])  # 1 x T x 3 x H x W
        self.stats["backbone_calls"] += 1
        out = self.model.decode(feats, text)
        self.stats["decoder_calls"] += 1
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
        return _Clip(
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

    def _decoded(self, task: str) -> _DecodedVideo:
        """The current video decoded clip by clip at ``task``'s clip length (cached: every task and vocabulary after
        the first reuses it)."""
        vs = self._video
        if vs is None:
            raise ValueError(f"task {task!r} needs a video: call set_video() first")
        length = clip_length(task, len(vs.frames))
        if length not in vs.decoded:
            text = self._decoder_text()
            clips, evidence, previous = [], _Evidence(keep_embeds=True), None
            for c in split_clips(len(vs.frames), length):
                clip = self._decode_clip([vs.frames[t] for t in c], c.start, previous, text)
                evidence.add(clip)
                clips.append(clip)
                previous = clip.query
            vs.decoded[length] = _DecodedVideo(clips, evidence)
        return vs.decoded[length]

    def _decide(self, ev: _Evidence, job: _VideoJob) -> _Decision:
        """The video-level decision from the evidence: class logits = the mean over clips (the released
        ``sum(out_cls) / num_tubes``), with the CLIP ensemble on the features pooled over every decoded frame;
        objectness = the sigmoid of the clip-mean objectness logit."""
        objectness = (ev.objectness / ev.clips).sigmoid()
        if job.vocab is None:
            return _Decision(None, objectness)
        text = self._text(job.vocab)
        scale = self.model.decoder.classifier.logit_scale.exp()
        total = ev.logits if ev.logits is not None else sum(class_logits(e, text, scale) for e in ev.embeds)
        logits = total / ev.clips
        use, seen = self._use_open_vocab(job.vocab, job.open_vocab)
        if use:
            emb = F.normalize(
                self.model.backbone.clip_image_head(ev.pooled / ev.area.clamp(min=1)[:, None]).float(), dim=-1
            )
            clip = class_logits(emb, text, scale)[..., :-1]
            logits = ov.geometric_ensemble(logits, clip, seen, ev.area > 0)
        return _Decision(logits, objectness)

    def _frame_logits(self, clip: _Clip, t: int, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Q x h x w mask logits of the clip's frame t (only ``queries`` when given) where post-processing runs."""
        m = clip.masks[:, t] if queries is None else clip.masks[queries.cpu(), t]
        return self._output_logits(m.float().to(self.device), clip.image_size, clip.resized, clip.original)

    def _video_job(self, task: str, vocabulary, open_vocab, topk: int = 100, track_ids: str = "released") -> _VideoJob:
        if task not in VIDEO_TASKS:
            raise ValueError(f"unknown video task {task!r}; video tasks: {', '.join(VIDEO_TASKS)}")
        if track_ids not in ("released", "stable"):
            raise ValueError(f"track_ids must be 'released' or 'stable', got {track_ids!r}")
        return _VideoJob(task, None if task == "vos" else self.vocabulary(vocabulary), open_vocab, topk, track_ids)

    def _vos_target(self, frame0: np.ndarray, first_frame_masks, object_ids, points, boxes) -> _VosTarget:
        """The objects to follow: the first frame's masks (K x H x W bool, or an H x W id map whose non-zero values
        other than 255 are the objects), or the masks that ``points`` / ``boxes`` on the first frame prompt."""
        size = frame0.shape[:2]
        if first_frame_masks is None:
            if points is None and boxes is None:
                raise ValueError(
                    "task 'vos' needs first_frame_masks (K x H x W bool, or an H x W id map) or "
                    "points / boxes on the first frame"
                )
            saved = self._image, self._video
            try:
                self.set_image(frame0)
                given = self.interactive(points=points, boxes=boxes).masks
            finally:
                self._image, self._video = saved
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
        return _VosTarget(given.astype(bool), object_ids)

    def _emit(self, clip: _Clip, decision: _Decision, job: _VideoJob, vos: _VosTarget | None) -> Iterator[VideoResult]:
        """The clip's frames' results (one video result with T = 1 per frame) under ``decision``, frame by frame."""
        frames = range(clip.masks.shape[1])
        size = clip.original
        vocab, logits = job.vocab, decision.logits
        if job.task == "vss":
            for t in frames:
                labels = semantic_inference(logits, self._frame_logits(clip, t))[0]
                yield VideoSemanticResult(self._to_original(labels, size)[None].astype(np.int32), vocab.display)
            return
        if job.task == "vps":
            isthing = torch.tensor(vocab.isthing, device=logits.device)
            for t in frames:
                pan, segs = panoptic_inference(logits, self._frame_logits(clip, t), isthing, ids=job.track_ids)
                full = self._to_original(pan, size).astype(np.int32)
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
                    lg = self._frame_logits(clip, t, unique)
                    masks = self._to_original(lg > 0, size)[pair_np][:, None]
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
            first = self._to_original(self._frame_logits(clip, 0, torch.as_tensor(top)) > 0, size)
            vos.queries = {obj: int(top[p]) for obj, p in vos_match(first, vos.masks, vos.object_ids).items()}
        position = np.empty_like(rank)
        position[rank] = np.arange(len(rank))
        order = sorted(vos.queries.values(), key=lambda q: position[q])  # highest objectness first
        matched = {obj: order.index(q) for obj, q in vos.queries.items()}
        for t in frames:
            props = (
                self._to_original(self._frame_logits(clip, t, torch.as_tensor(order)) > 0, size)
                if order
                else np.zeros((0, *size), bool)
            )
            yield VOSResult(vos_paint(props, matched)[None], vos.object_ids, dict(vos.queries))

    def _whole_video(self, job: _VideoJob, vos: _VosTarget | None = None) -> list[VideoResult]:
        dv = self._decoded(job.task)
        decision = self._decide(dv.evidence, job)
        return [r for clip in dv.clips for r in self._emit(clip, decision, job, vos)]

    @torch.no_grad()
    def vos(
        self, first_frame_masks=None, object_ids: Sequence[int] | None = None, points=None, boxes=None
    ) -> VOSResult:
        """Video object segmentation from the first frame's masks (K x H x W bool, or an H x W id map whose
        non-zero values other than 255 are the objects; ``object_ids`` name the K masks, 1..K by default), or from
        ``points`` / ``boxes`` on the first frame (one object per prompt, as :meth:`interactive`)."""
        self._decoded("vos")
        target = self._vos_target(self._video.frames[0], first_frame_masks, object_ids, points, boxes)
        return VOSResult.concat(self._whole_video(self._video_job("vos", None, False), target))

    @torch.no_grad()
    def vis(
        self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto", topk: int = 100
    ) -> VideoInstanceResult:
        """Video instance segmentation: the ``topk`` best (query, thing class) pairs, tracked over the video."""
        self._decoded("vis")
        return VideoInstanceResult.concat(self._whole_video(self._video_job("vis", vocabulary, open_vocab, topk)))

    @torch.no_grad()
    def vss(
        self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
    ) -> VideoSemanticResult:
        """Video semantic segmentation: one label map per frame."""
        self._decoded("vss")
        return VideoSemanticResult.concat(self._whole_video(self._video_job("vss", vocabulary, open_vocab)))

    @torch.no_grad()
    def vps(
        self,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
        track_ids: str = "released",
    ) -> VideoPanopticResult:
        """Video panoptic segmentation. ``track_ids``: "released" (the fusion head's per-frame counter over
        things) or "stable" (query-based ids that survive a vanishing segment)."""
        job = self._video_job("vps", vocabulary, open_vocab, track_ids=track_ids)
        self._decoded("vps")
        return VideoPanopticResult.concat(self._whole_video(job))

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
        """A video task on any iterable of H x W x 3 RGB frames (a file's decoder, a folder, a generator, a camera),
        in bounded memory: yields a :class:`VideoFrame` per frame, in order, as soon as its clip is decided.

        The video is split into the official clips as it arrives (:func:`omg.inference.video.stream_clips`) and decoded
        clip by clip with query association, as :meth:`set_video`; what is kept is the association's state (the
        last clip's query embeddings) and running sums of the class evidence (class logits, objectness, CLIP features
        pooled over the masks), never the frames or masks of decided clips. A clip is decided, with the evidence of
        every clip decoded so far, once ``lookahead`` more clips have been decoded (or the video ended), so at most
        ``lookahead + 1`` clips are held. A video of at most ``lookahead + 1`` clips is decided with the whole video's
        evidence, and its frames' results are exactly those of :meth:`set_video` + the task (``concat`` them);
        ``lookahead=None`` holds every clip and decides at the end (exact for any length, memory grows with it).
        The other arguments are the task's (:meth:`vis`, :meth:`vps`, :meth:`vss`, :meth:`vos`). The predictor's
        current image or video is left as it was."""
        if lookahead is not None and (not isinstance(lookahead, int) or lookahead < 0):
            raise ValueError(f"lookahead must be a number of clips >= 0 or None, got {lookahead!r}")
        job = self._video_job(task, vocabulary, open_vocab, topk, track_ids)
        if task != "vos" and (
            first_frame_masks is not None or points is not None or boxes is not None or object_ids is not None
        ):
            raise ValueError(f"task {task!r} takes no first-frame masks or prompts (those are for task 'vos')")
        text = None if job.vocab is None else self._text(job.vocab)
        scale = self.model.decoder.classifier.logit_scale.exp()
        decoder_text = self._decoder_text()
        evidence, previous, target = _Evidence(keep_embeds=False), None, None
        pending: deque[tuple[_Clip, list[np.ndarray]]] = deque()

        def checked(source: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            size = None
            for t, a in enumerate(source):
                a = _as_image(a, f"frame {t}")
                if size is None:
                    size = a.shape[:2]
                elif a.shape[:2] != size:
                    raise ValueError(f"frame {t} is {a.shape[1]}x{a.shape[0]}, frame 0 is {size[1]}x{size[0]}")
                yield a

        def release() -> Iterator[VideoFrame]:
            clip, images = pending.popleft()
            for t, r in enumerate(self._emit(clip, self._decide(evidence, job), job, target)):
                yield VideoFrame(clip.start + t, images[t], r)

        for start, images in stream_clips(checked(frames), task):
            if task == "vos" and target is None:
                target = self._vos_target(images[0], first_frame_masks, object_ids, points, boxes)
            clip = self._decode_clip(images, start, previous, decoder_text)
            previous = clip.query
            evidence.add(clip, None if text is None else class_logits(clip.embed, text, scale))
            pending.append((clip, images))
            while lookahead is not None and len(pending) > lookahead:
                yield from release()
        while pending:
            yield from release()
