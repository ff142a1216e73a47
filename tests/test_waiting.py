"""recovery.waiting: the one deadline loop (no stack needed)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from recovery import waiting
from recovery.errors import RecoveryError
from recovery.waiting import Observation, WaitTimeout, wait_until


class Countdown:
    """A probe that answers `value` on its n-th call and records when it was called."""

    def __init__(self, n: int, value: object = "ready", before: object = None,
                 clock: Callable[[], float] = time.monotonic):
        self.n, self.value, self.before, self.clock = n, value, before, clock
        self.calls: list[float] = []

    def __call__(self) -> object:
        self.calls.append(self.clock())
        return self.value if len(self.calls) >= self.n else self.before


class FakeClock:
    """recovery.waiting's time, moved only by its sleeps (a fake): the loop's pauses and deadline
    without the host's scheduling, which wakes a sleeper late on a busy machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting, "time", fake)
    return fake


def test_returns_the_probes_first_true_answer():
    probe = Countdown(3, value={"pid": 42}, before={})
    assert wait_until("the pid", probe, timeout=5, interval=0.01) == {"pid": 42}
    assert len(probe.calls) == 3


def test_an_observation_is_true_only_when_ok_and_unpacks_as_a_pair():
    ok, detail = Observation(True, "answers")
    assert (ok, detail) == (True, "answers")
    assert not Observation(False, "refused")
    assert wait_until("it", lambda: Observation(True, "answers"), timeout=1).detail == "answers"


def test_timeout_names_what_it_waited_for_the_last_observation_and_the_log_tail(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("starting\nFATAL: could not bind\n")
    answers = iter(Observation(False, f"attempt {n}: refused") for n in range(1, 1000))
    with pytest.raises(WaitTimeout) as caught:
        wait_until("the server to answer", lambda: next(answers), timeout=0.2, interval=0.05, log_tail=log)
    message = str(caught.value)
    assert "waiting for the server to answer" in message
    assert "timed out after 0.2s" in message
    last = caught.value.last
    assert last.startswith("attempt ") and last.endswith(": refused")
    assert f"last observation: {last}" in message
    assert int(last.split()[1].rstrip(":")) >= 3  # the last one, not the first
    assert "--- log tail ---\nstarting\nFATAL: could not bind" in message
    assert caught.value.log_tail.endswith("FATAL: could not bind")
    assert caught.value.result == Observation(False, last)


def test_a_falsy_answer_that_is_no_observation_is_shown_as_it_is():
    with pytest.raises(WaitTimeout, match=r"last observation: \[\]$"):
        wait_until("rows", list, timeout=0.05, interval=0.01)


def test_log_tail_from_a_callable():
    with pytest.raises(WaitTimeout, match="--- log tail ---\nworker exited"):
        wait_until("it", lambda: False, timeout=0.05, interval=0.01, log_tail=lambda: "worker exited")


def test_a_failing_log_tail_does_not_hide_the_timeout():
    def broken() -> str:
        raise OSError("journalctl missing")

    with pytest.raises(WaitTimeout, match="log tail unreadable: OSError: journalctl missing"):
        wait_until("it", lambda: False, timeout=0.05, interval=0.01, log_tail=broken)


def test_the_callers_error_type_is_raised_with_the_message():
    class FaultDidNotBite(Exception):
        pass

    with pytest.raises(FaultDidNotBite, match=r"waiting for pid 7 to die; last observation: alive$"):
        wait_until("pid 7 to die", lambda: Observation(False, "alive"), timeout=0.05, interval=0.01,
                   error=FaultDidNotBite)
    with pytest.raises(RecoveryError, match="waiting for PostgreSQL"):
        wait_until("PostgreSQL", lambda: False, timeout=0.05, interval=0.01, error=RecoveryError)


def test_not_yet_exceptions_are_observations_with_type_and_text():
    calls = []

    def probe() -> bool:
        calls.append(1)
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(WaitTimeout) as caught:
        wait_until("the port", probe, timeout=0.1, interval=0.02, not_yet=OSError)
    assert caught.value.last == "ConnectionRefusedError: connection refused"
    assert caught.value.result is None
    assert len(calls) >= 3


def test_not_yet_then_ready_returns():
    answers = iter([OSError("not yet"), OSError("still not"), "up"])

    def probe() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until("it", probe, timeout=5, interval=0.01, not_yet=(OSError, ValueError)) == "up"


def test_other_exceptions_propagate_at_once():
    calls = []

    def probe() -> bool:
        calls.append(1)
        raise KeyError("the supervisor has no such program")

    started = time.monotonic()
    with pytest.raises(KeyError, match="no such program"):
        wait_until("it", probe, timeout=5, interval=0.01, not_yet=OSError)
    assert calls == [1] and time.monotonic() - started < 1


def test_interval_is_respected_and_the_wait_ends_at_the_deadline(clock):
    probe = Countdown(10**6, clock=clock.monotonic)
    started = clock.monotonic()
    with pytest.raises(WaitTimeout):
        wait_until("never", probe, timeout=0.5, interval=0.1)
    elapsed = clock.monotonic() - started
    assert 0.5 <= elapsed < 0.8  # no pause past the deadline
    gaps = [b - a for a, b in zip(probe.calls, probe.calls[1:], strict=False)]
    assert 5 <= len(probe.calls) <= 7  # about timeout / interval, plus the one at the deadline
    assert all(gap >= 0.095 for gap in gaps[:-1]), gaps  # the last gap is cut at the deadline
    assert probe.calls[-1] - started >= 0.5  # probed once more at the deadline


def test_a_long_interval_is_cut_at_the_deadline(clock):
    probe = Countdown(10**6, clock=clock.monotonic)
    started = clock.monotonic()
    with pytest.raises(WaitTimeout):
        wait_until("never", probe, timeout=0.2, interval=30)
    assert clock.monotonic() - started < 1 and len(probe.calls) == 2


def test_interval_as_a_backoff_of_the_probe_count():
    probe = Countdown(4)
    pauses: list[int] = []

    def backoff(n: int) -> float:
        pauses.append(n)
        return 0.01 * 2 ** (n - 1)

    assert wait_until("it", probe, timeout=5, interval=backoff) == "ready"
    assert pauses == [1, 2, 3]
    gaps = [b - a for a, b in zip(probe.calls, probe.calls[1:], strict=False)]
    assert gaps[2] >= 0.04 and gaps[1] >= 0.02


def test_a_zero_timeout_probes_once():
    probe = Countdown(2)
    with pytest.raises(WaitTimeout, match="last observation: None"):
        wait_until("it", probe, timeout=0)
    assert len(probe.calls) == 1
