"""The ``omg`` command.

Subcommands that run Ray jobs import their ``pipelines`` module lazily, so ``omg --help``
and ``import omg`` never pull in Ray, MLflow or torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from omg import __version__
from omg.env import apply_env_defaults, runs_dir
from omg.utils.errors import describe


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_data_dir() -> str:
    """Where generated datasets go: ``$OMG_DATA_DIR`` or ``runs/data``."""
    return os.environ.get("OMG_DATA_DIR") or runs_dir("data")


# ----------------------------------------------------------------------------- data


def _options_from_args(cls, args: argparse.Namespace):
    """An options dataclass from the ``--field`` arguments :func:`_add_options` declared (unset: its default)."""
    return cls(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    )


def _add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` argument per field of an options dataclass."""
    for f in dataclasses.fields(cls):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(f.default),
            default=None,
            help=f"(default {f.default})",
        )


def cmd_data_synth(args: argparse.Namespace) -> int:
    from omg.data.synthetic import SynthOptions, generate

    opts = _options_from_args(SynthOptions, args)
    t0 = time.monotonic()
    meta = generate(args.out, seed=args.seed, opts=opts, progress=not args.quiet, log=_log)
    counts = meta["counts"]
    img = ", ".join(f"{s}: {c['images']}" for s, c in counts["images"].items())
    vid = ", ".join(f"{s}: {c['videos']} ({c['frames']} frames)" for s, c in counts["videos"].items())
    print(f"omg-shapes at {args.out} (seed {args.seed}) -- images {img}; videos {vid} [{time.monotonic() - t0:.1f}s]")
    return 0


