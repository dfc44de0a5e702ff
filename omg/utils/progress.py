"""Progress output for long work: stage name, count, rate and ETA, on stderr.

On a terminal the line is rewritten in place; elsewhere (CI logs, Ray job logs) a
line is printed at most every ``min_interval`` seconds plus a final one, so logs stay
readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """``with Progress("synth images/train", total=300) as p: ... p.update()``."""

    def __init__(
        self,
        stage: str,
        total: int | None = None,
        unit: str = "it",
        stream: TextIO | None = None,
        min_interval: float = 2.0,
        enabled: bool = True,
    ):
        self.stage, self.total, self.unit = stage, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval = 0.1 if self.tty else min_interval
        self.count = 0
        self.start = time.monotonic()
        self._last = self.start  # first line after min_interval; short work prints only the final line
        self._extra = ""
        self._emitted_count = -1

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1, extra: str = "") -> None:
        self.count += n
        if extra:
            self._extra = extra
        now = time.monotonic()
        if now - self._last >= self.min_interval:
            self._last = now
            self._emit(final=False)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        parts = [f"[{self.stage}]"]
        if self.total:
            pct = 100.0 * self.count / self.total
            parts.append(f"{self.count}/{self.total} {self.unit} ({pct:.0f}%)")
        else:
            parts.append(f"{self.count} {self.unit}")
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0 and self.count < self.total:
            parts.append(f"ETA {format_duration((self.total - self.count) / rate)}")
        else:
            parts.append(f"elapsed {format_duration(elapsed)}")
        if self._extra:
            parts.append(self._extra)
        return " ".join(parts)

    def _emit(self, final: bool) -> None:
        if not self.enabled or (final and not self.tty and self._emitted_count == self.count):
            return
        self._emitted_count = self.count
        text = self.line()
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._emit(final=True)
        self.enabled = False
