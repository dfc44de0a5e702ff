"""`omg serve`: a small web app around :class:`~omg.inference.predictor.OMGPredictor`.

A person picks an omg-shapes sample or uploads a PNG/JPEG, clicks points and drags boxes, and sees
each prompted mask with its open-vocabulary label; or switches to panoptic / instance / semantic
mode for the whole image. Standard library HTTP server (one thread per request, one model lock),
loopback by default.

Endpoints (JSON unless noted; errors are ``{"error": "..."}`` with a 4xx/5xx status):

``GET  /``                   the page
``GET  /api/info``           checkpoint, default vocabulary, samples, limits
``GET  /api/sample/NAME``    a sample image (PNG)
``POST /api/image``          body: PNG/JPEG bytes, or JSON ``{"sample": NAME}`` -> ``{"image_id", "width", "height", "ms"}``
``POST /api/prompt``         ``{"image_id", "prompts": [{"point": [x, y]} | {"box": [x0, y0, x1, y1]}], "vocabulary"}``
``POST /api/segment``        ``{"image_id", "task": "panoptic"|"instance"|"semantic", "vocabulary"}``

Image features are computed once per image (``/api/image``) and kept in an in-memory LRU sized in
bytes (``cache_bytes``); a prompt or a mode switch only runs the decoder. An image evicted from it
answers 410 "image expired, upload it again". Results carry an RGBA overlay PNG, a label-map PNG
(pixel value = prompt or segment number, 0 = nothing) and the per-mask records, all base64.

Safety: uploads are capped in bytes (``max_bytes``) and pixels (``max_pixels``, checked from the
header before decoding: decompression bombs never decode), decoded strictly (PNG or JPEG by magic
bytes, truncated files rejected), kept in memory only (nothing is written to disk), and forgotten
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
import colorsys
import contextlib
import io
import json
import math
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, is_dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from omg.data.masks import mask_box
from omg.utils import io as uio

PAGE = Path(__file__).with_name("page.html")
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
TASKS = ("panoptic", "instance", "semantic")


class RequestError(Exception):
    """A client mistake (4xx) or a busy server (503, with ``retry_after`` seconds): answered with ``status``
    and the message."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 8 * 1024 * 1024  # an upload (and any request body)
    max_pixels: int = uio.MAX_PIXELS  # width x height of an upload
    max_json_bytes: int = 256 * 1024
    max_prompts: int = 64
    max_classes: int = 300  # classes of a vocabulary
    max_vocabulary_chars: int = 20_000  # characters of a vocabulary's text
    cache_bytes: int = 512 * 1024 * 1024  # images and their features kept for prompts
    workers: int = 16  # threads serving requests
    max_pending: int = 256  # connections accepted and waiting for a worker; more get 503
    backlog: int = 1024  # the listen queue (the kernel caps it at net.core.somaxconn)
    read_timeout_s: float = 15.0  # a client silent this long while sending its request is dropped
    model_wait_s: float = 30.0  # longest wait for the model before 503


def decode_upload(data: bytes, limits: Limits) -> np.ndarray:
    """PNG/JPEG bytes -> H x W x 3 uint8, strictly: format by magic bytes, size from the header first."""
    if not data:
        raise RequestError(400, "empty upload: send the PNG or JPEG file as the request body")
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"upload of {len(data)} bytes exceeds the limit of {limits.max_bytes} bytes")
    fmt = next((f for magic, f in MAGIC.items() if data.startswith(magic)), None)
    if fmt is None:
        raise RequestError(415, "not a PNG or JPEG file (checked by its first bytes)")
    try:
        image = uio.decode_rgb(data, f"the {fmt} upload", limits.max_pixels)
    except uio.ImageTooLarge as err:
        raise RequestError(413, str(err).replace("raise the limit with --max-pixels", "decompression bombs are "
                                                  "refused before decoding")) from None
    except ValueError as err:
        raise RequestError(400, str(err)) from None
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise RequestError(400, f"image of {image.shape[1]}x{image.shape[0]} pixels is too small (at least 8x8)")
    return image


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


