"""リストア確認, beyond counts and keys: what a restored database must also prove before it is swapped in.

- its foreign keys, per schema of the dump (every schema the dump holds, not only the profile's tables');
- every sequence owned by a column of a listed table at or above the column's max (else the next INSERT
  fails with a duplicate key);
- its catalog against a reference (the live database's before the swap, or a file the target names):
  constraints and their validity, triggers and their enabled state, functions, row-level security and
  its policies, grants, extensions and their versions. Only what the restored copy lost or weakened is
  a failure; what it has more (the live database was damaged by the fault) is not;
- collation versions: the one each collation and the database recorded against the system's;

Every function here takes a connection; recovery.restore_checks runs them (and pg_amcheck) on a restored
copy, recovery.integrity's fingerprint carries the catalog, sequences and collations of a database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from recovery.errors import RecoveryError

Catalog = dict[str, dict[str, Any]]


def label(name: str) -> str:
    """A name in messages: without the schema when it is public (as recovery.integrity names tables)."""
    return name.removeprefix("public.")

_USER_SCHEMA = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
                " AND n.nspname NOT LIKE 'pg_temp%'")
_NOT_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"


def foreign_keys(conn: psycopg.Connection, schemas: list[str]) -> set[str]:
    """The FK constraints of these schemas, as schema.name."""
    return {r[0] for r in conn.execute(
        "SELECT n.nspname || '.' || c.conname FROM pg_constraint c JOIN pg_namespace n"
        " ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = ANY(%s)", (schemas,)).fetchall()}


def missing_foreign_keys(conn: psycopg.Connection, dump_keys: tuple[str, ...]) -> list[str]:
    """The dump's schema-qualified foreign keys that the restored database lacks (compared per schema
    of the dump: the same set on both sides)."""
    schemas = sorted({key.split(".", 1)[0] for key in dump_keys})
    found = foreign_keys(conn, schemas)
    return [f"foreign key missing after restore: {label(key)}" for key in sorted(set(dump_keys) - found)]


def sequence_problems(conn: psycopg.Connection, tables: tuple[str, ...]) -> list[str]:
    """Every sequence owned by a column of a listed table (serial or identity) must give a next value
    above the column's max."""
    owned = conn.execute(
        "SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname FROM pg_depend d"
        " JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " JOIN pg_namespace sn ON sn.oid = s.relnamespace"
        " JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid"
        " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
        " AND d.deptype IN ('a', 'i') AND tn.nspname || '.' || t.relname = ANY(%s) ORDER BY 2",
        (list(tables),)).fetchall()
    problems: list[str] = []
    for seq_schema, seq, schema, table, column in owned:
        seq_id, table_id, col_id = (sql.Identifier(seq_schema, seq),
                                    sql.Identifier(schema, table), sql.Identifier(column))
        last, called, increment = conn.execute(sql.SQL(
            "SELECT s.last_value, s.is_called, q.seqincrement FROM {} s, pg_sequence q"
            " WHERE q.seqrelid = %s::regclass").format(seq_id), (f"{seq_schema}.{seq}",)
        ).fetchone() or (0, False, 1)
        top = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(col_id, table_id)).fetchone()
        highest = top[0] if top else None
        following = last + increment if called else last
        if isinstance(highest, int) and increment > 0 and following <= highest:
            problems.append(f"sequence {label(seq_schema + '.' + seq)} gives {following} next, at or below "
                            f"max({label(schema + '.' + table)}.{column}) = {highest}: the next INSERT "
                            "fails with a duplicate key")
    return problems


# ---- the catalog ---------------------------------------------------------------------------

_QUERIES = {
    "constraints": "SELECT n.nspname || '.' || coalesce(r.relname || '.', '') || c.conname,"
                   " json_build_object('valid', c.convalidated, 'definition',"
                   " regexp_replace(pg_get_constraintdef(c.oid), ' NOT VALID$', ''))"
                   " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                   " LEFT JOIN pg_class r ON r.oid = c.conrelid WHERE " + _USER_SCHEMA,
    "triggers": "SELECT n.nspname || '.' || c.relname || '.' || t.tgname, json_build_object('enabled',"
                " t.tgenabled, 'definition', md5(pg_get_triggerdef(t.oid))) FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE NOT t.tgisinternal AND " + _USER_SCHEMA,
    "functions": "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)"
                 " || ')', json_build_object('definition', md5(pg_get_functiondef(p.oid))) FROM pg_proc p"
                 " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND "
                 + _USER_SCHEMA + " AND " + _NOT_EXTENSION.format(oid="p.oid"),
    "policies": "SELECT n.nspname || '.' || c.relname || '.' || p.polname, json_build_object('definition',"
                " md5(concat_ws('|', p.polcmd, p.polpermissive, p.polroles::text, pg_get_expr(p.polqual,"
                " p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)))) FROM pg_policy p"
                " JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace",
    "tables": "SELECT n.nspname || '.' || c.relname, json_build_object('rls', c.relrowsecurity, 'force',"
              " c.relforcerowsecurity, 'grants', (SELECT coalesce(json_agg(a::text ORDER BY a::text), '[]')"
              " FROM unnest(coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's'::\"char\""
              " ELSE 'r'::\"char\" END, c.relowner))) a))"
              " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
              " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND " + _USER_SCHEMA
              + " AND " + _NOT_EXTENSION.format(oid="c.oid"),
    "extensions": "SELECT extname, json_build_object('version', extversion) FROM pg_extension",
}


