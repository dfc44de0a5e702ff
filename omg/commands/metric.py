"""``omg metric NAME ...``: any metric from official-format files on disk, for this project's predictions
or any other model's. Prints a table like the official tools; ``--json-out FILE`` writes every figure."""

from __future__ import annotations

import argparse
import io
import json
import math

import numpy as np
from PIL import Image

from omg.utils import io as uio
from omg.utils.errors import describe
from omg.utils.log import get_logger

log = get_logger(__name__)


def _clean(obj):
    """JSON-safe: NaN -> null, numpy -> python, int keys -> str."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def _png(uri: str) -> np.ndarray:
    return np.array(uio.decode_image(uio.read_bytes(uri), uri))


def run_pq(a) -> dict:
    from omg.evaluation.panoptic import pq_from_files

    r = pq_from_files(a.gt_json, a.gt_folder, a.pred_json, a.pred_folder)
    print(r.table())
    return {"summary": r.summary, "per_class": r.per_class}


def _ap_out(a, r) -> dict:
    print(r.table())
    if r.ignored:
        log.warning(
            f"{r.ignored} result(s) of a category the ground truth does not list "
            "were ignored, as pycocotools does (--strict to fail on them)"
        )
    return {"stats": r.stats, "per_class": r.per_class, "ignored_results": r.ignored}


def run_coco_segm(a) -> dict:
    from omg.evaluation.coco_ap import coco_segm

    return _ap_out(a, coco_segm(a.gt_json, a.results, tuple(a.max_dets), strict=a.strict))


def run_ytvis(a) -> dict:
    from omg.evaluation.ytvis import ytvis_ap

    return _ap_out(a, ytvis_ap(a.gt_json, a.results, tuple(a.max_dets), strict=a.strict))


def run_vps(a, which: str) -> dict:
    from omg.evaluation.vps import vps_from_files

    vpq_r, stq_r, _ = vps_from_files(a.gt_json, a.gt_dir, a.pred_json, a.pred_dir)
    if which == "vpq":
        print(vpq_r.table())
        return {
            "per_k": {k: {"summary": r.summary, "per_class": r.per_class} for k, r in vpq_r.per_k.items()},
            "final_k12468": vpq_r.mean(),
            "omg_seg_k1246": vpq_r.mean((1, 2, 4, 6)),
        }
    print(stq_r.table())
    return {"stq": stq_r.stq, "aq": stq_r.aq, "sq": stq_r.sq, "per_sequence": stq_r.per_sequence}


def _pairs(gt_dir: str, pred_dir: str, names: list[str]):
    for rel in names:
        pred_uri = uio.join(pred_dir, rel)
        if not uio.exists(pred_uri):
            raise FileNotFoundError(f"{pred_uri}: missing prediction for {rel}")
        yield rel, _png(uio.join(gt_dir, rel)), _png(pred_uri)


def _list_pngs(root: str) -> list[str]:
    import os

    out = []
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith(".png"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return out


def run_miou(a) -> dict:
    from omg.evaluation.semantic import SemSegEvaluator

    ev = SemSegEvaluator(a.num_classes, a.ignore_label)
    for rel, gt, pred in _pairs(a.gt_dir, a.pred_dir, _list_pngs(a.gt_dir)):
        ev.process(gt, pred, where=uio.join(a.pred_dir, rel))
    r = ev.evaluate(a.convention)
    print(r.table())
    return {
        "miou": r.miou,
        "fwiou": r.fwiou,
        "macc": r.macc,
        "pacc": r.pacc,
        "iou": r.iou,
        "acc": r.acc,
        "convention": a.convention,
    }


def run_vspw(a) -> dict:
    from omg.data.formats.vspw import reduce_labels
    from omg.evaluation.semantic import SemSegEvaluator
    from omg.evaluation.vspw import mean_vc

    names = (
        [x.strip() for x in uio.read_bytes(a.list).decode().splitlines() if x.strip()]
        if a.list
        else uio.listdir(uio.join(a.data_dir, "data"))
    )
    ev = SemSegEvaluator(a.num_classes)
    videos = []
    for vid in names:
        mask_dir = uio.join(a.data_dir, "data", vid, "mask")
        frames = [n for n in uio.listdir(mask_dir) if n.endswith(".png")]
        gts, preds = [], []
        for rel, gt, pred in _pairs(mask_dir, uio.join(a.pred_dir, vid), frames):
            gt = reduce_labels(gt)
            ev.process(gt, pred, where=uio.join(a.pred_dir, vid, rel))
            gts.append(gt)
            preds.append(pred)
        videos.append((np.stack(gts), np.stack(preds)))
    r = ev.evaluate()
    out = {
        "miou": r.miou,
        "pacc": r.pacc,
        "macc": r.macc,
        "fwiou": r.fwiou,
        "vc8": mean_vc(videos, 8),
        "vc16": mean_vc(videos, 16),
        "iou": r.iou,
        "acc": r.acc,
    }
    print(
        f"mIoU {out['miou']:.10f}  pixAcc {out['pacc']:.10f}  Acc_class {out['macc']:.10f}  fwIoU {out['fwiou']:.10f}\n"
        f"mVC8 {out['vc8']:.10f}  mVC16 {out['vc16']:.10f}"
    )
    return out


def run_davis(a) -> dict:
    from omg.evaluation.davis import davis_from_files

    r = davis_from_files(a.annotations, a.results, a.imageset)
    print(r.table())
    return {"summary": r.summary, "per_object": r.per_object}


def _noc_from_clicks(uri: str) -> dict:
    """NoC from the per-object IoU after each simulated click (``omg eval``'s ``interactive_clicks.json``; RITM
    keeps the same arrays as ``all_ious``)."""
    from omg.evaluation.interactive import noc_metrics

    records = uio.read_json(uri)
    if not isinstance(records, list):
        raise ValueError(f"{uri}: expected a list of {{image_id, segment_id, ious: [...]}}")
    all_ious = []
    for i, r in enumerate(records):
        ious = r.get("ious") if isinstance(r, dict) else None
        if not isinstance(ious, list) or not ious or not all(isinstance(v, (int, float)) for v in ious):
            raise ValueError(
                f"{uri}: record {i}, field 'ious': expected a non-empty list of numbers (the IoU after each click)"
            )
        all_ious.append(np.asarray(ious, dtype=np.float64))
    out = noc_metrics(all_ious)
    print(
        "  ".join(f"{k} {v:.2f}" if k.startswith("NoC@") else f"{k} {v:g}" for k, v in out.items())
        + f"  over {len(all_ious)} objects"
    )
    return {**out, "objects": len(all_ious)}


def run_interactive(a) -> dict:
    """Single-point mIoU: one predicted mask per non-crowd GT segment, prompted at its centre; with
    ``--clicks``, NoC from the click simulation's per-object IoUs."""
    from omg.data.masks import rgb2id, rle_decode
    from omg.evaluation.interactive import PointMIoU

    noc_out = _noc_from_clicks(a.clicks) if a.clicks else {}
    if a.results is None:
        if not a.clicks:
            raise ValueError("give --results (single-point mIoU), --clicks (NoC) or both")
        return noc_out
    if a.gt_json is None or a.gt_folder is None:
        raise ValueError("--results needs --gt-json and --gt-folder")
    gt = uio.read_json(a.gt_json)
    preds = uio.read_json(a.results)
    by_key = {}
    for i, p in enumerate(preds):
        key = (p.get("image_id"), p.get("segment_id"))
        if None in key:
            raise ValueError(f"{a.results}: record {i} needs image_id and segment_id")
        by_key[key] = p
    ev = PointMIoU()
    for ann in gt["annotations"]:
        ids = rgb2id(
            np.array(Image.open(io.BytesIO(uio.read_bytes(uio.join(a.gt_folder, ann["file_name"])))).convert("RGB"))
        )
        for s in ann["segments_info"]:
            if s.get("iscrowd", 0):
                continue
            key = (ann["image_id"], s["id"])
            if key not in by_key:
                raise ValueError(f"{a.results}: no prediction for image_id {key[0]}, segment_id {key[1]}")
            pred = rle_decode(by_key[key]["segmentation"])
            if pred.shape != ids.shape:
                raise ValueError(f"{a.results}: image_id {key[0]} segment {key[1]}: mask {pred.shape} != {ids.shape}")
            ev.process((ids == s["id"])[None], pred[None])
    r = ev.evaluate()
    print(f"single-point mIoU {r['miou']:.6f} over {r['count']} segments")
    return {**r, **noc_out}


