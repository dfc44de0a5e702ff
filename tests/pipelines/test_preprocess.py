"""omg_platform/pipelines/preprocess.py: shards + manifest for every omg-shapes split; idempotent; resumable;
quarantine."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from omg.data.catalog import get_entry, load_catalog
from omg.data.masks import id2rgb, rgb2id
from omg.data.records import Sample
from omg_platform.pipelines.preprocess import main as preprocess_main
from omg_platform.pipelines.preprocess import preprocess_split, read_quarantine
from tests import default_sigint

OMG_SHAPES = ["omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps", "omg-shapes-vos"]


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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
            m = preprocess_split(
                entry, split, str(tmp_path), tiny_shapes, shard_size=4, progress=False, log=lambda _: None
            )
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
    m = preprocess_split(
        get_entry("omg-shapes"), "train", str(out), str(root), shard_size=4, progress=False, log=lambda _: None
    )
    assert m["quarantined"] == 4 and m["rows"] == 12
    reasons = {q["key"]: q for q in read_quarantine(m, str(out / "omg-shapes/train"))}
    assert len(reasons) == 4
    by_kind = sorted(q["reason"] for q in reasons.values())
    assert any("unreadable, truncated or corrupt image" in r for r in by_kind)
    assert any("in the PNG but not in the JSON" in r for r in by_kind)
    assert any("unknown category 999" in r for r in by_kind)
    assert any("does not match the image's" in r for r in by_kind)
    assert all(q["source"] and q["field"] for q in reasons.values())
    vm = preprocess_split(
        get_entry("omg-shapes-vis"), "train", str(out), str(root), shard_size=4, progress=False, log=lambda _: None
    )
    (q,) = read_quarantine(vm, str(out / "omg-shapes-vis/train"))
    assert "frame 2" in q["reason"] and "file is missing" in q["reason"]


def test_cli_fail_on_bad_and_smoke(ray_local, tiny_shapes, tmp_path, capsys):
    root = _corrupt_copy(tiny_shapes, tmp_path)
    rc = preprocess_main(
        [
            "--dataset",
            "omg-shapes",
            "--split",
            "train",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "o"),
            "--fail-on-bad",
            "--quiet",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # the cause (file, record, field) is the last line, not Ray's wrapper
    assert last.startswith(f"preprocess: error: {root}") and "image_id" in last and "field '" in last, last
    assert not (tmp_path / "o/omg-shapes/train/manifest.json").exists()
    rc = preprocess_main(
        [
            "--dataset",
            "omg-shapes-vos",
            "--root",
            tiny_shapes,
            "--out",
            str(tmp_path / "s"),
            "--shard-size",
            "1",
            "--smoke-test",
            "--quiet",
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["split"] for x in lines] == ["train", "val"] and all(x["rows"] == 2 for x in lines)
    assert preprocess_main(["--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert preprocess_main(["--dataset", "omg-shapes", "--split", "test", "--out", str(tmp_path)]) == 2


def test_rerun_rebuilds_a_truncated_missing_or_altered_shard(ray_local, tiny_shapes, tmp_path):
    """A receipt or manifest is not trusted further than the file it names: a shard that is truncated, missing
    or has another sha256 is rebuilt on the rerun (it used to be "up to date", the manifest pointing at it)."""
    entry = get_entry("omg-shapes")
    ref = tmp_path / "ref"
    preprocess_split(entry, "train", str(ref), tiny_shapes, shard_size=3, progress=False, log=lambda _: None)
    reference = _files(ref)
    shards = ref / "omg-shapes/train/shards"
    for damage in ("truncated", "missing", "altered"):
        if damage == "truncated":
            (shards / "part-00000.parquet").write_bytes((shards / "part-00000.parquet").read_bytes()[:-10])
        elif damage == "missing":
            (shards / "part-00002.parquet").unlink()
        else:
            data = bytearray((shards / "part-00004.parquet").read_bytes())
            data[len(data) // 2] ^= 0xFF  # same size, another sha256
            (shards / "part-00004.parquet").write_bytes(bytes(data))
        logs = []
        preprocess_split(entry, "train", str(ref), tiny_shapes, shard_size=3, progress=False, log=logs.append)
        assert "missing or damaged" in logs[0] and "up to date" not in logs[0], (damage, logs[0])
        assert _files(ref) == reference, f"{damage}: rebuilt byte for byte"
    assert not [p for p in ref.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name], "no temp-file litter"


def _strict_copy(tiny_shapes: str, tmp_path: Path) -> tuple[Path, dict]:
    """A copy with the damage a strict reader must catch: garbage bytes inside a JPEG (Pillow decodes it without a
    word), a segment without ``category_id``, an ill-typed ``segments_info``, a DAVIS video missing a frame."""
    root = tmp_path / "strict-shapes"
    shutil.copytree(tiny_shapes, root)
    doc = json.loads((root / "annotations/panoptic_train.json").read_text())
    anns = doc["annotations"]
    img = root / "images/train" / anns[0]["file_name"].replace(".png", ".jpg")
    data = bytearray(img.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = bytes(range(40))
    img.write_bytes(bytes(data))
    del anns[1]["segments_info"][0]["category_id"]
    anns[2]["segments_info"] = "not a list"
    (root / "annotations/panoptic_train.json").write_text(json.dumps(doc))
    vos = get_entry("omg-shapes-vos").split_paths("train", str(root))
    video = sorted(Path(vos["frames"]).iterdir())[0]
    (video / "00003.jpg").unlink()
    keys = {
        "jpeg": str(anns[0]["image_id"]),
        "category": str(anns[1]["image_id"]),
        "typed": str(anns[2]["image_id"]),
        "davis": video.name,
    }
    return root, keys


def test_corrupt_jpegs_missing_fields_and_missing_frames_are_quarantined(ray_local, tiny_shapes, tmp_path):
    root, keys = _strict_copy(tiny_shapes, tmp_path)
    out = tmp_path / "out"
    m = preprocess_split(
        get_entry("omg-shapes"), "train", str(out), str(root), shard_size=4, progress=False, log=lambda _: None
    )
    q = {r["key"]: r for r in read_quarantine(m, str(out / "omg-shapes/train"))}
    assert sorted(q) == sorted([keys["jpeg"], keys["category"], keys["typed"]]) and m["rows"] == 13
    assert "corrupt" in q[keys["jpeg"]]["reason"] and "extraneous bytes" in q[keys["jpeg"]]["reason"]
    assert q[keys["jpeg"]]["field"] == "file_name" and q[keys["jpeg"]]["source"].endswith(".jpg")
    assert q[keys["category"]]["field"] == "category_id" and "missing" in q[keys["category"]]["reason"]
    assert q[keys["category"]]["source"].endswith("panoptic_train.json")
    assert "malformed annotation" in q[keys["typed"]]["reason"]
    vm = preprocess_split(
        get_entry("omg-shapes-vos"), "train", str(out), str(root), shard_size=4, progress=False, log=lambda _: None
    )
    (d,) = read_quarantine(vm, str(out / "omg-shapes-vos/train"))
    assert d["key"] == keys["davis"] and d["source"].endswith("00003.jpg") and "frame is missing" in d["reason"]
    assert vm["rows"] == vm["num_source_records"] - 1


def test_an_unwritable_output_names_errno_and_path_last(ray_local, tiny_shapes, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = preprocess_main(
        [
            "--dataset",
            "omg-shapes",
            "--split",
            "val",
            "--root",
            tiny_shapes,
            "--out",
            str(blocker / "shards"),
            "--quiet",
        ]
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("preprocess: error: ") and "[ENOTDIR]" in last and str(blocker) in last, last


def _ray_processes(marker: str) -> list:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_or_killed_driver_leaves_nothing_running(how, tiny_shapes, tmp_path):
    """A FIFO in place of one image holds its shard task in its open(), so the job cannot end before the signal.
    Ctrl-C: exit 130 with one line, no traceback; either way no process of that Ray instance is left (own
    RAY_TMPDIR)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    root = tmp_path / "fifo-shapes"
    shutil.copytree(tiny_shapes, root)
    doc = json.loads((root / "annotations/panoptic_val.json").read_text())
    last = max(doc["annotations"], key=lambda a: str(a["image_id"]))  # the last record
    img = root / "images/val" / last["file_name"].replace(".png", ".jpg")
    img.unlink()
    os.mkfifo(img)
    ray_tmp = tempfile.mkdtemp(prefix="omgrt-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_ADDRESS="")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omg_platform.pipelines.preprocess",
            "--dataset",
            "omg-shapes",
            "--split",
            "val",
            "--root",
            str(root),
            "--out",
            str(tmp_path / "out"),
            "--shard-size",
            "1",
            "--num-cpus",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=default_sigint if how == "SIGINT" else None,
    )
    lines: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # the job has started once the driver says how it shards the split; from then on it cannot finish before
        # the signal, whichever task Ray runs first: the FIFO's task waits in its open() for a writer that never
        # comes. (Waiting for the first shard's file instead waited in vain whenever the FIFO's task ran first.)
        deadline = time.monotonic() + 180
        while not any(" records -> " in x for x in lines):
            assert proc.poll() is None, "".join(lines)[-2000:]
            assert time.monotonic() < deadline, "the job did not start: " + "".join(lines)[-2000:]
            time.sleep(0.2)
        assert _ray_processes(ray_tmp), "the job runs on its own Ray"
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=180)  # a bound for a loaded machine; an idle one takes seconds
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(60)
    err = "".join(lines)
    if how == "SIGINT":
        # 130, or killed by the SIGINT itself after saying so: what a shell reports as 130 either way (seen once, on
        # a loaded machine where Ray's local node had to be started twice: the message last, no traceback, then -2)
        assert proc.returncode in (130, -signal.SIGINT), err[-2000:]
        assert err.strip().splitlines()[-1].startswith("preprocess: interrupted;"), err[-2000:]
        assert "Traceback" not in err, err[-3000:]
    deadline = time.monotonic() + 30
    while _ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _ray_processes(ray_tmp)
    for p in left:
        p.kill()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, [" ".join(p.cmdline())[:120] for p in left]


