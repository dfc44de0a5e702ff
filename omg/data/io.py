"""Small fsspec helpers: every reader and writer takes a local path or any fsspec URI."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np
from PIL import Image


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(str(uri))
    return fs, path


def join(base: str, *parts: str) -> str:
    out = str(base)
    for p in parts:
        out = out.rstrip("/") + "/" + str(p).lstrip("/")
    return out


def exists(uri: str) -> bool:
    fs, path = fs_and_path(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = fs_and_path(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data``; on a local disk atomically (temp file + rename)."""
    fs, path = fs_and_path(uri)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def dumps_json(obj: Any) -> bytes:
    """Deterministic compact JSON (same object -> same bytes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, dumps_json(obj))


def listdir(uri: str) -> list[str]:
    """Sorted base names of the entries of a directory."""
    fs, path = fs_and_path(uri)
    return sorted(os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def encode_png(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """PNG bytes of a uint8 H x W (grey, or palette-indexed when ``palette`` is given) or H x W x 3 array."""
    img = Image.fromarray(array)
    if palette is not None:
        img.putpalette(palette)  # turns an "L" image into a "P" (indexed) one
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes, source: str = "<bytes>") -> Image.Image:
    """Decode and fully load an image; a truncated or unreadable file raises ``ValueError`` naming ``source``."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:  # PIL raises many types
        raise ValueError(f"{source}: cannot decode image: {err}") from err
    return img
