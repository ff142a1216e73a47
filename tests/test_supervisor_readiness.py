"""A supervised start that counts only when the service listens (supervisord's startsecs is a timer).

A real supervisord with two small programs written here: one that fails while "loading" later than
its startsecs (what the backend with a wrong database password does on a busy host), one that
listens only after a while. Their startsecs is 0 so that the timer alone would call both started.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from fixtures.stack.ports import PortLease
from fixtures.stack.sandbox import create_sandbox, kill_processes_in, remove_sandbox
from fixtures.stack.supervisor import Program, Supervisor
from recovery.service_manager import ServiceError, SupervisorServiceManager

FAILS_LATE = ("import sys, time; time.sleep(0.8);"
              " print('authentication failed: check database.password'); sys.exit(3)")
LISTENS_LATE = ("import socket, sys, time; time.sleep(0.8);"
                " s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); time.sleep(600)")


@pytest.fixture
def manager(stack_settings) -> Iterator[tuple[SupervisorServiceManager, int, int]]:
    sandbox = create_sandbox(stack_settings.base_dir, "readiness", stack_settings.service_account())
    lease = PortLease(stack_settings.base_dir)
    late_fail, late_listen = lease.take(), lease.take()
    programs = [
        Program("fails-late", [sys.executable, "-c", FAILS_LATE], autorestart=True, start_seconds=0,
                ready_port=late_fail),
        Program("listens-late", [sys.executable, "-c", LISTENS_LATE, str(late_listen)], autorestart=False,
                start_seconds=0, ready_port=late_listen),
    ]
    supervisor = Supervisor(sandbox, programs)
    try:
        supervisor.start()
        yield supervisor.manager(), late_fail, late_listen
    finally:
        supervisor.shutdown()
        kill_processes_in(sandbox.root)
        remove_sandbox(sandbox.root)
        lease.release()


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
