"""One evaluator per task, detectron2's protocol: ``reset()``, ``process(record)`` for each record, ``evaluate()``.

An evaluator is given the predictor, the dataset's reader and where to write (an :class:`EvalContext`); its
``process`` predicts one record (an image or a video), writes what the official tools read and keeps what the
score needs; ``evaluate`` scores with the official-protocol code of :mod:`omg.evaluation` and returns
:class:`Scores`. :func:`omg.evaluation.runner.evaluate_pair` composes them: it owns the loop, the progress
line and the :class:`~omg.evaluation.runner.EvalResult`.

The format readers are the one place a dataset's files are parsed: records (file paths, segments with the
catalog's category ids) come from ``reader.items()``, ground-truth masks from ``reader.load()``. PQ and VPQ
run on the official PNGs with the evaluated records' annotations rewritten to the catalog's ids (a
Cityscapes label-id JSON scores like the trainId one).

The vocabulary is the dataset's own class list (the per-dataset text embeddings replace the training ones,
as in the paper's evaluation), so label k is the dataset's k-th class; for ``open_vocab`` it includes the
held-out classes. :class:`EvalOptions` holds the conventions; each default is the released code's
(``docs/evaluation.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from omg.data.catalog import DatasetEntry
from omg.data.formats import get_reader
from omg.evaluation.vspw import pooled_vc, video_consistency_windows
from omg.inference import writers
from omg.inference.media import load_image
from omg.inference.objects import ObjectPrompt
from omg.inference.predictor import POSTPROCESS_AT, PROMPT_LABELS, OMGPredictor
from omg.utils import io as uio
from omg.utils.options import check_choices
from omg.utils.vocabulary import Vocabulary

#: the tasks evaluated on a dataset's open-vocabulary split (``*_ov``) with the CLIP ensemble
OPEN_VOCAB_TASKS = ("open_vocab", "open_vocab_described", "open_vocab_prompt_label")


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation predicts. Defaults: the released OMG-Seg code; the alternatives are ours, kept as options.

    - ``distractors``: append the training classes a dataset lacks (their segments dropped), so a query that
      found one (sky, in a things-only video dataset) is not forced onto the dataset's classes (ours);
    - ``ensemble``: ``"released"``: the CLIP geometric ensemble runs for the ``open_vocab`` task only, every
      class seen or not (``tools/test.py`` L158-170 sets ``OVERLAPPING`` for the open-vocabulary config), and
      never for the closed-set tasks; ``"auto"``: whenever the vocabulary has a class unseen in training;
    - ``postprocess_at``: ``"original"`` (released) or ``"input"`` (see :mod:`omg.inference.predictor`);
    - ``track_ids``: VPS segment ids ``"released"`` (per-frame counter) or ``"stable"`` (query-based);
    - ``prompt_labels``: how ``prompt_label`` labels a prompted mask (the released code labels none):
      ``"queries"`` or ``"clip"`` (:data:`omg.inference.predictor.PROMPT_LABELS`);
    - ``test_size``: (long side, short side) of the test-time resize instead of the dataset's (the catalog's
      ``test_size``, the released config's) or, without one, the model's (ours; empty: those);
    - ``zoom_in``: the interactive corrections' zoom-in (:mod:`omg.utils.zoom`, ours): ``"model"`` (the
      checkpoint's setting), ``"off"``, or ``"on"`` (:class:`~omg.utils.zoom.ZoomIn`'s defaults).
    """

    distractors: bool = field(
        default=False,
        metadata={"help": "append the training classes a dataset lacks to its vocabulary (their segments dropped)"},
    )
    ensemble: str = field(
        default="released",
        metadata={
            "choices": ("released", "auto"),
            "help": "CLIP ensemble: for the open_vocab task only (released) or whenever a class is unseen",
        },
    )
    postprocess_at: str = field(
        default="original",
        metadata={
            "choices": POSTPROCESS_AT,
            "help": "post-process at the original image size (released) or the resized input (cheaper)",
        },
    )
    track_ids: str = field(
        default="released",
        metadata={
            "choices": ("released", "stable"),
            "help": "VPS segment ids: per-frame counter (released) or query-based, stable across frames",
        },
    )
    prompt_labels: str = field(
        default="queries",
        metadata={
            "choices": PROMPT_LABELS,
            "help": "prompt_label: a prompted mask's label from the object query whose mask best matches it (the "
            "frozen CLIP's where none overlaps) or the frozen CLIP alone (the released code labels none)",
        },
    )

    test_size: tuple = field(
        default=(),
        metadata={
            "nargs": 2,
            "type": int,
            "metavar": ("LONG", "SHORT"),
            "default_text": "the dataset's, else the model's",
            "help": "test-time resize (long side, short side) instead of the dataset's (catalog) or the model's; "
            "e.g. 256 256 evaluates the 128-px omg-shapes upsampled 2x, as the released protocol upsamples COCO",
        },
    )

    zoom_in: str = field(
        default="model",
        metadata={
            "choices": ("model", "off", "on"),
            "help": "interactive corrections on a crop around the object (RITM's zoom-in; refinement models): "
            "as the checkpoint records it, off, or on with RITM's settings",
        },
    )

    def __post_init__(self):
        check_choices(self)
        object.__setattr__(self, "test_size", tuple(self.test_size))  # frozen; a list from JSON or argparse
        if self.test_size and (len(self.test_size) != 2 or min(self.test_size) < 32):
            raise ValueError(f"test_size must be (long side, short side), each >= 32, got {list(self.test_size)}")

    def open_vocab(self, task: str) -> bool | str:
        """The predictor's ``open_vocab`` argument for ``task``."""
        if self.ensemble == "auto":
            return "auto"
        return task in OPEN_VOCAB_TASKS

    def to_dict(self) -> dict:
        """As JSON holds it (a result.json's ``options``: an earlier result stands only for equal options)."""
        return {**dataclasses.asdict(self), "test_size": list(self.test_size)}


