"""The image tasks (panoptic, instance, semantic, interactive) on an :class:`ImageState` the caller holds.

``init_state`` runs the backbone and pixel decoder once; every task after it reuses them. The object queries'
masks and class embeddings do not depend on the vocabulary, so they are decoded once per state (kept on it) and a
new vocabulary costs one text embedding (cached) and a matrix product; prompts cost one decoder pass. Boxes are
XYXY in pixels of the original image.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from omg.data.masks import mask_box
from omg.inference import open_vocab as ov
from omg.inference.core import PredictorCore, as_image, to_original
from omg.inference.objects import ObjectPrompt, prev_logits, to_prompts
from omg.inference.postprocess import instance_inference, panoptic_inference, semantic_inference
from omg.inference.results import InstanceResult, InteractiveResult, PanopticResult, SegmentInfo, SemanticResult
from omg.modeling.model import Features
from omg.modeling.prompts import Prompts
from omg.utils.vocabulary import Vocabulary
from omg.utils.zoom import Roi, paste


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
    images: list[np.ndarray] = field(default_factory=list)  # the images as given (zoom-in crops them)
    objects: ObjectQueries | None = None  # decoded on the first task that needs them
    #: the :class:`Answer` of replayed objects after each of their clicks, the newest ANSWERS_KEPT, so that the next
    #: click on an object costs one decoder pass (:meth:`ImageTasks.replay`)
    answers: OrderedDict = field(default_factory=OrderedDict)
    #: the states of zoom-in crops, (image index, Roi) -> ImageState, the newest CROPS_KEPT
    crops: OrderedDict = field(default_factory=OrderedDict)


@dataclass
class Answer:
    """An object's answer after one pass: its mask logits on the mask grid of the state the pass ran on, the whole
    image's (``roi`` None) or a zoom-in crop's."""

    logits: torch.Tensor  # h4 x w4
    roi: Roi | None = None


#: an image state's kept answers of replayed objects (see ``ImageState.answers``) and zoom-in crop states
ANSWERS_KEPT = 64
CROPS_KEPT = 4


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
        return ImageState(feats, [a.shape[:2] for a in arrays], sizes, batched, arrays)

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
            answers = self.replay(state, objects)
        elif points is None and boxes is None:
            raise ValueError("task 'interactive' needs points and / or boxes (or objects)")
        else:
            prompts = self.scaled_prompts(state, points, boxes)
            out = core.model.decode(state.features, core.decoder_text(), prompts)
            core.stats["decoder_calls"] += 1
            answers = [[Answer(m) for m in out.pred_masks[i, prompts.valid[i], 0]] for i in range(len(state.original))]
        vocab = core.vocabulary(vocabulary) if vocabulary is not None else None
        results = []
        for i, row in enumerate(answers):
            # a zoom-in answer: its mask and score from its crop, its logits on the image's mask grid from that mask
            zoomed = {j: self.zoomed_mask(state, i, a) for j, a in enumerate(row) if a.roi is not None}
            grid = tuple(state.features.mask_features.shape[-2:])
            m = torch.zeros(len(row), *grid, device=core.device)  # P x h4 x w4 mask logits on the image's mask grid
            for j, a in enumerate(row):
                m[j] = a.logits if j not in zoomed else self.grid_logits(state, i, zoomed[j][0])
            prob = self._input_logits(state, m, i).sigmoid()
            binary = prob > 0.5
            masks = to_original(binary, state.original[i]).astype(bool)
            scores = ((prob * binary).flatten(1).sum(1) / binary.flatten(1).sum(1).clamp(min=1)).cpu().numpy()
            for j, (mask, score) in zoomed.items():
                masks[j], scores[j] = mask, score
            res = InteractiveResult(masks, scores)
            res.logits = m.float().cpu().numpy()
            if vocab is not None:
                p = ov.clip_logits(
                    core.model.backbone,
                    state.features.clip_features[i : i + 1],
                    m[None, :, None],
                    core.text(vocab),
                    core.logit_scale,
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

    def replay(self, state: ImageState, objects: Sequence[ObjectPrompt]) -> list[list[Answer]]:
        """Decode ``objects`` (one image's, or a list per image of a batched state) -> each image's objects'
        answers. An object with several clicks and no previous mask, on a model with refinement, is answered as a
        person clicking gets it (and as the NoC protocol measures it): its clicks one at a time, in order, each
        pass given the previous pass's mask — one decoder pass per click, the objects of a request together; the
        others in one pass. With zoom-in (``PredictorCore.zoom``) a correction — a pass after an object's first
        click, or an object given with its previous mask — runs on a crop around the object instead
        (:mod:`omg.utils.zoom`; a decoder pass of its own, and a backbone pass when the crop changes). An object's
        answers after each click are kept on ``state`` (under the zoom-in setting they were answered with): a
        request that adds clicks to an object answered before on it starts from the longest prefix of its clicks
        answered, so each further click costs one pass."""
        core = self.core
        per_image = [list(o) for o in objects] if state.batched else [list(objects)]
        refine = core.model.refinement is not None
        zoom = core.zoom if refine else None
        # clicks of each object in the first pass (0: the object as given, in one pass)
        starts = [[o.replay_start() if refine else 0 for o in objs] for objs in per_image]
        last: list[list[Answer | None]] = [[None] * len(objs) for objs in per_image]
        for i, (objs, ss) in enumerate(zip(per_image, starts)):
            for j, (o, s) in enumerate(zip(objs, ss)):
                for n in range(o.num_clicks - 1, s - 1, -1) if s else ():  # the longest prefix answered before
                    if (known := state.answers.get((i, zoom, *o.key(n)))) is not None:
                        ss[j], last[i][j] = n + 1, known
                        break
        spans = [o.num_clicks - s + 1 for objs, ss in zip(per_image, starts) for o, s in zip(objs, ss) if s]
        for step in range(max(spans, default=1)):
            whole, crops = [], []  # this pass's prompts on the whole image (every object: the shape), and on crops
            wanted = []  # (i, j, clicks) whose answer this pass on the whole image gives
            for i, (objs, ss) in enumerate(zip(per_image, starts)):
                row = []
                for j, (o, s) in enumerate(zip(objs, ss)):
                    if not s:  # as given: answered in the first pass (on a crop around its own mask with zoom-in)
                        roi, given = self.given_roi(state, i, o) if zoom and step == 0 else (None, None)
                        if roi is not None:
                            crops.append((i, j, 0, roi, o.cropped(roi, roi.crop(given))))
                        elif step == 0:
                            wanted.append((i, j, 0))
                        row.append(o)
                        continue
                    n = min(s + step, o.num_clicks)
                    active = s + step <= o.num_clicks
                    # the last answer's mask in the image: computed once for the crop and the previous mask
                    prev = last[i][j]
                    shown = self.original_mask(state, i, prev) if zoom and active and prev is not None else None
                    roi = self.zoom_roi(o, n, prev, shown) if zoom and active else None
                    prompt = o.first_clicks(n, self.prev_mask(state, i, prev, roi, shown))
                    if roi is not None:
                        crops.append((i, j, n, roi, prompt.cropped(roi, prompt.mask)))
                    elif active:
                        wanted.append((i, j, n))
                    row.append(prompt)
                whole.append(row)
            if wanted:
                prompts = self.object_prompts(state, whole if state.batched else whole[0])
                out = core.model.decode(state.features, core.decoder_text(), prompts)
                core.stats["decoder_calls"] += 1
                for i, j, n in wanted:
                    answer = Answer(out.pred_masks[i, j, 0].float().cpu())
                    last[i][j] = self.keep(state, (i, zoom, *per_image[i][j].key(n)) if n else None, answer)
            for i, j, n, roi, prompt in crops:
                crop = self.crop_state(state, i, roi)
                out = core.model.decode(crop.features, core.decoder_text(), self.object_prompts(crop, [prompt]))
                core.stats["decoder_calls"] += 1
                answer = Answer(out.pred_masks[0, 0, 0].float().cpu(), roi)
                last[i][j] = self.keep(state, (i, zoom, *per_image[i][j].key(n)) if n else None, answer)
        return last

    @staticmethod
    def keep(state: ImageState, key: tuple | None, answer: Answer) -> Answer:
        """Keep a replayed object's answer on ``state`` under ``key`` (image, zoom-in, the object after some of its
        clicks: :meth:`ObjectPrompt.key`; None: an object as given, not kept); -> the answer."""
        if key is not None:
            state.answers[key] = answer
            state.answers.move_to_end(key)
            while len(state.answers) > ANSWERS_KEPT:
                state.answers.popitem(last=False)
        return answer

    def zoom_roi(self, o: ObjectPrompt, n: int, last: Answer | None, mask: np.ndarray | None) -> Roi | None:
        """The crop the pass of object ``o``'s first ``n`` clicks runs on (None: the whole image), from its last
        answer and that answer's ``mask`` in the image (:meth:`ZoomIn.next_roi`; its box, if any, inside the crop
        too)."""
        return self.core.zoom.next_roi(n, mask, o.anchors(n), None if last is None else last.roi)

    def given_roi(self, state: ImageState, i: int, o: ObjectPrompt) -> tuple[Roi | None, np.ndarray | None]:
        """The crop of an object given with its previous mask (a stateless client's correction): from that mask as
        the image's H x W mask (the ``logits`` plane of a result, or a bool / probability mask of the image);
        -> (the crop or None, that mask). A mask of another shape is left to the prompt's check, which names it."""
        if o.mask is None:
            return None, None
        m = np.asarray(o.mask)
        if m.shape == tuple(state.features.mask_features.shape[-2:]):
            m = self.original_mask(state, i, Answer(torch.from_numpy(m.astype(np.float32))))
        elif m.shape == tuple(state.original[i]):
            m = m > 0.5
        else:
            return None, None
        return self.core.zoom.next_roi(o.num_clicks, m, o.anchors(o.num_clicks), None), m

    def prev_mask(
        self, state: ImageState, i: int, last: Answer | None, roi: Roi | None, shown: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The previous mask a pass on ``roi`` (None: the whole image) is given: a whole-image answer to a
        whole-image pass as it came (binary on the mask grid, as training feeds it); else the answer's mask as the
        result gives it, in the pass's pixels (a zoom-in crop's answer fed back on the grid of the same crop did
        worse: NoC@85 3.22 against 2.95 on 60 objects, docs/experiments.md "Zoom-in")."""
        if last is None:
            return None
        if last.roi is None and roi is None:
            return last.logits.numpy() > 0
        mask = self.original_mask(state, i, last) if shown is None else shown  # ``shown``: that mask, if known
        return mask if roi is None else roi.crop(mask)

    def crop_state(self, state: ImageState, i: int, roi: Roi) -> ImageState:
        """The features of image i's crop ``roi`` (kept on ``state``, the newest CROPS_KEPT)."""
        if (crop := state.crops.get((i, roi))) is None:
            crop = state.crops[(i, roi)] = self.init_state(roi.crop(state.images[i]))
            while len(state.crops) > CROPS_KEPT:
                state.crops.popitem(last=False)
        state.crops.move_to_end((i, roi))
        return crop

    def zoomed_mask(self, state: ImageState, i: int, answer: Answer) -> tuple[np.ndarray, float]:
        """A zoom-in answer -> (its H x W mask in image i, its score: the mean probability inside it)."""
        crop = self.crop_state(state, i, answer.roi)
        prob = self._input_logits(crop, answer.logits[None].to(self.core.device), 0)[0].sigmoid()
        binary = prob > 0.5
        score = float((prob * binary).sum() / binary.sum().clamp(min=1))
        return paste(to_original(binary, crop.original[0]), answer.roi, state.original[i]), score

    def original_mask(self, state: ImageState, i: int, answer: Answer) -> np.ndarray:
        """An answer's H x W mask in image i (as the result gives it)."""
        if answer.roi is not None:
            return self.zoomed_mask(state, i, answer)[0]
        logits = self._input_logits(state, answer.logits[None].to(self.core.device), i)[0]
        return to_original(logits > 0, state.original[i])

    def grid_logits(self, state: ImageState, i: int, mask: np.ndarray) -> torch.Tensor:
        """An H x W mask of image i -> binary logits on its mask grid (what the result's ``logits`` give back)."""
        grid = tuple(state.features.mask_features.shape[-2:])
        padded = tuple(state.features.image_size)
        return prev_logits(mask, 0, state.original[i], state.resized[i], padded, grid).to(self.core.device)

    def object_prompts(self, state: ImageState, objects: Sequence[ObjectPrompt]) -> Prompts:
        """Objects (one image's; a batched state takes a list of them per image) -> location prompts on the device."""
        per_image = [list(o) for o in objects] if state.batched else [list(objects)]
        grid = tuple(state.features.mask_features.shape[-2:])
        prompts = to_prompts(per_image, state.original, state.resized, tuple(state.features.image_size), grid)
        return prompts.to(self.core.device)

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
