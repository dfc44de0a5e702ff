"""`omg serve`: a small web app around :class:`~omg.inference.predictor.OMGPredictor`.

A person picks an omg-shapes sample or uploads a PNG/JPEG, clicks points and drags boxes, and sees
each prompted mask with its open-vocabulary label; or switches to panoptic / instance / semantic
mode for the whole image. This module is the app (the image cache, the model lock, the endpoints, for any
transport); its pieces beside it: :mod:`omg.serve.server` (the HTTP server, loopback by default),
:mod:`omg.serve.drawing` (overlays and PNGs), :mod:`omg.serve.remote` (a model behind another server).

Endpoints (JSON unless noted; errors are ``{"error": "..."}`` with a 4xx/5xx status):

``GET  /``                   the page
``GET  /api/info``           checkpoint, default vocabulary, samples, limits
``GET  /api/sample/NAME``    a sample image (PNG)
``POST /api/image``          body: PNG/JPEG bytes, or JSON ``{"sample": NAME}``
                             -> ``{"image_id", "width", "height", "ms"}``
``POST /api/prompt``         ``{"image_id", "prompts": [{"point": [x, y]} | {"box": [x0, y0, x1, y1]} |
                             {"clicks": [[x, y, 1 | 0], ...], "box": optional}], "vocabulary"}``: a point or a box is
                             an object; "clicks" are one object's positive (1) and negative (0) clicks in the order
                             they were made (a model with refinement: each click refines the mask of the one before)
``POST /api/segment``        ``{"image_id", "task": "panoptic"|"instance"|"semantic", "vocabulary"}``
                             (both also take ``"image"``, the image as base64, used when the server does not
                             know ``image_id``: a replica of several; the answer's ``image_id`` is then a new one)
``POST /api/predict``        a request of :mod:`omg.inference.schema` (any task, the image inline) -> its response:
                             the API the MLflow pyfunc model and the Ray Serve app speak too
``POST /api/video``          ``{"task": "vis"|"vps"|"vss", "video": a short video file as base64, "vocabulary"}`` ->
                             the overlay as a WebM to play back (base64), legend, frames, fps (:meth:`ServeApp.video`)

Image features are computed once per image (``/api/image``) and kept in an in-memory LRU sized in
bytes (``cache_bytes``); a prompt or a mode switch only runs the decoder. An image evicted from it
answers 410 "image expired, upload it again". Results carry an RGBA overlay PNG, a label-map PNG
(pixel value = prompt or segment number, 0 = nothing) and the per-mask records, all base64.

Safety: uploads are capped in bytes (``max_bytes``; a video ``max_video_bytes`` and ``max_frames``) and pixels
(``max_pixels``, checked from the header before decoding: decompression bombs never decode), decoded strictly (PNG
or JPEG by magic bytes, truncated files rejected), kept in memory only (nothing is written to disk), and forgotten
on restart. A vocabulary is capped in classes and characters; its text embedding is computed outside
the model lock (one vocabulary at a time, cached per synonym), so a large new vocabulary never makes
another user's click wait.

Under load: a listen backlog of ``backlog`` connections, a bounded pool of ``workers`` threads, at most
``max_pending`` connections accepted and waiting; beyond that, and when a request waits longer than
``model_wait_s`` for the model, the answer is 503 with ``Retry-After``. A client that stalls for
``read_timeout_s`` while sending its request is disconnected.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from omg.data.masks import mask_box, rle_decode
from omg.inference import schema
from omg.inference.objects import ObjectPrompt
from omg.inference.schema import Limits, RequestError, decode_upload, number, parse_vocabulary
from omg.serve.drawing import ALPHA, overlay, palette, png_b64
from omg.serve.remote import RemoteModel
from omg.utils import io as uio

PAGE = Path(__file__).with_name("page.html")
TASKS = ("panoptic", "instance", "semantic")
#: what the page runs on an uploaded video (VOS needs the first frame's objects)
VIDEO_TASKS = ("vis", "vps", "vss")


def nbytes(obj: Any) -> int:
    """Bytes held by the arrays and tensors inside ``obj`` (dataclasses, dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if is_dataclass(obj):
        return sum(nbytes(getattr(obj, f.name)) for f in fields(obj))
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


class ServeApp:
    """The model side of the server: image cache, prompts, whole-image tasks. Thread-safe."""

    def __init__(
        self,
        predictor,
        samples: dict[str, str] | None = None,
        limits: Limits | None = None,
        checkpoint: str = "",
        id_prefix: str = "",
        remote: RemoteModel | None = None,
    ):
        """``predictor``: the model in this process; or ``remote``: a model behind another server that speaks the
        inference schema (``mlflow models serve``, the Ray Serve app), with ``predictor`` None."""
        if (predictor is None) == (remote is None):
            raise ValueError("ServeApp needs a predictor or a remote model, not both")
        self.predictor, self.remote = predictor, remote
        self.samples = dict(samples or {})
        self.limits = limits or Limits()
        self.checkpoint = checkpoint
        self._lock = threading.Lock()  # the model: one forward at a time
        self._text_lock = threading.Lock()  # new vocabularies' text embeddings: one at a time, beside the model
        self._cache_lock = threading.Lock()
        self._images: OrderedDict[str, tuple[np.ndarray, Any, int]] = OrderedDict()
        self._cached_bytes = 0
        self._counter = 0
        #: image ids are f"{id_prefix}img{N}": one replica of several gives each its own prefix, so an id is never
        #: another replica's (that replica answers 404, and the page resends the image inline, see :meth:`_use`)
        self.id_prefix = id_prefix
        if remote is not None:
            self.default_vocabulary = "\n".join(remote.vocabulary())
        else:
            tv = predictor.training_vocabulary
            self.default_vocabulary = "\n".join(tv.items()) if tv else ""

    # ------------------------------------------------------------------ the model
    @contextlib.contextmanager
    def using_model(self) -> Iterator[None]:
        """The model lock, or 503 when it stays busy for ``model_wait_s``."""
        if not self._lock.acquire(timeout=self.limits.model_wait_s):
            raise RequestError(503, f"the model has been busy for {self.limits.model_wait_s:g} s; retry", retry_after=2)
        try:
            yield
        finally:
            self._lock.release()

    def _vocabulary(self, text: Any) -> list[str] | None:
        """Parse a request's vocabulary and embed it now, outside the model lock (then the prediction finds
        the embedding in the predictor's cache)."""
        classes = parse_vocabulary(text, self.limits)
        if classes is not None and self.predictor is not None:
            try:
                vocab = self.predictor.vocabulary(classes)
            except ValueError as err:
                raise RequestError(400, f"field 'vocabulary': {err}") from None
            with self._text_lock:
                self.predictor.embedder.embed(vocab)
        return classes

    # ------------------------------------------------------------------ images
    def info(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "vocabulary": self.default_vocabulary,
            "samples": sorted(self.samples),
            # None: a remote model (not known here)
            "clip_pretrained": None if self.predictor is None else self.predictor.clip_pretrained,
            # positive and negative clicks refine an object (docs/model.md §7.3); None: a remote model
            "refinement": None if self.predictor is None else self.predictor.model.refinement is not None,
            "tasks": list(TASKS),
            "video_tasks": list(VIDEO_TASKS),
            "overlay_alpha": round(ALPHA / 255, 3),  # the masks' fill opacity: the legend's swatches are drawn so
            "limits": {
                "max_bytes": self.limits.max_bytes,
                "max_pixels": self.limits.max_pixels,
                "max_frames": self.limits.max_frames,
                "max_video_bytes": self.limits.max_video_bytes,
                "max_prompts": self.limits.max_prompts,
                "max_classes": self.limits.max_classes,
                "cache_bytes": self.limits.cache_bytes,
            },
        }

    def sample_png(self, name: str) -> bytes:
        if name not in self.samples:
            raise RequestError(404, f"no sample {name!r} (GET /api/info lists them)")
        img = Image.open(io.BytesIO(uio.read_bytes(self.samples[name])))
        img.load()
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        return buf.getvalue()

    def add_image(self, image: np.ndarray) -> dict:
        t0 = time.perf_counter()
        state = None
        if self.predictor is not None:
            with self.using_model():
                state = self.predictor.set_image(image)
        image_id = self._new_id()
        self._keep(image_id, image, state)
        return {
            "image_id": image_id,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    def _keep(self, key: str, image: np.ndarray, state: Any) -> None:
        """Cache an image's features under ``key``, evicting the least recently used beyond ``cache_bytes``."""
        size = image.nbytes + nbytes(state)
        with self._cache_lock:
            if key in self._images:
                self._cached_bytes -= self._images.pop(key)[2]
            self._images[key] = (image, state, size)
            self._cached_bytes += size
            while self._cached_bytes > self.limits.cache_bytes and len(self._images) > 1:
                _, (_, _, freed) = self._images.popitem(last=False)
                self._cached_bytes -= freed

    def _new_id(self) -> str:
        with self._cache_lock:
            self._counter += 1
            return f"{self.id_prefix}img{self._counter}"

    def _use(self, image_id: Any, inline: Any = None) -> tuple[np.ndarray, str, Any]:
        """A cached image: (image, its id, its features' state with a local model, else None; a new image's features
        are computed, so the caller then holds the model lock). ``inline``: the image itself (base64), sent by the
        page when this server does not know ``image_id`` (one replica of several: the upload went to another): it is
        kept under a new id of this server's."""
        with self._cache_lock:
            local = (
                image_id[len(self.id_prefix) :]
                if isinstance(image_id, str) and image_id.startswith(self.id_prefix)
                else None
            )
            hit = self._images.get(image_id) if isinstance(image_id, str) else None
            if hit is not None:
                self._images.move_to_end(image_id)
            elif inline is None:
                if local and local.startswith("img") and local[3:].isdigit() and 0 < int(local[3:]) <= self._counter:
                    raise RequestError(
                        410,
                        f"image {image_id} expired: the server keeps the most recent "
                        f"{self.limits.cache_bytes // (1 << 20)} MiB of images; upload it again",
                    )
                raise RequestError(404, f"unknown image_id {image_id!r}: POST the image to /api/image first")
        if hit is None:
            image = schema.decode_image_field(inline, "image", self.limits)
            state = None if self.predictor is None else self.predictor.set_image(image)
            image_id = self._new_id()
            self._keep(image_id, image, state)
            return image, image_id, state
        image, state, _ = hit
        return image, image_id, state

    def _answer(self, image_id: Any, inline: Any, make) -> tuple[schema.Response, np.ndarray, str, float]:
        """(response, image, image id, ms) of the schema request ``make(image)`` about a cached image, from the
        local predictor (on the image's cached features, under the model lock) or the remote model."""
        t0 = time.perf_counter()
        if self.predictor is None:  # no model here: the cache has its own lock
            image, image_id, _ = self._use(image_id, inline)
            res = self.remote(make(image))
        else:
            with self.using_model():
                image, image_id, state = self._use(image_id, inline)
                res = schema.predict(self.predictor, make(image), state)
        return res, image, image_id, (time.perf_counter() - t0) * 1000

    # ------------------------------------------------------------------ prompts
    def prompt(self, body: dict) -> dict:
        prompts = body.get("prompts")
        expected = '{"point": [x, y]}, {"box": [x0, y0, x1, y1]} or {"clicks": [[x, y, 1 or 0], ...]}'
        if not isinstance(prompts, list) or not prompts:
            raise RequestError(400, f"field 'prompts': expected a non-empty list of {expected}")
        if len(prompts) > self.limits.max_prompts:
            raise RequestError(400, f"field 'prompts': {len(prompts)} prompts, at most {self.limits.max_prompts}")

        def numbers(value, n: int) -> bool:
            return (
                isinstance(value, list)
                and len(value) == n
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            )

        points, boxes, order, objects = [], [], [], []
        for i, p in enumerate(prompts):
            kind = next((k for k in ("clicks", "point", "box") if isinstance(p, dict) and k in p), None)
            if kind == "clicks":
                clicks, box = p["clicks"], p.get("box")
                if (
                    not isinstance(clicks, list)
                    or not clicks
                    or len(clicks) > self.limits.max_clicks
                    or not all(numbers(c, 3) and c[2] in (0, 1) for c in clicks)
                    or (box is not None and not numbers(box, 4))
                ):
                    raise RequestError(
                        400,
                        f'prompts[{i}]: expected {{"clicks": [[x, y, 1 or 0], ...]}} (at most '
                        f"{self.limits.max_clicks} clicks) and an optional box, got {json.dumps(p)[:80]}",
                    )
                objects.append(ObjectPrompt([c[:2] for c in clicks], [int(c[2]) for c in clicks], box))
                continue
            value = p.get(kind) if kind else None
            if kind is None or not numbers(value, 2 if kind == "point" else 4):
                raise RequestError(400, f"prompts[{i}]: expected {expected} with numbers, got {json.dumps(p)[:80]}")
            (points if kind == "point" else boxes).append([float(v) for v in value])
            objects.append(ObjectPrompt([value]) if kind == "point" else ObjectPrompt(box=value))
            order.append((kind, len(points if kind == "point" else boxes) - 1))
        vocab = self._vocabulary(body.get("vocabulary"))
        refine = len(order) < len(objects)  # clicks: every prompt an object, in the request's order

        def request(image):
            if refine:
                return schema.Request(
                    "interactive", (image,), vocabulary=tuple(vocab) if vocab else None, objects=tuple(objects)
                )
            return schema.Request(
                "interactive",
                (image,),
                np.array(points, np.float32) if points else None,
                np.array(boxes, np.float32) if boxes else None,
                vocabulary=tuple(vocab) if vocab else None,
            )

        res, image, image_id, ms = self._answer(body.get("image_id"), body.get("image"), request)
        # the answer lists points first, then boxes: back to the order of the request
        index = (
            list(range(len(objects))) if refine else [k if kind == "point" else len(points) + k for kind, k in order]
        )
        h, w = image.shape[:2]
        label_map = np.zeros((h, w), dtype=np.uint8)
        colors = palette(len(index))
        masks = []
        for n, k in enumerate(index, 1):  # later prompts are drawn over earlier ones
            seg = res.segments[k]
            m = rle_decode(seg.segmentation)
            label_map[m] = n
            rec = {
                "prompt": n,
                "score": round(float(seg.score), 4),
                "area": int(seg.area),
                "color": "#%02x%02x%02x" % tuple(int(c) for c in colors[n - 1]),
                "bbox": mask_box(m),
            }
            if seg.label is not None:
                rec.update(label=seg.label, label_score=round(float(seg.label_score), 4), label_source=seg.label_source)
            masks.append(rec)
        return {
            "masks": masks,
            "overlay_png": png_b64(overlay(label_map, colors)),
            "label_png": png_b64(label_map),
            "ms": round(ms, 1),
            "width": w,
            "height": h,
            "image_id": image_id,
        }

    # ------------------------------------------------------------------ the inference schema
    def predict(self, doc: Any) -> dict:
        """``POST /api/predict``: one request of :mod:`omg.inference.schema` (stateless for the client). An image's
        features stay in the cache under its content's digest, so further prompts on it only run the decoder."""
        req = schema.Request.from_json(doc, self.limits)
        if self.remote is not None:
            return self.remote(req).to_json()
        if req.vocabulary:
            self._vocabulary(list(req.vocabulary))
        with self.using_model():
            if req.video:
                return schema.predict(self.predictor, req).to_json()
            image = req.images[0]
            key = "sha1:" + hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()
            with self._cache_lock:
                hit = self._images.get(key)
                if hit is not None:
                    self._images.move_to_end(key)
            if hit is not None:
                state = hit[1]
            else:
                state = self.predictor.set_image(image)
                self._keep(key, image, state)
            return schema.predict(self.predictor, req, state).to_json()

    def predict_batch(self, reqs: list[schema.Request]) -> list[schema.Response]:
        """Whole-image requests with one task, vocabulary and options (``schema.Request``s) in one forward pass: the
        Ray Serve app's batching (``omg_platform/pipelines/serve.py``). A request the model cannot take is a 400 for
        all."""
        first = reqs[0]
        if (
            first.video
            or first.task == "interactive"
            or self.predictor is None
            or any(
                (r.task, r.vocabulary, r.topk, r.min_score)
                != (first.task, first.vocabulary, first.topk, first.min_score)
                for r in reqs
            )
        ):
            raise ValueError("predict_batch takes local whole-image requests with one task, vocabulary and options")
        if first.vocabulary:
            self._vocabulary(list(first.vocabulary))
        kw: dict[str, Any] = {"vocabulary": list(first.vocabulary) if first.vocabulary else None}
        if first.task == "instance":
            kw["topk"] = first.topk
        with self.using_model():
            self.predictor.set_image([r.images[0] for r in reqs])
            try:
                results = self.predictor.predict(first.task, **kw)
            except ValueError as err:
                raise RequestError(400, str(err)) from None
            classes = schema.classes_of(self.predictor, first.task, kw["vocabulary"])
        return [dataclasses.replace(schema.to_response(r, res), classes=classes) for r, res in zip(reqs, results)]

    # ------------------------------------------------------------------ whole image
    def segment(self, body: dict) -> dict:
        task = body.get("task")
        if task not in TASKS:
            raise RequestError(400, f"field 'task': expected one of {', '.join(TASKS)}, got {task!r}")
        min_score = number(body.get("min_score", 0.3), "field 'min_score'")
        vocab = self._vocabulary(body.get("vocabulary"))
        res, image, image_id, ms = self._answer(
            body.get("image_id"),
            body.get("image"),
            lambda image: schema.Request(
                task,
                (image,),
                vocabulary=tuple(vocab) if vocab else None,
                min_score=min_score if task == "instance" else 0.0,
            ),
        )
        h, w = image.shape[:2]
        legend = []
        label_map = np.zeros((h, w), dtype=np.int32)
        segs = res.segments[:50] if task == "instance" else res.segments
        if task == "instance":  # best scores drawn last, on top
            segs = segs[::-1]
        for n, seg in enumerate(segs, 1):
            label_map[rle_decode(seg.segmentation)] = n
            rec = {"id": n, "name": seg.label}
            if task != "semantic":
                rec["score"] = round(float(seg.score), 4)
            rec["area"] = int(seg.area)
            if task == "panoptic":
                rec["isthing"] = seg.isthing
            legend.append(rec)
        if task == "instance":
            legend.reverse()
        colors = palette(len(legend))
        for rec in legend:
            rec["color"] = "#%02x%02x%02x" % tuple(int(c) for c in colors[rec["id"] - 1])
        return {
            "task": task,
            "legend": legend,
            "overlay_png": png_b64(overlay(label_map, colors)),
            "label_png": png_b64(label_map.astype(np.uint8 if len(legend) < 256 else np.uint16)),
            "ms": round(ms, 1),
            "width": w,
            "height": h,
            "image_id": image_id,
        }

    # ------------------------------------------------------------------ a short video
    def video(self, doc: dict) -> dict:
        """``POST /api/video``: ``{"task": "vis" | "vps" | "vss", "video": a short video file as base64 (mp4, webm,
        mov ...), "vocabulary"?, "min_score"?}`` -> the video's overlay to play back (``overlay_webm``: a VP9 WebM as
        base64), its legend, frames, fps and ms. Bounded: ``max_video_bytes``, ``max_frames`` frames, ``max_pixels``
        a frame (from the stream's header, before decoding). The overlay is drawn from the schema's response, so a
        remote model (``--backend``) answers the same way."""
        from omg.inference.media import VideoTooLarge, encode_video, read_video_bytes

        task = doc.get("task")
        if task not in VIDEO_TASKS:
            raise RequestError(400, f"field 'task': expected one of {', '.join(VIDEO_TASKS)}, got {task!r}")
        raw = doc.get("video")
        if not isinstance(raw, str) or not raw:
            raise RequestError(400, "field 'video': expected a video file as base64")
        raw = raw.split(",", 1)[1] if raw.startswith("data:") else raw
        if len(raw) > self.limits.max_video_base64:
            raise RequestError(413, f"field 'video': more than {self.limits.max_video_bytes} bytes")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "field 'video': not valid base64") from None
        try:
            frames, fps = read_video_bytes(data, self.limits.max_frames, self.limits.max_pixels, "field 'video'")
        except VideoTooLarge as err:
            raise RequestError(413, str(err)) from None
        except ValueError as err:
            raise RequestError(415, str(err)) from None
        min_score = number(doc.get("min_score", 0.3), "field 'min_score'")
        vocab = self._vocabulary(doc.get("vocabulary"))
        req = schema.Request(
            task,
            tuple(frames),
            vocabulary=tuple(vocab) if vocab else None,
            min_score=min_score if task == "vis" else 0.0,
        )
        t0 = time.perf_counter()
        if self.remote is not None:
            res = self.remote(req)
        else:
            with self.using_model():
                res = schema.predict(self.predictor, req)
        ms = (time.perf_counter() - t0) * 1000
        segs = sorted(res.segments, key=lambda s: s.score or 0.0) if task == "vis" else res.segments  # best on top
        colors = palette(len(segs))
        maps = np.zeros((len(frames), *frames[0].shape[:2]), np.int32)
        legend = []
        for n, seg in enumerate(segs, 1):
            for t, rle in enumerate(seg.segmentations or []):
                if rle is not None:
                    maps[t][rle_decode(rle)] = n
            rec = {
                "id": n,
                "name": seg.label,
                "area": int(seg.area),
                "color": "#%02x%02x%02x" % tuple(int(c) for c in colors[n - 1]),
            }
            if seg.score is not None:
                rec["score"] = round(float(seg.score), 4)
            legend.append(rec)

        def composited():
            for t, frame in enumerate(frames):
                rgba = overlay(maps[t], colors).astype(np.float32)
                a = rgba[..., 3:] / 255.0
                yield (frame * (1 - a) + rgba[..., :3] * a).astype(np.uint8)

        movie = encode_video(composited(), fps, "webm")
        return {
            "task": task,
            "legend": legend[::-1] if task == "vis" else legend,
            "frames": len(frames),
            "fps": fps,
            "width": int(frames[0].shape[1]),
            "height": int(frames[0].shape[0]),
            "ms": round(ms, 1),
            "overlay_webm": base64.b64encode(movie).decode("ascii"),
        }

    # ------------------------------------------------------------------ the HTTP API, for any transport
    POST_PATHS = ("/api/image", "/api/prompt", "/api/segment", "/api/predict", "/api/video")

    def body_limit(self, path: str) -> int:
        """The most bytes a POST to ``path`` may send (an upload; a JSON request with an image or a video inline)."""
        if path == "/api/image":
            return self.limits.max_bytes
        if path == "/api/video":
            return self.limits.max_json_bytes + self.limits.max_video_base64
        return self.limits.max_request_bytes

    def handle(self, method: str, path: str, content_type: str, body: bytes) -> tuple[int, str, bytes, dict]:
        """One HTTP request -> (status, content type, body, headers): the whole API for any transport (the stdlib
        server, :mod:`omg.serve.server`; the Ray Serve deployment, ``omg_platform/pipelines/serve.py``). Errors are JSON
        ``{"error": ...}``."""
        try:
            return self._route(method, path.split("?", 1)[0], content_type.split(";")[0].strip().lower(), body)
        except RequestError as err:
            return (
                err.status,
                "application/json",
                json.dumps({"error": str(err)}).encode(),
                {"Retry-After": str(err.retry_after)} if err.retry_after is not None else {},
            )
        except Exception as err:  # noqa: BLE001 - a server bug: say so, keep serving
            return (
                500,
                "application/json",
                json.dumps({"error": f"internal error: {type(err).__name__}: {err}"}).encode(),
                {},
            )

    @staticmethod
    def parse_json(body: bytes) -> dict:
        try:
            doc = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise RequestError(400, "request body must be a JSON object")
        return doc

    def _route(self, method: str, path: str, ctype: str, body: bytes) -> tuple[int, str, bytes, dict]:
        ok = lambda doc: (200, "application/json", json.dumps(doc).encode(), {})  # noqa: E731
        if method == "GET":
            if path in ("/", "/index.html"):
                return 200, "text/html; charset=utf-8", PAGE.read_bytes(), {}
            if path == "/api/info":
                return ok(self.info())
            if path.startswith("/api/sample/"):
                return 200, "image/png", self.sample_png(path[len("/api/sample/") :]), {}
            raise RequestError(404, f"no such page {path!r}")
        if method != "POST":
            raise RequestError(405, "use GET or POST")
        if path not in self.POST_PATHS:
            raise RequestError(404, f"no such endpoint {path!r}")
        if len(body) > self.body_limit(path):
            raise RequestError(
                413, f"request body of {len(body)} bytes exceeds the limit of {self.body_limit(path)} bytes"
            )
        if path == "/api/image":
            if ctype == "application/json":
                name = self.parse_json(body).get("sample")
                body = self.sample_png(name if isinstance(name, str) else "")
            return ok(self.add_image(decode_upload(body, self.limits)))
        doc = self.parse_json(body)
        if path == "/api/video":
            return ok(self.video(doc))
        return ok(
            self.prompt(doc)
            if path == "/api/prompt"
            else self.segment(doc)
            if path == "/api/segment"
            else self.predict(doc)
        )
