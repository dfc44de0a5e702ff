"""Every format reader round-trips exactly: omg-shapes files and small hand-made files in each official
format (crowd, VOID, overlapping instances, null frames, polygons, raw panomasks, the VSPW reduction)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from omg.data.catalog import get_entry
from omg.data.decode import decode_frames, decode_masks
from omg.data.formats import get_reader
from omg.data.formats.davis import DAVIS_PALETTE
from omg.data.masks import id2rgb, rgb2id, rle_encode
from omg.data.records import BadRecord, Sample
from tests.helpers import write_jpg

H, W = 24, 32


def _entry(name: str, root: Path, splits: dict, **changes):
    return dataclasses.replace(get_entry(name), root=str(root), splits={"s": splits}, **changes)


def _jpg(path: Path, seed: int = 0, size=(H, W)):
    write_jpg(path, size, seed)


def _png(path: Path, arr: np.ndarray, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if palette is not None:
        img.putpalette(palette)
    img.save(path)


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths over the column-major flattened mask, starting with zeros."""
    flat = mask.ravel(order="F").astype(np.uint8)
    counts, val, run = [], 0, 0
    for v in flat:
        if v == val:
            run += 1
        else:
            counts.append(run)
            val, run = v, 1
    counts.append(run)
    return counts


def _rect(y0, y1, x0, x1, size=(H, W)):
    m = np.zeros(size, bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------ omg-shapes, every format


def test_omg_shapes_panoptic_roundtrip(tiny_shapes):
    reader = get_reader(get_entry("omg-shapes"), "val", tiny_shapes)
    doc = json.loads((Path(tiny_shapes) / "annotations/panoptic_val.json").read_text())
    items = reader.items()
    assert len(items) == len(doc["annotations"])
    for item, ann in zip(items, sorted(doc["annotations"], key=lambda a: str(a["image_id"]))):
        s = reader.load(item)
        pan = rgb2id(np.array(Image.open(Path(tiny_shapes) / "annotations/panoptic_val" / ann["file_name"])))
        assert [(g.id, g.category_id, int(g.iscrowd), g.areas[0]) for g in s.segments] == [
            (i["id"], i["category_id"], i["iscrowd"], i["area"]) for i in ann["segments_info"]
        ]
        masks = decode_masks(s)
        for g, m in zip(s.segments, masks):
            assert np.array_equal(m[0], pan == g.id)
        assert decode_frames(s).shape == (1, s.height, s.width, 3)


def test_omg_shapes_sam_is_class_agnostic(tiny_shapes):
    reader = get_reader(get_entry("omg-shapes-sam"), "train", tiny_shapes)
    full = get_reader(get_entry("omg-shapes"), "train", tiny_shapes)
    for item, fitem in zip(reader.items(), full.items()):
        s, f = reader.load(item), full.load(fitem)
        assert all(g.category_id == -1 and not g.iscrowd for g in s.segments)
        assert [g.id for g in s.segments] == [g.id for g in f.segments if not g.iscrowd]


def test_omg_shapes_video_formats_agree(tiny_shapes):
    """YouTube-VIS tracks, VIPSeg ids and DAVIS objects decode to the same masks."""
    vis = get_reader(get_entry("omg-shapes-vis"), "train", tiny_shapes)
    vps = get_reader(get_entry("omg-shapes-vps"), "train", tiny_shapes)
    vos = get_reader(get_entry("omg-shapes-vos"), "train", tiny_shapes)
    for a, b, c in zip(vis.items(), vps.items(), vos.items()):
        sa, sb, sc = vis.load(a), vps.load(b), vos.load(c)
        assert sa.num_frames == sb.num_frames == sc.num_frames
        assert np.array_equal(decode_frames(sa), decode_frames(sb))
        ma, mb, mc = decode_masks(sa), decode_masks(sb), decode_masks(sc)
        for g, m in zip(sa.segments, ma):
            assert any(np.array_equal(m, mb[k]) for k in range(len(sb.segments))), f"track {g.id} not in VIPSeg"
        assert sc.mask_kind == "index" and all(g.category_id == -1 for g in sc.segments)
        for g, m in zip(sc.segments, mc):
            if m[0].any():
                assert any(np.array_equal(m, ma[k]) for k in range(len(sa.segments)))


# ------------------------------------------------------------------------------ hand-made COCO panoptic


def _coco_panoptic(root: Path, image_dir="images", cats=None, png_ids=None, json_extra=None, image_name="1.jpg"):
    """2 images; image 1 has stuff, a thing, a crowd region and VOID."""
    pan = np.zeros((H, W), np.int64)
    pan[:12] = 5  # stuff (sky)
    pan[12:] = 6  # stuff (grass)
    pan[4:10, 4:12] = 7  # thing
    pan[14:20, 20:30] = 8  # crowd
    pan[:, 30:] = 0  # VOID strip
    if png_ids:
        for a, b in png_ids.items():
            pan[pan == a] = b
    cats = cats or {5: 11, 6: 12, 7: 1, 8: 2}
    (root / "ann").mkdir(parents=True, exist_ok=True)
    _png(root / "ann/pan/1.png", id2rgb(pan))
    _jpg(root / image_dir / image_name)
    infos = [
        {"id": i, "category_id": c, "iscrowd": int(i == 8), "area": int((pan == i).sum()), "bbox": [0, 0, 1, 1]}
        for i, c in cats.items()
    ]
    doc = {
        "images": [{"id": 1, "file_name": image_name.split("/")[-1], "width": W, "height": H}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": infos}],
        "categories": [],
    }
    if json_extra:
        json_extra(doc)
    (root / "ann/pan.json").write_text(json.dumps(doc))
    return pan


PAN_SPLIT = {"images": "images", "panoptic_json": "ann/pan.json", "panoptic_masks": "ann/pan"}


def test_coco_panoptic_handmade_crowd_and_void(tmp_path):
    pan = _coco_panoptic(tmp_path)
    reader = get_reader(_entry("omg-shapes", tmp_path, {**PAN_SPLIT}), "s")
    (s,) = list(reader)
    assert s.mask_kind == "segment_index" and s.modality == "image" and (s.height, s.width) == (H, W)
    assert Image.open(io.BytesIO(s.masks[0])).mode == "L", "an 8-bit index PNG"
    got = {g.id: (g.category_id, g.iscrowd, g.areas[0], g.bboxes[0]) for g in s.segments}
    assert got[8] == (2, True, 60, [20.0, 14.0, 10.0, 6.0])
    assert got[7] == (1, False, 48, [4.0, 4.0, 8.0, 6.0])
    masks = decode_masks(s)
    assert not masks.any(axis=0)[0][:, 30:].any(), "VOID belongs to no segment"
    for g, m in zip(s.segments, masks):
        assert np.array_equal(m[0], pan == g.id)
    assert len(s.checksum) == 64 and s.source.endswith("images/1.jpg")


def test_coco_sam_handmade(tmp_path):
    _coco_panoptic(tmp_path)
    reader = get_reader(_entry("omg-shapes-sam", tmp_path, {**PAN_SPLIT}), "s")
    (s,) = list(reader)
    assert sorted(g.id for g in s.segments) == [5, 6, 7] and all(g.category_id == -1 for g in s.segments)


def test_cityscapes_layout_and_train_ids(tmp_path):
    name = "frankfurt_000000_000294_leftImg8bit.png"
    _coco_panoptic(
        tmp_path, image_dir="leftImg8bit/val", cats={5: 10, 6: 0, 7: 11, 8: 13}, image_name=f"frankfurt/{name}"
    )
    entry = _entry(
        "cityscapes-panoptic",
        tmp_path,
        {"images": "leftImg8bit/val", "panoptic_json": "ann/pan.json", "panoptic_masks": "ann/pan"},
    )
    (s,) = list(get_reader(entry, "s"))
    assert s.frame_names == [f"frankfurt/{name}"]
    assert {g.category_id for g in s.segments} == {10, 0, 11, 13}


def test_ade20k_reader(tmp_path):
    _coco_panoptic(tmp_path, cats={5: 2, 6: 9, 7: 12, 8: 20}, image_name="ADE_val_00000001.jpg")
    entry = _entry("ade20k-panoptic", tmp_path, {**PAN_SPLIT})
    (s,) = list(get_reader(entry, "s"))
    assert {g.category_id for g in s.segments} == {2, 9, 12, 20}


def test_a_json_segment_with_no_pixel_makes_the_record_bad(tmp_path):
    """A segment the JSON lists without a pixel in the PNG is damaged data (panopticapi refuses such a JSON): the
    record is bad, named with the PNG, the image and the field, whatever its class (ADE20K's covered stuff aside:
    tests/data/test_official_layouts.py)."""
    _coco_panoptic(
        tmp_path,
        json_extra=lambda d: d["annotations"][0]["segments_info"].append(
            {"id": 77, "category_id": 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]}
        ),
    )
    reader = get_reader(_entry("omg-shapes", tmp_path, {**PAN_SPLIT}), "s")
    with pytest.raises(BadRecord) as info:
        list(reader)
    assert info.value.field == "segments_info" and info.value.source.endswith(".png")
    assert "segment 77 (category 1) listed in the JSON has no pixel in the PNG" in str(info.value)
    assert not reader.dropped


@pytest.mark.parametrize(
    "defect,field,fragment",
    [
        ("png_extra_id", "segments_info", "in the PNG but not in the JSON"),
        ("unknown_category", "category_id", "unknown category 99"),
        ("truncated_image", "file_name", "unreadable, truncated or corrupt image"),
        ("missing_png", "file_name", "file is missing"),
        ("size_mismatch", "file_name", "does not match the image's"),
    ],
)
def test_coco_panoptic_bad_records(tmp_path, defect, field, fragment):
    kwargs = {}
    if defect == "png_extra_id":
        kwargs["png_ids"] = {7: 9}
    if defect == "unknown_category":
        kwargs["cats"] = {5: 11, 6: 12, 7: 99, 8: 2}
    _coco_panoptic(tmp_path, **kwargs)
    if defect == "truncated_image":
        p = tmp_path / "images/1.jpg"
        p.write_bytes(p.read_bytes()[:100])
    if defect == "missing_png":
        (tmp_path / "ann/pan/1.png").unlink()
    if defect == "size_mismatch":
        _jpg(tmp_path / "images/1.jpg", size=(H + 2, W))
    reader = get_reader(_entry("omg-shapes", tmp_path, {**PAN_SPLIT}), "s")
    (item,) = reader.items()
    with pytest.raises(BadRecord) as info:
        reader.load(item)
    assert info.value.field == field and fragment in str(info.value) and "image_id 1" in str(info.value)


# ------------------------------------------------------------------------------ COCO instances


def test_coco_instances_polygons_rle_and_overlap(tmp_path):
    _jpg(tmp_path / "images/1.jpg")
    a = _rect(2, 12, 2, 12)
    c = _rect(0, 4, 20, 32)
    counts = _uncompressed_counts(c)  # uncompressed RLE (list counts), as some official files have
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": rle_encode(a),
            "area": 100,
            "bbox": [2, 2, 10, 10],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "iscrowd": 0,
            "segmentation": [[6, 6, 28, 6, 28, 20, 6, 20]],  # a polygon of rows 6-20, columns 6-28: overlaps a
            "area": 308,
            "bbox": [6, 6, 22, 14],
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 1,
            "segmentation": {"size": [H, W], "counts": counts},
            "area": 48,
            "bbox": [20, 0, 12, 4],
        },
    ]
    (tmp_path / "inst.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "1.jpg", "width": W, "height": H}],
                "annotations": anns,
                "categories": [],
            }
        )
    )
    entry = dataclasses.replace(
        get_entry("omg-shapes"),
        format="coco_instances",
        root=str(tmp_path),
        splits={"s": {"images": "images", "instances_json": "inst.json"}},
    )
    (s,) = list(get_reader(entry, "s"))
    assert s.mask_kind == "rle" and [g.id for g in s.segments] == [1, 2, 3]
    m = decode_masks(s)[:, 0]
    assert np.array_equal(m[0], a) and np.array_equal(m[2], c)
    assert (m[0] & m[1]).any(), "instances may overlap"
    assert s.segments[2].iscrowd and s.segments[2].areas == [48]
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[6, 6, 28, 6, 28, 20, 6, 20]], H, W))).astype(
        bool
    )
    assert np.array_equal(m[1], poly)


