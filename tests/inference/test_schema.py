"""The inference schema (omg/inference/schema.py): requests parsed strictly with the web server's 4xx errors, and
for every task a response equal to the predictor's own result (masks, labels, scores), in the official conventions
(COCO RLE with string counts, XYWH boxes, per-frame segmentations with null where a track is absent)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from omg.data.masks import coco_bbox, rle_decode, rle_encode
from omg.inference import schema
from omg.inference.predictor import OMGPredictor
from omg.inference.schema import Limits, Request, RequestError, Response, b64_png
from omg.modeling.model import ModelConfig, build_model
from tests.helpers import LABEL_SPACE


@pytest.fixture(scope="module")
def predictor() -> OMGPredictor:
    torch.manual_seed(0)
    return OMGPredictor(build_model(ModelConfig.tiny()), {"label_space": LABEL_SPACE, "test_size": [64, 64]})


def _image(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _roundtrip(doc: dict) -> Request:
    """A request as it travels: JSON text, parsed."""
    return Request.from_json(json.loads(json.dumps(doc)))


@pytest.mark.parametrize(
    "doc, status, words",
    [
        ([], 400, "JSON object"),
        ({"task": "panoptic", "image": "x", "colour": 1}, 400, "unknown field.*'colour'"),
        ({"task": "segment"}, 400, "field 'task'"),
        ({"task": "panoptic"}, 400, "field 'image'"),
        ({"task": "panoptic", "image": "%%%"}, 400, "not valid base64"),
        ({"task": "panoptic", "image": base64.b64encode(b"GIF89a....").decode()}, 415, "not a PNG or JPEG"),
        ({"task": "panoptic", "frames": ["x"]}, 400, "image task: send 'image'"),
        ({"task": "vis", "image": "x"}, 400, "video task: send 'frames'"),
        ({"task": "vis", "frames": []}, 400, "field 'frames'"),
        ({"task": "interactive", "image": "IMG"}, 400, "needs 'points' and / or 'boxes'"),
        ({"task": "panoptic", "image": "IMG", "points": [[1, 2]]}, 400, "takes no prompts"),
        ({"task": "interactive", "image": "IMG", "points": [[1, True]]}, 400, r"points\[0\]: expected a finite number"),
        ({"task": "interactive", "image": "IMG", "boxes": [[1, 2, 3]]}, 400, r"boxes\[0\]: expected 4 numbers"),
        ({"task": "interactive", "image": "IMG", "points": [[1, 2]] * 65}, 400, "at most 64"),
        ({"task": "instance", "image": "IMG", "topk": 0}, 400, "field 'topk'"),
        ({"task": "instance", "image": "IMG", "min_score": "0.5"}, 400, "field 'min_score'"),
        ({"task": "semantic", "image": "IMG", "vocabulary": 3}, 400, "field 'vocabulary'"),
        ({"task": "semantic", "image": "IMG", "vocabulary": ["c"] * 301}, 413, "301 classes"),
        ({"task": "vos", "frames": ["IMG"]}, 400, "needs 'first_frame'"),
        (
            {
                "task": "vos",
                "frames": ["IMG"],
                "first_frame": [{"id": 1, "segmentation": {"size": [4, 4], "counts": "0"}}],
            },
            400,
            r"first_frame\[0\].segmentation is 4x4",
        ),
        ({"task": "vis", "frames": ["IMG"] * 65}, 413, "65 frames, at most 64"),
        ({"task": "panoptic", "image": "IMG", "objects": [{"points": [[1, 2]]}]}, 400, "takes no prompts"),
        ({"task": "interactive", "image": "IMG", "objects": []}, 400, "field 'objects'"),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"points": [[1, 2]]}], "points": [[1, 2]]},
            400,
            "not both",
        ),
        ({"task": "interactive", "image": "IMG", "objects": [{"clicks": [[1, 2]]}]}, 400, r"objects\[0\]: expected"),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"points": [[1, 2]], "labels": [2]}]},
            400,
            r"objects\[0\].labels",
        ),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"points": [[1, 2]], "labels": [0]}]},
            400,
            r"objects\[0\]: needs a positive click or a box",
        ),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"points": [[1, 2], [3, 4]], "labels": [1]}]},
            400,
            r"objects\[0\]: 2 points but 1 labels",
        ),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"points": [[100, 2]]}]},
            400,
            r"objects\[0\]: point 0 .* outside the 64x48 image",
        ),
        (
            {"task": "interactive", "image": "IMG", "objects": [{"box": [1, 2, 3]}]},
            400,
            r"objects\[0\].box\[0\]: expected 4 numbers",
        ),
        (
            {
                "task": "interactive",
                "image": "IMG",
                "objects": [{"points": [[1, 2]], "mask": {"size": [4, 4], "counts": "0"}}],
            },
            400,
            r"objects\[0\].mask is 4x4, the image 64x48",
        ),
    ],
)
def test_a_bad_request_is_a_4xx_naming_the_field(doc, status, words):
    image = b64_png(_image())
    for key in ("image", "frames"):
        if doc and isinstance(doc, dict) and doc.get(key) == "IMG":
            doc[key] = image
        elif isinstance(doc, dict) and isinstance(doc.get(key), list):
            doc[key] = [image if f == "IMG" else f for f in doc[key]]
    with pytest.raises(RequestError, match=words) as info:
        _roundtrip(doc)
    assert info.value.status == status


def test_images_are_bounded_in_bytes_and_pixels_before_decoding():
    doc = {"task": "panoptic", "image": b64_png(_image(64, 64))}
    with pytest.raises(RequestError, match="exceeds the limit") as info:
        Request.from_json(doc, Limits(max_bytes=200))
    assert info.value.status == 413
    with pytest.raises(RequestError, match="decompression bombs") as info:
        Request.from_json(doc, Limits(max_pixels=1000))
    assert info.value.status == 413


def test_every_image_task_answers_what_the_predictor_returns(predictor):
    image = _image()
    predictor.set_image(image)
    vocab = ["circle, disc", "hexagon", "stuff:sky"]

    pan = Response.from_json(
        json.loads(
            json.dumps(schema.predict(predictor, _roundtrip({"task": "panoptic", "image": b64_png(image)})).to_json())
        )
    )
    ref = predictor.panoptic()
    assert [s.id for s in pan.segments] == [s.id for s in ref.segments] and pan.vocabulary == ref.vocabulary
    for s, r in zip(pan.segments, ref.segments):
        m = ref.panoptic == r.id
        assert np.array_equal(rle_decode(s.segmentation), m) and isinstance(s.segmentation["counts"], str)
        assert (s.category_id, s.label, s.isthing, s.area) == (r.label, r.name, r.isthing, r.area)
        assert s.bbox == coco_bbox(m) and abs(s.score - r.score) < 1e-5

    inst = schema.predict(
        predictor, _roundtrip({"task": "instance", "image": b64_png(image), "topk": 7, "vocabulary": vocab})
    )
    ref = predictor.instance(vocabulary=vocab, topk=7)
    assert np.array_equal(inst.masks(), ref.masks) and [s.label for s in inst.segments] == ref.names
    assert np.allclose([s.score for s in inst.segments], ref.scores, atol=1e-5)
    some = schema.predict(
        predictor,
        _roundtrip(
            {
                "task": "instance",
                "image": b64_png(image),
                "topk": 7,
                "vocabulary": vocab,
                "min_score": float(ref.scores[2]),
            }
        ),
    )
    assert len(some.segments) == int((ref.scores >= ref.scores[2]).sum()), "min_score keeps the best-scored"

    sem = schema.predict(predictor, _roundtrip({"task": "semantic", "image": b64_png(image), "vocabulary": vocab}))
    ref = predictor.semantic(vocabulary=vocab)
    assert sorted(s.category_id for s in sem.segments) == sorted(np.unique(ref.labels).tolist())
    for s in sem.segments:
        assert np.array_equal(rle_decode(s.segmentation), ref.labels == s.category_id) and s.id == s.category_id + 1

    # prompts: points first, then boxes; without a vocabulary the masks are named with the training one
    click = schema.predict(
        predictor,
        _roundtrip(
            {"task": "interactive", "image": b64_png(image), "points": [[5, 6], [40, 30]], "boxes": [[0, 0, 30, 20]]}
        ),
    )
    ref = predictor.interactive(
        points=[[5, 6], [40, 30]], boxes=[[0, 0, 30, 20]], vocabulary=predictor.training_vocabulary
    )
    assert np.array_equal(click.masks(), ref.masks) and [s.id for s in click.segments] == [1, 2, 3]
    assert [s.label for s in click.segments] == ref.names and click.vocabulary is None


def test_every_video_task_answers_what_the_predictor_returns(predictor):
    frames = [_image(40, 48, seed=t) for t in range(5)]
    doc = {"frames": [b64_png(f) for f in frames]}
    predictor.set_video(frames)
    vis = schema.predict(predictor, _roundtrip({**doc, "task": "vis", "topk": 5})).to_json()
    ref = predictor.vis(topk=5)
    assert vis["frames"] == 5 and len(vis["segments"]) == len(ref.scores)
    for s, k in zip(vis["segments"], range(len(ref.scores))):
        segs = s["segmentations"]
        assert len(segs) == 5 and all(r is None for r, m in zip(segs, ref.masks[k]) if not m.any())
        assert all(np.array_equal(rle_decode(r), m) for r, m in zip(segs, ref.masks[k]) if r is not None)
    vps = Response.from_json(schema.predict(predictor, _roundtrip({**doc, "task": "vps"})).to_json())
    ref = predictor.vps()
    assert [s.id for s in vps.segments] == [s.id for s in ref.segments]
    assert all(np.array_equal(m, ref.panoptic == s.id) for s, m in zip(vps.segments, vps.masks()))
    vss = schema.predict(predictor, _roundtrip({**doc, "task": "vss"}))
    ref = predictor.vss()
    assert all(np.array_equal(m, ref.labels == s.category_id) for s, m in zip(vss.segments, vss.masks()))
    first = np.zeros((40, 48), bool)
    first[5:20, 10:30] = True
    vos = schema.predict(
        predictor, _roundtrip({**doc, "task": "vos", "first_frame": [{"id": 3, "segmentation": rle_encode(first)}]})
    )
    ref = predictor.vos(first_frame_masks=first[None], object_ids=[3])
    assert [s.id for s in vos.segments] == [3] and np.array_equal(vos.masks()[0], ref.masks == 3)


def test_a_request_the_model_cannot_take_is_a_400(predictor):
    with pytest.raises(RequestError, match="outside the 64x48 image") as info:
        schema.predict(predictor, _roundtrip({"task": "interactive", "image": b64_png(_image()), "points": [[100, 5]]}))
    assert info.value.status == 400


def test_objects_with_clicks_answer_what_the_predictor_returns_and_travel_as_json():
    """The refinement's request: an object with positive and negative clicks (replayed click by click) and one with
    a box and the previous mask, answered as the predictor answers the same object prompts."""
    from omg.inference.objects import ObjectPrompt

    torch.manual_seed(0)
    pred = OMGPredictor(
        build_model(ModelConfig.tiny(refinement=True)), {"label_space": LABEL_SPACE, "test_size": [64, 64]}
    )
    image = _image()
    prev = np.zeros((48, 64), bool)
    prev[10:30, 20:40] = True
    doc = {
        "task": "interactive",
        "image": b64_png(image),
        "objects": [
            {"points": [[30, 20], [35, 25], [10, 40]], "labels": [1, 0, 1]},
            {"box": [5, 5, 40, 30], "points": [[20, 20]], "labels": [0], "mask": rle_encode(prev)},
        ],
    }
    req = _roundtrip(doc)
    assert _roundtrip(req.to_json()).to_json() == req.to_json()
    res = schema.predict(pred, req)
    pred.set_image(image)
    want = pred.interactive(
        objects=[
            ObjectPrompt([[30, 20], [35, 25], [10, 40]], [1, 0, 1]),
            ObjectPrompt([[20, 20]], [0], [5, 5, 40, 30], prev),
        ],
        vocabulary=pred.training_vocabulary,
    )
    assert [s.id for s in res.segments] == [1, 2]
    for seg, mask in zip(res.segments, want.masks):
        assert np.array_equal(rle_decode(seg.segmentation), mask)


def test_to_json_is_what_from_json_reads():
    image = _image()
    req = Request("interactive", (image,), points=np.array([[1.0, 2.0]], np.float32), vocabulary=("circle", "sky"))
    again = _roundtrip(req.to_json())
    assert np.array_equal(again.images[0], image) and again.points.tolist() == [[1.0, 2.0]]
    assert again.vocabulary == ("circle", "sky") and again.task == "interactive"
