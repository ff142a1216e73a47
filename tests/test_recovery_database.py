"""データベース復旧: checks, restart, backup, and the restore beside the live database then swap."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import psycopg
import pytest

from fixtures.stack.postgres import APP_DB
from recovery import health
from recovery.commands import run
from recovery.database import (
    backup_database,
    config_check,
    connection_check,
    restart_database,
    restore_database,
)
from recovery.integrity import compare, fingerprint
from recovery.journal import ActionFailed

pytestmark = pytest.mark.stack


def databases(stack) -> list[str]:
    with stack.pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()]


def step_detail(journal, name: str, key: str):
    return next(s for s in journal.steps if s.name == name).details[key]


def test_checks_backup_and_restore_bring_back_the_backed_up_data(stack):
    target = stack.target()
    journal = connection_check(target)
    assert journal.status == "succeeded"
    assert step_detail(journal, "activity", "connections") >= 1
    _, report = config_check(target)
    assert report.running["port"] == str(target.database.port)
    assert report.running == report.config_file and report.pending == []
    assert report.problems == [] and report.user["usesuper"] is False
    assert restart_database(target).status == "succeeded"
    stack.wait_healthy()

    backed_up = fingerprint(target)
    journal = backup_database(target)
    dump = Path(step_detail(journal, "dump", "path"))
    assert dump.name.startswith("db_") and dump.read_bytes()[:5] == b"PGDMP"
    assert Path(str(dump) + ".sha256").read_text().split()[0] == step_detail(journal, "dump", "sha256")

    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("DELETE FROM documents WHERE project_id = (SELECT min(project_id) FROM documents)")
        conn.execute("UPDATE projects SET name = 'changed by mistake'")
    damaged = fingerprint(target)
    assert compare(backed_up, damaged)

    journal = restore_database(target, level="RTO-24", safety_dump=True)
    assert journal.status == "succeeded", journal.to_json()
    assert Path(step_detail(journal, "select_backup", "backup")) == dump
    assert step_detail(journal, "pg_restore", "toc_entries_restored") > 0, "pg_restore's progress was seen"
    assert compare(backed_up, fingerprint(target)) == []
    ts = step_detail(journal, "swap", "previous_database").removeprefix("mks_db_pre_")
    assert f"mks_db_pre_{ts}" in databases(stack)
    assert not [d for d in databases(stack) if d.startswith("mks_db_restore_")]
    with stack.client() as client:
        assert stack.health(client) == 200
        token = stack.login(client)
        assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    for secret in stack.secrets.values():
        assert secret not in journal.to_json()

    # the safety copy is a real backup: restoring it gives back the state before the restore
    safety = Path(step_detail(journal, "safety_copy", "path"))
    assert safety.name == f"pre_restore_{ts}.dump"
    again = restore_database(target, level="RTO-1", backup=safety)
    assert again.status == "succeeded"
    assert compare(damaged, fingerprint(target)) == []


def test_bad_backups_are_refused_and_the_live_database_is_left_as_it_was(stack, tmp_path):
    target = stack.target()
    backup_dir = Path(target.paths.backup_dir)
    journal = backup_database(target)
    good = Path(step_detail(journal, "dump", "path"))
    live = fingerprint(target)
    names = databases(stack)

    def refused(expected: str, **kwargs) -> ActionFailed:
        with pytest.raises(ActionFailed) as caught:
            restore_database(kwargs.pop("target", target), **kwargs)
        assert expected in str(caught.value), str(caught.value)
        assert compare(live, fingerprint(target)) == []
        assert databases(stack) == names
        assert health.backend(target).ok
        return caught.value

    plan = restore_database(target, level="RTO-4", dry_run=True)
    assert plan.status == "planned" and [s.status for s in plan.steps] == ["planned"] * 8
    assert compare(live, fingerprint(target)) == [] and databases(stack) == names

    empty = backup_dir / "db_20990101_000000.dump"
    empty.write_bytes(b"")
    refused("empty file", backup=empty)
    empty.unlink()

    truncated = backup_dir / "db_x_truncated.dump"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    stack.sandbox.give(truncated)
    # its table of contents survives, so only the restore beside the live one finds the damage
    # pg_restore -j words a truncation by which worker meets it first
    with pytest.raises(ActionFailed) as caught:
        restore_database(target, backup=truncated)
    failure = caught.value
    assert "could not read from input" in str(failure) or "possibly corrupt archive" in str(failure), failure
    assert compare(live, fingerprint(target)) == [] and databases(stack) == names
    assert health.backend(target).ok
    assert failure.journal.failed_step().name == "pg_restore"
    assert [s.name for s in failure.journal.steps][-1] == "drop_side"

    plain = backup_dir / "db_x.dump"
    plain.write_text("--\n-- PostgreSQL database dump\n--\nCREATE TABLE users (id int);\n")
    refused("no PGDMP magic) (it looks like plain SQL text)", backup=plain)
    plain.unlink()

    with stack.pg.connect() as conn:
        conn.execute("CREATE DATABASE other_db OWNER mks_user")
    other = backup_dir / "db_other.dump"
    run([target.database.tool("pg_dump"), "-Fc", "-U", "postgres", "-d", "other_db", "-f", str(other)],
        timeout=60, run_as=stack.sandbox.service_account, env=target.database.env())
    names = databases(stack)
    refused("a dump of database 'other_db', not 'mks_db'", backup=other)

    empty_dir = tmp_path / "no-backups"
    empty_dir.mkdir()
    nothing = dataclasses.replace(target, paths=dataclasses.replace(target.paths, backup_dir=str(empty_dir)))
    refused("no database backup found", target=nothing)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    refused("the level allows at most 1.0 h", level="RTO-4", now=later)
    # a damaged newer dump is passed over, then the valid one is too old for the level
    truncated.rename(backup_dir / "db_20990101_000000.dump")
    refused("the newest valid backup db_", level="RTO-4", now=later)
