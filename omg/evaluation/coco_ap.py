"""COCO mask AP through pycocotools ``COCOeval(iouType="segm")`` (the official implementation).

``coco_segm(gt, results, max_dets)``: ``gt`` is a COCO instances JSON (path/URI or dict),
``results`` a results JSON (path/URI or list of ``{image_id, category_id, segmentation, score}``).
``max_dets`` defaults to pycocotools' [1, 10, 100]; OMG-Seg (mmdet ``CocoMetric``) uses
[100, 300, 1000], under which mAP keeps maxDets 100 but AP50/75/s/m/l use 1000.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from omg.data import io as uio

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class APResult:
    """``stats``: the 12 COCO numbers (fractions; -1 where undefined); ``per_class``: AP per category
    (area all, the largest maxDets; -1 for a category without ground truth)."""

    stats: dict[str, float]
    per_class: dict[int, float]
    summary_text: str = ""

    def table(self) -> str:
        return self.summary_text


def coco_from(doc_or_uri, copy_doc: bool = True) -> COCO:
    """A pycocotools COCO object; a dict is deep-copied unless ``copy_doc=False`` (pycocotools mutates it)."""
    doc = uio.read_json(doc_or_uri) if isinstance(doc_or_uri, str) else (
        copy.deepcopy(doc_or_uri) if copy_doc else doc_or_uri)
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(ev: COCOeval, stat_names=STAT_NAMES) -> tuple[dict, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(stat_names, [float(x) for x in ev.stats])), buf.getvalue()


def per_class_ap(ev: COCOeval) -> dict[int, float]:
    precision = ev.eval["precision"]  # T x R x K x A x M
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else -1.0
    return out


def coco_segm(gt, results, max_dets: tuple[int, int, int] = (1, 10, 100)) -> APResult:
    coco_gt = coco_from(gt)
    res = uio.read_json(results) if isinstance(results, str) else copy.deepcopy(results)
    known = set(coco_gt.getImgIds())
    for i, r in enumerate(res):
        if r.get("image_id") not in known:
            raise ValueError(f"result {i}: image_id {r.get('image_id')} is not in the ground truth")
        if r.get("category_id") not in coco_gt.cats:
            raise ValueError(f"result {i}: unknown category {r.get('category_id')}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(res) if res else COCO()
    if not res:
        return APResult({k: -1.0 for k in STAT_NAMES}, {}, "no detections")
    ev = COCOeval(coco_gt, coco_dt, "segm")
    ev.params.maxDets = list(max_dets)
    stats, text = run_cocoeval(ev)
    return APResult(stats, per_class_ap(ev), text)
