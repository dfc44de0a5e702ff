"""Where a pipeline meets the cluster: joining Ray (or starting a local one), the locations its tasks use, the
environment its workers get, and running a Ray Train trainer to its end (:func:`run_trainer`).

On a cluster the nodes share nothing but the network, so a location a Ray task, an actor or a later job reads must
be one every node can read: a URI (object storage), or an absolute path on a filesystem every node mounts. A
relative path inside a Ray job is the job's own unpacked copy of the working directory on the head node, which no
other node sees and Ray deletes: :func:`shared_location` refuses it, with the fix.
"""

from __future__ import annotations

import os

from omg.utils.log import get_logger, interrupted

log = get_logger(__name__)


def in_ray_job() -> bool:
    """This process is the driver of a job submitted with ``ray job submit`` (Ray's job supervisor sets this)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def shared_location(location: str, what: str) -> str:
    """``location`` as every node of the cluster must see it: a URI as it is, a local path made absolute. Inside a
    Ray job, a relative path raises ``ValueError`` naming ``what`` (the setting) and the fix."""
    if "://" in location or location.startswith(("models:/", "runs:/")):  # MLflow URIs resolve on each node
        return location
    if in_ray_job() and not os.path.isabs(location):
        raise ValueError(
            f"{what}={location}: a relative path in a Ray job is the job's copy of the working directory "
            "on the head node, which the other nodes never see and Ray deletes with the job; give a URI "
            "every node reads (s3://...), or set OMG_RUNS_DIR=s3://BUCKET/omg/runs and OMG_DATA_DIR on "
            "every node (ray_cluster.yaml does)"
        )
    return os.path.abspath(location)


#: how many times a local Ray is started before its failure to start is the answer
STARTS = 3

#: Ray Train's preemption watcher off on a local Ray (the driver's setting reaches the controller): it is an actor of
#: its own per training run, polling for nodes that a cloud provider is about to take away, which one machine never
#: has; ~3 CPU-seconds a run on a 2-core EPYC (2026-12-07). A cluster keeps Ray's default.
LOCAL_TRAIN_ENV = ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def init_ray(num_cpus: int | None = None) -> bool:
    """Connect to ``RAY_ADDRESS`` (a cluster, or the job's own cluster under ``ray job submit``), else start a
    local Ray with a capped object store. Returns False when Ray was already initialised (by the caller, who
    then also shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        os.environ.setdefault(*LOCAL_TRAIN_ENV)
        for attempt in range(1, STARTS + 1):
            try:
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    object_store_memory=512 * 1024 * 1024,
                    log_to_driver=True,
                    runtime_env={"worker_process_setup_hook": f"{__name__}.quiet_placement_group_cleaner"},
                )
                break
            except Exception as err:
                # Ray waits a fixed 30 s for a new local node to register; on a machine loaded to its limit that is
                # not always enough (seen in a test run with both cores busy twice over): start it again
                if "timed out during startup" not in str(err) or attempt == STARTS:
                    raise
                log.warning(f"Ray's local node did not start in its 30 s ({err}); starting it again")
                ray.shutdown()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress line (with ETA) instead of Ray's bars
    # one heavy operator per job: let it use every CPU instead of reserving half for others
    ctx.op_resource_reservation_enabled = False
    return True


def quiet_placement_group_cleaner() -> None:
    """The ``worker_process_setup_hook`` of a local Ray this process starts. That Ray has no dashboard, so Ray Train's
    placement-group cleaner cannot ask the state API whether the training controller lives and warns so every few
    seconds (half the lines of a fine-tune's log); a local Ray ends with its driver, leaving the cleaner nothing to
    clean, so only its errors are kept. A cluster has its dashboard: nothing is changed there."""
    import logging

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def release_orphaned_placement_groups() -> int:
    """Remove the placement groups whose creating actor is dead; -> how many. A Ray Train controller reserves its
    workers' CPUs/GPUs in a placement group it creates; when the controller dies with a Tune trial that a scheduler
    stopped, Ray keeps the group until the job ends (its lifetime is the job's), and Ray Train's own cleaner needs
    the dashboard's state API, which is not always there (seen on a local Ray: a stopped trial's CPU stayed reserved
    and the sweep waited forever). Groups created by a driver (no creating actor) and detached ones are kept."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    nil, created = ray.ActorID.nil().binary(), gcs_pb2.PlacementGroupTableData.CREATED
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if info.state == created and info.creator_actor_dead and info.creator_actor_id != nil and not info.is_detached:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(info.placement_group_id)))
            removed += 1
    return removed


def shutdown_ray(owned: bool) -> None:
    """Stop the Ray this process started or joined (``owned``: :func:`init_ray` returned True); a local
    cluster's processes and this job's workers go with it."""
    import ray

    if owned and ray.is_initialized():
        ray.shutdown()


def worker_env() -> dict[str, str]:
    """The driver's OMG_*, MLFLOW_* and offline settings, for the workers of an already running cluster."""
    keep = ("OMG_", "MLFLOW_", "HF_", "TRANSFORMERS_", "RAY_AUTH_MODE", "RAY_USAGE_STATS")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


def torch_trainer(*args, **kwargs):
    """A Ray Train ``TorchTrainer`` whose interrupt is the driver's: Ray Train's own SIGINT handler (which aborts the
    run and then exits the process with a status of its choosing) is not installed, so Ctrl-C (and SIGTERM, under
    :func:`omg_platform.errors.interruptible`) raises ``KeyboardInterrupt`` out of ``fit()``; its ``abort()`` then
    stops the run as Ray's handler would (the controller aborts its worker group). Arguments: ``TorchTrainer``'s."""
    from ray.train.torch import TorchTrainer

    class InterruptibleTrainer(TorchTrainer):
        controller = None

        def _register_sigint_handler(self, controller) -> None:  # Ray Train V2's hook, called by fit()
            self.controller = controller

        def abort(self) -> None:
            import ray

            if self.controller is None:
                return
            try:
                ray.get(self.controller.abort.remote(), timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                pass  # abort ends the controller actor: its death is the expected answer

    return InterruptibleTrainer(*args, **kwargs)


def run_trainer(trainer, owned: bool, prog: str, on_interrupt, on_failure=None) -> int:
    """``trainer.fit()`` (a :func:`torch_trainer`) to its end, then Ray shut down (``owned``: :func:`init_ray`'s
    answer). Ctrl-C or SIGTERM: the workers aborted first (none of them touches the run afterwards), then
    ``on_interrupt()`` tidies up and returns the line to say -> 130. A failure: ``on_failure()``, then the cause
    (Ray Train wraps the worker's exception) as the last line -> 1. Otherwise 0."""
    from omg_platform.errors import fail, interruptible

    with interruptible():
        try:
            trainer.fit()
        except KeyboardInterrupt:
            trainer.abort()
            shutdown_ray(owned)
            interrupted(log, on_interrupt(), prog)
            return 130
        except Exception as err:  # noqa: BLE001 - Ray Train wraps the worker's exception: its cause goes last
            shutdown_ray(owned)
            if on_failure is not None:
                on_failure()
            return fail(prog, err)
    shutdown_ray(owned)
    return 0