@dataclass
class EvalContext:
    """What an evaluator works with."""

    predictor: OMGPredictor
    entry: DatasetEntry
    reader: object  # omg.data.formats.base.Reader of the evaluated split
    out_dir: str
    options: EvalOptions = field(default_factory=EvalOptions)
    overlays: int = 4


@dataclass
class Scores:
    """An evaluator's output: flat metrics (percentages as papers print them), tables, files written."""

    metrics: dict[str, float]
    tables: dict[str, object] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def pct(x) -> float:
    return float("nan") if x is None or (isinstance(x, float) and np.isnan(x)) else 100.0 * float(x)


def vocabulary_of(
    entry: DatasetEntry, include_heldout: bool, distractors_from: OMGPredictor | None = None, described: bool = False
) -> tuple[Vocabulary, list[int]]:
    """The dataset's classes (label k -> ``ids[k]``); ``described``: a class with catalog ``descriptions`` is
    named by them instead of its synonyms. With ``distractors_from`` (a predictor; the ``distractors`` option),
    the training classes the dataset lacks are appended with id -1: a query that found one of them is then
    classified as that class and dropped."""
    classes = [c for c in entry.classes if include_heldout or not c.heldout]
    vocab = Vocabulary.of(
        [c.descriptions if described and c.descriptions else c.synonyms for c in classes], [c.isthing for c in classes]
    )
    ids = [c.id for c in classes]
    train = distractors_from.training_vocabulary if distractors_from is not None else None
    if train is not None:
        missing = [not seen for seen in train.seen_in(vocab)]
        vocab = vocab.plus(
            Vocabulary(
                tuple(n for n, m in zip(train.names, missing) if m),
                tuple(t for t, m in zip(train.isthing, missing) if m),
            )
        )
        ids += [-1] * sum(missing)
    return vocab, ids


def drop_unmapped(r, cat_ids: list[int]):
    """Remove segments whose class maps to no dataset category (id -1): their pixels become VOID."""
    bad = {s.id for s in r.segments if cat_ids[s.label] == -1}
    if not bad:
        return r
    r.panoptic[np.isin(r.panoptic, list(bad))] = 0
    r.segments = [s for s in r.segments if s.id not in bad]
    if hasattr(r, "frame_segments"):
        r.frame_segments = [[i for i in ids if i not in bad] for ids in r.frame_segments]
    return r


def catalog_categories(entry: DatasetEntry) -> list[dict]:
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in entry.classes]


def semantic_gt(sample, index: dict[int, int]) -> np.ndarray:
    """T x H x W label maps of a record (255 = no evaluated class)."""
    from omg.data.decode import decode_masks

    masks = decode_masks(sample)
    lab = np.full((sample.num_frames, sample.height, sample.width), 255, dtype=np.int64)
    for seg, m in zip(sample.segments, masks):
        if seg.category_id in index:
            lab[m] = index[seg.category_id]
    return lab


