"""``omg predict``: a checkpoint, an input (image, image folder, frames folder or video file), a task ->
official-format result files and overlays under ``--out``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from omg.utils import io as uio
from omg.inference import writers
from omg.data.labels import LabelSpace
from omg.inference.predictor import IMAGE_TASKS, VIDEO_TASKS, OMGPredictor
from omg.utils.progress import Progress

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_image(path: str, max_pixels: int = uio.MAX_PIXELS) -> np.ndarray:
    """H x W x 3 uint8; more than ``max_pixels`` is refused from the header, before decoding (as in ``omg serve``)."""
    return uio.decode_rgb(uio.read_bytes(path), path, max_pixels)


def list_images(folder: str) -> list[str]:
    names = [n for n in uio.listdir(folder) if n.lower().endswith(IMAGE_EXT)]
    if not names:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXT)})")
    return [uio.join(folder, n) for n in names]


def load_video(path: str, max_pixels: int = uio.MAX_PIXELS) -> tuple[list[np.ndarray], list[str]]:
    """Frames of a folder of images (sorted by name) or of a video file (torchvision, needs PyAV)."""
    if os.path.isdir(path) or path.endswith("/"):
        files = list_images(path)
        return [load_image(f, max_pixels) for f in files], [Path(f).stem for f in files]
    try:
        import av  # noqa: F401
    except ImportError:
        raise ValueError(f"{path}: reading video files needs PyAV (`pip install av`); or pass a folder of frames") from None
    from torchvision.io import read_video

    frames, _, _ = read_video(path, pts_unit="sec", output_format="THWC")
    if frames.shape[0] == 0:
        raise ValueError(f"{path}: no frames decoded")
    return [f.numpy() for f in frames], [f"{t:05d}" for t in range(frames.shape[0])]


def parse_floats(values: list[str] | None, n: int, what: str) -> list[list[float]] | None:
    if not values:
        return None
    out = []
    for v in values:
        try:
            nums = [float(x) for x in v.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(f"--{what} {v!r}: expected {n} comma-separated numbers") from None
        if len(nums) != n:
            raise ValueError(f"--{what} {v!r}: expected {n} comma-separated numbers, got {len(nums)}")
        out.append(nums)
    return out


def category_ids_for(predictor: OMGPredictor, dataset: str | None, vocabulary: list | None) -> list[int] | None:
    """Map vocabulary indices to a catalog dataset's category ids (through the checkpoint's label space)."""
    if dataset is None:
        return None
    if vocabulary is not None:
        raise ValueError("--dataset maps the training vocabulary to a dataset's ids; it cannot be combined with --vocabulary")
    ls = predictor.metadata.get("label_space")
    space = LabelSpace.from_dict(ls) if ls else None
    if space is None or dataset not in space.mappings:
        known = ", ".join(sorted(space.mappings if space else ()))
        raise ValueError(f"the checkpoint's label space has no mapping for dataset {dataset!r} (it has: {known or 'none'})")
    inverse = {v: k for k, v in space.mappings[dataset].items()}
    return [inverse.get(i, -1) for i in range(space.num_classes)]


def run(args, load_predictor=None) -> int:
    """``load_predictor(args)``: the predictor to run (default: the checkpoint's, PyTorch; the CLI passes the one
    of ``--runtime``)."""
    t0 = time.monotonic()
    predictor = load_predictor(args) if load_predictor else OMGPredictor.from_checkpoint(args.checkpoint, device=args.device)
    vocabulary = args.vocabulary or None
    vocab = predictor.vocabulary(vocabulary)
    cat_ids = category_ids_for(predictor, args.dataset, vocabulary)
    out = args.out
    task = args.task
    points = parse_floats(args.points, 2, "points")
    boxes = parse_floats(args.boxes, 4, "boxes")
    written = []
    if task in VIDEO_TASKS:
        frames, names = load_video(args.input, args.max_pixels)
        video = Path(args.input.rstrip("/")).stem
        predictor.set_video(frames)
        if task == "vos":
            if not args.first_frame_masks:
                raise ValueError("task vos needs --first-frame-masks (a DAVIS-style indexed PNG of frame 0)")
            r = predictor.vos(writers.read_png(args.first_frame_masks))
        else:
            r = predictor.predict(task, vocabulary=vocab)
        if task == "vis":
            written.append(writers.write_ytvis(out, [(args.video_id, r)], cat_ids))
        elif task == "vps":
            written.append(writers.write_vipseg(out, [(video, names, r)], vocab.isthing, cat_ids))
        elif task == "vss":
            writers.write_vss(out, video, names, r)
            written.append(uio.join(out, "semantic", video))
        else:
            writers.write_vos(out, video, names, r)
            written.append(uio.join(out, "Annotations", video))
        ids, labels = writers.overlay_ids(r, args.score_threshold)
        if not args.no_overlays:
            for t, name in enumerate(names):
                writers.write_overlay(uio.join(out, "overlays", video, f"{name}.png"), frames[t], ids[t], labels)
            written.append(uio.join(out, "overlays", video))
    elif task in IMAGE_TASKS:
        files = list_images(args.input) if (os.path.isdir(args.input) or args.input.endswith("/")) else [args.input]
        if task == "interactive" and len(files) != 1:
            raise ValueError("task interactive takes one image (prompts are per image)")
        pan_items, inst_items = [], []
        with Progress(f"predict {task}", total=len(files), unit="img") as prog:
            for image_id, path in enumerate(files, start=1):
                image = load_image(path, args.max_pixels)
                name = Path(path).stem
                predictor.set_image(image)
                if task == "interactive":
                    if points is None and boxes is None:
                        raise ValueError("task interactive needs --points X,Y and/or --boxes X0,Y0,X1,Y1")
                    r = predictor.interactive(points=points, boxes=boxes, vocabulary=vocab if args.label else None)
                    written.append(writers.write_interactive(out, name, r))
                else:
                    r = predictor.predict(task, vocabulary=vocab)
                    if task == "panoptic":
                        pan_items.append((image_id, name, r))
                    elif task == "instance":
                        inst_items.append((image_id, name, r))
                    else:
                        written.append(writers.write_semantic(out, name, r))
                if not args.no_overlays:
                    uri = uio.join(out, "overlays", f"{name}.png")
                    writers.write_overlay(uri, image, *writers.overlay_ids(r, args.score_threshold))
                    written.append(uri)
                prog.update()
        if pan_items:
            written.append(writers.write_panoptic(out, pan_items, vocab.isthing, cat_ids))
        if inst_items:
            written.append(writers.write_instances(out, inst_items, cat_ids))
    else:
        raise ValueError(f"unknown task {task!r}")
    shown = written if len(written) <= 6 else written[:3] + ["..."] + written[-2:]
    print(f"{task}: wrote {len(written)} outputs under {out} [{time.monotonic() - t0:.1f}s]")
    for w in shown:
        print(f"  {w}")
    return 0


def main_predict(args, load_predictor=None) -> int:
    try:
        return run(args, load_predictor)
    except (ValueError, FileNotFoundError) as err:
        print(f"omg predict: error: {err}", file=sys.stderr)
        return 2
