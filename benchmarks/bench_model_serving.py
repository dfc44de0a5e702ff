"""Serving paths of one model: the in-process predictor (the baseline) vs `omg serve`, `mlflow models serve` (the
pyfunc model) and the Ray Serve app, all speaking the inference schema (omg/inference/schema.py) over loopback;
and Ray Serve's throughput with 1 vs 2 replicas and with batching on vs off.

    python benchmarks/bench_model_serving.py [--image-size 128] [--repeats 15] [--clients 16] [--requests 96]

A tiny model with random weights (latency does not depend on them). Per path, the median of ``--repeats`` of:
a click (an interactive request on an image the server has seen: `omg serve` and Ray Serve keep its features,
the stateless pyfunc model computes them again) and an image (a panoptic request on an image never seen before).
Throughput: ``--requests`` panoptic requests on distinct images from ``--clients`` concurrent clients; each
replica gets 1 CPU and 1 torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import free_port, median_seconds, post_json


def wait_for(url: str, proc: subprocess.Popen | None, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f} s")


class Requests:
    """Request documents over a pool of distinct images (an image request never repeats an image)."""

    def __init__(self, size: int, n: int):
        from omg.inference.schema import b64_png

        rng = np.random.default_rng(0)
        self.images = [b64_png(rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)) for _ in range(n)]
        self.size, self.next = size, 0

    def click(self) -> dict:
        return {"task": "interactive", "image": self.images[0], "points": [[self.size // 2, self.size // 3]]}

    def image(self) -> dict:
        self.next = self.next % (len(self.images) - 1) + 1
        return {"task": "panoptic", "image": self.images[self.next]}


def measure(call, reqs: Requests, repeats: int) -> dict[str, float]:
    call(reqs.click())  # the server sees the click's image first
    return {
        "click_ms": median_seconds(lambda: call(reqs.click()), repeats) * 1000,
        "image_ms": median_seconds(lambda: call(reqs.image()), repeats) * 1000,
    }


def throughput(url: str, reqs: Requests, clients: int, n: int) -> float:
    docs = [reqs.image() for _ in range(n)]
    post_json(url, docs[0])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda d: post_json(url, d), docs))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=96)
    p.add_argument("--json-out")
    args = p.parse_args(argv)

    from omg.env import apply_env_defaults
    from omg.inference import schema
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.checkpoint import save_checkpoint
    from omg.modeling.model import ModelConfig, build_model
    from omg.serve import ServeApp, make_server

    apply_env_defaults()
    work = Path(tempfile.mkdtemp(prefix="omgbs-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    out: dict[str, dict[str, float]] = {}
    try:
        torch.manual_seed(0)
        ckpt = str(work / "tiny.pt")
        label_space = {
            "names": [["circle"], ["square"], ["triangle"], ["star"], ["sky"], ["grass"]],
            "isthing": [True] * 4 + [False] * 2,
            "mappings": {},
            "class_agnostic": [],
        }
        save_checkpoint(
            build_model(ModelConfig.tiny()),
            ckpt,
            {"label_space": label_space, "test_size": [args.image_size, args.image_size]},
        )
        reqs = Requests(args.image_size, args.repeats * 2 + args.requests + 8)

        # the baseline: the same requests through the predictor, in process
        predictor = OMGPredictor.from_checkpoint(ckpt)
        clicked = predictor.set_image(schema.Request.from_json(reqs.click()).images[0])

        def in_process(doc):
            req = schema.Request.from_json(doc)
            if req.task == "interactive":  # a seen image: its features are kept (as the servers do)
                return schema.predict(predictor, req, clicked).to_json()
            return schema.predict(predictor, req).to_json()

        out["in-process"] = measure(in_process, reqs, args.repeats)
        print(
            f"in-process predictor   click {out['in-process']['click_ms']:7.1f} ms  "
            f"image {out['in-process']['image_ms']:7.1f} ms",
            flush=True,
        )

        # omg serve
        srv = make_server(ServeApp(OMGPredictor.from_checkpoint(ckpt)), "127.0.0.1", 0, quiet=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{srv.server_address[1]}/api/predict"
        out["omg serve"] = measure(lambda d: post_json(url, d), reqs, args.repeats)
        srv.shutdown()
        srv.server_close()

        # mlflow models serve (the pyfunc model, logged into a scratch store)
        import mlflow

        from omg_platform.tracking import log_pyfunc

        store = f"sqlite:///{work}/mlflow.db"
        mlflow.set_tracking_uri(store)
        exp = mlflow.create_experiment("bench", artifact_location=(work / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp):
            info = log_pyfunc(ckpt, register_as="omg-bench")
        port = free_port()
        bin_dir = str(Path(sys.executable).parent)
        env = dict(os.environ, MLFLOW_TRACKING_URI=store, PATH=f"{bin_dir}:{os.environ['PATH']}")
        procs.append(
            subprocess.Popen(
                [
                    f"{bin_dir}/mlflow",
                    "models",
                    "serve",
                    "-m",
                    f"models:/omg-bench/{info.registered_model_version}",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                env=env,
                start_new_session=True,
                stdout=open(work / "mlflow.log", "wb"),
                stderr=subprocess.STDOUT,
            )
        )
        wait_for(f"http://127.0.0.1:{port}/ping", procs[-1])
        url = f"http://127.0.0.1:{port}/invocations"
        out["mlflow pyfunc"] = measure(lambda d: post_json(url, {"inputs": [d]}), reqs, args.repeats)
        os.killpg(procs[-1].pid, signal.SIGTERM)
        procs[-1].wait(timeout=30)

        # Ray Serve: latency (1 replica), then throughput 1 vs 2 replicas, batching on vs off
        import ray
        from ray import serve

        from omg_platform.pipelines.serve import build_app

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}/api/predict"

        def deploy(replicas: int, batching: bool) -> None:
            serve.run(build_app(ckpt, replicas=replicas, batching=batching), name="omg-seg", route_prefix="/")
            wait_for(f"http://127.0.0.1:{port}/api/info", None)

        deploy(1, True)
        out["ray serve"] = measure(lambda d: post_json(url, d), reqs, args.repeats)
        rates = {}
        for replicas, batching in ((1, False), (1, True), (2, False), (2, True)):
            deploy(replicas, batching)
            rates[(replicas, batching)] = throughput(url, reqs, args.clients, args.requests)
            print(
                f"ray serve {replicas} replica(s), batching {'on ' if batching else 'off'}: "
                f"{rates[(replicas, batching)]:6.1f} requests/s ({args.clients} clients)",
                flush=True,
            )
        serve.shutdown()
        ray.shutdown()

        base = out["in-process"]
        for name in ("omg serve", "mlflow pyfunc", "ray serve"):
            o = out[name]
            print(
                f"{name:22s} click {o['click_ms']:7.1f} ms (x{o['click_ms'] / base['click_ms']:.2f} of in-process)  "
                f"image {o['image_ms']:7.1f} ms (x{o['image_ms'] / base['image_ms']:.2f})",
                flush=True,
            )
        scale = rates[(2, True)] / rates[(1, True)]
        batch = rates[(1, True)] / rates[(1, False)]
        batch2 = rates[(2, True)] / rates[(2, False)]
        print(f"ray serve 2 vs 1 replicas (batching on): x{scale:.2f} requests/s (target >= 1.6)")
        print(f"ray serve batching on vs off at {args.clients} clients: x{batch:.2f} (1 replica), x{batch2:.2f} (2)")
        if args.json_out:
            Path(args.json_out).write_text(
                json.dumps(
                    {
                        "latency_ms": out,
                        "requests_per_s": {f"{r}x{'batch' if b else 'single'}": v for (r, b), v in rates.items()},
                        "replicas_2_vs_1": scale,
                        "batching_on_vs_off": batch,
                    },
                    indent=1,
                )
            )
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
