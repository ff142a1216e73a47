"""A supervised start that counts only when the service listens (supervisord's startsecs is a timer),
and a job on a service that is still starting that waits for that start (as systemd queues a job
behind a start job) instead of acting on, or refusing, a half-started service.

A real supervisord with small programs written here: one that fails while "loading" later than
its startsecs (what the backend with a wrong database password does on a busy host), one that
listens only after a while (their startsecs is 0 so that the timer alone would call both started),
one that is slow to count as RUNNING (a large startsecs) and says when it is reloaded, one that
exits at once, and one that supervisord restarts when it exits (Restart=always).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fixtures.stack.ports import PortLease
from fixtures.stack.sandbox import create_sandbox, kill_processes_in, remove_sandbox
from fixtures.stack.supervisor import Program, Supervisor
from recovery.service_manager import ServiceError, SupervisorServiceManager
from recovery.waiting import Observation, wait_until

FAILS_LATE = ("import sys, time; time.sleep(0.8);"
              " print('authentication failed: check database.password'); sys.exit(3)")
LISTENS_LATE = ("import socket, sys, time; time.sleep(0.8);"
                " s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); time.sleep(600)")
RELOADS_ON_HUP = ("import signal, sys, time;"
                  " signal.signal(signal.SIGHUP, lambda *_: print('reloaded', flush=True));"
                  " print('loaded', flush=True); time.sleep(600)")
SLOW_START_SECONDS = 3  # supervisord calls it RUNNING only this long after the spawn


@pytest.fixture
def supervised(stack_settings) -> Iterator[tuple[Supervisor, int, int]]:
    sandbox = create_sandbox(stack_settings.base_dir, "readiness", stack_settings.service_account())
    lease = PortLease(stack_settings.base_dir)
    late_fail, late_listen = lease.take(), lease.take()
    programs = [
        Program("fails-late", [sys.executable, "-c", FAILS_LATE], autorestart=True, start_seconds=0,
                ready_port=late_fail),
        Program("listens-late", [sys.executable, "-c", LISTENS_LATE, str(late_listen)], autorestart=False,
                start_seconds=0, ready_port=late_listen),
        Program("slow-to-run", [sys.executable, "-c", RELOADS_ON_HUP], autorestart=False,
                start_seconds=SLOW_START_SECONDS),
        Program("crashes", [sys.executable, "-c", "import time; time.sleep(600)"], autorestart=True),
        Program("exits-at-once", [sys.executable, "-c", "raise SystemExit(4)"], autorestart=False,
                start_seconds=SLOW_START_SECONDS, start_retries=0),
    ]
    supervisor = Supervisor(sandbox, programs)
    try:
        supervisor.start()
        yield supervisor, late_fail, late_listen
    finally:
        supervisor.shutdown()
        kill_processes_in(sandbox.root)
        remove_sandbox(sandbox.root)
        lease.release()


@pytest.fixture
def manager(supervised) -> tuple[SupervisorServiceManager, int, int]:
    supervisor, late_fail, late_listen = supervised
    return supervisor.manager(), late_fail, late_listen


def test_a_service_that_fails_after_its_startsecs_is_not_started(manager):
    services, _, _ = manager
    with pytest.raises(ServiceError) as failure:
        services.start("fails-late")
    message = str(failure.value)
    assert "fails-late exited before it was ready" in message, message
    assert "authentication failed: check database.password" in message, message


def test_a_start_returns_once_the_service_listens(manager):
    services, _, port = manager
    services.start("listens-late")
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert services.status("listens-late").is_active


def _starting(services: SupervisorServiceManager, name: str) -> None:
    services.start_nowait(name)
    state = services.status(name).manager_state
    assert state == "STARTING", f"the race needs {name} still STARTING right after its spawn, found {state}"


def test_a_reload_right_after_a_start_waits_for_the_start_and_then_reloads(manager):
    services, _, _ = manager
    _starting(services, "slow-to-run")
    pid = services.main_pid("slow-to-run")
    services.reload("slow-to-run")  # refused with "it is not active (STARTING)" before the fix
    status = services.status("slow-to-run")
    assert (status.manager_state, status.pid) == ("RUNNING", pid), status
    log = services.log_file("slow-to-run")
    wait_until("the reload to reach the program", lambda: Observation(
        "reloaded" in log.read_text(), log.read_text()[-200:]), timeout=10, interval=0.05)


def test_a_start_of_a_service_that_is_starting_returns_once_it_runs(manager):
    services, _, _ = manager
    _starting(services, "slow-to-run")
    services.start("slow-to-run")  # returned at once, still STARTING, before the fix
    assert services.status("slow-to-run").manager_state == "RUNNING"


def test_a_reload_of_a_service_whose_start_fails_is_refused_with_its_state(manager):
    services, _, _ = manager
    services.start_nowait("exits-at-once")
    with pytest.raises(ServiceError) as refused:
        services.reload("exits-at-once")
    assert "cannot reload exits-at-once: it is not active (FATAL" in str(refused.value), refused.value



def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text().strip()


def _reading_a_socket(thread_id: int) -> Observation:
    wchan = _proc(os.getpid(), f"task/{thread_id}/wchan")
    return Observation(wchan == "unix_stream_read_generic", f"thread {thread_id} waits in {wchan!r}")


def _held_in_its_poll(pid: int) -> Observation:
    """SIGSTOP supervisord while it waits in its event loop's poll, not in the middle of a round (one
    that went on to reap a child killed meanwhile would start it again before any request is read)."""
    waits_in = _proc(pid, "wchan")
    if "poll" not in waits_in:
        return Observation(False, f"supervisord is in {waits_in!r}")
    syscall = _proc(pid, "syscall").split()[0]
    os.kill(pid, signal.SIGSTOP)
    wait_until("supervisord to stop", lambda: Observation(_proc(pid, "stat").split()[2] == "T", "not yet"),
               timeout=10, interval=0.01)
    if _proc(pid, "syscall").split()[0] == syscall:
        return Observation(True, "held in its poll")
    os.kill(pid, signal.SIGCONT)
    return Observation(False, "stopped outside its poll")


def _right_after_a_crash(supervisor: Supervisor, action: Callable[[], None]) -> None:
    """Run action as the program "crashes" is killed, with its first request to supervisord answered in
    the round of supervisord's loop between the exit and the automatic restart (it restarts an exited
    autorestart program in the round after the one that reaps it). Made certain: supervisord is held
    (SIGSTOP) in its poll while the program is killed and the action's first request is sent."""
    assert supervisor.process is not None
    supervisord = supervisor.process.pid
    crashed = supervisor.manager().main_pid("crashes")
    assert crashed is not None
    threads: list[int] = []
    errors: list[BaseException] = []

    def act() -> None:
        threads.append(threading.get_native_id())
        try:
            action()
        except BaseException as exc:
            errors.append(exc)

    acting = threading.Thread(target=act, daemon=True)
    wait_until("supervisord to be held in its poll", lambda: _held_in_its_poll(supervisord), timeout=30,
               interval=0.01)
    try:
        os.kill(crashed, signal.SIGKILL)
        acting.start()
        wait_until("the first request to be sent", lambda: bool(threads) and _reading_a_socket(threads[0]),
                   timeout=10, interval=0.01)
    finally:
        os.kill(supervisord, signal.SIGCONT)
    acting.join(timeout=90)
    assert not acting.is_alive(), "the action did not end"
    if errors:
        raise errors[0]