class TaskEvaluator:
    """Base: ``task``, the catalog ``formats`` it reads, the progress ``unit``; subclasses fill
    reset/process/evaluate.

    Data-parallel evaluation (:func:`omg.evaluation.runner.evaluate_chunk`): evaluators of the same pair process
    contiguous chunks of the records (``first``: the index of a chunk's first record, so the overlays are those
    of the split's first records); each returns what it gathered (:meth:`partial`) and one evaluator
    :meth:`absorb` s them in record order, then scores: the metrics and files of the one-process run, exactly."""

    task: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    unit: ClassVar[str] = "img"
    include_heldout: ClassVar[bool] = False
    #: name classes by their catalog ``descriptions`` where they have any (:func:`vocabulary_of`)
    described: ClassVar[bool] = False
    #: the attributes ``process`` gathers, in record order: lists are concatenated, other objects ``merge``-d
    gathered: ClassVar[tuple[str, ...]] = ("processed", "files")

    def __init__(self, ctx: EvalContext):
        self.ctx, self.first = ctx, 0
        self.reset()

    @property
    def pred(self) -> OMGPredictor:
        return self.ctx.predictor

    def records(self, limit: int | None = None) -> list[dict]:
        return self.ctx.reader.items()[:limit]

    def vocabulary(self) -> tuple[Vocabulary, list[int]]:
        return vocabulary_of(
            self.ctx.entry, self.include_heldout, self.pred if self.ctx.options.distractors else None, self.described
        )

    def predict(self, task: str, **kwargs):
        """The predictor's ``task`` with this evaluation's vocabulary and ensemble convention."""
        return self.pred.predict(
            task, vocabulary=self.vocab, open_vocab=self.ctx.options.open_vocab(self.task), **kwargs
        )

    def predict_video(self, folder: str, names: list[str], **kwargs):
        """This evaluation's video task on the frames ``names`` of ``folder``, read one at a time and streamed
        through the predictor (:meth:`OMGPredictor.stream`, the path of ``omg predict``), decided with the whole
        video's evidence (``lookahead=None``: the released protocol) -> the video's result."""
        if self.task != "vos":
            kwargs.update(vocabulary=self.vocab, open_vocab=self.ctx.options.open_vocab(self.task))
        images = (load_image(uio.join(folder, n)) for n in names)
        parts = [f.result for f in self.pred.stream(images, self.task, lookahead=None, **kwargs)]
        return type(parts[0]).concat(parts)

    def reset(self) -> None:
        self.vocab, self.cat_ids = self.vocabulary()
        self.processed: list[dict] = []
        self.files: list[str] = []

    def process(self, record: dict) -> None:
        raise NotImplementedError

    def evaluate(self) -> Scores:
        raise NotImplementedError

    def wants_overlay(self) -> bool:
        return self.first + len(self.processed) < self.ctx.overlays

    def partial(self) -> dict[str, object]:
        """What ``process`` gathered from this evaluator's records (picklable: it travels between processes)."""
        return {k: getattr(self, k) for k in self.gathered}

    def absorb(self, partial: dict[str, object]) -> None:
        """Take what an evaluator of the same pair gathered from the records that follow this one's."""
        for k in self.gathered:
            mine = getattr(self, k)
            if isinstance(mine, list):
                mine.extend(partial[k])
            else:
                mine.merge(partial[k])

    def out(self, *parts: str) -> str:
        return uio.join(self.ctx.out_dir, *parts)


# ----------------------------------------------------------------------------- images


class PanopticEvaluator(TaskEvaluator):
    """PQ / SQ / RQ with panopticapi's protocol on the official PNGs (COCO, Cityscapes, ADE20K)."""

    task = "panoptic"
    formats = ("coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic")
    gathered = TaskEvaluator.gathered + ("items",)

    def reset(self) -> None:
        super().reset()
        self.items: list[tuple[dict, dict]] = []  # panoptic.json's (annotation, image entry), the PNG written

    def process(self, it: dict) -> None:
        image = load_image(uio.join(self.ctx.reader.paths["images"], it["image"]))
        self.pred.set_image(image)
        r = drop_unmapped(self.predict("panoptic"), self.cat_ids)
        name = it["mask"][:-4]
        self.items.append(writers.panoptic_item(self.ctx.out_dir, it["key"], name, r, self.cat_ids))
        if self.wants_overlay():
            uri = self.out("overlays", f"{name}.png")
            writers.write_overlay(uri, image, r.panoptic, {s.id: s.name for s in r.segments})
            self.files.append(uri)
        self.processed.append(it)

    def gt_json(self) -> str:
        """The evaluated records as a COCO panoptic ground truth (image id = the record key, as in the predictions)."""
        items = self.processed
        doc = {
            "images": [
                {"id": it["key"], "file_name": it["image"], "width": it["width"], "height": it["height"]}
                for it in items
            ],
            "annotations": [
                {"image_id": it["key"], "file_name": it["mask"], "segments_info": it["segments_info"]} for it in items
            ],
            "categories": catalog_categories(self.ctx.entry),
        }
        uri = self.out("gt_subset.json")
        uio.write_json(uri, doc)
        return uri

    def evaluate(self) -> Scores:
        from omg.evaluation.panoptic import pq_from_files

        files = self.files + [
            writers.panoptic_json(self.ctx.out_dir, self.items, self.vocab.display, self.vocab.isthing, self.cat_ids)
        ]
        r = pq_from_files(
            self.gt_json(), self.ctx.reader.paths["panoptic_masks"], self.out("panoptic.json"), self.out("panoptic")
        )
        m = {
            "PQ": pct(r.summary["All"]["pq"]),
            "SQ": pct(r.summary["All"]["sq"]),
            "RQ": pct(r.summary["All"]["rq"]),
            "PQ_th": pct(r.summary["Things"]["pq"]),
            "PQ_st": pct(r.summary["Stuff"]["pq"]),
        }
        heldout = [c.id for c in self.ctx.entry.classes if c.heldout] if self.include_heldout else []
        if heldout:
            vals = [
                r.per_class[c]["pq"]
                for c in heldout
                if c in r.per_class and r.per_class[c]["tp"] + r.per_class[c]["fp"] + r.per_class[c]["fn"] > 0
            ]
            m["PQ_heldout"] = pct(float(np.mean(vals))) if vals else float("nan")
        return Scores(m, {"per_class": r.per_class}, files)


