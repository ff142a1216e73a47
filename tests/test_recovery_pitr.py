"""ポイントインタイムリカバリ: rows deleted by mistake at T come back with a PITR to just before T."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import psycopg
import pytest

from fixtures.stack.postgres import APP_DB
from recovery import pitr
from recovery.integrity import compare, fingerprint
from recovery.journal import ActionFailed
from recovery.pitr import archive_range, base_backup, base_backups, point_in_time_restore
from recovery.waiting import wait_until

pytestmark = pytest.mark.stack


def switch_and_wait_archived(stack, timeout: float = 30.0) -> str:
    """pg_switch_wal() and wait until the finished segment is in the archive."""
    with stack.pg.connect() as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    segment = row[0]
    archived = stack.pg.wal_archive / segment
    wait_until(f"{segment} to be archived", archived.exists, timeout=timeout, interval=0.1)
    return segment


def test_pitr_refuses_bad_targets_then_brings_back_rows_deleted_by_mistake(stack, monkeypatch):
    target = stack.target()
    journal = base_backup(target, label="drill")
    assert journal.status == "succeeded"
    (backup,) = base_backups(target)
    assert backup.label == "drill" and backup.start_segment and backup.timeline == 1
    assert backup.started_at <= backup.ended_at

    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("INSERT INTO projects (name, description) VALUES ('PITR marker', 'after the backup')")
        time.sleep(0.3)
        good_time = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        before_mistake = fingerprint(target)
        time.sleep(0.3)
        deleted = conn.execute("DELETE FROM documents WHERE project_id IN"
                               " (SELECT id FROM projects ORDER BY id LIMIT 3)").rowcount
        conn.execute("UPDATE projects SET description = 'overwritten by mistake'")
    assert deleted > 0
    mistake_segment = switch_and_wait_archived(stack)
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("INSERT INTO projects (name) VALUES ('later work')")
    switch_and_wait_archived(stack)
    covered = archive_range(target, backup.start_segment)
    assert covered.missing is None and len(covered.segments) >= 3
    assert mistake_segment in covered.segments[1:-1]
    assert covered.last_commit is not None and covered.last_commit > good_time

    live = fingerprint(target)
    live_dir = Path(target.database.data_dir)

    def refused(expected: str, when: dt.datetime, **kwargs) -> None:
        with pytest.raises(ActionFailed) as caught:
            point_in_time_restore(target, when, **kwargs)
        assert expected in str(caught.value), str(caught.value)
        assert caught.value.journal.failed_step().name == "preflight"
        assert compare(live, fingerprint(target)) == []
        assert sorted(p.name for p in live_dir.parent.iterdir()) == [live_dir.name]

    refused("before the end of the oldest base backup", backup.end_time - dt.timedelta(minutes=5))
    refused("after the last archived transaction", covered.last_commit + dt.timedelta(hours=1))
    # an archive with a hole: the restore must notice before it stops anything
    holed = Path(target.paths.scratch_dir) / "wal-with-a-hole"
    shutil.copytree(target.paths.wal_archive, holed)
    stack.sandbox.give(holed.parent, recursive=True)
    (holed / mistake_segment).unlink()
    refused(f"segment {mistake_segment} is missing", good_time, archive=holed)

    # a hole the preflight does not see (it looks at the real archive): the recovery stops short of
    # the target, the server exits, and the old data directory goes back into place
    real_range = pitr.archive_range
    monkeypatch.setattr(pitr, "archive_range", lambda t, s, a=None, step=None: real_range(t, s, None, step))
    with pytest.raises(ActionFailed) as caught:
        point_in_time_restore(target, good_time, archive=holed, timeout=60)
    monkeypatch.undo()
    steps = [s.name for s in caught.value.journal.steps]
    assert steps[-2:] == ["recover", "rollback"] and caught.value.journal.steps[-1].status == "ok"
    assert "stopped during recovery" in str(caught.value)
    assert "recovery ended before configured recovery target was reached" in str(caught.value)
    assert compare(live, fingerprint(target)) == []
    assert sorted(p.name.split(".")[-1].rsplit("_", 2)[0] for p in live_dir.parent.iterdir()) == [
        "failed_pitr", "main"]
    stack.wait_healthy()

    dirs = sorted(p.name for p in live_dir.parent.iterdir())
    plan = point_in_time_restore(target, good_time, dry_run=True)
    assert plan.status == "planned" and [s.status for s in plan.steps] == ["planned"] * 6
    assert sorted(p.name for p in live_dir.parent.iterdir()) == dirs

    journal = point_in_time_restore(target, good_time)
    assert journal.status == "succeeded", journal.to_json()
    recovered = fingerprint(target)
    assert compare(before_mistake, recovered) == []
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM projects WHERE name = 'PITR marker'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM projects WHERE description = 'overwritten by mistake'"
                            ).fetchone()[0] == 0
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "off"
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
    safety = next(s for s in journal.steps if s.name == "stop").details["safety_copy"]
    assert Path(safety).is_dir() and ".pre_pitr_" in safety
    assert not (live_dir / "recovery.signal").exists()
    assert "recovery_target_time" not in (live_dir / "postgresql.auto.conf").read_text()
    stack.wait_healthy()
