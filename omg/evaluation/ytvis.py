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

from omg.data.masks import polygons_to_mask, rle_encode
from omg.evaluation.coco_ap import APResult, coco_from, per_class_ap, run_cocoeval, stat_names, unknown_categories
from omg.utils import io as uio

AREA_RANGES = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]


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
        return spatiotemporal_iou(
            [d["segmentations"] for d in dt],
            [g["segmentations"] for g in gt],
            np.stack([d["_areas"] for d in dt]) if dt else None,
            np.stack([g["_areas"] for g in gt]) if gt else None,
        )


def frame_areas(segs: list) -> np.ndarray:
    """Per-frame pixel areas of a track (0 where absent)."""
    present = [t for t, x in enumerate(segs) if x is not None]
    out = np.zeros(len(segs))
    if present:
        out[present] = mask_utils.area([segs[t] for t in present])
    return out


def spatiotemporal_iou(
    dts: list[list], gts: list[list], a_d: np.ndarray | None = None, a_g: np.ndarray | None = None
) -> np.ndarray:
    """D x G IoU of tracks given as per-frame RLE lists (None where absent).

    Union = sum_t (|d_t| + |g_t| - |d_t ∩ g_t|) over every frame; intersections come from one
    ``maskUtils.iou`` call per frame for all pairs present in it (I = iou (a + b) / (1 + iou)).
    ``a_d`` / ``a_g``: per-frame areas (D x T, G x T), computed when not given.
    """
    d_n, g_n = len(dts), len(gts)
    if d_n == 0 or g_n == 0:
        return np.zeros((d_n, g_n))
    a_d = np.stack([frame_areas(x) for x in dts]) if a_d is None else a_d
    a_g = np.stack([frame_areas(x) for x in gts]) if a_g is None else a_g
    inter = np.zeros((d_n, g_n))
    di, dt_ = np.nonzero(a_d > 0)
    gj, gt_ = np.nonzero(a_g > 0)
    if len(di) and len(gj):
        # one C call for every (detection frame, track frame) pair; only same-frame pairs are kept
        iou = np.asarray(
            mask_utils.iou([dts[i][t] for i, t in zip(di, dt_)], [gts[j][t] for j, t in zip(gj, gt_)], [0] * len(gj))
        ).reshape(len(di), len(gj))
        same = dt_[:, None] == gt_[None, :]
        rows, cols = np.nonzero(same & (iou > 0))
        if len(rows):
            v = iou[rows, cols]
            pair = a_d[di[rows], dt_[rows]] + a_g[gj[cols], gt_[cols]]
            np.add.at(inter, (di[rows], gj[cols]), np.rint(v * pair / (1 + v)))
    union = a_d.sum(1)[:, None] + a_g.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _video_coco(doc: dict, tracks: list[dict], videos: dict) -> dict:
    anns = []
    for k, a in enumerate(tracks):
        v = videos[a["video_id"]]
        segs = [_rle(s, v["height"], v["width"]) for s in a["segmentations"]]
        if len(segs) != v["length"]:
            raise ValueError(
                f"track {k} (video {a['video_id']}): {len(segs)} segmentations for a {v['length']}-frame video"
            )
        pixel_areas = frame_areas(segs)
        areas = a.get("areas") or [float(x) if x else None for x in pixel_areas]
        anns.append(
            {
                "id": a.get("id", k + 1),
                "image_id": a["video_id"],
                "category_id": a["category_id"],
                "iscrowd": a.get("iscrowd", 0),
                "segmentations": segs,
                "area": _avg_area(areas),
                "score": a.get("score", 1.0),
                "bbox": [0, 0, 0, 0],
                "_areas": pixel_areas,
            }
        )
    return {"images": [{"id": vid} for vid in videos], "annotations": anns, "categories": doc["categories"]}


def ytvis_ap(gt, results, max_dets: tuple[int, int, int] = (1, 10, 100), strict: bool = False) -> APResult:
    """``gt``: a YouTube-VIS JSON (path/URI or dict); ``results``: a results JSON or list of
    ``{video_id, category_id, score, segmentations: [RLE | None]}``. Results of a category the ground
    truth does not list are ignored and counted, as in :func:`omg.evaluation.coco_ap.coco_segm`."""
    doc = uio.read_json(gt) if isinstance(gt, str) else copy.deepcopy(gt)
    res = uio.read_json(results) if isinstance(results, str) else copy.deepcopy(results)
    videos = {v["id"]: v for v in doc["videos"]}
    for i, r in enumerate(res):
        if r.get("video_id") not in videos:
            raise ValueError(f"result {i}: video_id {r.get('video_id')} is not in the ground truth")
    res, ignored = unknown_categories(res, {c["id"] for c in doc["categories"]}, strict)
    gt_coco = coco_from(_video_coco(doc, doc["annotations"], videos), copy_doc=False)
    names = stat_names(max_dets)
    if not res:
        return APResult({k: -1.0 for k in names}, {}, "no detections", ignored)
    dt_doc = _video_coco(doc, res, videos)
    for k, a in enumerate(dt_doc["annotations"]):  # results: areas from the masks, as YTVOS.loadRes does
        a["id"] = k + 1
        a["area"] = _avg_area([float(x) if x else None for x in a["_areas"]])
    dt_coco = coco_from(dt_doc, copy_doc=False)
    ev = YTVOSeval(gt_coco, dt_coco, "segm")
    ev.params.areaRng = AREA_RANGES
    ev.params.maxDets = list(max_dets)
    stats, text = run_cocoeval(ev, names)
    return APResult(stats, per_class_ap(ev), text, ignored)
