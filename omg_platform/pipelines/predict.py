"""Predict at dataset scale with Ray Data: images or videos from any URI (or a catalog split) -> a pool of predictor
actors -> the task's official files, written as they come, and a Parquet table of what each input gave.

    python -m omg_platform.pipelines.predict --checkpoint runs/demo/model.pt --task panoptic \\
        --input s3://bucket/photos/ --out s3://bucket/predictions/photos
    python -m omg_platform.pipelines.predict --checkpoint models:/omg-seg/1 --task instance \\
        --dataset coco-panoptic --split val --out s3://bucket/predictions/coco-val --actors 2:8 --gpus-per-actor 0.5
    ray job submit --working-dir . -- python -m omg_platform.pipelines.predict ...

Each actor loads the model once and predicts batches of images (decoded in the actor, from wherever they are),
or one video per call through the streaming predictor (bounded memory whatever its length); Ray Data streams the
inputs to the actors, scales the pool between ``--actors MIN:MAX``, and restarts an actor that dies (its batch
runs again). ``--out`` receives what ``omg predict`` writes for the same inputs, byte for byte at the same thread
count: ``panoptic/*.png`` + ``panoptic.json``, ``instances_results.json``, ``semantic/*.png``, YouTube-VIS
``results.json``, VIPSeg ``panoptic/<video>/`` + ``panoptic.json``, ``overlays/``; and ``items/part-*.parquet``, a
row per input: its index and name, its id in the results, status ``ok`` or ``quarantined`` with the reason (a
file that is missing, not an image or video, or too large), its part of the results file, the seconds it took,
when it was done (unix time) and the node that predicted it.

A rerun with the same checkpoint, task and vocabulary skips every image the table holds (a killed job resumes
where its last rows were written; ``--retry-quarantined`` tries the quarantined ones again) and writes the results
file of all of them. Another checkpoint or task into the same ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omg.commands.predict import ImagePrediction, input_ids, predict_image, task_vocabulary, write_results
from omg.env import apply_env_defaults
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.progress import Progress
from omg_platform.errors import describe, fail, interruptible, usage_error
from omg_platform.pipelines.cluster import shared_location

log = get_logger(__name__)

#: the image tasks predicted here (batches of images) and the video tasks (a video per actor call); the prompted
#: tasks (interactive, vos) take their prompts per input: ``omg predict``
IMAGE_TASKS = ("panoptic", "instance", "semantic")
VIDEO_TASKS = ("vis", "vps", "vss")
TASKS = IMAGE_TASKS + VIDEO_TASKS
#: a video task's file of the whole run, assembled from one per video
RESULTS_FILE = {"vis": "results.json", "vps": "panoptic.json"}


@dataclass(frozen=True)
class Job:
    """What the predictions in ``--out`` are of: a rerun resumes only the same job."""

    checkpoint: str
    digest: str
    task: str
    vocabulary: tuple[str, ...] | None
    dataset: str | None
    overlays: bool
    score_threshold: float
    lookahead: int | None = None  # video tasks (omg predict's --lookahead; None: the whole video)
    track_ids: str = "released"  # vps

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["vocabulary"] = list(self.vocabulary) if self.vocabulary else None
        return d


@dataclass(frozen=True)
class Item:
    """One input (an image, or a video: a file or a frame folder) to predict: its place in the input order, name
    (file stem, folder name), id in the results and location."""

    index: int
    name: str
    image_id: int | str
    uri: str


@dataclass(frozen=True)
class ActorSettings:
    job: Job
    tracking: str | None
    out: str
    max_pixels: int
    device: str | None


class BatchPredictor:
    """The Ray Data actor: the model loaded once, then batches of inputs -> their rows (the files written). Its
    settings are a class attribute of the subclass :func:`bound` makes (no constructor arguments: Ray keeps those
    in the object store, where an actor restarted after its node's loss might not find them)."""

    settings: ActorSettings

    def __init__(self):
        import ray

        from omg.inference.predictor import OMGPredictor
        from omg_platform.tracking import resolve_model_uri

        self.job, self.out, self.max_pixels = self.settings.job, self.settings.out, self.settings.max_pixels
        checkpoint = resolve_model_uri(self.job.checkpoint, self.settings.tracking)
        self.predictor = OMGPredictor.from_checkpoint(checkpoint, device=self.settings.device)
        vocabulary = list(self.job.vocabulary) if self.job.vocabulary else None
        self.vocab, self.cat_ids = task_vocabulary(self.predictor, self.job.dataset, vocabulary)
        self.node = ray.util.get_node_ip_address()
        # what the driver's results file names its categories by (every actor writes the same)
        categories = {"display": list(self.vocab.display), "isthing": list(self.vocab.isthing), "ids": self.cat_ids}
        uio.write_json(uio.join(items_dir(self.out), "categories.json"), categories)

    @classmethod
    def bound(cls, settings: ActorSettings) -> type[BatchPredictor]:
        return type(cls.__name__, (cls,), {"settings": settings, "__module__": cls.__module__})

    def __call__(self, batch: dict) -> dict:
        rows = []
        for index, name, image_id, uri in zip(batch["index"], batch["name"], batch["image_id"], batch["uri"]):
            t0 = time.monotonic()
            row = {
                "index": int(index),
                "name": str(name),
                "image_id": str(image_id),
                "uri": str(uri),
                "node": self.node,
            }
            try:
                if self.job.task in VIDEO_TASKS:
                    result, files = self.video(str(uri), str(name), json.loads(str(image_id)))
                else:
                    result, files = self.image(str(uri), str(name), json.loads(str(image_id)))
            except (ValueError, OSError) as err:  # the input is bad: quarantined, the job goes on
                rows.append({**row, "status": "quarantined", "reason": describe(err), "result": "", "files": "[]"})
            else:
                rows.append({**row, "status": "ok", "reason": "", "result": result, "files": json.dumps(files)})
            rows[-1].update(seconds=time.monotonic() - t0, done_at=time.time())
        return {k: [r[k] for r in rows] for k in ROW_FIELDS}

    def image(self, uri: str, name: str, image_id) -> tuple[str, list[str]]:
        """-> (its part of the results file as JSON, the files written)."""
        from omg.inference.media import load_image

        image = load_image(uri, self.max_pixels)  # a bad file raises before anything is written
        job = self.job
        done = predict_image(
            self.predictor,
            job.task,
            image,
            name,
            image_id,
            self.vocab,
            self.cat_ids,
            self.out,
            job.overlays,
            job.score_threshold,
        )
        return json.dumps({"panoptic": done.panoptic, "instances": done.instances}), done.files

    def video(self, uri: str, name: str, video_id) -> tuple[str, list[str]]:
        """-> (this video's results file, the files written). The video streams through the predictor as in
        ``omg predict``; its part of the run's results file is written under ``items/videos/<name>/``."""
        from omg.commands.predict import overlay_movie, stream_video
        from omg.inference.media import VideoSource
        from omg.inference.writers import VideoOutput

        job = self.job
        source = VideoSource.open(uri, self.max_pixels)  # a bad file raises before anything is written
        part = uio.join(items_dir(self.out), "videos", name)
        output = VideoOutput(
            self.out, job.task, self.vocab.isthing, self.cat_ids, job.score_threshold, job.overlays, results_out=part
        )
        options = {"vocabulary": self.vocab, **({"track_ids": job.track_ids} if job.task == "vps" else {})}
        movie = overlay_movie(self.out, source, job.overlays)
        try:
            stream_video(self.predictor, job.task, source, output, video_id, options, job.lookahead, movie, name, False)
        except BaseException:
            output.abort()
            raise
        written = output.close()
        results = uio.join(part, RESULTS_FILE[job.task]) if job.task in RESULTS_FILE else ""
        return results, [f for f in written if f != results]


ROW_FIELDS = ("index", "name", "image_id", "uri", "status", "reason", "result", "files", "seconds", "done_at", "node")


def items_dir(out: str) -> str:
    return uio.join(out, "items")


def read_rows(out: str) -> dict[str, dict]:
    """Every row the ``items/`` table of ``out`` holds, by image name (the last written wins)."""
    import pyarrow.parquet as pq

    rows: dict[str, dict] = {}
    folder = items_dir(out)
    if not uio.exists(folder):
        return rows
    for uri in sorted(uio.glob(folder, "part-*.parquet")):
        with uio.local_file(uri) as path:
            for r in pq.read_table(path).to_pylist():
                rows[r["name"]] = r
    return rows


def write_part(out: str, stamp: str, k: int, rows: list[dict]) -> None:
    import pyarrow as pa

    from omg_platform.pipelines.preprocess import parquet_bytes

    uio.write_bytes(
        uio.join(items_dir(out), f"part-{stamp}-{k:05d}.parquet"), parquet_bytes(pa.Table.from_pylist(rows))
    )


def check_job(out: str, job: Job) -> None:
    """Write ``items/job.json``, or check that the one there is this job's (else ``ValueError``)."""
    uri = uio.join(items_dir(out), "job.json")
    if uio.exists(uri):
        old = uio.read_json(uri)
        if old != job.to_dict():
            differ = sorted(k for k in job.to_dict() if old.get(k) != job.to_dict()[k])
            raise ValueError(
                f"--out {out} holds the predictions of another job (its {', '.join(differ)} differ: {uri}); "
                "give another --out, or remove that one to start over"
            )
    else:
        uio.write_json(uri, job.to_dict())


def list_items(args) -> list[Item]:
    """The inputs in order, with their ids as ``omg predict`` gives them: the images of ``--input`` (a file or folder;
    any URI) or of ``--dataset``'s ``--split``; for a video task the videos of ``--input`` (a video file, a frame
    folder, or a folder of them)."""
    from omg.commands.predict import video_inputs
    from omg.inference.media import VideoSource, list_images

    video = args.task in VIDEO_TASKS
    if video:
        if not args.input:
            raise ValueError(
                f"task {args.task} takes --input: a video file, a frame folder or a folder of them (with --dataset "
                "for the split's video ids and classes)"
            )
        files = video_inputs(args.input)
        names = [VideoSource(f, None, None, 25.0).name for f in files]
    elif args.input:
        files = list_images(args.input) if (args.input.endswith("/") or uio.isdir(args.input)) else [args.input]
        names = [Path(f).stem for f in files]
    else:
        from omg.data.catalog import get_entry
        from omg.data.formats import get_reader

        entry = get_entry(args.dataset)
        if args.split not in entry.splits:
            raise ValueError(f"--split {args.split!r}: {args.dataset} has the splits {', '.join(entry.splits)}")
        reader = get_reader(entry, args.split, args.root)
        files = [uio.join(reader.paths["images"], it["image"]) for it in reader.items()]
        names = [Path(f).stem for f in files]
    files, names = files[: args.limit], names[: args.limit]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two inputs named {twice[0]!r}: their results would overwrite each other")
    ids = input_ids(args, names, video, args.root)
    return [Item(k, n, ids[n], f) for k, (n, f) in enumerate(zip(names, files))]


def merge_video_results(out: str, task: str, ordered: list[dict]) -> list[str]:
    """The run's results file of a video task from each video's (``items/videos/<name>/``), in input order: the file
    ``omg predict`` writes for the same videos (YouTube-VIS: the tracks of each video in turn; VIPSeg: its videos,
    annotations, and the categories)."""
    parts = [uio.read_json(r["result"]) for r in ordered if r["status"] == "ok" and r["result"]]
    if task not in RESULTS_FILE or not parts:
        return []
    uri = uio.join(out, RESULTS_FILE[task])
    if task == "vis":
        uio.write_json(uri, [track for part in parts for track in part])
    else:
        doc = {k: [x for part in parts for x in part[k]] for k in ("videos", "annotations")}
        uio.write_json(uri, {**doc, "categories": parts[0]["categories"]})
    return [uri]


def run_pool(args, job: Job, todo: list[Item], stamp: str) -> int:
    """Predict ``todo`` on the actor pool, writing the rows as they come. -> rows written."""
    import ray

    from omg_platform.pipelines.cluster import init_ray

    init_ray(args.num_cpus)
    gpus = args.gpus_per_actor > 0
    if gpus and ray.cluster_resources().get("GPU", 0) == 0:
        raise ValueError(f"--gpus-per-actor {args.gpus_per_actor}: the cluster has no GPU")
    most = max(1, int(ray.cluster_resources().get("CPU", 1) // max(args.cpus_per_actor, 1e-3)))
    low, high = args.actors or (1, most)
    rows = [{"index": it.index, "name": it.name, "image_id": json.dumps(it.image_id), "uri": it.uri} for it in todo]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // args.batch_size, 200)))
    settings = ActorSettings(job, args.tracking_uri, args.out, args.max_pixels, "cuda" if gpus else None)
    ds = ds.map_batches(
        BatchPredictor.bound(settings),
        batch_size=args.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
        num_cpus=args.cpus_per_actor,
        num_gpus=args.gpus_per_actor,
    )
    log.info(
        f"[predict] {len(todo)} images on {low}-{high} actors ({args.cpus_per_actor} CPU"
        + (f", {args.gpus_per_actor} GPU" if gpus else "")
        + f" each), batches of {args.batch_size}"
    )
    written, part, buffer, bad = 0, 0, [], 0
    unit = "video" if job.task in VIDEO_TASKS else "img"
    with Progress(f"predict {job.task}", total=len(todo), unit=unit, enabled=not args.quiet) as prog:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            got = batch.to_dict("records")
            buffer += got
            bad += sum(r["status"] != "ok" for r in got)
            prog.update(len(got), extra=f"{bad} quarantined" if bad else "")
            if len(buffer) >= args.part_rows:
                write_part(args.out, stamp, part, buffer)
                written, part, buffer = written + len(buffer), part + 1, []
        if buffer:
            write_part(args.out, stamp, part, buffer)
            written += len(buffer)
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="path, fsspec URI, or MLflow models:/NAME/VERSION, runs:/...")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--input",
        help="an image or a folder of images; for a video task a video file, a frame folder or a folder of them: a "
        "path or any fsspec URI (s3://...)",
    )
    p.add_argument(
        "--dataset",
        help="a catalog dataset: predict its --split's images (with --input: the inputs are its), with its classes "
        "and ids",
    )
    p.add_argument("--split", help="with --dataset: the split")
    p.add_argument("--root", help="with --dataset: its root (default: the catalog's)")
    p.add_argument("--out", required=True, help="the output folder: a path every node sees, or a URI")
    p.add_argument("--vocabulary", action="append", help="a class (repeatable; default: the checkpoint's)")
    p.add_argument("--limit", type=int, help="the first N images only")
    p.add_argument("--actors", help="MIN:MAX actors (or N); default 1:as many as the cluster's CPUs allow")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="a fraction shares a GPU (default 0: CPU)")
    p.add_argument("--batch-size", type=int, default=4, help="images per actor call (default 4)")
    p.add_argument(
        "--part-rows",
        type=int,
        default=64,
        help="rows per Parquet part of items/, written as they come: the most images a killed job predicts again",
    )
    p.add_argument("--retry-quarantined", action="store_true", help="a rerun predicts the quarantined images again")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--score-threshold", type=float, default=0.3, help="overlays: hide instances below it")
    p.add_argument(
        "--lookahead",
        type=int,
        help="video tasks: clips decoded before one is decided (default 8, as omg predict; -1: the whole video)",
    )
    p.add_argument("--track-ids", choices=["released", "stable"], default="released", help="vps: as omg predict")
    p.add_argument("--video-id", type=int, default=1, help="video tasks without --dataset: the first video's id")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="quarantine larger images (header check)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ checkpoints")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument("--quiet", action="store_true")
    return p


