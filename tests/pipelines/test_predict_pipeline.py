"""omg_platform/pipelines/predict.py: images through a Ray Data actor pool into the files ``omg predict`` writes (byte
for byte, at the same thread count), a bad image quarantined, an actor killed mid-run replaced, a killed driver
resumed where its last rows were written."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from omg.modeling.checkpoint import save_checkpoint
from omg.modeling.model import ModelConfig, build_model
from omg_platform.cli import main as omg_main
from omg_platform.pipelines.predict import list_items, parse_actors
from omg_platform.pipelines.predict import main as predict_main
from tests import ROOT
from tests.helpers import LABEL_SPACE


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("predckpt") / "tiny.pt"
    save_checkpoint(build_model(ModelConfig.tiny()), str(path), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    return str(path)


def _wait(what, predicate, proc, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert proc.poll() is None, f"the job ended before {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.05)


def _parts(out: Path) -> list[Path]:
    return sorted((out / "items").glob("part-*.parquet"))


def _kill_actors(ray_tmp: str) -> int:
    """SIGKILL the predictor actors of the Ray whose temp dir is ``ray_tmp`` -> how many."""
    killed = 0
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "BatchPredictor" in cmd:
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            if ray_tmp in environ or ray_tmp in cmd:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    return killed


@pytest.mark.slow(seconds=45)  # 42 s on an idle 2-core EPYC
def test_an_actor_pool_writes_what_omg_predict_writes_and_resumes_after_kills(
    ray_local, tiny_shapes, ckpt, tmp_path, capsys
):
    """The first run in a process of its own (its actor killed, then the driver with its local Ray); the rerun in
    this one, on the tests' Ray."""
    images = tmp_path / "images"
    shutil.copytree(Path(tiny_shapes) / "images" / "train", images)
    (images / "zz_broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    ray_tmp = tempfile.mkdtemp(prefix="omgp-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT))
    args = ["--checkpoint", ckpt, "--task", "panoptic", "--input", str(images), "--out", str(out), "--actors", "1"]
    args += ["--batch-size", "1", "--part-rows", "2"]
    cmd = [sys.executable, "-m", "omg_platform.pipelines.predict", *args, "--num-cpus", "2"]
    try:
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _wait("first rows", lambda: _parts(out), proc)
            assert _kill_actors(ray_tmp) == 1, "the actor to kill"
            seen = len(_parts(out))
            _wait("rows after the actor was killed (Ray Data started another)", lambda: len(_parts(out)) > seen, proc)
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, and the local Ray it started
            proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        before = sum(len(pd.read_parquet(p)) for p in _parts(out))
        assert 0 < before < 17, f"the kill came mid-run: {before} of 17 rows"
    finally:
        subprocess.run(["pkill", "-9", "-f", ray_tmp], check=False)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert predict_main(args) == 0
    said = capsys.readouterr()
    assert f"17 images, {before} done before, {17 - before} to run" in said.err, said.err[-2000:]
    assert "16 images predicted, 1 quarantined" in said.out, said.out
    assert f"quarantined {images / 'zz_broken.jpg'}: ValueError: " in said.out, said.out
    table = pd.concat([pd.read_parquet(p) for p in _parts(out)])
    assert sorted(table["name"].unique()) == sorted(p.stem for p in images.iterdir())
    assert set(table["status"]) == {"ok", "quarantined"} and (table["seconds"] >= 0).all()

    # the same images through `omg predict` in one process, at the actors' thread count (1 CPU each)
    (images / "zz_broken.jpg").unlink()
    one, threads = tmp_path / "one", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert (
            omg_main(["predict", "--checkpoint", ckpt, "--task", "panoptic", "--input", str(images), "--out", str(one)])
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    ours = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and "items" not in p.parts}
    theirs = {str(p.relative_to(one)): p.read_bytes() for p in one.rglob("*") if p.is_file()}
    assert ours.keys() == theirs.keys() and ours == theirs
    assert len(json.loads(theirs["panoptic.json"])["annotations"]) == 16


def test_a_catalog_split_is_listed_with_its_ids_and_bad_arguments_are_named(tiny_shapes, ckpt, tmp_path, capsys):
    args = argparse.Namespace(
        input=None, dataset="omg-shapes", split="val", root=tiny_shapes, limit=None, task="panoptic", video_id=1
    )
    items = list_items(args)
    assert [it.index for it in items] == list(range(6)) and all(Path(it.uri).exists() for it in items)
    assert all(isinstance(it.image_id, int) for it in items), "the ids of the dataset's annotation file"
    assert parse_actors("3") == (3, 3) and parse_actors("1:4") == (1, 4)
    with pytest.raises(ValueError, match="MIN:MAX"):
        parse_actors("two")
    val = str(Path(tiny_shapes) / "images" / "val")
    base = ["--checkpoint", ckpt, "--task", "panoptic", "--input", val, "--out", str(tmp_path / "o")]
    assert predict_main(base + ["--actors", "4:2"]) == 2
    assert "1 <= MIN <= MAX" in capsys.readouterr().err
    assert predict_main(["--checkpoint", str(tmp_path / "nope.pt")] + base[2:]) == 2
    assert "does not exist" in capsys.readouterr().err
    # another job's predictions in --out are not resumed as this one's
    (tmp_path / "o" / "items").mkdir(parents=True)
    (tmp_path / "o" / "items" / "job.json").write_text(json.dumps({"task": "instance"}))
    assert predict_main(base) == 2
    assert "holds the predictions of another job" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow(seconds=30)
@pytest.mark.parametrize("task", ["vis", "vps"])
def test_videos_stream_through_the_actors_into_omg_predicts_files(ray_local, tiny_shapes, ckpt, tmp_path, task):
    """A video per actor call through the streaming predictor; the run's results file assembled from each video's,
    in order: omg predict's files for the same videos, byte for byte (a broken video file quarantined)."""
    videos = tmp_path / "videos"
    shutil.copytree(Path(tiny_shapes) / "videos" / "val" / "JPEGImages", videos)
    one, threads = tmp_path / "one", torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' thread count (1 CPU each)
    try:
        assert (
            omg_main(["predict", "--checkpoint", ckpt, "--task", task, "--input", str(videos), "--out", str(one)]) == 0
        )
    finally:
        torch.set_num_threads(threads)
    (videos / "zz_broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    args = ["--checkpoint", ckpt, "--task", task, "--input", str(videos), "--out", str(out), "--actors", "1"]
    assert predict_main(args + ["--quiet"]) == 0
    ours = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and "items" not in p.parts}
    theirs = {str(p.relative_to(one)): p.read_bytes() for p in one.rglob("*") if p.is_file()}
    assert ours.keys() == theirs.keys() and ours == theirs
    table = pd.concat([pd.read_parquet(p) for p in _parts(out)])
    assert list(table.sort_values("index")["status"]) == ["ok"] * (len(table) - 1) + ["quarantined"]
