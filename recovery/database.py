"""2. データベース復旧 and データ復旧 1. データベースバックアップからの復旧, as journaled actions.

Where this differs from the runbook's text: the restore never drops the live database first. It
restores into a side database, verifies it, and only then swaps names, so that any failure before
the swap leaves production exactly as it was (and the pre-restore copy is a real custom-format dump
in backup_dir, not a plain file in /tmp).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from recovery import backups, health, restore_checks, restore_role, safety_copies
from recovery.actions import BACKUP_OPTION, LEVEL_OPTION, action, option
from recovery.archives import CHUNK, sha256_file
from recovery.backups import BackupError, VerifiedBackup
from recovery.errors import CommandError, RecoveryError
from recovery.integrity import app_tables, connect, fingerprint, label
from recovery.journal import Journal, Step
from recovery.postgres import ident, psql
from recovery.progress import Counter, Progress
from recovery.target import Target, ensure_dir
from recovery.waiting import Observation, WaitTimeout, wait_until

log = logging.getLogger(__name__)

# the runbook's 権限再設定 lines
GRANTS = (
    "GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO {user}",
    "GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public TO {user}",
)


class RestoreError(RecoveryError):
    """The restored copy failed its verification; the live database was not touched."""


def query_answers(target: Target, dbname: str = "postgres") -> Observation:
    """A real query, answered by a server out of recovery (psycopg.Error while it is not up)."""
    with connect(target, dbname) as conn:
        row = conn.execute("SELECT pg_is_in_recovery(), version()").fetchone()
    assert row is not None
    return Observation(not row[0], f"in recovery: {row[0]}; {row[1]}")


def wait_answering(target: Target, timeout: float) -> str:
    """Until PostgreSQL answers a real query out of recovery; RecoveryError with the last answer."""
    return wait_until("PostgreSQL to answer a query", lambda: query_answers(target), timeout=timeout,
                      interval=0.2, error=RecoveryError, not_yet=(psycopg.Error, OSError)).detail


def start_backend(step: Step, target: Target, timeout: float) -> None:
    """Start the backend; done when its health answers 200 and the manager counts it as started.
    The step notes the answer and how long after the start it came (the end of the downtime)."""
    answer = health.start_backend(target, timeout)
    step.note("health", answer.detail)
    step.note("healthy_after_s", answer.seconds)


# ---- 接続確認 / 再起動手順 / 設定確認 ----------------------------------------------------------

@action("database_connection_check", "2. データベース復旧 接続確認")
def connection_check(journal: Journal, target: Target, start_grace: float = 15.0) -> None:
    """接続確認: the service's state, SELECT 1 as mks_user, the active connections."""
    with journal.step("status", "PostgreSQLサービス確認") as step:
        manager, name = target.service_manager(), target.services.database
        # a service that is still starting gets a moment; one that is down does not
        with contextlib.suppress(WaitTimeout):
            wait_until(f"{name} to finish starting",
                       lambda: manager.status(name).active_state != "activating",
                       timeout=start_grace, interval=0.2)
        status = manager.status(name)
        step.note("active_state", status.active_state)
        step.note("detail", status.detail)
        if not status.is_active:
            raise RecoveryError(f"{name} is {status.detail}")
    with journal.step("select_1", "データベース接続テスト") as step:
        rows = psql(step, target, "SELECT 1;", dbname=target.database.name, superuser=False)
        if rows != [["1"]]:
            raise RecoveryError(f"SELECT 1 answered {rows!r}")
    with journal.step("activity", "アクティブ接続確認") as step:
        rows = psql(step, target, "SELECT count(*) FROM pg_stat_activity;", dbname=target.database.name,
                    superuser=False)
        step.note("connections", int(rows[0][0]))


@action("database_restart", "2. データベース復旧 再起動手順")
def restart_database(journal: Journal, target: Target, timeout: float = 60.0) -> None:
    """再起動手順: restart through the service manager; done when a real query answers."""
    with journal.step("restart", "PostgreSQL再起動") as step:
        target.service_manager().restart(target.services.database)
        step.note("service", target.services.database)
    with journal.step("connect", "接続テスト") as step:
        step.note("answer", wait_answering(target, timeout))
        rows = psql(step, target, "SELECT version();")
        step.note("version", rows[0][0] if rows else "")


