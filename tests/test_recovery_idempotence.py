"""Recovery actions run twice (Molecule's idempotence step): on a recovered system the second run leaves
the data, the files and the services as the first left them, and destroys none of the first run's
safety copies; a db-restore killed halfway and run again ends recovered, losing nothing. One stack."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.engine import idempotence
from fixtures.engine.drill import DrillFailed
from fixtures.engine.idempotence import State
from fixtures.stack.local import LocalStack
from fixtures.stack.plugin import module_stack
from recovery import backups, restore_role, safety_copies
from recovery.config_files import backup_config, restore_config
from recovery.database import backup_database, restore_database
from recovery.integrity import compare, connect
from recovery.journal import ActionFailed
from recovery.uploads import backup_uploads, restore_uploads
from recovery.waiting import wait_until
from scenarios.drills import UPLOADS, recover_uploads, sabotaged

pytestmark = pytest.mark.stack
PROJECT = Path(__file__).resolve().parents[1]


stack = module_stack("twice")


def state(stack: LocalStack) -> State:
    return idempotence.state(stack.target())


def assert_second_run_changed_nothing(first: State, second: State) -> None:
    assert first.healthy and second.healthy
    assert idempotence.changes(first, second) == []


def test_db_restore_twice(stack):
    target = stack.target()
    dump = Path(next(s for s in backup_database(target).steps if s.name == "dump").details["path"])
    with connect(target) as conn:
        conn.execute("DELETE FROM documents WHERE id IN (SELECT id FROM documents ORDER BY id LIMIT 5)")
    assert restore_database(target, backup=dump).status == "succeeded"
    first = state(stack)
    assert restore_database(target, backup=dump).status == "succeeded"
    second = state(stack)
    assert_second_run_changed_nothing(first, second)
    assert len(second.copies - first.copies) == 1  # the second run kept a safety copy of its own


def test_uploads_restore_twice(stack):
    target = stack.target()
    archive = Path(next(s for s in backup_uploads(target).steps if s.name == "archive").details["archive"])
    victim = next(p for p in Path(target.paths.uploads_dir).rglob("*") if p.is_file())
    victim.unlink()
    assert restore_uploads(target, backup=archive).status == "succeeded"
    first = state(stack)
    assert restore_uploads(target, backup=archive).status == "succeeded"
    assert_second_run_changed_nothing(first, state(stack))


def test_config_restore_twice(stack):
    target = stack.target()
    archive = Path(next(s for s in backup_config(target).steps).details["archive"])
    config = Path(target.paths.config_file)
    good = config.read_bytes()
    config.write_bytes(good + b"\n# edited by mistake\n")
    assert restore_config(target, backup=archive).status == "succeeded"
    assert config.read_bytes() == good
    first = state(stack)
    assert restore_config(target, backup=archive).status == "succeeded"
    assert_second_run_changed_nothing(first, state(stack))


def slow_bindir(stack: LocalStack, folder: Path, listing: bool) -> Path:
    """PostgreSQL's tools, with a pg_restore that says it started (its pid in `started`) and waits, so
    that the restore can be killed there: when it reads the backup's table of contents (`listing`,
    the backup's check) or when it restores into the side database."""
    real = Path(stack.target().database.bindir)
    folder.mkdir()
    for tool in real.iterdir():
        (folder / tool.name).symlink_to(tool)
    (folder / "pg_restore").unlink()
    (folder / "pg_restore").write_text(
        '#!/bin/sh\nlisting=no\nfor a in "$@"; do [ "$a" = --list ] && listing=yes; done\n'
        f'if [ $listing = {"yes" if listing else "no"} ]; then echo $$ > {folder}/started; sleep 60; fi\n'
        f'exec {real}/pg_restore "$@"\n')
    (folder / "pg_restore").chmod(0o755)
    stack.sandbox.give(folder, recursive=True)
    return folder


def side_databases(target) -> list[str]:
    with connect(target, "postgres") as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, 'mks_db_restore_')"
                            " ORDER BY 1").fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("listing", [True, False], ids=["killed-checking-the-backup", "killed-restoring"])
