"""`omg serve`: the HTTP API (prompts, modes, downloads), its safety rules (size/pixel caps, strict
decoding, clear 4xx errors) and the prompt round-trip latency. The server runs in a thread on loopback."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omg.inference.schema import RequestError, decode_upload
from omg.serve import Limits, ServeApp, find_samples, make_server
from tests import http_call
from tests.helpers import gt_segment


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_upload_is_strict_and_capped():
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert decode_upload(_png(img), Limits()).shape == (40, 50, 3)
    cases = [
        (b"", 400, "empty upload"),
        (b"GIF89a" + b"\0" * 50, 415, "not a PNG or JPEG"),
        (_png(img)[:60], 400, "cannot"),  # truncated
        (_png(img), 413, "exceeds the limit of 100 bytes"),
    ]
    for data, status, words in cases:
        limits = Limits(max_bytes=100) if status == 413 else Limits()
        with pytest.raises(RequestError, match=words) as info:
            decode_upload(data, limits)
        assert info.value.status == status


def test_a_decompression_bomb_is_refused_from_its_header():
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG")  # 144 MP of zeros: a few KB compressed
    data = buf.getvalue()
    assert len(data) < 200_000
    with pytest.raises(RequestError, match="decompression bombs") as info:
        decode_upload(data, Limits(max_pixels=4096 * 4096))
    assert info.value.status == 413


@pytest.fixture(scope="module")
def server(interactive_checkpoint, tiny_shapes):
    from omg.inference.predictor import OMGPredictor

    predictor = OMGPredictor.from_checkpoint(interactive_checkpoint)
    app = ServeApp(
        predictor,
        samples=find_samples(tiny_shapes),
        limits=Limits(max_bytes=300_000, max_pixels=1 << 20),
        checkpoint=interactive_checkpoint,
    )
    srv = make_server(app, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", app
    finally:
        srv.shutdown()
        srv.server_close()


def _mask_from(doc: dict, n: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(doc["label_png"])))) == n


def test_click_box_modes_and_downloads_over_http(server, tiny_shapes):
    url, app = server
    status, info = http_call(f"{url}/api/info")
    assert status == 200 and info["samples"] and "circle" in info["vocabulary"]
    assert info["clip_pretrained"] is False, "the tests' model: a randomly initialised CLIP (the page says so)"
    status, page = http_call(f"{url}/")
    assert status == 200 and b"<canvas" in page

    # the sample with the largest thing
    best = None
    for name in info["samples"]:
        seg = gt_segment(tiny_shapes, name)
        if seg is not None and (best is None or seg[0].sum() > best[1][0].sum()):
            best = (name, seg)
    name, (gt, (x, y)) = best
    status, img = http_call(f"{url}/api/image", {"sample": name})
    assert status == 200 and (img["width"], img["height"]) == (64, 64)

    status, res = http_call(
        f"{url}/api/prompt",
        {
            "image_id": img["image_id"],
            "prompts": [{"point": [x, y]}],
            "vocabulary": "circle, disc\nsquare, box\ntriangle\nstar\nhexagon",
        },
    )
    assert status == 200, res
    (m,) = res["masks"]
    assert m["label"] in ("circle", "square", "triangle", "star", "hexagon") and 0 <= m["label_score"] <= 1
    assert m["label_source"] in ("queries", "clip")
    pred = _mask_from(res, 1)
    iou = (pred & gt).sum() / max((pred | gt).sum(), 1)
    assert iou > 0.3, f"a click on the shape at ({x:.0f}, {y:.0f}) gave a mask with IoU {iou:.2f}"
    overlay = Image.open(io.BytesIO(base64.b64decode(res["overlay_png"])))
    assert overlay.mode == "RGBA" and overlay.size == (64, 64)

    # a point and a box in one request come back in the request's order
    ys, xs = np.nonzero(gt)
    box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
    status, two = http_call(
        f"{url}/api/prompt", {"image_id": img["image_id"], "prompts": [{"box": box}, {"point": [x, y]}]}
    )
    assert status == 200 and [m["prompt"] for m in two["masks"]] == [1, 2]
    # no vocabulary in the request: the masks are named with the training one (as in every schema request)
    assert {m["label"] for m in two["masks"]} <= set(info["vocabulary"].replace(",", "\n").split())
    box_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(two["label_png"])))) > 0
    assert (box_mask & gt).sum() / max((box_mask | gt).sum(), 1) > 0.3

    for task in ("panoptic", "instance", "semantic"):
        status, seg = http_call(f"{url}/api/segment", {"image_id": img["image_id"], "task": task})
        assert status == 200 and seg["task"] == task, seg
        assert all({"name", "color", "area"} <= set(r) for r in seg["legend"])
    status, seg = http_call(f"{url}/api/segment", {"image_id": img["image_id"], "task": "semantic"})
    assert {r["name"] for r in seg["legend"]} <= set(app.predictor.training_vocabulary.display)

    # features once per image: prompts and modes reuse them
    calls = app.predictor.stats["backbone_calls"]
    http_call(f"{url}/api/prompt", {"image_id": img["image_id"], "prompts": [{"point": [x, y]}]})
    assert app.predictor.stats["backbone_calls"] == calls

    # an upload (PNG bytes) works like a sample
    arr = np.asarray(Image.open(find_samples(tiny_shapes)[name]).convert("RGB"))
    status, up = http_call(f"{url}/api/image", _png(arr), ctype="image/png")
    assert status == 200 and up["image_id"] != img["image_id"]


@pytest.mark.parametrize(
    "path,body,ctype,status,words",
    [
        ("/api/prompt", b"{not json", "application/json", 400, "not valid JSON"),
        ("/api/prompt", {"image_id": "nope", "prompts": [{"point": [1, 1]}]}, None, 404, "unknown image_id"),
        ("/api/prompt", {"image_id": "img1", "prompts": []}, None, 400, "non-empty list"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"point": [1]}]}, None, 400, "prompts[0]"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"point": [500, 5]}]}, None, 400, "outside"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"box": [9, 9, 3, 3]}]}, None, 400, "not an XYXY box"),
        ("/api/segment", {"image_id": "img1", "task": "video"}, None, 400, "field 'task'"),
        ("/api/segment", {"image_id": "img1", "task": "panoptic", "vocabulary": 3}, None, 400, "field 'vocabulary'"),
        ("/api/image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png", 400, "PNG upload: cannot read the image header"),
        ("/api/image", b"x" * 400_000, "image/png", 413, "exceeds the limit"),
        ("/api/image", {"sample": "../../etc/passwd"}, None, 404, "no sample"),
        ("/api/segment", {"image_id": "img1", "task": "instance", "min_score": "abc"}, None, 400, "field 'min_score'"),
        ("/api/segment", {"image_id": "img1", "task": "instance", "min_score": True}, None, 400, "field 'min_score'"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"point": [True, 5]}]}, None, 400, "prompts[0]"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"box": [1, 2, False, 9]}]}, None, 400, "prompts[0]"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"clicks": [[1, 2, 5]]}]}, None, 400, "prompts[0]"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"clicks": []}]}, None, 400, "prompts[0]"),
        ("/api/prompt", {"image_id": "img1", "prompts": [{"clicks": [[1, 2, 0]]}]}, None, 400, "positive click"),
        (
            "/api/segment",
            {"image_id": "img1", "task": "panoptic", "vocabulary": "\n".join(f"c{i}" for i in range(301))},
            None,
            413,
            "301 classes, at most 300",
        ),
        ("/api/segment", {"image_id": "img1", "task": "panoptic", "vocabulary": "x" * 20_001}, None, 413, "characters"),
        ("/api/nothing", {}, None, 404, "no such endpoint"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_clear_message(server, tiny_shapes, path, body, ctype, status, words):
    url, _ = server
    name = sorted(find_samples(tiny_shapes))[0]
    assert http_call(f"{url}/api/image", {"sample": name})[0] == 200  # so that img1 exists
    got, doc = http_call(f"{url}{path}", body, ctype=ctype or "application/json")
    assert got == status and words in doc["error"], doc


def test_other_methods_and_pages_are_refused(server):
    url, _ = server
    assert http_call(f"{url}/api/info", {}, method="PUT")[0] == 405
    status, doc = http_call(f"{url}/secret.txt")
    assert status == 404 and "no such page" in doc["error"]


def test_the_server_binds_loopback_by_default():
    import inspect

    from omg_platform.cli import build_parser

    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


def test_the_image_cache_is_sized_in_bytes_and_says_when_an_image_expired(interactive_checkpoint):
    from omg.inference.predictor import OMGPredictor
    from omg.serve.app import nbytes

    predictor = OMGPredictor.from_checkpoint(interactive_checkpoint)
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    per_image = img.nbytes + nbytes(predictor.set_image(img))
    assert per_image > 100_000, "features, not only pixels, are counted"
    app = ServeApp(predictor, limits=Limits(cache_bytes=int(2.5 * per_image)))
    ids = [app.add_image(img)["image_id"] for _ in range(3)]
    with pytest.raises(RequestError, match="image img1 expired.*upload it again") as info:
        app.prompt({"image_id": ids[0], "prompts": [{"point": [5, 5]}]})
    assert info.value.status == 410
    assert app.prompt({"image_id": ids[2], "prompts": [{"point": [5, 5]}]})["masks"]
    with pytest.raises(RequestError, match="unknown image_id") as info:
        app.prompt({"image_id": "img99", "prompts": [{"point": [5, 5]}]})
    assert info.value.status == 404


def test_the_default_checkpoint_is_the_newest_trained_model(tmp_path):
    """`omg serve` without --checkpoint: the newest runs/train/<run>/model.pt (after make demo, the demo model),
    found by the training export layout, not by reading the demo's own state file."""
    import os

    from omg.serve import default_checkpoint

    assert default_checkpoint(str(tmp_path)) is None
    for i, run in enumerate(("shapes_demo-1", "finetune-2")):
        path = tmp_path / "train" / run / "model.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert default_checkpoint(str(tmp_path)) == str(tmp_path / "train" / "finetune-2" / "model.pt")


