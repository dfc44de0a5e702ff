"""ONNX Runtime vs PyTorch eager on the CPU: the image encoder and one click, by variant (baseline: eager).

    python benchmarks/bench_export.py --variants tiny_convnext convnext_base_w convnext_large_d_320 --image-size 512

Random weights (time does not depend on them). Tiny variants at ``ModelConfig.tiny``, the others with the paper's
decoder (300 queries, 9 layers). Each variant is exported to ONNX at ``--image-size`` square (omg.export.graphs),
then the median of ``--repeats`` runs is taken for the ``image_encoder`` graph and the ``prompt_decoder`` graph
with one point (a click on cached features), eager vs ONNX Runtime, both on the same inputs and thread count;
the largest output difference is printed beside the ratio (parity outside CI for the paper variants).
``--formats torch-export`` does the same with the loaded ``torch.export`` program in place of ONNX Runtime.
Target (issue "Export with verified parity"): ORT <= 0.7x eager time for the image path.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import median_seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["tiny_convnext", "convnext_base_w"])
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--formats",
        nargs="+",
        default=["onnx"],
        choices=["onnx", "torch-export"],
        help="torch-export: the loaded torch.export program in place of ONNX Runtime",
    )
    p.add_argument("--json-out")
    args = p.parse_args(argv)
    from omg.export.graphs import example_inputs, export, graph_modules
    from omg.export.runtime import _Graph
    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.variants import get_variant

    threads = torch.get_num_threads()
    rows = []
    size = (args.image_size, args.image_size)
    for name in args.variants:
        torch.manual_seed(0)
        cfg = (
            ModelConfig.tiny(name) if get_variant(name).clip_model.startswith("omg_tiny") else ModelConfig(variant=name)
        )
        model = build_model(cfg).eval()
        for fmt in args.formats:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                export(model, {"test_size": [args.image_size, args.image_size]}, tmp, fmt, size)
                export_s = time.perf_counter() - t0
                inputs = example_inputs(model, size, num_classes=8, num_synonyms=2, num_prompts=1)
                modules = graph_modules(model, size)
                row = {
                    "variant": name,
                    "format": fmt,
                    "image_size": args.image_size,
                    "threads": threads,
                    "export_s": round(export_s, 1),
                }
                ext = "onnx" if fmt == "onnx" else "pt2"
                for graph, label in (("image_encoder", "image"), ("prompt_decoder", "click")):
                    g = _Graph(Path(tmp), f"{graph}.{ext}", fmt, threads)
                    with torch.no_grad():
                        eager = median_seconds(lambda: modules[graph](*inputs[graph]), args.repeats)
                        ref = modules[graph](*inputs[graph])
                    exported = median_seconds(lambda: g(*inputs[graph]), args.repeats)
                    got = g(*inputs[graph])
                    diff = max(float((a - b).abs().max()) for a, b in zip(got, ref))
                    row.update(
                        {
                            f"{label}_eager_ms": round(eager * 1e3, 1),
                            f"{label}_exported_ms": round(exported * 1e3, 1),
                            f"{label}_ratio": round(exported / eager, 3),
                            f"{label}_max_abs_diff": diff,
                        }
                    )
                rows.append(row)
                runner = "ORT" if fmt == "onnx" else "torch.export"
                print(
                    f"{name:>22} {args.image_size}^2 {fmt}: image encoder eager {row['image_eager_ms']:.0f} ms, "
                    f"{runner} "
                    f"{row['image_exported_ms']:.0f} ms (ratio {row['image_ratio']:.2f}, max |diff| "
                    f"{row['image_max_abs_diff']:.1e}); one click eager {row['click_eager_ms']:.1f} ms, {runner} "
                    f"{row['click_exported_ms']:.1f} ms (ratio {row['click_ratio']:.2f}, max |diff| "
                    f"{row['click_max_abs_diff']:.1e}); export {export_s:.0f}s",
                    flush=True,
                )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
