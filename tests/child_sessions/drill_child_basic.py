"""Run by tests/test_isolation.py in a child pytest session (not collected by the parent)."""

import os
import time
from pathlib import Path


def test_a_stack_is_used(stack):
    with stack.client() as client:
        assert stack.health(client) == 200
        token = stack.login(client)
        response = client.post(
            "/api/v1/upload",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("child.txt", b"written by the child session")},
        )
        assert response.status_code == 201


def test_waits_to_be_interrupted(stack, reports_dir):
    if not os.environ.get("MKS_CHILD_WAIT"):
        return
    (Path(reports_dir) / "child-ready").write_text(str(stack.root))
    time.sleep(120)


def test_settings_only(stack_settings):
    assert stack_settings.base_dir.is_dir() or not stack_settings.base_dir.exists()


def _recover_slowly(run):
    """A recovery that stops half-way: the parent test kills the session while it waits here."""
    (Path(os.environ["MKS_CHILD_READY"])).write_text(str(run.stack.root))
    time.sleep(120)


def test_a_drill_waits_to_be_killed(stack, drill_runner):
    if not os.environ.get("MKS_CHILD_READY"):
        return
    from fixtures.engine.drill import Drill
    from fixtures.engine.faults import KillBackendWorkers

    drill = Drill("killed-mid-drill", "ドリル中の強制終了", "RTO-1", "weekly", "テスト", KillBackendWorkers(),
                  _recover_slowly)
    drill_runner(drill, stack)
