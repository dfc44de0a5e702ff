"""Shared fixtures. The environment defaults are the CLI's (omg.env), applied before any test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from omg.env import apply_env_defaults

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


def pytest_collection_modifyitems(config, items):
    """The test files with the longest tests run first (`make test` gives each file whole to one pytest process,
    in this order, so that a long file does not start last): files are ordered by the seconds their tests marked
    ``slow`` declare (``@pytest.mark.slow(seconds=N)``, N measured on 2 cores; 20 when not given), the rest keep
    their order after them."""
    weight: dict[str, float] = {}
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None:
            weight[item.path] = weight.get(item.path, 0.0) + float(marker.kwargs.get("seconds", 20))
    items.sort(key=lambda item: -weight.get(item.path, 0.0))  # stable: a file's tests keep their order


# The session's own text-embedding cache (subprocesses inherit it): a test never finds a vocabulary that an earlier
# session or the user's ~/.cache/omg embedded, and nothing is left in the home directory.
os.environ["OMG_CACHE_DIR"] = tempfile.mkdtemp(prefix="omg-test-cache-")
atexit.register(shutil.rmtree, os.environ["OMG_CACHE_DIR"], True)

#: a small omg-shapes: every split and format, a few seconds to generate
TINY_SHAPES = dict(
    image_size=64,
    num_train_images=16,
    num_val_images=6,
    num_val_ov_images=4,
    num_train_videos=3,
    num_val_videos=2,
    min_frames=8,
    max_frames=10,
    crowd_prob=0.4,
    void_prob=0.4,
)


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


def train_interactive(tiny_shapes: str, tmp: Path) -> None:
    """A tiny OMG-Seg trained for 150 CPU steps on tiny omg-shapes (interactive prompts + panoptic), so that a click
    lands a mask on the right shape: the serve and browser tests' model (deterministic, ~25 s; a click's IoU with the
    shape 0.45 here, 0.47 after 300 steps, the tests ask > 0.3)."""
    import torch

    from omg.config import OptimConfig
    from omg.data.catalog import Sampling, load_catalog
    from omg.data.ingest import BatchBuilder, DatasetSpec, IngestConfig, PlanDataset
    from omg.losses.criterion import Criterion
    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model
    from omg.modeling.text import TextEmbedder
    from omg.training.optim import build_optimizer, build_scheduler
    from omg.training.step import train_step
    from pipelines.preprocess import preprocess_split

    catalog = load_catalog()
    for name in ("omg-shapes", "omg-shapes-sam"):
        preprocess_split(
            catalog[name], "train", str(tmp / "shards"), tiny_shapes, shard_size=8, progress=False, log=lambda _: None
        )
    ingest = IngestConfig(
        crop_size=(64, 64),
        batch_size=4,
        num_prompts=6,
        box_prompt_prob=0.25,
        datasets=(
            DatasetSpec("omg-shapes", str(tmp / "shards/omg-shapes/train"), Sampling(0.5, "pseudo_video")),
            DatasetSpec(
                "omg-shapes-sam", str(tmp / "shards/omg-shapes-sam/train"), Sampling(2.0, "image", (0.75, 1.5))
            ),
        ),
    )
    builder = BatchBuilder(ingest)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig.tiny(
            "tiny_convnext_learned",
            location_content="sampled",
            hidden_dim=64,
            num_queries=20,
            dec_layers=3,
            enc_layers=1,
            dec_ffn_dim=128,
            enc_ffn_dim=128,
            nheads=4,
        )
    )
    text = TextEmbedder(model.backbone).embed(builder.label_space.vocabulary)
    optim = OptimConfig(
        lr=1e-3,
        base_batch=4,
        grad_clip=1.0,
        warmup_iters=20,
        max_steps=100000,
        epochs=12,
        milestones=(11, 12),
        num_points=1024,
    )
    opt = build_optimizer(model, optim, 4, 1.0)
    sched = build_scheduler(opt, optim, 1000, 100000)
    criterion = Criterion(num_points=optim.num_points)
    steps, epoch = 0, 0
    model.train()
    # the weights depend on PyTorch's thread count (the order of float sums): always 2, the one the tests' clicks
    # were checked on, whatever the machine's cores or the pytest process's share of them (with 1 thread the served
    # click of test_serve lands at IoU 0.05 instead of 0.45; the 15 val shapes' mean IoU 0.25 instead of 0.33)
    threads = torch.get_num_threads()
    torch.set_num_threads(INTERACTIVE_THREADS)
    try:
        while steps < INTERACTIVE_STEPS:
            plan = PlanDataset(builder, epoch)
            for i in range(len(plan)):
                train_step(model, plan[i], text, criterion, opt, sched, optim.grad_clip, "cpu")
                steps += 1
                if steps >= INTERACTIVE_STEPS:
                    break
            epoch += 1
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(
        model, str(tmp / "interactive.pt"), {"label_space": builder.label_space.to_dict(), "test_size": [64, 64]}
    )


INTERACTIVE_STEPS = 150
INTERACTIVE_THREADS = 2


#: the omg-shapes training label space of a random tiny checkpoint (LabelSpace.to_dict form)
LABEL_SPACE = {
    "names": [["circle", "disc"], ["square"], ["triangle"], ["star"], ["sky"], ["grass"], ["water"], ["sand"]],
    "isthing": [True] * 4 + [False] * 4,
    "mappings": {
        "omg-shapes": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7},
        "omg-shapes-vps": {"1": 0, "2": 1, "3": 2, "4": 3, "11": 4, "12": 5, "13": 6, "14": 7},
    },
    "class_agnostic": [],
}


def tiny_checkpoint(path, seed: int = 0) -> str:
    """A random tiny OMG-Seg checkpoint with the omg-shapes label space (``LABEL_SPACE``), test size 64, at ``path``
    (outputs depend on ``seed`` only): for tests of serving and tracking, where the weights do not matter."""
    import torch

    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model

    torch.manual_seed(seed)
    save_checkpoint(build_model(ModelConfig.tiny()), str(path), {"label_space": LABEL_SPACE, "test_size": [64, 64]})
    return str(path)
