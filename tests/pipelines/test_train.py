"""omg_platform/pipelines/joint_train.py: 2-worker CPU training through the real TorchTrainer, MLflow (a real server on
loopback), exact resume after a relaunch, a driver interrupt that ends cleanly (restart after a killed worker:
tests/pipelines/test_cluster.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from omg_platform.pipelines.joint_train import main as train_main
from tests import ROOT, default_sigint
from tests.services import MlflowServer, running

CONFIG = str(ROOT / "omg_platform/pipelines/configs/shapes_smoke.yaml")


@pytest.fixture(scope="module")
def shards(smoke_shards) -> str:
    return smoke_shards


@pytest.fixture(scope="module")
def data_env(tiny_shapes):
    """The validation pairs read omg-shapes from the tiny dataset."""
    saved = {k: os.environ.get(k) for k in ("OMG_ROOT_OMG_SHAPES", "OMG_ROOT_OMG_SHAPES_SAM")}
    os.environ.update(OMG_ROOT_OMG_SHAPES=tiny_shapes, OMG_ROOT_OMG_SHAPES_SAM=tiny_shapes)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on a loopback port (sqlite store), in its own process group, stopped even on failure;
    the outage of the reference run stops and restarts it."""
    with running(MlflowServer(tmp_path_factory.mktemp("mlflow-server"), backend="")) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_server(tracking_server) -> str:
    return tracking_server.uri


TRACE = "--hook=omg_platform.pipelines.train_hooks:SampleTrace"


def fault(step: int, mode: str, rank: int = 1) -> str:
    return f"--hook=omg_platform.pipelines.train_hooks:FaultInjection:step={step},mode={mode},rank={rank}"


def _train(shards, storage, tracking, extra=(), capsys=None) -> tuple[int, dict]:
    """-> (exit status, the final JSON line); the last lines of stderr ride along under ``"_stderr"``, for
    assertion messages."""
    rc = train_main(
        [
            "--config",
            CONFIG,
            f"data.shards={shards}",
            f"checkpoint.storage_path={storage}",
            f"tracking.tracking_uri={tracking}",
            TRACE,
            *extra,
        ]
    )
    captured = capsys.readouterr() if capsys else None
    out = captured.out if captured else ""
    lines = [json.loads(x) for x in out.strip().splitlines() if x.startswith("{")]
    result = dict(lines[-1]) if lines else {}
    result["_stderr"] = "\n".join((captured.err if captured else "").splitlines()[-40:])
    return rc, result


def _trace(storage: Path) -> dict[int, list]:
    out = {}
    for f in storage.rglob("trace/rank*.jsonl"):
        out[int(f.stem[4:])] = [json.loads(x) for x in f.read_text().splitlines()]
    return out


#: how long the tracking server is away in the middle of the reference run ("unreachable for a minute")
OUTAGE_S = 60


@pytest.fixture(scope="module")
def reference(shards, data_env, tracking_server, tmp_path_factory):
    """The reference run, with the tracking server stopped right after the checkpoint of step 3 and started again
    ``OUTAGE_S`` later: steps 4-6, the validation and the model are logged across the outage (the workers wait 5 s
    before step 4, so that the server is down before they log it)."""
    storage = tmp_path_factory.mktemp("train-ref")
    outage = {}

    def away():
        deadline = time.monotonic() + 300
        while not list(storage.glob("*/checkpoints/step-00000003/COMPLETE.json")):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        tracking_server.stop()
        outage["stopped"], outage["from"] = time.monotonic(), time.time()
        try:
            time.sleep(OUTAGE_S)
        finally:
            outage["to"] = time.time()
            tracking_server.start()
            outage["seconds"] = time.monotonic() - outage["stopped"]

    thread = threading.Thread(target=away, daemon=True)
    thread.start()
    # MLflow's own retries of the calls that wait for the server (the model at the end) sleep 1, 2, 4 ... 64 s
    # instead of 2, 4 ... 120 s (the default): the run gets past the outage a minute sooner (the workers take the
    # driver's MLFLOW_* settings)
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    try:
        rc = train_main(
            [
                "--config",
                CONFIG,
                f"data.shards={shards}",
                f"checkpoint.storage_path={storage}",
                f"tracking.tracking_uri={tracking_server.uri}",
                TRACE,
                "--hook=omg_platform.pipelines.train_hooks:Stall:step=3,seconds=5",
            ]
        )
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
        else:
            os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = saved
    thread.join()
    assert rc == 0
    assert outage.get("seconds", 0) >= OUTAGE_S, "the tracking server was away mid-run"
    (storage / "outage.json").write_text(json.dumps(outage))
    return storage