def test_a_stop_right_after_a_crash_leaves_the_service_stopped(supervised):
    """A stop that saw the program EXITED returned, and supervisord started it again right after."""
    supervisor, _, _ = supervised
    services = supervisor.manager()
    services.start("crashes")
    _right_after_a_crash(supervisor, lambda: services.stop("crashes"))
    services.status("crashes")  # a round of supervisord's loop has run since the stop
    status = services.status("crashes")
    assert status.manager_state == "STOPPED", f"stopped, then started again: {status.detail}"
    # the restart it stopped was just spawned: a SIGTERM before its exec is lost (supervisord's own
    # handler takes it), and the stop then ends in a SIGKILL after stopwaitsecs
    assert "stopped: crashes (terminated by SIGKILL)" not in supervisor.log_file.read_text()


@pytest.mark.parametrize("start", ["start", "start_nowait"])
def test_a_start_right_after_a_crash_is_not_refused_for_the_automatic_restart(supervised, start):
    """A start that saw the program EXITED asked supervisord to start it after it had restarted it
    itself: "ALREADY_STARTED" was a failed start of a service that was starting."""
    supervisor, _, _ = supervised
    services = supervisor.manager()
    services.start("crashes")
    _right_after_a_crash(supervisor, lambda: getattr(services, start)("crashes"))
    services.wait_active("crashes")
