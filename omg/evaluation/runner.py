"""Evaluate a checkpoint on one (dataset, split, task): predict, write the official prediction files, score.

``evaluate_pair(checkpoint, entry, split, task, root, out_dir)`` is what one Ray task of
``pipelines/evaluate.py`` runs (and what a notebook can call directly). The vocabulary is the
dataset's own class list (the per-dataset text embeddings replace the training ones, as in
the paper's evaluation), so label k is the dataset's k-th class; for ``open_vocab`` it includes
the held-out classes.

:class:`EvalOptions` holds the conventions; each default is the released code's (``docs/evaluation.md``
lists them with file and line): the dataset's own classes only, the CLIP ensemble for the
open-vocabulary evaluation only, post-processing at the original size, the per-dataset test size
of the catalog, VPS track ids from the fusion head's per-frame counter.

Returns an :class:`EvalResult`: flat metrics (``{"PQ": 52.3, ...}``, percentages as the papers
print them), per-class tables, and the files written (predictions, overlays).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from omg.data import io as uio
from omg.data.catalog import DatasetEntry
from omg.data.formats import get_reader
from omg.inference import writers
from omg.inference.predictor import OMGPredictor
from omg.inference.run import load_image
from omg.utils.progress import Progress

#: which tasks a catalog format can be evaluated on, and the split that holds held-out classes
TASK_FORMATS = {
    "panoptic": ("coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic"),
    "instance": ("coco_panoptic",),
    "semantic": ("coco_panoptic", "cityscapes_panoptic", "ade20k_panoptic"),
    "open_vocab": ("coco_panoptic", "ade20k_panoptic"),
    "interactive": ("coco_sam",),
    "vis": ("youtube_vis",),
    "vps": ("vipseg",),
    "vss": ("vipseg",),
    "vos": ("davis",),
}


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation predicts. Defaults: the released OMG-Seg code; the alternatives are ours, kept as options.

    - ``distractors``: append the training classes a dataset lacks (their segments dropped), so a query that
      found one (sky, in a things-only video dataset) is not forced onto the dataset's classes (ours);
    - ``ensemble``: ``"released"``: the CLIP geometric ensemble runs for the ``open_vocab`` task only, every
      class seen or not (``tools/test.py`` L158-170 sets ``OVERLAPPING`` for the open-vocabulary config), and
      never for the closed-set tasks; ``"auto"``: whenever the vocabulary has a class unseen in training;
    - ``postprocess_at``: ``"original"`` (released) or ``"input"`` (see :mod:`omg.inference.predictor`);
    - ``track_ids``: VPS segment ids ``"released"`` (per-frame counter) or ``"stable"`` (query-based).
    """

    distractors: bool = False
    ensemble: str = "released"
    postprocess_at: str = "original"
    track_ids: str = "released"

    def __post_init__(self):
        for name, allowed in (("ensemble", ("released", "auto")), ("postprocess_at", ("original", "input")),
                              ("track_ids", ("released", "stable"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def open_vocab(self, task: str) -> bool | str:
        """The predictor's ``open_vocab`` argument for ``task``."""
        if self.ensemble == "auto":
            return "auto"
        return task == "open_vocab"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EvalResult:
    dataset: str
    split: str
    task: str
    metrics: dict[str, float]
    tables: dict[str, object] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "split": self.split, "task": self.task, "metrics": self.metrics,
                "tables": self.tables, "files": self.files, "seconds": self.seconds}


def vocabulary_of(entry: DatasetEntry, include_heldout: bool, distractors_from: OMGPredictor | None = None
                  ) -> tuple[list[dict], list[int]]:
    """The dataset's classes (label k -> ``ids[k]``). With ``distractors_from`` (a predictor; the
    ``distractors`` option), the training classes the dataset lacks are appended with id -1: a query that
    found one of them is then classified as that class and dropped."""
    classes = [c for c in entry.classes if include_heldout or not c.heldout]
    vocab = [{"names": list(c.synonyms), "isthing": c.isthing} for c in classes]
    ids = [c.id for c in classes]
    train = distractors_from.training_vocabulary if distractors_from is not None else None
    if train is not None:
        have = {s for c in classes for s in c.synonyms}
        for names, isthing in zip(train.names, train.isthing):
            if not have & set(names):
                vocab.append({"names": list(names), "isthing": isthing})
                ids.append(-1)
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


def _pct(x: float) -> float:
    return float("nan") if x is None or (isinstance(x, float) and np.isnan(x)) else 100.0 * float(x)


def evaluate_pair(checkpoint: str, entry: DatasetEntry, split: str, task: str, root: str | None, out_dir: str,
                  limit: int | None = None, device: str | None = None, overlays: int = 4,
                  predictor: OMGPredictor | None = None, progress: bool = False,
                  options: EvalOptions | None = None) -> EvalResult:
    if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
        raise ValueError(f"task {task!r} cannot be evaluated on {entry.name} (format {entry.format})")
    t0 = time.monotonic()
    pred = predictor or OMGPredictor.from_checkpoint(checkpoint, device=device)
    reader = get_reader(entry, split, root)
    fn = {"panoptic": _panoptic, "instance": _instance, "semantic": _semantic, "open_vocab": _open_vocab,
          "interactive": _interactive, "vis": _vis, "vps": _vps, "vss": _vss, "vos": _vos}[task]
    opts = options or EvalOptions()
    saved = pred.test_size, pred.postprocess_at
    pred.test_size = tuple(entry.test_size) or pred.test_size  # the released config's test size for this dataset
    pred.postprocess_at = opts.postprocess_at
    try:
        result = fn(pred, entry, reader, out_dir, limit, overlays, progress, opts)
    finally:
        pred.test_size, pred.postprocess_at = saved
    result.tables["options"] = opts.to_dict()
    result.dataset, result.split, result.task = entry.name, split, task
    result.seconds = time.monotonic() - t0
    uio.write_json(uio.join(out_dir, "result.json"), result.to_dict())
    return result


# ----------------------------------------------------------------------------- ground truth, from the readers
#
# The format readers are the one place a dataset's files are parsed: the evaluation takes its records (file
# paths, segments with the catalog's category ids) from ``reader.items()`` and its ground-truth masks from
# ``reader.load()``. PQ and VPQ are computed by the official-protocol evaluators on the official PNGs, with the
# split's annotations rewritten to the catalog's ids (a Cityscapes label-id JSON scores like the trainId one).

def _records(reader, limit: int | None) -> list[dict]:
    return reader.items()[:limit]


def _catalog_categories(entry: DatasetEntry) -> list[dict]:
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in entry.classes]


def _panoptic_gt_json(entry: DatasetEntry, items: list[dict], out_dir: str) -> str:
    """The evaluated records as a COCO panoptic ground truth (image id = the record key, as in the predictions)."""
    doc = {"images": [{"id": it["key"], "file_name": it["image"], "width": it["width"], "height": it["height"]}
                      for it in items],
           "annotations": [{"image_id": it["key"], "file_name": it["mask"], "segments_info": it["segments_info"]}
                           for it in items],
           "categories": _catalog_categories(entry)}
    uri = uio.join(out_dir, "gt_subset.json")
    uio.write_json(uri, doc)
    return uri


def _semantic_gt(sample, index: dict[int, int]) -> np.ndarray:
    """T x H x W label maps of a record (255 = no evaluated class)."""
    from omg.data.decode import decode_masks

    masks = decode_masks(sample)
    lab = np.full((sample.num_frames, sample.height, sample.width), 255, dtype=np.int64)
    for seg, m in zip(sample.segments, masks):
        if seg.category_id in index:
            lab[m] = index[seg.category_id]
    return lab


def _distractors(pred, opts: EvalOptions):
    return pred if opts.distractors else None


def _predict_panoptic(pred, entry, reader, out_dir, limit, overlays, progress, opts, include_heldout, what):
    vocab, cat_ids = vocabulary_of(entry, include_heldout, _distractors(pred, opts))
    items = _records(reader, limit)
    preds, files = [], []
    with Progress(f"eval {entry.name} {what}", total=len(items), unit="img", enabled=progress) as prog:
        for k, it in enumerate(items):
            image = load_image(uio.join(reader.paths["images"], it["image"]))
            pred.set_image(image)
            r = drop_unmapped(pred.predict("panoptic", vocabulary=vocab, open_vocab=opts.open_vocab(what)), cat_ids)
            name = it["mask"][:-4]
            preds.append((it["key"], name, r))
            if k < overlays:
                uri = uio.join(out_dir, "overlays", f"{name}.png")
                writers.write_overlay(uri, image, r.panoptic, {s.id: s.name for s in r.segments})
                files.append(uri)
            prog.update()
    files.append(writers.write_panoptic(out_dir, preds, [v["isthing"] for v in vocab], cat_ids))
    return _panoptic_gt_json(entry, items, out_dir), files


def _pq_result(gt_json, reader, out_dir, files, heldout_ids=None) -> EvalResult:
    from omg.evaluation.panoptic import pq_from_files

    r = pq_from_files(gt_json, reader.paths["panoptic_masks"], uio.join(out_dir, "panoptic.json"),
                      uio.join(out_dir, "panoptic"))
    m = {"PQ": _pct(r.summary["All"]["pq"]), "SQ": _pct(r.summary["All"]["sq"]), "RQ": _pct(r.summary["All"]["rq"]),
         "PQ_th": _pct(r.summary["Things"]["pq"]), "PQ_st": _pct(r.summary["Stuff"]["pq"])}
    if heldout_ids:
        vals = [r.per_class[c]["pq"] for c in heldout_ids
                if c in r.per_class and r.per_class[c]["tp"] + r.per_class[c]["fp"] + r.per_class[c]["fn"] > 0]
        m["PQ_heldout"] = _pct(float(np.mean(vals))) if vals else float("nan")
    return EvalResult("", "", "", m, {"per_class": r.per_class}, files)


def _panoptic(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    gt_json, files = _predict_panoptic(pred, entry, reader, out_dir, limit, overlays, progress, opts, False, "panoptic")
    return _pq_result(gt_json, reader, out_dir, files)


def _open_vocab(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    gt_json, files = _predict_panoptic(pred, entry, reader, out_dir, limit, overlays, progress, opts, True, "open_vocab")
    heldout = [c.id for c in entry.classes if c.heldout]
    r = _pq_result(gt_json, reader, out_dir, files, heldout or None)
    r.metrics = {f"OV_{k}": v for k, v in r.metrics.items()}  # apart from the closed-set PQ of the same dataset
    return r


def _instance(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.coco_ap import coco_segm

    if "instances_json" not in reader.paths:
        raise ValueError(f"{entry.name}: instance evaluation needs instances_json in the catalog split")
    vocab, cat_ids = vocabulary_of(entry, False, _distractors(pred, opts))
    inst = get_reader(dataclasses.replace(entry, format="coco_instances"), reader.split, reader.root)
    items = _records(inst, limit)
    gt = {"images": [{"id": it["key"], "file_name": it["image"], "width": it["width"], "height": it["height"]}
                     for it in items],
          "annotations": [dict(a, image_id=it["key"]) for it in items for a in it["annotations"]],
          "categories": _catalog_categories(entry)}
    recs = []
    with Progress(f"eval {entry.name} instance", total=len(items), unit="img", enabled=progress) as prog:
        for it in items:
            pred.set_image(load_image(uio.join(inst.paths["images"], it["image"])))
            r = pred.predict("instance", vocabulary=vocab, open_vocab=opts.open_vocab("instance"))
            recs += [x for x in writers.instance_records(it["key"], r, cat_ids) if x["category_id"] != -1]
            prog.update()
    uri = uio.join(out_dir, "instances_results.json")
    uio.write_json(uri, recs)
    r = coco_segm(gt, recs, (1, 10, 100))
    m = {k: _pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}
    return EvalResult("", "", "", m, {"per_class": r.per_class}, [uri])


def _semantic(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.semantic import SemSegEvaluator

    vocab, cat_ids = vocabulary_of(entry, False, _distractors(pred, opts))
    index = {c: k for k, c in enumerate(cat_ids)}
    items = _records(reader, limit)
    ev = SemSegEvaluator(len(vocab))
    files = []
    with Progress(f"eval {entry.name} semantic", total=len(items), unit="img", enabled=progress) as prog:
        for it in items:
            pred.set_image(load_image(uio.join(reader.paths["images"], it["image"])))
            r = pred.predict("semantic", vocabulary=vocab, open_vocab=opts.open_vocab("semantic"))
            gt = _semantic_gt(reader.load(it), index)[0]
            ev.process(gt, r.labels, where=uio.join(reader.paths["panoptic_masks"], it["mask"]))
            files.append(writers.write_semantic(out_dir, it["mask"][:-4], r))
            prog.update()
    res = ev.evaluate()
    return EvalResult("", "", "", {"mIoU": _pct(res.miou), "fwIoU": _pct(res.fwiou), "mACC": _pct(res.macc),
                                   "pACC": _pct(res.pacc)},
                      {"iou": {cat_ids[k]: (None if np.isnan(v) else float(v)) for k, v in enumerate(res.iou)}},
                      files[:overlays])


def _centre_prompts(pred: OMGPredictor, gts: np.ndarray) -> list[list[float]]:
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


def _interactive(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    """Single-point mIoU (every non-crowd segment prompted at its centre, all prompts of an image in one
    pass) and NoC@80/85/90, NoC>=20@85/90 on up to 20 objects with the RITM click simulation (one decoder pass
    per click); each simulated object's clicks and IoUs go to ``interactive_clicks.json`` (``omg metric
    interactive --clicks`` recomputes NoC from it)."""
    from omg.data.masks import rle_encode
    from omg.evaluation.interactive import PointMIoU, evaluate_sample, noc_metrics

    from omg.data.decode import decode_masks

    items = _records(reader, limit)
    ev = PointMIoU()
    recs, noc_ious, click_recs, files = [], [], [], []
    max_noc_objects = 20
    with Progress(f"eval {entry.name} interactive", total=len(items), unit="img", enabled=progress) as prog:
        for k, it in enumerate(items):
            sample = reader.load(it)  # COCO-SAM: every non-crowd segment, class-agnostic
            masks = decode_masks(sample)[:, 0]
            keep = [j for j, g in enumerate(sample.segments) if not g.iscrowd and masks[j].any()]
            if not keep:
                prog.update()
                continue
            image = load_image(uio.join(reader.paths["images"], it["image"]))
            gts = masks[keep]
            pred.set_image(image)
            r = pred.predict("interactive", points=_centre_prompts(pred, gts))
            ev.process(gts, r.masks)
            for j, m in zip(keep, r.masks):
                recs.append({"image_id": it["key"], "segment_id": sample.segments[j].id, "segmentation": rle_encode(m)})
            if k < overlays:
                uri = uio.join(out_dir, "overlays", f"{it['mask'][:-4]}.png")
                paint = np.zeros(gts.shape[1:], np.int32)
                for j, m in enumerate(r.masks):
                    paint[m] = j + 1
                writers.write_overlay(uri, image, paint)
                files.append(uri)
            for j, g in zip(keep, gts):
                if len(noc_ious) >= max_noc_objects:
                    break

                def predict(clicks, _pred=pred):
                    pos = [[c.x + 0.5, c.y + 0.5] for c in clicks if c.positive]
                    if not pos:
                        return np.zeros(g.shape)
                    out = _pred.predict("interactive", points=[pos[-1]])
                    return out.masks[0].astype(np.float64)

                clicks, ious = evaluate_sample(g.astype(np.int32), predict, max_clicks=20)
                noc_ious.append(ious)
                click_recs.append({"image_id": it["key"], "segment_id": sample.segments[j].id,
                                   "clicks": [[c.x, c.y, c.positive] for c in clicks], "ious": ious.tolist()})
            prog.update()
    for name, doc in (("interactive_results.json", recs), ("interactive_clicks.json", click_recs)):
        uio.write_json(uio.join(out_dir, name), doc)
        files.append(uio.join(out_dir, name))
    res = ev.evaluate()
    m = {"mIoU": _pct(res["miou"]), "segments": float(res["count"])}
    if noc_ious:
        m.update(noc_metrics(noc_ious))
    return EvalResult("", "", "", m, {}, files)


# ----------------------------------------------------------------------------- videos

def _frames(folder: str, names: list[str]) -> list[np.ndarray]:
    return [load_image(uio.join(folder, n)) for n in names]


def _vis(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.ytvis import ytvis_ap

    vocab, cat_ids = vocabulary_of(entry, False, _distractors(pred, opts))
    items = _records(reader, limit)
    gt = {"videos": [{"id": int(it["key"]), "file_names": it["file_names"], "width": it["width"],
                      "height": it["height"], "length": len(it["file_names"])} for it in items],
          "annotations": [a for it in items for a in it["annotations"]],
          "categories": _catalog_categories(entry)}
    recs, files = [], []
    with Progress(f"eval {entry.name} vis", total=len(items), unit="video", enabled=progress) as prog:
        for it in items:
            pred.set_video(_frames(reader.paths["frames"], it["file_names"]))
            r = pred.predict("vis", vocabulary=vocab, open_vocab=opts.open_vocab("vis"))
            recs += [x for x in writers.ytvis_records(int(it["key"]), r, cat_ids) if x["category_id"] != -1]
            prog.update()
    uri = uio.join(out_dir, "results.json")
    uio.write_json(uri, recs)
    r = ytvis_ap(gt, recs)
    m = {k: _pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}
    return EvalResult("", "", "", m, {"per_class": r.per_class}, [uri] + files)


def _vipseg_gt_json(entry: DatasetEntry, items: list[dict], out_dir: str) -> str:
    """The evaluated videos as a VIPSeg ground truth (frames in record order, the catalog's category ids)."""
    videos, anns = [], []
    for it in items:
        vid = it["key"]
        videos.append({"video_id": vid, "images": [{"id": f"{vid}_{t}", "file_name": fr["image"], "width": fr.get("width"),
                                                    "height": fr.get("height")} for t, fr in enumerate(it["frames"])]})
        anns.append({"video_id": vid, "annotations": [{"image_id": f"{vid}_{t}", "file_name": fr["mask"],
                                                       "segments_info": fr["segments_info"]}
                                                      for t, fr in enumerate(it["frames"])]})
    uri = uio.join(out_dir, "gt_subset.json")
    uio.write_json(uri, {"videos": videos, "annotations": anns, "categories": _catalog_categories(entry)})
    return uri


def _vps(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.vps import vps_from_files

    if "panoptic_json" not in reader.paths:
        raise ValueError(f"{entry.name}: VPS evaluation needs the COCO-style conversion (panoptic_json), the "
                         "official VPQ protocol's input")
    vocab, cat_ids = vocabulary_of(entry, False, _distractors(pred, opts))
    items = _records(reader, limit)
    preds = []
    with Progress(f"eval {entry.name} vps", total=len(items), unit="video", enabled=progress) as prog:
        for it in items:
            vid = it["key"]
            pred.set_video(_frames(uio.join(reader.paths["frames"], vid), [fr["image"] for fr in it["frames"]]))
            r = drop_unmapped(pred.predict("vps", vocabulary=vocab, open_vocab=opts.open_vocab("vps"),
                                           track_ids=opts.track_ids), cat_ids)
            preds.append((vid, [fr["mask"][:-4] for fr in it["frames"]], r))
            prog.update()
    files = [writers.write_vipseg(out_dir, preds, [v["isthing"] for v in vocab], cat_ids)]
    gt_json = _vipseg_gt_json(entry, items, out_dir)
    vpq_r, stq_r, _ = vps_from_files(gt_json, reader.paths["panoptic_masks"], files[0], uio.join(out_dir, "panoptic"))
    final, omg = vpq_r.mean(), vpq_r.mean((1, 2, 4, 6))
    m = {f"VPQ@{k}": _pct(r.summary["All"]["pq"]) for k, r in vpq_r.per_k.items()}
    m.update({"VPQ": _pct(omg["All"]), "VPQ_th": _pct(omg["Things"]), "VPQ_st": _pct(omg["Stuff"]),
              "VPQ_final": _pct(final["All"]), "STQ": _pct(stq_r.stq), "AQ": _pct(stq_r.aq), "SQ": _pct(stq_r.sq)})
    return EvalResult("", "", "", m, {"vpq_per_class_k1": vpq_r.per_k[1].per_class}, files)


def _vss(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.semantic import SemSegEvaluator
    from omg.evaluation.vspw import mean_vc

    vocab, cat_ids = vocabulary_of(entry, False, _distractors(pred, opts))
    index = {c: k for k, c in enumerate(cat_ids)}
    items = _records(reader, limit)
    ev = SemSegEvaluator(len(vocab))
    clips = []
    with Progress(f"eval {entry.name} vss", total=len(items), unit="video", enabled=progress) as prog:
        for it in items:
            vid = it["key"]
            pred.set_video(_frames(uio.join(reader.paths["frames"], vid), [fr["image"] for fr in it["frames"]]))
            r = pred.predict("vss", vocabulary=vocab, open_vocab=opts.open_vocab("vss"))
            gts = _semantic_gt(reader.load(it), index)
            for t, fr in enumerate(it["frames"]):
                ev.process(gts[t], r.labels[t], where=uio.join(reader.paths["panoptic_masks"], vid, fr["mask"]))
            writers.write_vss(out_dir, vid, [fr["mask"][:-4] for fr in it["frames"]], r)
            clips.append((gts, r.labels))
            prog.update()
    res = ev.evaluate()
    return EvalResult("", "", "", {"mIoU": _pct(res.miou), "mVC8": _pct(mean_vc(clips, 8)),
                                   "mVC16": _pct(mean_vc(clips, 16))}, {}, [uio.join(out_dir, "semantic")])


def _vos(pred, entry, reader, out_dir, limit, overlays, progress, opts) -> EvalResult:
    from omg.evaluation.davis import davis_from_files

    items = _records(reader, limit)
    with Progress(f"eval {entry.name} vos", total=len(items), unit="video", enabled=progress) as prog:
        for it in items:
            vid = it["key"]
            reader.check_frames(it)  # a missing frame is a bad record here too
            pred.set_video(_frames(uio.join(reader.paths["frames"], vid), it["frames"]))
            first = writers.read_png(uio.join(reader.paths["annotations"], vid, it["frames"][0][:-4] + ".png"))
            r = pred.predict("vos", first_frame_masks=first)
            writers.write_vos(out_dir, vid, [n[:-4] for n in it["frames"]], r)
            prog.update()
    res = davis_from_files(reader.paths["annotations"], uio.join(out_dir, "Annotations"), [it["key"] for it in items])
    m = {k: _pct(v) for k, v in res.summary.items()}
    return EvalResult("", "", "", m, {"per_object": res.per_object}, [uio.join(out_dir, "Annotations")])


def default_pairs(entry: DatasetEntry) -> list[tuple[str, str]]:
    """(split, task) pairs a catalog entry is evaluated on: its tasks on its validation split(s)."""
    pairs = []
    val = [s for s in entry.splits if s.startswith("val")] or [s for s in entry.splits if s != "train"]
    for task in entry.tasks:
        if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
            continue
        if task == "open_vocab":
            ov = [s for s in entry.splits if s.endswith("_ov")]
            if ov:
                pairs.append((ov[0], task))
            continue
        splits = [s for s in val if not s.endswith("_ov")]
        if splits:
            pairs.append((splits[0], task))
    return pairs