def test_a_split_that_gives_no_row_is_an_error_unless_allowed(ray_local, tiny_shapes, tmp_path, capsys):
    root = tmp_path / "all-bad"
    shutil.copytree(tiny_shapes, root)
    for img in (root / "images/val").glob("*.jpg"):
        img.write_bytes(img.read_bytes()[:100])  # every image truncated: every record quarantined
    argv = [
        "--dataset",
        "omg-shapes",
        "--split",
        "val",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        "--shard-size",
        "1",
    ]
    assert preprocess_main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "omg-shapes/val gave 0 rows: all 6 records were quarantined" in last and "--allow-empty" in last, last
    assert preprocess_main(argv + ["--allow-empty"]) == 0
    # a shard of quarantined records only writes no Parquet file: its receipt and its quarantine table say it all
    out = tmp_path / "o/omg-shapes/val"
    assert not list((out / "shards").glob("*.parquet")) and len(list((out / "quarantine").glob("*.parquet"))) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == [] and manifest["quarantined"] == 6


def test_every_split_is_reached_and_an_empty_one_is_said(ray_local, tiny_shapes, tmp_path, capsys):
    """A DAVIS layout with an empty ImageSets train.txt (as a user's copy may have): every split is still processed;
    the empty one is a warning when the user asked for every split, and an error (exit 1, after the others) when
    they named it."""
    root = tmp_path / "shapes"
    shutil.copytree(tiny_shapes, root)
    (root / "videos/train/ImageSets/train.txt").write_text("")
    out = tmp_path / "o"
    assert preprocess_main(["--dataset", "omg-shapes-vos", "--root", str(root), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    rows = {d["split"]: d["rows"] for d in map(json.loads, captured.out.strip().splitlines())}
    assert rows == {"train": 0, "val": 2}, rows
    assert "preprocess: warning: omg-shapes-vos/train gave 0 rows: the split lists no record" in captured.err
    assert (
        preprocess_main(
            [
                "--dataset",
                "omg-shapes-vos",
                "--split",
                "train",
                "--split",
                "val",
                "--root",
                str(root),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert '"split": "val"' in captured.out, "the named val split was processed before the error"
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("preprocess: error: omg-shapes-vos/train gave 0 rows"), last
