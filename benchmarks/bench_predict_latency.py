"""Predictor latency on the CPU: per image (set_image + panoptic) and per video frame (vis), by variant.

    python benchmarks/bench_predict_latency.py --variants tiny_convnext convnext_base_w --image-size 512

Random weights (latency does not depend on them). Each variant at its own sizes: tiny variants
with ``ModelConfig.tiny``, others with the paper's decoder (300 queries, 9 layers). The image
is resized so that its long side is ``--image-size``; the video has ``--frames`` frames of that size.
Prints the median of ``--repeats`` runs for: backbone+pixel decoder (``set_image``), a panoptic
prediction on cached features, a new-vocabulary prediction, one interactive click, and a
video's per-frame cost for "vis".
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from common import median_seconds, write_figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["tiny_convnext", "convnext_base_w"])
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--json-out", help="also write the figures to this JSON file (used by omg_platform/pipelines/nightly.py)"
    )
    args = p.parse_args(argv)
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.variants import get_variant

    torch.manual_seed(0)
    s = args.image_size
    image = np.random.default_rng(0).integers(0, 255, (s * 3 // 4, s, 3), dtype=np.uint8)
    frames = np.random.default_rng(1).integers(0, 255, (args.frames, s * 3 // 4, s, 3), dtype=np.uint8)
    meta = {
        "label_space": {
            "names": [["circle"], ["square"], ["sky"]],
            "isthing": [True, True, False],
            "mappings": {},
            "class_agnostic": [],
        },
        "test_size": [s, s],
    }
    print(
        f"CPU, {torch.get_num_threads()} threads, image {image.shape[1]}x{image.shape[0]}, video {args.frames} frames"
    )
    figures = {}
    for name in args.variants:
        cfg = ModelConfig.tiny(name) if get_variant(name).tiny else ModelConfig(variant=name)
        pred = OMGPredictor(build_model(cfg), meta)
        t_set = median_seconds(lambda: pred.set_image(image), args.repeats)
        pred.set_image(image)
        t_pan = median_seconds(lambda: pred.predict("panoptic"), args.repeats)
        t_voc = median_seconds(lambda: pred.predict("semantic", vocabulary=["hexagon", "stuff:water"]), args.repeats)
        t_click = median_seconds(lambda: pred.predict("interactive", points=[[s // 2, s // 3]]), args.repeats)

        def video():
            pred.set_video(frames)
            pred.predict("vis")

        t_vid = median_seconds(video, max(1, args.repeats - 1))
        print(
            f"{name:22s} image: set_image {t_set * 1000:7.0f} ms, panoptic {t_pan * 1000:6.0f} ms, "
            f"new vocabulary {t_voc * 1000:5.0f} ms, click {t_click * 1000:5.0f} ms | "
            f"video: {t_vid / args.frames * 1000:6.0f} ms/frame (vis)",
            flush=True,
        )
        figures[name] = {
            "set_image_ms": t_set * 1000,
            "panoptic_ms": t_pan * 1000,
            "new_vocabulary_ms": t_voc * 1000,
            "click_ms": t_click * 1000,
            "video_ms_per_frame": t_vid / args.frames * 1000,
        }
    write_figures(args.json_out, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
