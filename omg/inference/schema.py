"""One inference schema for every way a model is served: ``omg serve``'s ``POST /api/predict``, the MLflow
pyfunc model (``mlflow models serve``: ``{"inputs": [request, ...]}`` -> ``{"predictions": [response, ...]}``)
and the Ray Serve app. JSON at the edges, typed records in between; the limits and the 4xx errors are
the web server's, in one place.

A request (JSON object)::

    {"task": "panoptic" | "instance" | "semantic" | "interactive" | "vis" | "vps" | "vss" | "vos",
     "image": "<base64 PNG/JPEG>",                  # image tasks
     "frames": ["<base64 PNG/JPEG>", ...],          # video tasks, every frame the same size
     "points": [[x, y], ...], "boxes": [[x0, y0, x1, y1], ...],   # interactive (pixels, XYXY), an object each
     "objects": [{"points": [[x, y], ...], "labels": [1, 0, ...], "box": [x0, y0, x1, y1],
                  "mask": <RLE>}, ...],          # interactive refinement: clicks (1 positive, 0 negative; default
                                                 # all positive), a box and the previous mask of each object, all
                                                 # optional but a positive click or a box (a model with refinement)
     "first_frame": [{"id": 1, "segmentation": <RLE>}, ...],       # vos: the objects in frame 0
     "vocabulary": "circle, disc\\nstuff:sky" | ["circle, disc", "stuff:sky"],  # default: the training one
     "topk": 100, "min_score": 0.0}                # instance / vis: best-scored masks kept

A response::

    {"task": ..., "width": W, "height": H, "frames": T (video), "vocabulary": ["circle", ...],
     "classes": ["circle, disc", "stuff:sky", ...] (the vocabulary used, as a request writes it),
     "segments": [{"id", "category_id", "label", "score", "isthing", "area", "bbox",
                   "segmentation" (image) | "segmentations" (video), "label_score", "label_source" (interactive:
                   "queries" or "clip", see OMGPredictor.prompt_labels)}, ...]}

in the official result conventions: masks as compressed COCO RLE (``counts`` a string), ``bbox`` as COCO
``[x, y, w, h]``, per-frame ``segmentations`` with ``null`` where a track is absent (YouTube-VIS),
``category_id`` indexing ``vocabulary``. Keys whose value is unknown are left out. What each task's
``id`` is: the panoptic / VPS segment id of the id maps; the rank of an instance or track (by score);
the class index + 1 (semantic); the prompt number, points first then boxes, or the object number, from 1
(interactive); the
object id (VOS). Images are decoded strictly and bounded in bytes and pixels before decoding."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from omg.data.masks import coco_bbox, rle_decode, rle_encode, xywh
from omg.inference.objects import ObjectPrompt
from omg.inference.predictor import IMAGE_TASKS, VIDEO_TASKS
from omg.inference.results import (
    InstanceResult,
    InteractiveResult,
    PanopticResult,
    SemanticResult,
    VideoInstanceResult,
    VideoPanopticResult,
    VideoSemanticResult,
    VOSResult,
)
from omg.utils import io as uio

MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class RequestError(Exception):
    """A client mistake (4xx) or a busy server (503, with ``retry_after`` seconds): answered with ``status``
    and the message."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 8 * 1024 * 1024  # an image: an upload, or one inline in a request (base64 adds a third)
    max_pixels: int = uio.MAX_PIXELS  # width x height of an upload
    max_json_bytes: int = 256 * 1024  # a JSON body without images (the page's prompt / segment requests)
    max_prompts: int = 64
    max_clicks: int = 64  # clicks on one object (interactive refinement)
    max_frames: int = 64  # frames of a video request
    max_video_bytes: int = 16 * 1024 * 1024  # a video file upload (omg serve's /api/video)
    max_classes: int = 300  # classes of a vocabulary
    max_vocabulary_chars: int = 20_000  # characters of a vocabulary's text
    cache_bytes: int = 512 * 1024 * 1024  # images and their features kept for prompts
    workers: int = 16  # threads serving requests
    max_pending: int = 256  # connections accepted and waiting for a worker; more get 503
    backlog: int = 1024  # the listen queue (the kernel caps it at net.core.somaxconn)
    read_timeout_s: float = 15.0  # a client silent this long while sending its request is dropped
    model_wait_s: float = 30.0  # longest wait for the model before 503

    @property
    def max_request_bytes(self) -> int:
        """A whole JSON request with its images inline (base64: 4/3 of the bytes)."""
        return self.max_json_bytes + (self.max_bytes * 4) // 3 + 4

    @property
    def max_video_base64(self) -> int:
        """A video upload as base64 (4/3 of ``max_video_bytes``)."""
        return (self.max_video_bytes * 4) // 3 + 4


