"""Small fsspec helpers: every reader and writer takes a local path or any fsspec URI.

On object storage (any protocol but the local disk) every operation here is retried while the store is
unreachable or answers with a transient error, for up to ``$OMG_STORAGE_RETRY_SECONDS`` (default 60) in all,
and an error that remains names the operation and the URI (:class:`StorageError`): "cannot write
s3://bucket/runs/x/state.pt: ...". A protocol whose fsspec package is missing is said in one line with the
install command (:class:`MissingDependency`). Listings and existence checks on object storage are never
answered from fsspec's listing cache: another node may have written since.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import time
import uuid
from typing import Any, Callable, Iterable, TypeVar

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

T = TypeVar("T")

#: the fsspec package each object-store protocol needs (the ``cluster`` extra installs s3fs)
PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "hf": "huggingface_hub",
}


class MissingDependency(ImportError):
    """A URI whose protocol needs a package that is not installed; the message says which and how to install it."""


class StorageError(OSError):
    """An operation on object storage that failed (after retries, when the failure looked transient); ``filename``
    is the URI and ``strerror`` says the operation and the cause."""


def fs_and_path(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(str(uri))
    except ImportError:
        proto = str(uri).split("://", 1)[0]
        pkg = PROTOCOL_PACKAGES.get(proto, f"the fsspec implementation of {proto}://")
        extra = " ('omg[cluster]' installs it)" if pkg == "s3fs" else ""
        raise MissingDependency(
            f"{uri}: the {proto}:// protocol needs {pkg}, which is not installed: pip install {pkg}{extra}"
        ) from None
    return fs, path


def is_remote(fs: fsspec.AbstractFileSystem) -> bool:
    return not isinstance(fs, LocalFileSystem)


def retry_seconds() -> float:
    """How long an object-store operation is retried in all (``$OMG_STORAGE_RETRY_SECONDS``, default 60)."""
    try:
        return max(0.0, float(os.environ.get("OMG_STORAGE_RETRY_SECONDS", "60")))
    except ValueError:
        return 60.0


#: errnos that object-store clients use for a failure worth retrying (s3fs: EREMOTEIO for 5xx answers)
_TRANSIENT_ERRNOS = {
    errno.EREMOTEIO,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EPIPE,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
}
#: exception types (by name, from botocore, aiohttp, fsspec, asyncio) of a store that could not be reached
_TRANSIENT_TYPES = {
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionError",
    "ClientConnectorError",
    "ClientConnectionError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ClientOSError",
    "FSTimeoutError",
    "TimeoutError",
    "IncompleteRead",
    "ResponseStreamingError",
    "HTTPClientError",
    "ProxyConnectionError",
}


def _transient(err: BaseException) -> bool:
    if isinstance(
        err,
        (
            FileNotFoundError,
            PermissionError,
            IsADirectoryError,
            NotADirectoryError,
            FileExistsError,
            MissingDependency,
            StorageError,
        ),
    ):
        return False
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS:
        return True
    return any(c.__name__ in _TRANSIENT_TYPES for c in type(err).__mro__)


def _cause(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def storage_op(op: str, uri: str, fn: Callable[[], T], retry: bool = True) -> T:
    """``fn()``, an operation ``op`` ("read", "write", "list", ...) on ``uri`` in object storage: retried with
    backoff while it fails transiently (:func:`retry_seconds` in all); a failure that remains raises
    :class:`StorageError` naming the operation and the URI (``FileNotFoundError`` and ``PermissionError`` keep
    their type, with the URI). On the local disk ``fn`` runs once, as it is."""
    deadline = time.monotonic() + (retry_seconds() if retry else 0.0)
    delay, attempts, t0 = 0.5, 0, time.monotonic()
    while True:
        attempts += 1
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
            raise type(err)(err.errno or errno.EIO, f"cannot {op}: {_cause(err)}", uri) from None
        except (MissingDependency, StorageError):
            raise
        except Exception as err:
            if _transient(err) and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
            tried = f" ({attempts} attempt{'s' if attempts > 1 else ''} over {time.monotonic() - t0:.0f} s)"
            raise StorageError(code, f"cannot {op}: {_cause(err)}{tried}", uri) from err


def _remote(
    uri: str, op: str, fn: Callable[[fsspec.AbstractFileSystem, str], T], fresh: bool = False, retry: bool = True
) -> T:
    """``fn(fs, path)`` on ``uri``: through :func:`storage_op` on object storage (``fresh``: its listing cache
    dropped first), directly on the local disk."""
    fs, path = fs_and_path(uri)
    if not is_remote(fs):
        return fn(fs, path)

    def call():
        if fresh:
            fs.invalidate_cache(path)
        return fn(fs, path)

    return storage_op(op, str(uri), call, retry)


def join(base: str, *parts: str) -> str:
    out = str(base)
    for p in parts:
        out = out.rstrip("/") + "/" + str(p).lstrip("/")
    return out


def exists(uri: str) -> bool:
    return _remote(uri, "check", lambda fs, path: fs.exists(path), fresh=True)


def read_bytes(uri: str) -> bytes:
    def read(fs, path):
        with fs.open(path, "rb") as f:
            return f.read()

    return _remote(uri, "read", read)


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data``. On a local disk atomically: a temp file beside the target, then a rename; the temp
    file is removed when the write fails, and the ``OSError`` (a full or read-only disk) names the target.
    A target that exists but is not a regular file (``/dev/stdout``, ``/dev/null``, a FIFO) is written in
    place, never replaced by a file."""
    write_chunks(uri, [data])


