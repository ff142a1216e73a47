"""Recovery actions run twice (Molecule's idempotence step): on a recovered system the second run leaves
the data, the files and the services as the first left them, and destroys none of the first run's
safety copies; a db-restore killed halfway and run again ends recovered, losing nothing. One stack."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.stack.local import LocalStack
from recovery import health, safety_copies
from recovery.archives import sha256_file
from recovery.config_files import backup_config, restore_config
from recovery.database import backup_database, restore_database
from recovery.integrity import Fingerprint, compare, connect, fingerprint
from recovery.uploads import backup_uploads, restore_uploads
from recovery.waiting import wait_until
from tests.shared_stack import module_stack

pytestmark = pytest.mark.stack
PROJECT = Path(__file__).resolve().parents[1]


stack = module_stack("twice")


@dataclass
class State:
    data: Fingerprint
    files: dict[str, Any]  # config files' sha256, the uploads folder's (name, size) listing
    services: dict[str, str]
    healthy: bool
    copies: set[str]


def state(stack: LocalStack) -> State:
    target = stack.target()
    uploads = Path(target.paths.uploads_dir)
    configs = (target.paths.config_file, target.paths.nginx_site)
    files: dict[str, Any] = {p: sha256_file(Path(p)) for p in configs}
    files["uploads"] = sorted((p.relative_to(uploads).as_posix(), p.stat().st_size)
                              for p in uploads.rglob("*") if p.is_file())
    manager = target.service_manager()
    services = {name: manager.status(name).active_state
                for name in (target.services.backend, target.services.database, target.services.web)}
    copies, why = safety_copies.find_all(target)
    assert not why, why
    return State(fingerprint(target), files, services, health.backend(target).ok,
                 {str(c.path) for c in copies})


def assert_second_run_changed_nothing(first: State, second: State) -> None:
    assert first.healthy and second.healthy
    assert compare(first.data, second.data) == []
    assert second.files == first.files
    assert second.services == first.services
    lost = first.copies - second.copies
    assert not lost, f"the second run destroyed the first run's safety copies: {sorted(lost)}"


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
def test_a_db_restore_killed_halfway_then_run_again_ends_recovered_losing_nothing(stack, listing):
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

    journal = restore_database(target, backup=dump)
    assert journal.status == "succeeded", journal.to_json()
    again = state(stack)
    assert again.healthy and compare(before.data, again.data) == []
    assert before.copies <= again.copies
    # what the killed run left is neither removed nor listed as a safety copy by the next run
    assert set(left) <= set(side_databases(target))
