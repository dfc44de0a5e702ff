"""Shared fixtures. The environment defaults are the CLI's (omg.env), applied before any test."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from omg.env import apply_env_defaults
from omg_platform.pipelines.cluster import LOCAL_TRAIN_ENV
from tests.helpers import TINY_SHAPES, train_interactive

apply_env_defaults()

# Under pytest-xdist (`make test`: TEST_WORKERS processes), each process's PyTorch gets its share of the cores, and
# so do the subprocesses a test starts: N processes of all-core OpenMP pools on the same cores spin against each
# other (measured: the overfit test 10 s alone, 84 s beside another all-core process on 2 cores). OpenMP threads
# that wait sleep instead of spinning, for the pools that still have several threads (the interactive checkpoint's
# training, Ray workers of 2 CPUs) while the other process is busy: that training took 91 s beside a busy process
# with spinning threads, 32 s with sleeping ones (22 s on an idle machine). A plain `pytest` keeps OpenMP's
# default: alone on an idle machine, sleeping threads made the overfit test 18.6 -> 28.5 s.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _seconds(item) -> float:
    """What a test declares it takes: ``@pytest.mark.slow(seconds=N)`` (N measured on 2 cores; 20 when not given),
    0 when it is not marked slow."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 20))


def pytest_collection_modifyitems(config, items):
    """The longest work first, so that nothing long starts last: files ordered by the seconds their tests declare
    (`make test` gives each file whole to one pytest process, in this order), and within a file its slow tests first,
    longest first (the rest keep their order after them), so a file ends on quick tests (see
    :class:`FileAtATime`)."""
    weight: dict[str, float] = {}
    for item in items:
        weight[item.path] = weight.get(item.path, 0.0) + _seconds(item)
    items.sort(key=lambda item: (-weight[item.path], str(item.path), -_seconds(item)))  # stable


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with :class:`FileAtATime` instead of pytest-xdist's own file scheduler."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FileAtATime(LoadFileScheduling):
        """pytest-xdist's file scheduler hands a process its next file as soon as two of its tests are left: behind a
        long test (the quick demo, the cluster walk) that file waited minutes while other processes sat idle at the
        end of the run. Here a process gets its next file when its last test is about to run (a pytest-xdist process
        runs a test once it knows the next one, or that there is none)."""

        def _reschedule(self, node) -> None:
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return FileAtATime(config, log)


# Every Ray a test starts (the tests' own, a pipeline's local one, the cluster walk's nodes) starts its workers when
# a task asks for one: by default a new Ray prestarts a worker per CPU for its first job, which the Ray Train jobs
# (workers with their own runtime environment) never use. The suite starts some twenty of them on 2 CPU-bound
# cores: that is 2 idle processes and ~3 CPU-seconds each, and half of an idle Ray's CPU while it waits.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
# and, as on any local Ray a pipeline starts (init_ray), no preemption watcher per Ray Train run: the tests' Ray is
# started by the tests (ray_local) as often as by a pipeline
os.environ.setdefault(*LOCAL_TRAIN_ENV)

# The session's own text-embedding cache (subprocesses inherit it): a test never finds a vocabulary that an earlier
# session or the user's ~/.cache/omg embedded, and nothing is left in the home directory.
os.environ["OMG_CACHE_DIR"] = tempfile.mkdtemp(prefix="omg-test-cache-")
atexit.register(shutil.rmtree, os.environ["OMG_CACHE_DIR"], True)
# Likewise the runs folder (MLflow's artifacts of a sqlite-tracked experiment, a pipeline's default output): nothing
# lands in the checkout's runs/. A test of the defaults sets or removes OMG_RUNS_DIR itself.
os.environ["OMG_RUNS_DIR"] = tempfile.mkdtemp(prefix="omg-test-runs-")
atexit.register(shutil.rmtree, os.environ["OMG_RUNS_DIR"], True)


# What a test run may leave in the checkout: Python's and pytest's caches and the tests' own reports.
LEFT_BY_DESIGN = ("__pycache__", ".pytest_cache/", ".hypothesis/", "tests/artifacts/", ".venv/")
_CHECKOUT = pytest.StashKey[set]()


def _checkout_entries() -> set[str] | None:
    """Untracked and ignored entries of the checkout (``git status``; None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--ignored"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    lines = [line for line in out.stdout.splitlines() if line.startswith(("??", "!!"))]
    return {line[3:] for line in lines if not any(part in line for part in LEFT_BY_DESIGN)}


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the run's own process, not a pytest-xdist worker
        session.config.stash[_CHECKOUT] = _checkout_entries()


def pytest_sessionfinish(session, exitstatus):
    """A run that leaves files in the checkout fails (e.g. MLflow's ``./mlruns`` of an experiment created without an
    artifact location): tests write to their temp folders only."""
    before = session.config.stash.get(_CHECKOUT, None)
    after = _checkout_entries() if before is not None else None
    if before is None or after is None or not (new := sorted(after - before)):
        return
    writer = session.config.get_terminal_writer()
    writer.line()
    writer.line(
        f"the tests left files in the checkout (remove them, and fix the test that wrote them): {', '.join(new)}",
        red=True,
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def built_once(tmp_path_factory, name: str, build) -> Path:
    """The folder ``name`` that ``build(folder)`` filled, built once per test run: under pytest-xdist the first of the
    run's processes to ask builds it in the temp folder they share (under a file lock) and the others reuse it."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's temp root, shared by its pytest-xdist processes
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> str:
    """Root of a tiny omg-shapes dataset (generated once per test run; treat as read-only)."""
    from omg.data.synthetic import SynthOptions, generate

    def build(folder):
        generate(str(folder / "omg-shapes"), seed=7, opts=SynthOptions(**TINY_SHAPES), progress=False)

    return str(built_once(tmp_path_factory, "omg-shapes", build) / "omg-shapes")


@pytest.fixture(scope="session")
def smoke_shards(tiny_shapes, tmp_path_factory, request) -> str:
    """Training shards of the tiny omg-shapes dataset for ``shapes_smoke.yaml``'s three datasets (built once per
    test run; treat as read-only)."""
    from omg.data.catalog import load_catalog
    from omg_platform.pipelines.preprocess import preprocess_split

    def build(folder):
        request.getfixturevalue("ray_local")  # the shards are written by Ray Data
        catalog = load_catalog()
        for name in ("omg-shapes", "omg-shapes-sam", "omg-shapes-vps"):
            preprocess_split(
                catalog[name], "train", str(folder), tiny_shapes, shard_size=8, progress=False, log=lambda _: None
            )

    return str(built_once(tmp_path_factory, "smoke-shards", build))


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state (point sampling, init), so results repeat."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray (2 CPUs, capped object store, its own temp dir) shared by the tests that need one;
    shut down and removed at the end of the session, even on failure."""
    import shutil
    import tempfile

    import ray

    tmp = tempfile.mkdtemp(prefix="omgray-", dir="/tmp")
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, _temp_dir=tmp, log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def interactive_checkpoint(tiny_shapes, tmp_path_factory, request) -> str:
    """The path of the ``train_interactive`` checkpoint, built once per test run."""

    def build(folder):
        request.getfixturevalue("ray_local")  # the shards are written by Ray Data
        train_interactive(tiny_shapes, folder)

    return str(built_once(tmp_path_factory, "interactive", build) / "interactive.pt")
