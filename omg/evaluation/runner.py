"""Evaluate a checkpoint on one (dataset, split, task): predict, write the official prediction files, score.

``evaluate_pair(checkpoint, entry, split, task, root, out_dir)`` is what one Ray task of
``pipelines/evaluate.py`` runs (and what a notebook can call directly). The vocabulary is the
dataset's own class list (the per-dataset text embeddings replace the training ones, as in
the paper's evaluation), so label k is the dataset's k-th class; for ``open_vocab`` it includes
the held-out classes and the geometric ensemble is used for the classes unseen in training.

Returns an :class:`EvalResult`: flat metrics (``{"PQ": 52.3, ...}``, percentages as the papers
print them), per-class tables, and the files written (predictions, overlays).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from omg.data import io as uio
from omg.data.catalog import DatasetEntry
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


def vocabulary_of(entry: DatasetEntry, include_heldout: bool, predictor: OMGPredictor | None = None
                  ) -> tuple[list[dict], list[int]]:
    """The dataset's classes (label k -> ``ids[k]``). With a predictor, the training classes the dataset
    lacks are appended with id -1: a query that found one of them (e.g. sky, for a things-only video
    dataset) is then classified as that class and dropped, instead of being forced onto the
    dataset's classes."""
    classes = [c for c in entry.classes if include_heldout or not c.heldout]
    vocab = [{"names": list(c.synonyms), "isthing": c.isthing} for c in classes]
    ids = [c.id for c in classes]
    train = predictor.training_vocabulary if predictor is not None else None
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
                  predictor: OMGPredictor | None = None, progress: bool = False) -> EvalResult:
    if task not in TASK_FORMATS or entry.format not in TASK_FORMATS[task]:
        raise ValueError(f"task {task!r} cannot be evaluated on {entry.name} (format {entry.format})")
    t0 = time.monotonic()
    pred = predictor or OMGPredictor.from_checkpoint(checkpoint, device=device)
    paths = entry.split_paths(split, root)
    fn = {"panoptic": _panoptic, "instance": _instance, "semantic": _semantic, "open_vocab": _open_vocab,
          "interactive": _interactive, "vis": _vis, "vps": _vps, "vss": _vss, "vos": _vos}[task]
    result = fn(pred, entry, paths, out_dir, limit, overlays, progress)
    result.dataset, result.split, result.task = entry.name, split, task
    result.seconds = time.monotonic() - t0
    uio.write_json(uio.join(out_dir, "result.json"), result.to_dict())
    return result


# ----------------------------------------------------------------------------- images

def _images(paths: dict, limit: int | None) -> tuple[dict, list[dict], dict]:
    doc = uio.read_json(paths["panoptic_json"])
    anns = sorted(doc["annotations"], key=lambda a: str(a["image_id"]))[:limit]
    images = {im["id"]: im for im in doc["images"]}
    return doc, anns, images


def _predict_panoptic(pred, entry, paths, out_dir, limit, overlays, progress, include_heldout, what):
    vocab, cat_ids = vocabulary_of(entry, include_heldout, pred)
    doc, anns, images = _images(paths, limit)
    items, files = [], []
    with Progress(f"eval {entry.name} {what}", total=len(anns), unit="img", enabled=progress) as prog:
        for k, ann in enumerate(anns):
            im = images[ann["image_id"]]
            image = load_image(uio.join(paths["images"], im["file_name"]))
            pred.set_image(image)
            r = drop_unmapped(pred.predict("panoptic", vocabulary=vocab), cat_ids)
            name = ann["file_name"][:-4]
            items.append((ann["image_id"], name, r))
            if k < overlays:
                uri = uio.join(out_dir, "overlays", f"{name}.png")
                writers.write_overlay(uri, image, r.panoptic, {s.id: s.name for s in r.segments})
                files.append(uri)
            prog.update()
    files.append(writers.write_panoptic(out_dir, items, [v["isthing"] for v in vocab], cat_ids))
    gt = {**doc, "annotations": anns}
    gt_json = uio.join(out_dir, "gt_subset.json")
    uio.write_json(gt_json, gt)
    return gt_json, files