def cmd_data_captions(args: argparse.Namespace) -> int:
    from omg.data.captions import CaptionOptions, generate_captions

    t0 = time.monotonic()
    meta = generate_captions(
        args.root, seed=args.seed, opts=_options_from_args(CaptionOptions, args), progress=not args.quiet, log=_log
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
        root = args.root or os.path.join(default_data_dir(), "omg-shapes")
        if not os.path.exists(os.path.join(root, "meta.json")) and "://" not in root:
            _log(
                f"error: {root} holds no omg-shapes dataset (no meta.json); "
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


# ----------------------------------------------------------------------------- catalog


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
        f"  python pipelines/joint_train.py --config pipelines/configs/finetune_demo.yaml "
        f'"data.datasets=[{{name: {entry.name}, split: {first}}}]" model.init_from=runs/train/<run>/model.pt\n'
        f"  omg eval --checkpoint runs/train/<new run>/model.pt --dataset {entry.name}"
    )
    if path.parent.resolve() not in [d.resolve() for d in catalog_dirs()]:
        print(f"  (the catalog reads {path.parent} once it is in $OMG_CATALOG_DIR)")
    return 0


# ----------------------------------------------------------------------------- model


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
    print(f"[{time.monotonic() - t0:.1f}s]", file=sys.stderr)
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
    print(f"read {len(sd)} tensors from {args.src}", file=sys.stderr)
    model, report = convert_official(sd, args.variant, args.pretrained, args.nheads)
    entries = [catalog[d] for d in datasets]
    label_space = merge_label_spaces([DatasetClasses.from_entry(e) for e in entries])
    metadata = {
        "label_space": label_space.to_dict(),
        "test_size": [1333, 800],
        "test_sizes": {e.name: list(e.test_size) for e in entries if e.test_size},
        "converted_from": {"source": args.src, "format": "lxtGH/OMG-Seg (mmdet)", "tensors": report.mapped},
        "clip_weights": args.pretrained,
    }
    save_checkpoint(model, args.out, metadata)
    c = report.config
    print(
        f"{args.out}: {c.variant}, {c.num_queries} queries, {c.enc_layers}/{c.dec_layers} encoder/decoder layers, "
        f"{report.mapped} tensors converted, {len(report.from_pretrained)} from the CLIP weights "
        f"({args.pretrained}), {len(label_space.vocabulary)} classes from {', '.join(datasets)} "
        f"[{time.monotonic() - t0:.1f}s]"
    )
    return 0


# ----------------------------------------------------------------------------- inference


def _resolve_model(args: argparse.Namespace, prog: str) -> bool:
    """An MLflow ``models:/...`` or ``runs:/...`` URI in ``args.checkpoint`` -> the local checkpoint file it names
    (``pipelines/tracking.py``, imported only then). False (and the error said) when it cannot be found."""
    if not (args.checkpoint or "").startswith(("models:/", "runs:/")):
        return True
    from pipelines.tracking import resolve_model_uri

    try:
        args.checkpoint = resolve_model_uri(args.checkpoint)
    except FileNotFoundError as err:
        _log(f"{prog}: error: {err}")
        return False
    return True


def cmd_predict(args: argparse.Namespace) -> int:
    from omg.inference.run import main_predict

    if not _resolve_model(args, "omg predict"):
        return 2
    if args.runtime == "torch":
        return main_predict(args)
    from omg.export.runtime import load_predictor

    return main_predict(args, load_predictor)


def cmd_export(args: argparse.Namespace) -> int:
    from omg.export.graphs import export
    from omg.modeling.checkpoint import load_checkpoint
    from omg.utils.vocabulary import Vocabulary

    t0 = time.monotonic()
    model, metadata = load_checkpoint(args.checkpoint)
    vocab = None
    if args.vocabulary:
        ls = metadata.get("label_space")
        vocab = Vocabulary.parse(args.vocabulary, Vocabulary.from_dict(ls) if ls else None)
    size = tuple(args.image_size) if args.image_size else None
    spec = export(
        model,
        metadata,
        args.out,
        args.format,
        size,
        vocab,
        checkpoint=args.checkpoint,
        progress=lambda line: print(f"[export] {line}", file=sys.stderr, flush=True),
    )
    h, w = spec.image_size
    print(
        f"{args.out}: {args.format} graphs of {spec.variant} for {h}x{w} inputs (dynamic: classes, synonyms, "
        f"prompts); export.json describes them [{time.monotonic() - t0:.1f}s]"
    )
    return 0


# ----------------------------------------------------------------------------- pipelines


def cmd_pipeline(args: argparse.Namespace) -> int:
    """A ``pipelines/<module>.py`` entry point with the rest of the command line (imported lazily)."""
    import importlib

    return importlib.import_module(f"pipelines.{args.pipeline}").main(args.rest)


def _add_pipeline_parser(sub, name: str, module: str, help: str) -> None:
    p = sub.add_parser(
        name,
        add_help=False,
        prefix_chars="\0",
        help=f"{help} (same flags as pipelines/{module}.py)",
        description=f"Same as `python pipelines/{module}.py`; see `omg {name} --help`.",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_pipeline, pipeline=module)


# ----------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from omg.serve import Limits, default_checkpoint, find_samples, serve

    if not _resolve_model(args, "omg serve"):
        return 2
    if args.backend and args.checkpoint:
        _log("omg serve: error: --backend serves another server's model; do not pass --checkpoint with it")
        return 2
    checkpoint = args.checkpoint or args.backend or default_checkpoint(runs_dir())
    if checkpoint is None:
        _log(
            "omg serve: error: no --checkpoint given and no trained model under "
            f"{runs_dir()}/train/ (run `make demo` first, or pass --checkpoint PATH)"
        )
        return 2
    data = args.samples or os.path.join(default_data_dir(), "omg-shapes")
    samples = find_samples(data)
    if not samples:
        _log(
            f"omg serve: warning: no sample images under {data}/images/val (an omg-shapes root; --samples ROOT): "
            "the page offers uploads only"
        )
    return serve(
        None if args.backend else checkpoint,
        args.host,
        args.port,
        samples,
        Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels),
        args.device,
        quiet=args.quiet,
        backend=args.backend,
    )


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from omg.data.synthetic import SynthOptions

    p = argparse.ArgumentParser(
        prog="omg",
        description="OMG-Seg: one model for image, video, open-vocabulary and interactive segmentation.",
    )
    p.add_argument("--version", action="version", version=f"omg {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

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
        default=os.path.join(default_data_dir(), "omg-shapes"),
        help="output directory or fsspec URI (default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--quiet", action="store_true", help="no progress output")
    _add_options(synth, SynthOptions)
    synth.set_defaults(func=cmd_data_synth)

    from omg.data.captions import CaptionOptions

    caps = dsub.add_parser(
        "captions",
        help="generate omg-shapes captions (image-caption pairs for CLIP pretraining)",
        description="Generate the captioned companion of omg-shapes under ROOT/captions, deterministically: images "
        "of the training shapes with captions in a controlled vocabulary (shape names and synonyms, hue, "
        "pattern, size, count, position, the stuff around), in open_clip's CSV layout (filepath <TAB> "
        "title, paths relative to ROOT/captions). The held-out hexagon and cross are never drawn or "
        "named; their hue bands and patterns appear on other shapes (omg/data/captions.py).",
    )
    caps.add_argument(
        "--root",
        default=os.path.join(default_data_dir(), "omg-shapes"),
        help="the omg-shapes root (default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes)",
    )
    caps.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    caps.add_argument("--quiet", action="store_true", help="no progress output")
    _add_options(caps, CaptionOptions)
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
        description="The dataset catalog: datasets_catalog/*.yaml plus $OMG_CATALOG_DIR.",
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
    conv.add_argument("--nheads", type=int, default=8, help="attention heads (not in the weights; released: 8)")
    conv.add_argument(
        "--dataset",
        action="append",
        default=None,
        help="a catalog dataset whose classes the label space holds (repeatable; default: the released "
        "model's training datasets: " + ", ".join(RELEASED_TRAINING_DATASETS) + ")",
    )
    conv.set_defaults(func=cmd_convert_official)

    pred = sub.add_parser(
        "predict",
        help="run a checkpoint on an image, image folder or video; write official-format results",
        description="Run any task of a checkpoint on --input (an image, a folder of images, or for video tasks a "
        "folder of frames or a video file) and write under --out: COCO panoptic PNG+JSON (panoptic), COCO "
        "results JSON (instance), label PNGs (semantic, vss), prompt masks + JSON (interactive), "
        "YouTube-VIS results JSON (vis), VIPSeg PNG+JSON (vps), DAVIS PNGs (vos), and coloured overlays "
        "(overlays/) to look at.",
    )
    pred.add_argument(
        "--checkpoint",
        required=True,
        help="an OMG-Seg checkpoint: path, fsspec URI, or MLflow models:/NAME/VERSION or runs:/ID/PATH",
    )
    pred.add_argument(
        "--input",
        required=True,
        help="an image file or image folder; for video tasks a video file (mp4, webm, mkv, mov, avi ... "
        "through PyAV), a folder of frames or a quoted glob of frames ('clips/cat/*.jpg')",
    )
    pred.add_argument(
        "--task", required=True, choices=["panoptic", "instance", "semantic", "interactive", "vis", "vps", "vss", "vos"]
    )
    pred.add_argument("--out", required=True, help="output folder or URI")
    pred.add_argument(
        "--vocabulary",
        action="append",
        help="a class (synonyms comma-separated; prefix 'stuff:' for stuff); repeat for each class "
        "(default: the checkpoint's training vocabulary)",
    )
    pred.add_argument("--points", action="append", help="interactive: a point X,Y in image pixels (repeatable)")
    pred.add_argument("--boxes", action="append", help="interactive: a box X0,Y0,X1,Y1 (repeatable)")
    pred.add_argument("--label", action="store_true", help="interactive: name each prompted mask (see --prompt-labels)")
    pred.add_argument(
        "--prompt-labels",
        choices=["queries", "clip"],
        default="queries",
        help="interactive --label: the class of the object query whose mask best matches the prompted "
        "one (the frozen CLIP's where none overlaps it; default) or the frozen CLIP alone",
    )
    pred.add_argument(
        "--first-frame-masks",
        help="vos: DAVIS-style indexed PNG of the first frame's objects "
        "(or give --points / --boxes on the first frame, an object each)",
    )
    pred.add_argument(
        "--lookahead",
        type=int,
        default=None,
        help="video tasks stream clip by clip: a clip is decided once this many more clips are decoded, "
        "with the evidence of all clips so far; memory holds lookahead + 1 clips, whatever the "
        "video's length (default: the predictor's LOOKAHEAD, 8 clips; -1: decide at the end, exact "
        "for any length, memory grows with it)",
    )
    pred.add_argument(
        "--track-ids",
        choices=["released", "stable"],
        default="released",
        help="vps: the fusion head's per-frame counter over things (released, default) or query-based "
        "ids that survive a vanishing segment (stable)",
    )
    pred.add_argument(
        "--overlay-video",
        help="video tasks: write the overlays as one video (.mp4 H.264 or .webm VP9; "
        "default for a video file input: overlays/<video>.mp4, for frames: "
        "one overlay PNG per frame)",
    )
    pred.add_argument("--dataset", help="write the category ids of this catalog dataset (training label space)")
    pred.add_argument("--video-id", type=int, default=1, help="vis: the video_id written in the results JSON")
    pred.add_argument("--score-threshold", type=float, default=0.3, help="overlays: hide instances below it")
    pred.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="refuse images with more pixels, checked from the header before decoding (default 4096x4096, "
        "as omg serve)",
    )
    pred.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    pred.add_argument(
        "--runtime",
        default="torch",
        choices=["torch", "onnx", "torch-export"],
        help="run the image encoder and decoders as PyTorch modules (default) or as the graphs omg export "
        "wrote (--exported; image tasks)",
    )
    pred.add_argument("--exported", help="the folder omg export wrote (with --runtime onnx or torch-export)")
    pred.add_argument("--no-overlays", action="store_true")
    pred.set_defaults(func=cmd_predict)

    exp = sub.add_parser(
        "export",
        help="export a checkpoint as ONNX or torch.export graphs (image encoder, object and prompt decoders)",
        description="Write three graphs (omg/export/graphs.py): the image encoder (image -> backbone and pixel-decoder "
        "features), the object-query decoder and the prompt decoder (features + text embeddings [+ boxes] "
        "-> mask logits, class embeddings, objectness), with export.json saying what every input and "
        "output is. The vocabulary is an input tensor (dynamic classes and synonyms), as are the prompts; "
        "the image size is fixed per export. Run them with omg predict --runtime onnx|torch-export.",
    )
    exp.add_argument("--checkpoint", required=True, help="an OMG-Seg checkpoint (path or fsspec URI)")
    exp.add_argument("--format", required=True, choices=["onnx", "torch-export"])
    exp.add_argument("--out", required=True, help="output folder")
    exp.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="the padded input size the graphs take (multiples of the backbone's divisibility; default: "
        "the checkpoint's test size, landscape, rounded up)",
    )
    exp.add_argument(
        "--vocabulary",
        action="append",
        help="also write this vocabulary's text embeddings (text_embeddings.npy; repeat per class), for "
        "runtimes without the CLIP text tower",
    )
    exp.set_defaults(func=cmd_export)

    from omg.evaluation.cli import add_metric_parser

    add_metric_parser(sub)

    _add_pipeline_parser(
        sub, "preprocess", "preprocess", "Ray Data job: a catalog dataset -> Parquet shards + manifest"
    )
    _add_pipeline_parser(
        sub, "eval", "evaluate", "Ray fan-out: evaluate a checkpoint on (dataset, split, task) pairs, log to MLflow"
    )
    _add_pipeline_parser(
        sub,
        "ablate",
        "ablations",
        "Ray: run an ablation grid (training + evaluation per trial, MLflow parent/child runs)",
    )

    from dashboards.cli import add_parsers as add_dashboard_parsers

    add_dashboard_parsers(sub)

    srv = sub.add_parser(
        "serve",
        help="the interactive web demo: click or drag on an image, get masks with open-vocabulary labels",
        description="Start a web app on 127.0.0.1 (only loopback unless --host says otherwise) for a checkpoint: "
        "pick an omg-shapes sample or upload a PNG/JPEG, click points and drag boxes to get masks "
        "with open-vocabulary labels, or switch to panoptic / instance / semantic mode; download "
        "the masks (PNG) and the result (JSON). Uploads stay in memory: nothing is written to disk.",
    )
    srv.add_argument(
        "--checkpoint",
        help="model checkpoint: path, fsspec URI, or MLflow models:/NAME/VERSION "
        "(default: the newest runs/train/*/model.pt; after make demo, the demo model)",
    )
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    srv.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1, loopback only)")
    srv.add_argument(
        "--samples",
        help="an omg-shapes root whose val images the page offers "
        "(default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes)",
    )
    srv.add_argument("--max-bytes", type=int, default=8 * 1024 * 1024, help="upload size limit (default 8 MiB)")
    srv.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="upload pixel limit, checked before decoding (default 4096x4096)",
    )
    srv.add_argument(
        "--backend",
        metavar="URL",
        help="serve the page for a model behind another server instead of loading one: mlflow models "
        "serve's http://HOST:PORT/invocations, or a schema endpoint .../api/predict (the Ray Serve app)",
    )
    srv.add_argument("--device", help="torch device (default: the checkpoint loader's, cpu)")
    srv.add_argument("--quiet", action="store_true", help="no request log")
    srv.set_defaults(func=cmd_serve)

    _add_pipeline_parser(
        sub,
        "demo",
        "demo",
        "the platform end to end on omg-shapes: data, shards, training, evaluation, ablations, report",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        # a group without its subcommand: print that group's help
        target = {"data": "data", "catalog": "catalog", "metric": "metric"}.get(args.command or "")
        if target:
            parser.parse_args([target, "--help"])
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, FileNotFoundError) and err.errno is not None:
            msg = describe(err)
        print(f"omg: error: {msg}", file=sys.stderr)
        return 2
    except OSError as err:  # a full or read-only disk, a device, object storage: errno (operation) and path
        print(f"omg: error: {describe(err)}", file=sys.stderr)
        return 1
    except ImportError as err:  # a URI whose protocol needs a package (MissingDependency says which, and how)
        print(f"omg: error: {describe(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
