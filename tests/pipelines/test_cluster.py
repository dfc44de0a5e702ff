"""A 2-node Ray cluster on loopback (head 127.0.0.2, worker 127.0.0.3) receiving `ray job submit` of the
smoke training config (one DDP worker per node, one of them killed mid-run) and of the smoke ablation grid. The
test starts the cluster in its own process groups and temp dir and stops exactly that cluster, even on failure."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from omg.data.catalog import load_catalog
from pipelines.preprocess import preprocess_split

from tests import ROOT
RAY = str(Path(sys.executable).parent / "ray")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _loopback_ok() -> bool:
    try:
        for host in ("127.0.0.2", "127.0.0.3"):
            with socket.socket() as s:
                s.bind((host, 0))
        return True
    except OSError:
        return False


def _stop(procs: list[subprocess.Popen], temp: str) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    # `ray start --block` took 33.6 s to exit after SIGTERM (measured, idle): what has not ended in 2 s is killed
    deadline = time.monotonic() + 2
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # anything of this cluster that left its process group (matched by our own temp dir)
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, _, args = line.strip().partition(" ")
        if temp in args and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def loopback_cluster():
    if not _loopback_ok():
        pytest.skip("127.0.0.2 / 127.0.0.3 are not usable loopback addresses on this machine")
    temp = tempfile.mkdtemp(prefix="omgc-", dir="/tmp")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # "0" would refuse a second node
    port, dash = _free_port("127.0.0.2"), _free_port("127.0.0.2")
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--block", "--disable-usage-stats"]

    def agent_ports(host: str) -> list[str]:  # free ports: another local Ray (the test session's) holds the defaults
        return [f"--dashboard-agent-listen-port={_free_port(host)}", f"--dashboard-agent-grpc-port={_free_port(host)}",
                f"--metrics-export-port={_free_port(host)}", f"--runtime-env-agent-port={_free_port(host)}"]

    procs = []
    try:
        procs.append(subprocess.Popen(
            [RAY, "start", "--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--dashboard-host=127.0.0.2",
             f"--dashboard-port={dash}", f"--temp-dir={temp}", *agent_ports("127.0.0.2"), *common],
            stdout=open(f"{temp}/head.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True))
        _wait_for(lambda: _status(port, env, 1), "head node", temp)
        procs.append(subprocess.Popen(
            [RAY, "start", f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.3", *agent_ports("127.0.0.3"),
             *common],
            stdout=open(f"{temp}/worker.log", "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True))
        _wait_for(lambda: _status(port, env, 2), "worker node", temp)
        yield {"gcs": f"127.0.0.2:{port}", "dashboard": f"http://127.0.0.2:{dash}", "env": env, "temp": temp}
    finally:
        _stop(procs, temp)


def _status(port: int, env: dict, nodes: int) -> bool:
    out = subprocess.run([RAY, "status", "--address", f"127.0.0.2:{port}"], capture_output=True, text=True, env=env)
    return out.returncode == 0 and out.stdout.count(" node_") >= nodes


def _wait_for(check, what: str, temp: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(2)
    logs = "".join(Path(temp, f).read_text()[-1500:] for f in ("head.log", "worker.log") if Path(temp, f).exists())
    raise RuntimeError(f"the {what} of the loopback cluster did not come up:\n{logs}")


@pytest.fixture(scope="module")
def cluster_shards(tiny_shapes, ray_local, tmp_path_factory) -> Path:
    """Training shards of the tiny omg-shapes, shared by the job tests."""
    shards = tmp_path_factory.mktemp("cluster") / "shards"
    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):
        preprocess_split(catalog[name], "train", str(shards), tiny_shapes, shard_size=8, progress=False, log=lambda _: None)
    return shards


def _submit(cluster: dict, entry: list[str], env_vars: dict, timeout: float) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit` of ``entry`` with this checkout as the working dir; retried while the head's job
    agent is still coming up (it starts a little after the node)."""
    cmd = [RAY, "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", sys.executable, *entry]
    for _attempt in range(20):
        out = subprocess.run(cmd, capture_output=True, text=True, env=cluster["env"], timeout=timeout)
        text = out.stdout + out.stderr
        if "No available agent to submit job" not in text:
            break
        time.sleep(3)
    return out, text


