"""One way to wait: a deadline loop that keeps what it last saw.

Every "wait until" of the project is a call of `wait_until`: the caller says what it waits for, how
to look (the probe), for how long and how often, which error a timeout is, and which exceptions of
the probe only mean "not yet". The timeout's message carries the last observation and, where the
caller names one, the tail of a log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

from recovery.errors import RecoveryError
from recovery.journal import tail

T = TypeVar("T")
LogTail = Path | str | Callable[[], str]
Interval = float | Callable[[int], float]  # seconds, or seconds after the n-th probe (a backoff)


class Observation(NamedTuple):
    """A probe's answer with words for it: true when `ok`, and the words go into a timeout's message.

    It unpacks like the (ok, detail) pairs the probes used to return.
    """

    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.detail


class WaitTimeout(RecoveryError):
    """What waited for did not happen in time (the default error of wait_until)."""

    def __init__(self, message: str, last: str = "", log_tail: str = "", result: object = None):
        super().__init__(message)
        self.last = last  # the last observation in words
        self.log_tail = log_tail
        self.result = result  # the probe's last (falsy) answer; None when it last raised


def wait_until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: Interval = 0.1,
    error: Callable[[str], BaseException] = WaitTimeout,
    not_yet: type[BaseException] | tuple[type[BaseException], ...] = (),
    log_tail: LogTail | None = None,
) -> T:
    """Call probe until it returns something true, and return that; raise `error` at the deadline.

    `what` completes "waiting for ...". An exception of a `not_yet` type is an observation (the
    thing is not up yet); any other propagates at once. The probe runs once more at the deadline,
    and no pause goes beyond it.
    """
    started = time.monotonic()
    deadline = started + timeout
    last, last_result = "never probed", None
    probes = 0
    while True:
        probes += 1
        try:
            result = probe()
        except not_yet as exc:
            last, last_result = f"{type(exc).__name__}: {str(exc).strip()[:300]}", None
        else:
            if result:
                return result
            last, last_result = describe(result), result
        now = time.monotonic()
        if now >= deadline:
            raise _timeout(error, what, now - started, last, _read_tail(log_tail), last_result)
        pause = interval(probes) if callable(interval) else interval
        time.sleep(min(max(pause, 0.0), deadline - now))


def describe(value: object) -> str:
    """A probe's falsy answer in words: an Observation's detail, else its repr."""
    if isinstance(value, Observation):
        return value.detail
    return repr(value) if value is None or isinstance(value, str | bool | int | float) else str(value)


def _timeout(error: Callable[[str], BaseException], what: str, seconds: float, last: str,
             log_tail: str, result: object) -> BaseException:
    message = f"timed out after {seconds:.1f}s waiting for {what}; last observation: {last}"
    if log_tail:
        message += "\n--- log tail ---\n" + log_tail
    if error is WaitTimeout:
        return WaitTimeout(message, last, log_tail, result)
    return error(message)


def _read_tail(source: LogTail | None) -> str:
    if source is None:
        return ""
    if callable(source):
        try:
            return source()
        except Exception as exc:  # the log is a courtesy: its failure must not hide the timeout
            return f"(log tail unreadable: {type(exc).__name__}: {exc})"
    return tail(Path(source))
