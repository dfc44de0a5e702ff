"""Interactive corrections with zoom-in against the whole image: the latency of each click and NoC.

    python benchmarks/bench_corrections.py --checkpoint runs/train/shapes_demo-*/model.pt --root runs/data/omg-shapes

A trained model with refinement (the demo model) clicked as the NoC protocol clicks (omg/evaluation/interactive.py):
the first ``--objects`` objects of omg-shapes-sam val, up to 20 clicks each, every request the object's clicks so
far (as the web page sends them; the image's state keeps the answers, so a click costs one decoder pass, and with
zoom-in a backbone pass when its crop changes). Baseline: the same model answering on the whole image
(``zoom=False``), the same minutes. Prints the first click's and the later clicks' latency (median, 90th
percentile), the clicks needed (NoC@85/90) and the ratios zoom-in / baseline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write_figures


def clicks(pred, reader, objects: int) -> tuple[list[tuple[int, float]], list[np.ndarray]]:
    """-> ((clicks so far, seconds) of every request, each object's IoU after each click)."""
    from omg.data.decode import decode_masks
    from omg.evaluation.interactive import evaluate_sample
    from omg.inference.media import load_image
    from omg.inference.objects import ObjectPrompt
    from omg.utils import io as uio

    times, ious = [], []
    for it in reader.items():
        pred.set_image(load_image(uio.join(reader.paths["images"], it["image"])))
        for gt in decode_masks(reader.load(it))[:, 0]:
            if len(ious) == objects:
                return times, ious

            def predict(cs):
                obj = ObjectPrompt([[c.x + 0.5, c.y + 0.5] for c in cs], [int(c.positive) for c in cs])
                t = time.perf_counter()
                mask = pred.predict("interactive", objects=[obj]).masks[0]
                times.append((len(cs), time.perf_counter() - t))
                return mask.astype(np.float64)

            ious.append(evaluate_sample(gt.astype(np.int32), predict, max_clicks=20)[1])
    return times, ious


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a model with refinement (model.refinement: true)")
    p.add_argument("--root", default=None, help="the omg-shapes root (default: the catalog's)")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--json-out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    from omg.data.catalog import get_entry
    from omg.data.formats import get_reader
    from omg.evaluation.interactive import noc_metrics
    from omg.inference.predictor import OMGPredictor

    reader = get_reader(get_entry("omg-shapes-sam"), "val", args.root)
    figures = {}
    for name, zoom in (("whole", False), ("zoom", True)):
        pred = OMGPredictor.from_checkpoint(args.checkpoint, zoom=zoom)
        if pred.model.refinement is None:
            raise SystemExit(f"{args.checkpoint}: the model takes no corrections (model.refinement is off)")
        times, ious = clicks(pred, reader, args.objects)
        first = [t for k, t in times if k == 1]
        later = [t for k, t in times if k > 1]
        noc = noc_metrics(ious)
        figures[name] = {
            "first_ms": 1e3 * float(np.median(first)),
            "later_ms": 1e3 * float(np.median(later)),
            "later_p90_ms": 1e3 * float(np.percentile(later, 90)),
            "requests": len(times),
            "NoC@85": noc["NoC@85"],
            "NoC@90": noc["NoC@90"],
            **{k: int(v) for k, v in pred.stats.items()},
        }
    print(f"CPU, {torch.get_num_threads()} threads; {args.objects} objects of omg-shapes-sam val")
    print(f"{'':28s} {'whole image':>12s} {'zoom-in':>10s} {'ratio':>7s}")
    for key, label in (
        ("first_ms", "first click, median ms"),
        ("later_ms", "later click, median ms"),
        ("later_p90_ms", "later click, p90 ms"),
        ("requests", "clicks made"),
        ("backbone_calls", "backbone passes"),
        ("decoder_calls", "decoder passes"),
        ("NoC@85", "NoC@85"),
        ("NoC@90", "NoC@90"),
    ):
        whole, zoom = figures["whole"][key], figures["zoom"][key]
        print(f"{label:28s} {whole:12.2f} {zoom:10.2f} {zoom / whole:6.2f}x")
    write_figures(args.json_out, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
