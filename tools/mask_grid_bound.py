"""How well a mask on the model's stride-4 grid can fit each segment of a panoptic split: every non-crowd segment
area-averaged onto the grid, upsampled bilinearly to the image and thresholded at 0.5 (as the predictor turns the
grid's logits into a mask), then its IoU with the segment. The interactive NoC@85 / NoC@90 of a model whose masks
live on that grid cannot count a segment below the threshold as reached (docs/experiments.md, "Interactive
refinement on the demo").

    python tools/mask_grid_bound.py runs/data/omg-shapes [--split val] [--stride 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def segment_bounds(root: Path, split: str, stride: int) -> np.ndarray:
    doc = json.loads((root / "annotations" / f"panoptic_{split}.json").read_text())
    ious = []
    for ann in doc["annotations"]:
        png = root / "annotations" / f"panoptic_{split}" / ann["file_name"]
        rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        h, w = ids.shape
        for seg in ann["segments_info"]:
            gt = ids == seg["id"]
            if seg.get("iscrowd") or not gt.any():
                continue
            grid = F.adaptive_avg_pool2d(
                torch.from_numpy(gt.astype(np.float32))[None, None], (h // stride, w // stride)
            )
            up = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
            ious.append((up & gt).sum() / (up | gt).sum())
    return np.array(ious)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="a dataset root with annotations/panoptic_<split>.json (omg data synth writes one)")
    p.add_argument("--split", default="val")
    p.add_argument("--stride", type=int, default=4)
    args = p.parse_args()
    ious = segment_bounds(Path(args.root), args.split, args.stride)
    print(
        f"{len(ious)} segments, stride {args.stride}: best IoU mean {ious.mean():.3f}, reaching 0.85: "
        f"{np.mean(ious >= 0.85):.1%}, reaching 0.90: {np.mean(ious >= 0.90):.1%}; the first 20: "
        f"{' '.join(f'{v:.2f}' for v in ious[:20])}"
    )


if __name__ == "__main__":
    main()
