"""Ray Serve: OMG-Seg as a deployment with the HTTP API and page of ``omg serve``.

    python -m omg_platform.pipelines.serve --checkpoint runs/train/<run>/model.pt       # local Ray, 127.0.0.1:8000
    python -m omg_platform.pipelines.serve --checkpoint models:/omg-seg-demo/1 --autoscale 1:4 --gpus 1
    serve run omg_platform.pipelines.serve:app checkpoint=models:/omg-seg-demo/1 replicas=2        # the Ray Serve CLI
    serve run omg_platform/pipelines/configs/serve.yaml                                 # replicas, autoscaling: a file
    ray job submit --working-dir . -- python -m omg_platform.pipelines.serve --checkpoint s3://bucket/model.pt \\
        --replicas 4 --host 0.0.0.0                                                   # a cluster

Every replica holds a :class:`omg.serve.app.ServeApp` per checkpoint, so the endpoints, the 4xx errors and the
byte / pixel / prompt limits are exactly ``omg serve``'s (``ServeApp.handle``); ``POST /api/predict`` speaks the
inference schema (``omg/inference/schema.py``) like the MLflow pyfunc model.

- **Batching**: schema requests for whole-image tasks (panoptic / instance / semantic) that arrive together are run
  as one batch through the backbone (``@serve.batch``; requests with the same task, vocabulary and options).
- **Multiplexing**: the header ``serve_multiplexed_model_id: <checkpoint URI>`` (a path, fsspec or ``models:/`` URI)
  selects the model; each replica keeps the 2 most recently used, and Ray Serve routes a
  request to a replica that has its model loaded. Without the header: ``--checkpoint``.
- **Scale**: ``--replicas N`` or ``--autoscale MIN:MAX`` (Ray Serve's autoscaler, ``--target-ongoing`` requests per
  replica); ``--gpus`` per replica puts the model on CUDA.
- **Several replicas**: the page's image id lives in the replica that took the upload; a click that reaches another
  replica is answered 404 and the page resends the image with it (``ServeApp._use``), so the page works at any scale.

Ctrl-C (or the job's end) stops the app and the local Ray it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import sys
import time
from pathlib import Path

from omg.env import apply_env_defaults
from omg.utils.log import get_logger
from omg.utils.log import setup as setup_logging

log = get_logger(__name__)

try:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response
except ImportError as err:  # pragma: no cover - the requirements install ray[serve]
    raise SystemExit(f"serve: error: Ray Serve is not installed ({err}); pip install 'ray[serve]'") from None


@serve.deployment(name="omg-seg", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=32)
class OMGSegDeployment:
    """The predictor behind Ray Serve (see the module docstring)."""

    def __init__(
        self,
        checkpoint: str,
        samples: dict[str, str] | None = None,
        limits: dict | None = None,
        device: str | None = None,
        batching: bool = True,
        threads: int = 1,
    ):
        import torch

        from omg.inference.schema import Limits

        apply_env_defaults()
        torch.set_num_threads(threads)  # as many as the replica's CPUs: replicas on one machine do not oversubscribe
        if device is None and torch.cuda.is_available():
            device = "cuda"
        self.default, self.samples, self.device, self.batching = checkpoint, dict(samples or {}), device, batching
        self.limits = Limits(**(limits or {}))
        self.prefix = f"r{secrets.token_hex(3)}-"  # image ids of this replica (ServeApp.id_prefix)

    @serve.multiplexed(max_num_models_per_replica=2)
    async def app_for(self, model_id: str):
        """The ServeApp of a checkpoint URI (loaded once per replica, least recently used dropped)."""
        from omg.inference.predictor import OMGPredictor
        from omg.serve.app import ServeApp
        from omg_platform.tracking import resolve_model_uri

        def load():
            return OMGPredictor.from_checkpoint(resolve_model_uri(model_id), device=self.device)

        predictor = await asyncio.to_thread(load)
        return ServeApp(predictor, samples=self.samples, limits=self.limits, checkpoint=model_id, id_prefix=self.prefix)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batch(self, items: list[tuple]) -> list[tuple[int, str, bytes, dict]]:
        """Whole-image schema requests: one backbone pass per group (same app, task, vocabulary, options)."""
        return await asyncio.to_thread(_run_batch, items)

    async def __call__(self, request: Request) -> Response:
        model_id = serve.get_multiplexed_model_id() or self.default
        try:
            app = await self.app_for(model_id)
        except (FileNotFoundError, ValueError) as err:
            return _response(
                404, "application/json", json.dumps({"error": f"cannot load the model {model_id}: {err}"}).encode(), {}
            )
        body = await request.body()
        path = request.url.path
        if self.batching and request.method == "POST" and path == "/api/predict":
            req = await asyncio.to_thread(_parse_batchable, app, body)  # decoding images: off the event loop
            if req is not None:
                return _response(*await self._batch((app, req)))
        ctype = request.headers.get("content-type", "")
        return _response(*await asyncio.to_thread(app.handle, request.method, path, ctype, body))


def _response(status: int, ctype: str, body: bytes, headers: dict) -> Response:
    return Response(
        body,
        status_code=status,
        media_type=ctype,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **headers},
    )


def _parse_batchable(app, body: bytes):
    """The schema request in ``body`` when it can join a batch (a whole-image task), else None (the app answers it,
    errors included)."""
    from omg.inference.schema import Request as SchemaRequest
    from omg.inference.schema import RequestError
    from omg.serve.app import TASKS  # the whole-image tasks

    if len(body) > app.body_limit("/api/predict"):
        return None
    try:
        req = SchemaRequest.from_json(app.parse_json(body), app.limits)
    except RequestError:
        return None
    return req if req.task in TASKS else None


def _run_batch(items: list[tuple]) -> list[tuple[int, str, bytes, dict]]:
    """(app, request) pairs -> HTTP answers: each group with the same app, task, vocabulary and options is one
    forward pass (``ServeApp.predict_batch``)."""
    from omg.inference import schema

    out: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (app, req) in enumerate(items):
        groups.setdefault((id(app), req.task, req.vocabulary, req.topk, req.min_score), []).append(i)
    for idx in groups.values():
        try:
            responses = items[idx[0]][0].predict_batch([items[i][1] for i in idx])
            for i, res in zip(idx, responses):  # X-Batch-Size: how many images shared the forward pass
                out[i] = (200, "application/json", json.dumps(res.to_json()).encode(), {"X-Batch-Size": str(len(idx))})
        except schema.RequestError as err:
            for i in idx:
                out[i] = (err.status, "application/json", json.dumps({"error": str(err)}).encode(), {})
    return out


def build_app(
    checkpoint: str,
    replicas: int | None = None,
    autoscale: tuple[int, int] | None = None,
    target_ongoing: float = 2.0,
    gpus: float = 0.0,
    cpus: float = 1.0,
    samples: dict[str, str] | None = None,
    limits: dict | None = None,
    batching: bool = True,
):
    """The Ray Serve application (``serve.run(build_app(...))``)."""
    options: dict = {"ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus}}
    if autoscale:
        options["autoscaling_config"] = {
            "min_replicas": autoscale[0],
            "max_replicas": autoscale[1],
            "target_ongoing_requests": target_ongoing,
        }
    elif replicas is not None:  # else Ray Serve's default (1), or what a Serve config file says
        options["num_replicas"] = replicas
    return OMGSegDeployment.options(**options).bind(
        checkpoint, samples, limits, "cuda" if gpus else None, batching, max(1, int(cpus))
    )


def app(args: dict):
    """``serve run omg_platform.pipelines.serve:app checkpoint=... [replicas=N] [batching=false]`` (Ray Serve's app
    builder)."""
    unknown = set(args) - {"checkpoint", "replicas", "batching", "samples"}
    if unknown or "checkpoint" not in args:
        raise ValueError(
            f"serve run omg_platform.pipelines.serve:app takes checkpoint=URI [replicas=N] [batching=true|false] "
            f"[samples=DIR]; got {sorted(args)}"
        )
    from omg.serve import find_samples

    return build_app(
        args["checkpoint"],
        replicas=int(args["replicas"]) if "replicas" in args else None,
        batching=str(args.get("batching", "true")).lower() != "false",
        samples=find_samples(args.get("samples")),
    )


def build_parser() -> argparse.ArgumentParser:
    from omg.inference.schema import Limits

    p = argparse.ArgumentParser(prog="serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="the default model: path, fsspec URI or models:/NAME/VERSION")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host of Ray Serve's proxy (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--replicas", type=int, default=1, help="fixed number of replicas (default 1)")
    scale.add_argument("--autoscale", metavar="MIN:MAX", help="Ray Serve autoscaling between MIN and MAX replicas")
    p.add_argument("--target-ongoing", type=float, default=2.0, help="autoscaling: ongoing requests per replica")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per replica (the model runs on CUDA when > 0)")
    p.add_argument("--no-batching", action="store_true", help="answer every /api/predict request on its own")
    p.add_argument("--samples", help="omg-shapes root whose val and val_ov images the page offers")
    p.add_argument("--max-bytes", type=int, default=Limits.max_bytes)
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels)
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started here")
    p.add_argument("--ready-file", help="write the URL here once the app answers (for scripts and tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("serve")
    apply_env_defaults()
    args = build_parser().parse_args(argv)
    autoscale = None
    if args.autoscale:
        try:
            lo, hi = (int(x) for x in args.autoscale.split(":"))
            assert 0 <= lo <= hi and hi > 0
        except (ValueError, AssertionError):
            log.error(f"--autoscale expects MIN:MAX replicas, got {args.autoscale!r}")
            return 2
        autoscale = (lo, hi)
    import ray

    from omg.serve import find_samples
    from omg_platform.pipelines.cluster import init_ray, shutdown_ray

    owned = init_ray(args.num_cpus)
    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        limits = {"max_bytes": args.max_bytes, "max_pixels": args.max_pixels}
        serve.run(
            build_app(
                args.checkpoint,
                args.replicas,
                autoscale,
                args.target_ongoing,
                args.gpus,
                args.cpus,
                find_samples(args.samples),
                limits,
                not args.no_batching,
            ),
            name="omg-seg",
            route_prefix="/",
        )
        url = f"http://{args.host}:{args.port}/"
        scale = f"{autoscale[0]}-{autoscale[1]} replicas (autoscaling)" if autoscale else f"{args.replicas} replica(s)"
        print(
            f"serve: {args.checkpoint} on Ray Serve at {url}, {scale}, batching "
            f"{'off' if args.no_batching else 'on'}  (Ctrl-C stops)",
            flush=True,
        )
        if args.ready_file:
            Path(args.ready_file).write_text(url)
        while not stop["now"]:
            time.sleep(0.2)
        log.info("serve: stopping")
        return 0
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            shutdown_ray(owned)


if __name__ == "__main__":
    sys.exit(main())
