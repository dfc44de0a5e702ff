"""Semantic-segmentation mIoU (detectron2 ``SemSegEvaluator`` convention, VSPW's ``Evaluator`` gives the same).

One confusion matrix ``[gt, pred]`` over the whole split on pixels whose ground truth is a
class (not the ignore label 255); IoU_c = I / (G + P - I).

Conventions for classes absent from the ground truth (both offered):
- ``"gt"`` (default; detectron2, VSPW): average over classes with at least one GT pixel; a class
  only predicted is skipped (its false-positive pixels still lower the IoU of the GT class below);
- ``"union"`` (mmseg ``IoUMetric``): average over classes with union > 0, so a class only
  predicted counts with IoU 0.

Also fwIoU, mACC and pACC as detectron2 reports them. Predictions outside [0, C) are an error
(detectron2 and VSPW would misplace or crash on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SemSegResult:
    miou: float
    fwiou: float
    macc: float
    pacc: float
    iou: np.ndarray  # C, NaN for classes outside the averaged set
    convention: str
    acc: np.ndarray | None = None  # C, per-class accuracy (recall) TP / GT pixels, NaN for classes without GT

    def table(self) -> str:
        return (
            f"mIoU {100 * self.miou:.4f}  fwIoU {100 * self.fwiou:.4f}  mACC {100 * self.macc:.4f}  "
            f"pACC {100 * self.pacc:.4f}  ({self.convention} convention)"
        )


class SemSegEvaluator:
    def __init__(self, num_classes: int, ignore_label: int = 255):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def process(self, gt: np.ndarray, pred: np.ndarray, where: str = "") -> None:
        if gt.shape != pred.shape:
            raise ValueError(f"{where}: prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        gt = gt.astype(np.int64)
        pred = pred.astype(np.int64)
        valid = gt != self.ignore_label
        bad_gt = valid & ((gt < 0) | (gt >= self.num_classes))
        if bad_gt.any():
            raise ValueError(
                f"{where}: ground-truth values {np.unique(gt[bad_gt])[:5].tolist()} are neither classes "
                f"(0..{self.num_classes - 1}) nor the ignore label {self.ignore_label}"
            )
        p = pred[valid]
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(
                f"{where}: predicted values outside 0..{self.num_classes - 1}: "
                f"{np.unique(p[(p < 0) | (p >= self.num_classes)])[:5].tolist()}"
            )
        self.conf += np.bincount(self.num_classes * gt[valid] + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def merge(self, other: SemSegEvaluator) -> None:
        """Add another evaluator's counts (of other images): as if this one had processed them too."""
        self.conf += other.conf

    def evaluate(self, convention: str = "gt") -> SemSegResult:
        if convention not in ("gt", "union"):
            raise ValueError(f"convention must be 'gt' or 'union', got {convention!r}")
        tp = np.diag(self.conf).astype(float)
        pos_gt = self.conf.sum(1).astype(float)
        pos_pred = self.conf.sum(0).astype(float)
        union = pos_gt + pos_pred - tp
        acc_valid = pos_gt > 0
        iou_valid = acc_valid & (union > 0) if convention == "gt" else union > 0
        iou = np.full(self.num_classes, np.nan)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]
        miou = float(np.sum(iou[iou_valid]) / max(np.sum(iou_valid), 1)) if iou_valid.any() else float("nan")
        weights = pos_gt / max(pos_gt.sum(), 1)
        fw_valid = acc_valid & (union > 0)
        fwiou = float(np.sum(tp[fw_valid] / union[fw_valid] * weights[fw_valid]))
        acc = np.full(self.num_classes, np.nan)
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        macc = float(np.mean(acc[acc_valid])) if acc_valid.any() else float("nan")
        pacc = float(tp.sum() / max(pos_gt.sum(), 1))
        return SemSegResult(miou, fwiou, macc, pacc, iou, convention, acc)