class Prefixed:
    """Mixin before an evaluator: its metrics named ``prefix`` + name, so that an open-vocabulary task's stay apart
    from its closed-set twin's in one tracking run (``OV_PQ`` beside ``PQ``)."""

    prefix: ClassVar[str]

    def evaluate(self) -> Scores:
        s = super().evaluate()  # type: ignore[misc]
        s.metrics = {f"{self.prefix}{k}": v for k, v in s.metrics.items()}
        return s


class OpenVocabEvaluator(Prefixed, PanopticEvaluator):
    """PQ with the held-out classes in the vocabulary; metrics ``OV_*`` (apart from the closed-set PQ)."""

    task = "open_vocab"
    formats = ("coco_panoptic", "ade20k_panoptic")
    include_heldout = True
    prefix = "OV_"


class DescribedOpenVocabEvaluator(OpenVocabEvaluator):
    """Open-vocabulary PQ with a descriptive vocabulary: a class with catalog ``descriptions`` is named by what it
    looks like ("a blue diagonally striped shape"), not by a name the CLIP may never have read (ours: how a CLIP
    pretrained on omg-shapes' captions, where hexagon and cross are never named, meets the held-out classes).
    Metrics ``OVD_*`` (``OVD_PQ_heldout``: PQ of the held-out classes)."""

    task = "open_vocab_described"
    prefix = "OVD_"
    described = True


class InstanceEvaluator(TaskEvaluator):
    """COCO mask AP (pycocotools) against the split's instances JSON."""

    task = "instance"
    formats = ("coco_panoptic",)
    gathered = TaskEvaluator.gathered + ("results",)

    def reset(self) -> None:
        super().reset()
        if "instances_json" not in self.ctx.reader.paths:
            raise ValueError(f"{self.ctx.entry.name}: instance evaluation needs instances_json in the catalog split")
        r = self.ctx.reader
        self.instances = get_reader(dataclasses.replace(self.ctx.entry, format="coco_instances"), r.split, r.root)
        self.results: list[dict] = []

    def records(self, limit: int | None = None) -> list[dict]:
        return self.instances.items()[:limit]

    def process(self, it: dict) -> None:
        self.pred.set_image(load_image(uio.join(self.instances.paths["images"], it["image"])))
        r = self.predict("instance")
        self.results += [x for x in writers.instance_records(it["key"], r, self.cat_ids) if x["category_id"] != -1]
        self.processed.append(it)

    def evaluate(self) -> Scores:
        from omg.evaluation.coco_ap import coco_segm

        items = self.processed
        gt = {
            "images": [
                {"id": it["key"], "file_name": it["image"], "width": it["width"], "height": it["height"]}
                for it in items
            ],
            "annotations": [dict(a, image_id=it["key"]) for it in items for a in it["annotations"]],
            "categories": catalog_categories(self.ctx.entry),
        }
        uri = writers.instances_json(self.ctx.out_dir, self.results)
        r = coco_segm(gt, self.results, (1, 10, 100))
        return Scores(
            {k: pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}, {"per_class": r.per_class}, [uri]
        )


