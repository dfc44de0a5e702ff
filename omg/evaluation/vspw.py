"""VSPW video semantic segmentation: mIoU (``evaluator_test.py``) and video consistency mVC_n (``VC_perclip.py``).

mIoU: :class:`omg.evaluation.semantic.SemSegEvaluator` over all frames of all videos, on the
*reduced* ground truth (0..123, 255 ignored; the reduction happens in the reader).

mVC_n (n = 8, 16): for each video with more than n frames and each start i in [0, T - n) (the
last possible window is not used — the official script's off-by-one, kept), C_gt = pixels whose
GT label is the same in frames i..i+n-1, C_pr the same for the prediction, and
VC = |C_gt & C_pr| / |C_gt|; mVC = nanmean over all windows pooled across videos.
"""

from __future__ import annotations

import numpy as np


def video_consistency_windows(gt: np.ndarray, pred: np.ndarray, n: int) -> list[float]:
    """gt, pred: T x H x W label maps of one video -> the VC of each window (empty if T <= n)."""
    t = gt.shape[0]
    out = []
    if t <= n:
        return out
    for i in range(t - n):
        g, p = gt[i : i + n], pred[i : i + n]
        c_gt = (g == g[0]).all(0)
        c_pr = (p == p[0]).all(0)
        denom = c_gt.sum()
        out.append(float((c_gt & c_pr).sum() / denom) if denom else float("nan"))
    return out


def pooled_vc(windows: list[float]) -> float:
    """mVC_n of the windows of all videos, pooled (:func:`video_consistency_windows` of each, concatenated)."""
    return float(np.nanmean(windows)) if windows else float("nan")


def mean_vc(videos: list[tuple[np.ndarray, np.ndarray]], n: int) -> float:
    return pooled_vc([v for gt, pred in videos for v in video_consistency_windows(gt, pred, n)])