def test_the_schema_endpoint_answers_as_the_predictor_and_caches_features(server, tiny_shapes):
    """POST /api/predict (omg/inference/schema.py, the API the pyfunc model and the Ray Serve app speak too): the
    response equals the predictor's own; a second request on the same image only runs the decoder; bad requests get
    the schema's 4xx."""
    from omg.inference import schema
    from omg.inference.predictor import OMGPredictor

    url, app = server
    image = np.asarray(Image.open(next(iter(find_samples(tiny_shapes).values()))).convert("RGB"))
    own = OMGPredictor.from_checkpoint(app.checkpoint)
    for doc in (
        {"task": "interactive", "image": schema.b64_png(image), "points": [[20, 20]], "boxes": [[2, 2, 40, 40]]},
        {"task": "panoptic", "image": schema.b64_png(image)},
        {"task": "semantic", "image": schema.b64_png(image), "vocabulary": "circle, disc\nstuff:sky"},
    ):
        calls = app.predictor.stats["backbone_calls"]
        status, got = http_call(f"{url}/api/predict", doc)
        assert status == 200, got
        assert got == schema.predict(own, schema.Request.from_json(doc)).to_json()
        if doc["task"] != "interactive":
            assert app.predictor.stats["backbone_calls"] == calls, "the image's features came from the cache"
    status, err = http_call(
        f"{url}/api/predict", {"task": "panoptic", "image": schema.b64_png(image), "points": [[1, 1]]}
    )
    assert status == 400 and "takes no prompts" in err["error"]
    status, err = http_call(f"{url}/api/predict", {"task": "vis", "frames": [schema.b64_png(image[:8, :8])] * 65})
    assert status == 413 and "at most 64" in err["error"]


