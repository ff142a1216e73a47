"""Verdicts that hold on an app nobody here wrote: a seed the app does not accept fails at the baseline
(before any fault), and a database that stays down is a clear reason, not a psycopg traceback."""

from __future__ import annotations

import logging

import pytest

from fixtures.engine.drill import DrillFailed
from fixtures.stack.postgres import APP_DB
from scenarios.drills import BACKEND_WORKERS, DB_IMMEDIATE, sabotaged

pytestmark = pytest.mark.stack


def test_a_seeded_admin_the_app_refuses_fails_the_baseline_before_any_fault(stack, drill_runner):
    with stack.pg.connect(APP_DB) as conn:  # as a users_file record in a format the app does not read
        conn.execute("UPDATE users SET password_hash = 'not a hash the app knows' WHERE username = 'admin'")
    with pytest.raises(DrillFailed) as caught:
        drill_runner(BACKEND_WORKERS, stack)
    record = caught.value.record
    assert "the seeded admin cannot log in before any fault" in record.failure_reason
    assert "seed.admin" in record.failure_reason
    assert not record.fault, "no fault was injected"
    assert [(c.name, c.passed) for c in record.checks] == [("baseline", False)]


def test_a_database_that_stays_down_is_a_reason_not_a_traceback(stack, drill_runner, caplog):
    drill = sabotaged(DB_IMMEDIATE, recover=lambda run: None)  # a recovery that forgets the database
    with caplog.at_level(logging.ERROR), pytest.raises(DrillFailed) as caught:
        drill_runner(drill, stack)
    record = caught.value.record
    assert "after the recovery, the database does not answer" in record.failure_reason
    assert "Traceback" not in record.failure_reason
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"
    integrity = next(c for c in record.checks if c.name == "integrity")
    assert not integrity.passed and "does not answer" in integrity.detail
