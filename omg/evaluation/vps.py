"""Video panoptic quality: VPQ (VIPSeg-Dataset ``eval_vpq_vspw.py``) and STQ (its copy of deeplab2's
``STQuality``), on the official VIPSeg files or on arrays.

A video is a list of frames, each ``(ids, segments)``: an H x W id map (0 = VOID) and
``{id: {"category_id", "iscrowd", "area"}}``; a segment id keeps its value across frames.

VPQ_k: every window of k consecutive frames (stride 1) of every video is stacked into one
image; panoptic quality is accumulated over all windows (GT tube areas = the sum of the JSON
areas, prediction areas from the PNGs; TP iff IoU > 0.5); VPQ_k = mean over classes with
TP + FP + FN > 0. The official final number is the mean over k in {1, 2, 4, 6, 8}; OMG-Seg's
setup averages k in {1, 2, 4, 6}: both are reported, labelled.

STQ = sqrt(AQ x SQ) with labels ``category << 16 | instance``, instance ids renumbered per video
in order of first appearance in the JSON (GT and prediction separately), void = 255 / 255.
AQ is computed on GT thing pixels that are not crowd (instance 0 — so a thing listed first in
a video is treated as crowd, a quirk of the official script, kept); SQ is the semantic mIoU
over classes with union > 0 of the confusion matrix that keeps a void column (predicted 255 on
labelled GT counts as a class with IoU 0 — also kept).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from omg.data.masks import rgb2id
from omg.evaluation.panoptic import ClassStats, PQResult, pq_image, summarize
from omg.utils import io as uio

WINDOWS = (1, 2, 4, 6, 8)
Frame = tuple[np.ndarray, dict[int, dict]]


@dataclass
class VPQResult:
    per_k: dict[int, PQResult]

    def mean(self, ks=WINDOWS) -> dict[str, float]:
        ks = [k for k in ks if k in self.per_k]
        return {
            split: float(np.mean([self.per_k[k].summary[split]["pq"] for k in ks]))
            for split in ("All", "Things", "Stuff")
        }

    def table(self) -> str:
        lines = [f"{'k':>3s} | {'VPQ':>8s} {'thing':>8s} {'stuff':>8s}"]
        for k, r in self.per_k.items():
            s = r.summary
            lines.append(
                f"{k:3d} | {100 * s['All']['pq']:8.4f} {100 * s['Things']['pq']:8.4f} {100 * s['Stuff']['pq']:8.4f}"
            )
        for label, ks in (("final (k=1,2,4,6,8)", WINDOWS), ("OMG-Seg (k=1,2,4,6)", (1, 2, 4, 6))):
            m = self.mean(ks)
            lines.append(
                f"{label}: {100 * m['All']:.4f} / thing {100 * m['Things']:.4f} / stuff {100 * m['Stuff']:.4f}"
            )
        return "\n".join(lines)


def _window(frames: list[Frame], t: int, k: int, gt: bool) -> tuple[np.ndarray, dict[int, dict]]:
    ids = np.concatenate([f[0] for f in frames[t : t + k]], axis=0)
    segs: dict[int, dict] = {}
    for f in frames[t : t + k]:
        for sid, s in f[1].items():
            if sid not in segs:
                segs[sid] = dict(s)
                if gt:
                    segs[sid]["area"] = 0
            if gt:
                segs[sid]["area"] += s["area"]
    return ids, segs


def vpq(
    gt_videos: dict[str, list[Frame]], pred_videos: dict[str, list[Frame]], categories: dict[int, dict], windows=WINDOWS
) -> VPQResult:
    per_k = {}
    for k in windows:
        stats: dict[int, ClassStats] = defaultdict(ClassStats)
        for vid, gframes in gt_videos.items():
            pframes = pred_videos[vid]
            if len(pframes) != len(gframes):
                raise ValueError(f"video {vid}: {len(pframes)} predicted frames for {len(gframes)} ground-truth frames")
            for t in range(len(gframes) - k + 1):
                g, gs = _window(gframes, t, k, gt=True)
                p, ps = _window(pframes, t, k, gt=False)
                pq_image(g, gs, p, ps, categories, stats, where=f"video {vid}, frames {t}..{t + k - 1}")
        per_k[k] = summarize(stats, categories)
    return VPQResult(per_k)


# ----------------------------------------------------------------------------- STQ


def _stq_labels(frames: list[Frame]) -> list[np.ndarray]:
    """Per frame: category << 16 | renumbered instance; void 255 << 16 | 255."""
    renum: dict[int, int] = {}
    cats: dict[int, int] = {}
    for _, segs in frames:
        for sid, s in segs.items():
            if sid not in renum:
                renum[sid] = len(renum)
                cats[sid] = s["category_id"]
    out = []
    for ids, _ in frames:
        lab = np.full(ids.shape, (255 << 16) + 255, dtype=np.int64)
        for sid, n in renum.items():
            lab[ids == sid] = (cats[sid] << 16) + n
        out.append(lab)
    return out


@dataclass
class STQResult:
    stq: float
    aq: float
    sq: float
    per_sequence: dict[str, dict[str, float]]

    def table(self) -> str:
        return f"STQ {self.stq:.10f}  AQ {self.aq:.10f}  SQ(IoU) {self.sq:.10f}"


def stq(
    gt_videos: dict[str, list[Frame]],
    pred_videos: dict[str, list[Frame]],
    num_classes: int,
    things: set[int],
    ignore_label: int = 255,
    offset: int = 256**4,
) -> STQResult:
    n = num_classes
    shift = 1 << 16
    seq_conf, seq_gt, seq_pred, seq_inter = {}, {}, {}, {}
    for vid, gframes in gt_videos.items():
        pframes = pred_videos[vid]
        if len(pframes) != len(gframes):
            raise ValueError(f"video {vid}: {len(pframes)} predicted frames for {len(gframes)} ground-truth frames")
        conf = np.zeros((n + 1, n + 1), dtype=np.int64)
        gts, preds, inters = defaultdict(int), defaultdict(int), defaultdict(int)
        for y_true, y_pred in zip(_stq_labels(gframes), _stq_labels(pframes)):
            sem_t, sem_p = y_true // shift, y_pred // shift
            sem_t = np.where(sem_t != ignore_label, sem_t, n)
            sem_p = np.where(sem_p != ignore_label, sem_p, n)
            conf += np.bincount(sem_t.ravel() * (n + 1) + sem_p.ravel(), minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
            inst_t = y_true % shift
            label_mask = np.isin(sem_t, list(things))
            pred_mask = np.isin(sem_p, list(things))
            crowd = (inst_t == 0) & label_mask
            label_mask &= ~crowd
            pred_mask &= ~crowd
            for v, c in zip(*np.unique(y_pred[pred_mask], return_counts=True)):
                preds[int(v)] += int(c)
            for v, c in zip(*np.unique(y_true[label_mask], return_counts=True)):
                gts[int(v)] += int(c)
            both = label_mask & pred_mask
            for v, c in zip(*np.unique(y_true[both] * offset + y_pred[both], return_counts=True)):
                inters[int(v)] += int(c)
        seq_conf[vid], seq_gt[vid], seq_pred[vid], seq_inter[vid] = conf, gts, preds, inters
    per_seq = {}
    aq_sum, tubes = 0.0, 0
    total = np.zeros((n + 1, n + 1), dtype=np.int64)

    def miou(conf: np.ndarray) -> float:
        conf = conf.copy()
        conf[n, :] = 0  # ground-truth ignore row removed
        inter = np.diag(conf).astype(np.float64)
        unions = conf.sum(0) + conf.sum(1) - inter
        k = np.count_nonzero(unions)
        return float(np.sum(inter / np.maximum(unions, 1e-15)) / k) if k else 0.0

    for vid in gt_videos:
        outer = 0.0
        for g, gsize in seq_gt[vid].items():
            inner = 0.0
            for p, psize in seq_pred[vid].items():
                tpa = seq_inter[vid].get(offset * g + p)
                if tpa:
                    inner += tpa * (tpa / (tpa + (psize - tpa) + (gsize - tpa)))
            outer += inner / gsize
        aq_sum += outer
        tubes += len(seq_gt[vid])
        seq_aq = outer / max(len(seq_gt[vid]), 1e-15)
        seq_iou = miou(seq_conf[vid])
        total += seq_conf[vid]
        per_seq[vid] = {
            "stq": float(np.sqrt(seq_aq * seq_iou)),
            "aq": seq_aq,
            "sq": seq_iou,
            "frames": len(gt_videos[vid]),
        }
    aq = aq_sum / max(tubes, 1e-15)
    sq = miou(total)
    return STQResult(float(np.sqrt(aq * sq)), aq, sq, per_seq)


# ----------------------------------------------------------------------------- files


def _png_ids(uri: str) -> np.ndarray:
    return rgb2id(np.array(Image.open(io.BytesIO(uio.read_bytes(uri))).convert("RGB")))


def read_vipseg(json_uri: str, png_dir: str, gt: bool, order_from: dict | None = None) -> dict[str, list[Frame]]:
    """Videos of a VIPSeg panoptic JSON + PNG folder. Predictions are zipped with the GT frames by order
    (``order_from`` = the GT videos) and may omit areas; their PNGs sit at the GT file names."""
    doc = uio.read_json(json_uri)
    out = {}
    for vann in doc["annotations"]:
        vid = vann["video_id"]
        frames = []
        names = [fa["file_name"] for fa in order_from[vid]] if order_from is not None and vid in order_from else None
        if names is not None and len(names) != len(vann["annotations"]):
            raise ValueError(
                f"{json_uri}: video {vid} has {len(vann['annotations'])} predicted frames, the ground "
                f"truth {len(names)}"
            )
        for t, fa in enumerate(vann["annotations"]):
            name = names[t] if names is not None else fa["file_name"]
            ids = _png_ids(uio.join(png_dir, vid, name))
            segs = {
                s["id"]: {"category_id": s["category_id"], "iscrowd": s.get("iscrowd", 0), "area": s.get("area", 0)}
                for s in fa["segments_info"]
            }
            frames.append((ids, segs))
        out[vid] = frames
    if order_from is not None:
        missing = set(order_from) - set(out)
        if missing:
            raise ValueError(f"{json_uri}: no prediction for video(s) {sorted(missing)[:5]}")
    return out


def vps_from_files(gt_json: str, gt_dir: str, pred_json: str, pred_dir: str):
    """-> (VPQResult, STQResult, categories) from the official VIPSeg files."""
    doc = uio.read_json(gt_json)
    categories = {c["id"]: c for c in doc["categories"]}
    gt_names = {v["video_id"]: v["annotations"] for v in doc["annotations"]}
    gt = read_vipseg(gt_json, gt_dir, gt=True)
    pred = read_vipseg(pred_json, pred_dir, gt=False, order_from=gt_names)
    things = {c for c, info in categories.items() if info.get("isthing")}
    return vpq(gt, pred, categories), stq(gt, pred, max(categories) + 1, things), categories
