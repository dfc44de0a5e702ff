"""omg/utils/io.py on object storage (a real S3 server, SeaweedFS, on loopback): an operation is retried while the
store is away for a few seconds, an error that remains names the operation and the URI, listings see what another
process wrote, and a protocol without its package is said in one line with the install command. Also the
locations a Ray job may not use (omg_platform/pipelines/cluster.py) and the tracking store of a runs folder on object
storage."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from omg.utils import io as uio
from tests.services import S3Server, free_port, missing, running


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    lacking = [m for m in missing() if "SeaweedFS" in m or "s3fs" in m]
    if lacking:
        if os.environ.get("OMG_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"OMG_REQUIRE_CLUSTER=1 and this machine lacks: {'; '.join(lacking)}")
        pytest.skip(f"this machine lacks: {'; '.join(lacking)}")
    with running(S3Server(tmp_path_factory.mktemp("s3"), bucket="tst")) as server:
        # botocore tries once (its default: 5 attempts, 7-11 s on a refused connection): the retries measured here
        # are omg's (OMG_STORAGE_RETRY_SECONDS)
        env = {**server.env, "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_read_write_list_and_a_listing_that_sees_another_process(s3):
    uio.write_json("s3://tst/a/doc.json", {"x": 1})
    assert uio.read_json("s3://tst/a/doc.json") == {"x": 1} and uio.listdir("s3://tst/a") == ["doc.json"]
    # another process writes beside it: this one's listing (and exists) must not answer from fsspec's cache
    code = "from omg.utils import io as uio; uio.write_bytes('s3://tst/a/other.bin', b'12')"
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ)
    assert uio.listdir("s3://tst/a") == ["doc.json", "other.bin"] and uio.exists("s3://tst/a/other.bin")
    assert uio.sizes("s3://tst/a")["other.bin"] == 2
    # a glob from the bucket's root (the other tests of this module write beside a/)
    assert [u for u in uio.glob("s3://tst", "**/*.json") if "/a/" in u] == ["s3://tst/a/doc.json"]
    assert uio.isdir("s3://tst/a")
    with pytest.raises(FileNotFoundError) as info:
        uio.read_bytes("s3://tst/a/missing.json")
    assert info.value.filename == "s3://tst/a/missing.json"


@pytest.mark.slow(seconds=25)
def test_a_store_away_for_a_few_seconds_is_retried_and_one_that_stays_away_is_named(s3, monkeypatch):
    from omg.utils.errors import describe

    uio.write_bytes("s3://tst/b/state.pt", b"checkpoint")
    s3.stop()
    back = threading.Timer(3.0, s3.start)  # the same ports and data: the store comes back
    back.start()
    t0 = time.monotonic()
    try:
        assert uio.read_bytes("s3://tst/b/state.pt") == b"checkpoint"
        uio.write_bytes("s3://tst/b/after.json", b"{}")
    finally:
        back.join()
    assert time.monotonic() - t0 >= 3.0

    # a store that stays away: a port where nothing listens
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OMG_STORAGE_RETRY_SECONDS", "2")
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps one client per set of arguments, not per environment
    try:
        with pytest.raises(uio.StorageError) as info:
            uio.write_bytes("s3://tst/b/step-00000003/state.pt", b"x")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    line = describe(info.value)
    assert line.startswith("cannot write: ") and line.endswith(": s3://tst/b/step-00000003/state.pt"), line
    assert "attempts over" in line and "Could not connect to the endpoint" in line, line


def test_a_protocol_without_its_package_is_one_line_with_the_install_command(tmp_path):
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from omg_platform.cli import main\n"
        "sys.exit(main(['data', 'validate', 's3://bucket/omg-shapes', '--dataset', 'omg-shapes']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "s3://bucket/omg-shapes" in last and "needs s3fs" in last and "pip install s3fs" in last, last


def test_a_relative_location_is_refused_inside_a_ray_job_and_made_absolute_elsewhere(monkeypatch, tmp_path):
    from omg_platform.pipelines.cluster import shared_location

    monkeypatch.chdir(tmp_path)
    assert shared_location("runs/train", "checkpoint.storage_path") == str(tmp_path / "runs/train")
    assert shared_location("s3://b/runs", "x") == "s3://b/runs" and shared_location("models:/m/1", "x") == "models:/m/1"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray's job supervisor gives a job's driver
    assert shared_location("/mnt/shared/runs", "x") == "/mnt/shared/runs"
    with pytest.raises(
        ValueError,
        match=r"^checkpoint.storage_path=runs/train: a relative path in a Ray job .* "
        r"OMG_RUNS_DIR=s3://",
    ):
        shared_location("runs/train", "checkpoint.storage_path")


def test_runs_on_object_storage_need_a_tracking_server(monkeypatch):
    from omg_platform.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("OMG_RUNS_DIR", "s3://b/omg/runs")
    with pytest.raises(ValueError, match="set MLFLOW_TRACKING_URI to the tracking server"):
        tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_shards_from_a_bucket_are_the_shards_from_the_disk(s3, ray_local, tiny_shapes, tmp_path):
    """`omg preprocess` reads a dataset in a bucket (a shard's records on several threads) and writes its shards
    there: the shards of the same dataset on the local disk, row for row and byte for byte (but the source URI each
    row records), in the same order. (Its own local Ray:
    the session's was started without the bucket's credentials, as a node without them would be.)"""
    from omg.data.catalog import load_catalog
    from omg_platform.pipelines.preprocess import preprocess_split

    uio.put_tree(tiny_shapes, "s3://tst/data/omg-shapes")
    local = preprocess_split(
        load_catalog()["omg-shapes"],
        "train",
        str(tmp_path / "shards"),
        tiny_shapes,
        shard_size=4,
        progress=False,
        log=lambda _: None,
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "omg_platform.cli",
            "preprocess",
            "--dataset",
            "omg-shapes",
            "--split",
            "train",
            "--root",
            "s3://tst/data/omg-shapes",
            "--out",
            "s3://tst/shards",
            "--shard-size",
            "4",
            "--num-cpus",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    remote = uio.read_json("s3://tst/shards/omg-shapes/train/manifest.json")
    assert local["rows"] == remote["rows"] == 16 and len(remote["shards"]) == 4
    for a, b in zip(local["shards"], remote["shards"], strict=True):
        mine = pq.read_table(io.BytesIO(uio.read_bytes(str(tmp_path / "shards/omg-shapes/train" / a["path"]))))
        theirs = pq.read_table(io.BytesIO(uio.read_bytes(f"s3://tst/shards/omg-shapes/train/{b['path']}")))
        assert theirs.drop_columns("source").equals(mine.drop_columns("source")), a["path"]
        assert [s.replace("s3://tst/data/omg-shapes", tiny_shapes) for s in theirs["source"].to_pylist()] == mine[
            "source"
        ].to_pylist()
