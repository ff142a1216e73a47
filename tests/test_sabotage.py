"""The harness tests itself: with a recovery sabotaged on purpose, the matching drill must FAIL, and
say why. A drill suite that passes a broken recovery proves nothing.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from fixtures.engine.drill import DrillFailed, DrillRun
from fixtures.engine.faults import Defanged, DropDatabase
from fixtures.engine.probes import CANARY_TABLE
from fixtures.stack.postgres import APP_DB
from recovery import backups, database, pitr, services
from scenarios.drills import (
    DB_RESTORE,
    PITR,
    UPLOADS,
    recreate_if_dropped,
    sabotaged,
    wal_switch,
)

pytestmark = pytest.mark.stack


def failed(drill_runner, drill, stack) -> str:
    with pytest.raises(DrillFailed) as caught:
        drill_runner(drill, stack)
    record = caught.value.record
    assert record.verdict == "failed" and record.failure_reason
    return record.failure_reason


def test_a_fault_that_does_not_bite_fails_the_drill_before_any_recovery(stack, drill_runner):
    recovered = []
    drill = sabotaged(DB_RESTORE, fault=Defanged(DropDatabase()), recover=lambda run: recovered.append(1))
    reason = failed(drill_runner, drill, stack)
    assert "the fault did not bite" in reason and f"database {APP_DB} still exists" in reason
    assert not recovered


def test_a_skipped_restore_fails_the_database_drill(stack, drill_runner):
    def skip_restore(run: DrillRun) -> None:  # recreates the database and restarts, restores nothing
        recreate_if_dropped(run)
        run.action(services.manual_recover, run.target)

    reason = failed(drill_runner, sabotaged(DB_RESTORE, recover=skip_restore), stack)
    assert "data differs from the baseline" in reason and "users:" in reason


def test_restoring_the_wrong_backup_fails_the_database_drill(stack, drill_runner):
    def two_backups(run: DrillRun) -> None:  # an older backup, a change, then the newest backup
        run.action(database.backup_database, run.target)
        with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
            conn.execute("INSERT INTO projects (name, description) VALUES ('after the first backup', '')")
        time.sleep(1.1)  # backup names have a one-second stamp
        run.action(database.backup_database, run.target)

    def restore_the_oldest(run: DrillRun) -> None:
        recreate_if_dropped(run)
        oldest = backups.candidates(database.Path(run.target.paths.backup_dir))[-1]
        run.action(database.restore_database, run.target, level="RTO-24", backup=oldest)

    drill = sabotaged(DB_RESTORE, prepare=two_backups, recover=restore_the_oldest)
    reason = failed(drill_runner, drill, stack)
    assert "data differs from the baseline" in reason and "projects:" in reason


def test_uploads_not_restored_fail_the_uploads_drill(stack, drill_runner):
    def restart_only(run: DrillRun) -> None:
        run.action(services.manual_recover, run.target)

    reason = failed(drill_runner, sabotaged(UPLOADS, recover=restart_only), stack)
    assert "data differs from the baseline" in reason and "missing files" in reason


def test_a_pitr_that_ignores_its_target_fails_the_pitr_drill(stack, drill_runner):
    def past_the_mistake(run: DrillRun) -> None:  # a target after the DELETE: it is replayed too
        with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
            after = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(0.2)  # a commit after the target, so that recovery can reach it
            conn.execute(f"INSERT INTO {CANARY_TABLE} (id) VALUES (-1)")
        wal_switch(run)
        run.action(pitr.point_in_time_restore, run.target, after)

    reason = failed(drill_runner, sabotaged(PITR, recover=past_the_mistake), stack)
    assert "data differs from the baseline" in reason and "documents:" in reason


def test_losing_committed_rows_fails_a_drill_that_must_lose_nothing(stack, drill_runner, drill_settings):
    """The database restore at RTO-1: the canary rows written after the backup are gone."""
    import dataclasses

    strict = dataclasses.replace(drill_settings, levels={DB_RESTORE.name: "RTO-1"}, forecaster=None)
    with pytest.raises(DrillFailed) as caught:
        drill_runner(DB_RESTORE, stack, strict)
    record = caught.value.record
    assert record.data_loss_rows and record.data_loss_rows == record.canary.committed
    assert "RTO-1 must lose nothing" in record.failure_reason
    assert record.recovery_seconds is not None  # the recovery itself worked: only the loss fails it