def decode_upload(data: bytes, limits: Limits, what: str = "upload") -> np.ndarray:
    """PNG/JPEG bytes -> H x W x 3 uint8, strictly: format by magic bytes, size from the header first."""
    if not data:
        raise RequestError(400, f"empty {what}: send a PNG or JPEG file")
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"{what} of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    fmt = next((f for magic, f in MAGIC.items() if data.startswith(magic)), None)
    if fmt is None:
        raise RequestError(415, f"{what}: not a PNG or JPEG file (checked by its first bytes)")
    try:
        image = uio.decode_rgb(data, f"the {fmt} {what}", limits.max_pixels)
    except uio.ImageTooLarge as err:
        raise RequestError(
            413,
            str(err).replace("raise the limit with --max-pixels", "decompression bombs are refused before decoding"),
        ) from None
    except ValueError as err:
        raise RequestError(400, str(err)) from None
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise RequestError(
            400, f"{what}: image of {image.shape[1]}x{image.shape[0]} pixels is too small (at least 8x8)"
        )
    return image


def parse_vocabulary(value: Any, limits: Limits | None = None) -> list[str] | None:
    """A request's vocabulary: a string with one class per line (or ';'), synonyms comma-separated
    ("circle, disc\\nsquare, box"), or a list of such class strings; empty -> None (the training one)."""
    limits = limits or Limits()
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        text = "\n".join(value)
    elif isinstance(value, str):
        text = value
    else:
        raise RequestError(
            400,
            "field 'vocabulary': expected a string, one class per line, synonyms separated by "
            "commas (or a list of such strings)",
        )
    if len(text) > limits.max_vocabulary_chars:
        raise RequestError(413, f"field 'vocabulary': {len(text)} characters, at most {limits.max_vocabulary_chars}")
    classes = [c.strip() for c in text.replace(";", "\n").splitlines() if c.strip()]
    if len(classes) > limits.max_classes:
        raise RequestError(413, f"field 'vocabulary': {len(classes)} classes, at most {limits.max_classes}")
    return classes or None


