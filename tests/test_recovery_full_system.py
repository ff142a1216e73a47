"""完全システム復旧: full recovery of a wrecked server, and migration onto a new one after the old is gone."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from recovery.archives import listing
from recovery.backups import sidecar, stamp
from recovery.config_files import backup_config
from recovery.database import backup_database
from recovery.errors import RecoveryError
from recovery.full_system import compare_config, compose, full_recovery, migrate_to_new_server
from recovery.integrity import Fingerprint, compare, fingerprint
from recovery.journal import ActionFailed, Journal
from recovery.uploads import backup_uploads


def step(journal, name: str):
    return next(s for s in journal.steps if s.name == name)


def restored(journal) -> Fingerprint:
    """The fingerprint the action took after the restore, before its post checks added a document."""
    return Fingerprint.from_dict(step(journal, "integrity").details["fingerprint"])


def backups_of(target) -> Path:
    """A database dump, an uploads archive and a config tarball, as the nightly jobs make them."""
    journal = backup_database(target)
    backup_uploads(target)
    backup_config(target)
    return Path(step(journal, "dump").details["path"])


def no_secret_in(journal, *stacks) -> None:
    text = json.dumps(journal.to_dict(), ensure_ascii=False)
    for stack in stacks:
        assert all(secret not in text for secret in stack.secrets.values())


def test_compare_config_names_keys_and_never_values():
    old = {"database": {"port": 1, "password": "a"}, "uploads": {"dir": "/x"}, "auth": {"ttl": 1}}
    new = {"database": {"port": 2, "password": "b"}, "uploads": {"dir": "/y"}, "auth": {"ttl": 2}}
    found = compare_config(old, new)
    assert found == {"host_keys_differing": ["database.password", "database.port", "uploads.dir"],
                     "application_keys_differing": ["auth.ttl"]}
    assert not {"/x", "/y", '"a"', '"b"'} & {v for v in ("/x", "/y", '"a"', '"b"') if v in json.dumps(found)}


def test_a_failed_sub_action_keeps_its_steps_and_the_error_names_the_step():
    outer = Journal("full_recovery", "完全システム復旧", "t")

    def restore() -> Journal:
        inner = Journal("database_restore", "db", "t")
        try:
            with inner.step("select_backup", "最新バックアップ確認"):
                pass
            with inner.step("pg_restore", "リストア実行"):
                raise RecoveryError("could not read from input file")
        except RecoveryError as exc:
            inner.finish(exc)
            raise ActionFailed(inner, exc) from exc
        return inner.finish()

    with pytest.raises(RecoveryError) as caught:
        compose(outer, "database", "データベース復旧", restore)
    assert [(s.name, s.status) for s in outer.steps] == [("database/select_backup", "ok"),
                                                         ("database/pg_restore", "failed")]
    assert outer.steps[1].details["action"] == "database_restore"
    failure = ActionFailed(outer.finish(caught.value), caught.value)
    assert str(failure) == ("full_recovery failed at step database/pg_restore"
                            " (データベース復旧: リストア実行): could not read from input file")


@pytest.mark.stack
def test_full_recovery_after_the_database_is_dropped_and_the_uploads_wiped(stack):
    target = stack.target()
    password = stack.secrets.admin_password
    good = backups_of(target)
    baseline = fingerprint(target)
    # a newer dump that is damaged (its checksum does not match) must be passed over, not restored
    corrupt = good.with_name(f"db_{stamp(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))}.dump")
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    sidecar(corrupt).write_text(sidecar(good).read_text().split()[0] + f"  {corrupt.name}\n")
    stack.sandbox.give(corrupt)

    backup_dir = Path(target.paths.backup_dir)

    def files() -> tuple[object, ...]:
        return (listing(stack.uploads_dir), listing(stack.root / "etc"), sorted(backup_dir.glob("*_*")))

    def pids() -> list[int | None]:
        return [stack.services.main_pid(name) for name in ("postgresql", "mks-backend", "nginx")]

    before, running = files(), pids()
    plan = full_recovery(target, password=password, dry_run=True)
    assert plan.status == "planned" and {s.status for s in plan.steps} == {"planned"}
    names = [s.name for s in plan.steps]
    assert names.index("postgresql") < names.index("database/pg_restore") < names.index("start_nginx")
    assert files() == before and compare(baseline, fingerprint(target)) == []
    assert pids() == running, "a dry run stops and restarts nothing"

    # the wreck: the whole database and every uploaded file (hidden ones too) gone, the server down
    with stack.pg.connect() as conn:
        conn.execute("DROP DATABASE mks_db WITH (FORCE)")
    for child in stack.uploads_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    stack.services.stop("postgresql")
    with stack.client() as client:
        assert stack.health(client) != 200, "the fault did not bite"

    journal = full_recovery(target, password=password, health_timeout=60)
    assert journal.status == "succeeded", journal.to_json()
    names = [s.name for s in journal.steps]
    assert names[:3] == ["verify_backups", "stop_services", "postgresql"]
    assert names.index("prepare") < names.index("database/select_backup") < names.index("uploads/select")
    assert names[-3:] == ["health", "integrity", "post_checks"]
    chosen = step(journal, "verify_backups").details
    assert chosen["database_dump"]["path"] == str(good)
    assert "does not match its sidecar" in chosen["database_dumps_skipped"][0]
    assert "was missing: created with the schema" in step(journal, "prepare").details["database"]
    assert step(journal, "database/select_backup").details["action"] == "database_restore"
    assert compare(baseline, restored(journal)) == []
    after = fingerprint(target)
    assert after.count("documents") == baseline.count("documents") + 1, "the post checks' upload"
    assert after.problems() == []
    stack.wait_healthy(timeout=10)
    no_secret_in(journal, stack)


@pytest.mark.stack
def test_migration_to_a_new_server_after_the_old_one_is_gone(stack_factory):
    old, new = stack_factory("old"), stack_factory("new", seed_scale=None)
    old_target, new_target = old.target(), new.target()
    new_backups = Path(new_target.paths.backup_dir)

    def state() -> tuple[object, ...]:
        pids = [new.services.main_pid(name) for name in ("postgresql", "mks-backend", "nginx")]
        return fingerprint(new_target), listing(new_backups), new.config_file.read_bytes(), pids

    untouched = state()

    def unchanged() -> None:
        assert state() == untouched
        new.wait_healthy(timeout=10)

    with pytest.raises(ActionFailed, match="no database backup found") as failure:
        migrate_to_new_server(old_target, new_target, password=old.secrets.admin_password)
    assert failure.value.journal.failed_step().name == "verify_backups"
    unchanged()
    plan = migrate_to_new_server(old_target, new_target, password=old.secrets.admin_password, dry_run=True)
    assert plan.status == "planned" and {s.status for s in plan.steps} == {"planned"}
    unchanged()

    backups_of(old_target)
    baseline = fingerprint(old_target)
    assert baseline.count("documents") > 0 and untouched[0].count("documents") == 0
    old_password = old.secrets.admin_password
    old_config_file = old.config_file

    def lose_the_old_server() -> None:
        old.down()

    journal = migrate_to_new_server(old_target, new_target, password=old_password,
                                    after_transfer=lose_the_old_server)
    assert journal.status == "succeeded", journal.to_json()
    assert old.sandbox is None and not old_config_file.exists(), "the old server was gone during the restore"
    names = [s.name for s in journal.steps]
    assert names.index("release_old") < names.index("database/pg_restore")

    # the old server's data on the new one: db rows, constraints and every file with its sha256
    assert compare(baseline, restored(journal)) == []
    sent = step(journal, "transfer").details["files"]
    assert {f["file"].split("_")[0] for f in sent} == {"db", "uploads", "config"}
    for item in sent:
        assert item["copied"] and (new_backups / item["file"]).is_file()
    # the new host's own environment: its config.yml (db port, password, paths) kept byte for byte
    assert new.config_file.read_bytes() == untouched[2]
    kept = step(journal, "environment_config").details
    assert "database.port" in kept["host_keys_differing"]
    assert kept["application_keys_differing"] == []
    assert kept["not_installed"] == ["etc/mks/config.yml", "etc/nginx/sites-available/mks"]
    assert step(journal, "post_checks").status == "ok"
    with new.client() as client:  # the old server's users log in on the new one
        response = client.post("/api/v1/auth/login", json={"username": "admin", "password": old_password})
        assert response.status_code == 200
    no_secret_in(journal, new, old)