def test_a_db_restore_killed_halfway_then_run_again_ends_recovered_losing_nothing(stack, listing,
                                                                                   monkeypatch):
    target = stack.target()
    dump = Path(next(s for s in backup_database(target).steps if s.name == "dump").details["path"])
    before, sides = state(stack), side_databases(target)
    bindir = slow_bindir(stack, stack.sandbox.root / f"slow-bin-{listing}", listing)
    slow = dataclasses.replace(target, database=dataclasses.replace(target.database, bindir=str(bindir)))
    target_file = stack.sandbox.root / f"slow-target-{listing}.yml"
    target_file.write_text(slow.to_yaml())
    # the operator's session: the CLI and its children in a process group of their own, all killed
    cli = subprocess.Popen([sys.executable, "-m", "recovery", "--target", str(target_file), "db-restore",
                            "--backup", str(dump)], cwd=PROJECT, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until("pg_restore to start", lambda: (bindir / "started").exists(), timeout=60, interval=0.05)
    finally:
        os.killpg(cli.pid, signal.SIGKILL)
        cli.communicate(timeout=30)
    killed = state(stack)
    assert killed.healthy and compare(before.data, killed.data) == []  # production untouched
    assert before.copies <= killed.copies
    left = sorted(set(side_databases(target)) - set(sides))
    # killed while restoring: the half-restored side database stays (never swapped in)
    assert len(left) == (0 if listing else 1), left

    if left:  # run again within the killed run's second, as an operator's retry can: its names are all taken
        killed_stamp = left[0].removeprefix("mks_db_restore_")
        monkeypatch.setattr(backups, "stamp", lambda now=None: killed_stamp)
    journal = restore_database(target, backup=dump)
    assert journal.status == "succeeded", journal.to_json()
    again = state(stack)
    assert again.healthy and compare(before.data, again.data) == []
    assert before.copies <= again.copies
    # what the killed run left (its side database and role) is removed by the next run, which says so
    assert not set(left) & set(side_databases(target))
    create_side = next(s for s in journal.steps if s.name == "create_side")
    removed = create_side.details.get("interrupted_restore_removed")
    if left:
        assert removed is not None and set(left) <= set(removed["databases"]) and removed["roles"], removed
    scratch = Path(target.paths.scratch_dir)
    assert not list(scratch.glob(".mks_db_restorer_*")), "a restore role's password file was left behind"
    with connect(target, "postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE starts_with(rolname, 'mks_db_restorer_')"
                            ).fetchone()[0] == 0


def test_a_second_restore_while_one_runs_is_refused_and_changes_nothing(stack):
    target = stack.target()
    before = state(stack)
    with restore_role.exclusive(target), pytest.raises(ActionFailed) as refused:  # one in progress
        restore_database(target)
    assert "another restore of mks_db is running" in str(refused.value)
    assert "nothing was changed" in str(refused.value)
    assert compare(before.data, state(stack).data) == []
    journal = restore_database(target)  # the lock went with its connection
    assert journal.status == "succeeded", journal.to_json()


def test_a_drill_whose_second_run_destroys_a_safety_copy_fails_its_idempotence_check(stack, drill_runner,
                                                                                      drill_settings):
    runs: list[int] = []

    def recover_then_tidy_up(run) -> None:
        recover_uploads(run)
        if runs:  # the second run also "tidies up" the folders the restores kept
            for copy in safety_copies.find(run.target):
                if copy.kind == "uploads-folder":
                    shutil.rmtree(copy.path)
        runs.append(1)

    drill = sabotaged(UPLOADS, recover=recover_then_tidy_up, forecast=())
    with pytest.raises(DrillFailed) as caught:
        drill_runner(drill, stack, dataclasses.replace(drill_settings, forecaster=None))
    record = caught.value.record
    check = next(c for c in record.checks if c.name == "idempotence")
    assert not check.passed and "safety copy destroyed: " in check.detail and ".uploads.old-" in check.detail
    assert "not idempotent: safety copy destroyed" in record.failure_reason
    assert record.recovery_seconds is None
