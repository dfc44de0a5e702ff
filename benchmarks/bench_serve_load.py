"""`omg serve` under a burst of concurrent clients: ours vs the stdlib server, same app and handler.

    python benchmarks/bench_serve_load.py [--clients 200] [--rounds 3]

Baseline: ``http.server.ThreadingHTTPServer`` (what `omg serve` used before: a listen backlog of 5 and a
thread per connection) around the same ``ServeApp`` and request handler. Ours: ``omg.serve.make_server``
(a backlog of 1024, a bounded worker pool, 503 + Retry-After when saturated). Each round releases
``--clients`` clients at once (half GET /api/info, half clicks on one uploaded image) and counts the
answers, the connections reset or timed out, and the latency of the answered ones. A tiny model with
random weights (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import threading
import time
from http.server import ThreadingHTTPServer

import numpy as np
import torch
from PIL import Image


def burst(port: int, image_id: str, clients: int, timeout: float) -> tuple[int, int, list[float]]:
    """-> (answered, failed, latencies in ms of the answered)."""
    lock, barrier = threading.Lock(), threading.Barrier(clients)
    answered, failed, ms = [0], [0], []

    def client(i: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            if i % 2:
                conn.request("GET", "/api/info")
            else:
                conn.request(
                    "POST",
                    "/api/prompt",
                    body=json.dumps({"image_id": image_id, "prompts": [{"point": [10 + i % 40, 20]}]}),
                    headers={"Content-Type": "application/json"},
                )
            conn.getresponse().read()
            with lock:
                answered[0] += 1
                ms.append((time.perf_counter() - t0) * 1000)
        except OSError:  # reset, refused, timed out
            with lock:
                failed[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answered[0], failed[0], ms


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout in seconds")
    args = p.parse_args(argv)
    from omg.env import apply_env_defaults
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.model import ModelConfig, build_model
    from omg.serve.app import ServeApp
    from omg.serve.server import Handler, make_server

    apply_env_defaults()
    torch.manual_seed(0)
    predictor = OMGPredictor(
        build_model(ModelConfig.tiny()),
        {
            "label_space": {
                "names": [["circle"], ["sky"]],
                "isthing": [True, False],
                "mappings": {},
                "class_agnostic": [],
            },
            "test_size": [64, 64],
        },
    )
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")

    def stdlib(app):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Handler,), {"app": app, "quiet": True}))
        srv.daemon_threads = True
        return srv

    results = {}
    for label, factory in (
        ("stdlib ThreadingHTTPServer (baseline)", stdlib),
        ("omg serve", lambda app: make_server(app, "127.0.0.1", 0, quiet=True)),
    ):
        app = ServeApp(predictor)
        srv = factory(app)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.server_address[1]
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/api/image", body=png.getvalue(), headers={"Content-Type": "image/png"})
        image_id = json.loads(conn.getresponse().read())["image_id"]
        answered = failed = 0
        all_ms: list[float] = []
        for r in range(args.rounds):
            a, f, ms = burst(port, image_id, args.clients, args.timeout)
            answered, failed, all_ms = answered + a, failed + f, all_ms + ms
            print(f"{label}: round {r}: {a}/{args.clients} answered, {f} reset or timed out", flush=True)
        srv.shutdown()
        srv.server_close()
        p50, p95 = (np.percentile(all_ms, 50), np.percentile(all_ms, 95)) if all_ms else (float("nan"),) * 2
        results[label] = answered / (answered + failed)
        print(
            f"{label}: {answered}/{answered + failed} answered, {failed} failed; latency p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms",
            flush=True,
        )
    base, ours = results["stdlib ThreadingHTTPServer (baseline)"], results["omg serve"]
    print(f"answered fraction: omg serve {ours:.3f} vs stdlib {base:.3f} (ratio {ours / max(base, 1e-9):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
