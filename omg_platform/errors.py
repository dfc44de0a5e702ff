"""How the pipelines end: the cause of a failure as the last line the user sees, and a clean interrupt.

Ray wraps an exception raised inside a task or actor (``RayTaskError``, Ray Data's
``UserCodeException``, Ray Train's ``TrainingFailedError``) and prints the worker's traceback
on the way; a user wants the cause: the file, record and field of a bad record, the errno and
path of an I/O error. :func:`root_cause` unwraps, :func:`describe` words it, :func:`fail` prints
it as the last line. :func:`interruptible` turns SIGTERM into ``KeyboardInterrupt`` so Ctrl-C and
``kill`` take the same clean way out (no traceback, no native stack dump).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

from omg.utils import log as logs
from omg.utils.errors import describe

__all__ = ["TaskFailed", "UsageError", "describe", "fail", "interruptible", "root_cause", "usage_error"]


class UsageError(Exception):
    """A mistake in what the user asked for (a config key, a path, a name, a flag): said as ``<prog>: error:
    <message>`` with exit status 2 (:func:`usage_error`), before anything starts."""


def usage_error(prog: str, err: BaseException) -> int:
    """Say ``<prog>: error: <message>`` on stderr and return 2 (the usage-error status of every entry point)."""
    _error(prog, err)
    return 2


def _error(prog: str, message) -> None:
    """``<prog>: error: <message>`` as the last line on stderr (after whatever stdout holds)."""
    sys.stdout.flush()
    if not logs.configured():  # a main that did not set logging up still says it the same way
        logs.setup(prog)
    logs.get_logger(__name__).error(message, extra={"prog": prog})


class TaskFailed(Exception):
    """A task's failure carried back as words (:func:`describe` of its cause): Ray Data loses an
    exception's ``__cause__`` on the way to the driver, so tasks we write return what went wrong instead."""


def root_cause(err: BaseException) -> BaseException:
    """The exception behind Ray's wrappers (a task's ``.cause``, Ray Train's ``worker_failures``, the
    ``__cause__`` of any ``ray.*`` exception); a non-Ray exception is its own cause."""
    for _ in range(32):
        inner = getattr(err, "cause", None)
        failures = getattr(err, "worker_failures", None)
        if isinstance(inner, BaseException):
            err = inner
        elif isinstance(failures, dict) and failures:
            err = next(iter(failures.values()))
        elif _is_ray(err) and err.__cause__ is not None:
            err = err.__cause__
        else:
            break
    return err


def _is_ray(err: BaseException) -> bool:
    return any(c.__module__.startswith("ray.") for c in type(err).__mro__)


def fail(prog: str, err: BaseException, code: int = 1) -> int:
    """Say ``<prog>: error: <cause>`` on stderr as the last line and return ``code``."""
    _error(prog, describe(root_cause(err)))
    return code


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (``KeyboardInterrupt``) inside the block, on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