def snapshot(conn: psycopg.Connection) -> Catalog:
    """The catalog facts compared after a restore, as plain JSON-able values."""
    return {kind: {str(k): v for k, v in conn.execute(query).fetchall()} for kind, query in _QUERIES.items()}


def save(catalog: Catalog, path: Path) -> Path:
    text = json.dumps(catalog, indent=1, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def load(path: Path) -> Catalog:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecoveryError(f"catalog reference {path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise RecoveryError(f"catalog reference {path}: not a catalog (a mapping of mappings)")
    return data


def _privileges(acl: list[str]) -> dict[str, set[str]]:
    """grantee -> privilege letters, from aclitems such as "mks_user=arwd/postgres" (grantor ignored)."""
    out: dict[str, set[str]] = {}
    for item in acl:
        grantee, _, rest = item.partition("=")
        out.setdefault(grantee or "PUBLIC", set()).update(rest.split("/", 1)[0].replace("*", ""))
    return out


def compare_catalogs(before: Catalog, after: Catalog) -> list[str]:
    """What the restored catalog (`after`) lost or weakened against the reference, one named failure each."""
    problems: list[str] = []
    for kind in _QUERIES:
        old, new = before.get(kind, {}), after.get(kind, {})
        for key in sorted(old):
            name = label(key)
            if key not in new:
                problems.append(f"{_NOUN[kind]} {name} missing after restore")
                continue
            was, now = old[key], new[key]
            if kind == "constraints" and was.get("valid") and not now.get("valid"):
                problems.append(f"constraint {name.rpartition('.')[2]} NOT VALID after restore")
            elif kind == "triggers" and was.get("enabled") != now.get("enabled"):
                state = {k: _TRIGGER_STATE.get(v.get("enabled"), v.get("enabled")) for k, v in
                         (("was", was), ("now", now))}
                problems.append(f"trigger {name} {state['now']} after restore, {state['was']} before")
            elif kind == "extensions" and was.get("version") != now.get("version"):
                problems.append(f"extension {name} {now.get('version')} after restore, "
                                f"{was.get('version')} before")
            elif kind == "tables":
                problems += _table_problems(name, was, now)
            if kind != "tables" and was.get("definition") != now.get("definition"):
                problems.append(f"{_NOUN[kind]} {name} differs after restore")
    return problems


_NOUN = {"constraints": "constraint", "triggers": "trigger", "functions": "function", "policies": "policy",
         "tables": "table", "extensions": "extension"}
_TRIGGER_STATE = {"O": "enabled", "D": "disabled", "R": "enabled for replicas only", "A": "always enabled"}


def _table_problems(name: str, was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    problems = []
    if was.get("rls") and not now.get("rls"):
        problems.append(f"row-level security off on {name} after restore")
    if was.get("force") and not now.get("force"):
        problems.append(f"FORCE row-level security off on {name} after restore")
    old, new = _privileges(was.get("grants", [])), _privileges(now.get("grants", []))
    for grantee in sorted(old):
        lost = "".join(sorted(old[grantee] - new.get(grantee, set())))
        if lost:
            problems.append(f"grant on {name} to {grantee} lost after restore: {lost}")
    return problems


def collation_problems(conn: psycopg.Connection) -> list[str]:
    """Collations (and the database's default) whose recorded version is not the system's: the indexes
    built with them may order text differently from how it is now compared."""
    rows = conn.execute(
        "SELECT collname, collversion, pg_collation_actual_version(oid) FROM pg_collation"
        " WHERE collversion IS NOT NULL UNION ALL SELECT 'database ' || datname, datcollversion,"
        " pg_database_collation_actual_version(oid) FROM pg_database"
        " WHERE datname = current_database() AND datcollversion IS NOT NULL ORDER BY 1").fetchall()
    return [f"collation {name}: version {recorded} recorded, the system has {actual} (REINDEX what uses "
            "it, then ALTER ... REFRESH VERSION)" for name, recorded, actual in rows if recorded != actual]
