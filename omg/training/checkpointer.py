"""Training checkpoints: the one record of "the last complete checkpoint" of a run.

A run directory (any fsspec URI shared by every worker) holds::

    <run_dir>/checkpoints/step-00000020/state.pt        rank 0: model, optimiser, schedule, step, MLflow run id
                                        rng-rank0.pt    every rank: its random generators
                                        rng-rank1.pt
                                        COMPLETE.json   written last: step, world size, every file and its size

A checkpoint is *complete* exactly when ``COMPLETE.json`` exists and every file it lists is there with
its recorded size; nothing else (no progress file, no Ray registry) says which checkpoint is the last.
:meth:`Checkpointer.save` is collective: every rank writes its files, a barrier, rank 0 verifies the
folder and writes ``COMPLETE.json``, a second barrier. So when ``save`` returns on any rank the
checkpoint is recorded, and a worker that dies right after it cannot lose it. Rank 0 then keeps the
newest ``num_to_keep`` complete checkpoints and removes the rest; :meth:`Checkpointer.clean` (at the
start of a run) removes folders left incomplete by a crash, so no orphan folder stays behind.

The loop around it is :func:`omg_platform.pipelines.joint_train.train_loop_per_worker`; the design follows
torchtitan's split of Trainer and Checkpointer (the checkpointer owns the files, the loop owns the step).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Callable

import torch

from omg.training.step import rng_state, set_rng_state
from omg.utils import io as uio

MARKER = "COMPLETE.json"
STATE = "state.pt"


def rng_file(rank: int) -> str:
    return f"rng-rank{rank}.pt"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint: its step, folder and the number of ranks that wrote it."""

    step: int
    uri: str
    world_size: int


@dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` put back, beyond the modules' own state."""

    step: int
    mlflow_run_id: str | None
    #: False when this rank's generators were not in the checkpoint (it was written by fewer ranks)
    rng_restored: bool


def _no_barrier() -> None:
    return None


class Checkpointer:
    """Writes, finds, restores and prunes the checkpoints of one run (see the module docstring).

    ``barrier`` synchronises every rank (``torch.distributed.barrier`` under DDP); with one rank it is
    a no-op. Only rank 0 writes ``state.pt``, the marker, and deletes folders.
    """

    def __init__(
        self,
        run_dir: str,
        rank: int = 0,
        world_size: int = 1,
        num_to_keep: int | None = None,
        barrier: Callable[[], None] = _no_barrier,
    ):
        if num_to_keep is not None and num_to_keep < 1:
            raise ValueError("num_to_keep must be >= 1 (or None to keep every checkpoint)")
        self.run_dir = run_dir
        self.root = uio.join(run_dir, "checkpoints")
        self.rank, self.world_size = rank, world_size
        self.num_to_keep = num_to_keep
        self.barrier = barrier

    # ------------------------------------------------------------------ finding
    def folder(self, step: int) -> str:
        return uio.join(self.root, f"step-{step:08d}")

    def _folders(self) -> list[tuple[int, str]]:
        """(step, uri) of every ``step-*`` folder, newest first."""
        if not uio.exists(self.root):
            return []
        out = []
        for name in uio.listdir(self.root):
            if name.startswith("step-") and name[5:].isdigit():
                out.append((int(name[5:]), uio.join(self.root, name)))
        return sorted(out, reverse=True)

    def _complete(self, step: int, uri: str) -> CheckpointInfo | None:
        marker = uio.join(uri, MARKER)
        if not uio.exists(marker):
            return None
        try:
            doc = uio.read_json(marker)
            sizes = uio.sizes(uri)
            files = doc["files"]
            if int(doc["step"]) != step or any(sizes.get(name) != size for name, size in files.items()):
                return None
            return CheckpointInfo(step=step, uri=uri, world_size=int(doc["world_size"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def latest(self) -> CheckpointInfo | None:
        """The newest complete checkpoint, or None."""
        for step, uri in self._folders():
            info = self._complete(step, uri)
            if info is not None:
                return info
        return None

    def complete(self) -> list[CheckpointInfo]:
        """Every complete checkpoint, newest first."""
        return [i for i in (self._complete(s, u) for s, u in self._folders()) if i is not None]

    # ------------------------------------------------------------------ writing
    def save(
        self, step: int, model: torch.nn.Module, optimizer, scheduler, mlflow_run_id: str | None
    ) -> CheckpointInfo:
        """Collective: every rank calls it at the same step. Returns once the checkpoint is recorded."""
        uri = self.folder(step)
        if self.rank == 0:
            _write_torch(
                uio.join(uri, STATE),
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "mlflow_run_id": mlflow_run_id,
                },
            )
        _write_torch(uio.join(uri, rng_file(self.rank)), rng_state())
        self.barrier()  # every rank's files are written
        if self.rank == 0:
            sizes = uio.sizes(uri)
            want = [STATE] + [rng_file(r) for r in range(self.world_size)]
            missing = [n for n in want if n not in sizes]
            if missing:
                raise RuntimeError(
                    f"{uri}: checkpoint at step {step} is incomplete after every rank wrote it: "
                    f"missing {missing} (is the storage shared by every worker?)"
                )
            uio.write_json(
                uio.join(uri, MARKER),
                {
                    "step": step,
                    "world_size": self.world_size,
                    "files": {n: sizes[n] for n in want},
                    "time": time.time(),
                },
            )
            self.prune()
        self.barrier()  # recorded: a rank that dies from here on cannot lose it
        return CheckpointInfo(step=step, uri=uri, world_size=self.world_size)

    def prune(self) -> list[str]:
        """Rank 0: keep the newest ``num_to_keep`` complete checkpoints, remove every other folder at or below
        the newest complete one. Returns the removed folders."""
        if self.rank != 0:
            return []
        complete = self.complete()
        if not complete:
            return []
        keep = {c.uri for c in (complete if self.num_to_keep is None else complete[: self.num_to_keep])}
        newest = complete[0].step
        removed = [uri for step, uri in self._folders() if step <= newest and uri not in keep]
        for uri in removed:
            uio.remove_tree(uri)
        return removed

    def clean(self) -> list[str]:
        """Collective, before training starts (after every rank chose its checkpoint with :meth:`latest`):
        rank 0 removes every incomplete folder (left by a crash mid-write) and prunes. Returns the removed
        folders (rank 0)."""
        self.barrier()
        removed = []
        if self.rank == 0:
            for step, uri in self._folders():
                if self._complete(step, uri) is None:
                    uio.remove_tree(uri)
                    removed.append(uri)
            removed += self.prune()
        self.barrier()
        return removed

    # ------------------------------------------------------------------ restoring
    def restore(self, info: CheckpointInfo, model: torch.nn.Module, optimizer, scheduler) -> Restored:
        state = torch.load(io.BytesIO(uio.read_bytes(uio.join(info.uri, STATE))), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng_uri = uio.join(info.uri, rng_file(self.rank))
        rng = self.rank < info.world_size and uio.exists(rng_uri)
        if rng:
            set_rng_state(torch.load(io.BytesIO(uio.read_bytes(rng_uri)), weights_only=True))
        return Restored(step=int(state["step"]), mlflow_run_id=state.get("mlflow_run_id"), rng_restored=rng)


def _write_torch(uri: str, obj) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    uio.write_bytes(uri, buf.getvalue())
