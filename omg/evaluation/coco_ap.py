"""COCO mask AP through pycocotools ``COCOeval(iouType="segm")`` (the official implementation).

``coco_segm(gt, results, max_dets)``: ``gt`` is a COCO instances JSON (path/URI or dict),
``results`` a results JSON (path/URI or list of ``{image_id, category_id, segmentation, score}``).
``max_dets`` defaults to pycocotools' [1, 10, 100]; OMG-Seg (mmdet ``CocoMetric``) uses
[100, 300, 1000], under which mAP keeps maxDets 100 but AP50/75/s/m/l use 1000 (pycocotools'
``summarize``); the recalls are labelled after the maxDets they use (AR100, AR300, AR1000).

As pycocotools (``COCOeval.params.catIds`` = the ground truth's categories), a result whose
``category_id`` the ground truth does not list is not evaluated: counted in ``APResult.ignored``
(``strict=True`` raises instead). A result naming an image the ground truth lacks is an error, as
in ``COCO.loadRes``. Per-class AP of a category without ground truth is NaN, as mmdet's and
detectron2's class-wise tables report it.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from omg.utils import io as uio

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def stat_names(max_dets=(1, 10, 100)) -> tuple[str, ...]:
    """The 12 names of ``COCOeval.stats``, the three recalls named after the maxDets they use."""
    if len(max_dets) != 3 or list(max_dets) != sorted(set(max_dets)) or 100 not in max_dets:
        raise ValueError(
            f"max_dets {list(max_dets)}: three ascending numbers including 100 (pycocotools' "
            "summary takes AP at maxDets 100)"
        )
    return STAT_NAMES[:6] + tuple(f"AR{m}" for m in max_dets) + STAT_NAMES[9:]


@dataclass
class APResult:
    """``stats``: the 12 COCO numbers (fractions; -1 where undefined, as pycocotools prints them);
    ``per_class``: AP per category (area all, the largest maxDets; NaN for a category without ground
    truth); ``ignored``: results whose category the ground truth does not list (not evaluated)."""

    stats: dict[str, float]
    per_class: dict[int, float]
    summary_text: str = ""
    ignored: int = 0

    def table(self) -> str:
        return self.summary_text


def coco_from(doc_or_uri, copy_doc: bool = True) -> COCO:
    """A pycocotools COCO object; a dict is deep-copied unless ``copy_doc=False`` (pycocotools mutates it)."""
    doc = (
        uio.read_json(doc_or_uri)
        if isinstance(doc_or_uri, str)
        else (copy.deepcopy(doc_or_uri) if copy_doc else doc_or_uri)
    )
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(ev: COCOeval, names=STAT_NAMES) -> tuple[dict, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(names, [float(x) for x in ev.stats])), buf.getvalue()


def per_class_ap(ev: COCOeval) -> dict[int, float]:
    precision = ev.eval["precision"]  # T x R x K x A x M
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else float("nan")
    return out


def unknown_categories(results: list[dict], known, strict: bool) -> tuple[list[dict], int]:
    """Drop (count) the results whose ``category_id`` is not in ``known``; ``strict`` raises on the first."""
    kept = []
    for i, r in enumerate(results):
        if r.get("category_id") in known:
            kept.append(r)
        elif strict:
            raise ValueError(f"result {i}: category_id {r.get('category_id')} is not in the ground truth's categories")
    return kept, len(results) - len(kept)


def coco_segm(gt, results, max_dets: tuple[int, int, int] = (1, 10, 100), strict: bool = False) -> APResult:
    coco_gt = coco_from(gt)
    res = uio.read_json(results) if isinstance(results, str) else copy.deepcopy(results)
    known = set(coco_gt.getImgIds())
    for i, r in enumerate(res):
        if r.get("image_id") not in known:
            raise ValueError(f"result {i}: image_id {r.get('image_id')} is not in the ground truth")
    res, ignored = unknown_categories(res, coco_gt.cats, strict)
    names = stat_names(max_dets)
    if not res:
        return APResult({k: -1.0 for k in names}, {}, "no detections", ignored)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(res)
    ev = COCOeval(coco_gt, coco_dt, "segm")
    ev.params.maxDets = list(max_dets)
    stats, text = run_cocoeval(ev, names)
    return APResult(stats, per_class_ap(ev), text, ignored)
