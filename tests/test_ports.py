"""Listen ports: outside the kernel's ephemeral range, never the same for two leases, free again after."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.errors import StackError
from fixtures.stack import ports
from fixtures.stack.ports import PortLease


def _ephemeral() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_ports_are_outside_the_ephemeral_range_and_differ(tmp_path: Path):
    low, high = _ephemeral()
    first, second = PortLease(tmp_path), PortLease(tmp_path)
    taken = [first.take() for _ in range(20)] + [second.take() for _ in range(20)]
    assert len(set(taken)) == 40
    assert not [p for p in taken if low <= p <= high]
    first.release()
    second.release()


def test_a_port_locked_by_another_process_is_never_chosen(tmp_path: Path, monkeypatch):
    """Two runs (processes) sharing a base: with only two candidates, each gets one, a third gets none."""
    finder = PortLease(tmp_path)
    probe = [finder.take(), finder.take()]  # two ports that are free now
    finder.release()
    monkeypatch.setattr(ports, "candidate_ports", lambda: probe)
    code = (f"import sys; from pathlib import Path; from fixtures.stack import ports\n"
            f"ports.candidate_ports = lambda: {probe!r}\n"
            f"print(ports.PortLease(Path({str(tmp_path)!r})).take(), flush=True); sys.stdin.read()\n")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        theirs = int(other.stdout.readline())
        mine = PortLease(tmp_path)
        assert mine.take() == next(p for p in probe if p != theirs)
        with pytest.raises(StackError, match="no free listen port"):
            PortLease(tmp_path).take()
        mine.release()
        later = PortLease(tmp_path)
        assert later.take() != theirs  # mine is free again, theirs still held
        later.release()
    finally:
        other.communicate("", timeout=30)
    again = PortLease(tmp_path)
    assert sorted([again.take(), again.take()]) == sorted(probe)  # the other process is gone: both free


def test_a_port_something_else_listens_on_is_skipped(tmp_path: Path, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        monkeypatch.setattr(ports, "candidate_ports", lambda: [busy])
        with pytest.raises(StackError, match="no free listen port"):
            PortLease(tmp_path).take()
