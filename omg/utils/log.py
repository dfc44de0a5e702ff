"""Logging with levels, in place of prints.

Every module logs through ``log = get_logger(__name__)``: ``log.info`` for what a person follows (progress lines,
what was written), ``log.warning`` for what they should know, ``log.error`` for why a command stops. The library
configures nothing (Python's convention: an application decides); the ``omg`` command, every pipeline's ``main``
and every Ray Train worker call :func:`setup` once, which writes the records of the ``omg`` and ``omg_platform``
loggers to stderr as a person reads them:

    [train] step 6/6 (100%) loss 74.396 ...          INFO, as it is
    omg predict: warning: ...                        WARNING, prefixed with the program
    omg predict: error: image.png: ...               ERROR, prefixed with the program (the last line a user sees)
    preprocess: interrupted; the shards ...          an interrupt (:func:`interrupted`), what it left behind

The level is ``$OMG_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; default INFO) unless the caller gives one (``--quiet``:
WARNING). In a distributed worker (``rank`` given) rank 0 logs at that level and every other rank only warnings
and errors, each line prefixed with ``(rank N)``, so a job's log holds one copy of each progress line.
"""

from __future__ import annotations

import logging
import os
import sys

#: the loggers :func:`setup` configures: the library's and the platform's
ROOTS = ("omg", "omg_platform")


def get_logger(name: str) -> logging.Logger:
    """The logger of a module (``__name__``); a script run as ``__main__`` logs as ``omg_platform.<script>``."""
    if name == "__main__":
        name = "omg_platform." + os.path.splitext(os.path.basename(sys.argv[0] or "main"))[0]
    return logging.getLogger(name)


class _Format(logging.Formatter):
    def __init__(self, prog: str, rank: int | None):
        super().__init__()
        self.prog, self.rank = prog, rank

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        prog = getattr(record, "prog", None) or self.prog
        if getattr(record, "interrupted", False):
            msg = f"{prog}: interrupted; {msg}"
        elif record.levelno >= logging.ERROR:
            msg = f"{prog}: error: {msg}"
        elif record.levelno >= logging.WARNING:
            msg = f"{prog}: warning: {msg}"
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        if self.rank:
            msg = "\n".join(f"(rank {self.rank}) {line}" for line in msg.splitlines())
        return msg


class _Stderr(logging.StreamHandler):
    """A handler that writes to the ``sys.stderr`` of the moment (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)
        self.flush()


def interrupted(logger: logging.Logger, message: str, prog: str | None = None) -> None:
    """``<prog>: interrupted; <message>``: how a command stopped by Ctrl-C or SIGTERM says what it left behind
    (a warning: kept at any level but ERROR)."""
    logger.warning(message, extra={"interrupted": True, **({"prog": prog} if prog else {})})


def level_from_env(default: int = logging.INFO) -> int:
    name = os.environ.get("OMG_LOG_LEVEL", "").strip().upper()
    if not name:
        return default
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"OMG_LOG_LEVEL={name!r}: expected one of DEBUG, INFO, WARNING, ERROR")
    return level


def configured() -> bool:
    """Whether :func:`setup` has run in this process."""
    return any(isinstance(h, _Stderr) for h in logging.getLogger(ROOTS[1]).handlers)


def setup(prog: str, level: int | None = None, rank: int | None = None) -> None:
    """Send the ``omg`` and ``omg_platform`` loggers' records to stderr, formatted for ``prog`` (the name that
    prefixes warnings and errors: ``"omg predict"``, ``"preprocess"``). Calling it again replaces the setup."""
    level = level_from_env() if level is None else level
    if rank:
        level = max(level, logging.WARNING)
    handler = _Stderr()
    handler.setFormatter(_Format(prog, rank))
    for name in ROOTS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
