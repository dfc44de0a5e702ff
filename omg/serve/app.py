"""`omg serve`: a small web app around :class:`~omg.inference.predictor.OMGPredictor`.

A person picks an omg-shapes sample or uploads a PNG/JPEG, clicks points and drags boxes, and sees
each prompted mask with its open-vocabulary label; or switches to panoptic / instance / semantic
mode for the whole image. Standard library HTTP server (one thread per request, one model lock),
loopback by default.

Endpoints (JSON unless noted; errors are ``{"error": "..."}`` with a 4xx/5xx status):

``GET  /``                   the page
``GET  /api/info``           checkpoint, default vocabulary, samples, limits
``GET  /api/sample/NAME``    a sample image (PNG)
``POST /api/image``          body: PNG/JPEG bytes, or JSON ``{"sample": NAME}``
                             -> ``{"image_id", "width", "height", "ms"}``
``POST /api/prompt``         ``{"image_id", "prompts": [{"point": [x, y]} | {"box": [x0, y0, x1, y1]}], "vocabulary"}``
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
import colorsys
import contextlib
import hashlib
import io
import json
import math
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from omg.data.masks import mask_box, rle_decode
from omg.inference import schema
from omg.inference.schema import Limits, RequestError, decode_upload, number, parse_vocabulary
from omg.utils import io as uio

PAGE = Path(__file__).with_name("page.html")
TASKS = ("panoptic", "instance", "semantic")
#: what the page runs on an uploaded video (VOS needs the first frame's objects)
VIDEO_TASKS = ("vis", "vps", "vss")


def png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def palette(n: int) -> np.ndarray:
    """``n`` distinct saturated colours (golden-ratio hues), n x 3 uint8."""
    out = np.zeros((max(n, 1), 3), dtype=np.uint8)
    for i in range(n):
        out[i] = np.array(colorsys.hsv_to_rgb((i * 0.618033988749895 + 0.08) % 1.0, 0.85, 0.95)) * 255
    return out


def overlay(label_map: np.ndarray, colors: np.ndarray, alpha: int = 140) -> np.ndarray:
    """H x W label map (0 = none, k = colors[k - 1]) -> RGBA overlay with outlines drawn opaque."""
    h, w = label_map.shape
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    on = label_map > 0
    rgba[on, :3] = colors[label_map[on] - 1]
    rgba[on, 3] = alpha
    edge = np.zeros_like(on)
    edge[1:, :] |= label_map[1:, :] != label_map[:-1, :]
    edge[:, 1:] |= label_map[:, 1:] != label_map[:, :-1]
    edge &= on
    rgba[edge, 3] = 255
    return rgba


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


class RemoteModel:
    """A model behind another server that speaks the inference schema: an MLflow scoring server (``mlflow models
    serve``; a URL ending in ``/invocations``) or a schema endpoint (``.../api/predict``: ``omg serve``, the Ray
    Serve app). Its 4xx answers become the same 4xx here; an unreachable or failing server is a 502."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        self.url, self.timeout_s = url, timeout_s
        self.mlflow = url.rstrip("/").endswith("/invocations")

    def __call__(self, req: schema.Request) -> schema.Response:
        doc = req.to_json()
        body = json.dumps({"inputs": [doc]} if self.mlflow else doc).encode()
        http = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as err:
            try:
                said = json.loads(err.read())
                said = str(said.get("error") or said.get("message") or said)
            except ValueError:
                said = str(err.reason)
            # MLflow's scoring server prefixes the whole input ("Failed to predict data '<input>'. \nError: ...")
            said = said.rsplit("\nError: ", 1)[-1]
            if self.mlflow:  # the pyfunc model names the request in its batch: here there is one
                said = said.removeprefix("request 0: ")
            if 400 <= err.code < 500:
                raise RequestError(err.code, said) from None
            raise RequestError(502, f"the model server {self.url} answered {err.code}: {said}") from None
        except (OSError, ValueError) as err:
            raise RequestError(502, f"the model server {self.url} cannot be reached: {err}") from None
        return schema.Response.from_json(answer["predictions"][0] if self.mlflow else answer)

    def vocabulary(self) -> list[str]:
        """The class names the model answers with by default (asked with a panoptic request on a blank image)."""
        blank = schema.Request("panoptic", (np.zeros((32, 32, 3), np.uint8),))
        return list(self(blank).vocabulary or [])