@pytest.mark.slow(seconds=110)
def test_two_worker_training_logs_everything_to_mlflow(reference, mlflow_server, tiny_shapes):
    """... across a minute without the tracking server (the reference run's outage): every point once."""
    import mlflow

    from omg.inference.predictor import OMGPredictor

    info = json.loads(next(reference.rglob("run.json")).read_text())
    assert info["step"] == 6
    mlflow.set_tracking_uri(mlflow_server)
    run = mlflow.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["model.variant"] == "tiny_convnext" and p["scaling.num_workers"] == "2" and p["optim.max_steps"] == "6"
    for key in (
        "train/loss_total",
        "train/loss_cls",
        "train/loss_mask",
        "train/loss_dice",
        "train/loss_obj",
        "train/lr",
        "train/samples_per_s",
        "val/omg-shapes/PQ",
        "val/omg-shapes-sam/mIoU",
    ):
        assert key in m, key
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss_total")
    assert [h.step for h in history] == [1, 2, 3, 4, 5, 6]
    outage = json.loads((reference / "outage.json").read_text())
    during = [h.step for h in history if outage["from"] * 1000 <= h.timestamp <= outage["to"] * 1000]
    assert during == [4, 5, 6], "steps 4-6 were trained (and their points made) while the server was away"
    assert len(t["git_commit"]) >= 7 and t["ray_job_id"] and t["omg.run_name"].startswith("shapes_smoke-")
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"omg-shapes/train", "omg-shapes-sam/train", "omg-shapes-vps/train"}
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert "config.json" in arts
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    assert [x.name for x in models] == ["model"], "the final model, an MLflow 3 LoggedModel (pyfunc)"
    from omg_platform.tracking import resolve_model_uri

    logged = resolve_model_uri(f"models:/{models[0].model_id}", tracking=mlflow_server)
    assert Path(logged).read_bytes() == Path(info["model"]).read_bytes(), "its weights are the exported checkpoint"
    # the exported checkpoint is self-describing: the predictor loads it and knows the vocabulary
    pred = OMGPredictor.from_checkpoint(info["model"])
    assert pred.training_vocabulary.display[:4] == ["circle", "square", "triangle", "star"]
    assert pred.metadata["train_config"]["model"]["variant"] == "tiny_convnext"
    traces = _trace(reference)
    assert sorted(traces) == [0, 1] and [r["step"] for r in traces[0]] == list(range(6))


def _checkpoint_steps(storage: Path, run: str) -> list[int]:
    return sorted(int(p.name[5:]) for p in (storage / run / "checkpoints").iterdir())


#: attempts of the relaunch test (a race shows as a failure in some of them): 1 in the default suite; the
#: checkpointer was measured at 12 of 12 under load with OMG_TEST_RELAUNCH_ATTEMPTS=3 x 4 loops (RESULTS.md)
RELAUNCH_ATTEMPTS = int(os.environ.get("OMG_TEST_RELAUNCH_ATTEMPTS", "1"))


