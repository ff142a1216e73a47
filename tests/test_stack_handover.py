"""A stack is handed over only when every service is active in its service manager's own terms.

Health 200 through nginx says that nginx and the backend answer, not that supervisord counts them
as started: nginx's startsecs ran out after the first health 200 on a fast machine, and the first
reload of the test that got the stack was refused ("cannot reload nginx: it is not active
(STARTING)"). Here nginx is made slow to reach RUNNING (a startsecs far longer than the rest of the
start) on a real local stack; right after up() every service must be RUNNING, and a reload at once
must go through.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from fixtures.stack.composed import SERVICES, SandboxStack
from fixtures.stack.local import LocalStack, SupervisorRuntime
from fixtures.stack.supervisor import Program

pytestmark = pytest.mark.stack
NGINX_START_SECONDS = 6  # longer than the rest of a stack's start after nginx's spawn


class SlowNginxRuntime(SupervisorRuntime):
    def _programs(self, stack: SandboxStack) -> list[Program]:
        return [dataclasses.replace(p, start_seconds=NGINX_START_SECONDS) if p.name == "nginx" else p
                for p in super()._programs(stack)]


def test_the_stack_is_handed_over_only_when_every_service_counts_as_running(stack_settings):
    stack = LocalStack(stack_settings, "handover")
    stack.runtime = SlowNginxRuntime()
    try:
        started = time.monotonic()
        stack.up()
        took = time.monotonic() - started
        states = {name: stack.services.status(name).manager_state for name in SERVICES}
        assert states == dict.fromkeys(SERVICES, "RUNNING"), f"handed over after {took:.1f}s: {states}"
        pid = stack.services.main_pid("nginx")
        stack.services.reload("nginx")
        assert stack.services.main_pid("nginx") == pid
    finally:
        stack.down()
