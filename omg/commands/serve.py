"""``omg serve``: the interactive web demo for a checkpoint or for a model behind another server; its flags and
what reads them (the app itself: :mod:`omg.serve`)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from omg.env import DEMO_DATASETS, data_dir, runs_dir
from omg.utils.errors import describe
from omg.utils.log import get_logger

if TYPE_CHECKING:
    from omg.inference.schema import Limits

log = get_logger(__name__)


def cmd_serve(args: argparse.Namespace) -> int:
    from omg.serve import Limits, default_checkpoint, find_samples

    if args.backend and args.checkpoint:
        log.error("--backend serves another server's model; do not pass --checkpoint with it")
        return 2
    checkpoint = args.checkpoint or args.backend or default_checkpoint(runs_dir())
    if checkpoint is None:
        log.error(
            "no --checkpoint given and no trained model under "
            f"{runs_dir()}/train/ (run `make demo` first, or pass --checkpoint PATH)"
        )
        return 2
    # the samples: --samples, else the demo's omg-shapes (the full demo's, else the quick one's)
    roots = [args.samples] if args.samples else [os.path.join(data_dir(), name) for name in DEMO_DATASETS]
    data, samples = roots[0], {}
    for root in roots:
        samples = find_samples(root)
        if samples:
            data = root
            break
    if not samples:
        log.warning(
            f"no sample images under {data}/images/val or val_ov (an omg-shapes root; --samples ROOT): "
            "the page offers uploads only"
        )
    return serve(
        None if args.backend else checkpoint,
        args.host,
        args.port,
        samples,
        Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels),
        args.device,
        quiet=args.quiet,
        backend=args.backend,
    )


def serve(
    checkpoint: str | None,
    host: str,
    port: int,
    samples: dict[str, str],
    limits: Limits,
    device: str | None,
    quiet: bool = False,
    backend: str | None = None,
) -> int:
    """Serve the page and the API for ``checkpoint`` (loaded here) or for the model behind ``backend`` (the URL of
    ``mlflow models serve``'s ``/invocations`` or of a schema endpoint ``/api/predict``)."""
    from omg.inference.predictor import OMGPredictor
    from omg.inference.schema import RequestError
    from omg.serve import RemoteModel, ServeApp, make_server

    try:
        if backend:
            app = ServeApp(None, samples=samples, limits=limits, checkpoint=backend, remote=RemoteModel(backend))
        else:
            app = ServeApp(
                OMGPredictor.from_checkpoint(checkpoint, device=device),
                samples=samples,
                limits=limits,
                checkpoint=checkpoint,
            )
    except (FileNotFoundError, ValueError) as err:
        log.error(f"cannot load the checkpoint: {err}")
        return 2
    except RequestError as err:
        log.error(err)
        return 2
    checkpoint = backend or checkpoint
    try:
        server = make_server(app, host, port, quiet=quiet)
    except OSError as err:
        log.error(f"cannot listen on {host}:{port}: {describe(err)}")
        return 1
    url = f"http://{host}:{server.server_address[1]}/"
    log.info(f"omg serve: {checkpoint} with {len(samples)} sample image(s) at {url}  (Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(f"listening on {host}, reachable from other machines")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    srv = sub.add_parser(
        "serve",
        help="the interactive web demo: click or drag on an image, get masks with open-vocabulary labels",
        description="Start a web app on 127.0.0.1 (only loopback unless --host says otherwise) for a checkpoint: "
        "pick an omg-shapes sample or upload a PNG/JPEG, click points and drag boxes to get masks "
        "with open-vocabulary labels, or switch to panoptic / instance / semantic mode; download "
        "the masks (PNG) and the result (JSON). Uploads stay in memory: nothing is written to disk.",
    )
    srv.add_argument(
        "--checkpoint",
        help="model checkpoint: path, fsspec URI, or MLflow models:/NAME/VERSION "
        "(default: the newest runs/train/*/model.pt; after make demo, the demo model)",
    )
    srv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    srv.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1, loopback only)")
    srv.add_argument(
        "--samples",
        help="an omg-shapes root whose val images the page offers "
        "(default: $OMG_DATA_DIR/omg-shapes or runs/data/omg-shapes, else the quick demo's omg-shapes-quick)",
    )
    srv.add_argument("--max-bytes", type=int, default=8 * 1024 * 1024, help="upload size limit (default 8 MiB)")
    srv.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="upload pixel limit, checked before decoding (default 4096x4096)",
    )
    srv.add_argument(
        "--backend",
        metavar="URL",
        help="serve the page for a model behind another server instead of loading one: mlflow models "
        "serve's http://HOST:PORT/invocations, or a schema endpoint .../api/predict (the Ray Serve app)",
    )
    srv.add_argument("--device", help="torch device (default: the checkpoint loader's, cpu)")
    srv.add_argument("--quiet", action="store_true", help="no request log")
    srv.set_defaults(func=cmd_serve)