def number(value: Any, name: str) -> float:
    """A finite JSON number (``true`` is not a coordinate, ``"0.5"`` is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(400, f"{name}: expected a finite number, got {json.dumps(value)[:40]}")
    return float(value)


def _coordinates(value: Any, n: int, name: str, limit: int) -> np.ndarray | None:
    """A list of ``n``-number lists -> K x n float32 (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(
            400,
            f"field '{name}': expected a non-empty list of [{', '.join('xy' if n == 2 else ['x0', 'y0', 'x1', 'y1'])}]",
        )
    if len(value) > limit:
        raise RequestError(400, f"field '{name}': {len(value)} prompts, at most {limit}")
    out = np.zeros((len(value), n), dtype=np.float32)
    for i, v in enumerate(value):
        if not isinstance(v, list) or len(v) != n:
            raise RequestError(400, f"{name}[{i}]: expected {n} numbers, got {json.dumps(v)[:80]}")
        out[i] = [number(c, f"{name}[{i}]") for c in v]
    return out


def _objects(value: Any, size: tuple[int, int], limits: Limits) -> tuple[ObjectPrompt, ...]:
    """The ``objects`` field -> object prompts, each checked (clicks, labels, box inside the image; the mask an RLE
    of the image's size); the errors name ``objects[i].<field>``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise RequestError(400, "field 'objects': expected a non-empty list of objects (points, labels, box, mask)")
    if len(value) > limits.max_prompts:
        raise RequestError(400, f"field 'objects': {len(value)} objects, at most {limits.max_prompts}")
    out = []
    for i, o in enumerate(value):
        name = f"objects[{i}]"
        if not isinstance(o, dict) or set(o) - {"points", "labels", "box", "mask"}:
            raise RequestError(400, f"{name}: expected an object with keys points, labels, box, mask")
        pts = _coordinates(o.get("points"), 2, f"{name}.points", limits.max_clicks)
        labels = o.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or any(isinstance(v, bool) or v not in (0, 1) for v in labels)
        ):
            raise RequestError(400, f"{name}.labels: expected a list of 1 (positive) and 0 (negative)")
        box = _coordinates([o["box"]], 4, f"{name}.box", 1)[0] if o.get("box") is not None else None
        mask = None
        if o.get("mask") is not None:
            try:
                mask = rle_decode(o["mask"]).astype(bool)
            except Exception as err:  # noqa: BLE001 - any malformed RLE is the client's
                raise RequestError(400, f"{name}.mask: not a COCO RLE ({err})") from None
            if mask.shape != size:
                raise RequestError(
                    400, f"{name}.mask is {mask.shape[1]}x{mask.shape[0]}, the image {size[1]}x{size[0]}"
                )
        prompt = ObjectPrompt(() if pts is None else pts, labels, box, mask)
        try:
            prompt.checked(i, size)
        except ValueError as err:
            raise RequestError(400, str(err).replace(f"object {i}:", f"{name}:")) from None
        out.append(prompt)
    return tuple(out)


def _object_json(o: ObjectPrompt) -> dict:
    doc: dict[str, Any] = {"points": np.asarray(o.points, dtype=float).reshape(-1, 2).tolist()}
    if o.labels is not None:
        doc["labels"] = [int(v) for v in o.labels]
    if o.box is not None:
        doc["box"] = [float(v) for v in o.box]
    if o.mask is not None:
        doc["mask"] = rle_encode(np.asarray(o.mask, dtype=bool))
    if not doc["points"]:
        del doc["points"]
    return doc


def decode_image_field(value: Any, name: str, limits: Limits) -> np.ndarray:
    """A request field holding a base64 PNG/JPEG -> H x W x 3 uint8 (bounded and strict as uploads)."""
    if not isinstance(value, str) or not value:
        raise RequestError(400, f"field '{name}': expected a base64-encoded PNG or JPEG file")
    if len(value) > limits.max_request_bytes:
        raise RequestError(
            413, f"field '{name}': {len(value)} base64 characters exceed the limit of {limits.max_bytes} bytes"
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"field '{name}': not valid base64") from None
    return decode_upload(data, limits, f"field '{name}'")


def b64_png(image: np.ndarray) -> str:
    """An image as the base64 PNG a request carries (for clients and tests)."""
    return base64.b64encode(uio.encode_png(image)).decode("ascii")


@dataclass(frozen=True)
class Request:
    """A parsed request. ``images``: one H x W x 3 uint8 image (image tasks) or the video's frames."""

    task: str
    images: tuple[np.ndarray, ...]
    points: np.ndarray | None = None  # P x 2, pixels
    boxes: np.ndarray | None = None  # P x 4, XYXY pixels
    first_frame: tuple[tuple[int, np.ndarray], ...] = ()  # vos: (object id, H x W bool) of frame 0
    vocabulary: tuple[str, ...] | None = None  # class strings (parsed by the predictor against its training one)
    topk: int = 100
    min_score: float = 0.0
    objects: tuple[ObjectPrompt, ...] = ()  # interactive refinement: clicks, box and previous mask per object

    KEYS = ("task", "image", "frames", "points", "boxes", "objects", "first_frame", "vocabulary", "topk", "min_score")

    @property
    def video(self) -> bool:
        return self.task in VIDEO_TASKS

    @classmethod
    def from_json(cls, doc: Any, limits: Limits | None = None) -> "Request":
        limits = limits or Limits()
        if not isinstance(doc, dict):
            raise RequestError(400, "a request must be a JSON object with a 'task'")
        unknown = sorted(set(doc) - set(cls.KEYS))
        if unknown:
            raise RequestError(
                400, f"unknown field(s) {', '.join(map(repr, unknown))}; a request takes {', '.join(cls.KEYS)}"
            )
        task = doc.get("task")
        if task not in IMAGE_TASKS + VIDEO_TASKS:
            raise RequestError(
                400,
                f"field 'task': expected one of {', '.join(IMAGE_TASKS + VIDEO_TASKS)}, got {json.dumps(task)[:40]}",
            )
        if task in VIDEO_TASKS:
            frames = doc.get("frames")
            if "image" in doc:
                raise RequestError(400, f"task {task!r} is a video task: send 'frames', not 'image'")
            if not isinstance(frames, list) or not frames:
                raise RequestError(400, "field 'frames': expected a non-empty list of base64 PNG/JPEG frames")
            if len(frames) > limits.max_frames:
                raise RequestError(413, f"field 'frames': {len(frames)} frames, at most {limits.max_frames}")
            images = tuple(decode_image_field(f, f"frames[{t}]", limits) for t, f in enumerate(frames))
            for t, im in enumerate(images):
                if im.shape != images[0].shape:
                    raise RequestError(
                        400,
                        f"frames[{t}] is {im.shape[1]}x{im.shape[0]}, frames[0] is "
                        f"{images[0].shape[1]}x{images[0].shape[0]}",
                    )
        else:
            if "frames" in doc:
                raise RequestError(400, f"task {task!r} is an image task: send 'image', not 'frames'")
            images = (decode_image_field(doc.get("image"), "image", limits),)
        h, w = images[0].shape[:2]
        points = _coordinates(doc.get("points"), 2, "points", limits.max_prompts)
        boxes = _coordinates(doc.get("boxes"), 4, "boxes", limits.max_prompts)
        objects = _objects(doc.get("objects"), (h, w), limits)
        if task == "interactive":
            if objects and (points is not None or boxes is not None):
                raise RequestError(400, "task 'interactive' takes 'objects', or 'points' and / or 'boxes', not both")
            if points is None and boxes is None and not objects:
                raise RequestError(400, "task 'interactive' needs 'points' and / or 'boxes' (or 'objects')")
            if (0 if points is None else len(points)) + (0 if boxes is None else len(boxes)) > limits.max_prompts:
                raise RequestError(400, f"more than {limits.max_prompts} prompts")
        elif points is not None or boxes is not None or objects:
            raise RequestError(400, f"task {task!r} takes no prompts (use task 'interactive')")
        first = ()
        if task == "vos":
            objs = doc.get("first_frame")
            if not isinstance(objs, list) or not objs:
                raise RequestError(400, "task 'vos' needs 'first_frame': [{\"id\": 1, \"segmentation\": <RLE>}, ...]")
            parsed = []
            for i, o in enumerate(objs):
                if (
                    not isinstance(o, dict)
                    or isinstance(o.get("id"), bool)
                    or not isinstance(o.get("id"), int)
                    or not 0 < o["id"] < 255
                    or not isinstance(o.get("segmentation"), dict)
                ):
                    raise RequestError(400, f'first_frame[{i}]: expected {{"id": 1..254, "segmentation": <RLE>}}')
                try:
                    mask = rle_decode(o["segmentation"])
                except Exception as err:  # noqa: BLE001 - any malformed RLE is the client's
                    raise RequestError(400, f"first_frame[{i}].segmentation: not a COCO RLE ({err})") from None
                if mask.shape != (h, w):
                    raise RequestError(
                        400, f"first_frame[{i}].segmentation is {mask.shape[1]}x{mask.shape[0]}, the frames are {w}x{h}"
                    )
                parsed.append((o["id"], mask.astype(bool)))
            first = tuple(parsed)
        elif "first_frame" in doc:
            raise RequestError(400, f"task {task!r} takes no 'first_frame' (that is task 'vos')")
        vocab = parse_vocabulary(doc.get("vocabulary"), limits)
        topk = doc.get("topk", 100)
        if isinstance(topk, bool) or not isinstance(topk, int) or not 0 < topk <= 1000:
            raise RequestError(400, f"field 'topk': expected an integer in 1..1000, got {json.dumps(topk)[:40]}")
        return cls(
            task,
            images,
            points,
            boxes,
            first,
            tuple(vocab) if vocab else None,
            topk,
            number(doc.get("min_score", 0.0), "field 'min_score'"),
            objects,
        )

    def to_json(self) -> dict:
        """The request as a client sends it (images as base64 PNG)."""
        doc: dict[str, Any] = {"task": self.task}
        if self.video:
            doc["frames"] = [b64_png(f) for f in self.images]
        else:
            doc["image"] = b64_png(self.images[0])
        if self.points is not None:
            doc["points"] = self.points.tolist()
        if self.boxes is not None:
            doc["boxes"] = self.boxes.tolist()
        if self.objects:
            doc["objects"] = [_object_json(o) for o in self.objects]
        if self.first_frame:
            doc["first_frame"] = [{"id": i, "segmentation": rle_encode(m)} for i, m in self.first_frame]
        if self.vocabulary:
            doc["vocabulary"] = list(self.vocabulary)
        if self.topk != 100:
            doc["topk"] = self.topk
        if self.min_score:
            doc["min_score"] = self.min_score
        return doc


@dataclass(frozen=True)
class Segment:
    """One mask (image) or track (video) of a response; see the module docstring for what ``id`` is."""

    id: int
    area: int
    bbox: list  # COCO [x, y, w, h]; of the first frame present for video
    segmentation: dict | None = None  # image: compressed RLE
    segmentations: list | None = None  # video: one RLE or None per frame
    category_id: int | None = None
    label: str | None = None
    score: float | None = None
    isthing: bool | None = None
    label_score: float | None = None
    label_source: str | None = None  # interactive: "queries" or "clip" (InteractiveResult.label_sources)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Response:
    task: str
    width: int
    height: int
    segments: list[Segment] = field(default_factory=list)
    vocabulary: list[str] | None = None
    frames: int | None = None
    #: the vocabulary the answer used, as a request writes it (synonyms, ``stuff:``; :meth:`Vocabulary.items`), so a
    #: client can send it back unchanged (the web page in front of a remote model shows it)
    classes: list[str] | None = None

    def to_json(self) -> dict:
        doc: dict[str, Any] = {"task": self.task, "width": self.width, "height": self.height}
        if self.frames is not None:
            doc["frames"] = self.frames
        if self.vocabulary is not None:
            doc["vocabulary"] = list(self.vocabulary)
        if self.classes is not None:
            doc["classes"] = list(self.classes)
        doc["segments"] = [s.to_json() for s in self.segments]
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> "Response":
        names = {f.name for f in fields(Segment)}
        return cls(
            doc["task"],
            doc["width"],
            doc["height"],
            [Segment(**{k: v for k, v in s.items() if k in names}) for s in doc["segments"]],
            doc.get("vocabulary"),
            doc.get("frames"),
            doc.get("classes"),
        )

    def masks(self) -> np.ndarray:
        """K x H x W bool (image) or K x T x H x W bool (video), the segments' masks decoded."""
        if self.frames is None:
            return (
                np.stack([rle_decode(s.segmentation) for s in self.segments])
                if self.segments
                else np.zeros((0, self.height, self.width), bool)
            )
        empty = np.zeros((self.height, self.width), bool)
        return (
            np.stack([np.stack([rle_decode(r) if r else empty for r in s.segmentations]) for s in self.segments])
            if self.segments
            else np.zeros((0, self.frames, self.height, self.width), bool)
        )


# ----------------------------------------------------------------------------------- results -> response


def _f(x) -> float:
    return round(float(x), 6)


def _video_track(masks: np.ndarray) -> tuple[list, int, list]:
    """T x H x W bool -> (per-frame RLE or None, area, bbox of the first frame present)."""
    rles = [rle_encode(m) if m.any() else None for m in masks]
    first = next((m for m in masks if m.any()), masks[0])
    return rles, int(masks.sum()), coco_bbox(first)


def to_response(req: Request, result: Any) -> Response:
    """A typed prediction result -> the schema's response (``min_score`` applied to instances and tracks)."""
    h, w = req.images[0].shape[:2]
    t = len(req.images) if req.video else None
    segs: list[Segment] = []
    vocab = getattr(result, "vocabulary", None)
    if isinstance(result, PanopticResult):
        for s in result.segments:
            segs.append(
                Segment(
                    s.id,
                    s.area,
                    xywh(s.box),
                    segmentation=result.rles[s.id],
                    category_id=int(s.label),
                    label=s.name,
                    score=_f(s.score),
                    isthing=bool(s.isthing),
                )
            )
    elif isinstance(result, InstanceResult):
        keep = [k for k in range(len(result.scores)) if result.scores[k] >= req.min_score]
        for n, k in enumerate(keep, 1):
            m = result.masks[k]
            segs.append(
                Segment(
                    n,
                    int(m.sum()),
                    coco_bbox(m),
                    segmentation=result.rles[k],
                    category_id=int(result.labels[k]),
                    label=result.names[k],
                    score=_f(result.scores[k]),
                    isthing=True,
                )
            )
    elif isinstance(result, SemanticResult):
        for c in np.unique(result.labels):
            if c < 0:
                continue
            m = result.labels == c
            segs.append(
                Segment(
                    int(c) + 1,
                    int(m.sum()),
                    coco_bbox(m),
                    segmentation=rle_encode(m),
                    category_id=int(c),
                    label=result.vocabulary[c],
                )
            )
    elif isinstance(result, InteractiveResult):
        for k, m in enumerate(result.masks):
            named = result.names is not None
            segs.append(
                Segment(
                    k + 1,
                    int(m.sum()),
                    coco_bbox(m),
                    segmentation=result.rles[k],
                    category_id=int(result.labels[k]) if named else None,
                    label=result.names[k] if named else None,
                    score=_f(result.scores[k]),
                    label_score=_f(result.label_scores[k]) if named else None,
                    label_source=result.label_sources[k] if named else None,
                )
            )
    elif isinstance(result, VideoInstanceResult):
        keep = [k for k in range(len(result.scores)) if result.scores[k] >= req.min_score]
        for n, k in enumerate(keep, 1):
            rles, area, box = _video_track(result.masks[k])
            segs.append(
                Segment(
                    n,
                    area,
                    box,
                    segmentations=rles,
                    category_id=int(result.labels[k]),
                    label=result.names[k],
                    score=_f(result.scores[k]),
                    isthing=True,
                )
            )
    elif isinstance(result, VideoPanopticResult):
        for s in result.segments:
            rles, area, box = _video_track(result.panoptic == s.id)
            segs.append(
                Segment(
                    s.id,
                    area,
                    box,
                    segmentations=rles,
                    category_id=int(s.label),
                    label=s.name,
                    score=_f(s.score),
                    isthing=bool(s.isthing),
                )
            )
    elif isinstance(result, VideoSemanticResult):
        for c in np.unique(result.labels):
            if c < 0:
                continue
            rles, area, box = _video_track(result.labels == c)
            segs.append(
                Segment(int(c) + 1, area, box, segmentations=rles, category_id=int(c), label=result.vocabulary[c])
            )
    elif isinstance(result, VOSResult):
        for oid in result.object_ids:
            rles, area, box = _video_track(result.masks == oid)
            segs.append(Segment(int(oid), area, box, segmentations=rles))
    else:
        raise TypeError(f"no response for a {type(result).__name__}")
    return Response(req.task, w, h, segs, list(vocab) if vocab is not None else None, t)


def predict(predictor, req: Request, state: Any = None) -> Response:
    """Run ``req`` on ``predictor`` (an :class:`~omg.inference.predictor.OMGPredictor`, whose model may be the
    exported runtime's). ``state``: the request's image's :class:`~omg.inference.predictor.ImageState`, which the
    caller holds (a feature cache), so the image is not encoded again. A request the model cannot take (an unknown
    class word, a prompt outside the image) is a 400."""
    try:
        kw: dict[str, Any] = {}
        if req.video:
            kw["state"] = predictor.set_video(list(req.images))
        else:
            kw["state"] = state if state is not None else predictor.set_image(req.images[0])
        if req.task != "vos":
            kw["vocabulary"] = list(req.vocabulary) if req.vocabulary else None
        if req.task == "interactive":
            # without a vocabulary the masks are named with the training one (None: a checkpoint without one)
            kw["vocabulary"] = kw["vocabulary"] or predictor.training_vocabulary
            if req.objects:
                kw["objects"] = list(req.objects)
            else:
                kw.update(points=req.points, boxes=req.boxes)
        if req.task in ("instance", "vis"):
            kw["topk"] = req.topk
        if req.task == "vos":
            kw.update(
                first_frame_masks=np.stack([m for _, m in req.first_frame]), object_ids=[i for i, _ in req.first_frame]
            )
        result = predictor.predict(req.task, **kw)
        classes = classes_of(predictor, req.task, kw.get("vocabulary"))
    except ValueError as err:
        raise RequestError(400, str(err)) from None
    return dataclasses.replace(to_response(req, result), classes=classes)


def classes_of(predictor, task: str, vocabulary) -> list[str] | None:
    """The ``classes`` of a response: the vocabulary a task ran with, as a request writes it (None for VOS, which
    has none, and for a checkpoint without a training vocabulary asked with none)."""
    if task == "vos" or (vocabulary is None and predictor.training_vocabulary is None):
        return None
    return predictor.vocabulary(vocabulary).items()


__all__ = [
    "IMAGE_TASKS",
    "VIDEO_TASKS",
    "Limits",
    "Request",
    "RequestError",
    "Response",
    "Segment",
    "b64_png",
    "decode_upload",
    "number",
    "parse_vocabulary",
    "classes_of",
    "predict",
    "to_response",
]
