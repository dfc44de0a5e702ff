"""YouTube-VIS video instance AP/AR, as youtubevos/cocoapi ``YTVOSeval`` (the CodaLab server's code).

COCOeval with videos in place of images: the IoU of a detection and a ground-truth track is
spatio-temporal, ``sum_t |d_t ∩ g_t| / sum_t |d_t ∪ g_t|`` (a frame where only one of them
exists adds its area to the union; frames where both are absent are skipped; crowd tracks
use the same IoU but absorb detections); area ranges are small < 128², medium 128²–256²,
large > 256², applied to the mean of the non-empty per-frame areas; maxDets 1/10/100 per video.

Built on pycocotools' ``COCOeval`` (subclassed: IoU and preparation; accumulation and the
summary are pycocotools' own).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from omg.data import io as uio
from omg.data.masks import polygons_to_mask, rle_encode
from omg.evaluation.coco_ap import STAT_NAMES, APResult, coco_from, per_class_ap, run_cocoeval

AREA_RANGES = [[0 ** 2, 1e5 ** 2], [0 ** 2, 128 ** 2], [128 ** 2, 256 ** 2], [256 ** 2, 1e5 ** 2]]


def _rle(seg, h: int, w: int):
    if seg is None:
        return None
    if isinstance(seg, list):
        return rle_encode(polygons_to_mask(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}


def _avg_area(areas) -> float:
    vals = [a for a in areas if a]
    return float(np.mean(vals)) if vals else 0.0


class YTVOSeval(COCOeval):
    def _prepare(self):
        p = self.params
        gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        for gt in gts:
            gt["ignore"] = "iscrowd" in gt and gt["iscrowd"]
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        for dt in dts:
            self._dts[dt["image_id"], dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        inds = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in inds][: self.params.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, d in enumerate(dt):
            for j, g in enumerate(gt):
                inter = union = 0.0
                for ds, gs in zip(d["segmentations"], g["segmentations"]):
                    if ds is not None and gs is not None:
                        inter += mask_utils.area(mask_utils.merge([ds, gs], True))
                        union += mask_utils.area(mask_utils.merge([ds, gs], False))
                    elif ds is not None:
                        union += mask_utils.area(ds)
                    elif gs is not None:
                        union += mask_utils.area(gs)
                ious[i, j] = inter / union if union > 0 else 0.0
        return ious


def _video_coco(doc: dict, tracks: list[dict], videos: dict) -> dict:
    anns = []
    for k, a in enumerate(tracks):
        v = videos[a["video_id"]]
        segs = [_rle(s, v["height"], v["width"]) for s in a["segmentations"]]
        if len(segs) != v["length"]:
            raise ValueError(f"track {k} (video {a['video_id']}): {len(segs)} segmentations for a {v['length']}-frame video")
        areas = a.get("areas") or [float(mask_utils.area(s)) if s is not None else None for s in segs]
        anns.append({"id": a.get("id", k + 1), "image_id": a["video_id"], "category_id": a["category_id"],
                     "iscrowd": a.get("iscrowd", 0), "segmentations": segs, "area": _avg_area(areas),
                     "score": a.get("score", 1.0), "bbox": [0, 0, 0, 0]})
    return {"images": [{"id": vid} for vid in videos], "annotations": anns,
            "categories": doc["categories"]}


def ytvis_ap(gt, results, max_dets: tuple[int, int, int] = (1, 10, 100)) -> APResult:
    """``gt``: a YouTube-VIS JSON (path/URI or dict); ``results``: a results JSON or list of
    ``{video_id, category_id, score, segmentations: [RLE | None]}``."""
    doc = uio.read_json(gt) if isinstance(gt, str) else copy.deepcopy(gt)
    res = uio.read_json(results) if isinstance(results, str) else copy.deepcopy(results)
    videos = {v["id"]: v for v in doc["videos"]}
    cats = {c["id"] for c in doc["categories"]}
    for i, r in enumerate(res):
        if r.get("video_id") not in videos:
            raise ValueError(f"result {i}: video_id {r.get('video_id')} is not in the ground truth")
        if r.get("category_id") not in cats:
            raise ValueError(f"result {i}: unknown category {r.get('category_id')}")
    gt_coco = coco_from(_video_coco(doc, doc["annotations"], videos))
    if not res:
        return APResult({k: -1.0 for k in STAT_NAMES}, {}, "no detections")
    dt_doc = _video_coco(doc, res, videos)
    for k, a in enumerate(dt_doc["annotations"]):
        a["id"] = k + 1
        a["area"] = _avg_area([float(mask_utils.area(s)) if s is not None else None for s in a["segmentations"]])
    dt_coco = coco_from(dt_doc)
    ev = YTVOSeval(gt_coco, dt_coco, "segm")
    ev.params.areaRng = AREA_RANGES
    ev.params.maxDets = list(max_dets)
    stats, text = run_cocoeval(ev)
    return APResult(stats, per_class_ap(ev), text)
