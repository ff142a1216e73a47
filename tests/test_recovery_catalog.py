"""リストア確認 beyond counts: foreign keys per schema of the dump, sequences, the catalog, collation
versions and pg_amcheck, each shown failing on a fixture that breaks exactly it (one stack for the module)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fixtures.stack.local import LocalStack
from fixtures.stack.plugin import module_stack
from recovery import catalog, restore_checks
from recovery.__main__ import main as recovery_main
from recovery.commands import run
from recovery.database import backup_database, restore_database, wait_answering
from recovery.integrity import compare, connect, fingerprint
from recovery.journal import ActionFailed, Journal
from reports import signing
from reports.__main__ import main as reports_main

pytestmark = pytest.mark.stack

SETUP = """
CREATE ROLE mks_reader NOLOGIN;
SET ROLE mks_user;
CREATE SCHEMA audit;
CREATE TABLE audit.access_logs (id serial PRIMARY KEY, user_id int NOT NULL REFERENCES public.users(id),
                                at timestamptz NOT NULL DEFAULT now());
INSERT INTO audit.access_logs (user_id) SELECT id FROM public.users;
GRANT USAGE ON SCHEMA audit TO mks_reader;
GRANT SELECT ON audit.access_logs TO mks_reader;
CREATE FUNCTION audit.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER documents_touch BEFORE UPDATE ON public.documents FOR EACH ROW EXECUTE FUNCTION audit.touch();
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY documents_all ON public.documents USING (true);
RESET ROLE;
"""


def add_audit_schema(stack: LocalStack) -> None:
    with stack.pg.connect("mks_db") as conn:
        conn.execute(SETUP)


stack = module_stack("catalog", add_audit_schema)


def step_detail(journal, name: str, key: str):
    return next(s for s in journal.steps if s.name == name).details[key]


@pytest.fixture(scope="module")
def dump(stack) -> Path:
    return Path(step_detail(backup_database(stack.target()), "dump", "path"))


def test_a_good_restore_passes_every_check_with_a_schema_the_profile_does_not_list(stack, dump):
    target = stack.target()  # app.tables: public.* only; audit.access_logs has an FK to public.users
    before = fingerprint(target)
    journal = restore_database(target, backup=dump)
    assert journal.status == "succeeded", journal.to_json()
    assert step_detail(journal, "verify_side", "catalog_reference") == "the live database mks_db"
    assert step_detail(journal, "verify_side", "heapcheck") == "pg_amcheck --heapallindexed: no corruption"
    assert compare(before, fingerprint(target)) == []
    with connect(target) as conn:
        assert "audit.access_logs_user_id_fkey" in catalog.foreign_keys(conn, ["audit"])


def test_db_restore_on_the_command_line_stamps_the_backup_it_proved(stack, dump, tmp_path, capsys):
    target_file = tmp_path / "target.yml"
    target_file.write_text(stack.target().to_yaml())
    private, public = signing.keygen(tmp_path / "keys" / "run.key")
    stamp = dump.with_name(dump.name + ".verified.json")
    stamp.unlink(missing_ok=True)
    assert recovery_main(["--target", str(target_file), "--stamp-key", str(private), "db-restore",
                          "--backup", str(dump)]) == 0
    assert f"verified_stamp: {stamp}" in capsys.readouterr().out
    assert reports_main(["verify-backup", str(dump), "--public-key", str(public)]) == 0
    assert "verify_side" in capsys.readouterr().out
    assert recovery_main(["--target", str(target_file), "--stamp-key", str(tmp_path / "none.key"),
                          "db-restore"]) == 2  # an unreadable key: refused before anything is touched

def test_a_restore_is_refused_when_its_sequence_is_behind_or_it_lost_row_level_security(stack):
    target = stack.target()
    with stack.pg.connect("mks_db") as conn:
        conn.execute("SELECT setval('documents_id_seq', 1)")
        old = Path(step_detail(backup_database(target), "dump", "path"))
        conn.execute("SELECT setval('documents_id_seq', (SELECT max(id) FROM documents))")
        conn.execute("ALTER TABLE projects ENABLE ROW LEVEL SECURITY")  # after the backup was made
        live = fingerprint(target)
        try:
            with pytest.raises(ActionFailed) as caught:
                restore_database(target, backup=old)
            assert compare(live, fingerprint(target)) == []  # the live database as it was
        finally:
            conn.execute("ALTER TABLE projects DISABLE ROW LEVEL SECURITY")
    message = str(caught.value)
    assert "sequence documents_id_seq gives 2 next, at or below max(documents.id)" in message, message
    assert "row-level security off on projects after restore" in message, message
    assert caught.value.journal.failed_step().name == "verify_side"


def test_a_reference_catalog_file_named_by_the_target_is_what_the_restore_is_compared_with(stack, dump,
                                                                                            tmp_path):
    target_file, reference = tmp_path / "target.yml", tmp_path / "catalog.json"
    target_file.write_text(stack.target().to_yaml())
    with stack.pg.connect("mks_db") as conn:
        conn.execute("ALTER TABLE projects ENABLE ROW LEVEL SECURITY")
        try:
            assert recovery_main(["--target", str(target_file), "catalog-snapshot", "--output",
                                  str(reference)]) == 0
        finally:
            conn.execute("ALTER TABLE projects DISABLE ROW LEVEL SECURITY")
    assert catalog.load(reference)["tables"]["public.projects"]["rls"] is True
    target = stack.target()
    named = dataclasses.replace(target, database=dataclasses.replace(target.database,
                                                                      catalog_reference=str(reference)))
    with pytest.raises(ActionFailed) as caught:  # the live database has no RLS on projects; the file has
        restore_database(named, backup=dump)
    assert "row-level security off on projects after restore" in str(caught.value)
    details = next(s for s in caught.value.journal.steps if s.name == "verify_side").details
    assert details["catalog_reference"] == str(reference)
    reference.write_text("[1, 2]")
    with pytest.raises(ActionFailed) as caught:
        restore_database(named, backup=dump)
    assert "catalog checks could not run: catalog reference" in str(caught.value)
    assert "not a catalog (a mapping of mappings)" in str(caught.value)

@pytest.fixture(scope="module")
def scratch(stack, dump) -> str:
    """A copy of the dump in a database of its own, to break one thing at a time."""
    target = stack.target()
    with stack.pg.connect() as conn:
        conn.execute("CREATE DATABASE scratch OWNER mks_user")
    run([target.database.tool("pg_restore"), "-U", "postgres", "-d", "scratch", str(dump)], timeout=120,
        run_as=stack.sandbox.service_account, env=target.database.env())
    return "scratch"


TOUCH = ("CREATE OR REPLACE FUNCTION audit.touch() RETURNS trigger LANGUAGE plpgsql"
         " AS $$ BEGIN RETURN NEW; END $$")
BREAKS = [
    ("ALTER TABLE documents DROP CONSTRAINT documents_project_id_fkey",
     "ALTER TABLE documents ADD CONSTRAINT documents_project_id_fkey FOREIGN KEY (project_id)"
     " REFERENCES projects(id)",
     "constraint documents.documents_project_id_fkey missing after restore"),
    ("ALTER TABLE documents DROP CONSTRAINT documents_project_id_fkey; ALTER TABLE documents ADD CONSTRAINT"
     " documents_project_id_fkey FOREIGN KEY (project_id) REFERENCES projects(id) NOT VALID",
     "ALTER TABLE documents VALIDATE CONSTRAINT documents_project_id_fkey",
     "constraint documents_project_id_fkey NOT VALID after restore"),
    ("ALTER TABLE documents DISABLE ROW LEVEL SECURITY", "ALTER TABLE documents ENABLE ROW LEVEL SECURITY",
     "row-level security off on documents after restore"),
    ("DROP POLICY documents_all ON documents", "CREATE POLICY documents_all ON documents USING (true)",
     "policy documents.documents_all missing after restore"),
    ("ALTER TABLE documents DISABLE TRIGGER documents_touch",
     "ALTER TABLE documents ENABLE TRIGGER documents_touch",
     "trigger documents.documents_touch disabled after restore, enabled before"),
    (TOUCH.replace("NEW", "OLD"), TOUCH,
     "function audit.touch() differs after restore"),
    ("REVOKE SELECT ON audit.access_logs FROM mks_reader", "GRANT SELECT ON audit.access_logs TO mks_reader",
     "grant on audit.access_logs to mks_reader lost after restore: r"),
    ("DROP EXTENSION amcheck; CREATE EXTENSION amcheck VERSION '1.2'", "ALTER EXTENSION amcheck UPDATE",
     "extension amcheck 1.2 after restore, 1.3 before"),
]


@pytest.mark.parametrize(("breaks", "mends", "failure"), BREAKS,
                         ids=[b[2].split(" after")[0].replace(" ", "-") for b in BREAKS])
def test_the_catalog_comparison_names_exactly_what_was_broken(stack, scratch, breaks, mends, failure):
    with stack.pg.connect(scratch) as conn:
        reference = catalog.snapshot(conn)
        assert catalog.compare_catalogs(reference, catalog.snapshot(conn)) == []
        conn.execute(breaks)
        try:
            assert catalog.compare_catalogs(reference, catalog.snapshot(conn)) == [failure]
        finally:
            conn.execute(mends)
        assert catalog.compare_catalogs(reference, catalog.snapshot(conn)) == []


def test_sequences_and_collation_versions_fail_on_their_fixture(stack, scratch):
    tables = tuple(stack.target().app.tables)
    with stack.pg.connect(scratch) as conn:
        assert catalog.sequence_problems(conn, tables) == []
        conn.execute("SELECT setval('projects_id_seq', 3)")
        assert catalog.sequence_problems(conn, tables) == [
            f"sequence projects_id_seq gives 4 next, at or below max(projects.id) = "
            f"{conn.execute('SELECT max(id) FROM projects').fetchone()[0]}: the next INSERT fails with a "
            "duplicate key"]
        conn.execute("SELECT setval('projects_id_seq', (SELECT max(id) FROM projects))")
        assert catalog.sequence_problems(conn, tables) == []

        assert catalog.collation_problems(conn) == []
        recorded = conn.execute("SELECT datcollversion FROM pg_database WHERE datname = %s",
                                (scratch,)).fetchone()[0]
        conn.execute("UPDATE pg_database SET datcollversion = '0.0-fixture' WHERE datname = %s", (scratch,))
        try:
            problems = catalog.collation_problems(conn)
        finally:
            conn.execute("UPDATE pg_database SET datcollversion = %s WHERE datname = %s", (recorded, scratch))
        assert len(problems) == 1 and problems[0].startswith(
            f"collation database {scratch}: version 0.0-fixture recorded, the system has"), problems
        assert catalog.collation_problems(conn) == []


def test_pg_amcheck_finds_a_damaged_index_page(stack, scratch):
    """Zeros written over a leaf page of documents' primary key, with the server stopped (runs last: it
    restarts PostgreSQL)."""
    target = stack.target()
    journal = Journal("heap_check", "pg_amcheck", target.name)
    with journal.step("good", "pg_amcheck") as step:
        assert restore_checks.heap_check(step, target, scratch) == []
    with stack.pg.connect(scratch) as conn:
        relative = conn.execute("SELECT pg_relation_filepath('documents_pkey')").fetchone()[0]
        conn.execute("CHECKPOINT")
    services = target.service_manager()
    services.stop(target.services.database)
    page = Path(target.database.data_dir) / relative
    with open(page, "r+b") as index:
        index.seek(8192)  # block 1: the first leaf (block 0 is the metapage)
        index.write(b"\0" * 8192)
    services.start(target.services.database)
    wait_answering(target, 30)
    with journal.step("damaged", "pg_amcheck") as step:
        problems = restore_checks.heap_check(step, target, scratch)
    assert problems and all(p.startswith("pg_amcheck: ") for p in problems), problems
    assert any("documents_pkey" in p for p in problems), problems
    small = dataclasses.replace(target, database=dataclasses.replace(target.database, heapcheck_max_bytes=1))
    with journal.step("over_budget", "pg_amcheck") as step:
        assert restore_checks.heap_check(step, small, scratch) == []
        assert step.record.details["heapcheck"].startswith("skipped: ")


def test_the_fingerprint_carries_the_catalog_so_drills_compare_it_with_the_baseline(stack):
    target = stack.target()
    baseline = fingerprint(target)
    assert baseline.problems() == [] and baseline.catalog
    with stack.pg.connect("mks_db") as conn:
        conn.execute("ALTER TABLE documents DISABLE ROW LEVEL SECURITY")
        conn.execute("SELECT setval('projects_id_seq', 1)")
        try:
            after = fingerprint(target)
        finally:
            conn.execute("ALTER TABLE documents ENABLE ROW LEVEL SECURITY")
            conn.execute("SELECT setval('projects_id_seq', (SELECT max(id) FROM projects))")
    assert compare(baseline, after) == ["row-level security off on documents after restore"]
    assert [p.split(",")[0] for p in after.problems()] == ["sequence projects_id_seq gives 2 next"]
    assert compare(baseline, fingerprint(target)) == [] and fingerprint(target).problems() == []