CONFIG_KEYS = ("listen_addresses", "port", "max_connections")


def parse_config(text: str, keys: tuple[str, ...] = CONFIG_KEYS) -> dict[str, str]:
    """The effective value of keys in a postgresql.conf text (the last assignment wins)."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        match = re.match(r"^([a-z_]+)\s*=?\s*(.+?)\s*$", line)
        if match and match[1] in keys:
            found[match[1]] = match[2].strip("'")
    return found


@dataclass
class ConfigReport:
    running: dict[str, str]
    config_file: dict[str, str]
    pending: list[str]  # differences: the file was edited but the server not restarted
    user: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def config_check(target: Target) -> tuple[Journal, ConfigReport]:
    """設定確認: listen/port/max_connections from the server and its file; mks_user's rights."""
    report = ConfigReport({}, {}, [])
    return check_config(target, report), report


@action("database_config_check", "2. データベース復旧 設定確認")
def check_config(journal: Journal, target: Target, report: ConfigReport) -> None:
    """設定確認 into `report`."""
    with journal.step("settings", "PostgreSQL設定確認") as step:
        for key in CONFIG_KEYS:
            report.running[key] = psql(step, target, f"SHOW {key};")[0][0]
        conf = Path(target.database.config_dir) / "postgresql.conf"
        report.config_file = parse_config(conf.read_text(encoding="utf-8", errors="replace"))
        auto = Path(target.database.data_dir) / "postgresql.auto.conf"
        if auto.exists():
            report.config_file.update(parse_config(auto.read_text(encoding="utf-8", errors="replace")))
        report.pending = [f"{k}: running {report.running[k]!r}, file {report.config_file[k]!r}"
                          for k in CONFIG_KEYS if k in report.config_file
                          and report.config_file[k] != report.running[k]]
        step.note("running", report.running)
        step.note("config_file", report.config_file)
        step.note("pending", report.pending)
    with journal.step("user", "ユーザー権限確認") as step:
        user = target.database.user
        rows = psql(step, target, "SELECT usename, usecreatedb, usesuper FROM pg_user"
                                  f" WHERE usename = '{ident(user)}';")
        if not rows:
            report.problems.append(f"role {user} does not exist")
        else:
            report.user = {"usename": rows[0][0], "usecreatedb": rows[0][1] == "t",
                           "usesuper": rows[0][2] == "t"}
            if report.user["usesuper"]:
                report.problems.append(f"{user} is a superuser; the application should not be")
            tables = ",".join("'" + ".".join(ident(p) for p in t.split(".")) + "'"
                              for t in app_tables(target))
            privs = psql(step, target, "SELECT n.nspname || '.' || c.relname, has_table_privilege("
                         f"'{ident(user)}', c.oid, 'SELECT,INSERT,UPDATE,DELETE') FROM pg_class c"
                         " JOIN pg_namespace n ON n.oid = c.relnamespace"
                         f" WHERE n.nspname || '.' || c.relname IN ({tables})"
                         " ORDER BY 1;", dbname=target.database.name)
            report.user["tables"] = {label(r[0]): r[1] == "t" for r in privs}
            report.problems += [f"{user} lacks rights on {label(t)}" for t in app_tables(target)
                                if not report.user["tables"].get(label(t))]
        step.note("user", report.user)
        step.note("problems", report.problems)


# ---- backups -------------------------------------------------------------------------------