@pytest.mark.slow(seconds=55)
@pytest.mark.parametrize("attempt", range(RELAUNCH_ATTEMPTS))
def test_relaunch_resumes_without_repeating_samples(
    attempt, reference, shards, data_env, mlflow_server, tmp_path, capsys
):
    """A worker fails right after the checkpoint of step 3 (the failure that raced Ray's checkpoint registry and
    restarted at step 0); the relaunch resumes at exactly 3. ``OMG_TEST_RELAUNCH_ATTEMPTS=N`` repeats it N times."""
    import mlflow

    lean = ["validation.pairs=[]", "tracking.log_model=false"]  # the batches a step sees do not depend on them
    rc, out = _train(shards, tmp_path, mlflow_server, ["checkpoint.max_failures=0", fault(3, "raise"), *lean], capsys)
    assert rc == 1 and out["_stderr"].endswith("joint_train: error: RuntimeError: injected failure at step 3"), out[
        "_stderr"
    ]
    first = _trace(tmp_path)
    assert [r["step"] for r in first[1]] == [0, 1, 2]
    rc, out = _train(shards, tmp_path, mlflow_server, ["checkpoint.max_failures=0", *lean], capsys)
    assert rc == 0 and out["step"] == 6, out["_stderr"]
    assert "resuming shapes_smoke-" in out["_stderr"] and "from step 3:" in out["_stderr"]
    resumed = _trace(tmp_path)
    ref = _trace(reference)
    for rank in (0, 1):
        steps = [r["step"] for r in resumed[rank]]
        assert steps == list(range(6)), f"rank {rank}: every step once, resumed at the checkpoint ({steps})"
        assert resumed[rank] == ref[rank], "the same batches as an uninterrupted run"
    mlflow.set_tracking_uri(mlflow_server)
    run = mlflow.get_run(out["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags.get("omg.resumed") == "true"
    assert [h.step for h in mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss_total")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert _checkpoint_steps(tmp_path, out["run"]) == [3, 6], "num_to_keep 2, no orphan folder"


# A worker killed mid-run (Ray Train restarts the group from the last complete checkpoint): the 2-node job of
# tests/pipelines/test_cluster.py, one DDP worker per node.


@pytest.mark.slow(seconds=50)
def test_a_driver_interrupt_ends_cleanly_and_says_where_the_relaunch_resumes(shards, data_env, mlflow_server, tmp_path):
    """SIGINT to the driver mid-run: exit 130 with one clear line that says the step the same command resumes at
    (no traceback, no native stack dump), the MLflow run KILLED (not RUNNING), only complete checkpoints. (What a
    relaunch does from there, exactly the uninterrupted run's batches: test_relaunch_resumes_without_repeating_samples.)
    """
    import mlflow

    steps, every = 6, 3
    args = [
        f"data.shards={shards}",
        f"checkpoint.storage_path={tmp_path}",
        f"tracking.tracking_uri={mlflow_server}",
        f"optim.max_steps={steps}",
        f"checkpoint.every_steps={every}",
        "tracking.log_model=false",
        "validation.pairs=[]",
    ]
    env = dict(os.environ, PYTHONPATH=str(Path(CONFIG).parents[2]))
    # every worker waits before step 3 (after the checkpoint of step 3): the interrupt lands mid-run however
    # slowly the test process itself gets to send it on a loaded machine
    stall = "--hook=omg_platform.pipelines.train_hooks:Stall:step=3"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(CONFIG).parents[1] / "joint_train.py"),
            "--config",
            CONFIG,
            "--num-cpus",
            "2",
            TRACE,
            stall,
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 240
        # wait for the complete checkpoint of step 3, not the trace of step 2: the trace is written before the
        # checkpoint (on_step_end, then after_step), and an interrupt between the two resumes from step 0
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmp_path.glob("*/checkpoints/*/COMPLETE.json")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"training ended before the interrupt: {proc.communicate()[1][-3000:]}"
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    tail = err.strip().splitlines()[-1]
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; the same command resumes" in tail, tail
    own = [line for line in err.splitlines() if not line.startswith("\x1b[36m(")]  # not a Ray actor's output
    # (this test's second Ray instance makes Ray's PlacementGroupCleaner actor log a traceback of its own)
    assert not [
        x
        for x in own
        if "Traceback" in x or "Fatal Python error" in x or "*** SIG" in x or "Stack (most recent call first)" in x
    ], "\n".join(own[-40:])
    run_name = tail.split("resumes ", 1)[1].split(" ", 1)[0]
    resume_at = int(tail.split("from step ", 1)[1].split(" ", 1)[0])
    killed_at = max(r["step"] for r in _trace(tmp_path)[0])
    assert 0 < resume_at <= killed_at + 1 and killed_at + 1 - resume_at <= every, (resume_at, killed_at)
    mlflow.set_tracking_uri(mlflow_server)
    # a run is its name and its storage (another test may train the same configuration into this server elsewhere)
    runs = mlflow.search_runs(
        experiment_names=["omg-smoke"],
        output_format="list",
        filter_string=f"tags.`omg.run_name` = '{run_name}' and tags.`omg.storage` = '{Path(tmp_path).resolve()}'",
    )
    assert [r.info.status for r in runs] == ["KILLED"]
    assert not [p for p in (tmp_path / run_name / "checkpoints").iterdir() if not (p / "COMPLETE.json").exists()]


def test_bad_config_is_rejected_with_the_key(capsys):
    assert train_main(["--config", CONFIG, "optim.lr=-1"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err
    assert train_main(["--config", CONFIG, "optim.learning_rate=1"]) == 2
    assert "key 'optim.learning_rate': unknown key" in capsys.readouterr().err
    assert train_main(["--config", CONFIG, "data.shards=/nonexistent"]) == 2
    assert "no manifest" in capsys.readouterr().err


class _FakeBuilder:
    """plan()/build() of a BatchBuilder over made-up dataset sizes: epochs of different lengths
    (a fractional repeat factor draws a different number of samples each epoch)."""

    def __init__(self):
        from omg.data.sampling import epoch_plan, worker_plan

        self._plan = lambda e, r, w: worker_plan(epoch_plan({"a": 10, "b": 9}, {"a": 1.0, "b": 0.5}, 2, 0, e), r, w)

    def plan(self, epoch, rank=0, world=1):
        return self._plan(epoch, rank, world)

    def build(self, item):
        return {"dataset": item.dataset, "indices": list(item.indices)}


def test_local_batches_cross_epochs_of_any_length_and_resume_exactly():
    from omg_platform.pipelines.joint_train import local_batches

    b = _FakeBuilder()
    lengths = [len(b.plan(e, 0, 2)) for e in range(8)]
    assert len(set(lengths)) > 1, "the fake data must give epochs of different lengths"
    full = list(local_batches(b, 0, 30, 0, 2, 0))
    assert len(full) == 30
    for k in (1, lengths[0] - 1, lengths[0], lengths[0] + 1, 17):
        resumed = list(local_batches(b, k, 30, 0, 2, 0))
        assert resumed == full[k:], f"resume from step {k}"


def test_a_validation_reports_the_mean_loss_since_the_last_and_keeps_nothing_unreported():
    """``Validation`` with a Tune report: each validation reports ``train/loss``, the mean total loss of the steps
    since the last report (ASHA's early signal); without a report (plain training) it keeps no losses."""
    from omg_platform.pipelines.train_hooks import HookContext, StepState, Validation

    ctx, reports = HookContext(rank=0, world_size=1, run_dir="unused"), []

    def step(hook, n, loss):
        hook.after_step(ctx, StepState(n, 10, {"loss/total": loss}, 1, None, None, None))

    reporting = Validation(2, lambda model, s: {"val/x/PQ": float(s)}, reports.append)
    for n, loss in enumerate([4.0, 2.0, 1.0, 3.0], start=1):
        step(reporting, n, loss)
    assert reports == [
        {"step": 2, "train/loss": 3.0, "val/x/PQ": 2.0},
        {"step": 4, "train/loss": 2.0, "val/x/PQ": 4.0},
    ]
    silent = Validation(2, lambda model, s: {}, None)
    for n in range(1, 6):
        step(silent, n, 1.0)
    assert math.isnan(silent.result(5, {})["train/loss"]), "plain training keeps no loss history"
