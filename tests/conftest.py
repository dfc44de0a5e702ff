"""Shared fixtures. The environment defaults are the CLI's (omg.env), applied before any test."""

from __future__ import annotations

import pytest

from omg.env import apply_env_defaults

apply_env_defaults()

#: a small omg-shapes: every split and format, a few seconds to generate
TINY_SHAPES = dict(
    image_size=64, num_train_images=16, num_val_images=6, num_val_ov_images=4,
    num_train_videos=3, num_val_videos=2, min_frames=8, max_frames=10,
    crowd_prob=0.4, void_prob=0.4,
)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> str:
    """Root of a tiny omg-shapes dataset (generated once per test session; treat as read-only)."""
    from omg.data.synthetic import SynthOptions, generate

    root = tmp_path_factory.mktemp("omg-shapes") / "omg-shapes"
    generate(str(root), seed=7, opts=SynthOptions(**TINY_SHAPES), progress=False)
    return str(root)


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
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, _temp_dir=tmp,
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
