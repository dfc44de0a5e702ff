"""``omg predict``: a checkpoint, an input (image, image folder; for video tasks a video file, frames folder or glob),
a task -> official-format result files and overlays under ``--out``. Video tasks stream: frames are decoded, predicted
and written one clip at a time (:meth:`OMGPredictor.stream`), so a video of any length runs in bounded memory."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omg.inference.tasks import IMAGE_TASKS, POSTPROCESS_AT, PROMPT_LABELS, VIDEO_TASKS
from omg.utils import io as uio
from omg.utils.log import get_logger

if TYPE_CHECKING:
    from omg.inference.predictor import OMGPredictor

log = get_logger(__name__)


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


def parse_clicks(values: list[str] | None) -> tuple[list[list[float]] | None, list[int] | None]:
    """``--points``: each X,Y (an object each, the released prompt) or X,Y,L (L = 1 a positive click, 0 a negative
    one: clicks on one object, for a model with refinement). -> (points, labels or None)."""
    if not values:
        return None, None
    sizes = {len(v.split(",")) for v in values}
    if sizes == {3}:
        rows = parse_floats(values, 3, "points")
        bad = [v for v, r in zip(values, rows) if r[2] not in (0, 1)]
        if bad:
            raise ValueError(f"--points {bad[0]!r}: the label L of X,Y,L is 1 (positive) or 0 (negative)")
        return [r[:2] for r in rows], [int(r[2]) for r in rows]
    if 3 in sizes:
        raise ValueError(
            "--points: give every point as X,Y (an object each) or every one as X,Y,L (clicks on one object)"
        )
    return parse_floats(values, 2, "points"), None


def dataset_vocabulary(predictor: OMGPredictor, dataset: str | None, vocabulary: list | None):
    """``--dataset``: (the vocabulary to predict with, vocabulary index -> the dataset's category id). The training
    vocabulary through the checkpoint's label space when it maps the dataset (trained on it); else the dataset's own
    classes by name, as ``omg eval`` asks them (open vocabulary). (None, None) without ``--dataset``."""
    from omg.data.catalog import get_entry
    from omg.data.labels import LabelSpace
    from omg.evaluation.evaluators import vocabulary_of

    if dataset is None:
        return None, None
    if vocabulary is not None:
        raise ValueError("--dataset predicts with the dataset's classes and writes its ids; drop --vocabulary")
    ls = predictor.metadata.get("label_space")
    space = LabelSpace.from_dict(ls) if ls else None
    if space is not None and dataset in space.mappings:
        inverse = {v: k for k, v in space.mappings[dataset].items()}
        return None, [inverse.get(i, -1) for i in range(space.num_classes)]
    entry = get_entry(dataset)
    if entry.class_agnostic:
        return None, None
    return vocabulary_of(entry, include_heldout=True)


def task_vocabulary(predictor: OMGPredictor, dataset: str | None, vocabulary: list | None):
    """(the vocabulary to predict with, vocabulary index -> category id, or None for index + 1): the dataset's
    (:func:`dataset_vocabulary`), else ``vocabulary``, else the checkpoint's training vocabulary."""
    dataset_vocab, cat_ids = dataset_vocabulary(predictor, dataset, vocabulary)
    return dataset_vocab or predictor.vocabulary(vocabulary), cat_ids


def dataset_ids(
    dataset: str, split: str | None, names: list[str], video: bool, root: str | None = None
) -> dict[str, int | str] | None:
    """``--dataset`` (``--split``): each input's id in the dataset's own annotation file (image file stem, or a video's
    folder name -> its image / video id, an int where the file has one), so the results score against that file
    (``root``: the dataset's, default the catalog's).
    The split is the one that holds every name when ``--split`` is not given; when none does (inputs from
    elsewhere, or the dataset's files not on this machine) the ids are 1..N, as without ``--dataset``, and a warning
    says so. With ``--split`` an input the split does not hold is an error."""
    from omg.data.catalog import get_entry
    from omg.data.formats import get_reader

    entry = get_entry(dataset)
    if split and split not in entry.splits:
        raise ValueError(f"--split {split!r}: {dataset} has the splits {', '.join(entry.splits)}")
    why = "no split holds them"
    for s in [split] if split else list(entry.splits):
        ids = {}
        try:
            items = get_reader(entry, s, root).items()
        except FileNotFoundError as err:
            if split:
                raise
            why = f"its files are not here ({err})"
            continue
        for it in items:
            if video:
                files = it.get("file_names") or [f.get("file_name", "") for f in it.get("frames", [])]
                name = Path(files[0]).parent.name if files else str(it["key"])
            else:
                name = Path(it["image"]).stem
            ids[name] = int(it["key"]) if str(it["key"]).isdigit() else it["key"]
        missing = [n for n in names if n not in ids]
        if not missing:
            return ids
        if split:
            raise ValueError(
                f"{missing[0]} is not {'a video' if video else 'an image'} of {dataset}/{split}: give the split that "
                "holds the inputs, or leave --split out"
            )
    log.warning(
        f"--dataset {dataset}: the inputs are not that dataset's ({why}): its category ids are written, with "
        f"{'video' if video else 'image'} ids 1..N"
    )
    return None


def video_inputs(uri: str) -> list[str]:
    """``--input`` of a video task -> its videos: a video file, a frame folder or a glob of frames is one; a folder
    of video files and / or frame folders (YouTube-VIS's ``JPEGImages/``, a camera's recordings) is each of them,
    by name, written to one results file."""
    from omg.inference.media import IMAGE_EXT, VIDEO_EXT

    if any(c in uri for c in "*?[") or not (uri.endswith("/") or uio.isdir(uri)):
        return [uri]
    listing = uio.entries(uri)
    if any(not folder and n.lower().endswith(IMAGE_EXT) for n, folder in listing):
        return [uri]  # a frame folder
    found, other = [], []
    for n, folder in listing:
        (found if folder or n.lower().endswith(VIDEO_EXT) else other).append(uio.join(uri, n))
    if not found:
        raise ValueError(f"{uri}: no image files, video files ({', '.join(VIDEO_EXT)}) or frame folders")
    if other:
        log.warning(f"{uri}: {len(other)} files that are not videos are not predicted ({', '.join(other[:3])}...)")
    return sorted(found)


def video_sources(args) -> list:
    """The videos of ``--input`` (a video task), opened (headers read) and checked before the model loads."""
    from omg.inference.media import VideoSource

    sources = [VideoSource.open(uri, args.max_pixels) for uri in video_inputs(args.input)]
    if len(sources) > 1 and args.task == "vos":
        raise ValueError(
            f"{args.input} holds {len(sources)} videos: task vos takes one (its prompts are on its first frame)"
        )
    if len(sources) > 1 and args.overlay_video:
        raise ValueError(
            f"{args.input} holds {len(sources)} videos: --overlay-video names one file; leave it out "
            "(each video's overlays go under overlays/)"
        )
    if args.overlay_video is not None and "://" in args.overlay_video:
        raise ValueError(f"--overlay-video {args.overlay_video}: the overlay video is written to a local path")
    seen = [s.name for s in sources]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ValueError(f"{args.input}: two videos named {twice[0]!r} (a video file and a frame folder?)")
    return sources


def image_files(args, points, boxes) -> list[str]:
    """The images of ``--input`` (an image task), checked before the model loads."""
    from omg.inference.media import VIDEO_EXT, list_images

    if args.input.lower().endswith(VIDEO_EXT):
        raise ValueError(
            f"{args.input} is a video file: task {args.task} takes images; give a video task (--task "
            f"{', '.join(VIDEO_TASKS)}) or a folder of images"
        )
    files = list_images(args.input) if (args.input.endswith("/") or uio.isdir(args.input)) else [args.input]
    if args.task == "interactive" and len(files) != 1:
        raise ValueError("task interactive takes one image (prompts are per image)")
    if args.task == "interactive" and points is None and boxes is None:
        raise ValueError("task interactive needs --points X,Y and/or --boxes X0,Y0,X1,Y1")
    return files


def video_task_options(args, vocab, points, boxes) -> dict:
    """The keyword arguments of :meth:`OMGPredictor.stream` for the task: the VOS prompts, else the vocabulary."""
    from omg.inference import writers

    if args.task != "vos":
        return {"vocabulary": vocab, **({"track_ids": args.track_ids} if args.task == "vps" else {})}
    if args.first_frame_masks and (points or boxes):
        raise ValueError("task vos takes --first-frame-masks or --points/--boxes on the first frame, not both")
    if args.first_frame_masks:
        return {"first_frame_masks": writers.read_png(args.first_frame_masks)}
    if points or boxes:
        return {"points": points, "boxes": boxes}
    raise ValueError(
        "task vos needs --first-frame-masks (a DAVIS-style indexed PNG of frame 0) or --points/--boxes on the first "
        "frame"
    )


def stream_video(
    predictor, task: str, source, output, video_id, options: dict, lookahead, overlay_video, label: str, progress=True
):
    """One video through the streaming predictor into ``output`` (a :class:`VideoOutput`, started here): its
    overlays as frames (a frame folder) or as ``overlay_video`` (a path; None: none); a progress line ``label``."""
    from omg.utils.progress import Progress

    output.start(
        source.name,
        video_id,
        overlay_frames=overlay_video is None and output.overlays and source.files is not None,
        overlay_video=overlay_video,
        fps=source.fps,
    )
    frame_names: dict[int, str] = {}  # frame index -> name, for the frames read and not yet written

    def frames():
        for t, (name, frame) in enumerate(source):
            frame_names[t] = name
            yield frame

    with Progress(label, total=source.num_frames, unit="frame", enabled=progress) as prog:
        for f in predictor.stream(frames(), task, lookahead=lookahead, **options):
            output.add(frame_names.pop(f.index), f.image, f.result)
            prog.update()


def overlay_movie(out: str, source, overlays: bool, given: str | None = None) -> str | None:
    """Where a video's overlay video goes: ``given`` (``--overlay-video``), else ``overlays/<video>.mp4`` for a video
    file; None for frames (their overlays are PNGs) or without overlays."""
    if given is not None:
        return given
    return uio.join(out, "overlays", f"{source.name}.mp4") if overlays and source.files is None else None


def lookahead_of(flag: int | None) -> int | None:
    """``--lookahead``: None (the default) -> the predictor's LOOKAHEAD; negative -> None (the whole video)."""
    from omg.inference.predictor import LOOKAHEAD

    return LOOKAHEAD if flag is None else None if flag < 0 else flag


def predict_videos(args, predictor, sources, vocab, cat_ids, options: dict) -> tuple[list[str], int]:
    """Stream each video through the predictor into one :class:`VideoOutput`. -> (outputs written, frames)."""
    from omg.inference.writers import VideoOutput

    ids = input_ids(args, [s.name for s in sources], True)
    lookahead = lookahead_of(args.lookahead)
    output = VideoOutput(
        args.out, args.task, vocab.isthing, cat_ids, score_threshold=args.score_threshold, overlays=not args.no_overlays
    )
    try:
        for k, source in enumerate(sources):
            label = f"predict {args.task} {source.name}" + (f" ({k + 1}/{len(sources)})" if len(sources) > 1 else "")
            movie = overlay_movie(args.out, source, not args.no_overlays, args.overlay_video)
            stream_video(
                predictor,
                args.task,
                source,
                output,
                ids[source.name],
                options,
                lookahead,
                movie,
                label,
            )
    except BaseException:
        output.abort()  # no results file that looks complete
        raise
    return output.close(), output.frames


@dataclass
class ImagePrediction:
    """What one image of an image task gave: the files written for it, and its part of the task's results file
    (``panoptic``: its annotation and image entry in ``panoptic.json``; ``instances``: its records in
    ``instances_results.json``)."""

    name: str
    files: list[str] = field(default_factory=list)
    panoptic: tuple[dict, dict] | None = None
    instances: list[dict] | None = None


def predict_image(
    predictor: OMGPredictor, task: str, image, name: str, image_id, vocab, cat_ids, out: str, overlay: bool, threshold
) -> ImagePrediction:
    """One image of ``task`` (panoptic, instance, semantic): its files written under ``out`` as ``omg predict``
    writes them (the results file's part returned, for :func:`write_results`)."""
    from omg.inference import writers

    predictor.set_image(image)
    r = predictor.predict(task, vocabulary=vocab)
    done = ImagePrediction(name)
    if task == "panoptic":
        done.panoptic = writers.panoptic_item(out, image_id, name, r, cat_ids)
    elif task == "instance":
        done.instances = writers.instance_records(image_id, r, cat_ids)
    else:
        done.files.append(writers.write_semantic(out, name, r))
    if overlay:
        done.files.append(write_overlay_of(out, name, image, r, threshold))
    return done


def write_overlay_of(out: str, name: str, image, result, threshold: float) -> str:
    """``overlays/<name>.png``: the result drawn over the image (instances below ``threshold`` left out)."""
    from omg.inference import writers

    uri = uio.join(out, "overlays", f"{name}.png")
    writers.write_overlay(uri, image, *writers.overlay_ids(result, threshold))
    return uri


def write_results(
    out: str, task: str, done: list[ImagePrediction], display: list[str], isthing: list[bool], cat_ids
) -> list[str]:
    """The task's results file (panoptic.json, instances_results.json) of the images ``done``, in their order
    (``display``, ``isthing``: the vocabulary's names and kinds, for the categories)."""
    from omg.inference import writers

    if task == "panoptic" and done:
        return [writers.panoptic_json(out, [d.panoptic for d in done], display, isthing, cat_ids)]
    if task == "instance" and done:
        return [writers.instances_json(out, [rec for d in done for rec in d.instances])]
    return []


def input_ids(args, names: list[str], video: bool, root: str | None = None) -> dict[str, int | str]:
    """Each input's id in the results, by name: the dataset's (``--dataset``, :func:`dataset_ids`), else in input
    order from 1 (images) or from ``--video-id`` (videos)."""
    ids = dataset_ids(args.dataset, args.split, names, video, root) if args.dataset else None
    return ids or {n: k for k, n in enumerate(names, start=args.video_id if video else 1)}


def predict_images(args, predictor, files, first, vocab, cat_ids, prompts: dict) -> list[str]:
    """Each image through the predictor; the task's official files. -> the outputs written. ``prompts``: the
    interactive task's keyword arguments (points and boxes, or objects)."""
    from omg.inference import writers
    from omg.inference.media import load_image
    from omg.utils.progress import Progress

    task, out, written, done = args.task, args.out, [], []
    ids = input_ids(args, [Path(f).stem for f in files], False)
    with Progress(f"predict {task}", total=len(files), unit="img") as prog:
        for n, path in enumerate(files, start=1):
            image = first if n == 1 else load_image(path, args.max_pixels)
            name = Path(path).stem
            if task == "interactive":
                predictor.set_image(image)
                r = predictor.interactive(**prompts, vocabulary=vocab if args.label else None)
                written.append(writers.write_interactive(out, name, r))
                if not args.no_overlays:
                    written.append(write_overlay_of(out, name, image, r, args.score_threshold))
            else:
                overlay = not args.no_overlays
                done.append(
                    predict_image(
                        predictor, task, image, name, ids[name], vocab, cat_ids, out, overlay, args.score_threshold
                    )
                )
                written += done[-1].files
            prog.update()
    return written + write_results(out, task, done, vocab.display, vocab.isthing, cat_ids)


def run(args, load_predictor=None) -> int:
    """``load_predictor(args)``: the predictor to run (default: the checkpoint's, PyTorch; the CLI passes the one
    of ``--runtime``)."""
    from omg.inference.media import load_image
    from omg.inference.predictor import OMGPredictor

    t0 = time.monotonic()
    if args.task not in VIDEO_TASKS + IMAGE_TASKS:
        raise ValueError(f"unknown task {args.task!r}")
    points, labels = parse_clicks(args.points)
    boxes = parse_floats(args.boxes, 4, "boxes")
    if labels is not None and (args.task != "interactive" or len(boxes or ()) > 1):
        raise ValueError("labelled --points X,Y,L are clicks on one object: task interactive, with at most one --boxes")
    # the input is checked before the model loads (seconds, a GB): a wrong path or file is said at once
    video = args.task in VIDEO_TASKS
    sources = video_sources(args) if video else None
    files = None if video else image_files(args, points, boxes)
    first = None if video else load_image(files[0], args.max_pixels)
    before = uio.count_files(args.out)
    predictor = (
        load_predictor(args) if load_predictor else OMGPredictor.from_checkpoint(args.checkpoint, device=args.device)
    )
    predictor.prompt_labels = args.prompt_labels
    predictor.postprocess_at = args.postprocess_at
    vocab, cat_ids = task_vocabulary(predictor, args.dataset, args.vocabulary or None)
    if video:
        options = video_task_options(args, vocab, points, boxes)
        written, frames = predict_videos(args, predictor, sources, vocab, cat_ids, options)
        done = f"{frames} frames" + (f" of {len(sources)} videos" if len(sources) > 1 else "")
    else:
        prompts = {"points": points, "boxes": boxes}
        if labels is not None:
            from omg.inference.objects import ObjectPrompt

            prompts = {"objects": [ObjectPrompt(points, labels, boxes[0] if boxes else None)]}
        written = predict_images(args, predictor, files, first, vocab, cat_ids, prompts)
        done = f"{len(files)} image{'' if len(files) == 1 else 's'}"
    after = uio.count_files(args.out)
    print(
        f"{args.task}: {done} predicted [{time.monotonic() - t0:.1f}s]; {args.out} holds {after} files "
        f"({after - before} new):"
    )
    for w in written if len(written) <= 6 else written[:3] + ["..."] + written[-2:]:
        print(f"  {w}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    load_predictor = None
    if args.runtime != "torch":
        from omg.export.runtime import load_predictor
    try:
        return run(args, load_predictor)
    except (ValueError, FileNotFoundError) as err:
        log.error(err)
        return 2


def register(sub) -> None:
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
    pred.add_argument("--task", required=True, choices=IMAGE_TASKS + VIDEO_TASKS)
    pred.add_argument("--out", required=True, help="output folder or URI")
    pred.add_argument(
        "--vocabulary",
        action="append",
        help="a class (synonyms comma-separated; prefix 'stuff:' for stuff); repeat for each class "
        "(default: the checkpoint's training vocabulary)",
    )
    pred.add_argument(
        "--points",
        action="extend",
        nargs="+",
        help="interactive: points X,Y in image pixels, an object each; or clicks X,Y,L on one object (L: 1 positive, "
        "0 negative; a model trained with refinement), e.g. --points 40,30,1 52,41,0",
    )
    pred.add_argument("--boxes", action="append", help="interactive: a box X0,Y0,X1,Y1 (repeatable)")
    pred.add_argument("--label", action="store_true", help="interactive: name each prompted mask (see --prompt-labels)")
    pred.add_argument(
        "--prompt-labels",
        choices=PROMPT_LABELS,
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
    pred.add_argument(
        "--dataset",
        help="the inputs are this catalog dataset's: predict its classes and write its category, image and video ids, "
        "so `omg metric` scores the results against its annotation file (the training classes when the checkpoint "
        "was trained on it, else its class names)",
    )
    pred.add_argument("--split", help="with --dataset: the split the inputs are from (default: the one holding them)")
    pred.add_argument(
        "--video-id",
        type=int,
        default=1,
        help="vis, vps: the video id written in the results (without --dataset; a folder of videos: the first's, "
        "then +1 each)",
    )
    pred.add_argument("--score-threshold", type=float, default=0.3, help="overlays: hide instances below it")
    pred.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="refuse images with more pixels, checked from the header before decoding (default 4096x4096, "
        "as omg serve)",
    )
    pred.add_argument(
        "--postprocess-at",
        choices=POSTPROCESS_AT,
        default="original",
        help="post-process each query's mask at the original image size (the released code; default) or at the "
        "resized input, the id maps upscaled: the same when the image is not resized, far less memory and time on "
        "large photos",
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
