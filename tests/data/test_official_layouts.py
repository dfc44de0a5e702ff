"""The files the datasets' own tools write (tests/fixtures/official/README.md: tool, commit, command) go through
the readers, `omg data validate`, preprocessing and the training ingest with no quarantine, and exactly the
documented, counted drops; the decoded masks equal the source PNGs."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omg.data.catalog import get_entry
from omg.data.decode import decode_masks
from omg.data.formats import get_reader
from omg.data.formats.base import COVERED
from omg.data.masks import id2rgb, rgb2id
from omg.data.shards import ShardReader
from omg.data.validate import validate_split
from omg_platform.cli import main as omg_main
from omg_platform.pipelines.preprocess import preprocess_split
from tests import FIXTURES
from tests.helpers import write_jpg

FIX = FIXTURES / "official"

#: (catalog entry, split, root, split paths or None for the catalog's own, records, dropped on purpose)
CASES = {
    "cityscapes-trainId": ("cityscapes-panoptic", "val", FIX / "cityscapes", None, 2, {}),
    "cityscapes-labelId": (
        "cityscapes-panoptic",
        "val",
        FIX / "cityscapes",
        {
            "images": "leftImg8bit/val",
            "panoptic_json": "gtFine/cityscapes_panoptic_val.json",
            "panoptic_masks": "gtFine/cityscapes_panoptic_val",
        },
        2,
        {},
    ),
    "vipseg-val": ("vipseg", "val", FIX / "vipseg/VIPSeg_720P", None, 1, {}),
    "vipseg-train": ("vipseg", "train", FIX / "vipseg/VIPSeg_720P", None, 1, {}),
    "ade20k": ("ade20k-panoptic", "val", FIX / "ade20k/ADEChallengeData2016", None, 2, {COVERED: 1}),
    "coco-panopticapi": (
        "coco-panoptic",
        "val",
        FIX / "coco-panopticapi",
        {"images": "input_images", "panoptic_json": "panoptic_examples.json", "panoptic_masks": "panoptic_examples"},
        2,
        {},
    ),
}


def _entry(case: str):
    name, split, root, paths, _, _ = CASES[case]
    entry = get_entry(name)
    if paths is not None:
        entry = dataclasses.replace(entry, splits={split: paths})
    return entry, split, str(root)


def _source_ids(reader, item: dict) -> list[np.ndarray]:
    """The segment ids of a record's official PNG(s), read directly (not through the reader)."""
    if "frames" in item:
        uris = [f"{reader.paths['panoptic_masks']}/{item['key']}/{fr['mask']}" for fr in item["frames"]]
    else:
        uris = [f"{reader.paths['panoptic_masks']}/{item['mask']}"]
    return [rgb2id(np.asarray(Image.open(u).convert("RGB"))) for u in uris]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_readers_load_every_record_and_masks_equal_the_source_pngs(case):
    entry, split, root = _entry(case)
    reader = get_reader(entry, split, root)
    items = reader.items()
    assert len(items) == CASES[case][4]
    for item in items:
        sample = reader.load(item)
        assert sample.segments, item["key"]
        masks = decode_masks(sample)
        for g, m in zip(sample.segments, masks):
            for t, ids in enumerate(_source_ids(reader, item)):
                assert np.array_equal(m[t], ids == g.id), (item["key"], g.id, t)
                assert g.areas[t] == int((ids == g.id).sum())
        known = {c.id for c in entry.classes}
        assert {g.category_id for g in sample.segments} <= known
    assert dict(reader.dropped) == CASES[case][5]


def test_cityscapes_label_ids_and_train_ids_give_the_same_records():
    a = list(get_reader(*_entry("cityscapes-trainId")))
    b = list(get_reader(*_entry("cityscapes-labelId")))
    assert [(s.key, s.frame_names, [(g.id, g.category_id, g.iscrowd, g.areas) for g in s.segments]) for s in a] == [
        (s.key, s.frame_names, [(g.id, g.category_id, g.iscrowd, g.areas) for g in s.segments]) for s in b
    ]
    first = a[0]
    assert first.frame_names == ["frankfurt/frankfurt_000000_000294_leftImg8bit.png"]
    cats = {g.id: (g.category_id, g.iscrowd) for g in first.segments}
    assert cats[7] == (0, False) and cats[26000] == (13, False) and cats[24] == (11, True), "road, car, person crowd"