class SemanticEvaluator(TaskEvaluator):
    """mIoU / fwIoU / mACC / pACC (detectron2's SemSegEvaluator) on label maps derived from the panoptic GT."""

    task = "semantic"
    formats = ("coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic")
    gathered = TaskEvaluator.gathered + ("confusion",)

    def reset(self) -> None:
        from omg.evaluation.semantic import SemSegEvaluator

        super().reset()
        self.index = {c: k for k, c in enumerate(self.cat_ids)}
        self.confusion = SemSegEvaluator(len(self.vocab))

    def process(self, it: dict) -> None:
        reader = self.ctx.reader
        self.pred.set_image(load_image(uio.join(reader.paths["images"], it["image"])))
        r = self.predict("semantic")
        gt = semantic_gt(reader.load(it), self.index)[0]
        self.confusion.process(gt, r.labels, where=uio.join(reader.paths["panoptic_masks"], it["mask"]))
        uri = writers.write_semantic(self.ctx.out_dir, it["mask"][:-4], r)
        if self.wants_overlay():
            self.files.append(uri)
        self.processed.append(it)

    def evaluate(self) -> Scores:
        res = self.confusion.evaluate()
        return Scores(
            {"mIoU": pct(res.miou), "fwIoU": pct(res.fwiou), "mACC": pct(res.macc), "pACC": pct(res.pacc)},
            {"iou": {self.cat_ids[k]: (None if np.isnan(v) else float(v)) for k, v in enumerate(res.iou)}},
            self.files,
        )


def centre_prompts(pred: OMGPredictor, gts: np.ndarray) -> list[list[float]]:
    """One point per mask as the released evaluation places it (``ovsam_preprocessor.py`` ``get_center_coords``
    with ``rescale_shape=img_shape``): the mask rescaled to the network's input size (nearest, as mmcv's
    ``imrescale``), the integer pixel deepest inside it; returned in original pixels, so that the predictor's
    scaling lands exactly on that input pixel (whose ±3 px pseudo-box is the prompt)."""
    from omg.evaluation.interactive import center_point

    h, w = gts.shape[1:]
    rh, rw = pred.input_size(h, w)
    rows = np.minimum((np.arange(rh) * h / rh).astype(np.int64), h - 1)  # cv2 INTER_NEAREST: floor(dst x src / dst)
    cols = np.minimum((np.arange(rw) * w / rw).astype(np.int64), w - 1)
    points = []
    for g in gts:
        x, y = center_point(g[rows][:, cols])
        points.append([x * w / rw, y * h / rh])
    return points


def click_segments(ev: TaskEvaluator, it: dict, wanted=lambda segment: True, vocabulary: Vocabulary | None = None):
    """The released interactive evaluation's clicks on one record: every non-crowd, non-empty segment that ``wanted``
    accepts is clicked at its centre (:func:`centre_prompts`), all of the image's clicks in one pass.
    -> (sample, kept segment indices, their masks K x H x W, the image, the InteractiveResult or None if none)."""
    from omg.data.decode import decode_masks

    sample = ev.ctx.reader.load(it)
    masks = decode_masks(sample)[:, 0]
    keep = [j for j, g in enumerate(sample.segments) if not g.iscrowd and masks[j].any() and wanted(g)]
    if not keep:
        return sample, keep, masks[:0], None, None
    image = load_image(uio.join(ev.ctx.reader.paths["images"], it["image"]))
    gts = masks[keep]
    ev.pred.set_image(image)
    kwargs = {"vocabulary": vocabulary} if vocabulary is not None else {}
    return sample, keep, gts, image, ev.pred.predict("interactive", points=centre_prompts(ev.pred, gts), **kwargs)


class PromptLabelEvaluator(TaskEvaluator):
    """How often the label of a prompted mask is right (ours; the released code labels no prompted mask): every
    non-crowd segment is clicked at its centre (:func:`centre_prompts`, all of an image's clicks in one pass) and
    the mask the click gives is labelled by the frozen CLIP with the dataset's classes
    (:meth:`OMGPredictor.interactive` with a vocabulary). Metrics: top-1 ``label_acc`` over segments, for things
    and stuff apart (``label_acc_things``, ``label_acc_stuff``), ``labelled_segments``; per class in the tables."""

    task = "prompt_label"
    formats = ("coco_panoptic",)
    gathered = TaskEvaluator.gathered + ("hits",)

    def reset(self) -> None:
        super().reset()
        self.label_of = {c: k for k, c in enumerate(self.cat_ids)}  # category id -> vocabulary label
        self.hits: list[tuple[int, bool]] = []  # (category id, right)

    def process(self, it: dict) -> None:
        sample, keep, _, _, r = click_segments(self, it, lambda g: g.category_id in self.label_of, self.vocab)
        for j, label in zip(keep, r.labels if r is not None else []):
            cat = sample.segments[j].category_id
            self.hits.append((cat, int(label) == self.label_of[cat]))
        self.processed.append(it)

    def evaluate(self) -> Scores:
        def acc(cats) -> float:
            right = [ok for c, ok in self.hits if c in cats]
            return pct(np.mean(right)) if right else float("nan")

        classes = [c for c in self.ctx.entry.classes if c.id in self.cat_ids]
        metrics = {
            "label_acc": acc({c.id for c in classes}),
            "label_acc_things": acc({c.id for c in classes if c.isthing}),
            "label_acc_stuff": acc({c.id for c in classes if not c.isthing}),
            "labelled_segments": float(len(self.hits)),
        }
        if self.include_heldout:
            metrics["label_acc_heldout"] = acc({c.id for c in classes if c.heldout})
            metrics["label_acc_seen_things"] = acc({c.id for c in classes if c.isthing and not c.heldout})
        per_class = {
            c.name: {"label_acc": acc({c.id}), "segments": sum(cat == c.id for cat, _ in self.hits)} for c in classes
        }
        return Scores(metrics, {"per_class": per_class})


