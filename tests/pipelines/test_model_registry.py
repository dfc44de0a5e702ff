"""Models that ship: a checkpoint logged as an MLflow pyfunc model (omg_platform/pipelines/pyfunc_model.py, models
from code,
weights as an artifact) and registered; loaded by name it answers the inference schema exactly as the predictor
does, in process and behind `mlflow models serve` on loopback; `omg predict` takes its models:/ URI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from omg.inference import schema
from omg.inference.predictor import OMGPredictor
from omg.utils.vocabulary import Vocabulary
from tests import http_call
from tests.helpers import LABEL_SPACE, tiny_checkpoint
from tests.services import free_port

pytestmark = pytest.mark.slow  # logs a model to MLflow and serves it (~30 s in all); `make test` (CI) runs it

NAME = "omg-seg-test"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A random tiny checkpoint, logged and registered as version 1 of NAME in a fresh sqlite store."""
    import mlflow

    from omg_platform.tracking import log_pyfunc

    tmp = tmp_path_factory.mktemp("registry")
    ckpt = tiny_checkpoint(tmp / "tiny.pt")
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("registry-test", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        info = log_pyfunc(ckpt, register_as=NAME)
        mlflow.log_artifact(ckpt, "checkpoint")  # what a run logs with tracking.log_model=false
    assert str(info.registered_model_version) == "1"
    return {
        "checkpoint": ckpt,
        "tracking": uri,
        "model_uri": f"models:/{NAME}/1",
        "tmp": tmp,
        "run_uri": f"runs:/{run.info.run_id}/checkpoint/tiny.pt",
    }


def _requests(h=48, w=64) -> list[dict]:
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [
        {"task": "interactive", "image": schema.b64_png(image), "points": [[20, 20]], "boxes": [[2, 2, 40, 30]]},
        {"task": "panoptic", "image": schema.b64_png(image)},
        {"task": "semantic", "image": schema.b64_png(image), "vocabulary": "hexagon, six-sided shape\nstuff:sky"},
    ]


def _expected(checkpoint: str, docs: list[dict]) -> list[dict]:
    predictor = OMGPredictor.from_checkpoint(checkpoint)
    return [schema.predict(predictor, schema.Request.from_json(d)).to_json() for d in docs]


def test_the_registered_model_answers_as_the_predictor(registered):
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(registered["tracking"])
    version = mlflow.MlflowClient().get_model_version(NAME, "1")
    model = mlflow.pyfunc.load_model(registered["model_uri"])
    assert model.metadata.get_input_schema() is not None, "a signature"
    docs = _requests()
    assert json.loads(json.dumps(model.predict(docs))) == _expected(registered["checkpoint"], docs)
    with pytest.raises(MlflowException, match="request 1: task 'panoptic' takes no prompts"):
        model.predict([docs[0], {**docs[1], "points": [[1, 1]]}])
    # the weights are an artifact (no pickled module), byte for byte the checkpoint
    from omg_platform.tracking import resolve_model_uri

    for uri in (registered["model_uri"], registered["run_uri"]):
        local = resolve_model_uri(uri, registered["tracking"])
        assert Path(local).read_bytes() == Path(registered["checkpoint"]).read_bytes(), uri
    with pytest.raises(FileNotFoundError, match="runs:/0123/nothing.pt"):
        resolve_model_uri("runs:/0123/nothing.pt", registered["tracking"])
    assert version.source.startswith("models:/m-"), "a MLflow 3 LoggedModel"


def test_omg_predict_takes_a_models_uri(registered, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from omg_platform.cli import main

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["tracking"])
    outs = {}
    for name, ckpt in (("path", registered["checkpoint"]), ("uri", registered["model_uri"])):
        assert (
            main(
                [
                    "predict",
                    "--checkpoint",
                    ckpt,
                    "--input",
                    str(tmp_path / "a.png"),
                    "--task",
                    "panoptic",
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        outs[name] = {p.relative_to(tmp_path / name): p.read_bytes() for p in (tmp_path / name).rglob("*.png")}
    assert outs["uri"] and outs["uri"] == outs["path"]
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                f"models:/{NAME}/7",
                "--input",
                str(tmp_path / "a.png"),
                "--task",
                "panoptic",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("omg predict: error: models:/omg-seg-test/7:"), last


def test_mlflow_models_serve_answers_on_loopback(registered):
    """`mlflow models serve -m models:/NAME/1 --env-manager local` on 127.0.0.1: an image and a click give the
    predictor's own output; a bad request is a 400 naming the field; the server is stopped (own process group)."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["tracking"], PATH=f"{bin_dir}:{os.environ['PATH']}")
    log = open(registered["tmp"] / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            str(Path(bin_dir) / "mlflow"),
            "models",
            "serve",
            "-m",
            registered["model_uri"],
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (registered["tmp"] / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (registered["tmp"] / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        docs = _requests()[:2]
        status, got = http_call(f"http://127.0.0.1:{port}/invocations", {"inputs": docs})
        assert status == 200, got
        assert got["predictions"] == _expected(registered["checkpoint"], docs)
        status, err = http_call(f"http://127.0.0.1:{port}/invocations", {"inputs": [{"task": "segment-everything"}]})
        assert status == 400 and "request 0: field 'task'" in json.dumps(err), err
        _the_page_works_against(f"http://127.0.0.1:{port}/invocations", registered["checkpoint"])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _the_page_works_against(backend: str, checkpoint: str) -> None:
    """`omg serve --backend URL`: the page's API answered by the model behind ``backend`` equals the page's API with
    the model in process (uploads, clicks, a box, every whole-image mode, a vocabulary; the errors too)."""
    import threading

    from omg.serve import RemoteModel, ServeApp, make_server
    from omg.utils import io as uio

    image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    apps = {
        "remote": ServeApp(None, remote=RemoteModel(backend)),
        "local": ServeApp(OMGPredictor.from_checkpoint(checkpoint)),
    }
    # the page shows the default vocabulary and sends it back: the same text in front of either model, synonyms and
    # stuff classes included (a remote one used to give the first names only, so its answers differed)
    assert apps["remote"].default_vocabulary == apps["local"].default_vocabulary
    assert apps["local"].default_vocabulary.split("\n") == Vocabulary.from_dict(LABEL_SPACE).items()
    answers: dict[str, list] = {}
    for name, app in apps.items():
        srv = make_server(app, "127.0.0.1", 0, quiet=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        try:
            got = []
            req = urllib.request.Request(
                f"{url}/api/image", data=uio.encode_png(image), headers={"Content-Type": "image/png"}
            )
            with urllib.request.urlopen(req, timeout=120) as r:
                image_id = json.loads(r.read())["image_id"]
            for path, body in (
                ("/api/prompt", {"prompts": [{"point": [20, 20]}, {"box": [2, 2, 40, 30]}]}),
                ("/api/prompt", {"prompts": [{"point": [5, 5]}], "vocabulary": "hexagon\nstuff:sky"}),
                ("/api/segment", {"task": "panoptic"}),
                ("/api/segment", {"task": "panoptic", "vocabulary": app.default_vocabulary}),
                ("/api/segment", {"task": "semantic"}),
                ("/api/segment", {"task": "instance", "min_score": 0.0}),
                ("/api/prompt", {"prompts": [{"point": [500, 5]}]}),
            ):
                status, doc = http_call(url + path, {"image_id": image_id, **body})
                doc.pop("ms", None)
                got.append((status, doc))
            answers[name] = got
        finally:
            srv.shutdown()
            srv.server_close()
    assert [s for s, _ in answers["remote"]] == [200] * 6 + [400]
    assert answers["remote"] == answers["local"]
