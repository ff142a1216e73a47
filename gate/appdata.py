"""What the gate knows of the app's data: all of it from the app profile (the stack's recovery target).

- Marks: rows the gate writes between backups and around a point-in-time target, in a table of its
  own (public.gate_marks) created in the app's database, so that any app's dump, base backup and WAL
  carry them. The table is not one of the profile's, so the fingerprints never see it.
- The profile's tables, their parent/child relation (when the profile has one), and its file store
  (an uploads folder, or a data directory and its pattern): what the wrong states and oracles touch.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fixtures.engine.faults import FaultDidNotBite
from recovery import integrity
from recovery.target import Target

MARKS = "public.gate_marks"
NO_RELATION = "the app profile names no parent/child relation (integrity.relation)"


def _table(qualified: str) -> sql.Composable:
    schema, _, table = qualified.rpartition(".")
    return sql.Identifier(schema or "public", table)


def create_marks(target: Target) -> None:
    """The gate's table, owned by the app's account like the app's own tables (a restore as either
    account brings it back)."""
    with integrity.connect(target, target.database.name, superuser=False) as conn:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id serial PRIMARY KEY, name text NOT NULL, "
                             "at timestamptz NOT NULL DEFAULT clock_timestamp())").format(_table(MARKS)))


def mark(target: Target, name: str) -> None:
    with integrity.connect(target, target.database.name, superuser=False) as conn:
        conn.execute(sql.SQL("INSERT INTO {} (name) VALUES (%s)").format(_table(MARKS)), (name,))


def marked(conn: psycopg.Connection, name: str) -> int:
    """How many marks of that name the database holds (the table missing is an error: nothing restored)."""
    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE name = %s").format(_table(MARKS)),
                       (name,)).fetchone()
    return int(row[0]) if row else 0


def delete_marks(target: Target) -> dict[str, Any]:
    """DeleteRowsByMistake's mistake on the gate's marks (its details: the time just before it), for an
    app whose profile names no relation."""
    with integrity.connect(target, target.database.name) as conn:
        before = count(conn, MARKS)
        time.sleep(0.2)  # commits before the target and the mistake after it are apart in time
        target_time = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.2)
        deleted = delete_some(conn, MARKS, before)
    return {"target_time": target_time.isoformat(), "documents_before": before, "deleted": deleted,
            "table": MARKS}


def count(conn: psycopg.Connection, table: str, but: str | None = None) -> int:
    """Rows of a table (of the gate's marks: all but those named `but`)."""
    if table == MARKS and but is not None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE name <> %s").format(_table(MARKS)),
                           (but,)).fetchone()
    else:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(table))).fetchone()
    return int(row[0]) if row else 0


def confirm_marks_deleted(target: Target, details: dict[str, Any], but: str) -> str:
    """delete_marks bit: fewer marks than before (those named `but`, written after it, not counted)."""
    with integrity.connect(target, target.database.name) as conn:
        now = count(conn, MARKS, but=but)
    if not details["deleted"] or now >= details["documents_before"]:
        raise FaultDidNotBite(f"no rows of {MARKS} were deleted ({details['documents_before']} -> {now})")
    return f"{MARKS}: {details['documents_before']} -> {now} rows"


def counts(conn: psycopg.Connection, target: Target) -> dict[str, int]:
    """Rows per table of the profile."""
    return {table: count(conn, table) for table in target.app.tables}


def first_nonempty(conn: psycopg.Connection, target: Target) -> str | None:
    """The relation's child when it has rows, else the profile's first table that has rows."""
    relation = target.app.relation
    ordered = ([relation.child] if relation else []) + list(target.app.tables)
    return next((t for t in ordered if count(conn, t) > 0), None)


def empty_tables(found: dict[str, int], target: Target) -> list[str]:
    """Tables of the profile that are empty though the profile says they may not be."""
    return [t for t, n in found.items() if n == 0 and t not in target.app.may_be_empty]


def delete_some(conn: psycopg.Connection, table: str, limit: int) -> int:
    """Delete the last `limit` rows of a table (by physical position: no key column assumed), past any
    foreign key (the session replicates: no trigger fires). Needs a superuser's connection."""
    conn.execute("SET session_replication_role = replica")
    try:
        t = _table(table)
        return conn.execute(sql.SQL("DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} ORDER BY ctid DESC "
                                    "LIMIT %s)").format(t=t), (limit,)).rowcount
    finally:
        conn.execute("RESET session_replication_role")


def orphan_one(conn: psycopg.Connection, target: Target) -> str:
    """Point one child row at a parent that does not exist (past the foreign key); returns the child."""
    relation = target.app.relation
    if relation is None:
        raise ValueError(NO_RELATION)
    child, parent, column = _table(relation.child), _table(relation.parent), sql.Identifier(relation.column)
    conn.execute("SET session_replication_role = replica")
    try:
        changed = conn.execute(sql.SQL(
            "UPDATE {c} SET {k} = (SELECT coalesce(max(id), 0) + 1000 FROM {p}) "
            "WHERE ctid = (SELECT ctid FROM {c} ORDER BY ctid LIMIT 1)").format(c=child, p=parent, k=column)
        ).rowcount
    finally:
        conn.execute("RESET session_replication_role")
    if not changed:
        raise ValueError(f"{relation.child} has no row to orphan")
    return relation.child


def store_files(target: Target) -> list[Path]:
    """The file store's files: every file of the uploads folder, or of the data directory's pattern."""
    folder = Path(target.paths.uploads_dir)
    files = target.app.files
    found = folder.glob(files.pattern) if files.kind == "data_dir" else folder.rglob("*")
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def _member(target: Target, path: str) -> str:
    """A path of the target (the runbook's, below the target's root) as an archive member relative to /."""
    return Path(path).relative_to(target.root).as_posix()


def store_member(target: Target) -> str:
    """The file store as a member of an archive made relative to / (opt/mks/uploads)."""
    return _member(target, target.paths.uploads_dir)


def config_members(target: Target) -> list[str]:
    """What a config backup holds, relative to /: the app's config file, the nginx site, and the checkout
    files that 設定ファイル復旧 restores from git."""
    backend = _member(target, target.paths.backend_dir)
    return [_member(target, target.paths.config_file), _member(target, target.paths.nginx_site),
            *(f"{backend}/{name}" for name in target.app.git_restores)]


def upload_grew(diff: str, before: integrity.Fingerprint, after: integrity.Fingerprint,
                target: Target) -> bool:
    """A test upload (機能テスト) adds rows to the relation's child (and files); more is not a loss: the
    diff is one that the child's new count and per-parent counts alone make."""
    relation = target.app.relation
    if relation is None or target.app.upload_path is None:
        return False
    child = integrity.label(relation.child)
    now = dict(after.row_counts)
    if now.get(child, 0) <= dict(before.row_counts).get(child, 0):
        return False
    grown = dataclasses.replace(before, children_per_parent=after.children_per_parent, row_counts=tuple(
        (table, now[table] if table == child else rows) for table, rows in before.row_counts))
    return diff in integrity.compare(before, grown)