class ServeApp:
    """The model side of the server: image cache, prompts, whole-image tasks. Thread-safe."""

    def __init__(
        self,
        predictor,
        samples: dict[str, str] | None = None,
        limits: Limits | None = None,
        checkpoint: str = "",
        id_prefix: str = "",
        remote: "RemoteModel | None" = None,
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
            self.default_vocabulary = "\n".join(", ".join(n) for n in tv.names) if tv else ""

    # ------------------------------------------------------------------ the model
    @contextlib.contextmanager
    def _model(self) -> Iterator[None]:
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
            "tasks": list(TASKS),
            "video_tasks": list(VIDEO_TASKS),
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
            with self._model():
                self.predictor.set_image(image)
                state = self.predictor.image_state()
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

    def _use(self, image_id: Any, inline: Any = None) -> tuple[np.ndarray, str]:
        """Select a cached image, and with a local model its features (the caller then holds the model lock); returns
        (image, its id). ``inline``: the image itself (base64), sent by the page when this server does not know
        ``image_id`` (one replica of several: the upload went to another): it is kept under a new id of this
        server's."""
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
            state = None
            if self.predictor is not None:
                self.predictor.set_image(image)
                state = self.predictor.image_state()
            image_id = self._new_id()
            self._keep(image_id, image, state)
            return image, image_id
        image, state, _ = hit
        if self.predictor is not None:
            self.predictor.restore_image_state(state)
        return image, image_id

    def _answer(self, image_id: Any, inline: Any, make) -> tuple[schema.Response, np.ndarray, str, float]:
        """(response, image, image id, ms) of the schema request ``make(image)`` about a cached image, from the
        local predictor (its features restored, under the model lock) or the remote model."""
        t0 = time.perf_counter()
        if self.predictor is None:  # no model here: the cache has its own lock
            image, image_id = self._use(image_id, inline)
            res = self.remote(make(image))
        else:
            with self._model():
                image, image_id = self._use(image_id, inline)
                res = schema.predict(self.predictor, make(image), image_set=True)
        return res, image, image_id, (time.perf_counter() - t0) * 1000

    # ------------------------------------------------------------------ prompts
    def prompt(self, body: dict) -> dict:
        prompts = body.get("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise RequestError(
                400, 'field \'prompts\': expected a non-empty list of {"point": [x, y]} or {"box": [x0, y0, x1, y1]}'
            )
        if len(prompts) > self.limits.max_prompts:
            raise RequestError(400, f"field 'prompts': {len(prompts)} prompts, at most {self.limits.max_prompts}")
        points, boxes, order = [], [], []
        for i, p in enumerate(prompts):
            kind = next((k for k in ("point", "box") if isinstance(p, dict) and k in p), None)
            want = 2 if kind == "point" else 4
            value = p.get(kind) if kind else None
            if (
                kind is None
                or not isinstance(value, list)
                or len(value) != want
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            ):
                raise RequestError(
                    400,
                    f'prompts[{i}]: expected {{"point": [x, y]}} or {{"box": [x0, y0, x1, y1]}} '
                    f"with numbers, got {json.dumps(p)[:80]}",
                )
            (points if kind == "point" else boxes).append([float(v) for v in value])
            order.append((kind, len(points if kind == "point" else boxes) - 1))
        vocab = self._vocabulary(body.get("vocabulary"))
        res, image, image_id, ms = self._answer(
            body.get("image_id"),
            body.get("image"),
            lambda image: schema.Request(
                "interactive",
                (image,),
                np.array(points, np.float32) if points else None,
                np.array(boxes, np.float32) if boxes else None,
                vocabulary=tuple(vocab) if vocab else None,
            ),
        )
        # the answer lists points first, then boxes: back to the order of the request
        index = [k if kind == "point" else len(points) + k for kind, k in order]
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
        with self._model():
            if req.video:
                return schema.predict(self.predictor, req).to_json()
            image = req.images[0]
            key = "sha1:" + hashlib.sha1(repr(image.shape).encode() + image.tobytes()).hexdigest()
            with self._cache_lock:
                hit = self._images.get(key)
                if hit is not None:
                    self._images.move_to_end(key)
            if hit is not None:
                self.predictor.restore_image_state(hit[1])
            else:
                self.predictor.set_image(image)
                self._keep(key, image, self.predictor.image_state())
            return schema.predict(self.predictor, req, image_set=True).to_json()

    def predict_batch(self, reqs: list[schema.Request]) -> list[schema.Response]:
        """Whole-image requests with one task, vocabulary and options (``schema.Request``s) in one forward pass: the
        Ray Serve app's batching (``pipelines/serve.py``). A request the model cannot take is a 400 for all."""
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
        with self._model():
            self.predictor.set_image([r.images[0] for r in reqs])
            try:
                results = self.predictor.predict(first.task, **kw)
            except ValueError as err:
                raise RequestError(400, str(err)) from None
        return [schema.to_response(r, res) for r, res in zip(reqs, results)]

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
            with self._model():
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
        server below; the Ray Serve deployment, ``pipelines/serve.py``). Errors are JSON ``{"error": ...}``."""
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


# ============================================================================= HTTP


class Handler(BaseHTTPRequestHandler):
    app: ServeApp  # set on the subclass made by make_server
    quiet: bool = False
    server_version = "omg-serve"

    def setup(self) -> None:
        self.timeout = self.app.limits.read_timeout_s  # a stalled client cannot hold a worker
        super().setup()

    def log_message(self, fmt: str, *args) -> None:
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self, limit: int) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            n = int(length)
        except ValueError:
            raise RequestError(400, f"bad Content-Length {length!r}") from None
        if n < 0:
            raise RequestError(400, f"bad Content-Length {length!r}")
        if n > limit:
            raise RequestError(413, f"request body of {n} bytes exceeds the limit of {limit} bytes")
        data = self.rfile.read(n)
        if len(data) != n:
            raise RequestError(400, f"request body ended after {len(data)} of {n} bytes")
        return data

    def _reply(self, status: int, ctype: str, body: bytes, headers: dict) -> None:
        if status == 413:
            self.close_connection = True  # an unread body must not be parsed as the next request
        self._send(status, body, ctype, headers)

    def _serve(self, method: str) -> None:
        try:
            path = self.path.split("?", 1)[0]
            body = b""
            if method == "POST":
                try:
                    body = self._body(self.app.body_limit(path))
                except RequestError as err:
                    self._reply(err.status, "application/json", json.dumps({"error": str(err)}).encode(), {})
                    return
            self._reply(*self.app.handle(method, self.path, self.headers.get("Content-Type") or "", body))
        except (socket.timeout, ConnectionError):
            self.close_connection = True  # the client stalled or left: nothing to answer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    do_DELETE = do_PATCH = do_PUT


BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class PoolHTTPServer(HTTPServer):
    """An HTTP server with a real listen backlog and a bounded pool of worker threads.

    The stdlib ``ThreadingHTTPServer`` listens with a backlog of 5 (connections beyond it are reset under a
    burst) and starts a thread per connection without bound. Here the accept loop hands each connection
    to ``workers`` threads; at most ``max_pending`` connections wait for one, and a connection beyond that
    is answered 503 with ``Retry-After`` by a separate small pool (which reads what the client sent before
    closing, so the client sees the answer rather than a reset)."""

    daemon_threads = True

    def __init__(self, address, handler, limits: Limits):
        self.request_queue_size = limits.backlog
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="omg-serve")
        self._rejects = ThreadPoolExecutor(max_workers=2, thread_name_prefix="omg-serve-busy")
        self._pending = threading.BoundedSemaphore(limits.max_pending)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._pending.acquire(blocking=False):
            self._rejects.submit(self._busy, request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does: report, keep serving
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._pending.release()

    def _busy(self, request) -> None:
        body = json.dumps({"error": "the server is busy; retry in a second"}).encode()
        try:
            request.settimeout(2.0)
            with contextlib.suppress(OSError):
                request.recv(65536)  # the request line and headers, so closing does not reset the client
            request.sendall(BUSY % (len(body), body))
            request.shutdown(socket.SHUT_WR)
            while request.recv(65536):  # drain until the client closes (or the timeout)
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._rejects.shutdown(wait=False, cancel_futures=True)


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8765, quiet: bool = False) -> PoolHTTPServer:
    handler = type("OMGHandler", (Handler,), {"app": app, "quiet": quiet})
    return PoolHTTPServer((host, port), handler, app.limits)
