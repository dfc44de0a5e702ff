"""OMGPredictor: one model, every task, features computed once.

    predictor = OMGPredictor.from_checkpoint("runs/demo/model.pt")      # any path or fsspec URI
    predictor.set_image(image)                                         # H x W x 3 uint8 RGB (or a list)
    pan = predictor.panoptic()                                         # training vocabulary
    ov = predictor.panoptic(vocabulary=["hexagon, six-sided shape", "stuff:sky"])
    clicks = predictor.interactive(points=[[40, 52]], boxes=[[10, 10, 60, 60]],
                                   vocabulary=["circle", "square"])    # masks + open-vocabulary labels
    predictor.set_video(frames)                                        # T x H x W x 3 uint8 (or a list)
    tracks = predictor.vis()                                           # also .vps(), .vss(), .vos(first_frame_masks)

One typed entry point per task (``panoptic``, ``instance``, ``semantic``, ``interactive``; ``vis``, ``vps``,
``vss``, ``vos``), each returning its result type; ``predict(task, **kwargs)`` dispatches to them and rejects
an argument the task does not take. Boxes are XYXY in pixels of the original image (the one box convention
in code; COCO's XYWH appears only in the files :mod:`omg.inference.writers` writes and the readers read).

``set_image`` runs the backbone and pixel decoder once; every ``predict`` after it reuses
them. The object queries' masks and class embeddings do not depend on the vocabulary, so a
new vocabulary costs one text embedding (cached) and a matrix product; prompts cost one
decoder pass. ``set_video`` keeps the frames; the first video ``predict`` decodes clip by
clip (features for one clip at a time) and caches what every video task needs.

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
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from omg.data.masks import mask_box
from omg.inference import open_vocab as ov
from omg.inference.postprocess import instance_inference, mask_scores, panoptic_inference, semantic_inference
from omg.inference.results import (
    InstanceResult, InteractiveResult, PanopticResult, SegmentInfo, SemanticResult, VideoInstanceResult,
    VideoPanopticResult, VideoSemanticResult, VOSResult,
)
from omg.inference.video import associate, clip_length, split_clips, vos_from_proposals
from omg.modeling.checkpoint import load_checkpoint
from omg.modeling.heads import class_logits
from omg.modeling.model import Features, OMGSeg
from omg.modeling.prompts import Prompts
from omg.modeling.text import TextEmbedder
from omg.utils.vocabulary import Vocabulary

IMAGE_TASKS = ("panoptic", "instance", "semantic", "interactive")
POSTPROCESS_AT = ("original", "input")
#: VOS proposals matched to the first frame's objects (the released DAVIS config's ``num_proposals``)
VOS_PROPOSALS = 25
VIDEO_TASKS = ("vis", "vps", "vss", "vos")


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
class _VideoQueries:
    """What every video task needs, decoded clip by clip with associated queries (one per clip length)."""

    masks: torch.Tensor  # Q x T x h4 x w4 mask logits (float16, CPU)
    embeds: torch.Tensor  # clips x Q x E class embeddings
    objectness: torch.Tensor  # Q, the sigmoid of the clip-mean objectness logit
    pooled: torch.Tensor  # Q x C5 CLIP features pooled over every frame's mask
    nonempty: torch.Tensor  # Q bool: the mask covers some stride-32 cell
    image_size: tuple[int, int]  # padded network input
    resized: tuple[int, int]  # resized frame inside it


@dataclass
class _VideoState:
    frames: list[np.ndarray]
    original: tuple[int, int]
    queries: dict[int, _VideoQueries] = field(default_factory=dict)  # by clip length


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
    def __init__(self, model: OMGSeg, metadata: dict | None = None, device: str | torch.device | None = None,
                 test_size: tuple[int, int] | None = None, postprocess_at: str = "original"):
        if postprocess_at not in POSTPROCESS_AT:
            raise ValueError(f"postprocess_at must be one of {', '.join(POSTPROCESS_AT)}, got {postprocess_at!r}")
        self.postprocess_at = postprocess_at
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

    def _output_logits(self, masks: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int],
                       original: tuple[int, int]) -> torch.Tensor:
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

    def _class_logits(self, embed: torch.Tensor, masks: torch.Tensor, clip_features: torch.Tensor,
                      vocab: Vocabulary, open_vocab: bool | str) -> torch.Tensor:
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
        masks = obj.masks[i: i + 1]
        logits = self._class_logits(obj.embed[i: i + 1], masks[:, :, None],
                                    self._image.features.clip_features[i: i + 1], vocab, open_vocab)[0]
        return logits, self._input_logits(masks[0], i)

    @torch.no_grad()
    def panoptic(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
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
                infos.append(SegmentInfo(s.id, s.label, vocab.display[s.label], s.score, s.isthing, int(m.sum()),
                                         mask_box(m)))
            return PanopticResult(pan_full, [s for s in infos if s.area > 0], vocab.display)

        return self._per_image("panoptic", run)

    @torch.no_grad()
    def instance(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto",
                 topk: int = 100) -> InstanceResult | list[InstanceResult]:
        """Instance segmentation (things only, the ``topk`` best query-class pairs, by score)."""
        self._image_set("instance")
        vocab = self.vocabulary(vocabulary)

        def run(i: int) -> InstanceResult:
            logits, mlog = self._image_inputs(i, vocab, open_vocab)
            inst = instance_inference(logits, mlog, torch.tensor(vocab.isthing, device=mlog.device), topk=topk)
            order = inst.scores.argsort(descending=True)
            masks_full = self._to_original(inst.masks[order], self._image.original[i]).astype(bool)
            labels = inst.labels[order].cpu().numpy()
            return InstanceResult(masks_full, labels, inst.scores[order].cpu().numpy(),
                                  [vocab.display[k] for k in labels], vocab.display)

        return self._per_image("instance", run)

    @torch.no_grad()
    def semantic(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
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
    def interactive(self, points=None, boxes=None, vocabulary: Sequence[Any] | Vocabulary | None = None
                    ) -> InteractiveResult | list[InteractiveResult]:
        """One mask per prompt: ``points`` (K x 2, x y) and / or ``boxes`` (K x 4, XYXY), in pixels of the original
        image (per image when batched). With a ``vocabulary`` each mask is labelled by the frozen CLIP."""
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
                clip, _ = ov.clip_logits(self.model.backbone, st.features.clip_features[i: i + 1], m[None, :, None],
                                         self._text(vocab))
                p = clip[0].softmax(-1)
                sc, lab = p.max(-1)
                res.labels, res.label_scores = lab.cpu().numpy(), sc.cpu().numpy()
                res.names = [vocab.display[k] for k in res.labels]
            results.append(res)
        return results if st.batched else results[0]

    def predict(self, task: str, **kwargs):
        """``getattr(self, task)(**kwargs)`` for a task of :data:`IMAGE_TASKS` or :data:`VIDEO_TASKS`, rejecting an
        argument that task does not take (a misspelt or misplaced one is an error, never ignored)."""
        if task not in IMAGE_TASKS + VIDEO_TASKS:
            raise ValueError(f"unknown task {task!r}; image tasks: {', '.join(IMAGE_TASKS)}; "
                             f"video tasks: {', '.join(VIDEO_TASKS)}")
        entry = getattr(self, task)
        takes = list(inspect.signature(entry).parameters)
        unknown = [k for k in kwargs if k not in takes]
        if unknown:
            if task in IMAGE_TASKS and {"points", "boxes"} & set(unknown):
                raise ValueError(f"task {task!r} takes no prompts (use task='interactive')")
            raise TypeError(f"task {task!r} takes no argument {', '.join(map(repr, unknown))}; "
                             f"it takes: {', '.join(takes) or 'nothing'}")
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
                bad = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
                if bad.any():
                    k = int(np.flatnonzero(bad)[0])
                    raise ValueError(f"image {i}: box {k} {b[k].tolist()} is not an XYXY box inside the {w}x{h} image")
                b = b * np.array([sx, sy, sx, sy], dtype=np.float32)
            pts.append(None if p is None else torch.from_numpy(p))
            bxs.append(None if b is None else torch.from_numpy(b))
        return Prompts.from_lists(pts, bxs, st.resized).to(self.device)

    # ------------------------------------------------------------------ videos
    def set_video(self, frames: np.ndarray | Iterable[np.ndarray]) -> None:
        """Keep the frames (T x H x W x 3 uint8 RGB, or an iterable of H x W x 3 frames)."""
        arrays = list(frames) if not (isinstance(frames, np.ndarray) and frames.ndim == 4) else list(frames)
        if not arrays:
            raise ValueError("set_video got no frames")
        arrays = [_as_image(a, f"frame {t}") for t, a in enumerate(arrays)]
        size = arrays[0].shape[:2]
        for t, a in enumerate(arrays):
            if a.shape[:2] != size:
                raise ValueError(f"frame {t} is {a.shape[1]}x{a.shape[0]}, frame 0 is {size[1]}x{size[0]}")
        self._video = _VideoState(arrays, size)
        self._image = None

    def _video_queries(self, length: int) -> _VideoQueries:
        """Decode the video clip by clip (features for one clip at a time), associate the queries,
        and keep what every video task needs (per clip length)."""
        vs = self._video
        if length in vs.queries:
            return vs.queries[length]
        text = self._decoder_text()
        masks, embeds, objs, pooled, areas = [], [], [], [], []
        prev = None
        resized = image_size = None
        for clip in split_clips(len(vs.frames), length):
            batch, sizes = self._prepare([vs.frames[t] for t in clip])
            resized = sizes[0]
            feats = self.model.extract(batch[None])  # 1 x T x 3 x H x W
            self.stats["backbone_calls"] += 1
            out = self.model.decode(feats, text)
            self.stats["decoder_calls"] += 1
            raw = out.query_embed[0]
            perm = torch.arange(raw.shape[0]) if prev is None else associate(prev, raw)
            prev = raw[perm]
            m = out.pred_masks[0, perm]  # Q x t x h4 x w4
            pool, nonempty = ov.clip_pooled(feats.clip_features, m[None])
            h, w = feats.clip_features.shape[-2:]
            area = F.interpolate(m.float().flatten(0, 1)[:, None], size=(h, w), mode="bilinear",
                                 align_corners=False).gt(0).view(m.shape[0], -1).sum(1).float()
            masks.append(m.half().cpu())
            embeds.append(out.class_embed[0, perm])
            objs.append(out.pred_objectness[0, perm, 0])
            pooled.append(pool[0] * area[:, None])
            areas.append(area)
            image_size = feats.image_size
        total_area = torch.stack(areas).sum(0)
        vq = _VideoQueries(
            masks=torch.cat(masks, dim=1), embeds=torch.stack(embeds),
            objectness=torch.stack(objs).mean(0).sigmoid(),
            pooled=torch.stack(pooled).sum(0) / total_area.clamp(min=1)[:, None],
            nonempty=total_area > 0, image_size=image_size, resized=resized)
        vs.queries[length] = vq
        return vq

    def _video_logits(self, vq: _VideoQueries, vocab: Vocabulary, open_vocab) -> torch.Tensor:
        text = self._text(vocab)
        scale = self.model.decoder.classifier.logit_scale.exp()
        logits = torch.stack([class_logits(e, text, scale) for e in vq.embeds]).mean(0)  # Q x (C+1)
        use, seen = self._use_open_vocab(vocab, open_vocab)
        if use:
            with torch.no_grad():
                emb = F.normalize(self.model.backbone.clip_image_head(vq.pooled).float(), dim=-1)
            clip = class_logits(emb, text, scale)[..., :-1]
            logits = ov.geometric_ensemble(logits, clip, seen, vq.nonempty)
        return logits

    def _frame_logits(self, vq: _VideoQueries, t: int, queries: torch.Tensor | None = None) -> torch.Tensor:
        """Q x h x w mask logits of frame t (only ``queries`` when given) where post-processing runs."""
        m = vq.masks[:, t] if queries is None else vq.masks[queries.cpu(), t]
        return self._output_logits(m.float().to(self.device), vq.image_size, vq.resized, self._video.original)

    def _video_set(self, task: str) -> tuple[_VideoState, _VideoQueries]:
        if self._video is None:
            raise ValueError(f"task {task!r} needs a video: call set_video() first")
        return self._video, self._video_queries(clip_length(task, len(self._video.frames)))

    @torch.no_grad()
    def vos(self, first_frame_masks=None, object_ids: Sequence[int] | None = None) -> VOSResult:
        """Video object segmentation from the first frame's masks (K x H x W bool, or an H x W id map whose
        non-zero values other than 255 are the objects); ``object_ids`` name the K masks (1..K by default)."""
        vs, vq = self._video_set("vos")
        size, num_frames = vs.original, len(vs.frames)
        if first_frame_masks is None:
            raise ValueError("task 'vos' needs first_frame_masks (K x H x W bool, or an H x W id map)")
        given = np.asarray(first_frame_masks)
        if given.ndim == 2:
            ids = [int(v) for v in np.unique(given) if v not in (0, 255)]
            given = np.stack([given == v for v in ids]) if ids else np.zeros((0, *given.shape), bool)
            object_ids = object_ids or ids
        object_ids = list(object_ids or range(1, len(given) + 1))
        if given.shape[1:] != tuple(size) or len(object_ids) != len(given):
            raise ValueError(f"first_frame_masks must be K x {size[0]} x {size[1]} with one id per mask")
        objectness = vq.objectness.cpu().numpy()
        top = torch.as_tensor(np.argsort(-objectness, kind="stable")[:VOS_PROPOSALS])
        props = np.stack([self._to_original(self._frame_logits(vq, t, top) > 0, size) for t in range(num_frames)], 1)
        out, queries = vos_from_proposals(props, objectness[top.numpy()], given.astype(bool), object_ids)
        queries = {obj: int(top[q]) for obj, q in queries.items()}
        return VOSResult(out, object_ids, queries)

    @torch.no_grad()
    def vis(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto",
            topk: int = 100) -> VideoInstanceResult:
        """Video instance segmentation: the ``topk`` best (query, thing class) pairs, tracked over the video."""
        vs, vq = self._video_set("vis")
        size, num_frames = vs.original, len(vs.frames)
        vocab = self.vocabulary(vocabulary)
        logits = self._video_logits(vq, vocab, open_vocab)
        isthing = torch.tensor(vocab.isthing, device=logits.device)
        c = len(vocab)
        scores = logits.float().softmax(-1)[:, :c]
        k = min(topk, scores.numel())
        top, flat = scores.flatten().topk(k)
        labels, queries = flat % c, flat // c
        keep = isthing[labels]
        top, labels, queries = top[keep], labels[keep], queries[keep]
        # per frame as the released fusion head (FH.instance_postprocess): score_t = class score x the mean
        # probability inside the frame's mask (0 where it is empty); the video's score is the mean over frames,
        # as the YouTube-VIS metric aggregates the per-frame results of one instance
        frame_masks, frame_scores = [], []
        for t in range(num_frames):
            lg = self._frame_logits(vq, t, queries) if len(queries) else torch.zeros(0, 1, 1)
            frame_scores.append(mask_scores(lg))
            frame_masks.append(self._to_original(lg > 0, size))
        masks = np.stack(frame_masks, 1) if len(queries) else np.zeros((0, num_frames, *size), bool)
        mscore = torch.stack(frame_scores, 1).mean(1)
        lab = labels.cpu().numpy()
        return VideoInstanceResult(masks, lab, (top * mscore).cpu().numpy(), (queries + 1).cpu().numpy(),
                                   [vocab.display[k] for k in lab], vocab.display)

    @torch.no_grad()
    def vss(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto"
            ) -> VideoSemanticResult:
        """Video semantic segmentation: one label map per frame."""
        vs, vq = self._video_set("vss")
        vocab = self.vocabulary(vocabulary)
        logits = self._video_logits(vq, vocab, open_vocab)
        maps = [self._to_original(semantic_inference(logits, self._frame_logits(vq, t))[0], vs.original)
                for t in range(len(vs.frames))]
        return VideoSemanticResult(np.stack(maps).astype(np.int32), vocab.display)

    @torch.no_grad()
    def vps(self, vocabulary: Sequence[Any] | Vocabulary | None = None, open_vocab: bool | str = "auto",
            track_ids: str = "released") -> VideoPanopticResult:
        """Video panoptic segmentation. ``track_ids``: "released" (the fusion head's per-frame counter over
        things) or "stable" (query-based ids that survive a vanishing segment)."""
        if track_ids not in ("released", "stable"):
            raise ValueError(f"track_ids must be 'released' or 'stable', got {track_ids!r}")
        vs, vq = self._video_set("vps")
        size = vs.original
        vocab = self.vocabulary(vocabulary)
        logits = self._video_logits(vq, vocab, open_vocab)
        isthing = torch.tensor(vocab.isthing, device=logits.device)
        pans, seg_info, frame_ids = [], {}, []
        for t in range(len(vs.frames)):
            pan, segs = panoptic_inference(logits, self._frame_logits(vq, t), isthing, ids=track_ids)
            full = self._to_original(pan, size).astype(np.int32)
            pans.append(full)
            present = []
            for s in segs:
                area = int((full == s.id).sum())
                if area == 0:
                    continue
                present.append(s.id)
                if s.id not in seg_info:
                    seg_info[s.id] = SegmentInfo(s.id, s.label, vocab.display[s.label], s.score, s.isthing, 0,
                                                 mask_box(full == s.id))
                seg_info[s.id].area += area
            frame_ids.append(present)
        return VideoPanopticResult(np.stack(pans), sorted(seg_info.values(), key=lambda s: s.id), vocab.display, frame_ids)
