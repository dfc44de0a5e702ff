"""`omg serve`: the interactive web demo (see :mod:`omg.serve.app`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omg.inference.schema import Limits
from omg.serve.app import ServeApp
from omg.serve.remote import RemoteModel
from omg.serve.server import make_server
from omg.utils import io as uio
from omg.utils.errors import describe

__all__ = ["Limits", "RemoteModel", "ServeApp", "make_server", "default_checkpoint", "find_samples", "serve"]


def default_checkpoint(runs_dir: str) -> str | None:
    """The newest model a training run exported under ``runs_dir/train/<run>/model.pt`` (after ``make demo``: the
    demo model), or None."""
    models = [p for p in (Path(runs_dir) / "train").glob("*/model.pt") if p.is_file()]
    return str(max(models, key=lambda p: p.stat().st_mtime)) if models else None


def find_samples(data_dir: str | None, limit: int = 24) -> dict[str, str]:
    """``{name: URI}`` of omg-shapes validation images under ``data_dir`` (a path or any fsspec URI): the page's
    sample picker. A root without ``images/val`` gives none."""
    if not data_dir:
        return {}
    folder = uio.join(data_dir, "images", "val")
    if not uio.exists(folder):
        return {}
    files = [n for n in uio.listdir(folder) if os.path.splitext(n)[1].lower() in (".jpg", ".jpeg", ".png")][:limit]
    return {os.path.splitext(n)[0]: uio.join(folder, n) for n in files}


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
    from omg.serve.app import RequestError

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
        print(f"omg serve: error: cannot load the checkpoint: {err}", file=sys.stderr, flush=True)
        return 2
    except RequestError as err:
        print(f"omg serve: error: {err}", file=sys.stderr, flush=True)
        return 2
    checkpoint = backend or checkpoint
    try:
        server = make_server(app, host, port, quiet=quiet)
    except OSError as err:
        print(f"omg serve: error: cannot listen on {host}:{port}: {describe(err)}", file=sys.stderr, flush=True)
        return 1
    url = f"http://{host}:{server.server_address[1]}/"
    print(f"omg serve: {checkpoint} with {len(samples)} sample image(s) at {url}  (Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"omg serve: warning: listening on {host}, reachable from other machines", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
