"""`omg metric NAME` on official-format files: the golden numbers again, --json-out, and errors naming files and ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from omg.data.catalog import get_entry
from omg.data.formats.davis import DAVIS_PALETTE
from omg.data.masks import id2rgb, rle_encode
from omg_platform.cli import main
from tests.evaluation import metric_toys as toys
from tests.helpers import write_pq_files


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_pq_and_json_out(tmp_path, capsys):
    write_pq_files(tmp_path, *toys.pq_toy())
    rc, out, _ = _run(
        [
            "metric",
            "pq",
            "--gt-json",
            str(tmp_path / "gt.json"),
            "--gt-folder",
            str(tmp_path / "gt"),
            "--pred-json",
            str(tmp_path / "pred.json"),
            "--pred-folder",
            str(tmp_path / "pred"),
            "--json-out",
            str(tmp_path / "pq.json"),
        ],
        capsys,
    )
    assert rc == 0 and "60.576" in out and "Things" in out
    doc = json.loads((tmp_path / "pq.json").read_text())
    assert doc["summary"]["All"]["pq"] == pytest.approx(0.605762, abs=1e-6) and doc["per_class"]["2"]["fn"] == 1


def test_coco_segm_and_ytvis(tmp_path, capsys):
    gt, dets = toys.coco_ap_toy()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(dets))
    rc, out, _ = _run(
        [
            "metric",
            "coco-segm",
            "--gt-json",
            str(tmp_path / "gt.json"),
            "--results",
            str(tmp_path / "res.json"),
            "--json-out",
            str(tmp_path / "ap.json"),
        ],
        capsys,
    )
    assert rc == 0 and "Average Precision" in out
    assert json.loads((tmp_path / "ap.json").read_text())["stats"]["AP"] == pytest.approx(0.367987, abs=1e-6)
    (tmp_path / "stray.json").write_text(json.dumps(dets + [{**dets[0], "category_id": 42}]))
    stray = ["metric", "coco-segm", "--gt-json", str(tmp_path / "gt.json"), "--results", str(tmp_path / "stray.json")]
    rc, out, err = _run(stray + ["--max-dets", "100", "300", "1000", "--json-out", str(tmp_path / "s.json")], capsys)
    doc = json.loads((tmp_path / "s.json").read_text())
    assert rc == 0 and "1 result(s) of a category the ground truth does not list were ignored" in err, err
    assert doc["ignored_results"] == 1 and "AR1000" in doc["stats"] and "maxDets=1000" in out
    assert doc["stats"]["AP"] == pytest.approx(0.367987, abs=1e-6)
    rc, _, err = _run(stray + ["--strict"], capsys)
    assert rc == 2 and err.strip().endswith("result 6: category_id 42 is not in the ground truth's categories"), err
    gt, res = toys.ytvis_toy()
    (tmp_path / "yt.json").write_text(json.dumps(gt))
    (tmp_path / "ytres.json").write_text(json.dumps(res))
    rc, out, _ = _run(
        [
            "metric",
            "ytvis",
            "--gt-json",
            str(tmp_path / "yt.json"),
            "--results",
            str(tmp_path / "ytres.json"),
            "--json-out",
            str(tmp_path / "y.json"),
        ],
        capsys,
    )
    assert rc == 0 and json.loads((tmp_path / "y.json").read_text())["stats"]["AP"] == pytest.approx(0.205116, abs=1e-6)


def _write_vipseg(tmp_path, gt, pred, drop_frame=False):
    cats = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in get_entry("vipseg").classes]
    for role, videos in (("gt", gt), ("pred", pred)):
        anns, vids = [], []
        for vid, frames in videos.items():
            fr = []
            for t, (ids, segs) in enumerate(frames):
                if role == "pred" and drop_frame and t == 7:
                    continue
                (tmp_path / role / vid).mkdir(parents=True, exist_ok=True)
                Image.fromarray(id2rgb(ids)).save(tmp_path / role / vid / f"{t:08d}.png")
                fr.append(
                    {
                        "image_id": f"{t:08d}",
                        "file_name": f"{t:08d}.png",
                        "segments_info": [{"id": k, **v} for k, v in sorted(segs.items())],
                    }
                )
            anns.append({"video_id": vid, "annotations": fr})
            vids.append(
                {
                    "video_id": vid,
                    "images": [{"id": f"{t:08d}", "file_name": f"{t:08d}.jpg"} for t in range(len(frames))],
                }
            )
        (tmp_path / f"{role}.json").write_text(json.dumps({"videos": vids, "annotations": anns, "categories": cats}))


def test_vpq_and_stq(tmp_path, capsys):
    gt, pred = toys.vps_toy()
    _write_vipseg(tmp_path, gt, pred)
    args = [
        "--gt-json",
        str(tmp_path / "gt.json"),
        "--gt-dir",
        str(tmp_path / "gt"),
        "--pred-json",
        str(tmp_path / "pred.json"),
        "--pred-dir",
        str(tmp_path / "pred"),
    ]
    rc, out, _ = _run(["metric", "vpq", *args, "--json-out", str(tmp_path / "vpq.json")], capsys)
    assert rc == 0 and "48.7341" in out and "50.6236" in out
    rc, out, _ = _run(["metric", "stq", *args, "--json-out", str(tmp_path / "stq.json")], capsys)
    assert rc == 0 and "STQ 0.5001782346" in out
    per_seq = json.loads((tmp_path / "stq.json").read_text())["per_sequence"]
    assert {v: s["frames"] for v, s in per_seq.items()} == {v: len(f) for v, f in gt.items()}
    bad = tmp_path / "bad"
    bad.mkdir()
    _write_vipseg(bad, gt, pred, drop_frame=True)
    rc, _, err = _run(
        [
            "metric",
            "vpq",
            "--gt-json",
            str(bad / "gt.json"),
            "--gt-dir",
            str(bad / "gt"),
            "--pred-json",
            str(bad / "pred.json"),
            "--pred-dir",
            str(bad / "pred"),
        ],
        capsys,
    )
    assert rc == 2 and "video 001_toyvideo has 7 predicted frames, the ground truth 8" in err


def test_miou_and_vspw(tmp_path, capsys):
    toy = toys.vspw_toy()
    for (vid, t), (raw, red, pred) in toy.items():
        for role, arr in (("data/" + vid + "/mask", raw), ("reduced/" + vid, red), ("pred/" + vid, pred)):
            (tmp_path / role).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / role / f"{t:08d}.png")
    (tmp_path / "val.txt").write_text("toy_vid_a\ntoy_vid_b\n")
    rc, out, _ = _run(
        [
            "metric",
            "vspw",
            "--data-dir",
            str(tmp_path),
            "--pred-dir",
            str(tmp_path / "pred"),
            "--list",
            str(tmp_path / "val.txt"),
        ],
        capsys,
    )
    assert rc == 0 and "mIoU 0.9137577519" in out and "mVC8 0.8676956301" in out and "mVC16 0.8064024390" in out
    rc, out, _ = _run(
        [
            "metric",
            "miou",
            "--gt-dir",
            str(tmp_path / "reduced"),
            "--pred-dir",
            str(tmp_path / "pred"),
            "--num-classes",
            "124",
            "--json-out",
            str(tmp_path / "miou.json"),
        ],
        capsys,
    )
    assert rc == 0 and "mIoU 91.3758" in out
    doc = json.loads((tmp_path / "miou.json").read_text())
    acc = [a for a in doc["acc"] if a is not None]  # per-class accuracy: classes with GT pixels only
    assert len(doc["acc"]) == 124 and acc and sum(acc) / len(acc) == pytest.approx(doc["macc"])
    rc, out, _ = _run(
        [
            "metric",
            "miou",
            "--gt-dir",
            str(tmp_path / "reduced"),
            "--pred-dir",
            str(tmp_path / "pred"),
            "--num-classes",
            "124",
            "--convention",
            "union",
        ],
        capsys,
    )
    assert "mIoU 73.10" in out


def test_davis_and_interactive(tmp_path, capsys):
    for seq in ("s1",):
        for t in range(4):
            for role in ("ann", "res"):
                arr = np.zeros((20, 20), np.uint8)
                arr[2:10, 2 + t : 10 + t] = 1
                img = Image.fromarray(arr)
                img.putpalette(DAVIS_PALETTE)
                (tmp_path / role / seq).mkdir(parents=True, exist_ok=True)
                img.save(tmp_path / role / seq / f"{t:05d}.png")
    (tmp_path / "set.txt").write_text("s1\n")
    rc, out, _ = _run(
        [
            "metric",
            "davis",
            "--annotations",
            str(tmp_path / "ann"),
            "--results",
            str(tmp_path / "res"),
            "--imageset",
            str(tmp_path / "set.txt"),
        ],
        capsys,
    )
    assert rc == 0 and "J&F-Mean 1.000000" in out
    # single-point mIoU from a panoptic GT and a results JSON (one mask per segment)
    ids = np.zeros((20, 20), np.int64)
    ids[:10] = 5
    ids[10:] = 6
    (tmp_path / "pan").mkdir()
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan/1.png")
    (tmp_path / "pan.json").write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "image_id": 1,
                        "file_name": "1.png",
                        "segments_info": [
                            {"id": 5, "category_id": 1, "iscrowd": 0},
                            {"id": 6, "category_id": 2, "iscrowd": 0},
                        ],
                    }
                ]
            }
        )
    )
    half = ids == 5
    half[:, 10:] = False
    (tmp_path / "int.json").write_text(
        json.dumps(
            [
                {"image_id": 1, "segment_id": 5, "segmentation": rle_encode(half)},
                {"image_id": 1, "segment_id": 6, "segmentation": rle_encode(ids == 6)},
            ]
        )
    )
    rc, out, _ = _run(
        [
            "metric",
            "interactive",
            "--gt-json",
            str(tmp_path / "pan.json"),
            "--gt-folder",
            str(tmp_path / "pan"),
            "--results",
            str(tmp_path / "int.json"),
        ],
        capsys,
    )
    assert rc == 0 and "single-point mIoU 0.750000 over 2 segments" in out
    (tmp_path / "clicks.json").write_text(
        json.dumps(
            [{"image_id": 1, "segment_id": 5, "ious": [0.5, 0.91]}, {"image_id": 1, "segment_id": 6, "ious": [0.86]}]
        )
    )
    rc, out, _ = _run(
        ["metric", "interactive", "--clicks", str(tmp_path / "clicks.json"), "--json-out", str(tmp_path / "noc.json")],
        capsys,
    )
    doc = json.loads((tmp_path / "noc.json").read_text())
    assert rc == 0 and "NoC@90 11.00" in out and doc["NoC@85"] == 1.5 and doc["objects"] == 2, out
    (tmp_path / "clicks.json").write_text(json.dumps([{"image_id": 1, "ious": []}]))
    rc, _, err = _run(["metric", "interactive", "--clicks", str(tmp_path / "clicks.json")], capsys)
    assert rc == 2 and "record 0, field 'ious'" in err
