"""Panoptic Quality (PQ / SQ / RQ), exactly as cocodataset/panopticapi ``pq_compute`` (and the
Cityscapes variant in cityscapesscripts, which runs the same algorithm on trainId categories).

Per image: intersections from one histogram of ``gt_id * 2^24 + pred_id``; prediction areas
come from the PNG, ground-truth areas from the JSON; IoU = |g∩p| / (|p| + |g| - |g∩p| - |p∩VOID|);
a match needs the same category, a non-crowd GT and IoU > 0.5 (strict); unmatched predictions
more than half VOID or same-category crowd are not false positives. Per category over the
dataset: PQ = ΣIoU / (TP + FP/2 + FN/2); averages over categories with TP + FP + FN > 0.

One documented difference: a split (Things or Stuff) with no category present averages over
n = 0 categories, where panopticapi raises ZeroDivisionError; here it is NaN.

``PQEvaluator`` accumulates images given as arrays (``process``) or reads the official files
(:func:`pq_from_files`): GT and prediction JSON + folders of RGB id PNGs.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from omg.data import io as uio
from omg.data.masks import rgb2id

OFFSET = 256 * 256 * 256
VOID = 0


@dataclass
class ClassStats:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def pq(self) -> tuple[float, float, float]:
        denom = self.tp + 0.5 * self.fp + 0.5 * self.fn
        if denom == 0:
            return 0.0, 0.0, 0.0
        return self.iou / denom, (self.iou / self.tp if self.tp else 0.0), self.tp / denom


@dataclass
class PQResult:
    """``summary[split]`` = {"pq", "sq", "rq", "n"} for split in All / Things / Stuff (NaN when n = 0);
    ``per_class[category_id]`` = {"pq", "sq", "rq", "tp", "fp", "fn", "isthing", "name"}."""

    summary: dict[str, dict[str, float]]
    per_class: dict[int, dict]

    def table(self) -> str:
        lines = [f"{'':10s}|{'PQ':>8s} {'SQ':>8s} {'RQ':>8s} {'N':>5s}", "-" * 41]
        for split in ("All", "Things", "Stuff"):
            s = self.summary[split]
            lines.append(f"{split:10s}|{100 * s['pq']:8.3f} {100 * s['sq']:8.3f} {100 * s['rq']:8.3f} {s['n']:5d}")
        return "\n".join(lines)


def pq_image(gt: np.ndarray, gt_segments: dict[int, dict], pred: np.ndarray, pred_segments: dict[int, dict],
             categories: dict[int, dict], stats: dict[int, ClassStats], where: str = "") -> None:
    """Accumulate one image into ``stats``.

    gt / pred: H x W int64 segment ids (0 = VOID). gt_segments: id -> {"category_id", "iscrowd", "area"}
    (the JSON area is used, as panopticapi does); pred_segments: id -> {"category_id"}.
    Raises ``ValueError`` naming ``where`` and the id for the inputs panopticapi rejects.
    """
    labels, counts = np.unique(pred, return_counts=True)
    pred_area: dict[int, int] = {}
    for label, cnt in zip(labels.tolist(), counts.tolist()):
        if label not in pred_segments:
            if label == VOID:
                continue
            raise ValueError(f"{where}: segment id {label} is in the prediction PNG but not in its JSON")
        pred_area[label] = cnt
        cat = pred_segments[label]["category_id"]
        if cat not in categories:
            raise ValueError(f"{where}: segment id {label} has category {cat}, not among the ground-truth categories")
    missing = set(pred_segments) - set(pred_area)
    if missing:
        raise ValueError(f"{where}: segment ids {sorted(missing)[:5]} are in the prediction JSON but not in its PNG")
    joint = gt.astype(np.int64) * OFFSET + pred.astype(np.int64)
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(l // OFFSET), int(l % OFFSET)): int(c) for l, c in zip(labels.tolist(), counts.tolist())}
    gt_matched, pred_matched = set(), set()
    for (g, p), i in inter.items():
        if g not in gt_segments or p not in pred_segments:
            continue
        gs = gt_segments[g]
        if gs.get("iscrowd", 0) == 1:
            continue
        if gs["category_id"] != pred_segments[p]["category_id"]:
            continue
        union = pred_area[p] + gs["area"] - i - inter.get((VOID, p), 0)
        iou = i / union
        if iou > 0.5:
            st = stats[gs["category_id"]]
            st.tp += 1
            st.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_by_cat: dict[int, int] = {}
    for g, gs in gt_segments.items():
        if gs.get("iscrowd", 0) == 1:
            crowd_by_cat[gs["category_id"]] = g
            continue
        if g not in gt_matched:
            stats[gs["category_id"]].fn += 1
    for p, ps in pred_segments.items():
        if p in pred_matched:
            continue
        i = inter.get((VOID, p), 0)
        if ps["category_id"] in crowd_by_cat:
            i += inter.get((crowd_by_cat[ps["category_id"]], p), 0)
        if i / pred_area[p] > 0.5:
            continue
        stats[ps["category_id"]].fp += 1


def summarize(stats: dict[int, ClassStats], categories: dict[int, dict]) -> PQResult:
    per_class, summary = {}, {}
    for cat, info in categories.items():
        st = stats.get(cat, ClassStats())
        pq, sq, rq = st.pq()
        per_class[cat] = {"pq": pq, "sq": sq, "rq": rq, "tp": st.tp, "fp": st.fp, "fn": st.fn,
                          "isthing": bool(info.get("isthing", 1)), "name": info.get("name", str(cat))}
    for split, keep in (("All", None), ("Things", True), ("Stuff", False)):
        rows = [v for c, v in per_class.items() if (keep is None or v["isthing"] == keep)
                and v["tp"] + v["fp"] + v["fn"] > 0]
        n = len(rows)
        if n == 0:  # panopticapi: ZeroDivisionError
            summary[split] = {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}
        else:
            summary[split] = {k: sum(r[k] for r in rows) / n for k in ("pq", "sq", "rq")} | {"n": n}
    return PQResult(summary, per_class)


@dataclass
class PQEvaluator:
    """reset / process / evaluate over in-memory id maps."""

    categories: dict[int, dict]
    stats: dict[int, ClassStats] = field(default_factory=lambda: defaultdict(ClassStats))

    def reset(self) -> None:
        self.stats = defaultdict(ClassStats)

    def process(self, gt: np.ndarray, gt_segments: dict[int, dict], pred: np.ndarray, pred_segments: dict[int, dict],
                where: str = "") -> None:
        pq_image(gt, gt_segments, pred, pred_segments, self.categories, self.stats, where)

    def evaluate(self) -> PQResult:
        return summarize(self.stats, self.categories)


def _read_ids(uri: str) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(uio.read_bytes(uri)))
        return rgb2id(np.array(img.convert("RGB")))
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: missing panoptic PNG") from None


def pq_from_files(gt_json: str, gt_folder: str, pred_json: str, pred_folder: str) -> PQResult:
    gt_doc, pred_doc = uio.read_json(gt_json), uio.read_json(pred_json)
    categories = {c["id"]: c for c in gt_doc["categories"]}
    preds = {a["image_id"]: a for a in pred_doc["annotations"]}
    ev = PQEvaluator(categories)
    for ann in gt_doc["annotations"]:
        image_id = ann["image_id"]
        if image_id not in preds:
            raise ValueError(f"{pred_json}: no prediction for image_id {image_id}")
        p = preds[image_id]
        gt = _read_ids(uio.join(gt_folder, ann["file_name"]))
        pred = _read_ids(uio.join(pred_folder, p["file_name"]))
        ev.process(gt, {s["id"]: s for s in ann["segments_info"]}, pred, {s["id"]: s for s in p["segments_info"]},
                   where=f"{uio.join(pred_folder, p['file_name'])} (image_id {image_id})")
    return ev.evaluate()
