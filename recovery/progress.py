"""Signs of life for long steps (a 20 GB dump, 100 GB of uploads): minutes with no output look hung.

    with Progress("uploads_20240101.tar.gz read", total=size, poll=lambda: reader_position()):
        ...  # the work; a thread looks at poll() now and then

The work itself is never slowed: nothing is counted in its loops; a thread reads `poll()` (a file
offset, a counter) every tick. On a terminal the thread draws a tqdm bar (when tqdm is installed);
elsewhere (a journal, a log file, CI) it logs one plain line every INTERVAL seconds: done, of what
total, the rate and the time left at that rate; and one when the block ends (where it got to).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

log = logging.getLogger(__name__)

INTERVAL = 30.0  # seconds between two plain lines (not a terminal)
TERMINAL_TICK = 0.5  # seconds between two redraws of the bar


def _size(value: float, unit: str) -> str:
    if unit != "B":
        return f"{value:,.0f} {unit}"
    for name in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or name == "TB":
            return f"{value:.0f} {name}" if name == "B" else f"{value:.1f} {name}"
        value /= 1000
    return ""  # unreachable


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def plain_line(what: str, done: float, total: float | None, unit: str, elapsed: float) -> str:
    """One line of progress: '<what>: 1.2 GB of 20.0 GB (6%), 35.0 MB/s, 9m05s left'."""
    line = f"{what}: {_size(done, unit)}"
    if total:
        line += f" of {_size(total, unit)} ({min(done / total, 1):.0%})"
    rate = done / elapsed if elapsed > 0 else 0.0
    if rate > 0:
        line += f", {_size(rate, unit)}/s"
        if total and total > done:
            line += f", {_duration((total - done) / rate)} left"
    return line + f" ({_duration(elapsed)} so far)"


class Progress:
    """A thread that shows how far `poll()` is, until the block ends."""

    def __init__(self, what: str, poll: Callable[[], float], total: float | None = None, unit: str = "B",
                 stream: IO[str] | None = None, interval: float | None = None):
        self.what, self.poll, self.total, self.unit = what, poll, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self.started = time.monotonic()

    def _terminal(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def __enter__(self) -> Progress:
        tick = self.interval if self.interval is not None else INTERVAL
        if self._terminal():
            try:
                from tqdm import tqdm  # optional: without it, plain lines on the terminal too
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=self.total, desc=self.what, unit=self.unit,
                                 unit_scale=self.unit == "B", file=self.stream, leave=False,
                                 dynamic_ncols=True)
                tick = TERMINAL_TICK
        self._thread = threading.Thread(target=self._run, args=(tick,), name="progress", daemon=True)
        self._thread.start()
        return self

    def _value(self) -> float:
        try:
            return float(self.poll())
        except (OSError, ValueError):  # what it reads is gone (a process ended, a file closed)
            return 0.0

    def _run(self, tick: float) -> None:
        while not self._stop.wait(tick):
            done = self._value()
            if self._bar is not None:
                self._bar.n = done
                self._bar.refresh()
            else:
                elapsed = time.monotonic() - self.started
                log.info("%s", plain_line(self.what, done, self.total, self.unit, elapsed))

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
        else:
            elapsed = time.monotonic() - self.started
            ended = "done" if kind is None else "stopped"
            log.info("%s (%s)", plain_line(self.what, self._value(), self.total, self.unit, elapsed), ended)


class Counter:
    """A count another thread may read (one writer: the `+=` of a Python int is not torn)."""

    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: int = 1) -> None:
        self.value += amount

    def __call__(self) -> int:
        return self.value