def dump_database(step: Step, target: Target, dbname: str, path: Path) -> Path:
    """pg_dump -Fc as the service account, plus the .sha256 sidecar and the row counts of its snapshot."""
    db = target.database
    ensure_dir(path.parent, target)
    counts: dict[str, int] = {}
    # the counts are read in the very snapshot pg_dump uses, so they describe the dump exactly
    with connect(target, dbname, superuser=False) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        for table in app_tables(target):
            # a database created empty (to be filled by a plain dump's restore) has none of them yet
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[label(table)] = int(row[0]) if row else 0
        try:
            step.run([db.tool("pg_dump"), "-Fc", "-U", db.user, "-d", ident(dbname), "--snapshot", snapshot,
                      "-f", str(path)], timeout=3600, run_as=target.service_account(), env=db.env())
            conn.execute("COMMIT")
            digest = sha256_file(path)
            backups.sidecar(path).write_text(f"{digest}  {path.name}\n", encoding="utf-8")
            backups.manifest_path(path).write_text(json.dumps(
                {"database": dbname, "row_counts": counts, "sha256": digest,
                 "made_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}, indent=2),
                encoding="utf-8")
        except BaseException:
            # a dump cut short (a full disk) is not a backup: nothing named like one is left behind
            for made in (path, backups.sidecar(path), backups.manifest_path(path)):
                made.unlink(missing_ok=True)
            raise
    step.note("path", str(path))
    step.note("bytes", path.stat().st_size)
    step.note("sha256", digest)
    step.note("row_counts", counts)
    return path


@action("database_backup", "データベースバックアップ", cli="db-backup",
        help="データベースバックアップ: pg_dump -Fc, its .sha256 sidecar and the row counts of its snapshot",
        plan=(("dump", "データベースバックアップ (pg_dump -Fc)",
               "backup_dir/db_<ts>.dump (custom format), .sha256 sidecar, "
               "row counts read in the dump's snapshot"),))
def backup_database(journal: Journal, target: Target) -> None:
    """backup_dir/db_YYYYmmdd_HHMMSS.dump (UTC) with its .sha256 sidecar."""
    with journal.step("dump", "データベースバックアップ (pg_dump -Fc)") as step:
        path = Path(target.paths.backup_dir) / f"db_{backups.stamp()}.dump"
        if path.exists():
            raise BackupError(f"{path} exists already")
        dump_database(step, target, target.database.name, path)


# ---- データベースバックアップからの復旧 ----------------------------------------------------------

def _plan_restore(journal: Journal, target: Target, *_: object, **__: object) -> None:
    ts, live = backups.stamp(), ident(target.database.name)
    side, old = f"{live}_restore_{ts}", f"{live}_pre_{ts}"
    for name, title, what in RESTORE_PLAN:
        journal.plan(name, title, what=what.format(ts=ts, live=live, side=side, old=old))


def default_jobs() -> int:
    """pg_restore's parallel jobs: one per core, at most four (the restore shares the server)."""
    return max(1, min(4, os.cpu_count() or 1))


JOBS_OPTION = option("--jobs", type=int, default=None, metavar="N",
                     help="pg_restore -j N into the side database (default: the core count, at most 4)")
SAFETY_DUMP_OPTION = option("--safety-dump", action=argparse.BooleanOptionalAction, default=False,
                            help="also pg_dump the renamed old database to pre_restore_<ts>.dump after "
                                 "health is back (default: the renamed database alone is the safety copy)")


@action("database_restore", "データ復旧 1. データベースバックアップからの復旧", plan=_plan_restore,
        cli="db-restore", help="データベースバックアップからの復旧",
        options=(BACKUP_OPTION, LEVEL_OPTION, JOBS_OPTION, SAFETY_DUMP_OPTION))
def restore_database(journal: Journal, target: Target, level: str = "RTO-24",
                     backup: Path | str | None = None, *, max_age: dt.timedelta | None = None,
                     health_timeout: float = 60.0, now: dt.datetime | None = None,
                     jobs: int | None = None, safety_dump: bool = False) -> None:
    """Restore the newest valid backup (or `backup`) beside the live database, verify, then swap.

    A dry run only plans (it reads nothing, like the other actions' dry runs).

    The old live database is renamed to mks_db_pre_<ts> and kept: that is the safety copy, made by
    the swap itself at no cost, and removed by safety-copies-remove when it is no longer wanted.
    With `safety_dump` it is also dumped to pre_restore_<ts>.dump, after the backend is healthy
    again (off the recovery's critical path; nothing writes to the renamed database, so the dump is
    the state it replaced). `now` is the clock the backup's age is measured against (drills move
    it forward to make a backup "old").
    """
    with contextlib.ExitStack() as held:
        ts = backups.stamp()
        live = ident(target.database.name)
        side, old = f"{live}_restore_{ts}", f"{live}_pre_{ts}"
        with journal.step("select_backup", "最新バックアップ確認") as step:
            held.enter_context(restore_role.exclusive(target))  # until the safety copy is recorded
            limit = backups.max_age_for(level, max_age)
            step.note("level", level)
            step.note("max_age_hours", None if limit is None else limit.total_seconds() / 3600)
            if backup is not None:
                chosen = backups.verify_dump(Path(backup), target, max_age=limit, now=now)
            else:
                chosen, skipped = backups.choose(target, max_age=limit, now=now)
                step.note("skipped", skipped)
            step.note("backup", str(chosen.path))
            step.note("created_at", chosen.created_at.isoformat())
            step.note("sha256", chosen.sha256)
            step.note("sidecar_checked", chosen.sidecar_checked)
            step.note("format", chosen.header.format)
            if chosen.header.format == "PLAIN":
                step.note("database_name", "not recorded in a plain dump: checked by its tables and the row "
                                           "counts of its COPY data instead")
            check_space(step, target, chosen, safety_dump)
        _restore_beside(journal, target, chosen, side, jobs or default_jobs())
        _swap(journal, target, live, side, old, health_timeout)
        with journal.step("safety_copy", "既存データバックアップ（念のため）") as step:
            step.note("database", old)
            step.note("removal", safety_copies.REMOVAL_HINT)
            if safety_dump:
                try:
                    dump_database(step, target, old, Path(target.paths.backup_dir) / f"pre_restore_{ts}.dump")
                except RecoveryError as exc:  # the restore is done; the renamed database still holds it all
                    step.note("warning", f"the dump of {old} failed, {old} itself is the safety copy: {exc}")


def check_space(step: Step, target: Target, chosen: VerifiedBackup, safety_dump: bool) -> None:
    """Refuse before anything is touched when the side database (about the live one's size, at least
    the dump's) and the safety dump (about the dump's size) do not fit."""
    dump_bytes = chosen.path.stat().st_size
    with connect(target, "postgres") as conn:
        row = conn.execute("SELECT pg_database_size(oid) FROM pg_database WHERE datname = %s",
                           (target.database.name,)).fetchone()
    side = max(int(row[0]) if row else 0, dump_bytes)
    needs = {Path(target.database.data_dir): (side, "the side database")}
    if safety_dump:
        needs[Path(target.paths.backup_dir)] = (dump_bytes, "the safety dump")
    step.note("free_space", safety_copies.require_free_space(needs))


RESTORE_PLAN = (
    ("select_backup", "最新バックアップ確認", "newest valid db_*.dump, .sql or .sql.gz (or the named one), "
     "recent enough; free space for the side database and the safety dump"),
    ("pg_restore", "リストア実行", "a restore role (no superuser) owning CREATE DATABASE {side}, the "
     "declared extensions; pg_restore -j --no-owner (or psql for plain SQL) into it as that role; "
     "everything to the app's owner, the role dropped; GRANT lines"),
    ("verify_side", "リストア確認", "row counts as in the dump, its foreign keys (per schema), sequences, "
     "the catalog against the live one, collation versions, amcheck, pg_amcheck --heapallindexed"),
    ("stop_backend", "データベース停止 (バックエンド停止)", "stop the backend"),
    ("swap", "データベース入れ替え",
     "terminate connections; {live} -> {old} (the safety copy); {side} -> {live}"),
    ("grants", "権限再設定", "the runbook's GRANT lines on {live}"),
    ("start_backend", "サービス起動", "start the backend, wait for health 200"),
    ("safety_copy", "既存データバックアップ（念のため）",
     "keep {old} (the safety copy, until safety-copies-remove); with --safety-dump also "
     "pg_dump -Fc of it: pre_restore_{ts}.dump"),
)


def _restore_beside(journal: Journal, target: Target, chosen: VerifiedBackup, side: str, jobs: int) -> None:
    user = ident(target.database.user)
    try:
        with contextlib.ExitStack() as stack:
            with journal.step("create_side", "リストア先データベース作成") as step:
                restore_role.clear_leftovers(step, target)
                role = stack.enter_context(restore_role.restorer(step, target, side))
                step.note("database", side)
            with journal.step("pg_restore", "リストア実行") as step:
                # as the restore's own role, which may do nothing a superuser alone may do
                step.note("role", role.name)
                if chosen.header.format == "PLAIN":
                    feed_psql(step, target, chosen, role)
                else:
                    run_pg_restore(step, target, chosen, role, jobs)
                restore_role.hand_over(step, target, role,
                                       then=" ".join(grant.format(user=user) + ";" for grant in GRANTS))
        with journal.step("verify_side", "リストア確認") as step:
            problems = restore_role.not_tables(target, side) or verify_restored(target, side, chosen, step)
            if problems:
                raise RestoreError("the restored copy is not right:\n  " + "\n  ".join(problems))
    except BaseException:
        with journal.step("drop_side", "失敗したリストア先の削除") as step:
            psql(step, target, f"DROP DATABASE IF EXISTS {side} WITH (FORCE);")
            restore_role.drop(step, target, restore_role.role_name(side))
        raise


def run_pg_restore(step: Step, target: Target, chosen: VerifiedBackup, role: restore_role.Restorer,
                   jobs: int, *options: str) -> None:
    """pg_restore -j as the restore's role, --no-owner (the role owns what it makes; hand_over gives it
    to the app's owner); the TOC entries of the extensions the harness created are left out (-L)."""
    db = target.database
    # no --single-transaction, so that -j works: a failure drops the side database
    parallel = ["-j", str(jobs)] if jobs > 1 else []
    step.note("jobs", jobs)
    skip = {entry.split(";", 1)[0] for entry, _ in chosen.header.extensions}
    uses_list: list[str] = []
    if skip:
        listing = role.passfile.with_name(f".{role.name}.list")
        listing.write_text("".join(f";{line}\n" if line.split(";", 1)[0] in skip or _extension_comment(line)
                                   else f"{line}\n" for line in chosen.header.listing.splitlines()),
                           encoding="utf-8")
        account = target.service_account()
        if account is not None and not account.is_current:
            os.chown(listing, account.uid, account.gid)
        uses_list = ["-L", str(listing)]
        step.note("skipped_toc_entries", [entry for entry, _ in chosen.header.extensions])
    restored = Counter()

    def entry_done(line: str) -> None:
        if RESTORED.match(line):
            restored.add()

    try:
        # -v: only then does pg_restore say which TOC entry failed (a line per entry besides)
        with Progress(f"pg_restore {chosen.path.name}: TOC entries", restored,
                      total=chosen.header.toc_entries or None, unit="entries"):
            step.run([db.tool("pg_restore"), "-v", *parallel, "-U", role.name, "-d", role.database,
                      "--no-owner", "--exit-on-error", *options, *uses_list, str(chosen.path)], timeout=3600,
                     run_as=target.service_account(), env=role.env(target), stderr_line=entry_done)
        step.note("toc_entries_restored", restored.value)
    except CommandError as exc:
        raise RestoreError(f"{chosen.path.name} refused: pg_restore into {role.database} as {role.name} "
                           f"stopped at {toc_failure(exc)}{REFUSED}") from exc
    finally:
        if uses_list:
            Path(uses_list[1]).unlink(missing_ok=True)


def _extension_comment(line: str) -> bool:
    parts = line.split(";", 1)[-1].split()
    return parts[2:5] == ["COMMENT", "-", "EXTENSION"]


REFUSED = ("; a backup runs as a role that is no superuser and owns only the side database, "
           "so it reaches no program, server file, role, other database or server setting")


def toc_failure(exc: CommandError) -> str:
    """pg_restore's failure: the TOC entry, the server's error, the statement."""
    text = exc.stderr or exc.stdout
    entry = re.search(r"from TOC entry (.+)$", text, re.MULTILINE)
    error = re.search(r"(?:ERROR|FATAL):\s+(.+)$", text, re.MULTILINE)
    statement = re.search(r"^Command was: (.+)$", text, re.MULTILINE)
    if entry is None and error is None:
        return first_errors(exc)
    said = ": ".join(p for p in (f"TOC entry {entry[1].strip()}" if entry else "",
                                 error[1].strip() if error else "") if p)
    return said + (f" (statement: {statement[1].strip()[:160]})" if statement else "")


def plain_failure(exc: CommandError, path: Path) -> str:
    """psql's failure in a plain dump: the line, the server's error, the line's text."""
    match = re.search(r"^psql:[^\n]*?:(\d+): (?:ERROR|FATAL):\s+(.+)$", exc.stderr or exc.stdout,
                      re.MULTILINE)
    if match is None:
        return first_errors(exc)
    number = int(match[1])
    return f"line {number}: {match[2].strip()} (statement: {backups.plain_statement(path, number)})"


# a TOC entry done, in pg_restore --verbose's words (serial: creating/processing data; -j: finished item)
RESTORED = re.compile(r"pg_restore: (creating |processing data for |processing item |finished item )")


def first_errors(exc: CommandError, keep: int = 3) -> str:
    """The first error lines of a failed pg_restore or psql: with -j, the workers that stop after the
    first failure add lines of their own, and the first is the cause. (--verbose's lines name tables,
    which may be called error_logs: an error line has "error:".)"""
    lines = [line.strip() for line in (exc.stderr or exc.stdout).splitlines() if "error:" in line.lower()]
    unique = list(dict.fromkeys(lines))[:keep]
    return "; ".join(unique) if unique else exc.reason


def feed_psql(step: Step, target: Target, chosen: VerifiedBackup, role: restore_role.Restorer) -> None:
    """A plain-SQL dump through psql with ON_ERROR_STOP into the role's side database, fed from here
    through a pipe (decompressed on the way for .sql.gz) and hashed again, so psql ran exactly the
    verified bytes, less the lines restore_role.plain_filter leaves out (each an empty line instead, so
    that psql's line numbers are the file's)."""
    db, side = target.database, role.database
    declared = restore_role.extensions(target)
    read_end, write_end = os.pipe()
    fed: dict[str, str] = {}

    def feed() -> None:
        digest = hashlib.sha256()
        try:
            with open(chosen.path, "rb") as raw, os.fdopen(write_end, "wb") as out:
                hashed = backups.Hashing(raw, digest)
                source = gzip.GzipFile(fileobj=hashed, mode="rb") if chosen.path.suffix == ".gz" else hashed
                out.writelines(filtered(source, declared))
        except BrokenPipeError:
            fed["error"] = "psql stopped reading its input"
        except (OSError, EOFError, zlib.error) as exc:
            fed["error"] = f"reading {chosen.path} failed: {exc}"
        fed["sha256"] = digest.hexdigest()

    feeder = threading.Thread(target=feed, name="psql-feed", daemon=True)
    feeder.start()
    try:
        step.run([db.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-U", role.name,
                  "-d", side, "-f", "-"], timeout=3600, run_as=target.service_account(), env=role.env(target),
                 stdin=read_end)
    except CommandError as exc:
        raise RestoreError(f"{chosen.path.name} refused: psql into {side} as {role.name} stopped at "
                           f"{plain_failure(exc, chosen.path)}{REFUSED}") from exc
    finally:
        os.close(read_end)
        feeder.join()
    step.note("input", f"{chosen.path} (plain SQL{', gunzipped' if chosen.path.suffix == '.gz' else ''})")
    if "error" in fed:
        raise RestoreError(f"{chosen.path}: {fed['error']}")
    if fed.get("sha256") != chosen.sha256:
        raise RestoreError(f"{chosen.path} changed after it was verified (sha256 {fed.get('sha256')})")


def filtered(source: Any, declared: tuple[str, ...]) -> Iterator[bytes]:
    """A plain dump's lines, those restore_role.plain_filter leaves out made empty; COPY data as is."""
    copying, at_start = False, True
    for line in iter(lambda: source.readline(CHUNK), b""):
        starts, at_start = at_start, line.endswith(b"\n")
        if not starts or not at_start:  # a piece of a line longer than CHUNK: passed on as it is
            pass
        elif copying:
            copying = line not in (b"\\.\n", b"\\.\r\n")
        elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            copying = True
        elif restore_role.plain_filter(line.rstrip(b"\r\n"), declared):
            line = b"\n"
        yield line


def verify_restored(target: Target, dbname: str, chosen: VerifiedBackup, step: Step) -> list[str]:
    """Counts as the dump had them, its foreign keys present, amcheck clean, and recovery.catalog's checks."""
    found = fingerprint(target, dbname, check_files=False, checksums=False)
    step.note("row_counts", dict(found.row_counts))
    step.note("foreign_keys", list(found.foreign_keys))
    step.note("indexes_checked", list(found.indexes_checked))
    problems = [f"amcheck: {e}" for e in found.index_errors]
    counts = dict(found.row_counts)
    if chosen.row_counts is not None:
        problems += [f"{t}: {counts.get(t)} rows restored, the dump has {n}"
                     for t, n in chosen.row_counts.items() if counts.get(t) != n]
    elif counts.get(label(app_tables(target)[0]), 0) == 0:  # a dump made elsewhere, without our manifest
        problems.append(f"{label(app_tables(target)[0])}: no rows restored (the app's first table always has "
                        "some)")
    # foreign keys per schema of the dump, sequences, the catalog against the live one, pg_amcheck
    problems += restore_checks.verify(step, target, dbname, chosen.header.schema_foreign_keys)
    if found.orphans:
        problems.append(f"{found.orphans} orphan {found.relation[0]}")
    return problems


def _swap(journal: Journal, target: Target, live: str, side: str, old: str, health_timeout: float) -> None:
    services = target.service_manager()
    backend = target.services.backend
    user = ident(target.database.user)
    renamed_live = renamed_side = False
    try:
        with journal.step("stop_backend", "データベース停止 (バックエンド停止)") as step:
            services.stop(backend)
            step.note("service", backend)
        with journal.step("swap", "データベース入れ替え") as step:
            psql(step, target, f"ALTER DATABASE {live} WITH ALLOW_CONNECTIONS false;")
            psql(step, target, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               f" WHERE datname = '{live}' AND pid <> pg_backend_pid();")
            psql(step, target, f"ALTER DATABASE {live} RENAME TO {old};")
            renamed_live = True
            psql(step, target, f"ALTER DATABASE {old} WITH ALLOW_CONNECTIONS true;")
            psql(step, target, f"ALTER DATABASE {side} RENAME TO {live};")
            renamed_side = True
            step.note("previous_database", old)
        with journal.step("grants", "権限再設定") as step:
            for grant in GRANTS:
                psql(step, target, grant.format(user=user) + ";", dbname=live)
    except BaseException:
        with journal.step("undo_swap", "入れ替えの取り消し") as step:
            if renamed_side:
                psql(step, target, f"ALTER DATABASE {live} RENAME TO {side};")
            if renamed_live:
                psql(step, target, f"ALTER DATABASE {old} RENAME TO {live};")
            psql(step, target, f"ALTER DATABASE {live} WITH ALLOW_CONNECTIONS true;")
            psql(step, target, f"DROP DATABASE IF EXISTS {side} WITH (FORCE);")
            services.start(backend)
        raise
    with journal.step("start_backend", "サービス起動") as step:
        start_backend(step, target, health_timeout)