# ------------------------------------------------------------------------------ YouTube-VIS


def test_youtube_vis_null_frames_polygons_and_uncompressed_rle(tmp_path):
    for t in range(3):
        _jpg(tmp_path / f"frames/vid/{t:05d}.jpg", seed=t)
    m0, m2 = _rect(2, 10, 2, 10), _rect(4, 12, 4, 12)
    counts = _uncompressed_counts(m2)
    doc = {
        "videos": [
            {"id": 1, "width": W, "height": H, "length": 3, "file_names": [f"vid/{t:05d}.jpg" for t in range(3)]}
        ],
        "annotations": [
            {
                "id": 9,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [rle_encode(m0), None, {"size": [H, W], "counts": counts}],
                "areas": [64, None, 64],
                "bboxes": [[2, 2, 8, 8], None, [4, 4, 8, 8]],
            },
            {
                "id": 10,
                "video_id": 1,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [None, [[0, 0, 10, 0, 10, 10, 0, 10]], None],
                "areas": [None, 100, None],
                "bboxes": [None, [0, 0, 10, 10], None],
            },
        ],
        "categories": [],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    entry = _entry("omg-shapes-vis", tmp_path, {"frames": "frames", "annotations": "ann.json"})
    (s,) = list(get_reader(entry, "s"))
    assert s.num_frames == 3 and s.mask_kind == "rle"
    t9, t10 = s.segments
    assert t9.present() == [True, False, True] and t10.present() == [False, True, False]
    m = decode_masks(s)
    assert np.array_equal(m[0, 0], m0) and np.array_equal(m[0, 2], m2) and not m[0, 1].any()
    assert m[1, 1].sum() == 100
    # a missing frame file is a bad record naming the frame
    (tmp_path / "frames/vid/00001.jpg").unlink()
    with pytest.raises(BadRecord, match="frame 1.*file is missing"):
        get_reader(entry, "s").load(get_reader(entry, "s").items()[0])


def test_youtube_vis_frame_count_mismatch(tmp_path):
    _jpg(tmp_path / "frames/vid/00000.jpg")
    doc = {
        "videos": [{"id": 1, "width": W, "height": H, "length": 1, "file_names": ["vid/00000.jpg"]}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [None, None]}],
        "categories": [],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    entry = _entry("omg-shapes-vis", tmp_path, {"frames": "frames", "annotations": "ann.json"})
    reader = get_reader(entry, "s")
    with pytest.raises(BadRecord) as info:
        reader.load(reader.items()[0])
    assert info.value.field == "segmentations" and "a frame is missing" in str(info.value)


# ------------------------------------------------------------------------------ VIPSeg raw panomasks


def test_vipseg_raw_panomasks(tmp_path):
    raw = np.zeros((H, W), np.uint16)
    raw[:10] = 29  # stuff: class 28 (sky)
    raw[10:] = 16  # stuff: class 15 (grass)
    raw[2:8, 2:8] = 301  # thing: class 2 (door), instance 1
    raw[12:18, 12:18] = 302  # door, instance 2
    raw[20:, :4] = 200  # the known VOID "bug" value
    for t in range(2):
        _jpg(tmp_path / f"images/v1/{t:05d}.jpg", seed=t)
        _png(tmp_path / f"panomasks/v1/{t:05d}.png", raw)
    (tmp_path / "train.txt").write_text("v1\n")
    entry = _entry("vipseg", tmp_path, {"frames": "images", "panoptic_masks": "panomasks", "list": "train.txt"})
    (s,) = list(get_reader(entry, "s"))
    cats = {g.id: g.category_id for g in s.segments}
    assert cats == {16: 15, 29: 28, 301: 2, 302: 2}
    m = decode_masks(s)
    void = ~m.any(axis=0)
    assert void[:, 20:, :4].all() and void.sum() == 2 * 4 * 4


def test_vipseg_track_category_change_is_bad(tmp_path):
    for t in range(2):
        _jpg(tmp_path / f"images/v1/{t:05d}.jpg", seed=t)
        pan = np.full((H, W), 7, np.int64)
        _png(tmp_path / f"pan/v1/{t:05d}.png", id2rgb(pan))
    doc = {
        "videos": [
            {
                "video_id": "v1",
                "images": [{"id": t, "file_name": f"{t:05d}.jpg", "width": W, "height": H} for t in range(2)],
            }
        ],
        "annotations": [
            {
                "video_id": "v1",
                "annotations": [
                    {
                        "image_id": t,
                        "file_name": f"{t:05d}.png",
                        "segments_info": [{"id": 7, "category_id": 28 if t == 0 else 15, "iscrowd": 0}],
                    }
                    for t in range(2)
                ],
            }
        ],
        "categories": [],
    }
    (tmp_path / "pan.json").write_text(json.dumps(doc))
    entry = _entry("vipseg", tmp_path, {"frames": "images", "panoptic_masks": "pan", "panoptic_json": "pan.json"})
    reader = get_reader(entry, "s")
    with pytest.raises(BadRecord, match="changes category"):
        reader.load(reader.items()[0])


# ------------------------------------------------------------------------------ VSPW and DAVIS


def test_vspw_zero_255_reduction(tmp_path):
    raw = np.zeros((H, W), np.uint8)  # 0 = "others" -> ignore
    raw[:, 8:16] = 1  # class 0 (wall)
    raw[:, 16:24] = 124  # class 123
    raw[:, 24:] = 255  # ignore
    for t in range(2):
        _jpg(tmp_path / f"data/v1/origin/{t:05d}.jpg", seed=t)
        _png(tmp_path / f"data/v1/mask/{t:05d}.png", raw)
    (tmp_path / "val.txt").write_text("v1\n")
    entry = _entry("vspw", tmp_path, {"frames": "data", "labels": "data", "list": "val.txt"})
    (s,) = list(get_reader(entry, "s"))
    assert s.mask_kind == "semantic" and [g.id for g in s.segments] == [0, 123]
    assert [g.category_id for g in s.segments] == [0, 123]
    lab = np.array(Image.open(io.BytesIO(s.masks[0])))
    assert set(np.unique(lab).tolist()) == {0, 123, 255}
    m = decode_masks(s)
    assert m[0, :, :, 8:16].all() and not m[0, :, :, :8].any()
    bad = raw.copy()
    bad[0, 0] = 200  # > 124 and not 255
    _png(tmp_path / "data/v1/mask/00001.png", bad)
    with pytest.raises(BadRecord, match="label values \\[200\\] outside 1..124"):
        list(get_reader(entry, "s"))


def test_davis_indexed_pngs(tmp_path):
    for t in range(3):
        _jpg(tmp_path / f"JPEGImages/v1/{t:05d}.jpg", seed=t)
        idx = np.zeros((H, W), np.uint8)
        idx[2:8, 2 + t : 8 + t] = 1
        idx[10:16, 10:20] = 2 if t < 2 else 0  # object 2 leaves in the last frame
        idx[20:, :] = 255  # ignore
        _png(tmp_path / f"Annotations/v1/{t:05d}.png", idx, palette=DAVIS_PALETTE)
    (tmp_path / "val.txt").write_text("v1\n")
    entry = _entry(
        "omg-shapes-vos", tmp_path, {"frames": "JPEGImages", "annotations": "Annotations", "imageset": "val.txt"}
    )
    (s,) = list(get_reader(entry, "s"))
    assert [g.id for g in s.segments] == [1, 2] and s.segments[1].present() == [True, True, False]
    assert Image.open(io.BytesIO(s.masks[0])).mode == "P"
    m = decode_masks(s)
    assert not m[:, :, 20:].any(), "255 is ignored, not an object"


def test_davis_rgb_annotation_is_bad(tmp_path):
    _jpg(tmp_path / "JPEGImages/v1/00000.jpg")
    _png(tmp_path / "Annotations/v1/00000.png", np.zeros((H, W, 3), np.uint8))
    entry = _entry("omg-shapes-vos", tmp_path, {"frames": "JPEGImages", "annotations": "Annotations"})
    reader = get_reader(entry, "s")
    with pytest.raises(BadRecord, match=r"indexed PNG \(mode P\), got mode RGB"):
        reader.load(reader.items()[0])


def test_sample_arrow_row_roundtrip(tiny_shapes):
    reader = get_reader(get_entry("omg-shapes-vis"), "val", tiny_shapes)
    s = reader.load(reader.items()[0])
    again = Sample.from_row(s.to_row())
    assert again == s


def test_readers_take_fsspec_uris(tiny_shapes):
    import fsspec

    mem = fsspec.filesystem("memory")
    base = Path(tiny_shapes)
    for rel in (
        ["annotations/panoptic_val.json"]
        + [f"annotations/panoptic_val/{p.name}" for p in (base / "annotations/panoptic_val").iterdir()]
        + [f"images/val/{p.name}" for p in (base / "images/val").iterdir()]
    ):
        with mem.open(f"/omg-shapes-uri/{rel}", "wb") as f:
            f.write((base / rel).read_bytes())
    local = get_reader(get_entry("omg-shapes"), "val", tiny_shapes)
    remote = get_reader(get_entry("omg-shapes"), "val", "memory://omg-shapes-uri")
    a, b = local.load(local.items()[0]), remote.load(remote.items()[0])
    assert a.checksum == b.checksum and a.segments == b.segments
