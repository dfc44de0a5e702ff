"""Interactive segmentation metrics.

**NoC@85 / NoC@90** (RITM protocol, SamsungLabs/ritm_interactive_segmentation): clicks are
simulated from the errors — false negatives fn = gt & ~pred & ~ignore, false positives
fp = ~gt & pred & ~ignore; each is 1-px zero-padded and Euclidean-distance-transformed
(exact), clicked pixels are zeroed, and the next click is positive iff max(dt_fn) > max(dt_fp)
(a tie gives a negative click), at the first row-major pixel of the maximum. After each click
``pred = prob > 0.49`` and IoU is taken over non-ignored pixels (GT -1 = ignore) in float64 as
RITM's ``utils.get_iou`` (an IoU of exactly 0.90 stops); stop at IoU >= 0.90 (after at least
1 click) or 20 clicks. NoC@t = mean over objects of the first click reaching t, or 20 when never
reached; NoC≥20@t = the number of objects that never reach t within 20 clicks (``over_max``).
Reported at t = 0.80, 0.85, 0.90.

**Single-point mIoU** (OMG-Seg's COCO-SAM protocol): one prompt per non-crowd segment at the
mask's interior "centre", the argmax of the distance transform of the 1-px zero-padded mask
(the evaluation takes it on the mask rescaled to the network's input size, an integer pixel
there, as the released ``get_center_coords``; ``omg.evaluation.evaluators.centre_prompts``);
IoU = |gt & pred| / (|gt | pred| + 1e-8); mIoU = mean over all segments of the dataset.
Deviation: the released code takes that argmax from kornia's approximate distance transform;
here it is the exact EDT (scipy), which can pick a neighbouring pixel (the metrics spec lists
both points for its toy case; the IoUs agree there).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from omg.utils.clicks import Click, Clicker, edt_padded


def iou_with_ignore(gt: np.ndarray, pred: np.ndarray) -> float:
    valid = gt != -1
    obj = gt == 1
    inter = np.logical_and(np.logical_and(pred, obj), valid).sum()
    union = np.logical_and(np.logical_or(pred, obj), valid).sum()
    return float(inter / union) if union else 1.0


def evaluate_sample(
    gt: np.ndarray,
    predict: Callable[[list[Click]], np.ndarray],
    max_iou_thr: float = 0.90,
    pred_thr: float = 0.49,
    min_clicks: int = 1,
    max_clicks: int = 20,
) -> tuple[list[Click], np.ndarray]:
    """``predict(clicks) -> H x W probabilities``. Returns the clicks and the IoU after each."""
    clicker = Clicker(gt)
    pred = np.zeros(gt.shape, dtype=bool)
    ious = []
    for k in range(max_clicks):
        clicker.next_click(pred)
        pred = predict(clicker.clicks) > pred_thr
        iou = iou_with_ignore(gt, pred)
        ious.append(iou)
        if iou >= max_iou_thr and k + 1 >= min_clicks:
            break
    return clicker.clicks, np.array(ious, dtype=np.float64)


NOC_THRESHOLDS = (0.80, 0.85, 0.90)


def noc(all_ious: list[np.ndarray], thresholds=NOC_THRESHOLDS, max_clicks: int = 20) -> dict[float, dict[str, float]]:
    """-> {threshold: {"noc": mean clicks, "over_max": objects never reaching it within ``max_clicks``}}
    (RITM ``compute_noc_metric``: an object that reaches the threshold at exactly the last click counts as
    ``max_clicks`` clicks and in ``over_max``, as there)."""
    out = {}
    for thr in thresholds:
        scores = np.array(
            [int(np.argmax(np.asarray(a) >= thr)) + 1 if np.any(np.asarray(a) >= thr) else max_clicks for a in all_ious]
        )
        out[thr] = {
            "noc": float(scores.mean()) if len(scores) else float("nan"),
            "over_max": int((scores == max_clicks).sum()),
        }
    return out


def noc_metrics(all_ious: list[np.ndarray], max_clicks: int = 20) -> dict[str, float]:
    """The flat figures the reports carry: NoC@80/85/90 and NoC≥20@85/90 (objects never reaching it)."""
    n = noc(all_ious, max_clicks=max_clicks)
    out = {f"NoC@{round(t * 100)}": v["noc"] for t, v in n.items()}
    out.update({f"NoC>={max_clicks}@{round(t * 100)}": float(n[t]["over_max"]) for t in (0.85, 0.90)})
    return out


def miou_by_click(all_ious: list[np.ndarray], max_clicks: int = 20) -> list[float]:
    """The mean IoU over objects after click 1, 2, ..., ``max_clicks`` (the curve RITM plots): an object whose
    simulation stopped (IoU >= 0.90) keeps its last IoU for the later clicks."""
    if not all_ious:
        return []
    padded = np.array(
        [np.pad(np.asarray(a, float)[:max_clicks], (0, max_clicks - min(len(a), max_clicks)), "edge") for a in all_ious]
    )
    return padded.mean(0).tolist()


def center_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel deepest inside the mask (exact EDT of the 1-px zero-padded mask; first row-major max)."""
    dt = edt_padded(mask.astype(bool))
    idx = int(np.argmax(dt))
    w = mask.shape[1]
    return idx % w, idx // w


def point_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    inter = np.logical_and(gt, pred).sum()
    union = np.logical_or(gt, pred).sum()
    return float(inter / (union + 1e-8))


class PointMIoU:
    """reset / process / evaluate for the single-point protocol: mean IoU over all segments."""

    def __init__(self):
        self.ious: list[float] = []

    def reset(self) -> None:
        self.ious = []

    def process(self, gts: np.ndarray, preds: np.ndarray) -> None:
        """gts, preds: K x H x W bool (prompt k was placed at ``center_point(gts[k])``)."""
        for g, p in zip(gts, preds):
            self.ious.append(point_iou(g, p))

    def merge(self, other: PointMIoU) -> None:
        """Append another evaluator's IoUs (of the images after this one's)."""
        self.ious.extend(other.ious)

    def evaluate(self) -> dict[str, float]:
        return {"miou": float(np.mean(self.ious)) if self.ious else float("nan"), "count": len(self.ious)}
