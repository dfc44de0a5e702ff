"""Small fsspec helpers: every reader and writer takes a local path or any fsspec URI."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import uuid
from typing import Any, Iterable

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
    """Write ``data``. On a local disk atomically: a temp file beside the target, then a rename; the temp
    file is removed when the write fails, and the ``OSError`` (a full or read-only disk) names the target.
    A target that exists but is not a regular file (``/dev/stdout``, ``/dev/null``, a FIFO) is written in
    place, never replaced by a file."""
    write_chunks(uri, [data])


def write_chunks(uri: str, chunks: Iterable[bytes]) -> None:
    """:func:`write_bytes` of the concatenated ``chunks``, written as they come (a large file in bounded memory)."""
    fs, path = fs_and_path(uri)
    if not isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            for c in chunks:
                f.write(c)
        return
    try:
        _write_local(path, chunks)
    except OSError as err:
        if err.filename is None and err.errno is not None:  # a failed write(2) names no file: name ours
            raise OSError(err.errno, err.strerror, path) from err
        raise


def _write_local(path: str, chunks: Iterable[bytes]) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", path)
    if os.path.exists(path) and not os.path.isfile(path):  # a device, FIFO or socket: write through it
        with open(path, "wb") as f:
            for c in chunks:
                f.write(c)
        return
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:  # the umask's permissions, unlike mkstemp's 0600
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(uri: str) -> Any:
    """Parse a JSON file; invalid JSON raises ``ValueError`` naming the file, line and column."""
    try:
        return json.loads(read_bytes(uri).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{uri}: not valid JSON ({err})") from None


def dumps_json(obj: Any) -> bytes:
    """Deterministic compact JSON (same object -> same bytes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, dumps_json(obj))


def sizes(uri: str) -> dict[str, int]:
    """``{base name: size in bytes}`` of the files directly in a directory."""
    fs, path = fs_and_path(uri)
    return {os.path.basename(e["name"].rstrip("/")): int(e["size"]) for e in fs.ls(path, detail=True)
            if e.get("type") == "file"}


def remove_tree(uri: str) -> None:
    """Remove a directory and everything in it (no error if it is already gone)."""
    fs, path = fs_and_path(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


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


JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_image(data: bytes, source: str = "<bytes>") -> tuple[int, int]:
    """Decode an image fully and strictly; -> (height, width). Anything damaged raises ``ValueError``
    naming ``source``.

    Pillow decodes a JPEG with garbage bytes mid-stream without a word (libjpeg only warns), so a JPEG
    is decoded by libjpeg-turbo (simplejpeg) with its warnings as errors: corrupt entropy data,
    extraneous bytes, a premature end. A PNG's chunk CRCs (IDAT included) are verified, then it is
    decoded. Other formats get Pillow's full decode (which catches truncation).
    """
    try:
        if data.startswith(JPEG_MAGIC):
            import simplejpeg

            colorspace = simplejpeg.decode_jpeg_header(data)[2]
            rgb = simplejpeg.decode_jpeg(data, colorspace="CMYK" if colorspace == "CMYK" else "RGB", strict=True)
            return int(rgb.shape[0]), int(rgb.shape[1])
        if data.startswith(PNG_MAGIC):
            Image.open(io.BytesIO(data)).verify()
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.height, img.width
    except Exception as err:  # PIL and simplejpeg raise many types
        raise ValueError(f"{source}: cannot decode image: {err}") from err


def image_size(data: bytes, source: str = "<bytes>") -> tuple[int, int]:
    """(height, width) from an image's header, without decoding its pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.height, img.width
    except Exception as err:  # PIL raises many types
        raise ValueError(f"{source}: cannot read the image header ({err})") from None


def decode_image(data: bytes, source: str = "<bytes>") -> Image.Image:
    """:func:`check_image`, then the decoded Pillow image."""
    check_image(data, source)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as err:
        raise ValueError(f"{source}: cannot decode image: {err}") from err
    return img


#: the most pixels (width x height) an image may have before it is decoded, in ``omg predict`` and ``omg serve``
MAX_PIXELS = 4096 * 4096


class ImageTooLarge(ValueError):
    """An image whose header announces more pixels than allowed (decompression bombs never decode)."""


def decode_rgb(data: bytes, source: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image bytes -> H x W x 3 uint8 RGB. The size is read from the header first: more than ``max_pixels``
    raises :class:`ImageTooLarge` before any pixel is decoded (a 17 KB PNG can announce 12000 x 12000);
    an unreadable or truncated file raises ``ValueError``; both name ``source``."""
    import warnings

    try:
        with warnings.catch_warnings():  # our own pixel cap below is the rule, not PIL's default
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(f"{source}: refused as a decompression bomb ({err})") from None
    except Exception as err:  # PIL raises many types
        raise ValueError(f"{source}: cannot read the image header ({err})") from None
    if w * h > max_pixels:
        raise ImageTooLarge(f"{source}: image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels "
                            "(checked before decoding; raise the limit with --max-pixels)")
    try:
        img.load()  # a truncated file raises (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
        return np.asarray(img.convert("RGB"))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{source}: cannot decode the image ({err})") from None
