"""omg-shapes: deterministic, and every file valid in its official format."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from omg.data import synthetic
from omg.data.masks import rgb2id, rle_decode
from omg.data.synthetic import SynthOptions, generate, iter_files, shape_polygon
from omg.data.validate import validate_omg_shapes
from tests.helpers import TINY_SHAPES


def _digest(root: str) -> dict[str, str]:
    return {f: hashlib.sha256((Path(root) / f).read_bytes()).hexdigest() for f in iter_files(root)}


def _load(root: str, rel: str):
    return json.loads((Path(root) / rel).read_text())


def _pan(root: str, rel: str) -> np.ndarray:
    return rgb2id(np.asarray(Image.open(Path(root) / rel)))


def test_deterministic(tmp_path, tiny_shapes):
    again = tmp_path / "again"
    generate(str(again), seed=7, opts=SynthOptions(**TINY_SHAPES), progress=False)
    assert _digest(tiny_shapes) == _digest(str(again))
    other = tmp_path / "other"
    generate(str(other), seed=8, opts=SynthOptions(**TINY_SHAPES), progress=False)
    a, b = _digest(tiny_shapes), _digest(str(other))
    common = a.keys() & b.keys()  # video lengths depend on the seed
    assert len(common) > 0.5 * len(a) and sum(a[k] != b[k] for k in common) > 0.9 * len(common)


def test_rerun_is_a_noop_and_conflicts_are_refused(tiny_shapes):
    before = _digest(tiny_shapes)
    meta = generate(tiny_shapes, seed=7, opts=SynthOptions(**TINY_SHAPES), progress=False)
    assert meta["seed"] == 7 and _digest(tiny_shapes) == before
    with pytest.raises(FileExistsError, match="different omg-shapes"):
        generate(tiny_shapes, seed=9, opts=SynthOptions(**TINY_SHAPES), progress=False)


def test_every_format_validates(tiny_shapes):
    reports = validate_omg_shapes(tiny_shapes)
    assert len(reports) == 3 + 2 + 2 + 2  # omg-shapes (3 splits), vis, vps, vos
    for r in reports:
        assert r.ok, [str(p) for p in r.problems]
    counts = {r.what.split(" ")[0]: r.counts for r in reports}
    assert counts["omg-shapes/train"]["images"] == TINY_SHAPES["num_train_images"]
    assert counts["omg-shapes-vis/val"]["videos"] == TINY_SHAPES["num_val_videos"]


def test_panoptic_png_and_json_agree(tiny_shapes):
    """PNG ids == JSON ids, areas == pixel counts, stuff/thing flags as the catalog says."""
    doc = _load(tiny_shapes, "annotations/panoptic_train.json")
    isthing = {c["id"]: c["isthing"] for c in doc["categories"]}
    for ann in doc["annotations"]:
        pan = _pan(tiny_shapes, f"annotations/panoptic_train/{ann['file_name']}")
        ids, counts = np.unique(pan, return_counts=True)
        png = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
        assert png == {s["id"]: s["area"] for s in ann["segments_info"]}
        stuff = [s["category_id"] for s in ann["segments_info"] if not isthing[s["category_id"]]]
        assert len(stuff) == len(set(stuff)), "one segment per stuff class"


def test_instances_rle_equal_panoptic_thing_segments(tiny_shapes):
    for split in synthetic.IMAGE_SPLITS:
        pan_doc = _load(tiny_shapes, f"annotations/panoptic_{split}.json")
        inst_doc = _load(tiny_shapes, f"annotations/instances_{split}.json")
        by_image = defaultdict(list)
        for a in inst_doc["annotations"]:
            by_image[a["image_id"]].append(a)
        thing_ids = {c["id"] for c in inst_doc["categories"]}
        for ann in pan_doc["annotations"]:
            pan = _pan(tiny_shapes, f"annotations/panoptic_{split}/{ann['file_name']}")
            things = [s for s in ann["segments_info"] if s["category_id"] in thing_ids]
            insts = by_image[ann["image_id"]]
            assert len(things) == len(insts)
            for seg, inst in zip(things, insts):
                mask = rle_decode(inst["segmentation"])
                assert np.array_equal(mask, pan == seg["id"])
                assert (inst["category_id"], inst["iscrowd"], inst["area"]) == (
                    seg["category_id"],
                    seg["iscrowd"],
                    seg["area"],
                )


def test_heldout_classes_only_in_val_ov(tiny_shapes):
    heldout = {c.id for c in synthetic.HELDOUT_THINGS}
    for split in synthetic.IMAGE_SPLITS:
        doc = _load(tiny_shapes, f"annotations/panoptic_{split}.json")
        per_image = [{s["category_id"] for s in a["segments_info"]} & heldout for a in doc["annotations"]]
        cats = {c["id"] for c in doc["categories"]}
        if split == "val_ov":
            assert all(per_image) and heldout <= cats
        else:
            assert not any(per_image) and not (heldout & cats)
    for split in synthetic.VIDEO_SPLITS:
        yt = _load(tiny_shapes, f"videos/{split}/instances.json")
        assert not {a["category_id"] for a in yt["annotations"]} & heldout


def _hue_distance(rgb, centre: float) -> float:
    import colorsys

    h = colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=float) / 255.0))[0]
    d = abs(h - centre) % 1.0
    return min(d, 1.0 - d)


def test_each_thing_class_has_its_own_hue_band(tiny_shapes):
    rng = np.random.default_rng(0)
    for name, centre in synthetic.THING_HUES.items():
        for _ in range(50):
            assert _hue_distance(synthetic.thing_color(rng, name), centre) <= synthetic.THING_HUE_SPREAD + 1e-9
    # and in the written images: a thing segment's mean colour sits near its class's hue
    # (shading and pattern add the same offset to R, G and B; JPEG and clipping add a little)
    doc = _load(tiny_shapes, "annotations/panoptic_train.json")
    hues = {c["id"]: synthetic.THING_HUES[c["name"]] for c in doc["categories"] if c["isthing"]}
    checked = 0
    for a in doc["annotations"]:
        pan = _pan(tiny_shapes, f"annotations/panoptic_train/{a['file_name']}")
        img = np.asarray(Image.open(Path(tiny_shapes) / "images/train" / a["file_name"].replace(".png", ".jpg")))
        for seg in a["segments_info"]:
            m = pan == seg["id"]
            if seg["category_id"] in hues and not seg["iscrowd"] and m.sum() >= 40:
                assert _hue_distance(img[m].mean(0), hues[seg["category_id"]]) < 0.1, (a["file_name"], seg)
                checked += 1
    assert checked >= 5


def test_crowd_void_stuff_and_occlusion_occur(tmp_path):
    opts = SynthOptions(
        image_size=96, num_train_images=40, num_val_images=0, num_val_ov_images=0, num_train_videos=0, num_val_videos=0
    )
    generate(str(tmp_path), seed=1, opts=opts, progress=False)
    doc = _load(str(tmp_path), "annotations/panoptic_train.json")
    segs = [s for a in doc["annotations"] for s in a["segments_info"]]
    assert any(s["iscrowd"] for s in segs)
    void_images = 0
    for a in doc["annotations"]:
        pan = _pan(str(tmp_path), f"annotations/panoptic_train/{a['file_name']}")
        void_images += int((pan == 0).any())
    assert void_images >= 3
    stuff_ids = {c.id for c in synthetic.STUFF_CLASSES}
    assert len({s["category_id"] for s in segs if s["category_id"] in stuff_ids}) >= 3
    thing_cats = {s["category_id"] for s in segs if s["category_id"] not in stuff_ids}
    assert thing_cats == {c.id for c in synthetic.TRAIN_THINGS}


def test_things_overlap_and_occlude():
    opts = SynthOptions(image_size=96)
    occluded = 0
    for i in range(30):
        scene = synthetic.image_scene(np.random.default_rng([5, i]), opts, "train")
        frame = scene.render(96, 96, 0.0, opts.min_segment_area)
        visible = {s.key: s.mask for s in frame.segments}
        for k, thing in enumerate(scene.things):
            full = thing.mask(96, 96)
            vis = visible.get(f"thing:{k}")
            if vis is not None and vis.sum() < full.sum():
                occluded += 1
                assert vis.sum() >= 0.5 * full.sum() - 1, "placement keeps at least half of an occluded thing"
    assert occluded >= 5


def test_video_tracks_are_consistent_across_formats(tiny_shapes):
    """YouTube-VIS tracks, VIPSeg ids and DAVIS objects describe the same pixels in every frame."""
    for split in synthetic.VIDEO_SPLITS:
        yt = _load(tiny_shapes, f"videos/{split}/instances.json")
        vps = _load(tiny_shapes, f"videos/{split}/panoptic.json")
        for video, vann in zip(yt["videos"], vps["annotations"]):
            name = vann["video_id"]
            assert video["file_names"][0].startswith(name + "/")
            assert 8 <= video["length"] <= 10 and len(vann["annotations"]) == video["length"]
            tracks = [a for a in yt["annotations"] if a["video_id"] == video["id"]]
            pans = [
                _pan(tiny_shapes, f"videos/{split}/panoptic/{name}/{fa['file_name']}") for fa in vann["annotations"]
            ]
            cats_by_id: dict[int, int] = {}
            for fa in vann["annotations"]:
                for s in fa["segments_info"]:
                    assert cats_by_id.setdefault(s["id"], s["category_id"]) == s["category_id"]
            for tr in tracks:
                present = [t for t, m in enumerate(tr["segmentations"]) if m is not None]
                assert present
                # the VIPSeg id of this track: the id under its mask in its first frame
                t0 = present[0]
                mask0 = rle_decode(tr["segmentations"][t0])
                vid_ids = np.unique(pans[t0][mask0])
                assert len(vid_ids) == 1
                track_id = int(vid_ids[0])
                assert cats_by_id[track_id] == tr["category_id"]
                for t, seg in enumerate(tr["segmentations"]):
                    expected = pans[t] == track_id
                    if seg is None:
                        assert not expected.any()
                        assert tr["areas"][t] is None and tr["bboxes"][t] is None
                    else:
                        assert np.array_equal(rle_decode(seg), expected)
            davis0 = np.asarray(Image.open(Path(tiny_shapes) / f"videos/{split}/Annotations/{name}/00000.png"))
            assert Image.open(Path(tiny_shapes) / f"videos/{split}/Annotations/{name}/00000.png").mode == "P"
            first_frame_tracks = [tr for tr in tracks if tr["segmentations"][0] is not None]
            assert sorted(np.unique(davis0[davis0 > 0]).tolist()) == list(range(1, len(first_frame_tracks) + 1))


def test_videos_move_and_change():
    opts = SynthOptions(image_size=64, min_frames=12, max_frames=12)
    rng = np.random.default_rng(3)
    scene = synthetic.video_scene(rng, opts, 12)
    frames = [scene.render(64, 64, float(t), opts.min_segment_area) for t in range(12)]
    first = {s.key: s.mask for s in frames[0].segments}
    last = {s.key: s.mask for s in frames[-1].segments}
    moved = [k for k in first if k.startswith("thing:") and k in last and not np.array_equal(first[k], last[k])]
    assert moved, "things move between frames"


@pytest.mark.parametrize("name", ["circle", "square", "triangle", "star", "hexagon", "cross"])
def test_shapes_have_the_right_geometry(name):
    poly = shape_polygon(name, 50, 50, 20, 0.3)
    n = {"circle": 48, "square": 4, "triangle": 3, "star": 10, "hexagon": 6, "cross": 12}[name]
    assert len(poly) == n
    radii = [np.hypot(x - 50, y - 50) for x, y in poly]
    expected = 20 * (np.hypot(1, 0.34) if name == "cross" else 1)  # cross: the arm ends are corners
    assert max(radii) == pytest.approx(expected, rel=1e-6)


def test_options_are_checked():
    with pytest.raises(ValueError, match="min_frames"):
        SynthOptions(min_frames=10, max_frames=5)
    with pytest.raises(ValueError, match="image_size"):
        SynthOptions(image_size=8)
