"""DAVIS-2017 semi-supervised J&F, as davisvideochallenge/davis2017-evaluation.

Per sequence the first and last frames are dropped; per object and frame J = IoU (1 when the
union is empty; void not excluded) and F = boundary F-measure (boundaries by ``seg2bmap``,
matched within ``ceil(0.008 * ||(H, W)||)`` px by dilation with a disk); per object Mean =
nanmean, Recall = mean(value > 0.5), Decay = mean(first quarter) - mean(last quarter) (bins of
``round(linspace(1, N, 5)) - 1`` that share endpoints); global numbers average over objects and
J&F = (J-Mean + F-Mean) / 2. Objects are 1..max id of the GT first frame; a prediction with a
higher id is an error (the official script exits); missing objects count as empty masks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation

from omg.utils import io as uio


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(pred.shape))
    fg, gb = seg2bmap(pred), seg2bmap(gt)
    se = disk(bound_pix)
    fg_dil = binary_dilation(fg, structure=se)
    gt_dil = binary_dilation(gb, structure=se)
    n_fg, n_gt = fg.sum(), gb.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = float((fg & gt_dil).sum() / n_fg)
        recall = float((gb & fg_dil).sum() / n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def j_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    return 1.0 if np.isclose(union, 0) else float(inter / union)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


@dataclass
class JFResult:
    summary: dict[str, float]
    per_object: dict[str, dict[str, float]]

    def table(self) -> str:
        s = self.summary
        return (
            "J&F-Mean {jf:.6f}  J-Mean {jm:.6f}  J-Recall {jr:.6f}  J-Decay {jd:.6f}  F-Mean {fm:.6f}  "
            "F-Recall {fr:.6f}  F-Decay {fd:.6f}"
        ).format(
            jf=s["J&F-Mean"],
            jm=s["J-Mean"],
            jr=s["J-Recall"],
            jd=s["J-Decay"],
            fm=s["F-Mean"],
            fr=s["F-Recall"],
            fd=s["F-Decay"],
        )


def evaluate_sequence(name: str, gt: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    """gt, pred: T x H x W index maps (255 in the GT = void, treated as background) -> per object stats."""
    if gt.shape != pred.shape:
        raise ValueError(f"sequence {name}: prediction shape {pred.shape} != ground truth {gt.shape}")
    gt = np.where(gt == 255, 0, gt)
    num_objects = int(gt[0].max())
    gt, pred = gt[1:-1], pred[1:-1]
    if pred.size and int(pred.max()) > num_objects:
        raise ValueError(
            f"sequence {name}: the prediction has object id {int(pred.max())}, the first frame only "
            f"{num_objects} objects"
        )
    out = {}
    for obj in range(1, num_objects + 1):
        j = np.array([j_measure(p == obj, g == obj) for p, g in zip(pred, gt)])
        f = np.array([f_measure(p == obj, g == obj) for p, g in zip(pred, gt)])
        jm, jr, jd = statistics(j)
        fm, fr, fd = statistics(f)
        out[f"{name}_{obj}"] = {
            "J-Mean": jm,
            "J-Recall": jr,
            "J-Decay": jd,
            "F-Mean": fm,
            "F-Recall": fr,
            "F-Decay": fd,
        }
    return out


def summarize(per_object: dict[str, dict[str, float]]) -> JFResult:
    keys = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
    s = {k: float(np.mean([o[k] for o in per_object.values()])) for k in keys}
    s["J&F-Mean"] = (s["J-Mean"] + s["F-Mean"]) / 2
    return JFResult(s, per_object)


def _read_index(uri: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(uio.read_bytes(uri))))


def davis_from_files(annotations: str, results: str, sequences: list[str] | str) -> JFResult:
    """``annotations``/``results``: folders of ``<seq>/<frame>.png``; ``sequences``: names or an ImageSets file."""
    if isinstance(sequences, str):
        sequences = [x.strip() for x in uio.read_bytes(sequences).decode().splitlines() if x.strip()]
    per_object = {}
    for seq in sequences:
        names = [n for n in uio.listdir(uio.join(annotations, seq)) if n.endswith(".png")]
        gt = np.stack([_read_index(uio.join(annotations, seq, n)) for n in names])
        preds = []
        for n in names:
            uri = uio.join(results, seq, n)
            if not uio.exists(uri):
                raise FileNotFoundError(f"{uri}: missing result for frame {n} of sequence {seq}")
            p = _read_index(uri)
            if p.ndim != 2:
                raise ValueError(f"{uri}: results must be single-channel index PNGs, got shape {p.shape}")
            preds.append(p)
        per_object.update(evaluate_sequence(seq, gt, np.stack(preds)))
    return summarize(per_object)