def test_an_image_another_replica_took_is_resent_inline(server, tiny_shapes):
    """Behind several replicas the upload and the click may reach different servers: an unknown image_id with the
    image inline is answered (features computed here, under a new id of this server's, never the client's id)."""
    from omg.inference import schema

    url, app = server
    image = np.asarray(Image.open(next(iter(find_samples(tiny_shapes).values()))).convert("RGB"))
    body = {"image_id": "r7f3-img9", "prompts": [{"point": [20, 20]}]}
    status, err = http_call(f"{url}/api/prompt", body)
    assert status == 404, err
    status, doc = http_call(f"{url}/api/prompt", {**body, "image": schema.b64_png(image)})
    assert status == 200 and doc["image_id"] != "r7f3-img9" and doc["image_id"].startswith("img"), doc
    status, again = http_call(f"{url}/api/segment", {"image_id": doc["image_id"], "task": "panoptic"})
    assert status == 200 and again["image_id"] == doc["image_id"]
    status, err = http_call(f"{url}/api/prompt", {**body, "image": "bm90IGFuIGltYWdl"})
    assert status == 415 and "not a PNG or JPEG" in err["error"]


def test_a_short_video_upload_plays_back_its_overlay(server, tiny_shapes):
    """POST /api/video: an mp4 of an omg-shapes val video -> a WebM overlay with every frame at the video's size, and a
    legend that is the schema's answer for the same frames (the model's own VPS); over-limit and broken videos are 4xx
    naming the field."""
    from omg.inference import schema
    from omg.inference.media import encode_video, read_video_bytes

    url, app = server
    folder = Path(tiny_shapes) / "videos/val/JPEGImages/val_0000"
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.jpg"))]
    mp4 = encode_video(frames, 5, "mp4")
    decoded, fps = read_video_bytes(mp4, 64)
    status, doc = http_call(f"{url}/api/video", {"task": "vps", "video": base64.b64encode(mp4).decode()})
    assert status == 200, doc
    assert doc["frames"] == len(frames) and doc["fps"] == pytest.approx(5) and (doc["width"], doc["height"]) == (64, 64)
    movie, _ = read_video_bytes(base64.b64decode(doc["overlay_webm"]), 64)
    assert len(movie) == len(frames) and movie[0].shape == (64, 64, 3)
    with app.using_model():
        want = schema.predict(app.predictor, schema.Request("vps", tuple(decoded)))
    assert [r["name"] for r in doc["legend"]] == [s.label for s in want.segments]
    assert [r["area"] for r in doc["legend"]] == [s.area for s in want.segments]
    assert np.abs(movie[0].astype(int) - decoded[0]).mean() > 3, "the overlay is drawn on the frames"

    cases = [
        ({"task": "vos", "video": "AAAA"}, 400, "field 'task'"),
        ({"task": "vis"}, 400, "field 'video'"),
        ({"task": "vis", "video": "***"}, 400, "not valid base64"),
        ({"task": "vis", "video": base64.b64encode(b"\0" * 4000).decode()}, 415, "not a video file"),
        (
            {"task": "vis", "video": base64.b64encode(encode_video(frames * 9, 5, "mp4")).decode()},
            413,
            "more than 64 frames",
        ),
    ]
    for body, code, words in cases:
        status, doc = http_call(f"{url}/api/video", body)
        assert status == code and words in doc["error"], (body.get("task"), status, doc)


