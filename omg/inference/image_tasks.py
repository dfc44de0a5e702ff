"""The image tasks (panoptic, instance, semantic, interactive) on an :class:`ImageState` the caller holds.

``init_state`` runs the backbone and pixel decoder once; every task after it reuses them. The object queries'
masks and class embeddings do not depend on the vocabulary, so they are decoded once per state (kept on it) and a
new vocabulary costs one text embedding (cached) and a matrix product; prompts cost one decoder pass. Boxes are
XYXY in pixels of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from omg.data.masks import mask_box
from omg.inference import open_vocab as ov
from omg.inference.core import PredictorCore, as_image, to_original
from omg.inference.postprocess import instance_inference, panoptic_inference, semantic_inference
from omg.inference.results import InstanceResult, InteractiveResult, PanopticResult, SegmentInfo, SemanticResult
from omg.modeling.model import Features, OMGOutput
from omg.modeling.prompts import Prompts, points_to_boxes
from omg.modeling.refine import binary_prev
from omg.utils.vocabulary import Vocabulary


@dataclass
class ObjectPrompt:
    """One object's prompts for interactive refinement (a model with ``refinement``; docs/model.md §7.3), in pixels
    of the original image: ``points`` K x 2 (x, y) with ``labels`` K (1 positive, the default; 0 negative), an
    optional ``box`` (XYXY) and an optional previous ``mask``: the ``logits`` plane of this object from the last
    :class:`InteractiveResult` (the mask grid, as returned), or an H x W bool / probability mask of the image.
    The object's location query is built from its box, else from its first positive click (the released
    encoding); every click enters as a token. One positive click and nothing else is the released prompt."""

    points: Any = ()
    labels: Any = None
    box: Any = None
    mask: np.ndarray | None = None

    def checked(self, j: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """-> (points K x 2, labels K, box 4 or None), checked against the image ``size`` (height, width); the
        errors name object ``j`` and the field."""
        h, w = size
        pts = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
        labels = np.ones(len(pts), np.int64) if self.labels is None else np.asarray(self.labels).reshape(-1)
        if len(labels) != len(pts):
            raise ValueError(f"object {j}: {len(pts)} points but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"object {j}: labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
        bad = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"object {j}: point {k} {pts[k].tolist()} lies outside the {w}x{h} image")
        box = None
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float32).reshape(-1)
            if box.shape != (4,) or box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h or (box[2:] <= box[:2]).any():
                raise ValueError(f"object {j}: box {box.tolist()} is not an XYXY box inside the {w}x{h} image")
        if box is None and not (labels == 1).any():
            raise ValueError(f"object {j}: needs a positive click or a box")
        return pts, labels, box


@dataclass
class ObjectQueries:
    """The object queries' outputs on the state's image(s); they do not depend on the vocabulary."""

    masks: torch.Tensor  # N x Q x h4 x w4 mask logits
    embed: torch.Tensor  # N x Q x E class embeddings
    objectness: torch.Tensor  # N x Q logits


@dataclass
class ImageState:
    """One image, or a batch of them, with its features computed (:meth:`ImageTasks.init_state`). Hold it to ask
    any number of tasks, vocabularies and prompts of the same image(s) without another backbone call."""

    features: Features
    original: list[tuple[int, int]]  # (height, width) of each image
    resized: list[tuple[int, int]]  # (height, width) of each at the network's input
    batched: bool  # a list was given: the tasks answer a list
    objects: ObjectQueries | None = None  # decoded on the first task that needs them


class ImageTasks:
    def __init__(self, core: PredictorCore):
        self.core = core

    @torch.no_grad()
    def init_state(self, image: np.ndarray | Sequence[np.ndarray]) -> ImageState:
        """Compute the image features once (H x W x 3 RGB uint8, or a list of such images)."""
        batched = not isinstance(image, np.ndarray)
        arrays = [as_image(a, f"image {i}") for i, a in enumerate(image)] if batched else [as_image(image, "image")]
        if not arrays:
            raise ValueError("set_image got an empty list")
        batch, sizes = self.core.prepare(arrays)
        feats = self.core.model.extract(batch)
        self.core.stats["backbone_calls"] += 1
        return ImageState(feats, [a.shape[:2] for a in arrays], sizes, batched)

    def objects(self, state: ImageState) -> ObjectQueries:
        """The object queries' outputs on ``state`` (decoded once, kept on it)."""
        if state.objects is None:
            out = self.core.model.decode(state.features, self.core.decoder_text())
            self.core.stats["decoder_calls"] += 1
            state.objects = ObjectQueries(out.pred_masks[:, :, 0], out.class_embed, out.pred_objectness[..., 0])
        return state.objects

    def _input_logits(self, state: ImageState, masks: torch.Tensor, i: int) -> torch.Tensor:
        return self.core.output_logits(masks, state.features.image_size, state.resized[i], state.original[i])

    @staticmethod
    def _per_image(state: ImageState, run: Callable[[int], Any]) -> Any:
        results = [run(i) for i in range(len(state.original))]
        return results if state.batched else results[0]

    def _inputs(
        self, state: ImageState, i: int, vocab: Vocabulary, open_vocab: bool | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image i's (Q x (C + 1) class logits for ``vocab``, Q x h x w mask logits where post-processing runs)."""
        obj = self.objects(state)
        masks = obj.masks[i : i + 1]
        logits = self.core.class_logits(
            obj.embed[i : i + 1], masks[:, :, None], state.features.clip_features[i : i + 1], vocab, open_vocab
        )[0]
        return logits, self._input_logits(state, masks[0], i)

    @torch.no_grad()
    def panoptic(
        self,
        state: ImageState,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
    ) -> PanopticResult | list[PanopticResult]:
        vocab = self.core.vocabulary(vocabulary)

        def run(i: int) -> PanopticResult:
            logits, mlog = self._inputs(state, i, vocab, open_vocab)
            pan, segs = panoptic_inference(logits, mlog, torch.tensor(vocab.isthing, device=mlog.device))
            pan_full = to_original(pan, state.original[i]).astype(np.int32)
            infos = []
            for s in segs:
                m = pan_full == s.id
                infos.append(
                    SegmentInfo(s.id, s.label, vocab.display[s.label], s.score, s.isthing, int(m.sum()), mask_box(m))
                )
            return PanopticResult(pan_full, [s for s in infos if s.area > 0], vocab.display)

        return self._per_image(state, run)

    @torch.no_grad()
    def instance(
        self,
        state: ImageState,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
        topk: int = 100,
    ) -> InstanceResult | list[InstanceResult]:
        vocab = self.core.vocabulary(vocabulary)

        def run(i: int) -> InstanceResult:
            logits, mlog = self._inputs(state, i, vocab, open_vocab)
            inst = instance_inference(logits, mlog, torch.tensor(vocab.isthing, device=mlog.device), topk=topk)
            order = inst.scores.argsort(descending=True)
            masks_full = to_original(inst.masks[order], state.original[i]).astype(bool)
            labels = inst.labels[order].cpu().numpy()
            return InstanceResult(
                masks_full, labels, inst.scores[order].cpu().numpy(), [vocab.display[k] for k in labels], vocab.display
            )

        return self._per_image(state, run)

    @torch.no_grad()
    def semantic(
        self,
        state: ImageState,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        open_vocab: bool | str = "auto",
    ) -> SemanticResult | list[SemanticResult]:
        vocab = self.core.vocabulary(vocabulary)

        def run(i: int) -> SemanticResult:
            logits, mlog = self._inputs(state, i, vocab, open_vocab)
            labels, _ = semantic_inference(logits, mlog)
            return SemanticResult(to_original(labels, state.original[i]).astype(np.int32), vocab.display)

        return self._per_image(state, run)

    @torch.no_grad()
    def interactive(
        self,
        state: ImageState,
        points=None,
        boxes=None,
        vocabulary: Sequence[Any] | Vocabulary | None = None,
        objects: Sequence[ObjectPrompt] | None = None,
    ) -> InteractiveResult | list[InteractiveResult]:
        core = self.core
        if objects is not None:
            if points is not None or boxes is not None:
                raise ValueError("task 'interactive': give objects, or points and / or boxes, not both")
            prompts, out = self.replay(state, objects)
        elif points is None and boxes is None:
            raise ValueError("task 'interactive' needs points and / or boxes (or objects)")
        else:
            prompts = self.scaled_prompts(state, points, boxes)
            out = core.model.decode(state.features, core.decoder_text(), prompts)
            core.stats["decoder_calls"] += 1
        vocab = core.vocabulary(vocabulary) if vocabulary is not None else None
        results = []
        for i in range(len(state.original)):
            valid = prompts.valid[i]
            m = out.pred_masks[i, valid, 0]
            mlog = self._input_logits(state, m, i)
            prob = mlog.sigmoid()
            binary = prob > 0.5
            scores = ((prob * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)).cpu().numpy()
            res = InteractiveResult(to_original(binary, state.original[i]).astype(bool), scores)
            res.logits = m.float().cpu().numpy()
            if vocab is not None:
                p = ov.clip_logits(
                    core.model.backbone, state.features.clip_features[i : i + 1], m[None, :, None], core.text(vocab)
                )[0][0].softmax(-1)
                sc, lab = p.max(-1)
                matched = torch.zeros_like(lab, dtype=torch.bool)
                if core.prompt_labels == "queries":
                    ql, qs, matched = self.prompt_labels_by_queries(state, i, m, vocab)
                    lab, sc = torch.where(matched, ql, lab), torch.where(matched, qs, sc)
                res.labels, res.label_scores = lab.cpu().numpy(), sc.cpu().numpy()
                res.names = [vocab.display[k] for k in res.labels]
                res.label_sources = ["queries" if b else "clip" for b in matched.tolist()]
            results.append(res)
        return results if state.batched else results[0]

    def prompt_labels_by_queries(
        self, state: ImageState, i: int, m: torch.Tensor, vocab: Vocabulary
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image i's prompted masks (P x h4 x w4 logits) labelled by the object queries of the same image: the query
        whose mask best matches the prompted one (the largest IoU at stride 4 x the query's top class probability)
        gives its class and that probability, classified as panoptic classifies (the CLIP ensemble when a class
        is unseen). -> (labels P, scores P, matched P: False where no query's mask overlaps the prompted one)."""
        obj = self.objects(state)
        logits = self.core.class_logits(
            obj.embed[i : i + 1],
            obj.masks[i : i + 1, :, None],
            state.features.clip_features[i : i + 1],
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

    def replay(self, state: ImageState, objects: Sequence[ObjectPrompt]) -> tuple[Prompts, OMGOutput]:
        """Decode ``objects`` (one image's, or a list per image of a batched state). An object with several clicks
        and no previous mask, on a model with refinement, is answered as a person clicking gets it (and as the NoC
        protocol measures it): its clicks one at a time, in order, each pass given the previous pass's mask — one
        decoder pass per click, the objects of a request together; the others in one pass. -> (the last pass's
        prompts, its output)."""
        core = self.core
        per_image = [list(o) for o in objects] if state.batched else [list(objects)]
        replayed = core.model.refinement is not None

        def clicks_needed(o: ObjectPrompt) -> int:  # the shortest prefix the object can start from
            labels = np.ones(len(np.asarray(o.points).reshape(-1, 2)), np.int64) if o.labels is None else o.labels
            labels = np.asarray(labels).reshape(-1)
            if not replayed or o.mask is not None or len(labels) <= 1:
                return 0  # no replay: the object as given
            return 1 if o.box is not None or labels[0] == 1 else int(np.argmax(labels == 1)) + 1

        starts = [[clicks_needed(o) for o in objs] for objs in per_image]
        totals = [[len(np.asarray(o.points).reshape(-1, 2)) for o in objs] for objs in per_image]
        spans = [t - s + 1 for row_s, row_t in zip(starts, totals) for s, t in zip(row_s, row_t) if s]
        steps = max(spans, default=1)
        prev: list[list[np.ndarray | None]] = [[None] * len(objs) for objs in per_image]
        for step in range(steps):
            batch = []
            for i, objs in enumerate(per_image):
                row = []
                for j, o in enumerate(objs):
                    s, t = starts[i][j], totals[i][j]
                    if not s:
                        row.append(o)
                        continue
                    n = min(s + step, t)
                    labels = None if o.labels is None else np.asarray(o.labels).reshape(-1)[:n]
                    pts = np.asarray(o.points, dtype=np.float32).reshape(-1, 2)[:n]
                    row.append(ObjectPrompt(pts, labels, o.box, prev[i][j]))
                batch.append(row)
            prompts = self.object_prompts(state, batch if state.batched else batch[0])
            out = core.model.decode(state.features, core.decoder_text(), prompts)
            core.stats["decoder_calls"] += 1
            for i, objs in enumerate(per_image):
                for j in range(len(objs)):
                    if starts[i][j] and starts[i][j] + step < totals[i][j]:  # the next pass adds a click to it
                        prev[i][j] = out.pred_masks[i, j, 0].float().cpu().numpy()
        return prompts, out

    def object_prompts(self, state: ImageState, objects: Sequence[ObjectPrompt]) -> Prompts:
        """Objects (one image; a batched state takes a list of them per image) -> location prompts with every
        click, its label and the previous masks, scaled to the network's input."""
        n = len(state.original)
        per_image = list(objects) if state.batched else [list(objects)]
        if len(per_image) != n:
            raise ValueError(f"objects for {len(per_image)} images, but {n} image(s) are set")
        if any(not objs for objs in per_image):
            raise ValueError("task 'interactive': every image needs at least one object")
        mh, mw = state.features.mask_features.shape[-2:]
        firsts, kinds, clicks, prevs = [], [], [], []
        for i, objs in enumerate(per_image):
            h, w = state.original[i]
            rh, rw = state.resized[i]
            scale = np.array([rw / w, rh / h], dtype=np.float32)
            row_first, row_kind, row_clicks, row_prev = [], [], [], []
            for j, obj in enumerate(objs):
                pts, labels, box = obj.checked(j, (h, w))
                pts = pts * scale
                if box is not None:
                    row_first.append(box * np.concatenate([scale, scale]))
                    row_kind.append(False)
                else:
                    x, y = pts[int(np.flatnonzero(labels == 1)[0])]
                    row_first.append(np.array([x, y, x, y], np.float32))
                    row_kind.append(True)
                row_clicks.append((pts, labels))
                row_prev.append(None if obj.mask is None else self._prev_logits(state, i, j, obj.mask, (mh, mw)))
            firsts.append(row_first), kinds.append(row_kind), clicks.append(row_clicks), prevs.append(row_prev)
        p = max(len(objs) for objs in per_image)
        k = max(1, max(len(c[0]) for row in clicks for c in row))
        boxes = torch.zeros(n, p, 4)
        valid = torch.zeros(n, p, dtype=torch.bool)
        is_point = torch.zeros(n, p, dtype=torch.bool)
        xy = torch.zeros(n, p, k, 2)
        labels = torch.full((n, p, k), -1, dtype=torch.long)
        prev = torch.full((n, p, mh, mw), float("nan"))
        for i in range(n):
            for j in range(len(firsts[i])):
                valid[i, j], is_point[i, j] = True, kinds[i][j]
                b = torch.from_numpy(firsts[i][j])
                boxes[i, j] = points_to_boxes(b[None, :2])[0] if kinds[i][j] else b
                pts, lab = clicks[i][j]
                xy[i, j, : len(pts)] = torch.from_numpy(pts)
                labels[i, j, : len(lab)] = torch.from_numpy(lab)
                if prevs[i][j] is not None:
                    prev[i, j] = prevs[i][j]
        has_prev = not prev.isnan().all()
        prompts = Prompts(
            boxes,
            valid,
            torch.tensor(state.resized, dtype=torch.long),
            is_point,
            xy,
            labels,
            prev if has_prev else None,
        )
        return prompts.to(self.core.device)

    def _prev_logits(self, state: ImageState, i: int, j: int, mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
        """Object j's previous mask -> h4 x w4 logits of a binary mask (:func:`~omg.modeling.refine.binary_prev`):
        the ``logits`` plane an :class:`InteractiveResult` returned, or an H x W bool / probability mask of image i
        (resized to the input, padded, averaged over each cell of the mask grid: > 0.5 is in the mask)."""
        m = np.asarray(mask)
        if m.shape == grid:
            return binary_prev(torch.from_numpy(m.astype(np.float32)))
        if m.shape != tuple(state.original[i]):
            raise ValueError(
                f"object {j}: mask of shape {m.shape} is neither the image's {tuple(state.original[i])} nor the "
                f"mask grid {grid} of the logits an interactive result returns"
            )
        prob = torch.from_numpy(m.astype(np.float32)).clamp(0, 1)[None, None]
        rh, rw = state.resized[i]
        prob = torch.nn.functional.interpolate(prob, size=(rh, rw), mode="bilinear", align_corners=False)
        ph, pw = state.features.image_size
        prob = torch.nn.functional.pad(prob, (0, pw - rw, 0, ph - rh))
        prob = torch.nn.functional.adaptive_avg_pool2d(prob, grid)[0, 0]
        return binary_prev(prob - 0.5)

    def scaled_prompts(self, state: ImageState, points, boxes) -> Prompts:
        """Points (K x 2, x y) and boxes (K x 4, XYXY) in pixels of the original image(s), checked to lie inside
        it, scaled to the network's input (per image when the state is a batch)."""
        n = len(state.original)
        if not state.batched:
            points = [points] if points is not None else [None]
            boxes = [boxes] if boxes is not None else [None]
        points = points if points is not None else [None] * n
        boxes = boxes if boxes is not None else [None] * n
        if len(points) != n or len(boxes) != n:
            raise ValueError(f"prompts for {max(len(points), len(boxes))} images, but {n} image(s) are set")
        pts, bxs = [], []
        for i in range(n):
            h, w = state.original[i]
            rh, rw = state.resized[i]
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
        return Prompts.from_lists(pts, bxs, state.resized).to(self.core.device)