@pytest.mark.slow(seconds=70)
def test_job_submit_smoke_training_on_two_nodes_survives_a_killed_worker(loopback_cluster, cluster_shards,
                                                                          tiny_shapes, tmp_path):
    """2 DDP workers, one per node; worker 1 dies (os._exit, as a crashed node's process) before step 4 of 6,
    checkpoints every 3: Ray Train restarts the group, which resumes at exactly 3, the last complete checkpoint, so
    only step 3 is trained twice (less than one checkpoint interval), and the job succeeds."""
    storage = tmp_path / "train"
    out, text = _submit(loopback_cluster, [
        "pipelines/joint_train.py", "--config", "pipelines/configs/shapes_smoke.yaml", f"data.shards={cluster_shards}",
        f"checkpoint.storage_path={storage}", "tracking.log_model=false", "checkpoint.max_failures=2",
        "--hook=pipelines.train_hooks:SampleTrace",
        "--hook=pipelines.train_hooks:FaultInjection:step=4,mode=kill,rank=1"],
        {"OMG_ROOT_OMG_SHAPES": tiny_shapes, "OMG_ROOT_OMG_SHAPES_SAM": tiny_shapes,
         "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}, timeout=420)
    assert out.returncode == 0 and "succeeded" in text, text[-4000:]
    assert "ip=127.0.0.3" in text, "a training worker ran on the second node"
    result = [json.loads(x) for x in out.stdout.splitlines() if x.startswith('{"run"')]
    assert result and result[-1]["step"] == 6 and Path(result[-1]["model"]).exists()
    run = storage / result[-1]["run"]
    assert (run / "fault_injected").read_text() == "rank 1 step 4"
    for rank in (0, 1):
        steps = [json.loads(x)["step"] for x in (run / "trace" / f"rank{rank}.jsonl").read_text().splitlines()]
        assert steps == [0, 1, 2, 3] + [3, 4, 5], f"rank {rank} did not resume at the checkpoint of step 3: {steps}"
    assert sorted(int(p.name[5:]) for p in (run / "checkpoints").iterdir()) == [3, 6], "num_to_keep 2, no orphan folder"


@pytest.mark.slow(seconds=98)
def test_job_submit_smoke_ablation_grid_runs_trials_on_both_nodes(loopback_cluster, cluster_shards, tiny_shapes,
                                                                   tmp_path):
    import mlflow

    catalog = load_catalog()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    roots = {catalog[n].env_var(): tiny_shapes for n in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vis", "omg-shapes-vps")}
    out, text = _submit(loopback_cluster, [
        "pipelines/ablations.py", "--grid", "smoke", "--storage", str(tmp_path / "abl"), "--set",
        f"data.shards={cluster_shards}"], {**roots, "MLFLOW_TRACKING_URI": uri}, timeout=540)
    assert out.returncode == 0 and "succeeded" in text, text[-4000:]
    records = [json.loads((tmp_path / "abl" / "smoke" / t / "trial.json").read_text())
               for t in ("convnext-masked", "convnext-full")]
    assert all(r["status"] == "finished" for r in records), records
    assert {r["node"] for r in records} == {"127.0.0.2", "127.0.0.3"}, "one trial per node (SPREAD)"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ablations"], output_format="list")
    parent = [r for r in runs if r.data.tags.get("omg.kind") == "ablation-grid"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 2 and parent[0].info.status == "FINISHED"
    assert sorted(c.data.tags["omg.axis.interactive_attention"] for c in children) == ["full", "masked"]
    assert all("eval/omg-shapes/PQ" in c.data.metrics and c.info.status == "FINISHED" for c in children)
    assert "omg-shapes/PQ" in records[1]["metrics"]
    # (a rerun skips finished trials and reuses the parent run: tests/pipelines/test_ablations.py, without a cluster)

    # the dashboard over the grid's runs
    from dashboards.report import build_report

    report = build_report(tmp_path / "report", grid="smoke", tracking_uri=uri)
    html = report.read_text()
    assert "Ablation: interactive_attention" in html and "baseline" in html and "<svg" in html
    rows = list(csv.DictReader(open(tmp_path / "report" / "grid-smoke.csv")))
    assert [r["setting"] for r in rows] == ["convnext-masked", "convnext-full"]
    assert rows[1]["omg-shapes/PQ delta"] or rows[1]["omg-shapes/PQ"] == rows[0]["omg-shapes/PQ"]
    assert list((tmp_path / "report" / "gallery").rglob("*.png")), "overlays copied into the report"
