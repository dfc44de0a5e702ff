"""The toy cases of docs/metrics.md, rebuilt exactly (shared by the golden tests)."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- section 1: PQ
H, W = 96, 128
PQ_CATEGORIES = {
    1: {"id": 1, "name": "person", "isthing": 1},
    2: {"id": 2, "name": "car", "isthing": 1},
    3: {"id": 3, "name": "dog", "isthing": 1},
    10: {"id": 10, "name": "sky", "isthing": 0},
    11: {"id": 11, "name": "grass", "isthing": 0},
}
GT = {
    1: [
        (1001, 10, (0, 40, 0, 128), 0),
        (1002, 11, (40, 96, 0, 128), 0),
        (2001, 1, (44, 80, 10, 30), 0),
        (2002, 2, (50, 80, 60, 100), 0),
        (2003, 1, (10, 30, 100, 124), 1),
    ],
    2: [
        (1101, 11, (0, 96, 0, 128), 0),
        (2101, 3, (20, 40, 20, 50), 0),
        (2102, 3, (60, 88, 80, 120), 0),
        (2103, 2, (4, 16, 80, 120), 0),
    ],
}
PRED = {
    1: [
        (11, 10, (0, 42, 0, 128)),
        (12, 11, (42, 96, 0, 128)),
        (21, 1, (44, 80, 12, 32)),
        (22, 2, (56, 96, 76, 116)),
        (23, 1, (10, 30, 102, 128)),
        (24, 3, (4, 16, 4, 20)),
    ],
    2: [(31, 11, (0, 96, 0, 128)), (32, 3, (20, 42, 20, 52)), (33, 2, (4, 18, 80, 120)), (34, 10, (88, 96, 0, 20))],
}


def paint(segs):
    pan = np.zeros((H, W), np.int64)
    for s in segs:
        y0, y1, x0, x1 = s[2]
        pan[y0:y1, x0:x1] = s[0]
    return pan


def pq_toy():
    gt_pan = {k: paint(v) for k, v in GT.items()}
    gt_pan[1][:, 124:] = 0
    pred_pan = {k: paint(v) for k, v in PRED.items()}
    gt_segs = {
        k: {s[0]: {"id": s[0], "category_id": s[1], "iscrowd": s[3], "area": int((gt_pan[k] == s[0]).sum())} for s in v}
        for k, v in GT.items()
    }
    pred_segs = {k: {s[0]: {"id": s[0], "category_id": s[1]} for s in v} for k, v in PRED.items()}
    return gt_pan, gt_segs, pred_pan, pred_segs


def coco_ap_toy():
    """Section 2: GT = the thing segments of the section-1 GT PNGs; detections = the thing segments of the
    prediction PNGs with the RandomState(0) scores of the spec."""
    from omg.data.masks import rle_encode

    gt_pan, gt_segs, pred_pan, pred_segs = pq_toy()
    images = [{"id": k, "height": H, "width": W, "file_name": f"{k:012d}.jpg"} for k in (1, 2)]
    cats = [
        {"id": 1, "name": "person", "supercategory": "person"},
        {"id": 2, "name": "car", "supercategory": "vehicle"},
        {"id": 3, "name": "dog", "supercategory": "animal"},
    ]
    anns, aid = [], 1
    for k in (1, 2):
        for sid, s in gt_segs[k].items():
            if s["category_id"] > 3:
                continue
            m = gt_pan[k] == sid
            ys, xs = np.nonzero(m)
            anns.append(
                {
                    "id": aid,
                    "image_id": k,
                    "category_id": s["category_id"],
                    "segmentation": rle_encode(m),
                    "area": float(m.sum()),
                    "iscrowd": s["iscrowd"],
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                }
            )
            aid += 1
    rng = np.random.RandomState(0)
    dets = []
    for k, ids in ((1, (21, 22, 23, 24)), (2, (32, 33))):
        for sid in ids:
            dets.append(
                {
                    "image_id": k,
                    "category_id": pred_segs[k][sid]["category_id"],
                    "segmentation": rle_encode(pred_pan[k] == sid),
                    "score": round(rng.uniform(0.3, 0.99), 4),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def ytvis_toy():
    """Section 4: 2 videos x 4 frames, 96 x 128."""
    from omg.data.masks import rle_encode

    def m(y0, y1, x0, x1):
        a = np.zeros((96, 128), np.uint8)
        a[y0:y1, x0:x1] = 1
        return a

    N = None
    gt = [
        (1, 1, [m(10, 40, 10, 30), m(10, 40, 12, 32), m(10, 40, 14, 34), N]),
        (1, 2, [m(50, 90, 60, 120)] * 4),
        (2, 1, [N, m(20, 60, 20, 50), m(20, 60, 22, 52), m(20, 60, 24, 54)]),
        (2, 1, [m(5, 15, 100, 110)] * 4),
    ]
    dt = [
        (1, 1, 0.90, [m(10, 40, 10, 30), m(10, 40, 12, 32), m(10, 40, 14, 34), m(10, 40, 16, 36)]),
        (1, 2, 0.80, [m(50, 90, 60, 120), m(50, 90, 60, 120), N, N]),
        (1, 2, 0.30, [m(0, 10, 0, 10)] * 4),
        (2, 1, 0.70, [N, m(20, 60, 20, 50), m(20, 60, 22, 52), m(20, 60, 24, 54)]),
        (2, 1, 0.95, [m(0, 20, 0, 20)] * 4),
        (2, 2, 0.50, [m(5, 15, 100, 110)] * 4),
    ]

    def enc(masks):
        return [rle_encode(x.astype(bool)) if x is not None else None for x in masks]

    videos = [
        {"id": v, "width": 128, "height": 96, "length": 4, "file_names": [f"vid{v}/{t:05d}.jpg" for t in range(4)]}
        for v in (1, 2)
    ]
    anns = []
    for i, (v, c, masks) in enumerate(gt):
        segs = enc(masks)
        anns.append(
            {
                "id": i + 1,
                "video_id": v,
                "category_id": c,
                "iscrowd": 0,
                "segmentations": segs,
                "areas": [float(x.sum()) if x is not None else None for x in masks],
                "bboxes": [None] * 4,
                "width": 128,
                "height": 96,
                "length": 1,
            }
        )
    doc = {"videos": videos, "annotations": anns, "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]}
    res = [{"video_id": v, "category_id": c, "score": s, "segmentations": enc(masks)} for v, c, s, masks in dt]
    return doc, res


def vspw_toy():
    """Section 6: 2 videos x 20 frames, 24 x 32: {(video, t): (raw GT, reduced GT, prediction)}."""
    rng = np.random.RandomState(0)
    out = {}
    for v, name in enumerate(["toy_vid_a", "toy_vid_b"]):
        for t in range(20):
            raw = np.full((24, 32), 1, np.uint8)
            raw[12:] = 14
            raw[4:12, 2 + t % 8 : 10 + t % 8] = 61
            raw[0:2, :] = 0
            raw[:, 30:] = 255
            if v == 1:
                raw[14:22, 20:28] = 124
            red = raw.astype(np.int64) - 1
            red[(raw == 0) | (raw == 255)] = 255
            pred = np.where(red == 255, 0, red)
            pred[12, :] = 13 if t % 3 == 0 else 0
            if t in (5, 6):
                pred[4:12, 2 + t % 8 : 10 + t % 8] = 13
            if v == 0:
                pred[20:22, 0:4] = 28
            pred[rng.rand(24, 32) < 0.02] = 13
            out[name, t] = (raw, red.astype(np.uint8), pred.astype(np.uint8))
    return out


WALL, FLOOR, SKY, CAR, PERSON = 0, 13, 28, 48, 60
VPS_GT_CAT = {101: WALL, 102: FLOOR, 201: PERSON, 202: CAR}
VPS_PRED_CAT = {11: WALL, 12: FLOOR, 21: PERSON, 23: PERSON, 22: CAR, 13: SKY}


def vps_frame(v, t):
    gt = np.zeros((32, 48), np.int64)
    pr = np.zeros((32, 48), np.int64)
    gt[:16] = 101
    gt[16:] = 102
    gt[8:28, 4 + 2 * t : 12 + 2 * t] = 201
    gt[20:30, 30:44] = 202 if v == 0 else 0
    gt[:4, :4] = 0
    pr[:17] = 11
    pr[17:] = 12
    pr[8:28, 5 + 2 * t : 13 + 2 * t] = 23 if (v == 0 and t >= 4) else 21
    if v == 0 and t % 2 == 0:
        pr[20:30, 31:44] = 22
    if v == 1 and t < 3:
        pr[28:32, 40:48] = 13
    return gt, pr


def vps_toy():
    """Section 5: {video: [(ids, segments)]} for GT and prediction; segments list ids in ascending order."""
    gt, pred = {}, {}
    for v, name in enumerate(["001_toyvideo", "002_toyvideo"]):
        gt[name], pred[name] = [], []
        for t in range(8):
            g, p = vps_frame(v, t)
            gt[name].append(
                (
                    g,
                    {
                        int(i): {"category_id": VPS_GT_CAT[int(i)], "iscrowd": 0, "area": int((g == i).sum())}
                        for i in np.unique(g)
                        if i != 0
                    },
                )
            )
            pred[name].append(
                (
                    p,
                    {
                        int(i): {"category_id": VPS_PRED_CAT[int(i)], "area": int((p == i).sum())}
                        for i in np.unique(p)
                        if i != 0
                    },
                )
            )
    return gt, pred
