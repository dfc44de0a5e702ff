"""How well a model's frozen CLIP names ground-truth segments by itself: each non-crowd segment of a panoptic split,
its mask on the stride-4 grid, mask-pooled over the CLIP's stride-32 features and scored against the split's class
names, exactly as the open-vocabulary branch scores a query's mask (docs/model.md §8.4; ``clip_logits``). Without
the model's own masks and classifier in the way, this is the ceiling of what the CLIP branch can add for a class
(docs/experiments.md, "Captions that name every shape").

    python tools/clip_mask_naming.py --checkpoint runs/train/<run>/model.pt --root runs/data/omg-shapes \
        [--split val_ov] [--clip other_clip.pt] [--limit 80]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from omg.data.masks import rgb2id
from omg.inference.open_vocab import clip_logits
from omg.inference.predictor import OMGPredictor


def segment_masks(ids: np.ndarray, segments: list[dict], padded: tuple[int, int], resized: tuple[int, int]):
    """1 x S x 1 x H/4 x W/4 mask logits (+-10) of the segments, on the padded input's stride-4 grid."""
    out = []
    for seg in segments:
        m = torch.from_numpy((ids == seg["id"]).astype(np.float32))[None, None]
        m = F.interpolate(m, size=resized, mode="nearest")
        full = torch.zeros(1, 1, *padded)
        full[..., : resized[0], : resized[1]] = m
        out.append(F.interpolate(full, size=(padded[0] // 4, padded[1] // 4), mode="area")[0, 0] * 20 - 10)
    return torch.stack(out)[None, :, None]


def name_segments(pred: OMGPredictor, root: Path, split: str, limit: int):
    """-> (the split's class names, Counter of (class, named as) over the segments)."""
    core = pred.core
    doc = json.loads((root / "annotations" / f"panoptic_{split}.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    names = [cats[c] for c in sorted(cats)]
    vocab = core.vocabulary(names)
    text = core.text(vocab)
    confusion = collections.Counter()
    for ann in doc["annotations"][:limit]:
        image = next((root / "images" / split).glob(Path(ann["file_name"]).stem + ".*"))
        png = root / "annotations" / f"panoptic_{split}" / ann["file_name"]
        ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
        segments = [s for s in ann["segments_info"] if not s.get("iscrowd")]
        batch, sizes = core.prepare([np.asarray(Image.open(image).convert("RGB"))])
        with torch.no_grad():
            feats = core.model.extract(batch)
            masks = segment_masks(ids, segments, tuple(batch.shape[-2:]), tuple(sizes[0]))
            logits, _ = clip_logits(core.model.backbone, feats.clip_features, masks, text, core.logit_scale)
        for seg, label in zip(segments, logits[0].argmax(-1).tolist()):
            confusion[(cats[seg["category_id"]], names[label])] += 1
    return names, confusion


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a model checkpoint (its CLIP, its test size)")
    p.add_argument("--root", required=True, help="a dataset root with annotations/panoptic_<split>.json")
    p.add_argument("--split", default="val_ov")
    p.add_argument("--clip", help="other CLIP weights to load into the model's backbone first (model.pretrained form)")
    p.add_argument("--limit", type=int, default=80, help="the first N images")
    args = p.parse_args()
    pred = OMGPredictor.from_checkpoint(args.checkpoint)
    if args.clip:
        print(pred.model.backbone.load_pretrained(args.clip))
    names, confusion = name_segments(pred, Path(args.root), args.split, args.limit)
    for name in names:
        total = sum(c for (a, _), c in confusion.items() if a == name)
        if total:
            named = ", ".join(f"{b} {c}" for (a, b), c in confusion.most_common() if a == name)
            right = 100 * confusion[(name, name)] / total
            print(f"{name:12s} {right:5.1f} % of {total:3d} segments named right ({named})")


if __name__ == "__main__":
    main()
