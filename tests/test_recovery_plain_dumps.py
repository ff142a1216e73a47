"""データベースバックアップからの復旧 from a plain-SQL dump (`pg_dump > db.sql`, `pg_dump | gzip`): restored
through psql with ON_ERROR_STOP beside the live database, verified, swapped; every bad input refused
with the live database as it was. Real PostgreSQL, real pg_dump and psql."""

from __future__ import annotations

import gzip
from pathlib import Path

import psycopg
import pytest

from fixtures.stack.postgres import APP_DB
from recovery import backups, health
from recovery.commands import run
from recovery.database import restore_database
from recovery.integrity import compare, fingerprint
from recovery.journal import ActionFailed
from tests.test_recovery_database import databases, step_detail

pytestmark = pytest.mark.stack


def plain_dump(stack, path: Path, *extra: str, dbname: str = APP_DB) -> Path:
    """pg_dump's plain format as the service account, as a cron job writes it."""
    target = stack.target()
    sql = path.with_name(path.name.removesuffix(".gz"))
    run([target.database.tool("pg_dump"), "-Fp", "-U", "postgres", "-d", dbname, *extra, "-f", str(sql)],
        timeout=120, run_as=stack.sandbox.service_account, env=target.database.env())
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(sql.read_bytes()))
        sql.unlink()
    return path


def test_a_plain_sql_dump_and_a_gzipped_one_are_restored_beside_and_swapped_in(stack):
    target = stack.target()
    backup_dir = Path(target.paths.backup_dir)
    backed_up = fingerprint(target)
    dump = plain_dump(stack, backup_dir / f"db_{backups.stamp()}.sql.gz")
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("DELETE FROM documents WHERE project_id = (SELECT min(project_id) FROM documents)")
        conn.execute("UPDATE projects SET name = 'changed by mistake'")
    damaged = fingerprint(target)
    assert compare(backed_up, damaged)

    journal = restore_database(target, level="RTO-24")  # the newest valid dump: the .sql.gz
    assert journal.status == "succeeded", journal.to_json()
    assert Path(step_detail(journal, "select_backup", "backup")) == dump
    assert step_detail(journal, "select_backup", "format") == "PLAIN"
    assert "plain SQL, gunzipped" in step_detail(journal, "pg_restore", "input")
    assert step_detail(journal, "verify_side", "row_counts") == dict(backed_up.row_counts)
    assert compare(backed_up, fingerprint(target)) == []
    assert not [d for d in databases(stack) if d.startswith("mks_db_restore_")]
    with stack.client() as client:
        assert stack.health(client) == 200
        token = stack.login(client)
        assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    # an uncompressed .sql (here of a damaged state) restores as well
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute("UPDATE projects SET name = 'changed by mistake'")
    damaged = fingerprint(target)
    plain = plain_dump(stack, backup_dir / f"db_{backups.stamp()}.sql")
    restore_database(target, level="RTO-24", backup=dump)
    assert compare(backed_up, fingerprint(target)) == []
    journal = restore_database(target, level="RTO-1", backup=plain)
    assert "plain SQL)" in step_detail(journal, "pg_restore", "input")
    assert compare(damaged, fingerprint(target)) == []

    # a custom-format dump made by hand, without the sidecar and row counts backup_database writes
    custom = backup_dir / f"db_{backups.stamp()}.dump"
    run([target.database.tool("pg_dump"), "-Fc", "-U", "postgres", "-d", APP_DB, "-f", str(custom)],
        timeout=120, run_as=stack.sandbox.service_account, env=target.database.env())
    restore_database(target, level="RTO-24", backup=dump)
    journal = restore_database(target, level="RTO-1", backup=custom)
    assert step_detail(journal, "select_backup", "sidecar_checked") is False
    assert compare(damaged, fingerprint(target)) == []


def test_bad_plain_dumps_are_refused_and_the_live_database_is_left_as_it_was(stack):
    target = stack.target()
    backup_dir = Path(target.paths.backup_dir)
    good = plain_dump(stack, backup_dir / f"db_{backups.stamp()}.sql")
    text = good.read_bytes()
    live = fingerprint(target)
    names = databases(stack)

    def refused(expected: str, ext: str, content: bytes | None = None, *,
                step: str = "select_backup") -> None:
        path = backup_dir / (ext if ext.startswith("db_") else f"db_{backups.stamp()}{ext}")
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ActionFailed) as caught:
            restore_database(target, level="RTO-24", backup=path, max_age=None)
        assert expected in str(caught.value), str(caught.value)
        assert caught.value.journal.failed_step().name == step
        assert compare(live, fingerprint(target)) == []
        assert databases(stack) == names
        assert health.backend(target).ok
        path.unlink()

    packed = gzip.compress(text)
    refused("truncated: the gzip stream ends before its end marker", ".sql.gz", packed[: len(packed) // 2])
    refused("not gzip (no gzip magic) (it looks like plain SQL text: name it .sql)", ".sql.gz", text)
    refused("corrupt gzip stream", ".sql.gz", packed[:-8] + b"\0" * 8)  # its CRC and length wrong
    refused("gzip-compressed, but named .sql", ".sql", packed)
    refused("empty file", ".sql.gz", b"")
    cut = text[: text.index(b"COPY public.documents")] + text[text.index(b"COPY public.documents"):][:200]
    refused("truncated: it ends inside the data of table documents", ".sql", cut)
    ending = text.index(b"-- PostgreSQL database dump complete")
    refused("truncated: no '-- PostgreSQL database dump complete' line", ".sql", text[:ending])
    refused("not a pg_dump plain-format dump", ".sql", b"DROP TABLE users;\n")
    refused("the psql meta-command '\\\\! touch /tmp/owned'", ".sql",
            text.replace(b"SET statement_timeout = 0;", b"\\! touch /tmp/owned\nSET statement_timeout = 0;"))
    assert not Path("/tmp/owned").exists()
    created = plain_dump(stack, backup_dir / f"db_{backups.stamp()}.sql", "--create")
    refused("a dump made with --create", created.name)
    with stack.pg.connect() as conn:
        conn.execute("CREATE DATABASE other_db OWNER mks_user")
    names = databases(stack)
    with psycopg.connect(stack.pg.conninfo("other_db"), autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int); INSERT INTO notes VALUES (1)")
    other = plain_dump(stack, backup_dir / f"db_{backups.stamp()}.sql", dbname="other_db")
    refused("holds no data for any of the tables users, projects, documents", other.name)
    backups.sidecar(good).write_text("0" * 64 + "  " + good.name + "\n")
    refused("does not match its sidecar", good.name, text)
    backups.sidecar(good).unlink()

    # what only psql can find: a statement the server refuses stops the script (ON_ERROR_STOP), the
    # side database is dropped
    broken = text.replace(b"COPY public.projects", b"COPY public.no_such_table", 1)
    refused('relation "public.no_such_table" does not exist', ".sql", broken, step="pg_restore")
    assert not [d for d in databases(stack) if d.startswith("mks_db_restore_")]

    # the level's age rule holds for a plain dump too (its time from its name)
    old = plain_dump(stack, backup_dir / "db_20000101_000000.sql")
    with pytest.raises(ActionFailed, match=r"the level allows at most 1\.0 h"):
        restore_database(target, level="RTO-4", backup=old)
    assert compare(live, fingerprint(target)) == []
