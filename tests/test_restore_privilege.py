"""A backup cannot take over the server: hostile statements in real dumps are refused by the restore.

Each case is a real `pg_dump` of the live database with one hostile statement added before its end
(a plain dump: the statement as a line; a custom-format dump: the statement in a TOC entry's SQL),
restored with the command line an operator uses (`python -m recovery --target T db-restore --backup
FILE`). Each must be refused (exit status != 0, the statement's line or TOC entry and why named, no
traceback), and the live system keep what it had: the database's fingerprint, the roles, the
server's configuration files and settings, no file written by the statement, no side database or
restore role left behind. One stack serves every case (restores never change the live system when
refused). Real PostgreSQL, pg_dump, psql and pg_restore.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fixtures.apps.seeding import seed_stack
from fixtures.stack.local import LocalStack
from fixtures.stack.postgres import APP_DB
from recovery import backups
from recovery.commands import run
from recovery.database import backup_database, restore_database
from recovery.errors import RecoveryError
from recovery.full_system import prepare
from recovery.integrity import compare, fingerprint
from recovery.journal import Journal
from recovery.restore_role import unsafe

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
COMMENT_PAD = "x" * 400  # a table comment whose TOC entry's SQL a custom-format case overwrites


@pytest.fixture(scope="module")
def hostile_stack(stack_settings) -> Iterator[LocalStack]:
    stack = LocalStack(stack_settings, "hostile")
    try:
        stack.up()
        seed_stack(stack, 0.01)
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A folder outside the sandbox that the server's account could write to (so that only the
    restore's role stops a statement that writes there)."""
    folder = Path(tempfile.mkdtemp(prefix="mks-hostile-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def target_file(hostile_stack, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "target.yml"
    path.write_text(hostile_stack.target().to_yaml(), encoding="utf-8")
    return path


_made: list[int] = []


def dump_name(suffix: str) -> str:
    """db_YYYYmmdd_HHMMSS<suffix>, a distinct second for each dump of the module."""
    _made.append(len(_made))
    return f"db_{backups.stamp(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=len(_made)))}{suffix}"


def pg_dump(stack, *args: str) -> bytes:
    target = stack.target()
    out = Path(stack.target().paths.backup_dir) / ".hostile-source"
    run([target.database.tool("pg_dump"), *args, "-U", "postgres", "-d", APP_DB, "-f", str(out)],
        timeout=120, run_as=stack.sandbox.service_account, env=target.database.env())
    data = out.read_bytes()
    out.unlink()
    return data


@pytest.fixture(scope="module")
def plain_source(hostile_stack) -> bytes:
    return pg_dump(hostile_stack, "-Fp")


def commented_dump(stack) -> bytes:
    """A custom-format dump whose TOC has a COMMENT entry of known SQL, to be overwritten in place."""
    with psycopg.connect(stack.pg.conninfo(APP_DB), autocommit=True) as conn:
        conn.execute(f"COMMENT ON TABLE public.projects IS '{COMMENT_PAD}'")
        try:
            return pg_dump(stack, "-Fc")
        finally:
            conn.execute("COMMENT ON TABLE public.projects IS NULL")


@pytest.fixture(scope="module")
def custom_source(hostile_stack) -> bytes:
    return commented_dump(hostile_stack)


def hostile_plain(stack, source: bytes, statement: str) -> tuple[Path, int]:
    """The dump with `statement` added before its 'dump complete' comment; gzip'd; its line number."""
    end = source.index(b"\n--\n-- PostgreSQL database dump complete")
    head = source[:end] + b"\n"
    text = head + statement.encode() + b"\n" + source[end:]
    path = Path(stack.target().paths.backup_dir) / dump_name(".sql.gz")
    path.write_bytes(gzip.compress(text))
    return path, head.count(b"\n") + 1 + statement.count("\n")


def hostile_custom(stack, source: bytes, statement: str) -> Path:
    """The dump with the COMMENT entry's SQL replaced by `statement` (padded to the same length, so
    the archive stays well-formed: the TOC keeps each string's length before it)."""
    original = f"COMMENT ON TABLE public.projects IS '{COMMENT_PAD}';".encode()
    assert source.count(original) == 1
    replacement = (statement + " --").encode()
    assert len(replacement) <= len(original)
    data = source.replace(original, replacement + b" " * (len(original) - len(replacement)))
    path = Path(stack.target().paths.backup_dir) / dump_name(".dump")
    path.write_bytes(data)
    return path


def restore_cli(target_file: Path, backup: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recovery", "--target", str(target_file), "db-restore",
                           "--backup", str(backup)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def live_state(stack) -> dict[str, object]:
    """What a refused restore must leave as it was (beside the database's fingerprint)."""
    with stack.pg.connect() as conn:
        roles = conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin"
                             " FROM pg_roles ORDER BY 1").fetchall()
        memberships = conn.execute("SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members"
                                   " ORDER BY 1, 2").fetchall()
        files = conn.execute("SELECT sourcefile, sourceline, name, setting FROM pg_file_settings"
                             " ORDER BY 1, 2").fetchall()
        databases = conn.execute("SELECT datname, datdba::regrole::text, datallowconn, datconnlimit"
                                 " FROM pg_database ORDER BY 1").fetchall()
        settings = conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('archive_command',"
                                " 'shared_preload_libraries', 'restore_command') ORDER BY 1").fetchall()
        db_settings = conn.execute("SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting"
                                   " ORDER BY 1, 2").fetchall()
    auto = Path(stack.target().database.data_dir) / "postgresql.auto.conf"
    return {"roles": roles, "memberships": memberships, "file_settings": files, "databases": databases,
            "settings": settings, "db_role_settings": db_settings, "auto_conf": auto.read_bytes()}


def marker_statement(kind: str, marker: Path) -> str:
    statements = {
        "copy_to_program": f"COPY (SELECT 1) TO PROGRAM 'touch {marker}';",
        "copy_from_program": f"COPY public.alembic_version FROM PROGRAM 'touch {marker}; echo x';",
        "do_block": f"DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END$$;",
        "alter_system": f"ALTER SYSTEM SET archive_command = 'touch {marker}';",
        "lo_export": f"SELECT lo_export(lo_from_bytea(0, 'x'), '{marker}');",
    }
    return statements[kind]


# (case, the statement (with {marker}), what the refusal names as the reason)
CASES = [
    ("copy_to_program", None, "pg_execute_server_program"),
    ("copy_from_program", None, "pg_execute_server_program"),
    ("drop_live_database", f"DROP DATABASE {APP_DB} WITH (FORCE);", "must be owner of database"),
    ("create_superuser", "CREATE ROLE someone SUPERUSER LOGIN;", "must be superuser to create superusers"),
    ("alter_system", None, 'permission denied to set parameter "archive_command"'),
    ("read_server_file", "SELECT pg_read_file('/etc/passwd');",
     "permission denied for function pg_read_file"),
    ("lo_import", "SELECT lo_import('/etc/passwd');", "permission denied for function lo_import"),
    ("lo_export", None, "permission denied for function lo_export"),
    ("grant_program_role", "GRANT pg_execute_server_program TO CURRENT_USER;",
     'must have admin option on role "pg_execute_server_program"'),
    ("set_role", "SET ROLE postgres;", "permission denied to set role"),
    ("session_authorization", "RESET ROLE;\nSET SESSION AUTHORIZATION postgres;",
     "permission denied to set session authorization"),
    ("do_block", None, "pg_execute_server_program"),
]


def check_refused(stack, result: subprocess.CompletedProcess[str], before, state, marker: Path,
                  *expected: str) -> str:
    said = result.stdout + result.stderr
    assert not marker.exists(), f"the statement wrote {marker}"
    assert result.returncode != 0, said
    assert "Traceback" not in said, said
    for text in expected:
        assert text in said, said
    assert compare(before, fingerprint(stack.target())) == []
    assert live_state(stack) == state
    assert not [r for r in live_state(stack)["roles"] if "restorer" in r[0]]  # type: ignore[attr-defined]
    return said


@pytest.mark.parametrize(("case", "statement", "reason"), CASES, ids=[c[0] for c in CASES])
def test_a_hostile_statement_in_a_plain_dump_is_refused(hostile_stack, plain_source, target_file, outside,
                                                        case, statement, reason):
    marker = outside / f"plain-{case}"
    statement = statement or marker_statement(case, marker)
    before, state = fingerprint(hostile_stack.target()), live_state(hostile_stack)
    path, line = hostile_plain(hostile_stack, plain_source, statement)
    result = restore_cli(target_file, path)
    check_refused(hostile_stack, result, before, state, marker, f"line {line}: ", reason, "refused")


CUSTOM_CASES = [c for c in CASES if c[0] in ("copy_to_program", "drop_live_database", "create_superuser",
                                            "alter_system", "read_server_file", "session_authorization",
                                            "do_block")]


@pytest.mark.parametrize(("case", "statement", "reason"), CUSTOM_CASES, ids=[c[0] for c in CUSTOM_CASES])
def test_a_hostile_statement_in_a_custom_dumps_toc_is_refused(hostile_stack, custom_source, target_file,
                                                              outside, case, statement, reason):
    marker = outside / f"custom-{case}"
    statement = (statement or marker_statement(case, marker)).replace("\n", " ")
    before, state = fingerprint(hostile_stack.target()), live_state(hostile_stack)
    path = hostile_custom(hostile_stack, custom_source, statement)
    result = restore_cli(target_file, path)
    check_refused(hostile_stack, result, before, state, marker, "TOC entry ", "COMMENT TABLE projects",
                  reason, "refused")


def test_an_extension_the_target_does_not_declare_is_refused_before_anything_runs(hostile_stack, plain_source,
                                                                                 target_file, outside):
    before, state = fingerprint(hostile_stack.target()), live_state(hostile_stack)
    path, line = hostile_plain(hostile_stack, plain_source, "CREATE EXTENSION IF NOT EXISTS pgcrypto;")
    result = restore_cli(target_file, path)
    check_refused(hostile_stack, result, before, state, outside / "none", f"line {line} creates extension "
                  "pgcrypto, which the target does not declare")


def test_an_honest_dump_still_restores_and_the_app_owns_it(hostile_stack, plain_source, custom_source,
                                                          target_file):
    """The same dumps without the hostile line restore; every object ends owned by the app's role."""
    target = hostile_stack.target()
    before = fingerprint(target)
    for path in (hostile_plain(hostile_stack, plain_source, "")[0],
                 hostile_custom(hostile_stack, custom_source, "SELECT 1;")):
        result = restore_cli(target_file, path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert compare(before, fingerprint(target)) == []
        with hostile_stack.pg.connect(APP_DB) as conn:
            owners = conn.execute("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c"
                                  " JOIN pg_namespace n ON n.oid = c.relnamespace"
                                  " WHERE n.nspname = 'public'").fetchall()
            database_owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database"
                                          " WHERE datname = current_database()").fetchone()
        assert owners == [(target.database.user,)]
        assert database_owner == (target.database.user,)
        assert not [r for r in live_state(hostile_stack)["roles"] if "restorer" in r[0]]  # type: ignore[attr-defined]


def test_an_app_with_schemas_of_its_own_restores_as_the_restore_role_and_its_owner_owns_it(stack_factory):
    """kiroku (three schemas): its custom and its plain dump restore beside, as the restore's role,
    and every schema and table ends owned by the app's role as before."""
    stack = stack_factory("kiroku", app=ROOT / "fixtures" / "apps" / "kiroku" / "profile.yml")
    target = stack.target()

    def owners() -> list[tuple[str, str]]:
        with stack.pg.connect(APP_DB) as conn:
            return conn.execute(
                "SELECT n.nspname || '.' || coalesce(c.relname, ''), pg_get_userbyid(coalesce(c.relowner,"
                " n.nspowner)) FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid"
                " WHERE n.nspname IN ('auth', 'public', 'audit') ORDER BY 1").fetchall()

    before, owned = fingerprint(target), owners()
    assert {owner for _, owner in owned} <= {target.database.user, "pg_database_owner"}
    backup_dir = Path(target.paths.backup_dir)
    plain = backup_dir / dump_name(".sql")
    plain.write_bytes(pg_dump(stack, "-Fp"))
    backup_database(target)
    journal = restore_database(target, level="RTO-24")
    assert journal.status == "succeeded"
    assert journal.steps[2].details["role"].startswith(f"{APP_DB}_restorer_")
    assert compare(before, fingerprint(target)) == [] and owners() == owned
    assert restore_database(target, level="RTO-1", backup=plain).status == "succeeded"
    assert compare(before, fingerprint(target)) == [] and owners() == owned


def test_an_app_table_turned_into_a_view_is_refused_before_the_superuser_reads_it(hostile_stack, plain_source,
                                                                                 target_file, outside):
    """The restore role may make a view of an app table's name; its query (a function of the dump's)
    would run as the superuser that verifies the copy. Refused by the relation's kind, unread."""
    marker = outside / "view"
    statement = ("CREATE FUNCTION public.evil() RETURNS bigint LANGUAGE plpgsql AS $$BEGIN EXECUTE 'COPY "
                 f"(SELECT 1) TO PROGRAM ''touch {marker}'''; RETURN 1; END$$; DROP TABLE public.documents "
                 "CASCADE; CREATE VIEW public.documents AS SELECT public.evil() AS id, 1 AS project_id;")
    before, state = fingerprint(hostile_stack.target()), live_state(hostile_stack)
    path, _ = hostile_plain(hostile_stack, plain_source, statement)
    result = restore_cli(target_file, path)
    check_refused(hostile_stack, result, before, state, marker, "public.documents is a view, not a table")


def test_the_full_recoverys_schema_of_a_dropped_database_runs_as_the_restore_role(stack):
    """完全システム復旧 with the live database gone: its schema comes from the dump (before the restore
    beside it); a hostile TOC entry there is refused the same way and leaves no database or role."""
    target = stack.target()
    dump = hostile_custom(stack, commented_dump(stack), "CREATE ROLE someone SUPERUSER LOGIN;")
    with stack.pg.connect() as conn:
        conn.execute(f"DROP DATABASE {APP_DB} WITH (FORCE)")
    with pytest.raises(RecoveryError) as caught:
        prepare(Journal("prepare", "prepare", target.name), target, dump)
    assert "TOC entry " in str(caught.value) and "must be superuser to create superusers" in str(caught.value)
    with stack.pg.connect() as conn:
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()]
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert "someone" not in roles and not [r for r in roles if "restorer" in r]
    assert APP_DB not in dbs


def test_the_role_check_names_every_power_a_restore_role_must_not_have(hostile_stack):
    """restore_role.unsafe, which a made role must pass before the side database is made for it."""
    with hostile_stack.pg.connect() as conn:
        conn.execute("CREATE ROLE hostile_check_member LOGIN CREATEDB")
        try:
            conn.execute("GRANT pg_execute_server_program TO hostile_check_member")
            assert unsafe(conn, "postgres")[:3] == ["SUPERUSER", "CREATEROLE", "CREATEDB"]
            assert unsafe(conn, "hostile_check_member") == [
                "CREATEDB", "member of pg_execute_server_program (files, programs or other sessions)"]
            assert unsafe(conn, "no_such_role") == ["role no_such_role does not exist"]
            conn.execute("CREATE ROLE hostile_check_plain LOGIN")
            assert unsafe(conn, "hostile_check_plain") == []
        finally:
            conn.execute("DROP ROLE IF EXISTS hostile_check_member")
            conn.execute("DROP ROLE IF EXISTS hostile_check_plain")
