"""Predict at dataset scale with Ray Data: images from any URI (or a catalog split) -> a pool of predictor actors
-> the task's official files, written as they come, and a Parquet table of what each image gave.

    python -m omg_platform.pipelines.predict --checkpoint runs/demo/model.pt --task panoptic \\
        --input s3://bucket/photos/ --out s3://bucket/predictions/photos
    python -m omg_platform.pipelines.predict --checkpoint models:/omg-seg/1 --task instance \\
        --dataset coco-panoptic --split val --out s3://bucket/predictions/coco-val --actors 2:8 --gpus-per-actor 0.5
    ray job submit --working-dir . -- python -m omg_platform.pipelines.predict ...

Each actor loads the model once and predicts batches of images (decoded in the actor, from wherever they are);
Ray Data streams the images to the actors, scales the pool between ``--actors MIN:MAX``, and restarts an actor
that dies (its batch runs again). ``--out`` receives what ``omg predict`` writes for the same images, byte for
byte: ``panoptic/*.png`` + ``panoptic.json``, ``instances_results.json``, ``semantic/*.png``, ``overlays/``;
and ``items/part-*.parquet``, a row per image: its index and name, its id in the results, status ``ok`` or
``quarantined`` with the reason (a file that is missing, not an image, or too large), its part of the results
file, the seconds it took and the node that predicted it.

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

from omg.commands.predict import ImagePrediction, dataset_ids, predict_image, task_vocabulary, write_results
from omg.env import apply_env_defaults
from omg.utils import io as uio
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging
from omg.utils.progress import Progress
from omg_platform.errors import describe, fail, interruptible, usage_error
from omg_platform.pipelines.cluster import shared_location

log = get_logger(__name__)

#: the tasks predicted here (one image each, no prompts); videos: ``omg predict`` streams them
TASKS = ("panoptic", "instance", "semantic")


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

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["vocabulary"] = list(self.vocabulary) if self.vocabulary else None
        return d


@dataclass(frozen=True)
class Item:
    """One image to predict: its place in the input order, name (file stem), id in the results and location."""

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


class ImageBatchPredictor:
    """The Ray Data actor: the model loaded once, then batches of items -> their rows (the files written). Its
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
    def bound(cls, settings: ActorSettings) -> type[ImageBatchPredictor]:
        return type(cls.__name__, (cls,), {"settings": settings, "__module__": cls.__module__})

    def __call__(self, batch: dict) -> dict:
        from omg.inference.media import load_image

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
                image = load_image(str(uri), self.max_pixels)
            except (ValueError, OSError) as err:  # the input is bad: quarantined, the job goes on
                rows.append({**row, "status": "quarantined", "reason": describe(err), "result": "", "files": "[]"})
            else:
                done = predict_image(
                    self.predictor,
                    self.job.task,
                    image,
                    str(name),
                    json.loads(str(image_id)),
                    self.vocab,
                    self.cat_ids,
                    self.out,
                    self.job.overlays,
                    self.job.score_threshold,
                )
                result = json.dumps({"panoptic": done.panoptic, "instances": done.instances})
                rows.append({**row, "status": "ok", "reason": "", "result": result, "files": json.dumps(done.files)})
            rows[-1]["seconds"] = time.monotonic() - t0
        return {k: [r[k] for r in rows] for k in ROW_FIELDS}


