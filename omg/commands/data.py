"""``omg data`` (generate and validate datasets) and ``omg catalog`` (the dataset catalog): their flags and what reads
them. Heavy imports happen inside each command, so ``omg --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import os
import time

from omg.env import data_dir
from omg.utils.log import get_logger
from omg.utils.options import add_options, options_from_args

log = get_logger(__name__)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from omg.data.synthetic import SynthOptions, generate

    opts = options_from_args(SynthOptions, args)
    t0 = time.monotonic()
    meta = generate(args.out, seed=args.seed, opts=opts, progress=not args.quiet, log=log.info)
    counts = meta["counts"]
    img = ", ".join(f"{s}: {c['images']}" for s, c in counts["images"].items())
    vid = ", ".join(f"{s}: {c['videos']} ({c['frames']} frames)" for s, c in counts["videos"].items())
    print(f"omg-shapes at {args.out} (seed {args.seed}) -- images {img}; videos {vid} [{time.monotonic() - t0:.1f}s]")
    return 0


def cmd_data_captions(args: argparse.Namespace) -> int:
    from omg.data.captions import CaptionOptions, generate_captions

    t0 = time.monotonic()
    meta = generate_captions(
        args.root, seed=args.seed, opts=options_from_args(CaptionOptions, args), progress=not args.quiet, log=log.info
    )
    counts = ", ".join(f"{k}: {v}" for k, v in meta["counts"].items())
    print(f"omg-shapes captions at {args.root}/captions (seed {args.seed}) -- {counts} [{time.monotonic() - t0:.1f}s]")
    return 0


def _print_reports(reports) -> int:
    bad = 0
    for r in reports:
        print(r.summary())
        for p in r.problems:
            print(f"  - {p}")
        if r.num_problems > len(r.problems):
            print(f"  ... and {r.num_problems - len(r.problems)} more")
        bad += r.num_problems
    return bad


def cmd_data_validate(args: argparse.Namespace) -> int:
    from omg.data.catalog import get_entry
    from omg.data.validate import validate_dataset, validate_omg_shapes

    t0 = time.monotonic()
    if args.dataset:
        reports = validate_dataset(
            get_entry(args.dataset), args.root, not args.no_images, progress=True, splits=args.split, strict=args.strict
        )
    else:
        root = args.root or os.path.join(data_dir(), "omg-shapes")
        if not os.path.exists(os.path.join(root, "meta.json")) and "://" not in root:
            log.error(
                f"{root} holds no omg-shapes dataset (no meta.json); "
                f"create one with `omg data synth --out {root}` or name a catalog entry with --dataset"
            )
            return 2
        reports = validate_omg_shapes(root, not args.no_images, progress=True)
    bad = _print_reports(reports)
    print(
        f"{'FAILED' if bad else 'valid'}: {len(reports)} split(s) checked, {bad} problem(s) "
        f"[{time.monotonic() - t0:.1f}s]"
    )
    return 1 if bad else 0


def cmd_catalog_list(args: argparse.Namespace) -> int:
    from omg.data.catalog import load_catalog

    for name, entry in load_catalog().items():
        print(f"{name}\t{entry.modality}\t{','.join(entry.tasks)}" if args.long else name)
    return 0


def cmd_catalog_show(args: argparse.Namespace) -> int:
    from omg.data.catalog import get_entry
    from omg.utils.typed import to_dict

    entry = get_entry(args.name)
    if args.json:
        print(json.dumps(to_dict(entry), indent=2))
        return 0
    print(f"{entry.name}: {entry.description}")
    print(f"  file:       {entry.source}")
    print(f"  format:     {entry.format} ({entry.modality})")
    print(f"  root:       {entry.resolve_root()}   (override: ${entry.env_var()} or --root)")
    for split, paths in entry.splits.items():
        print(f"  split {split}:")
        for k, v in paths.items():
            print(f"    {k:15s} {v if isinstance(v, str) else ' | '.join(v) + '   (the first naming that exists)'}")
    print(f"  tasks:      {', '.join(entry.tasks)}")
    print(f"  evaluators: {', '.join(entry.evaluators)}")
    s = entry.sampling
    print(f"  sampling:   repeat {s.repeat_factor:g}, {s.mode}, resize {list(s.resize_range)}")
    if entry.class_agnostic:
        print("  classes:    class-agnostic")
    else:
        print(
            f"  classes:    {len(entry.classes)} ({len(entry.thing_classes)} things, {len(entry.stuff_classes)} stuff)"
        )
        for c in entry.classes[: args.max_classes]:
            flag = " [held out]" if c.heldout else ""
            print(f"    {c.id:4d} {'thing' if c.isthing else 'stuff'} {c.name}: {', '.join(c.synonyms)}{flag}")
        if len(entry.classes) > args.max_classes:
            print(f"    ... {len(entry.classes) - args.max_classes} more (--max-classes N or --json)")
    if entry.notes:
        print(f"  notes:      {entry.notes}")
    return 0


def _parse_split_paths(values: list[str] | None) -> dict[str, dict[str, str]] | None:
    """``--split val:images=imgs/val,panoptic_json=pan_val.json,...`` (repeatable) -> {split: {key: path}}."""
    if not values:
        return None
    out = {}
    for v in values:
        if ":" not in v:
            raise ValueError(f"--split {v!r}: expected NAME:KEY=PATH,KEY=PATH,...")
        name, rest = v.split(":", 1)
        pairs = [kv.split("=", 1) for kv in rest.split(",") if kv]
        if not name or not pairs or any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
            raise ValueError(f"--split {v!r}: expected NAME:KEY=PATH,KEY=PATH,...")
        out[name] = dict(pairs)
    return out


def cmd_catalog_add(args: argparse.Namespace) -> int:
    from omg.data.catalog import catalog_dirs
    from omg.data.catalog_add import add_dataset

    entry, path = add_dataset(
        args.name,
        args.format,
        args.root,
        args.out,
        args.description or "",
        _parse_split_paths(args.split),
        overwrite=args.overwrite,
    )
    kind = (
        "class-agnostic"
        if entry.class_agnostic
        else f"{len(entry.classes)} classes ({len(entry.thing_classes)} things, {len(entry.stuff_classes)} stuff)"
    )
    print(f"wrote {path}: {entry.name}, {entry.format}, splits {', '.join(entry.splits)}, {kind}")
    first = next(iter(entry.splits))
    print(
        "next:\n"
        f"  omg data validate --dataset {entry.name}\n"
        f"  omg preprocess --dataset {entry.name} --out runs/shards\n"
        f"  python -m omg_platform.pipelines.joint_train --config omg_platform/pipelines/configs/finetune_demo.yaml "
        f'"data.datasets=[{{name: {entry.name}, split: {first}}}]" model.init_from=runs/train/<run>/model.pt\n'
        f"  omg eval --checkpoint runs/train/<new run>/model.pt --dataset {entry.name}"
    )
    if path.parent.resolve() not in [d.resolve() for d in catalog_dirs()]:
        print(f"  (the catalog reads {path.parent} once it is in $OMG_CATALOG_DIR)")
    return 0


def register(sub) -> None:
    from omg.data.captions import CaptionOptions
    from omg.data.synthetic import SynthOptions

    data = sub.add_parser(
        "data",
        help="generate and validate datasets",
        description="Generate the omg-shapes dataset and validate datasets in their official formats.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    synth = dsub.add_parser(
        "synth",
        help="generate omg-shapes (the embedded synthetic dataset)",
        description="Generate omg-shapes, deterministically (same seed and options -> byte-identical files), "
        "in the official formats under --out: COCO panoptic + instances (images/, annotations/), "
        "YouTube-VIS, VIPSeg and DAVIS (videos/), and meta.json (written last). "
        "A complete dataset with the same seed and options is left as it is.",
    )
    synth.add_argument(
        "--out",
        default=os.path.join(data_dir(), "omg-shapes"),
        help="output directory or fsspec URI (default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--quiet", action="store_true", help="no progress output")
    add_options(synth, SynthOptions)
    synth.set_defaults(func=cmd_data_synth)

    caps = dsub.add_parser(
        "captions",
        help="generate omg-shapes captions (image-caption pairs for CLIP pretraining)",
        description="Generate the captioned companion of omg-shapes under ROOT/captions, deterministically: images "
        "of all six shapes with captions in a controlled vocabulary (shape names and synonyms, hue, "
        "pattern, size, count, position, the stuff around), in open_clip's CSV layout (filepath <TAB> "
        "title, paths relative to ROOT/captions). The CLIP's corpus names the held-out hexagon and cross, "
        "as a web-scale CLIP's corpus names classes the segmenter never saw a mask of; omg-shapes' segmentation "
        "training never holds them (--shapes train: the four training shapes only; omg/data/captions.py).",
    )
    caps.add_argument(
        "--root",
        default=os.path.join(data_dir(), "omg-shapes"),
        help="the omg-shapes root (default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes)",
    )
    caps.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    caps.add_argument("--quiet", action="store_true", help="no progress output")
    add_options(caps, CaptionOptions)
    caps.set_defaults(func=cmd_data_captions)

    val = dsub.add_parser(
        "validate",
        help="validate a dataset's files in their official formats",
        description="Check every split of omg-shapes under ROOT (or of the catalog entry --dataset) with the "
        "format readers that preprocessing uses: files exist and decode, PNG ids match the JSON "
        "segments, categories are known, videos have every frame and keep track ids and categories; "
        "plus the JSON's areas and boxes against the masks, duplicate ids and held-out classes in "
        "training splits. Prints one line per split (with what was dropped on purpose) and every "
        "problem (file, record, field); writes nothing. Exit status 1 when a problem is found.",
    )
    val.add_argument(
        "root", nargs="?", help="dataset root (default: the catalog root of --dataset, else runs/data/omg-shapes)"
    )
    val.add_argument("--dataset", help="validate this catalog entry (ROOT overrides its root) instead of omg-shapes")
    val.add_argument("--split", action="append", help="only this split (repeatable; default: every split)")
    val.add_argument(
        "--no-images",
        action="store_true",
        help="read the image/frame files' headers only (their size), do not decode them",
    )
    val.add_argument(
        "--strict",
        action="store_true",
        help="also report what the readers tolerate on purpose: ADE20K's pre-overlap areas, COCO crowd "
        "areas, OVIS box areas, segments with no pixel in their PNG",
    )
    val.set_defaults(func=cmd_data_validate)

    cat = sub.add_parser(
        "catalog",
        help="list and show dataset catalog entries",
        description="The dataset catalog: omg/datasets_catalog/*.yaml plus $OMG_CATALOG_DIR.",
    )
    csub = cat.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND")
    lst = csub.add_parser("list", help="one dataset name per line", description="Print one dataset name per line.")
    lst.add_argument("--long", action="store_true", help="also print modality and tasks")
    lst.set_defaults(func=cmd_catalog_list)
    show = csub.add_parser(
        "show",
        help="describe one dataset",
        description="Print a catalog entry: file, format, resolved root, splits, tasks, "
        "evaluators, sampling and classes. Writes nothing.",
    )
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print the whole entry as JSON")
    show.add_argument("--max-classes", type=int, default=20, help="classes to list (default 20)")
    show.set_defaults(func=cmd_catalog_show)
    add = csub.add_parser(
        "add",
        help="your own dataset (official format) as a catalog entry",
        description="Find the splits of a dataset root in an official format (the file names the format's tools "
        "write), read its classes from the annotation files, and write a validated catalog entry "
        "NAME.yaml into $OMG_CATALOG_DIR (default: runs/catalog, read by the catalog too). Then "
        "validate, preprocess and fine-tune on it by name.",
    )
    add.add_argument("name", help="the new dataset's name (lowercase, digits, - _ .)")
    add.add_argument(
        "--format",
        required=True,
        choices=[
            "coco_panoptic",
            "ade20k_panoptic",
            "cityscapes_panoptic",
            "coco_instances",
            "youtube_vis",
            "davis",
            "vipseg",
        ],
        help="the annotation format (ade20k_panoptic / cityscapes_panoptic: those converters' outputs)",
    )
    add.add_argument("--root", required=True, help="the dataset's root folder or fsspec URI")
    add.add_argument(
        "--split",
        action="append",
        metavar="NAME:KEY=PATH,...",
        help="a split's files, when they are not where the format's tools put them (repeatable)",
    )
    add.add_argument("--description", help="one line about the dataset")
    add.add_argument("--out", help="catalog folder to write to (default: $OMG_CATALOG_DIR or runs/catalog)")
    add.add_argument("--overwrite", action="store_true", help="replace an entry this command wrote before")
    add.set_defaults(func=cmd_catalog_add)