def write_chunks(uri: str, chunks: Iterable[bytes]) -> None:
    """:func:`write_bytes` of the concatenated ``chunks``, written as they come (a large file in bounded memory)."""
    fs, path = fs_and_path(uri)
    if is_remote(fs):

        def write(fs, path):
            parent = os.path.dirname(path)
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(path, "wb") as f:
                for c in chunks:
                    f.write(c)

        # bytes in memory can be written again; an iterator's chunks cannot be read twice
        _remote(uri, "write", write, retry=isinstance(chunks, (list, tuple)))
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
    return _remote(
        uri,
        "list",
        lambda fs, path: {
            os.path.basename(e["name"].rstrip("/")): int(e["size"])
            for e in fs.ls(path, detail=True)
            if e.get("type") == "file"
        },
        fresh=True,
    )


def remove_tree(uri: str) -> None:
    """Remove a directory and everything in it (no error if it is already gone)."""

    def remove(fs, path):
        if fs.exists(path):
            fs.rm(path, recursive=True)

    _remote(uri, "remove", remove, fresh=True)


def listdir(uri: str) -> list[str]:
    """Sorted base names of the entries of a directory."""
    return [name for name, _ in entries(uri)]


def entries(uri: str) -> list[tuple[str, bool]]:
    """Sorted (base name, is a folder) of the entries of a directory, from one listing (on object storage a
    folder is a prefix with objects under it)."""

    def ls(fs, path):
        listed = fs.ls(path, detail=True)
        return sorted((os.path.basename(e["name"].rstrip("/")), e.get("type") == "directory") for e in listed)

    return _remote(uri, "list", ls, fresh=True)


def count_files(uri: str) -> int:
    """Files under the folder ``uri``, at any depth (0 when it does not exist)."""
    return _remote(uri, "list", lambda fs, path: len(fs.find(path)) if fs.exists(path) else 0, fresh=True)


def isdir(uri: str) -> bool:
    """A folder (on object storage: a prefix with objects under it)."""
    return _remote(uri, "check", lambda fs, path: fs.isdir(path), fresh=True)


def expand(pattern: str) -> list[str]:
    """Sorted URIs (with ``pattern``'s protocol) of the files a glob names, e.g. ``s3://b/clips/cat/*.jpg``."""
    fs, path = fs_and_path(pattern)
    found = _remote(pattern, "list", lambda fs, path: fs.glob(path), fresh=True)
    if not is_remote(fs):
        return sorted(found)
    proto = str(pattern).split("://", 1)[0]
    return sorted(f"{proto}://{p}" for p in found)


def glob(uri: str, pattern: str) -> list[str]:
    """Sorted URIs (with ``uri``'s protocol) of the files under ``uri`` that match ``pattern`` (``**`` allowed)."""
    fs, root = fs_and_path(uri)
    found = _remote(uri, "list", lambda fs, path: fs.glob(f"{path.rstrip('/')}/{pattern}"), fresh=True)
    if not is_remote(fs):
        return sorted(found)
    prefix, base = str(uri).rstrip("/"), root.rstrip("/")
    return sorted(prefix + p[len(base) :] for p in found)


def put_tree(local_dir: str, uri: str) -> None:
    """Copy the local folder ``local_dir`` (recursively) to the folder ``uri``, on object storage or on this disk."""
    fs, path = fs_and_path(uri)
    if not is_remote(fs):
        import shutil

        shutil.copytree(local_dir, path, dirs_exist_ok=True)
        return
    storage_op("write", str(uri), lambda: fs.put(local_dir.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True))


@contextlib.contextmanager
def local_file(uri: str, suffix: str = ""):
    """A local path holding ``uri``'s bytes for the duration of the block: the path itself on the local disk, a
    temporary copy of an object-store file (for libraries that take only local files, e.g. MLflow's
    ``log_artifact``)."""
    fs, path = fs_and_path(uri)
    if not is_remote(fs):
        yield path
        return
    import shutil
    import tempfile

    def copy():
        with fs.open(path, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)

    with tempfile.TemporaryDirectory(prefix="omg-local-") as tmp:
        local = os.path.join(tmp, os.path.basename(path.rstrip("/")) or f"file{suffix}")
        storage_op("read", str(uri), copy)
        yield local


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
    except Exception as err:  # noqa: BLE001 - PIL raises many types
        raise _header_error(source, data, err) from None


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


def _header_error(source: str, data: bytes, err: Exception) -> ValueError:
    """Why an image header cannot be read, in words (PIL names a file it cannot identify by its BytesIO object)."""
    if isinstance(err, Image.UnidentifiedImageError):
        return ValueError(
            f"{source}: cannot read the image header: not a PNG, JPEG, BMP or WebP image ({len(data)} bytes that no "
            "image format opens)"
        )
    return ValueError(f"{source}: cannot read the image header ({err})")


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
    except Exception as err:  # noqa: BLE001 - PIL raises many types
        raise _header_error(source, data, err) from None
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{source}: image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels "
            "(checked before decoding; raise the limit with --max-pixels)"
        )
    try:
        img.load()  # a truncated file raises (ImageFile.LOAD_TRUNCATED_IMAGES stays False)
        return np.asarray(img.convert("RGB"))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{source}: cannot decode the image ({err})") from None
