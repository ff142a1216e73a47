"""Least privilege for the restore of a dump: a backup is untrusted input.

A dump is SQL (a plain script, or the statements of a custom archive's TOC), and its statements run
with the power of the role that restores them. So a dump is never restored as the superuser: the
harness makes a role for this one restore, LOGIN and nothing else (no superuser, no CREATEROLE,
CREATEDB, REPLICATION or BYPASSRLS, a member of no role), makes it the owner of the side database,
creates the extensions the target declares there itself, and only then runs the dump as that role.
A statement that needs more (a program, a server file, another database, a role, the server's
configuration) fails, and the restore with it, before any swap. Afterwards everything the role
owns is handed to the app's owner and the role is dropped.

The role's password is random, lives only in a password file of the restore's own (mode 0600, in
the scratch folder) and reaches the server only as a SCRAM verifier.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from recovery.errors import RecoveryError
from recovery.integrity import connect
from recovery.journal import Step
from recovery.postgres import ident, psql
from recovery.target import Target, ensure_dir

# predefined roles whose members reach files, programs or other sessions
UNSAFE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program",
                "pg_signal_backend", "pg_read_all_data", "pg_write_all_data", "pg_checkpoint")
# the extension statements pg_dump writes (one line each); the harness created the extension itself
_CREATE_EXTENSION = re.compile(rb'^CREATE EXTENSION IF NOT EXISTS "?([\w$]+)"? WITH SCHEMA \S+;$')
_COMMENT_EXTENSION = re.compile(rb"^COMMENT ON EXTENSION \"?([\w$]+)\"? IS '.*';$")
# pg_dump's ownership lines, skipped as pg_restore --no-owner does
_OWNER = re.compile(rb'^ALTER [A-Z ]+ .+ OWNER TO (?:\S+|"[^"]+");$')


class PrivilegeError(RecoveryError):
    """The role a restore would run as is more than it must be; nothing was restored."""


@dataclass(frozen=True)
class Restorer:
    """The role one restore runs as, and the password file its tools connect with."""

    name: str
    database: str
    passfile: Path

    def env(self, target: Target) -> dict[str, str]:
        return {**target.database.env(), "PGPASSFILE": str(self.passfile)}


def role_name(side: str) -> str:
    return ident(side.replace("_restore_", "_restorer_", 1))


def extensions(target: Target) -> tuple[str, ...]:
    """What the harness creates in the side database: amcheck (its own index check) and the app's."""
    return tuple(dict.fromkeys(ident(e) for e in ("amcheck", *target.app.extensions)))


@contextlib.contextmanager
def restorer(step: Step, target: Target, side: str, name: str | None = None) -> Iterator[Restorer]:
    """Make the role (`name`, else role_name(side)) and the database `side` it owns, with the declared
    extensions; on leaving, the password file is removed (the role itself goes in hand_over, or with
    drop on failure)."""
    name = ident(name or role_name(side))
    password = secrets.token_urlsafe(32)
    scratch = ensure_dir(Path(target.paths.scratch_dir), target, mode=0o700)
    passfile = scratch / f".{name}.pgpass"
    with connect(target, "postgres") as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                             "NOBYPASSRLS PASSWORD {}").format(sql.Identifier(name),
                                                                        sql.Literal(verifier.decode())))
        problems = unsafe(conn, name)
        if problems:
            raise PrivilegeError(f"the restore role {name} is more than it must be: {'; '.join(problems)}")
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(side),
                                                                   sql.Identifier(name)))
    step.note("restore_role", {"name": name, "superuser": False, "createrole": False, "createdb": False,
                               "memberships": [], "owns": side})
    with connect(target, side) as conn:
        for extension in extensions(target):
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
    step.note("extensions", list(extensions(target)))
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:{side}:{name}:{password}\n")
        account = target.service_account()
        if account is not None and not account.is_current:
            os.chown(passfile, account.uid, account.gid)
        yield Restorer(name, side, passfile)
    finally:
        passfile.unlink(missing_ok=True)


class RestoreRunning(PrivilegeError):
    """Another restore of the same database holds the restore lock."""


@contextlib.contextmanager
def exclusive(target: Target) -> Iterator[None]:
    """One restore of the app's database at a time: a session advisory lock, which the server drops
    when the holding connection ends, so a killed restore never leaves it held."""
    key = f"mks-drill restore of {target.database.name}"
    try:
        conn = connect(target, "postgres")
    except psycopg.OperationalError as exc:
        raise PrivilegeError(f"cannot take the restore lock: PostgreSQL does not answer: "
                             f"{str(exc).strip().splitlines()[0]}") from None
    with conn:
        got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
        if not (got and got[0]):
            holder = conn.execute("SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
                                  " AND l.objid = hashtext(%s)::oid", (key,)).fetchone()
            raise RestoreRunning(f"another restore of {target.database.name} is running (server process "
                                 f"{holder[0] if holder else '?'}): one at a time; nothing was changed")
        yield


