"""pipelines/preprocess.py: shards + manifest for every omg-shapes split; idempotent; resumable; quarantine."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omg.data.catalog import get_entry, load_catalog
from omg.data.masks import id2rgb, rgb2id
from omg.data.records import Sample
from pipelines.preprocess import main as preprocess_main
from pipelines.preprocess import preprocess_split, read_quarantine

OMG_SHAPES = ["omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos"]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(out: Path, dataset: str, split: str) -> list[Sample]:
    manifest = json.loads((out / dataset / split / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        data = (out / dataset / split / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        table = pq.read_table(io.BytesIO(data))
        assert table.num_rows == shard["rows"]
        rows += [Sample.from_row(r) for r in table.to_pylist()]
    return rows


def test_every_omg_shapes_split_is_sharded(ray_local, tiny_shapes, tmp_path):
    catalog = load_catalog()
    for name in OMG_SHAPES:
        entry = catalog[name]
        for split in entry.splits:
            m = preprocess_split(entry, split, str(tmp_path), tiny_shapes, shard_size=4, progress=False, log=lambda _: None)
            assert m["rows"] == m["num_source_records"] and m["quarantined"] == 0
            assert m["schema_version"] == 2 and len(m["listing_digest"]) == 64
            assert len(m["shards"]) == -(-m["rows"] // 4)
            rows = _rows(tmp_path, name, split)
            assert [r.key for r in rows] == sorted({r.key for r in rows}, key=[r.key for r in rows].index)
            assert len(rows) == m["rows"]
    assert json.loads((tmp_path / "omg-shapes-vps/train/manifest.json").read_text())["classes"][0]["name"] == "circle"


def test_idempotent_byte_identical(ray_local, tiny_shapes, tmp_path):
    entry = get_entry("omg-shapes-vis")
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        preprocess_split(entry, "train", str(out), tiny_shapes, shard_size=2, progress=False, log=lambda _: None)
    assert _files(a) == _files(b)
    before = _files(a)
    logs = []
    preprocess_split(entry, "train", str(a), tiny_shapes, shard_size=2, progress=False, log=logs.append)
    assert _files(a) == before and "up to date" in logs[0]


def test_resume_after_interruption(ray_local, tiny_shapes, tmp_path):
    entry = get_entry("omg-shapes")
    ref = tmp_path / "ref"
    preprocess_split(entry, "train", str(ref), tiny_shapes, shard_size=3, progress=False, log=lambda _: None)
    reference = _files(ref)
    # the state a kill leaves behind: no manifest, some shards with receipts, one without (receipts come last)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    split_dir = run / "omg-shapes/train"
    (split_dir / "manifest.json").unlink()
    for i in (1, 3):
        (split_dir / f"shards/part-{i:05d}.json").unlink()
    (split_dir / "shards/part-00004.parquet").unlink()
    (split_dir / "shards/part-00004.json").unlink()
    (split_dir / "shards/part-00001.parquet").write_bytes(b"partial")
    logs = []
    m = preprocess_split(entry, "train", str(run), tiny_shapes, shard_size=3, progress=False, log=logs.append)
    assert "(3 already done)" in logs[0]
    assert _files(run) == reference
    keys = [r.key for r in _rows(run, "omg-shapes", "train")]
    assert len(keys) == len(set(keys)) == m["num_source_records"] == 16


def _corrupt_copy(tiny_shapes: str, tmp_path: Path) -> Path:
    root = tmp_path / "bad-shapes"
    shutil.copytree(tiny_shapes, root)
    doc = json.loads((root / "annotations/panoptic_train.json").read_text())
    anns = doc["annotations"]
    # 1 truncated image
    img = root / "images/train" / anns[0]["file_name"].replace(".png", ".jpg")
    img.write_bytes(img.read_bytes()[:300])
    # 2 a PNG id that the JSON does not list
    png = root / "annotations/panoptic_train" / anns[1]["file_name"]
    pan = rgb2id(np.array(Image.open(png)))
    pan[0, 0] = 424242
    Image.fromarray(id2rgb(pan)).save(png)
    # 3 an unknown category
    anns[2]["segments_info"][0]["category_id"] = 999
    # 4 mask / image size mismatch
    png = root / "annotations/panoptic_train" / anns[3]["file_name"]
    Image.fromarray(np.array(Image.open(png))[:40]).save(png)
    (root / "annotations/panoptic_train.json").write_text(json.dumps(doc))
    # 5 a missing video frame
    yt = json.loads((root / "videos/train/instances.json").read_text())
    (root / "videos/train/JPEGImages" / yt["videos"][0]["file_names"][2]).unlink()
    return root


def test_bad_records_are_quarantined_with_reasons(ray_local, tiny_shapes, tmp_path):
    root = _corrupt_copy(tiny_shapes, tmp_path)
    out = tmp_path / "out"
    m = preprocess_split(get_entry("omg-shapes"), "train", str(out), str(root), shard_size=4, progress=False,
                         log=lambda _: None)
    assert m["quarantined"] == 4 and m["rows"] == 12
    reasons = {q["key"]: q for q in read_quarantine(m, str(out / "omg-shapes/train"))}
    assert len(reasons) == 4
    by_kind = sorted(q["reason"] for q in reasons.values())
    assert any("unreadable or truncated image" in r for r in by_kind)
    assert any("in the PNG but not in the JSON" in r for r in by_kind)
    assert any("unknown category 999" in r for r in by_kind)
    assert any("does not match the image's" in r for r in by_kind)
    assert all(q["source"] and q["field"] for q in reasons.values())
    vm = preprocess_split(get_entry("omg-shapes-vis"), "train", str(out), str(root), shard_size=4, progress=False,
                          log=lambda _: None)
    (q,) = read_quarantine(vm, str(out / "omg-shapes-vis/train"))
    assert "frame 2" in q["reason"] and "file is missing" in q["reason"]


def test_cli_fail_on_bad_and_smoke(ray_local, tiny_shapes, tmp_path, capsys):
    root = _corrupt_copy(tiny_shapes, tmp_path)
    rc = preprocess_main(["--dataset", "omg-shapes", "--split", "train", "--root", str(root), "--out",
                          str(tmp_path / "o"), "--fail-on-bad", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "BadRecord" in err and "image_id" in err
    assert not (tmp_path / "o/omg-shapes/train/manifest.json").exists()
    rc = preprocess_main(["--dataset", "omg-shapes-vos", "--root", tiny_shapes, "--out", str(tmp_path / "s"),
                          "--shard-size", "1", "--smoke-test", "--quiet"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["split"] for x in lines] == ["train", "val"] and all(x["rows"] == 2 for x in lines)
    assert preprocess_main(["--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert preprocess_main(["--dataset", "omg-shapes", "--split", "test", "--out", str(tmp_path)]) == 2
