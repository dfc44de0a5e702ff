"""``omg model-info`` (parameters and GFLOPs of a variant) and ``omg convert-official`` (a released OMG-Seg
checkpoint -> an omg checkpoint): their flags and what reads them."""

from __future__ import annotations

import argparse
import json
import time

from omg.utils.log import get_logger

log = get_logger(__name__)


def cmd_model_info(args: argparse.Namespace) -> int:
    from omg.modeling.info import model_info

    t0 = time.monotonic()
    info = model_info(args.variant, flops=not args.no_flops, height=args.height, width=args.width)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0

    def m(n: int) -> str:
        return f"{n / 1e6:10.2f} M"

    print(f"{args.variant}: parameters (built on the meta device; no weights loaded)")
    print(f"  {'component':28s} {'total':>12s} {'trainable':>12s} {'frozen':>12s}")
    for name, c in info["components"].items():
        print(f"  {name:28s} {m(c['total'])} {m(c['trainable'])} {m(c['frozen'])}")
    print(f"  {'all':28s} {m(info['total'])} {m(info['trainable'])} {m(info['frozen'])}")
    print(f"  inference model (without the text tower): {info['inference'] / 1e6:.2f} M")
    if "gflops" in info:
        h, w = info["gflops_input"]
        print(
            f"  GFLOPs at {args.width}x{args.height} (padded to {w}x{h}), one image, object queries: "
            f"{info['gflops']:.1f} (= {info['gflops'] / 2:.1f} GMACs)"
        )
    log.info(f"[{time.monotonic() - t0:.1f}s]")
    return 0


#: the datasets the released ConvNeXt-L OMG-Seg model was trained on (its training config
#: ``seg/configs/m2ov_train/omg_convl_vlm_fix_12e_ov_coco_vid_yt19_vip_city_cocopansam.py``): its label space
RELEASED_TRAINING_DATASETS = ("coco-panoptic", "youtube-vis-2019", "vipseg", "cityscapes-panoptic", "coco-sam")


def cmd_convert_official(args: argparse.Namespace) -> int:
    from omg.data.catalog import load_catalog
    from omg.data.labels import DatasetClasses, merge_label_spaces
    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.official import convert_official, load_official_state_dict
    from omg.utils import io as uio

    t0 = time.monotonic()
    catalog = load_catalog()
    datasets = args.dataset or list(RELEASED_TRAINING_DATASETS)
    unknown = [d for d in datasets if d not in catalog]
    if unknown:
        raise ValueError(f"--dataset {unknown[0]!r}: not in the catalog (omg catalog list)")
    sd = load_official_state_dict(uio.read_bytes(args.src), args.src)
    log.info(f"read {len(sd)} tensors from {args.src}")
    model, report = convert_official(sd, args.variant, args.pretrained, args.nheads, args.fill_image_tower)
    entries = [catalog[d] for d in datasets]
    label_space = merge_label_spaces([DatasetClasses.from_entry(e) for e in entries])
    metadata = {
        "label_space": label_space.to_dict(),
        "test_size": [1333, 800],
        "test_sizes": {e.name: list(e.test_size) for e in entries if e.test_size},
        "converted_from": {"source": args.src, "format": "lxtGH/OMG-Seg (mmdet)", "tensors": report.mapped},
        "clip_weights": args.pretrained,
        "filled_from_clip_weights": report.from_pretrained,
    }
    save_checkpoint(model, args.out, metadata)
    c = report.config
    print(
        f"{args.out}: {c.variant}, {c.num_queries} queries, {c.enc_layers}/{c.dec_layers} encoder/decoder layers, "
        f"{report.mapped} tensors converted, {len(report.from_pretrained)} from the CLIP weights "
        f"({args.pretrained}), {len(label_space.vocabulary)} classes from {', '.join(datasets)} "
        f"[{time.monotonic() - t0:.1f}s]"
    )
    for group, count in filled_groups(report.from_pretrained).items():
        print(f"  from the CLIP weights: {group} ({count} tensors)")
    return 0


def filled_groups(names: list[str]) -> dict[str, int]:
    """The tensors filled from ``--pretrained``, by module (the name up to its third part: ``backbone.clip.
    transformer``, ``backbone.clip.visual``, ...), so a user sees at a glance which towers came from where."""
    groups: dict[str, int] = {}
    for n in names:
        key = ".".join(n.split(".")[:3])
        groups[key] = groups.get(key, 0) + 1
    return groups


def register(sub) -> None:
    info = sub.add_parser(
        "model-info",
        help="parameters per component and GFLOPs of a model variant",
        description="Build VARIANT on the meta device (no memory, no weights) and print its parameters "
        "(total, trainable, frozen, per component) and the GFLOPs of one forward pass measured with "
        "torch.utils.flop_counter at --width x --height (default 1200x800, padded to the size "
        "divisibility). Writes nothing.",
    )
    info.add_argument("variant", help="a backbone variant (convnext_large_d_320, RN50, ViT-L-14, tiny_convnext, ...)")
    info.add_argument(
        "--json", action="store_true", help="print JSON with keys total, trainable, frozen, components, gflops"
    )
    info.add_argument("--height", type=int, default=800)
    info.add_argument("--width", type=int, default=1200)
    info.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    info.set_defaults(func=cmd_model_info)

    conv = sub.add_parser(
        "convert-official",
        help="a released OMG-Seg checkpoint (lxtGH/OMG-Seg) -> an omg checkpoint",
        description="Convert a released OMG-Seg checkpoint (mmdet/mmengine layout) into this project's checkpoint: "
        "every tensor renamed (no reshapes), the CLIP text tower from --pretrained (the released file "
        "does not hold it), the label space of the datasets it was trained on as metadata. Fails listing "
        "the names when a source tensor has no place or a model tensor stays empty. Metadata objects "
        "in the file are never unpickled as themselves.",
    )
    conv.add_argument("src", help="the released checkpoint (.pth; path or fsspec URI)")
    conv.add_argument("--out", required=True, help="where to write the omg checkpoint (path or fsspec URI)")
    conv.add_argument(
        "--variant", default="convnext_large_d_320", help="backbone variant (default: the released model's)"
    )
    conv.add_argument(
        "--pretrained",
        help="the CLIP weights for the text tower: an open_clip tag in the local cache "
        "(laion2b_s29b_b131k_ft_soup for the released model), a path or a URI",
    )
    conv.add_argument(
        "--fill-image-tower",
        action="store_true",
        help="take CLIP image-tower tensors the file lacks from --pretrained too (default: only the text tower, which "
        "the released file does not hold; a missing image-tower tensor is an error naming it)",
    )
    conv.add_argument("--nheads", type=int, default=8, help="attention heads (not in the weights; released: 8)")
    conv.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="a catalog dataset whose classes the label space holds (repeatable; default: the released "
        "model's training datasets: " + ", ".join(RELEASED_TRAINING_DATASETS) + ")",
    )
    conv.set_defaults(func=cmd_convert_official)
