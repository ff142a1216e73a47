"""リストア確認 of a restored copy, before it is swapped in: recovery.catalog's checks against the live
database's catalog (or the file the target names), and `pg_amcheck --heapallindexed` within a size budget."""

from __future__ import annotations

from pathlib import Path

import psycopg

from recovery import catalog
from recovery.actions import action, option
from recovery.catalog import Catalog
from recovery.errors import CommandError, RecoveryError
from recovery.integrity import app_tables, connect
from recovery.journal import Journal, Step
from recovery.target import Target


def heap_check(step: Step, target: Target, dbname: str) -> list[str]:
    """pg_amcheck --heapallindexed (heap and every btree index, every tuple found in its indexes) when
    the database is within target.database.heapcheck_max_bytes; the amcheck extension is installed by
    pg_amcheck itself when the dump did not bring it."""
    db = target.database
    with connect(target, dbname) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    step.note("heapcheck_bytes", size)
    if size > db.heapcheck_max_bytes:
        step.note("heapcheck", f"skipped: {size} bytes, above the budget of {db.heapcheck_max_bytes} "
                               "(database.heapcheck_max_bytes)")
        return []
    if not Path(db.tool("pg_amcheck")).is_file():
        return [f"pg_amcheck: not found at {db.tool('pg_amcheck')} (PostgreSQL 14 or later has it; "
                "database.heapcheck_max_bytes: 0 skips the heap check)"]
    try:
        step.run([db.tool("pg_amcheck"), "-U", db.superuser, "-d", dbname, "--heapallindexed",
                  "--install-missing", "--no-strict-names"], timeout=3600, run_as=target.service_account(),
                 env=db.env())
    except CommandError as exc:
        lines = [line.strip() for line in (exc.stdout + "\n" + exc.stderr).splitlines() if line.strip()]
        return [f"pg_amcheck: {line}" for line in lines[:5]] or [f"pg_amcheck: {exc.reason}"]
    step.note("heapcheck", "pg_amcheck --heapallindexed: no corruption")
    return []


def reference_for(target: Target) -> tuple[Catalog | None, str]:
    """The catalog to compare a restored copy with: the file the target names, else the live database's
    (read before the swap); None when there is neither (the live database is gone), and why."""
    if target.database.catalog_reference:
        path = Path(target.database.catalog_reference)
        return catalog.load(path), str(path)
    try:
        return _snapshot_of(target, target.database.name), f"the live database {target.database.name}"
    except psycopg.Error as exc:
        why = str(exc).strip()[:120]
        return None, f"none: the live database {target.database.name} cannot be read ({why})"


def verify(step: Step, target: Target, dbname: str, dump_foreign_keys: tuple[str, ...]) -> list[str]:
    """Every check of this module on the restored database `dbname`, as named failures."""
    try:
        with connect(target, dbname) as conn:
            problems = catalog.missing_foreign_keys(conn, dump_foreign_keys)
            problems += catalog.sequence_problems(conn, app_tables(target))
            problems += catalog.collation_problems(conn)
            restored = catalog.snapshot(conn)
        reference, source = reference_for(target)
    except (psycopg.Error, RecoveryError) as exc:
        return [f"catalog checks could not run: {str(exc).strip()[:300]}"]
    step.note("catalog_reference", source)
    if reference is not None:
        problems += catalog.compare_catalogs(reference, restored)
    return problems + heap_check(step, target, dbname)


def _snapshot_of(target: Target, dbname: str) -> Catalog:
    with connect(target, dbname) as conn:
        return catalog.snapshot(conn)


@action("catalog-snapshot", "カタログ基準の保存", cli="catalog-snapshot",
        help="カタログ基準: write the live database's catalog (constraints, triggers, functions, policies, "
             "RLS, grants, extensions) to FILE, for database.catalog_reference",
        plan=(("snapshot", "カタログ基準の保存", "read the live database's catalog; write it as JSON"),),
        options=(option("--output", required=True, metavar="FILE", keyword="output"),))
def save_snapshot(journal: Journal, target: Target, output: str | Path) -> None:
    """The reference a restored copy's catalog is compared with, kept apart from the live database."""
    with journal.step("snapshot", "カタログ基準の保存") as step:
        found = _snapshot_of(target, target.database.name)
        step.note("path", str(catalog.save(found, Path(output))))
        step.note("objects", {kind: len(entries) for kind, entries in found.items()})
