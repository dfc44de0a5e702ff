"""The Ray Serve app (omg_platform/pipelines/serve.py) on a local Ray on loopback: two replicas, the page and `omg
serve`'s API;
50 concurrent schema requests (bounded) each equal to the predictor's own answer (batched ones too); the same 4xx
as `omg serve`; the page's image-id flow across replicas; Ctrl-C stops the app and its Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from omg.inference import schema
from omg.inference.predictor import OMGPredictor
from tests import ROOT, default_sigint, http_call
from tests.helpers import tiny_checkpoint
from tests.services import free_port

pytestmark = pytest.mark.slow  # a Ray Serve app with two replicas: ~1 min


def _same(a, b, tol=1e-5) -> bool:
    """JSON documents equal, floats within ``tol`` (a batch and a single image differ by ~1e-6 in scores)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rayserve")
    ckpt = tiny_checkpoint(tmp / "tiny.pt")
    ray_tmp = tempfile.mkdtemp(prefix="omgs-", dir="/tmp")  # Ray's socket paths must stay short
    port, ready = free_port(), tmp / "ready"
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_ADDRESS="")
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "omg_platform" / "pipelines" / "serve.py"),
            "--checkpoint",
            ckpt,
            "--replicas",
            "2",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--max-bytes",
            "200000",
            "--ready-file",
            str(ready),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None, (tmp / "serve.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp / "serve.log").read_text()[-4000:]
            time.sleep(0.5)
        yield {
            "url": ready.read_text().rstrip("/"),
            "proc": proc,
            "checkpoint": ckpt,
            "log": tmp / "serve.log",
            "ray_tmp": ray_tmp,
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _images(n=3):
    return [np.random.default_rng(s).integers(0, 255, (48, 64, 3), dtype=np.uint8) for s in range(n)]


def test_fifty_concurrent_requests_answer_as_the_predictor(app):
    images = _images()
    docs = []
    for k in range(50):
        image = schema.b64_png(images[k % 3])
        docs.append(
            [
                {"task": "panoptic", "image": image},
                {"task": "semantic", "image": image, "vocabulary": "hexagon\nstuff:sky"},
                {"task": "interactive", "image": image, "points": [[10 + k % 7, 20]]},
                {"task": "instance", "image": image, "topk": 5},
            ][k % 4]
        )
    own = OMGPredictor.from_checkpoint(app["checkpoint"])
    expected = [schema.predict(own, schema.Request.from_json(d)).to_json() for d in docs]
    replies: list = []
    with ThreadPoolExecutor(16) as pool:  # 16 clients at a time, 50 requests
        answers = list(pool.map(lambda d: http_call(f"{app['url']}/api/predict", d, replies=replies), docs))
    batches = [int(h.get("X-Batch-Size") or 0) for h in replies]
    bad = [(i, s, a if s != 200 else "") for i, (s, a) in enumerate(answers) if s != 200 or not _same(a, expected[i])]
    assert not bad, bad[:3]
    assert max(batches) > 1, f"whole-image requests shared forward passes (batch sizes {sorted(batches)})"


def test_the_page_and_the_errors_of_omg_serve(app):
    url = app["url"]
    status, page = http_call(f"{url}/", data=None)
    assert status == 200 and b"<canvas" in page
    status, info = http_call(f"{url}/api/info")
    assert status == 200 and info["checkpoint"] == app["checkpoint"] and info["limits"]["max_bytes"] == 200000
    image = schema.b64_png(_images(1)[0])
    status, err = http_call(f"{url}/api/predict", {"task": "panoptic", "image": image, "points": [[1, 1]]})
    assert status == 400 and "takes no prompts" in err["error"]
    status, err = http_call(f"{url}/api/predict", {"task": "segment-everything", "image": image})
    assert status == 400 and "field 'task'" in err["error"]
    status, err = http_call(f"{url}/api/image", data=b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000, ctype="image/png")
    assert status == 413 and "exceeds the limit of 200000 bytes" in err["error"]
    status, err = http_call(f"{url}/api/nowhere", {"x": 1})
    assert status == 404


def test_the_page_flow_works_across_replicas(app):
    """Upload, then clicks: a click that reaches the replica which did not take the upload is answered 404 and, as
    the page does, resent with the image inline; every click is answered."""
    url = app["url"]
    image = _images(1)[0]
    from omg.utils import io as uio

    status, up = http_call(f"{url}/api/image", data=uio.encode_png(image), ctype="image/png")
    assert status == 200, up
    image_id, resent = up["image_id"], 0
    for k in range(12):
        body = {"image_id": image_id, "prompts": [{"point": [10 + k, 20]}]}
        status, doc = http_call(f"{url}/api/prompt", body)
        if status in (404, 410):
            resent += 1
            status, doc = http_call(f"{url}/api/prompt", {**body, "image": schema.b64_png(image)})
        assert status == 200, doc
        assert doc["masks"][0]["prompt"] == 1
    assert resent <= 12


def test_a_request_picks_its_model_by_uri(app, tmp_path):
    """Multiplexing: the header serve_multiplexed_model_id names another checkpoint; that model answers."""
    other = tiny_checkpoint(tmp_path / "other.pt", seed=1)
    doc = {"task": "panoptic", "image": schema.b64_png(_images(1)[0])}
    req = urllib.request.Request(
        f"{app['url']}/api/predict",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": "application/json", "serve_multiplexed_model_id": other},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        got = json.loads(r.read())
    expect = {
        c: schema.predict(OMGPredictor.from_checkpoint(c), schema.Request.from_json(doc)).to_json()
        for c in (other, app["checkpoint"])
    }
    assert _same(got, expect[other]) and not _same(expect[other], expect[app["checkpoint"]])
    req = urllib.request.Request(f"{app['url']}/api/info", headers={"serve_multiplexed_model_id": "/nonexistent.pt"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=120)
    assert info.value.code == 404 and "cannot load the model /nonexistent.pt" in info.value.read().decode()


def test_ctrl_c_stops_the_app_and_its_ray(app):
    proc = app["proc"]
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 0, app["log"].read_text()[-3000:]
    import psutil

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [
            p for p in psutil.process_iter(["cmdline"]) if any(app["ray_tmp"] in a for a in (p.info["cmdline"] or []))
        ]
        if not left:
            break
        time.sleep(0.5)
    assert not left, [" ".join(p.info["cmdline"])[:120] for p in left]