METRICS = {
    "pq": (
        run_pq,
        "PQ/SQ/RQ (COCO panopticapi; also Cityscapes panoptic)",
        [("--gt-json", True), ("--gt-folder", True), ("--pred-json", True), ("--pred-folder", True)],
    ),
    "coco-segm": (
        run_coco_segm,
        "COCO mask AP (pycocotools COCOeval segm)",
        [("--gt-json", True), ("--results", True)],
    ),
    "ytvis": (run_ytvis, "YouTube-VIS AP/AR", [("--gt-json", True), ("--results", True)]),
    "vpq": (
        lambda a: run_vps(a, "vpq"),
        "VIPSeg VPQ (windows 1, 2, 4, 6, 8)",
        [("--gt-json", True), ("--gt-dir", True), ("--pred-json", True), ("--pred-dir", True)],
    ),
    "stq": (
        lambda a: run_vps(a, "stq"),
        "VIPSeg STQ (AQ, SQ)",
        [("--gt-json", True), ("--gt-dir", True), ("--pred-json", True), ("--pred-dir", True)],
    ),
    "miou": (
        run_miou,
        "semantic mIoU over label PNGs (same relative paths)",
        [("--gt-dir", True), ("--pred-dir", True)],
    ),
    "vspw": (
        run_vspw,
        "VSPW mIoU and mVC8/mVC16 (raw GT under DATA_DIR/data/<video>/mask)",
        [("--data-dir", True), ("--pred-dir", True), ("--list", False)],
    ),
    "davis": (
        run_davis,
        "DAVIS-17 semi-supervised J&F",
        [("--annotations", True), ("--results", True), ("--imageset", True)],
    ),
    "interactive": (
        run_interactive,
        "single-point mIoU (OMG-Seg COCO-SAM protocol) and NoC@80/85/90, "
        "NoC>=20@85/90 (RITM click simulation, from --clicks)",
        [("--gt-json", False), ("--gt-folder", False), ("--results", False), ("--clicks", False)],
    ),
}


