"""Clear errors instead of tracebacks: the last line names the file, record and field (or errno and path) and says
what is wrong, for the mistakes users make most (issue "Nothing lost, nothing misleading", item 4)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from omg.modeling.checkpoint import load_checkpoint, save_checkpoint
from omg.modeling.model import ModelConfig, build_model
from omg.utils import io as uio
from omg.utils.errors import describe
from omg_platform.cli import main as omg_main
from omg_platform.errors import root_cause
from tests.evaluation import metric_toys as toys
from tests.helpers import write_pq_files

CONFIG = str(Path(__file__).resolve().parents[1] / "omg_platform/pipelines/configs/shapes_smoke.yaml")


def _last_err(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_a_malformed_catalog_file_is_named_with_its_key(tmp_path, monkeypatch, capsys):
    from omg.data.catalog import DEFAULT_CATALOG_DIR
    from omg_platform.pipelines.preprocess import main as preprocess_main

    text = (DEFAULT_CATALOG_DIR / "cityscapes-panoptic.yaml").read_text()
    (tmp_path / "cityscapes-panoptic.yaml").write_text(text.replace("modality: image", "modality: picture"))
    monkeypatch.setenv("OMG_CATALOG_DIR", str(tmp_path))
    assert preprocess_main(["--dataset", "omg-shapes", "--out", str(tmp_path / "o")]) == 2
    last = _last_err(capsys)
    assert last.startswith(f"preprocess: error: {tmp_path / 'cityscapes-panoptic.yaml'}: key 'modality'"), last
    (tmp_path / "cityscapes-panoptic.yaml").unlink()
    (tmp_path / "mine.yaml").write_text("name: [unclosed\n")
    assert preprocess_main(["--dataset", "omg-shapes", "--out", str(tmp_path / "o")]) == 2
    assert "mine.yaml" in (last := _last_err(capsys)) and "not valid YAML" in last, last


def test_an_unknown_model_variant_names_the_key_and_the_known_ones(capsys):
    from omg_platform.pipelines.joint_train import main as train_main

    assert train_main(["--config", CONFIG, "model.variant=nope"]) == 2
    last = _last_err(capsys)
    assert "key 'model.variant'" in last and "'nope'" in last and "tiny_convnext" in last, last


def test_training_storage_that_takes_no_files_is_said_before_any_worker_starts(tmp_path, capsys):
    from omg_platform.pipelines.joint_train import main as train_main

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    shards = tmp_path / "shards"
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):  # manifests only: no training starts
        uio.write_json(
            str(shards / name / "train/manifest.json"),
            {
                "schema_version": 2,
                "dataset": name,
                "split": "train",
                "shards": [],
                "classes": [],
                "class_agnostic": name == "omg-shapes-sam",
                "rows": 0,
            },
        )
    rc = train_main(
        [
            "--config",
            CONFIG,
            f"data.shards={shards}",
            f"checkpoint.storage_path={blocker}/runs",
            "validation.pairs=[]",
            "--no-mlflow",
        ]
    )
    last = _last_err(capsys)
    assert rc == 1 and "[ENOTDIR]" in last and str(blocker) in last, last


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.manual_seed(0)
    save_checkpoint(build_model(ModelConfig.tiny()), str(path), {"test_size": [64, 64]})
    return str(path)


def test_checkpoint_mistakes_are_explained(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file; did you mean .*model.pt"):
        load_checkpoint(str(Path(tiny_checkpoint).parent))
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint file"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    doc = torch.load(tiny_checkpoint, weights_only=True)
    doc["model_config"]["hidden_dim"] = 32  # a config that does not match the weights
    torch.save(doc, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"weights do not fit the checkpoint's model config .*hidden_dim 32"):
        load_checkpoint(str(tmp_path / "mismatch.pt"))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.txt: not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "notes.txt"))
    assert omg_main(["serve", "--checkpoint", str(tmp_path / "missing.pt"), "--port", "0"]) == 2
    last = _last_err(capsys)
    assert last == f"omg serve: error: cannot load the checkpoint: {tmp_path / 'missing.pt'}: no such checkpoint file"


def _pq(base: Path, capsys, *extra) -> tuple[int, str]:
    rc = omg_main(
        [
            "metric",
            "pq",
            "--gt-json",
            str(base / "gt.json"),
            "--gt-folder",
            str(base / "gt"),
            "--pred-json",
            str(base / "pred.json"),
            "--pred-folder",
            str(base / "pred"),
            *extra,
        ]
    )
    return rc, _last_err(capsys)


def test_metric_pq_names_the_file_and_the_image(tmp_path, capsys):
    write_pq_files(tmp_path, *toys.pq_toy())
    pred = json.loads((tmp_path / "pred.json").read_text())
    png = tmp_path / "pred" / pred["annotations"][0]["file_name"]
    original_png, original_json = png.read_bytes(), (tmp_path / "pred.json").read_text()
    image_id = pred["annotations"][0]["image_id"]

    img = Image.open(png)
    img.resize((img.width // 2, img.height // 2), Image.NEAREST).save(png)
    rc, last = _pq(tmp_path, capsys)
    assert rc == 2 and str(png) in last and f"image_id {image_id}" in last and "64x48 pixels" in last, last
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    rc, last = _pq(tmp_path, capsys)
    assert rc == 2 and str(png) in last and "cannot decode" in last and f"image_id {image_id}" in last, last
    png.write_bytes(original_png)

    (tmp_path / "pred.json").write_text(original_json[:-5])
    rc, last = _pq(tmp_path, capsys)
    assert rc == 2 and f"{tmp_path / 'pred.json'}: not valid JSON" in last and "line 1" in last, last
    doc = json.loads(original_json)
    del doc["annotations"][0]["segments_info"][0]["category_id"]
    (tmp_path / "pred.json").write_text(json.dumps(doc))
    rc, last = _pq(tmp_path, capsys)
    assert (
        rc == 2
        and str(tmp_path / "pred.json") in last
        and f"image_id {image_id}" in last
        and "'category_id' is missing" in last
    ), last
    doc = json.loads(original_json)
    del doc["annotations"][1]["file_name"]
    (tmp_path / "pred.json").write_text(json.dumps(doc))
    rc, last = _pq(tmp_path, capsys)
    assert rc == 2 and "annotations[1]: 'file_name' is missing" in last, last


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_json_out_never_replaces_a_device_and_a_full_disk_is_said(tmp_path, capsys):
    write_pq_files(tmp_path, *toys.pq_toy())
    rc, last = _pq(tmp_path, capsys, "--json-out", "/dev/full")
    assert (
        rc == 1 and last == "omg metric pq: error: cannot write --json-out: No space left on device [ENOSPC]: /dev/full"
    )
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is still the device, not a regular file"
    rc, _ = _pq(tmp_path, capsys, "--json-out", "/dev/null")
    assert rc == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_write_bytes_is_atomic_and_leaves_no_temp_file_when_it_fails(tmp_path):
    target = tmp_path / "out.json"
    uio.write_bytes(str(target), b"{}")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(IsADirectoryError):
        uio.write_bytes(str(tmp_path), b"x")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError) as info:
        uio.write_bytes(str(blocker / "sub" / "a.json"), b"x")
    assert describe(info.value).endswith(f"[ENOTDIR]: {blocker / 'sub'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "file", "out.json"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_root_cause_and_describe():
    class RayTaskError(Exception):  # the shape of ray.exceptions.RayTaskError: the original in .cause
        def __init__(self, cause):
            super().__init__("ray.remote task failed\nTraceback ...")
            self.cause = cause

    err = OSError(errno.ENOSPC, "No space left on device", "/data/shards/part-00001.parquet")
    assert root_cause(RayTaskError(err)) is err
    assert describe(err) == "No space left on device [ENOSPC]: /data/shards/part-00001.parquet"
    assert describe(ValueError("a\nb")) == "ValueError: a"


def test_omg_predict_refuses_a_decompression_bomb_from_its_header(tiny_checkpoint, tmp_path, capsys):
    """A 12000 x 12000 PNG of a few KB used 9.6 GB and 48 s; now it is refused before decoding, as in omg serve."""
    Image.new("1", (12000, 12000)).save(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    rc = omg_main(
        [
            "predict",
            "--checkpoint",
            tiny_checkpoint,
            "--input",
            str(tmp_path / "bomb.png"),
            "--task",
            "panoptic",
            "--out",
            str(tmp_path / "out"),
            "--vocabulary",
            "circle",
        ]
    )
    last = _last_err(capsys)
    assert rc == 2 and "12000x12000" in last and "exceeds the limit of 16777216 pixels" in last, last
