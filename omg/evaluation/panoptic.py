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

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from omg.data.masks import rgb2id
from omg.utils import io as uio

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


class _IdIndex:
    """Maps 24-bit segment ids to small indices with a reusable lookup table (no sorting: O(pixels))."""

    def __init__(self):
        self.lut = np.full(OFFSET, -1, dtype=np.int32)

    def __call__(self, ids_map: np.ndarray, ids: list[int], void: int, unknown: int) -> np.ndarray:
        """Pixels of ``ids[k]`` -> k + 2, VOID -> ``void``, any other id -> ``unknown``."""
        keys = np.asarray(ids, dtype=np.int64)
        if keys.size and (keys.min() < 0 or keys.max() >= OFFSET):
            raise ValueError(f"segment ids must lie in [0, 2^24), got {keys.min()}..{keys.max()}")
        self.lut[keys] = np.arange(2, 2 + len(keys), dtype=np.int32)
        try:
            out = self.lut[ids_map]
        finally:
            self.lut[keys] = -1
        out[out < 0] = unknown
        out[ids_map == VOID] = void
        return out


_INDEX = None


def _index() -> _IdIndex:
    global _INDEX
    if _INDEX is None:
        _INDEX = _IdIndex()
    return _INDEX


def pq_image(
    gt: np.ndarray,
    gt_segments: dict[int, dict],
    pred: np.ndarray,
    pred_segments: dict[int, dict],
    categories: dict[int, dict],
    stats: dict[int, ClassStats],
    where: str = "",
) -> None:
    """Accumulate one image into ``stats``.

    gt / pred: H x W segment ids (0 = VOID). gt_segments: id -> {"category_id", "iscrowd", "area"}
    (the JSON area is used, as panopticapi does); pred_segments: id -> {"category_id"}.
    Raises ``ValueError`` naming ``where`` and the id for the inputs panopticapi rejects.

    Counting: pixels are mapped to segment indices through a lookup table and one ``bincount``
    gives every intersection (panopticapi sorts the joint labels with ``np.unique``); the
    numbers are the same.
    """
    index = _index()
    g_ids = [k for k in gt_segments if k != VOID]
    p_ids = [k for k in pred_segments if k != VOID]
    gi = index(gt, g_ids, void=0, unknown=1)  # 0 VOID, 1 an id not in the GT JSON (skipped), k+2 = g_ids[k]
    pi = index(pred, p_ids, void=0, unknown=1)
    if (pi == 1).any():
        bad = int(pred[pi == 1].flat[0])
        raise ValueError(f"{where}: segment id {bad} is in the prediction PNG but not in its JSON")
    ng, np_ = len(g_ids) + 2, len(p_ids) + 2
    counts = np.bincount((gi.astype(np.int64) * np_ + pi).ravel(), minlength=ng * np_).reshape(ng, np_)
    pred_area = counts.sum(0)
    missing = [p_ids[k] for k in range(len(p_ids)) if pred_area[k + 2] == 0]
    if missing:
        raise ValueError(f"{where}: segment ids {sorted(missing)[:5]} are in the prediction JSON but not in its PNG")
    for p in p_ids:
        cat = pred_segments[p]["category_id"]
        if cat not in categories:
            raise ValueError(f"{where}: segment id {p} has category {cat}, not among the ground-truth categories")
    gt_matched, pred_matched = set(), set()
    rows, cols = np.nonzero(counts[2:, 2:])
    for r, c in zip(rows.tolist(), cols.tolist()):
        g, p = g_ids[r], p_ids[c]
        gs = gt_segments[g]
        if gs.get("iscrowd", 0) == 1 or gs["category_id"] != pred_segments[p]["category_id"]:
            continue
        i = int(counts[r + 2, c + 2])
        union = int(pred_area[c + 2]) + gs["area"] - i - int(counts[0, c + 2])
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
    g_pos = {g: k + 2 for k, g in enumerate(g_ids)}
    for c, p in enumerate(p_ids):
        if p in pred_matched:
            continue
        ps = pred_segments[p]
        i = int(counts[0, c + 2])
        crowd = crowd_by_cat.get(ps["category_id"])
        if crowd is not None and crowd in g_pos:
            i += int(counts[g_pos[crowd], c + 2])
        if i / int(pred_area[c + 2]) > 0.5:
            continue
        stats[ps["category_id"]].fp += 1