class OpenVocabPromptLabelEvaluator(Prefixed, PromptLabelEvaluator):
    """``prompt_label`` on the open-vocabulary split with every class in the vocabulary, held-out ones too (ours):
    is a click on a hexagon, a shape no segmentation label ever showed, labelled hexagon? Metrics as
    ``prompt_label``'s plus ``label_acc_heldout`` (the held-out classes' segments) and ``label_acc_seen_things``,
    each prefixed ``OV_`` (``OV_label_acc_heldout``)."""

    task = "open_vocab_prompt_label"
    include_heldout = True
    prefix = "OV_"


class InteractiveEvaluator(TaskEvaluator):
    """Single-point mIoU (every non-crowd segment prompted at its centre, all prompts of an image in one pass) and
    NoC@80/85/90, NoC>=20@85/90 on the first ``max_noc_objects`` objects with the RITM click simulation (one decoder
    pass per click); each simulated object's clicks and IoUs go to ``interactive_clicks.json`` (``omg metric
    interactive --clicks`` recomputes NoC from it)."""

    task = "interactive"
    formats = ("coco_sam",)
    max_noc_objects = 20
    gathered = TaskEvaluator.gathered + ("point_miou", "results", "noc_ious", "click_records")

    def vocabulary(self) -> tuple[Vocabulary, list[int]]:
        return [], []  # class-agnostic

    def reset(self) -> None:
        from omg.evaluation.interactive import PointMIoU

        super().reset()
        self.point_miou = PointMIoU()
        self.results: list[dict] = []
        self.noc_ious: list[np.ndarray] = []
        self.click_records: list[dict] = []

    def process(self, it: dict) -> None:
        from omg.data.masks import rle_encode

        sample, keep, gts, image, r = click_segments(self, it)  # COCO-SAM: every non-crowd segment, class-agnostic
        if not keep:
            self.processed.append(it)
            return
        self.point_miou.process(gts, r.masks)
        for j, m in zip(keep, r.masks):
            self.results.append(
                {"image_id": it["key"], "segment_id": sample.segments[j].id, "segmentation": rle_encode(m)}
            )
        if self.wants_overlay():
            uri = self.out("overlays", f"{it['mask'][:-4]}.png")
            paint = np.zeros(gts.shape[1:], np.int32)
            for j, m in enumerate(r.masks):
                paint[m] = j + 1
            writers.write_overlay(uri, image, paint)
            self.files.append(uri)
        for j, g in zip(keep, gts):
            if len(self.noc_ious) >= self.max_noc_objects:
                break
            self._simulate(it, sample.segments[j].id, g)
        self.processed.append(it)

    def _simulate(self, it: dict, segment_id: int, gt: np.ndarray) -> None:
        from omg.evaluation.interactive import evaluate_sample

        refine = self.pred.model.refinement is not None

        def predict(clicks):
            if refine:  # every click so far, labelled, each given the answer to the ones before (docs/model.md §7.3;
                # the image's state keeps those answers: one decoder pass a click)
                obj = ObjectPrompt([[c.x + 0.5, c.y + 0.5] for c in clicks], [int(c.positive) for c in clicks])
                return self.pred.predict("interactive", objects=[obj]).masks[0].astype(np.float64)
            pos = [[c.x + 0.5, c.y + 0.5] for c in clicks if c.positive]
            if not pos:  # the released model: the last positive click alone
                return np.zeros(gt.shape)
            return self.pred.predict("interactive", points=[pos[-1]]).masks[0].astype(np.float64)

        clicks, ious = evaluate_sample(gt.astype(np.int32), predict, max_clicks=20)
        self.noc_ious.append(ious)
        self.click_records.append(
            {
                "image_id": it["key"],
                "segment_id": segment_id,
                "clicks": [[c.x, c.y, c.positive] for c in clicks],
                "ious": ious.tolist(),
            }
        )

    def absorb(self, partial: dict[str, object]) -> None:
        """NoC is measured on the split's first ``max_noc_objects`` objects: each chunk simulates its own first ones
        (it cannot know how many the chunks before it hold), the concatenation keeps the split's first."""
        super().absorb(partial)
        del self.noc_ious[self.max_noc_objects :], self.click_records[self.max_noc_objects :]

    def evaluate(self) -> Scores:
        from omg.evaluation.interactive import miou_by_click, noc_metrics

        files = list(self.files)
        for name, doc in (("interactive_results.json", self.results), ("interactive_clicks.json", self.click_records)):
            uio.write_json(self.out(name), doc)
            files.append(self.out(name))
        res = self.point_miou.evaluate()
        m = {"mIoU": pct(res["miou"]), "segments": float(res["count"])}
        tables = {}
        if self.noc_ious:
            m.update(noc_metrics(self.noc_ious))
            tables["mIoU_by_click"] = [pct(v) for v in miou_by_click(self.noc_ious)]
        return Scores(m, tables, files)


