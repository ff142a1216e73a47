"""recovery.health.start_backend on a live stack: health 200 and a started service, or a crash told."""

from __future__ import annotations

import pytest

from recovery import health
from recovery.errors import RecoveryError
from recovery.waiting import WaitTimeout

BACKEND = "mks-backend"


@pytest.mark.stack
def test_start_backend_waits_for_health_and_the_manager_and_tells_a_crash_without_waiting_it_out(stack):
    target = stack.target()
    services = stack.services
    services.stop(BACKEND)
    answer = health.start_backend(target, 60)
    assert answer.ok and answer.seconds is not None and answer.seconds > 0
    # a check of the services right after must not find the backend still starting
    assert services.status(BACKEND).is_active, services.status(BACKEND).detail

    config = stack.backend_dir / stack.settings.app.git_restores[0]
    original = config.read_text(encoding="utf-8")
    services.stop(BACKEND)
    stack.sandbox.write_text(config, "app: [this list is never closed\n" + original, mode=0o644)
    try:
        with pytest.raises(RecoveryError) as failed:
            health.start_backend(target, 60)
        assert not isinstance(failed.value, WaitTimeout), "a backend that exits is told, not waited for"
        assert "did not start" in str(failed.value) and "log" in str(failed.value)
    finally:
        services.stop(BACKEND)
        stack.sandbox.write_text(config, original, mode=0o644)
    assert health.start_backend(target, 60).ok
