"""How well a model's frozen CLIP names ground-truth segments by itself: each non-crowd segment of a panoptic split,
its mask on the stride-4 grid, mask-pooled over the CLIP's stride-32 features and scored against the split's class
names, exactly as the open-vocabulary branch scores a query's mask (docs/model.md §8.4; ``clip_logits``). Without
the model's own masks and classifier in the way, this is the ceiling of what the CLIP branch can add for a class
(docs/experiments.md, "Captions that name every shape").

    python tools/clip_mask_naming.py --checkpoint runs/train/<run>/model.pt --root runs/data/omg-shapes \
        [--split val_ov] [--clip other_clip.pt] [--limit 80] [--test-size 512]

Without ``--checkpoint``, ``--clip`` alone (a tiny ConvNeXt CLIP's weights, ``runs/clip/tiny_convnext.pt``): the
naming needs only the CLIP, so a randomly initialised tiny model is built around it (``--test-size``, default 256).
``--closeups N`` adds the CLIP's own ceiling: its global image embedding (no mask pooling) on N fresh close-ups of
the captions' generator (one large shape in the middle, the pictures it was pretrained on; ``--closeup-size S``
resizes them), named among the six shapes.
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
from omg.modeling.backbone import mask_logits_at_stride4
from omg.modeling.heads import class_logits


def segment_masks(ids: np.ndarray, segments: list[dict], padded: tuple[int, int], resized: tuple[int, int]):
    """1 x S x 1 x H/4 x W/4 mask logits (+-10) of the segments, on the padded input's stride-4 grid."""
    masks = torch.from_numpy(np.stack([ids == seg["id"] for seg in segments]))
    return mask_logits_at_stride4(masks, resized, padded)[None, :, None]


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


def name_closeups(pred: OMGPredictor, n: int, size: int | None = None) -> dict[str, float]:
    """-> {shape: % of that shape's close-ups named right}, over ``n`` fresh close-ups of the captions' generator
    (seed 99; resized to ``size`` when given), each named by its global CLIP embedding's nearest of the six shapes'
    text embeddings (the model's prompt templates and synonyms, as the open-vocabulary branch names classes)."""
    from omg.data.captions import CaptionOptions, sample, sample_rng
    from omg.data.synthetic import THING_CLASSES

    core = pred.core
    clip = core.model.backbone.clip
    names = [c.name for c in THING_CLASSES]
    drawn = [sample(sample_rng(99, "val", i), CaptionOptions(closeup=1.0)) for i in range(n)]
    x = torch.from_numpy(np.stack([d.image for d in drawn])).permute(0, 3, 1, 2).float()
    if size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - core.model.backbone.pixel_mean) / core.model.backbone.pixel_std
    with torch.no_grad():
        image = clip.encode_image(x)
        image = F.normalize(image[0] if isinstance(image, tuple) else image, dim=-1)
        text = core.text(core.vocabulary(names))
    named = class_logits(image, text, 1.0)[:, :-1].argmax(-1).tolist()
    truth = [names.index(looks[0].shape) for _, _, looks, _ in drawn]
    return {
        name: 100 * sum(p == t == k for p, t in zip(named, truth)) / max(1, truth.count(k))
        for k, name in enumerate(names)
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a model checkpoint (its CLIP, its test size); or --clip alone")
    p.add_argument("--root", required=True, help="a dataset root with annotations/panoptic_<split>.json")
    p.add_argument("--split", default="val_ov")
    p.add_argument("--clip", help="other CLIP weights to load into the model's backbone first (model.pretrained form)")
    p.add_argument("--limit", type=int, default=80, help="the first N images")
    p.add_argument("--test-size", type=int, help="the images' longer side at the CLIP's input (default: the model's)")
    p.add_argument("--closeups", type=int, default=0, help="also name N close-ups by the global embedding")
    p.add_argument("--closeup-size", type=int, help="the close-ups' size (default: the captions', 128)")
    args = p.parse_args()
    if args.checkpoint:
        pred = OMGPredictor.from_checkpoint(args.checkpoint)
        if args.clip:
            print(pred.model.backbone.load_pretrained(args.clip))
    elif args.clip:
        from omg.modeling.model import ModelConfig, build_model

        torch.manual_seed(0)
        pred = OMGPredictor(build_model(ModelConfig.tiny(pretrained=args.clip)).eval(), {"test_size": [256, 256]})
    else:
        p.error("give --checkpoint, --clip or both")
    if args.test_size:
        pred.core.test_size = (args.test_size, args.test_size)
    if args.closeups:
        named = name_closeups(pred, args.closeups, args.closeup_size)
        print("close-ups, global embedding: " + ", ".join(f"{k} {v:.1f} %" for k, v in named.items()))
    names, confusion = name_segments(pred, Path(args.root), args.split, args.limit)
    for name in names:
        total = sum(c for (a, _), c in confusion.items() if a == name)
        if total:
            named = ", ".join(f"{b} {c}" for (a, b), c in confusion.most_common() if a == name)
            right = 100 * confusion[(name, name)] / total
            print(f"{name:12s} {right:5.1f} % of {total:3d} segments named right ({named})")


if __name__ == "__main__":
    main()
