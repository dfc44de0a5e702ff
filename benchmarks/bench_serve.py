"""`omg serve` round trips over loopback HTTP vs the same predictor calls in process (the baseline).

    python benchmarks/bench_serve.py [--image-size 128] [--repeats 20] [--refinement]

A tiny model with random weights (latency does not depend on them) behind the real server
(`omg.serve.make_server`, in a thread). Measures the median of ``--repeats`` of: an image upload
(PNG decode + backbone: features once per image), one click prompt (decoder on cached features +
PNG overlay + JSON), a click with an open-vocabulary label, and a panoptic switch; and the same
predictor calls without HTTP. The ratio is the server's overhead. ``--refinement``: the model takes corrections
(docs/model.md §7.3), and one more row: the tenth click on an object whose first nine the server answered before
(the warm-up call replays all ten; the image's state keeps each click's answer, so the repeats cost one pass).
The browser adds drawing the overlay; tests/test_browser.py records that full round trip
(tests/artifacts/serve_latency.json).
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import urllib.request

import numpy as np
import torch
from common import median_seconds, write_figures
from PIL import Image


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after a warm-up."""
    return median_seconds(fn, repeats) * 1000


def post(url: str, body: bytes, ctype: str) -> dict:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json-out", help="also write the figures to this JSON file")
    p.add_argument("--refinement", action="store_true", help="a model with refinement, and the tenth-click row")
    args = p.parse_args(argv)
    from omg.inference.predictor import OMGPredictor
    from omg.modeling.model import ModelConfig, build_model
    from omg.serve import Limits, ServeApp, make_server

    torch.manual_seed(0)
    s = args.image_size
    image = np.random.default_rng(0).integers(0, 255, (s, s, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    png = buf.getvalue()
    meta = {
        "label_space": {
            "names": [["circle"], ["square"], ["triangle"], ["star"], ["sky"], ["grass"]],
            "isthing": [True, True, True, True, False, False],
            "mappings": {},
            "class_agnostic": [],
        },
        "test_size": [s, s],
    }
    pred = OMGPredictor(build_model(ModelConfig.tiny("tiny_convnext", refinement=args.refinement)), meta)
    app = ServeApp(pred, limits=Limits(), checkpoint="random tiny_convnext")
    server = make_server(app, "127.0.0.1", 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    point = [s * 0.4, s * 0.6]
    # ten clicks on one object, alternating positive and negative around the first
    ring = [[s * (0.4 + 0.05 * np.cos(k)), s * (0.6 + 0.05 * np.sin(k)), k % 2] for k in range(10)]
    ring[0] = [*point, 1]
    vocab = "circle, disc\nsquare, box\ntriangle\nstar\nhexagon\ncross"
    try:
        image_id = post(f"{url}/api/image", png, "image/png")["image_id"]
        click = json.dumps({"image_id": image_id, "prompts": [{"point": point}]}).encode()
        click_v = json.dumps({"image_id": image_id, "prompts": [{"point": point}], "vocabulary": vocab}).encode()
        pan = json.dumps({"image_id": image_id, "task": "panoptic"}).encode()
        http = {
            "upload_ms": timed(lambda: post(f"{url}/api/image", png, "image/png"), max(3, args.repeats // 4)),
            "click_ms": timed(lambda: post(f"{url}/api/prompt", click, "application/json"), args.repeats),
            "click_vocab_ms": timed(lambda: post(f"{url}/api/prompt", click_v, "application/json"), args.repeats),
            "panoptic_ms": timed(lambda: post(f"{url}/api/segment", pan, "application/json"), args.repeats),
        }
        if args.refinement:
            tenth = json.dumps({"image_id": image_id, "prompts": [{"clicks": ring}]}).encode()
            http["click10_ms"] = timed(lambda: post(f"{url}/api/prompt", tenth, "application/json"), args.repeats)
    finally:
        server.shutdown()
        server.server_close()
    pred.set_image(image)
    pts = np.array([point])
    direct = {
        "upload_ms": timed(lambda: pred.set_image(image), max(3, args.repeats // 4)),
        "click_ms": timed(lambda: pred.predict("interactive", points=pts), args.repeats),
        "click_vocab_ms": timed(
            lambda: pred.predict("interactive", points=pts, vocabulary=vocab.split("\n")), args.repeats
        ),
        "panoptic_ms": timed(lambda: pred.predict("panoptic"), args.repeats),
    }
    if args.refinement:
        from omg.inference.predictor import ObjectPrompt

        obj = ObjectPrompt([c[:2] for c in ring], [c[2] for c in ring])
        direct["click10_ms"] = timed(lambda: pred.predict("interactive", objects=[obj]), args.repeats)
    model = "tiny_convnext" + (" with refinement" if args.refinement else "")
    print(f"CPU, {torch.get_num_threads()} threads, {model}, image {s}x{s}; median of {args.repeats}")
    print(f"{'round trip':16s} {'HTTP (omg serve)':>18s} {'in process':>12s} {'ratio':>7s}")
    figures = {}
    for k in http:
        print(f"{k[:-3]:16s} {http[k]:15.1f} ms {direct[k]:9.1f} ms {http[k] / direct[k]:6.2f}x")
        figures[f"http_{k}"] = round(http[k], 2)
        figures[f"direct_{k}"] = round(direct[k], 2)
    write_figures(args.json_out, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