def parse_vocabulary(text: Any, limits: Limits | None = None) -> list[str] | None:
    """One class per line (or ';'), synonyms comma-separated: "circle, disc\nsquare, box"; empty -> None."""
    limits = limits or Limits()
    if text is None:
        return None
    if not isinstance(text, str):
        raise RequestError(400, "field 'vocabulary': expected a string, one class per line, synonyms separated by commas")
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

    def __init__(self, predictor, samples: dict[str, str] | None = None, limits: Limits | None = None,
                 checkpoint: str = ""):
        self.predictor = predictor
        self.samples = dict(samples or {})
        self.limits = limits or Limits()
        self.checkpoint = checkpoint
        self._lock = threading.Lock()  # the model: one forward at a time
        self._text_lock = threading.Lock()  # new vocabularies' text embeddings: one at a time, beside the model
        self._cache_lock = threading.Lock()
        self._images: OrderedDict[str, tuple[np.ndarray, Any, int]] = OrderedDict()
        self._cached_bytes = 0
        self._counter = 0
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
        if classes is not None:
            try:
                vocab = self.predictor.vocabulary(classes)
            except ValueError as err:
                raise RequestError(400, f"field 'vocabulary': {err}") from None
            with self._text_lock:
                self.predictor.embedder.embed(vocab)
        return classes

    # ------------------------------------------------------------------ images
    def info(self) -> dict:
        return {"checkpoint": self.checkpoint, "vocabulary": self.default_vocabulary, "samples": sorted(self.samples),
                "tasks": list(TASKS), "limits": {"max_bytes": self.limits.max_bytes, "max_pixels": self.limits.max_pixels,
                                                 "max_prompts": self.limits.max_prompts,
                                                 "max_classes": self.limits.max_classes,
                                                 "cache_bytes": self.limits.cache_bytes}}

    def sample_png(self, name: str) -> bytes:
        if name not in self.samples:
            raise RequestError(404, f"no sample {name!r} (GET /api/info lists them)")
        img = Image.open(self.samples[name])
        img.load()
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
        return buf.getvalue()

    def add_image(self, image: np.ndarray) -> dict:
        t0 = time.perf_counter()
        with self._model():
            self.predictor.set_image(image)
            state = self.predictor.image_state()
        size = image.nbytes + nbytes(state)
        with self._cache_lock:
            self._counter += 1
            image_id = f"img{self._counter}"
            self._images[image_id] = (image, state, size)
            self._cached_bytes += size
            while self._cached_bytes > self.limits.cache_bytes and len(self._images) > 1:
                _, (_, _, freed) = self._images.popitem(last=False)
                self._cached_bytes -= freed
        return {"image_id": image_id, "width": int(image.shape[1]), "height": int(image.shape[0]),
                "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _use(self, image_id: Any) -> np.ndarray:
        """Select a cached image's features (caller holds the model lock)."""
        with self._cache_lock:
            if isinstance(image_id, str) and image_id in self._images:
                self._images.move_to_end(image_id)
                image, state, _ = self._images[image_id]
            elif isinstance(image_id, str) and image_id.startswith("img") and image_id[3:].isdigit() \
                    and 0 < int(image_id[3:]) <= self._counter:
                raise RequestError(410, f"image {image_id} expired: the server keeps the most recent "
                                        f"{self.limits.cache_bytes // (1 << 20)} MiB of images; upload it again")
            else:
                raise RequestError(404, f"unknown image_id {image_id!r}: POST the image to /api/image first")
        self.predictor.restore_image_state(state)
        return image

    # ------------------------------------------------------------------ prompts
    def prompt(self, body: dict) -> dict:
        prompts = body.get("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise RequestError(400, "field 'prompts': expected a non-empty list of {\"point\": [x, y]} or "
                                    "{\"box\": [x0, y0, x1, y1]}")
        if len(prompts) > self.limits.max_prompts:
            raise RequestError(400, f"field 'prompts': {len(prompts)} prompts, at most {self.limits.max_prompts}")
        points, boxes, order = [], [], []
        for i, p in enumerate(prompts):
            kind = next((k for k in ("point", "box") if isinstance(p, dict) and k in p), None)
            want = 2 if kind == "point" else 4
            value = p.get(kind) if kind else None
            if kind is None or not isinstance(value, list) or len(value) != want or \
                    not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise RequestError(400, f"prompts[{i}]: expected {{\"point\": [x, y]}} or {{\"box\": [x0, y0, x1, y1]}} "
                                        f"with numbers, got {json.dumps(p)[:80]}")
            (points if kind == "point" else boxes).append([float(v) for v in value])
            order.append((kind, len(points if kind == "point" else boxes) - 1))
        vocab = self._vocabulary(body.get("vocabulary"))
        t0 = time.perf_counter()
        with self._model():
            image = self._use(body.get("image_id"))
            try:
                res = self.predictor.predict("interactive", points=np.array(points) if points else None,
                                             boxes=np.array(boxes) if boxes else None, vocabulary=vocab)
            except ValueError as err:
                raise RequestError(400, str(err)) from None
        ms = (time.perf_counter() - t0) * 1000
        # the predictor returns points first, then boxes: back to the order of the request
        index = [k if kind == "point" else len(points) + k for kind, k in order]
        h, w = image.shape[:2]
        label_map = np.zeros((h, w), dtype=np.uint8)
        colors = palette(len(index))
        masks = []
        for n, k in enumerate(index, 1):  # later prompts are drawn over earlier ones
            m = res.masks[k]
            label_map[m] = n
            rec = {"prompt": n, "score": round(float(res.scores[k]), 4), "area": int(m.sum()),
                   "color": "#%02x%02x%02x" % tuple(int(c) for c in colors[n - 1]), "bbox": mask_box(m)}
            if res.names is not None:
                rec.update(label=res.names[k], label_score=round(float(res.label_scores[k]), 4))
            masks.append(rec)
        return {"masks": masks, "overlay_png": png_b64(overlay(label_map, colors)), "label_png": png_b64(label_map),
                "ms": round(ms, 1), "width": w, "height": h}

    # ------------------------------------------------------------------ whole image
    def segment(self, body: dict) -> dict:
        task = body.get("task")
        if task not in TASKS:
            raise RequestError(400, f"field 'task': expected one of {', '.join(TASKS)}, got {task!r}")
        min_score = number(body.get("min_score", 0.3), "field 'min_score'")
        vocab = self._vocabulary(body.get("vocabulary"))
        t0 = time.perf_counter()
        with self._model():
            image = self._use(body.get("image_id"))
            try:
                res = self.predictor.predict(task, vocabulary=vocab)
            except ValueError as err:
                raise RequestError(400, str(err)) from None
        ms = (time.perf_counter() - t0) * 1000
        h, w = image.shape[:2]
        legend = []
        if task == "panoptic":
            label_map = np.zeros((h, w), dtype=np.int32)
            for n, s in enumerate(res.segments, 1):
                label_map[res.panoptic == s.id] = n
                legend.append({"id": n, "name": s.name, "score": round(float(s.score), 4), "area": s.area,
                               "isthing": s.isthing})
        elif task == "instance":
            label_map = np.zeros((h, w), dtype=np.int32)
            keep = [k for k in range(len(res.scores)) if res.scores[k] >= min_score][:50]
            for n, k in enumerate(reversed(keep), 1):  # best scores drawn last, on top
                label_map[res.masks[k]] = n
                legend.append({"id": n, "name": res.names[k], "score": round(float(res.scores[k]), 4),
                               "area": int(res.masks[k].sum())})
            legend.reverse()
        else:
            label_map = np.zeros((h, w), dtype=np.int32)
            present = [c for c in np.unique(res.labels) if c >= 0]
            for n, c in enumerate(present, 1):
                label_map[res.labels == c] = n
                legend.append({"id": n, "name": res.vocabulary[c], "area": int((res.labels == c).sum())})
        colors = palette(len(legend))
        for rec in legend:
            rec["color"] = "#%02x%02x%02x" % tuple(int(c) for c in colors[rec["id"] - 1])
        return {"task": task, "legend": legend, "overlay_png": png_b64(overlay(label_map, colors)),
                "label_png": png_b64(label_map.astype(np.uint8 if len(legend) < 256 else np.uint16)),
                "ms": round(ms, 1), "width": w, "height": h}


# ============================================================================= HTTP

class Handler(BaseHTTPRequestHandler):
    app: ServeApp  # set on the subclass made by make_server
    quiet: bool = False
    server_version = "omg-serve"

    def setup(self) -> None:
        self.timeout = self.app.limits.read_timeout_s  # a stalled client cannot hold a worker
        super().setup()

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401 - stdlib signature
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

    def _json(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

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

    def _json_body(self) -> dict:
        raw = self._body(self.app.limits.max_json_bytes)
        try:
            doc = json.loads(raw or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RequestError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(doc, dict):
            raise RequestError(400, "request body must be a JSON object")
        return doc

    def _guard(self, fn) -> None:
        try:
            fn()
        except RequestError as err:
            if err.status == 413:
                self.close_connection = True  # the unread body must not be parsed as a request
            self._json(err.status, {"error": str(err)},
                       {"Retry-After": str(err.retry_after)} if err.retry_after is not None else None)
        except (socket.timeout, ConnectionError):
            self.close_connection = True  # the client stalled or left: nothing to answer
        except Exception as err:  # noqa: BLE001 - a server bug: say so, keep serving
            self._json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        def go():
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(200, self.app.info())
            elif path.startswith("/api/sample/"):
                self._send(200, self.app.sample_png(path[len("/api/sample/"):]), "image/png")
            else:
                raise RequestError(404, f"no such page {path!r}")
        self._guard(go)

    def do_POST(self) -> None:  # noqa: N802
        def go():
            path = self.path.split("?", 1)[0]
            if path == "/api/image":
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype == "application/json":
                    name = self._json_body().get("sample")
                    data = self.app.sample_png(name if isinstance(name, str) else "")
                else:
                    data = self._body(self.app.limits.max_bytes)
                self._json(200, self.app.add_image(decode_upload(data, self.app.limits)))
            elif path == "/api/prompt":
                self._json(200, self.app.prompt(self._json_body()))
            elif path == "/api/segment":
                self._json(200, self.app.segment(self._json_body()))
            else:
                raise RequestError(404, f"no such endpoint {path!r}")
        self._guard(go)

    def do_PUT(self) -> None:  # noqa: N802
        self._json(405, {"error": "use GET or POST"})

    do_DELETE = do_PATCH = do_PUT


BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


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
