"""The cluster walk of docs/cluster.md ("From the demo to a real cluster"), line by line, on a team's setup in
miniature: SeaweedFS as S3, PostgreSQL, an MLflow tracking server on both (artifacts proxied to S3), and a
2-node loopback Ray cluster (head 127.0.0.2, worker 127.0.0.3, 1 CPU each) whose worker node runs in its own
mount namespace: a private /tmp, the checkout's runs/ and ~/.cache/omg hidden, so a path that only the head can see
fails there. Every location is s3:// or http://. The commands run from a copy of the checkout, as a user types them; the
client's own runs/ is removed before the last three (predict, eval, serve from ``models:/``).

Every server is started in its own process group and stopped even on failure (tests/services.py). Skipped when
this machine lacks a component (``services.missing()``), failed instead under ``OMG_REQUIRE_CLUSTER=1`` (CI)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from omg_platform.pipelines.cluster import LOCAL_TRAIN_ENV
from tests import ROOT
from tests.services import (
    BIN,
    MlflowServer,
    Postgres,
    RayCluster,
    S3Server,
    free_port,
    free_port_block,
    in_parallel,
    missing,
)

BUCKET = "omg"
DATA, RUNS = f"s3://{BUCKET}/omg/data", f"s3://{BUCKET}/omg/runs"
MODEL = "models:/omg-seg-smoke/1"


def cluster_walk() -> list[str]:
    """The command lines of the docs/cluster.md block marked ``cluster walk``, in order."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    marker = text.index("<!-- cluster walk:")
    block = text[marker:].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """S3, PostgreSQL, the tracking server and the 2-node cluster, configured as ray_cluster.yaml configures a
    real one (the settings in the environment of every `ray start`). The cluster starts while the servers do (their
    addresses are chosen first); all of them stop together."""
    lacking = missing()
    if lacking:
        if os.environ.get("OMG_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"OMG_REQUIRE_CLUSTER=1 and this machine lacks: {'; '.join(lacking)}")
        pytest.skip(f"this machine lacks: {'; '.join(lacking)}")
    base = tmp_path_factory.mktemp("team")
    s3 = S3Server(base / "s3", bucket=BUCKET, port=free_port_block(8))
    pg = Postgres(base / "pg")
    tracking = MlflowServer(base / "mlflow", artifacts=f"s3://{BUCKET}/mlartifacts", env=s3.env, port=free_port())
    settings = {
        **s3.env,
        "OMG_DATA_DIR": DATA,
        "OMG_RUNS_DIR": RUNS,
        "MLFLOW_TRACKING_URI": tracking.uri,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "OMG_STORAGE_RETRY_SECONDS": "30",
    }
    cluster = RayCluster(temp=str(Path("/tmp") / f"omgc-{os.getpid()}"), env=settings)

    def servers():
        s3.start()
        pg.start()
        tracking.backend = pg.create_database("mlflow")
        tracking.start()

    try:
        in_parallel(servers, cluster.start)
        yield {"s3": s3, "tracking": tracking, "cluster": cluster, "settings": settings, "base": base}
    finally:
        in_parallel(*(service.stop for service in (cluster, tracking, pg, s3)))


def _checkout_copy(dest: Path) -> Path:
    """The checkout as a user has it (no runs/, no virtual environment): where the commands are typed."""
    ignore = shutil.ignore_patterns(
        ".venv", "runs", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "report", "predictions"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _run(line: str, cwd: Path, env: dict, timeout: float = 600) -> str:
    t0 = time.monotonic()
    out = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"[walk] {time.monotonic() - t0:6.1f} s  {line[:100]}")  # pytest -s shows where the time goes
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"$ {line}\nexit {out.returncode}\n{text[-6000:]}"
    return text


@pytest.mark.slow(seconds=245)  # 239 s on an idle 2-core EPYC (2026-12-06, with the batch-prediction job)
def test_the_cluster_walk_with_object_storage_postgres_and_a_private_worker_node(team, tmp_path):
    import mlflow

    s3fs = team["s3"].filesystem()
    walk = cluster_walk()
    assert len(walk) == 11, walk
    cwd = _checkout_copy(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "OMG_ROOT_", LOCAL_TRAIN_ENV[0]))}
    env.update(team["settings"], RAY_JOBS=team["cluster"].dashboard, OMG_CACHE_DIR=str(tmp_path / "client-cache"))
    mlflow.set_tracking_uri(team["tracking"].uri)
    client = mlflow.MlflowClient()
    step = iter(walk)

    # ---- data: generated straight into the bucket, then checked where it lives
    line = next(step)
    assert line.startswith("omg data synth --out $OMG_DATA_DIR/omg-shapes")
    _run(line, cwd, env)
    assert s3fs.exists(f"{BUCKET}/omg/data/omg-shapes/meta.json")
    line = next(step)
    assert line.startswith("omg data validate")
    assert "valid:" in _run(line, cwd, env)

    # ---- shards, by a Ray Data job on both nodes
    line = next(step)
    assert "omg_platform.pipelines.preprocess" in line
    text = _run(line, cwd, env)
    assert "succeeded" in text, text[-3000:]
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):
        assert s3fs.exists(f"{BUCKET}/omg/runs/shards/{name}/train/manifest.json"), name

    # ---- training: one DDP worker per node, worker 1 killed before step 4 of 6, resumed at the checkpoint of 3
    line = next(step)
    assert (
        "omg_platform.pipelines.joint_train" in line
        and "FaultInjection" in line
        and "register_as=omg-seg-smoke" in line
    )
    assert line.endswith("--hook=omg_platform.pipelines.train_hooks:SampleTrace"), "which samples each step saw, in S3"
    text = _run(line, cwd, env)
    assert "succeeded" in text and "ip=127.0.0.3" in text, text[-4000:]
    result = [json.loads(x) for x in text.splitlines() if x.startswith('{"run"')][-1]
    assert result["step"] == 6 and result["model"].startswith(f"{RUNS}/train/"), result
    run_dir = result["model"][len("s3://") :].rsplit("/", 1)[0]
    assert s3fs.cat(f"{run_dir}/fault_injected") == b"rank 1 step 4"
    for rank in (0, 1):  # the SampleTrace hook writes to the run's storage, not a folder named "s3:" on the node
        steps = [json.loads(x)["step"] for x in s3fs.cat(f"{run_dir}/trace/rank{rank}.jsonl").decode().splitlines()]
        assert steps == [0, 1, 2, 3, 3, 4, 5], f"rank {rank} did not resume at the checkpoint of step 3: {steps}"
    assert sorted(p.rsplit("-", 1)[1] for p in s3fs.ls(f"{run_dir}/checkpoints")) == ["00000003", "00000006"]
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags.get("omg.resumed") == "true"
    history = client.get_metric_history(run.info.run_id, "train/loss_total")
    assert [h.step for h in history] == [1, 2, 3, 4, 5, 6], "each step logged once, though steps 4.. trained twice"
    assert client.get_model_version("omg-seg-smoke", "1").run_id == run.info.run_id
    assert not (cwd / "s3:").exists() and not (cwd / "runs").exists()

    # ---- evaluation of the registered model: each task fetches models:/ on its own node
    line = next(step)
    assert f"--checkpoint {MODEL}" in line
    text = _run(line, cwd, env)
    assert "succeeded" in text and "omg-shapes/val/panoptic: PQ" in text and "FAILED" not in text, text[-4000:]
    results = [json.loads(s3fs.cat(p)) for p in s3fs.glob(f"{BUCKET}/omg/runs/eval/*/*/*/*/result.json")]
    assert len(results) >= 5 and {r["node"] for r in results} == {"127.0.0.2", "127.0.0.3"}, "pairs on both nodes"
    eval_run = client.get_run(re.findall(r"MLflow run (\w+)", text)[-1])
    assert eval_run.data.tags["omg.checkpoint"] == MODEL and "eval/omg-shapes/PQ" in eval_run.data.metrics
    overlays = client.list_artifacts(eval_run.info.run_id, "eval/omg-shapes/val/panoptic/overlays")
    assert overlays and all(a.path.endswith(".png") for a in overlays), "overlays in s3:// reach MLflow"

    # ---- the val split through a Ray Data pool of 2 predictor actors (1 CPU each: one per node), files into S3
    line = next(step)
    assert "omg_platform.pipelines.predict" in line and "--dataset omg-shapes --split val" in line
    text = _run(line, cwd, env)
    assert "succeeded" in text and "6 images predicted, 0 quarantined" in text, text[-4000:]
    job_out = f"{BUCKET}/omg/runs/predictions/omg-shapes-val"
    rows = [r for p in s3fs.glob(f"{job_out}/items/part-*.parquet") for r in _parquet_rows(s3fs, p)]
    assert len(rows) == 6 and {r["node"] for r in rows} <= {"127.0.0.2", "127.0.0.3"}, rows

    # ---- a 2-trial ablation grid on Ray Tune, one trial training on each node; the experiment in the bucket
    line = next(step)
    assert "omg_platform.pipelines.ablations --grid smoke" in line
    text = _run(line, cwd, env)
    assert "succeeded" in text, text[-4000:]
    records = {
        t: json.loads(s3fs.cat(f"{BUCKET}/omg/runs/ablations/smoke/{t}/trial.json"))
        for t in ("convnext-masked", "convnext-full")
    }
    assert {r["status"] for r in records.values()} == {"finished"}, records
    assert {r["node"] for r in records.values()} == {"127.0.0.2", "127.0.0.3"}, "the trials trained on both nodes"
    assert s3fs.glob(f"{BUCKET}/omg/runs/ablations/smoke/tune/experiment_state-*.json"), "Tune's state in the bucket"
    for t, r in records.items():
        assert r["model"].startswith(f"{RUNS}/ablations/smoke/") and "omg-shapes/PQ" in r["metrics"], r
        trial = client.get_run(r["run_id"])
        assert trial.info.status == "FINISHED" and "eval/omg-shapes/PQ" in trial.data.metrics

    # ---- the report, its gallery from the overlays the trials logged through the tracking server
    line = next(step)
    assert line.startswith("omg dashboard --grid smoke")
    _run(line, cwd, env)
    html = (cwd / "report" / "index.html").read_text()
    assert "Ablation: interactive_attention" in html and "<img" in html
    assert list((cwd / "report" / "gallery").rglob("*.png")), "overlays copied into the report"

    # ---- nothing local from here on: models:/ and s3:// only (the three commands at once: they are independent)
    shutil.rmtree(cwd / "runs", ignore_errors=True)
    shutil.rmtree(tmp_path / "client-cache", ignore_errors=True)
    predict, evaluate, serve = next(step), next(step), next(step)
    assert predict.startswith(f"omg predict --checkpoint {MODEL}") and evaluate.startswith(
        f"omg eval --checkpoint {MODEL}"
    )
    assert serve.startswith(f"omg serve --checkpoint {MODEL}")
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        jobs = [  # (omg predict at the actors' thread count: its files are then the batch job's, byte for byte)
            pool.submit(_run, predict, cwd, dict(env, OMP_NUM_THREADS="1")),
            pool.submit(_run, evaluate, cwd, env),
            pool.submit(_check_serve, serve, cwd, env),
        ]
    evaluated = jobs[1].result()
    jobs[0].result(), jobs[2].result()
    panoptic = json.loads(next((cwd / "predictions").rglob("*.json")).read_text())
    assert len(panoptic["annotations"]) == 6, "one result per val image"
    local = {str(p.relative_to(cwd / "predictions")): p.read_bytes() for p in (cwd / "predictions").rglob("*.*")}
    batch = {p[len(job_out) + 1 :]: s3fs.cat(p) for p in s3fs.find(job_out) if "/items/" not in p}
    assert local.keys() == batch.keys() and local == batch, "the batch job wrote what omg predict writes"
    assert "omg-shapes/val/panoptic: PQ" in evaluated
    assert not (cwd / "runs").exists() or not any((cwd / "runs").rglob("*.pt")), "no checkpoint copied into runs/"


def _parquet_rows(fs, path: str) -> list[dict]:
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(fs.cat(path))).to_pylist()


def _check_serve(line: str, cwd: Path, env: dict) -> None:
    """``omg serve`` (the line, with a free --port): its sample picker lists the val and val_ov images in the bucket,
    and a panoptic request on one answers with segments."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port {port}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                info = json.loads(urllib.request.urlopen(f"{url}/api/info", timeout=5).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "omg serve did not answer"
                time.sleep(0.5)
        # the tiny omg-shapes' 6 val and 4 val_ov images (those hold the held-out shapes: omg.serve.find_samples)
        assert len(info["samples"]) == 6 + 4 and sum(n.startswith("000002") for n in info["samples"]) == 4, info
        png = urllib.request.urlopen(f"{url}/api/sample/{info['samples'][0]}", timeout=30).read()
        body = json.dumps({"task": "panoptic", "image": base64.b64encode(png).decode()}).encode()
        req = urllib.request.Request(f"{url}/api/predict", data=body, headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
        assert "segments" in answer, answer
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