# ----------------------------------------------------------------------------- videos


class VISEvaluator(TaskEvaluator):
    """YouTube-VIS AP / AR (the YTVOS protocol) on the evaluated videos."""

    task = "vis"
    formats = ("youtube_vis",)
    unit = "video"
    gathered = TaskEvaluator.gathered + ("results",)

    def reset(self) -> None:
        super().reset()
        self.results: list[dict] = []

    def process(self, it: dict) -> None:
        r = self.predict_video(self.ctx.reader.paths["frames"], it["file_names"])
        self.results += [x for x in writers.ytvis_records(int(it["key"]), r, self.cat_ids) if x["category_id"] != -1]
        self.processed.append(it)

    def evaluate(self) -> Scores:
        from omg.evaluation.ytvis import ytvis_ap

        items = self.processed
        gt = {
            "videos": [
                {
                    "id": int(it["key"]),
                    "file_names": it["file_names"],
                    "width": it["width"],
                    "height": it["height"],
                    "length": len(it["file_names"]),
                }
                for it in items
            ],
            "annotations": [a for it in items for a in it["annotations"]],
            "categories": catalog_categories(self.ctx.entry),
        }
        uri = self.out("results.json")
        uio.write_json(uri, self.results)
        r = ytvis_ap(gt, self.results)
        return Scores(
            {k: pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}, {"per_class": r.per_class}, [uri]
        )


class VPSEvaluator(TaskEvaluator):
    """VIPSeg VPQ (k = 1, 2, 4, 6, 8) and STQ on the official files."""

    task = "vps"
    formats = ("vipseg",)
    unit = "video"
    gathered = TaskEvaluator.gathered + ("preds",)

    def reset(self) -> None:
        super().reset()
        if "panoptic_json" not in self.ctx.reader.paths:
            raise ValueError(
                f"{self.ctx.entry.name}: VPS evaluation needs the COCO-style conversion (panoptic_json), "
                "the official VPQ protocol's input"
            )
        self.preds: list[tuple] = []

    def process(self, it: dict) -> None:
        vid = it["key"]
        r = drop_unmapped(
            self.predict_video(
                uio.join(self.ctx.reader.paths["frames"], vid),
                [fr["image"] for fr in it["frames"]],
                track_ids=self.ctx.options.track_ids,
            ),
            self.cat_ids,
        )
        self.preds.append((vid, [fr["mask"][:-4] for fr in it["frames"]], r))
        self.processed.append(it)

    def gt_json(self) -> str:
        """The evaluated videos as a VIPSeg ground truth (frames in record order, the catalog's category ids)."""
        videos, anns = [], []
        for it in self.processed:
            vid = it["key"]
            videos.append(
                {
                    "video_id": vid,
                    "images": [
                        {
                            "id": f"{vid}_{t}",
                            "file_name": fr["image"],
                            "width": fr.get("width"),
                            "height": fr.get("height"),
                        }
                        for t, fr in enumerate(it["frames"])
                    ],
                }
            )
            anns.append(
                {
                    "video_id": vid,
                    "annotations": [
                        {"image_id": f"{vid}_{t}", "file_name": fr["mask"], "segments_info": fr["segments_info"]}
                        for t, fr in enumerate(it["frames"])
                    ],
                }
            )
        uri = self.out("gt_subset.json")
        uio.write_json(uri, {"videos": videos, "annotations": anns, "categories": catalog_categories(self.ctx.entry)})
        return uri

    def evaluate(self) -> Scores:
        from omg.evaluation.vps import vps_from_files

        files = [writers.write_vipseg(self.ctx.out_dir, self.preds, self.vocab.isthing, self.cat_ids)]
        vpq_r, stq_r, _ = vps_from_files(
            self.gt_json(), self.ctx.reader.paths["panoptic_masks"], files[0], self.out("panoptic")
        )
        final, omg = vpq_r.mean(), vpq_r.mean((1, 2, 4, 6))
        m = {f"VPQ@{k}": pct(r.summary["All"]["pq"]) for k, r in vpq_r.per_k.items()}
        m.update(
            {
                "VPQ": pct(omg["All"]),
                "VPQ_th": pct(omg["Things"]),
                "VPQ_st": pct(omg["Stuff"]),
                "VPQ_final": pct(final["All"]),
                "STQ": pct(stq_r.stq),
                "AQ": pct(stq_r.aq),
                "SQ": pct(stq_r.sq),
            }
        )
        return Scores(m, {"vpq_per_class_k1": vpq_r.per_k[1].per_class}, files)