def video_options(args) -> tuple[int | None, str]:
    """(lookahead, track ids) of a video task, as ``omg predict`` reads ``--lookahead`` and ``--track-ids``."""
    from omg.commands.predict import lookahead_of

    return lookahead_of(args.lookahead), args.track_ids


def parse_actors(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, _, high = text.partition(":")
        pair = (int(low), int(high or low))
    except ValueError:
        raise ValueError(f"--actors {text!r}: give N or MIN:MAX") from None
    if not 1 <= pair[0] <= pair[1]:
        raise ValueError(f"--actors {text!r}: give 1 <= MIN <= MAX")
    return pair


def main(argv: list[str] | None = None) -> int:
    setup_logging("predict")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    from omg_platform.pipelines.evaluate import checkpoint_digest
    from omg_platform.tracking import is_model_uri, pin_model_uri, resolve_model_uri, tracking_uri

    t0 = time.monotonic()
    try:
        args.actors = parse_actors(args.actors)
        if args.dataset and not args.split:
            raise ValueError("--dataset needs --split (the split whose inputs to predict, or that holds them)")
        if not (args.input or args.dataset):
            raise ValueError("give --input (images or videos) or --dataset and --split (a catalog split's images)")
        if min(args.batch_size, args.part_rows) < 1:
            raise ValueError("--batch-size and --part-rows: give 1 or more")
        args.out = shared_location(args.out, "--out")
        if args.input:  # the actors read the inputs: a URI or a path every node sees (a relative one in a job: refused)
            args.input = shared_location(args.input, "--input")
        if args.dataset:  # the actors read the split's images from its root: a location every node sees
            from omg.data.catalog import get_entry

            args.root = shared_location(
                args.root or get_entry(args.dataset).resolve_root(), f"the root of {args.dataset}"
            )
        if is_model_uri(args.checkpoint):  # every actor loads the same version
            args.tracking_uri = tracking_uri(args.tracking_uri)
            args.checkpoint = pin_model_uri(args.checkpoint, args.tracking_uri)
        local = resolve_model_uri(args.checkpoint, args.tracking_uri)
        if not uio.exists(local):
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        if not is_model_uri(args.checkpoint):
            args.checkpoint = local = shared_location(local, "--checkpoint")
        items = list_items(args)
        job = Job(
            args.checkpoint,
            checkpoint_digest(local),
            args.task,
            tuple(args.vocabulary) if args.vocabulary else None,
            args.dataset,
            not args.no_overlays,
            args.score_threshold,
            *video_options(args),
        )
        check_job(args.out, job)
    except (ValueError, KeyError, FileNotFoundError) as err:
        return usage_error("predict", err.args[0] if isinstance(err, KeyError) else err)
    except OSError as err:
        return fail("predict", err, 2)
    rows = read_rows(args.out)
    keep = {n for n, r in rows.items() if r["status"] == "ok" or not args.retry_quarantined}
    todo = [it for it in items if it.name not in keep]
    unit = "videos" if args.task in VIDEO_TASKS else "images"
    log.info(f"[predict] {len(items)} {unit}, {len(items) - len(todo)} done before, {len(todo)} to run -> {args.out}")
    stamp = time.strftime("%Y%m%d%H%M%S") + f"-{os.getpid()}"
    try:
        with interruptible():
            if todo:
                run_pool(args, job, todo, stamp)
    except KeyboardInterrupt:
        log.info("[predict] interrupted: the rows written so far are kept; run the same command to resume")
        return 130
    except Exception as err:  # noqa: BLE001 - the cause as the last line
        return fail("predict", err)
    rows = read_rows(args.out)
    missing = [it.name for it in items if it.name not in rows]
    if missing:
        return fail(
            "predict", RuntimeError(f"{len(missing)} {unit} have no row in {items_dir(args.out)}: {missing[:3]}")
        )
    ordered = [rows[it.name] for it in items]
    merge = merge_video_results if args.task in VIDEO_TASKS else image_results
    results = merge(args.out, args.task, ordered)
    bad = [r for r in ordered if r["status"] != "ok"]
    nodes = sorted({r["node"] for r in ordered if r["status"] == "ok"})
    print(
        f"{args.task}: {len(ordered) - len(bad)} {unit} predicted, {len(bad)} quarantined, on {len(nodes)} node(s) "
        f"[{time.monotonic() - t0:.1f}s]; "
        f"{args.out}: {', '.join(results + [items_dir(args.out)])}"
    )
    for r in bad[:10]:
        print(f"  quarantined {r['uri']}: {r['reason']}")
    if len(bad) > 10:
        print(f"  ... and {len(bad) - 10} more (status = 'quarantined' in {items_dir(args.out)})")
    return 0


def image_results(out: str, task: str, ordered: list[dict]) -> list[str]:
    """The run's results file of an image task (panoptic.json, instances_results.json) from the rows, in input
    order, with the categories the actors wrote."""
    done = [
        ImagePrediction(r["name"], json.loads(r["files"]), *map(json.loads(r["result"]).get, ("panoptic", "instances")))
        for r in ordered
        if r["status"] == "ok"
    ]
    for d in done:  # JSON gave lists; panoptic items are (annotation, image entry) pairs
        d.panoptic = tuple(d.panoptic) if d.panoptic else None
    if not done:
        return []
    cats = uio.read_json(uio.join(items_dir(out), "categories.json"))  # the actors': the model is theirs
    return write_results(out, task, done, cats["display"], cats["isthing"], cats["ids"])


if __name__ == "__main__":
    sys.exit(main())