def test_the_built_in_cityscapes_entry_reads_either_naming_of_the_converter(tmp_path):
    """createPanopticImgs without --use-train-id writes cityscapes_panoptic_<split>.json (label ids); with it,
    *_trainId: the built-in entry reads whichever is there (trainId first), with the same records."""
    root = tmp_path / "cityscapes"
    shutil.copytree(FIX / "cityscapes", root)
    for p in (root / "gtFine").glob("*_trainId*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    entry = get_entry("cityscapes-panoptic")
    assert entry.split_paths("val", str(root))["panoptic_json"].endswith("gtFine/cityscapes_panoptic_val.json")
    report = validate_split(entry, "val", str(root))
    assert report.ok and 2 in report.counts.values(), (report.summary(), [str(p) for p in report.problems])
    label_ids = [
        (s.key, [(g.id, g.category_id, g.areas) for g in s.segments]) for s in get_reader(entry, "val", str(root))
    ]
    train_ids = [
        (s.key, [(g.id, g.category_id, g.areas) for g in s.segments]) for s in get_reader(*_entry("cityscapes-trainId"))
    ]
    assert label_ids == train_ids
    assert (
        get_entry("cityscapes-panoptic")
        .split_paths("val", str(FIX / "cityscapes"))["panoptic_json"]
        .endswith("_trainId.json")
    ), "the trainId naming first when both are there"


def test_ade20k_drops_wholly_covered_stuff_and_takes_areas_from_the_png():
    entry, split, root = _entry("ade20k")
    reader = get_reader(entry, split, root)
    doc = json.loads((FIX / "ade20k/ADEChallengeData2016/ade20k_panoptic_val.json").read_text())
    json_areas = {s["category_id"]: s["area"] for s in doc["annotations"][0]["segments_info"]}
    s = reader.load(reader.items()[0])
    got = {g.category_id: g.areas[0] for g in s.segments}
    assert 5 not in got and json_areas[5] == 24, "the ceiling: 24 px in the JSON, none left in the PNG"
    assert got[3] < json_areas[3], "the floor: partly under the person, its area from the PNG"


def test_ade20k_a_thing_without_pixels_is_quarantined_with_file_record_and_field(ray_local, tmp_path):
    """A damaged copy of the converter's output: the person of ADE_val_00000001 painted over with floor in its PNG
    while the JSON still lists it. Only covered *stuff* is the converter's (dropped, counted); a thing is damaged
    data: the record is quarantined with the PNG, the image and the field, the other record kept."""
    root = tmp_path / "ade"
    shutil.copytree(FIX / "ade20k/ADEChallengeData2016", root)
    png = root / "ade20k_panoptic_val/ADE_val_00000001.png"
    ids = rgb2id(np.asarray(Image.open(png).convert("RGB"))).copy()
    ids[ids == 3999126] = 3289680  # person (category 12, a thing) -> floor
    Image.fromarray(id2rgb(ids)).save(png)
    entry, split, _ = _entry("ade20k")
    m = preprocess_split(
        entry, split, str(tmp_path / "shards"), str(root), shard_size=1, progress=False, log=lambda _: None
    )
    assert m["rows"] == 1 and m["quarantined"] == 1 and m["dropped"] == {}
    (bad,) = [
        r
        for f in sorted((tmp_path / "shards/ade20k-panoptic/val/quarantine").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    assert bad["source"] == str(png) and bad["key"] == "ADE_val_00000001" and bad["field"] == "segments_info"
    assert "segment 3999126 (category 12) listed in the JSON has no pixel in the PNG" in bad["reason"]
    report = validate_split(entry, split, str(root))
    assert not report.ok and any("ADE_val_00000001" in str(p) and "segments_info" in str(p) for p in report.problems)


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_passes_and_reports_the_drops(case):
    entry, split, root = _entry(case)
    report = validate_split(entry, split, root)
    assert report.ok, [str(p) for p in report.problems]
    assert report.dropped == CASES[case][5]
    strict = validate_split(entry, split, root, strict=True)
    assert strict.ok == (not CASES[case][5]), "--strict reports the tolerated ADE20K cases"


def test_validate_cli_takes_a_split_and_a_dataset_root(capsys):
    rc = omg_main(["data", "validate", str(FIX / "vipseg/VIPSeg_720P"), "--dataset", "vipseg", "--split", "val"])
    out = capsys.readouterr().out
    assert rc == 0 and "vipseg/val" in out and "vipseg/train" not in out and "valid: 1 split(s)" in out
    assert (
        omg_main(["data", "validate", str(FIX / "vipseg/VIPSeg_720P"), "--dataset", "vipseg", "--split", "test"]) == 2
    )
    assert "has no split 'test'" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["cityscapes-labelId", "vipseg-train", "ade20k", "coco-panopticapi"])
def test_preprocess_and_ingest(case, ray_local, tmp_path):
    from omg.data.catalog import Sampling
    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig, build_label_space

    entry, split, root = _entry(case)
    m = preprocess_split(entry, split, str(tmp_path), root, shard_size=1, progress=False, log=lambda _: None)
    assert m["quarantined"] == 0 and m["rows"] == CASES[case][4] and m["dropped"] == CASES[case][5]
    rows = ShardReader(f"{tmp_path}/{entry.name}/{split}/manifest.json")
    direct = list(get_reader(entry, split, root))
    assert [(r.key, len(r.segments)) for r in (rows[i] for i in range(len(rows)))] == [
        (s.key, len(s.segments)) for s in direct
    ]
    manifest = {entry.name: m | {"_uri": f"{tmp_path}/{entry.name}/{split}/manifest.json"}}
    mode = "clip" if entry.modality == "video" else "image"
    cfg = IngestConfig(
        crop_size=(32, 32),
        batch_size=1,
        datasets=(
            DatasetSpec(
                entry.name,
                manifest[entry.name]["_uri"],
                Sampling(1.0, mode, (0.8, 1.2), clip_length=2, clip_interval=1),
            ),
        ),
    )
    builder = BatchBuilder(cfg, build_label_space(manifest))
    batch = builder.build(builder.plan(0)[0])
    assert batch["images"].shape[2:] == (32, 32, 3), "B x T x H x W x 3 crops"
    assert batch["counts"][0] > 0 and len(batch["labels"]) == batch["counts"][0] == len(batch["masks"])
    assert (batch["labels"] >= 0).all(), "every class maps into the merged label space"


def test_a_raw_vipseg_list_naming_a_missing_video_quarantines_only_that_video(ray_local, tmp_path):
    root = tmp_path / "VIPSeg_720P"
    shutil.copytree(FIX / "vipseg/VIPSeg_720P", root)
    (root / "list.txt").write_text("12_abcd1234\n37_efgh5678\nno_such_video\n")
    entry = dataclasses.replace(
        get_entry("vipseg"), splits={"raw": {"frames": "images", "panoptic_masks": "panomasks", "list": "list.txt"}}
    )
    m = preprocess_split(
        entry, "raw", str(tmp_path / "out"), str(root), shard_size=2, progress=False, log=lambda _: None
    )
    assert m["rows"] == 2 and m["quarantined"] == 1
    from omg_platform.pipelines.preprocess import read_quarantine

    (q,) = read_quarantine(m, str(tmp_path / "out/vipseg/raw"))
    assert q["key"] == "no_such_video" and q["field"] == "panoptic_masks" and "missing" in q["reason"]


def test_coco_crowd_areas_and_ovis_box_areas_are_tolerated_unless_strict(tmp_path):
    """The official instances_val2017.json stores, for crowd annotations, an area and box that differ from the
    decoded RLE; OVIS-style YouTube-VIS files store box areas. Neither floods validate; --strict reports them."""
    from pycocotools import mask as mask_utils

    h, w = 24, 32
    m = np.zeros((h, w), np.uint8, order="F")
    m[4:12, 6:20] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    write_jpg(tmp_path / "images/1.jpg", (h, w))
    doc = {
        "images": [{"id": 1, "file_name": "1.jpg", "width": w, "height": h}],
        "annotations": [
            {
                "id": 9,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 1,
                "segmentation": rle,
                "area": 200.0,
                "bbox": [5, 3, 16, 10],
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    entry = dataclasses.replace(
        get_entry("coco-panoptic"),
        format="coco_instances",
        splits={"s": {"images": "images", "instances_json": "inst.json"}},
    )
    assert validate_split(entry, "s", str(tmp_path)).ok
    strict = validate_split(entry, "s", str(tmp_path), strict=True)
    assert {p.field for p in strict.problems} == {"area", "bbox"}

    for t in range(2):
        write_jpg(tmp_path / f"frames/v/{t}.jpg", (h, w))
    ovis = {
        "videos": [{"id": 1, "file_names": ["v/0.jpg", "v/1.jpg"], "width": w, "height": h, "length": 2}],
        "annotations": [
            {
                "id": 3,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [rle, None],
                "areas": [14 * 8.0, None],
                "bboxes": [[6, 4, 14, 8], None],
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    m2 = m.copy()
    m2[4:6, 6:8] = 0  # the mask is not its box: pixel area 108, box area 112
    rle2 = mask_utils.encode(np.asfortranarray(m2))
    rle2["counts"] = rle2["counts"].decode()
    ovis["annotations"][0]["segmentations"][0] = rle2
    (tmp_path / "ovis.json").write_text(json.dumps(ovis))
    ventry = dataclasses.replace(
        get_entry("youtube-vis-2019"), splits={"s": {"frames": "frames", "annotations": "ovis.json"}}
    )
    assert validate_split(ventry, "s", str(tmp_path)).ok
    assert [p.field for p in validate_split(ventry, "s", str(tmp_path), strict=True).problems] == ["areas"]
