"""The validator finds each kind of defect and names the file, record and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omg.data.catalog import get_entry
from omg.data.masks import id2rgb, rgb2id
from omg.data.validate import validate_split


@pytest.fixture()
def shapes(tmp_path, tiny_shapes) -> Path:
    """A private, mutable copy of the tiny dataset."""
    dst = tmp_path / "shapes"
    shutil.copytree(tiny_shapes, dst)
    return dst


def _edit_json(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _problems(name: str, split: str, root: Path, strict: bool = False) -> list[str]:
    report = validate_split(get_entry(name), split, str(root), strict=strict)
    return [str(p) for p in report.problems]


def test_clean_copy_is_valid(shapes):
    assert _problems("omg-shapes", "train", shapes) == []


def test_area_mismatch(shapes):
    _edit_json(
        shapes / "annotations/panoptic_train.json",
        lambda d: d["annotations"][0]["segments_info"][0].__setitem__("area", 1),
    )
    probs = _problems("omg-shapes", "train", shapes)
    assert len(probs) == 1 and "field 'area'" in probs[0] and "image_id 1" in probs[0]
    assert probs[0].startswith(str(shapes / "annotations/panoptic_train/000000000001.png"))


def test_png_id_missing_from_json(shapes):
    def drop(d):
        d["annotations"][2]["segments_info"].pop()

    _edit_json(shapes / "annotations/panoptic_train.json", drop)
    probs = _problems("omg-shapes", "train", shapes)
    assert any("in the PNG but not in the JSON" in p and "image_id 3" in p for p in probs)


def test_json_id_missing_from_png(shapes):
    png = shapes / "annotations/panoptic_train/000000000002.png"
    pan = rgb2id(np.asarray(Image.open(png)))
    doc = json.loads((shapes / "annotations/panoptic_train.json").read_text())
    victim = doc["annotations"][1]["segments_info"][-1]["id"]
    pan[pan == victim] = 0
    Image.fromarray(id2rgb(pan)).save(png)
    # damaged data (only ADE20K's covered stuff is tolerated: tests/data/test_official_layouts.py): a problem
    # naming the PNG, the image and the field, without --strict
    probs = _problems("omg-shapes", "train", shapes)
    assert any(
        str(png) in p
        and "image_id 2" in p
        and "segments_info" in p
        and f"segment {victim}" in p
        and "no pixel in the PNG" in p
        for p in probs
    ), probs


def test_unknown_category(shapes):
    _edit_json(
        shapes / "annotations/panoptic_val.json",
        lambda d: d["annotations"][0]["segments_info"][0].__setitem__("category_id", 999),
    )
    probs = _problems("omg-shapes", "val", shapes)
    assert any("field 'category_id'" in p and "unknown category 999" in p for p in probs)


def test_truncated_image(shapes):
    img = shapes / "images/train/000000000004.jpg"
    img.write_bytes(img.read_bytes()[:200])
    probs = _problems("omg-shapes", "train", shapes)
    assert any("000000000004.jpg" in p and "truncated or corrupt image" in p for p in probs)


def test_size_mismatch(shapes):
    _edit_json(shapes / "annotations/panoptic_train.json", lambda d: d["images"][0].__setitem__("width", 99))
    probs = _problems("omg-shapes", "train", shapes)
    assert any("is 64x64" in p for p in probs)


def test_heldout_class_in_training_split(shapes):
    def leak(d):
        d["categories"].append({"id": 5, "name": "hexagon", "isthing": 1, "supercategory": "shape", "color": [1, 2, 3]})
        d["annotations"][0]["segments_info"][-1]["category_id"] = 5

    _edit_json(shapes / "annotations/panoptic_train.json", leak)
    from omg.data.validate import validate_dataset

    reports = validate_dataset(get_entry("omg-shapes"), str(shapes))
    train = [r for r in reports if "omg-shapes/train" in r.what][0]
    assert any("held-out class occurs 1 times in a training split" in str(p) for p in train.problems)


def test_ytvis_defects(shapes):
    def corrupt(d):
        a = d["annotations"][0]
        t = next(i for i, s in enumerate(a["segmentations"]) if s is not None)
        a["areas"][t] += 5
        a["segmentations"] = a["segmentations"][:-1]

    _edit_json(shapes / "videos/train/instances.json", corrupt)
    probs = _problems("omg-shapes-vis", "train", shapes)
    assert any("field 'segmentations'" in p and "entries for a" in p for p in probs)


def test_vipseg_track_changes_category(shapes):
    def corrupt(d):
        frames = d["annotations"][0]["annotations"]
        sid = frames[0]["segments_info"][0]["id"]
        for s in frames[1]["segments_info"]:
            if s["id"] == sid:
                s["category_id"] = 11 if s["category_id"] != 11 else 12

    _edit_json(shapes / "videos/train/panoptic.json", corrupt)
    probs = _problems("omg-shapes-vps", "train", shapes)
    assert any("changes category" in p and "field 'category_id'" in p for p in probs)


def test_davis_not_indexed(shapes):
    png = shapes / "videos/val/Annotations/val_0000/00003.png"
    Image.open(png).convert("RGB").save(png)
    probs = _problems("omg-shapes-vos", "val", shapes)
    assert any("mode P" in p and "00003.png" in p for p in probs)


def test_missing_json(shapes):
    (shapes / "annotations/panoptic_val.json").unlink()
    probs = _problems("omg-shapes", "val", shapes)
    assert len(probs) == 1 and "panoptic_val.json" in probs[0] and "missing" in probs[0]
