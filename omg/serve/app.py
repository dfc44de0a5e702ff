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

Image features are computed once per image (``/api/image``) and kept in a small in-memory LRU; a
prompt or a mode switch only runs the decoder. Results carry an RGBA overlay PNG, a label-map PNG
(pixel value = prompt or segment number, 0 = nothing) and the per-mask records, all base64.

Safety: uploads are capped in bytes (``max_bytes``) and pixels (``max_pixels``, checked from the
header before decoding: decompression bombs never decode), decoded strictly (PNG or JPEG by magic
bytes, truncated files rejected), kept in memory only (nothing is written to disk), and forgotten
on restart.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PAGE = Path(__file__).with_name("page.html")
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
TASKS = ("panoptic", "instance", "semantic")


class RequestError(Exception):
    """A client mistake: answered with ``status`` and the message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 8 * 1024 * 1024  # an upload (and any request body)
    max_pixels: int = 4096 * 4096  # width x height of an upload
    max_json_bytes: int = 256 * 1024
    max_prompts: int = 64
    cached_images: int = 8


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
        with warnings.catch_warnings():  # our own pixel cap below is the rule, not PIL's default
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
        w, h = img.size  # from the header: nothing decoded yet
    except Image.DecompressionBombError as err:
        raise RequestError(413, f"refused as a decompression bomb: {err}") from None
    except Exception as err:  # noqa: BLE001 - any decoder complaint is the client's file
        raise RequestError(400, f"cannot read the {fmt} header: {err}") from None
    if w * h > limits.max_pixels:
        raise RequestError(413, f"image of {w}x{h} = {w * h} pixels exceeds the limit of {limits.max_pixels} "
                                "pixels (decompression bombs are refused before decoding)")
    if w < 8 or h < 8:
        raise RequestError(400, f"image of {w}x{h} pixels is too small (at least 8x8)")
    try:
        img.load()  # truncated files raise (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
        return np.asarray(img.convert("RGB"))
    except Exception as err:  # noqa: BLE001
        raise RequestError(400, f"cannot decode the {fmt} image: {err}") from None


def png_b64(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def palette(n: int) -> np.ndarray:
    """``n`` distinct saturated colours (golden-ratio hues), n x 3 uint8."""
    out = np.zeros((max(n, 1), 3), dtype=np.uint8)
    for i in range(n):
        h = (i * 0.618033988749895 + 0.08) % 1.0
        k = int(h * 6)
        f = h * 6 - k
        v, s = 0.95, 0.85
        p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        out[i] = np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][k % 6]) * 255
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


def parse_vocabulary(text: Any) -> list[str] | None:
    """One class per line (or ';'), synonyms comma-separated: "circle, disc\\nsquare, box"; empty -> None."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise RequestError(400, "field 'vocabulary': expected a string, one class per line, synonyms separated by commas")
    classes = [c.strip() for c in text.replace(";", "\n").splitlines() if c.strip()]
    return classes or None


class ServeApp:
    """The model side of the server: image cache, prompts, whole-image tasks. Thread-safe."""

    def __init__(self, predictor, samples: dict[str, str] | None = None, limits: Limits | None = None,
                 checkpoint: str = ""):
        self.predictor = predictor
        self.samples = dict(samples or {})
        self.limits = limits or Limits()
        self.checkpoint = checkpoint
        self._lock = threading.Lock()
        self._images: OrderedDict[str, tuple[np.ndarray, Any]] = OrderedDict()
        self._counter = 0
        tv = predictor.training_vocabulary
        self.default_vocabulary = "\n".join(", ".join(n) for n in tv.names) if tv else ""

    # ------------------------------------------------------------------ images
    def info(self) -> dict:
        return {"checkpoint": self.checkpoint, "vocabulary": self.default_vocabulary, "samples": sorted(self.samples),
                "tasks": list(TASKS), "limits": {"max_bytes": self.limits.max_bytes, "max_pixels": self.limits.max_pixels,
                                                 "max_prompts": self.limits.max_prompts}}

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
        with self._lock:
            self.predictor.set_image(image)
            state = self.predictor.image_state()
            self._counter += 1
            image_id = f"img{self._counter}"
            self._images[image_id] = (image, state)
            while len(self._images) > self.limits.cached_images:
                self._images.popitem(last=False)
        return {"image_id": image_id, "width": int(image.shape[1]), "height": int(image.shape[0]),
                "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _use(self, image_id: Any) -> np.ndarray:
        """Select a cached image's features (caller holds the lock)."""
        if not isinstance(image_id, str) or image_id not in self._images:
            raise RequestError(404, f"unknown image_id {image_id!r}: POST the image to /api/image first "
                                    "(the server keeps the last few images only)")
        self._images.move_to_end(image_id)
        image, state = self._images[image_id]
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
                    not all(isinstance(v, (int, float)) and np.isfinite(v) for v in value):
                raise RequestError(400, f"prompts[{i}]: expected {{\"point\": [x, y]}} or {{\"box\": [x0, y0, x1, y1]}} "
                                        f"with numbers, got {json.dumps(p)[:80]}")
            (points if kind == "point" else boxes).append([float(v) for v in value])
            order.append((kind, len(points if kind == "point" else boxes) - 1))
        vocab = parse_vocabulary(body.get("vocabulary"))
        t0 = time.perf_counter()
        with self._lock:
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
                   "color": "#%02x%02x%02x" % tuple(int(c) for c in colors[n - 1]), "bbox": _bbox(m)}
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
        vocab = parse_vocabulary(body.get("vocabulary"))
        t0 = time.perf_counter()
        with self._lock:
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
            keep = [k for k in range(len(res.scores)) if res.scores[k] >= float(body.get("min_score", 0.3))][:50]
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


def _bbox(m: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(m)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]


# ============================================================================= HTTP

class Handler(BaseHTTPRequestHandler):
    app: ServeApp  # set on the subclass made by make_server
    quiet: bool = False
    server_version = "omg-serve"

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401 - stdlib signature
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: dict) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

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
        return self.rfile.read(n)

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
            self._json(err.status, {"error": str(err)})
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


def make_server(app: ServeApp, host: str = "127.0.0.1", port: int = 8765, quiet: bool = False) -> ThreadingHTTPServer:
    handler = type("OMGHandler", (Handler,), {"app": app, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