def test_clicks_on_an_object_are_answered_click_by_click(server, tiny_shapes):
    """``/api/prompt`` with ``{"clicks": [[x, y, 1 or 0], ...]}``: one object corrected by its clicks, the answer
    the predictor gives clicking them one at a time (each with the mask of the one before), beside a plain point."""
    from omg.inference.objects import ObjectPrompt

    url, app = server
    status, info = http_call(f"{url}/api/info")
    assert info["refinement"] is True, "the tests' served model is trained with refinement (tests/helpers.py)"
    name = sorted(find_samples(tiny_shapes))[0]
    status, img = http_call(f"{url}/api/image", {"sample": name})
    clicks = [[20, 20, 1], [30, 34, 0], [12, 40, 1]]
    status, res = http_call(
        f"{url}/api/prompt", {"image_id": img["image_id"], "prompts": [{"clicks": clicks}, {"point": [50, 10]}]}
    )
    assert status == 200, res
    assert [m["prompt"] for m in res["masks"]] == [1, 2]
    image = np.asarray(Image.open(io.BytesIO(http_call(f"{url}/api/sample/{name}")[1])).convert("RGB"))
    app.predictor.set_image(image)
    want = app.predictor.interactive(
        objects=[ObjectPrompt([c[:2] for c in clicks], [c[2] for c in clicks]), ObjectPrompt([[50, 10]])]
    )
    label_map = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["label_png"]))))
    expect = np.zeros_like(label_map)
    for n, m in enumerate(want.masks, 1):
        expect[m] = n
    assert np.array_equal(label_map, expect)
