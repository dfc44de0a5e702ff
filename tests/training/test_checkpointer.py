"""omg.training.checkpointer: one record of the last complete checkpoint (no Ray: ranks are threads)."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from omg.training.checkpointer import MARKER, Checkpointer


def _parts(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    return model, opt, sched


def _step(model, opt, sched):
    opt.zero_grad()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()


def test_save_latest_restore_round_trip(tmp_path):
    model, opt, sched = _parts()
    ck = Checkpointer(str(tmp_path / "run"))
    assert ck.latest() is None
    for step in range(1, 7):
        _step(model, opt, sched)
        if step % 3 == 0:
            ck.save(step, model, opt, sched, mlflow_run_id="abc")
    expected_next = torch.rand(3)  # the RNG stream right after the step-6 checkpoint
    info = ck.latest()
    assert info.step == 6 and info.world_size == 1
    m2, o2, s2 = _parts(seed=1)
    restored = ck.restore(info, m2, o2, s2)
    assert restored.step == 6 and restored.mlflow_run_id == "abc" and restored.rng_restored
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    assert s2.state_dict()["last_epoch"] == 6 and o2.state_dict()["state"][0]["step"] == 6
    assert torch.equal(torch.rand(3), expected_next), "the random generators resume where they were"


def test_an_incomplete_or_damaged_checkpoint_is_never_the_latest(tmp_path):
    model, opt, sched = _parts()
    ck = Checkpointer(str(tmp_path / "run"), num_to_keep=None)
    ck.save(10, model, opt, sched, None)
    ck.save(20, model, opt, sched, None)
    ck.save(30, model, opt, sched, None)
    os.remove(tmp_path / "run/checkpoints/step-00000030" / MARKER)  # died before the marker was written
    assert ck.latest().step == 20
    with open(tmp_path / "run/checkpoints/step-00000020/state.pt", "r+b") as f:
        f.truncate(100)  # a torn write: the marker's recorded size no longer matches
    assert ck.latest().step == 10
    (tmp_path / "run/checkpoints/step-00000040").mkdir()  # a folder created by a crashed attempt
    removed = ck.clean()
    assert sorted(os.path.basename(r) for r in removed) == ["step-00000020", "step-00000030", "step-00000040"]
    assert sorted(os.listdir(tmp_path / "run/checkpoints")) == ["step-00000010"]


def test_prune_keeps_the_newest_num_to_keep(tmp_path):
    model, opt, sched = _parts()
    ck = Checkpointer(str(tmp_path / "run"), num_to_keep=2)
    for step in (5, 10, 15, 20):
        ck.save(step, model, opt, sched, None)
    assert sorted(os.listdir(tmp_path / "run/checkpoints")) == ["step-00000015", "step-00000020"]
    assert [c.step for c in ck.complete()] == [20, 15]


def test_save_is_collective_and_returns_only_once_recorded(tmp_path):
    """Two ranks (threads with a real barrier): when save returns on rank 1, rank 0 has written the marker
    listing both ranks' files; a rank that dies right after save cannot lose the checkpoint."""
    barrier = threading.Barrier(2)
    seen, errors = {}, []

    def worker(rank: int) -> None:
        try:
            model, opt, sched = _parts()
            ck = Checkpointer(str(tmp_path / "run"), rank=rank, world_size=2, num_to_keep=1, barrier=barrier.wait)
            ck.save(4, model, opt, sched, None)
            seen[rank] = Checkpointer(str(tmp_path / "run")).latest()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert seen[0].step == seen[1].step == 4 and seen[1].world_size == 2
    files = sorted(os.listdir(tmp_path / "run/checkpoints/step-00000004"))
    assert files == [MARKER, "rng-rank0.pt", "rng-rank1.pt", "state.pt"]


def test_a_rank_whose_files_are_missing_fails_the_save_loudly(tmp_path):
    model, opt, sched = _parts()
    ck = Checkpointer(str(tmp_path / "run"), rank=0, world_size=2)  # rank 1 never writes (no shared storage)
    with pytest.raises(RuntimeError, match=r"missing \['rng-rank1.pt'\].*shared"):
        ck.save(3, model, opt, sched, None)
    assert ck.latest() is None


def test_fewer_ranks_than_the_writer_restore_without_their_rng(tmp_path):
    model, opt, sched = _parts()
    Checkpointer(str(tmp_path / "run")).save(2, model, opt, sched, None)
    restored = Checkpointer(str(tmp_path / "run"), rank=1, world_size=2).restore(
        Checkpointer(str(tmp_path / "run")).latest(), *_parts()
    )
    assert restored.step == 2 and not restored.rng_restored