class VSSEvaluator(TaskEvaluator):
    """Video semantic segmentation: mIoU and mVC8 / mVC16 (VSPW's protocol) on VIPSeg-format videos."""

    task = "vss"
    formats = ("vipseg",)
    unit = "video"
    gathered = TaskEvaluator.gathered + ("confusion", "vc8", "vc16")

    def reset(self) -> None:
        from omg.evaluation.semantic import SemSegEvaluator

        super().reset()
        self.index = {c: k for k, c in enumerate(self.cat_ids)}
        self.confusion = SemSegEvaluator(len(self.vocab))
        self.vc8: list[float] = []  # the video-consistency windows of the videos so far (VSPW's mVC8 / mVC16)
        self.vc16: list[float] = []

    def process(self, it: dict) -> None:
        reader = self.ctx.reader
        vid = it["key"]
        r = self.predict_video(uio.join(reader.paths["frames"], vid), [fr["image"] for fr in it["frames"]])
        gts = semantic_gt(reader.load(it), self.index)
        for t, fr in enumerate(it["frames"]):
            self.confusion.process(gts[t], r.labels[t], where=uio.join(reader.paths["panoptic_masks"], vid, fr["mask"]))
        writers.write_vss(self.ctx.out_dir, vid, [fr["mask"][:-4] for fr in it["frames"]], r)
        self.vc8 += video_consistency_windows(gts, r.labels, 8)
        self.vc16 += video_consistency_windows(gts, r.labels, 16)
        self.processed.append(it)

    def evaluate(self) -> Scores:
        res = self.confusion.evaluate()
        return Scores(
            {"mIoU": pct(res.miou), "mVC8": pct(pooled_vc(self.vc8)), "mVC16": pct(pooled_vc(self.vc16))},
            {},
            [self.out("semantic")],
        )


class VOSEvaluator(TaskEvaluator):
    """DAVIS-17 semi-supervised J&F (the official DAVIS evaluation) from the first frame's masks."""

    task = "vos"
    formats = ("davis",)
    unit = "video"

    def vocabulary(self) -> tuple[Vocabulary, list[int]]:
        return [], []  # objects, not classes

    def process(self, it: dict) -> None:
        reader = self.ctx.reader
        vid = it["key"]
        reader.check_frames(it)  # a missing frame is a bad record here too
        first = writers.read_png(uio.join(reader.paths["annotations"], vid, it["frames"][0][:-4] + ".png"))
        r = self.predict_video(uio.join(reader.paths["frames"], vid), it["frames"], first_frame_masks=first)
        writers.write_vos(self.ctx.out_dir, vid, [n[:-4] for n in it["frames"]], r)
        self.processed.append(it)

    def evaluate(self) -> Scores:
        from omg.evaluation.davis import davis_from_files

        res = davis_from_files(
            self.ctx.reader.paths["annotations"], self.out("Annotations"), [it["key"] for it in self.processed]
        )
        return Scores(
            {k: pct(v) for k, v in res.summary.items()}, {"per_object": res.per_object}, [self.out("Annotations")]
        )


EVALUATORS: dict[str, type[TaskEvaluator]] = {
    e.task: e
    for e in (
        PanopticEvaluator,
        InstanceEvaluator,
        SemanticEvaluator,
        OpenVocabEvaluator,
        DescribedOpenVocabEvaluator,
        PromptLabelEvaluator,
        OpenVocabPromptLabelEvaluator,
        InteractiveEvaluator,
        VISEvaluator,
        VPSEvaluator,
        VSSEvaluator,
        VOSEvaluator,
    )
}

#: which tasks a catalog format can be evaluated on
TASK_FORMATS: dict[str, tuple[str, ...]] = {task: e.formats for task, e in EVALUATORS.items()}