def _pq_result(gt_json, paths, out_dir, files, heldout_ids=None) -> EvalResult:
    from omg.evaluation.panoptic import pq_from_files

    r = pq_from_files(gt_json, paths["panoptic_masks"], uio.join(out_dir, "panoptic.json"), uio.join(out_dir, "panoptic"))
    m = {"PQ": _pct(r.summary["All"]["pq"]), "SQ": _pct(r.summary["All"]["sq"]), "RQ": _pct(r.summary["All"]["rq"]),
         "PQ_th": _pct(r.summary["Things"]["pq"]), "PQ_st": _pct(r.summary["Stuff"]["pq"])}
    if heldout_ids:
        vals = [r.per_class[c]["pq"] for c in heldout_ids
                if c in r.per_class and r.per_class[c]["tp"] + r.per_class[c]["fp"] + r.per_class[c]["fn"] > 0]
        m["PQ_heldout"] = _pct(float(np.mean(vals))) if vals else float("nan")
    return EvalResult("", "", "", m, {"per_class": r.per_class}, files)


def _panoptic(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    gt_json, files = _predict_panoptic(pred, entry, paths, out_dir, limit, overlays, progress, False, "panoptic")
    return _pq_result(gt_json, paths, out_dir, files)


def _open_vocab(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    gt_json, files = _predict_panoptic(pred, entry, paths, out_dir, limit, overlays, progress, True, "open_vocab")
    heldout = [c.id for c in entry.classes if c.heldout]
    r = _pq_result(gt_json, paths, out_dir, files, heldout or None)
    r.metrics = {f"OV_{k}": v for k, v in r.metrics.items()}  # apart from the closed-set PQ of the same dataset
    return r


def _instance(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.evaluation.coco_ap import coco_segm

    if "instances_json" not in paths:
        raise ValueError(f"{entry.name}: instance evaluation needs instances_json in the catalog split")
    vocab, cat_ids = vocabulary_of(entry, False, pred)
    gt = uio.read_json(paths["instances_json"])
    images = sorted(gt["images"], key=lambda i: str(i["id"]))[:limit]
    keep = {im["id"] for im in images}
    gt = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    recs = []
    with Progress(f"eval {entry.name} instance", total=len(images), unit="img", enabled=progress) as prog:
        for im in images:
            pred.set_image(load_image(uio.join(paths["images"], im["file_name"])))
            r = pred.predict("instance", vocabulary=vocab)
            recs += [x for x in writers.instance_records(im["id"], r, cat_ids) if x["category_id"] != -1]
            prog.update()
    uri = uio.join(out_dir, "instances_results.json")
    uio.write_json(uri, recs)
    r = coco_segm(gt, recs, (1, 10, 100))
    m = {k: _pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}
    return EvalResult("", "", "", m, {"per_class": r.per_class}, [uri])


def _semantic_gt(ids: np.ndarray, segments: list[dict], index: dict[int, int]) -> np.ndarray:
    lab = np.full(ids.shape, 255, dtype=np.int64)
    for s in segments:
        if s["category_id"] in index:
            lab[ids == s["id"]] = index[s["category_id"]]
    return lab


def _semantic(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.data.masks import rgb2id
    from omg.evaluation.semantic import SemSegEvaluator

    vocab, cat_ids = vocabulary_of(entry, False, pred)
    index = {c: k for k, c in enumerate(cat_ids)}
    doc, anns, images = _images(paths, limit)
    ev = SemSegEvaluator(len(vocab))
    files = []
    with Progress(f"eval {entry.name} semantic", total=len(anns), unit="img", enabled=progress) as prog:
        for ann in anns:
            im = images[ann["image_id"]]
            pred.set_image(load_image(uio.join(paths["images"], im["file_name"])))
            r = pred.predict("semantic", vocabulary=vocab)
            png = uio.join(paths["panoptic_masks"], ann["file_name"])
            gt = _semantic_gt(rgb2id(load_image(png)), ann["segments_info"], index)
            ev.process(gt, r.labels, where=png)
            files.append(writers.write_semantic(out_dir, ann["file_name"][:-4], r))
            prog.update()
    res = ev.evaluate()
    return EvalResult("", "", "", {"mIoU": _pct(res.miou), "fwIoU": _pct(res.fwiou), "mACC": _pct(res.macc),
                                   "pACC": _pct(res.pacc)},
                      {"iou": {cat_ids[k]: (None if np.isnan(v) else float(v)) for k, v in enumerate(res.iou)}},
                      files[:overlays])


def _interactive(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    """Single-point mIoU (every non-crowd segment prompted at its centre, all prompts of an image in one
    pass) and NoC@85/90 on up to 20 objects with the RITM click simulation (one decoder pass per click)."""
    from omg.data.masks import rgb2id, rle_encode
    from omg.evaluation.interactive import PointMIoU, center_point, evaluate_sample, noc

    doc, anns, images = _images(paths, limit)
    ev = PointMIoU()
    recs, noc_ious, files = [], [], []
    max_noc_objects = 20
    with Progress(f"eval {entry.name} interactive", total=len(anns), unit="img", enabled=progress) as prog:
        for k, ann in enumerate(anns):
            im = images[ann["image_id"]]
            image = load_image(uio.join(paths["images"], im["file_name"]))
            ids = rgb2id(load_image(uio.join(paths["panoptic_masks"], ann["file_name"])))
            segs = [s for s in ann["segments_info"] if not s.get("iscrowd", 0) and (ids == s["id"]).any()]
            if not segs:
                prog.update()
                continue
            gts = np.stack([ids == s["id"] for s in segs])
            pred.set_image(image)
            points = [list(center_point(g)) for g in gts]
            points = [[x + 0.5, y + 0.5] for x, y in points]
            r = pred.predict("interactive", points=points)
            ev.process(gts, r.masks)
            for s, m in zip(segs, r.masks):
                recs.append({"image_id": ann["image_id"], "segment_id": s["id"], "segmentation": rle_encode(m)})
            if k < overlays:
                uri = uio.join(out_dir, "overlays", f"{ann['file_name'][:-4]}.png")
                paint = np.zeros(ids.shape, np.int32)
                for j, m in enumerate(r.masks):
                    paint[m] = j + 1
                writers.write_overlay(uri, image, paint)
                files.append(uri)
            for g in gts:
                if len(noc_ious) >= max_noc_objects:
                    break

                def predict(clicks, _pred=pred):
                    pos = [[c.x + 0.5, c.y + 0.5] for c in clicks if c.positive]
                    if not pos:
                        return np.zeros(g.shape)
                    out = _pred.predict("interactive", points=[pos[-1]])
                    return out.masks[0].astype(np.float64)

                _, ious = evaluate_sample(g.astype(np.int32), predict, max_clicks=20)
                noc_ious.append(ious)
            prog.update()
    uri = uio.join(out_dir, "interactive_results.json")
    uio.write_json(uri, recs)
    files.append(uri)
    res = ev.evaluate()
    m = {"mIoU": _pct(res["miou"]), "segments": float(res["count"])}
    if noc_ious:
        n = noc(noc_ious)
        m.update({"NoC@85": n[0.85]["noc"], "NoC@90": n[0.90]["noc"]})
    return EvalResult("", "", "", m, {}, files)


# ----------------------------------------------------------------------------- videos

def _video_frames(paths: dict, frames_dir: str, names: list[str]) -> list[np.ndarray]:
    return [load_image(uio.join(frames_dir, n)) for n in names]


def _vis(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.evaluation.ytvis import ytvis_ap

    vocab, cat_ids = vocabulary_of(entry, False, pred)
    gt = uio.read_json(paths["annotations"])
    videos = sorted(gt["videos"], key=lambda v: v["id"])[:limit]
    keep = {v["id"] for v in videos}
    gt = {**gt, "videos": videos, "annotations": [a for a in gt["annotations"] if a["video_id"] in keep]}
    recs, files = [], []
    with Progress(f"eval {entry.name} vis", total=len(videos), unit="video", enabled=progress) as prog:
        for k, v in enumerate(videos):
            frames = _video_frames(paths, paths["frames"], v["file_names"])
            pred.set_video(frames)
            r = pred.predict("vis", vocabulary=vocab)
            recs += [x for x in writers.ytvis_records(v["id"], r, cat_ids) if x["category_id"] != -1]
            prog.update()
    uri = uio.join(out_dir, "results.json")
    uio.write_json(uri, recs)
    r = ytvis_ap(gt, recs)
    m = {k: _pct(v) if v >= 0 else float("nan") for k, v in r.stats.items()}
    return EvalResult("", "", "", m, {"per_class": r.per_class}, [uri] + files)


def _vipseg_videos(paths: dict, limit):
    doc = uio.read_json(paths["panoptic_json"])
    anns = sorted(doc["annotations"], key=lambda a: str(a["video_id"]))[:limit]
    videos = {v["video_id"]: v for v in doc["videos"]}
    return doc, anns, videos


def _vps(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.evaluation.vps import vps_from_files

    vocab, cat_ids = vocabulary_of(entry, False, pred)
    doc, anns, videos = _vipseg_videos(paths, limit)
    items = []
    with Progress(f"eval {entry.name} vps", total=len(anns), unit="video", enabled=progress) as prog:
        for vann in anns:
            vid = vann["video_id"]
            images = {im["id"]: im for im in videos[vid]["images"]}
            names = [images[fa["image_id"]]["file_name"] for fa in vann["annotations"]]
            pred.set_video(_video_frames(paths, uio.join(paths["frames"], vid), names))
            r = drop_unmapped(pred.predict("vps", vocabulary=vocab), cat_ids)
            items.append((vid, [fa["file_name"][:-4] for fa in vann["annotations"]], r))
            prog.update()
    files = [writers.write_vipseg(out_dir, items, [v["isthing"] for v in vocab], cat_ids)]
    gt_json = uio.join(out_dir, "gt_subset.json")
    uio.write_json(gt_json, {**doc, "annotations": anns, "videos": [videos[a["video_id"]] for a in anns]})
    vpq_r, stq_r, _ = vps_from_files(gt_json, paths["panoptic_masks"], files[0], uio.join(out_dir, "panoptic"))
    final, omg = vpq_r.mean(), vpq_r.mean((1, 2, 4, 6))
    m = {f"VPQ@{k}": _pct(r.summary["All"]["pq"]) for k, r in vpq_r.per_k.items()}
    m.update({"VPQ": _pct(omg["All"]), "VPQ_th": _pct(omg["Things"]), "VPQ_st": _pct(omg["Stuff"]),
              "VPQ_final": _pct(final["All"]), "STQ": _pct(stq_r.stq), "AQ": _pct(stq_r.aq), "SQ": _pct(stq_r.sq)})
    return EvalResult("", "", "", m, {"vpq_per_class_k1": vpq_r.per_k[1].per_class}, files)


def _vss(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.data.masks import rgb2id
    from omg.evaluation.semantic import SemSegEvaluator
    from omg.evaluation.vspw import mean_vc

    vocab, cat_ids = vocabulary_of(entry, False, pred)
    index = {c: k for k, c in enumerate(cat_ids)}
    doc, anns, videos = _vipseg_videos(paths, limit)
    ev = SemSegEvaluator(len(vocab))
    clips = []
    with Progress(f"eval {entry.name} vss", total=len(anns), unit="video", enabled=progress) as prog:
        for vann in anns:
            vid = vann["video_id"]
            images = {im["id"]: im for im in videos[vid]["images"]}
            names = [images[fa["image_id"]]["file_name"] for fa in vann["annotations"]]
            pred.set_video(_video_frames(paths, uio.join(paths["frames"], vid), names))
            r = pred.predict("vss", vocabulary=vocab)
            gts = []
            for t, fa in enumerate(vann["annotations"]):
                png = uio.join(paths["panoptic_masks"], vid, fa["file_name"])
                gt = _semantic_gt(rgb2id(load_image(png)), fa["segments_info"], index)
                ev.process(gt, r.labels[t], where=png)
                gts.append(gt)
            writers.write_vss(out_dir, vid, [fa["file_name"][:-4] for fa in vann["annotations"]], r)
            clips.append((np.stack(gts), r.labels))
            prog.update()
    res = ev.evaluate()
    return EvalResult("", "", "", {"mIoU": _pct(res.miou), "mVC8": _pct(mean_vc(clips, 8)),
                                   "mVC16": _pct(mean_vc(clips, 16))}, {}, [uio.join(out_dir, "semantic")])


def _vos(pred, entry, paths, out_dir, limit, overlays, progress) -> EvalResult:
    from omg.evaluation.davis import davis_from_files

    names = [x.strip() for x in uio.read_bytes(paths["imageset"]).decode().splitlines() if x.strip()] \
        if "imageset" in paths else uio.listdir(paths["annotations"])
    names = names[:limit]
    with Progress(f"eval {entry.name} vos", total=len(names), unit="video", enabled=progress) as prog:
        for vid in names:
            frames_names = [n for n in uio.listdir(uio.join(paths["frames"], vid)) if n.endswith(".jpg")]
            pred.set_video(_video_frames(paths, uio.join(paths["frames"], vid), frames_names))
            first = writers.read_png(uio.join(paths["annotations"], vid, frames_names[0][:-4] + ".png"))
            r = pred.predict("vos", first_frame_masks=first)
            writers.write_vos(out_dir, vid, [n[:-4] for n in frames_names], r)
            prog.update()
    res = davis_from_files(paths["annotations"], uio.join(out_dir, "Annotations"), names)
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