def register(sub) -> None:
    p = sub.add_parser(
        "metric",
        help="compute a metric from official-format files",
        description="Compute a metric from official-format files on disk (any model's predictions). "
        "Prints a table; --json-out writes every figure (per class too). Writes nothing else.",
    )
    msub = p.add_subparsers(dest="metric", metavar="NAME")
    for name, (_, help_text, args) in METRICS.items():
        m = msub.add_parser(name, help=help_text, description=help_text + ".")
        for flag, required in args:
            m.add_argument(flag, required=required)
        if name in ("coco-segm", "ytvis"):
            m.add_argument(
                "--max-dets",
                type=int,
                nargs=3,
                default=[1, 10, 100],
                metavar="N",
                help="maxDets, ascending (default pycocotools' 1 10 100; OMG-Seg/mmdet use 100 300 1000 "
                "for COCO); the recalls are reported as AR<N>",
            )
            m.add_argument(
                "--strict",
                action="store_true",
                help="fail on a result whose category the ground truth does not list (default: ignore "
                "and count it, as pycocotools does)",
            )
        if name == "miou":
            m.add_argument("--num-classes", type=int, required=True)
            m.add_argument("--ignore-label", type=int, default=255)
            m.add_argument(
                "--convention",
                choices=["gt", "union"],
                default="gt",
                help="classes averaged: with GT pixels (detectron2/VSPW) or with union > 0 (mmseg)",
            )
        if name == "vspw":
            m.add_argument("--num-classes", type=int, default=124)
        m.add_argument("--json-out", help="write every figure as JSON here")
        m.set_defaults(func=metric_main)


def metric_main(args: argparse.Namespace) -> int:
    fn = METRICS[args.metric][0]
    try:
        result = fn(args)
    except FileNotFoundError as err:
        log.error(err if err.errno is None else describe(err))
        return 2
    except (ValueError, KeyError) as err:
        log.error(err)
        return 2
    if args.json_out:
        try:
            uio.write_bytes(args.json_out, json.dumps(_clean(result), indent=1).encode())
        except OSError as err:
            log.error(f"cannot write --json-out: {describe(err)}")
            return 1
        print(f"wrote {args.json_out}")
    return 0