def summarize(stats: dict[int, ClassStats], categories: dict[int, dict]) -> PQResult:
    per_class, summary = {}, {}
    for cat, info in categories.items():
        st = stats.get(cat, ClassStats())
        pq, sq, rq = st.pq()
        per_class[cat] = {
            "pq": pq,
            "sq": sq,
            "rq": rq,
            "tp": st.tp,
            "fp": st.fp,
            "fn": st.fn,
            "isthing": bool(info.get("isthing", 1)),
            "name": info.get("name", str(cat)),
        }
    for split, keep in (("All", None), ("Things", True), ("Stuff", False)):
        rows = [
            v
            for c, v in per_class.items()
            if (keep is None or v["isthing"] == keep) and v["tp"] + v["fp"] + v["fn"] > 0
        ]
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

    def process(
        self,
        gt: np.ndarray,
        gt_segments: dict[int, dict],
        pred: np.ndarray,
        pred_segments: dict[int, dict],
        where: str = "",
    ) -> None:
        pq_image(gt, gt_segments, pred, pred_segments, self.categories, self.stats, where)

    def evaluate(self) -> PQResult:
        return summarize(self.stats, self.categories)


def _read_ids(uri: str, what: str) -> np.ndarray:
    """A panoptic PNG's segment ids; a missing or undecodable file raises naming it and ``what`` it is."""
    try:
        img = uio.decode_image(uio.read_bytes(uri), uri)
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: missing panoptic PNG ({what})") from None
    except ValueError as err:
        raise ValueError(f"{err} ({what})") from None
    return rgb2id(np.asarray(img if img.mode == "RGB" else img.convert("RGB")))


def _segments(ann: dict, source: str, where: str) -> dict[int, dict]:
    infos = ann.get("segments_info")
    if not isinstance(infos, list):
        raise ValueError(f"{source}: {where}: 'segments_info' must be a list, got {type(infos).__name__}")
    out = {}
    for k, seg in enumerate(infos):
        for key in ("id", "category_id"):
            if not isinstance(seg, dict) or not isinstance(seg.get(key), int):
                raise ValueError(f"{source}: {where}, segments_info[{k}]: '{key}' is missing or not an integer")
        out[seg["id"]] = seg
    return out


def _annotations(doc: dict, source: str) -> list[dict]:
    anns = doc.get("annotations")
    if not isinstance(anns, list):
        raise ValueError(f"{source}: 'annotations' is missing or not a list")
    for k, ann in enumerate(anns):
        for key in ("image_id", "file_name", "segments_info"):
            if not isinstance(ann, dict) or key not in ann:
                raise ValueError(f"{source}: annotations[{k}]: '{key}' is missing")
    return anns


def pq_from_files(
    gt_json: str, gt_folder: str, pred_json: str, pred_folder: str, threads: int | None = None
) -> PQResult:
    """PQ from the official files. PNGs are decoded in a thread pool (Pillow releases the GIL while
    decoding), accumulation stays in order, so results do not depend on ``threads``. Malformed input
    (invalid JSON, a missing key, an undecodable or resized PNG) raises ``ValueError`` naming the file and
    the image id."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    gt_doc, pred_doc = uio.read_json(gt_json), uio.read_json(pred_json)
    if not isinstance(gt_doc.get("categories"), list):
        raise ValueError(f"{gt_json}: 'categories' is missing or not a list")
    categories = {c["id"]: c for c in gt_doc["categories"]}
    preds = {a["image_id"]: a for a in _annotations(pred_doc, pred_json)}
    jobs = []
    for ann in _annotations(gt_doc, gt_json):
        if ann["image_id"] not in preds:
            raise ValueError(f"{pred_json}: no prediction for image_id {ann['image_id']}")
        p = preds[ann["image_id"]]
        where = f"image_id {ann['image_id']}"
        jobs.append(
            (
                ann,
                p,
                uio.join(gt_folder, ann["file_name"]),
                uio.join(pred_folder, p["file_name"]),
                _segments(ann, gt_json, where),
                _segments(p, pred_json, where),
            )
        )
    ev = PQEvaluator(categories)

    def load(job):
        where = f"image_id {job[0]['image_id']}"
        return _read_ids(job[2], f"ground truth of {where}"), _read_ids(job[3], f"prediction for {where}")

    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        for job, (gt, pred) in zip(jobs, pool.map(load, jobs)):
            ann, p, _, pred_uri, gt_segs, pred_segs = job
            where = f"{pred_uri} (image_id {ann['image_id']})"
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{where}: the prediction is {pred.shape[1]}x{pred.shape[0]} pixels, its ground "
                    f"truth {gt.shape[1]}x{gt.shape[0]} (predictions must be at the image's size)"
                )
            ev.process(gt, gt_segs, pred, pred_segs, where=where)
    return ev.evaluate()