def clear_leftovers(step: Step, target: Target) -> None:
    """What a restore killed halfway left (its side database, role and files), removed under the restore
    lock: a side database is never production's data (only a swap makes it that, and a swap renames
    it), and its backup is still there."""
    live = ident(target.database.name)
    with connect(target, "postgres") as conn:
        databases = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
            (f"{live}_restore_",)).fetchall()]
        roles = [r[0] for r in conn.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY 1",
            (f"{live}_restorer_",)).fetchall()]
        for name in databases:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for name in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    scratch = Path(target.paths.scratch_dir)
    files = sorted(scratch.glob(f".{live}_restorer_*")) if scratch.is_dir() else []
    for leftover in files:  # its password file and TOC list
        leftover.unlink(missing_ok=True)
    if databases or roles or files:
        step.note("interrupted_restore_removed", {"databases": databases, "roles": roles,
                                                  "files": [f.name for f in files]})


def unsafe(conn: psycopg.Connection, name: str) -> list[str]:
    """What makes a role more than a restore may run as: its attributes, and the roles it can become."""
    row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls"
                       " FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    if row is None:
        return [f"role {name} does not exist"]
    attributes = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
    found = [a for a, on in zip(attributes, row, strict=True) if on]
    members = conn.execute(
        "SELECT r.rolname FROM pg_roles r WHERE r.rolname <> %s AND pg_has_role(%s, r.oid, 'MEMBER')"
        " ORDER BY 1", (name, name)).fetchall()
    found += [f"member of {m[0]}" + (" (files, programs or other sessions)" if m[0] in UNSAFE_ROLES else "")
              for m in members]
    return found


def hand_over(step: Step, target: Target, role: Restorer, then: str = "") -> None:
    """The restored database and all in it to the app's owner; the role gone. The database's own
    settings are reset first: a legitimate dump has none (they come only with --create, refused), and
    a search_path set by the dump would reach every later connection, the superuser's among them.
    `then`: statements to run in the database right after, in the same session."""
    owner = ident(target.database.user)
    with connect(target, "postgres") as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET ALL").format(sql.Identifier(role.database)))
        psql(step, target, f"REASSIGN OWNED BY {role.name} TO {owner}; DROP OWNED BY {role.name}; {then}",
             dbname=role.database)
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role.name)))
    step.note("handed_over", {"database_settings": "reset", "owner": owner, "role_dropped": role.name})


def not_tables(target: Target, database: str) -> list[str]:
    """The app's tables that the restored database has as something else than a table: a view (or a
    table turned into one by a rule) would run its query, with any function in it, as whoever reads
    it, and the verification that follows reads them as the superuser."""
    tables = [t for t in (*target.app.tables, *(
        [target.app.relation.child, target.app.relation.parent] if target.app.relation else [])) if t]
    with connect(target, database) as conn:
        rows = conn.execute("SELECT t, c.relkind FROM unnest(%s::text[]) AS t"
                            " LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(t)",
                            (sorted(set(tables)),)).fetchall()
    kinds = {"v": "a view", "m": "a materialized view", "f": "a foreign table", "S": "a sequence",
             "i": "an index", "c": "a composite type"}
    return [f"{name} is {kinds.get(kind, repr(kind))}, not a table: refused, as its query would run as "
            "the superuser that verifies it" for name, kind in rows if kind is not None and kind not in "rp"]


def drop(step: Step, target: Target, name: str) -> None:
    """After a failed restore, once the side database is dropped: the role too."""
    psql(step, target, f"DROP ROLE IF EXISTS {ident(name)};")


def plain_filter(line: bytes, declared: tuple[str, ...]) -> bool:
    """Whether a line of a plain dump (outside COPY data) is left out: pg_dump's ownership lines
    (as pg_restore --no-owner) and the CREATE/COMMENT lines of an extension the harness created."""
    if line.startswith(b"ALTER ") and _OWNER.match(line):
        return True
    match = _CREATE_EXTENSION.match(line) or _COMMENT_EXTENSION.match(line)
    return match is not None and match[1].decode() in declared


def extension_line(line: bytes) -> str | None:
    """The extension a plain dump's line creates (CREATE EXTENSION, however written), or None."""
    match = re.match(rb'^\s*CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?"?([\w$]+)', line, re.IGNORECASE)
    return match[1].decode(errors="replace") if match else None