ROW_FIELDS = ("index", "name", "image_id", "uri", "status", "reason", "result", "files", "seconds", "node")


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
    """The images of ``--input`` (a file or folder; any URI) or of ``--dataset``'s ``--split``, in order, with their
    ids as ``omg predict`` gives them."""
    from omg.inference.media import list_images

    if args.input:
        files = list_images(args.input) if (args.input.endswith("/") or uio.isdir(args.input)) else [args.input]
    else:
        from omg.data.catalog import get_entry
        from omg.data.formats import get_reader

        entry = get_entry(args.dataset)
        if args.split not in entry.splits:
            raise ValueError(f"--split {args.split!r}: {args.dataset} has the splits {', '.join(entry.splits)}")
        reader = get_reader(entry, args.split, args.root)
        files = [uio.join(reader.paths["images"], it["image"]) for it in reader.items()]
    files = files[: args.limit]
    names = [Path(f).stem for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two images named {twice[0]!r}: their results would overwrite each other")
    ids = dataset_ids(args.dataset, args.split, names, False, args.root) if args.dataset else None
    ids = ids or {n: k for k, n in enumerate(names, start=1)}
    return [Item(k, n, ids[n], f) for k, (n, f) in enumerate(zip(names, files))]


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
        ImageBatchPredictor.bound(settings),
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
    with Progress(f"predict {job.task}", total=len(todo), unit="img", enabled=not args.quiet) as prog:
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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="an image or a folder of images: a path or any fsspec URI (s3://...)")
    src.add_argument("--dataset", help="a catalog dataset: predict its --split's images, with its classes and ids")
    p.add_argument("--split", help="with --dataset: the split (with --input: the split the images are from)")
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
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="quarantine larger images (header check)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ checkpoints")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started by this script")
    p.add_argument("--quiet", action="store_true")
    return p


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
            raise ValueError("--dataset needs --split (the split whose images to predict)")
        if min(args.batch_size, args.part_rows) < 1:
            raise ValueError("--batch-size and --part-rows: give 1 or more")
        args.out = shared_location(args.out, "--out")
        if args.root:
            args.root = shared_location(args.root, "--root")
        if is_model_uri(args.checkpoint):  # every actor loads the same version
            args.tracking_uri = tracking_uri(args.tracking_uri)
            args.checkpoint = pin_model_uri(args.checkpoint, args.tracking_uri)
        local = resolve_model_uri(args.checkpoint, args.tracking_uri)
        if not uio.exists(local):
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        if not is_model_uri(args.checkpoint):
            args.checkpoint = local = shared_location(local, "--checkpoint")
        items = list_items(args)
        if args.input and "://" not in args.input:  # the actors read the images: a path every node sees
            items = [Item(it.index, it.name, it.image_id, os.path.abspath(it.uri)) for it in items]
        job = Job(
            args.checkpoint,
            checkpoint_digest(local),
            args.task,
            tuple(args.vocabulary) if args.vocabulary else None,
            args.dataset,
            not args.no_overlays,
            args.score_threshold,
        )
        check_job(args.out, job)
    except (ValueError, KeyError, FileNotFoundError) as err:
        return usage_error("predict", err.args[0] if isinstance(err, KeyError) else err)
    except OSError as err:
        return fail("predict", err, 2)
    rows = read_rows(args.out)
    keep = {n for n, r in rows.items() if r["status"] == "ok" or not args.retry_quarantined}
    todo = [it for it in items if it.name not in keep]
    log.info(f"[predict] {len(items)} images, {len(items) - len(todo)} done before, {len(todo)} to run -> {args.out}")
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
            "predict", RuntimeError(f"{len(missing)} images have no row in {items_dir(args.out)}: {missing[:3]}")
        )
    ordered = [rows[it.name] for it in items]
    done = [
        ImagePrediction(r["name"], json.loads(r["files"]), *map(json.loads(r["result"]).get, ("panoptic", "instances")))
        for r in ordered
        if r["status"] == "ok"
    ]
    for d in done:  # JSON gave lists; panoptic items are (annotation, image entry) pairs
        d.panoptic = tuple(d.panoptic) if d.panoptic else None
    cats = uio.read_json(uio.join(items_dir(args.out), "categories.json"))  # the actors': the model is theirs
    results = write_results(args.out, args.task, done, cats["display"], cats["isthing"], cats["ids"])
    bad = [r for r in ordered if r["status"] != "ok"]
    nodes = sorted({r["node"] for r in ordered if r["status"] == "ok"})
    print(
        f"{args.task}: {len(done)} images predicted, {len(bad)} quarantined, on {len(nodes)} node(s) "
        f"[{time.monotonic() - t0:.1f}s]; {args.out}: {', '.join(results + [items_dir(args.out)])}"
    )
    for r in bad[:10]:
        print(f"  quarantined {r['uri']}: {r['reason']}")
    if len(bad) > 10:
        print(f"  ... and {len(bad) - 10} more (status = 'quarantined' in {items_dir(args.out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
