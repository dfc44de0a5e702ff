"""An error in words a user can act on: one line, naming the file, record and field, or errno and path."""

from __future__ import annotations

import errno as errno_mod
import os


def describe(err: BaseException) -> str:
    """``BadRecord`` and ``SchemaError`` say file/record/field themselves; an ``OSError`` gets its errno name
    and path (one raised with a message alone, e.g. ``FileNotFoundError(f"{uri}: ...")``, is that message); anything
    else its type and message (first line: Ray appends tracebacks to messages)."""
    if isinstance(err, OSError) and err.errno is not None:
        name = errno_mod.errorcode.get(err.errno, str(err.errno))
        path = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or os.strerror(err.errno)} [{name}]{path}"
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(err, OSError) and first:  # raised with a message of ours (no errno): it names the file itself
        return first
    if type(err).__name__ in ("BadRecord", "SchemaError", "CatalogError", "TaskFailed", "MissingDependency"):
        return first
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
