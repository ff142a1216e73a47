"""Procedure under drill: a runbook procedure run as the recovery of the drill that covers it.

For a procedure that a drill of scenarios/drills.py covers (its `runbook_section`), the gate runs that
drill's lifecycle (fixtures.engine.drill.run_drill: prepare, baseline, probe and canary, the fault confirmed,
the recovery, post checks, fingerprint, verdict against the level) with the procedure's own shell
blocks as the recovery. What the gate adds per drill (a Plan):
- prepare: backups in the runbook's names and formats, several of different ages with data written
  between them, so that restoring an older one instead of the newest shows;
- the fault: the drill's, sometimes made harder (stale files left in the uploads folder);
- oracles: named checks of the state the procedure left, run right after its blocks (before the
  drill's post checks, whose test upload adds a file).
A procedure without a drill keeps the healthy-system run of the orchestrator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fixtures.engine.drill import Drill, DrillFailed, DrillRun, DrillSettings, run_drill
from fixtures.engine.faults import (
    DeleteRowsByMistake,
    Details,
    DropDatabase,
    FaultDidNotBite,
    WipeUploads,
    made_before,
)
from fixtures.stack import Stack
from gate import appdata
from gate.parser import Section
from gate.runner import FAILED, BlockOutcome, run_session
from gate.types import Context, OracleResult, Plan, Variant, first_error
from recovery import integrity
from recovery.archives import sha256_file
from recovery.commands import run
from recovery.database import backup_database
from recovery.journal import tail
from reports.model import CheckResult

log = logging.getLogger(__name__)

# marks: rows of the gate's own table in the app's database (gate.appdata)
BETWEEN_MARK = "gate: written between the older and the newest backup"
AFTER_TARGET_MARK = "gate: committed after the recovery target time"
BETWEEN_FILE = "gate-between-backups.txt"
STALE_FILES = {"stale-partial-restore.bin": 0o750, ".stale-hidden": 0o640}


# ---- the harness's amcheck (production's database has none) ------------------------------------

def _amcheck(stack: Stack, present: bool) -> None:
    with stack.pg.connect("postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'mks_db'").fetchone():
            return
    with stack.pg.connect("mks_db") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck" if present
                     else "DROP EXTENSION IF EXISTS amcheck")


def _next_second(last: list[float]) -> None:
    """Backup names carry the second: a second one must not share its name with the first."""
    if last:
        time.sleep(max(0.0, last[-1] + 1.05 - time.monotonic()))
    last.append(time.monotonic())


# ---- データベースバックアップからの復旧 ----------------------------------------------------------

def prepare_database(run_: DrillRun, ctx: Context) -> None:
    """An older dump, a mark written, the newest dump (both pg_dump -Fc, db_<ts>.dump)."""
    stack, target, stamps = run_.stack, run_.target, []
    _amcheck(stack, False)
    appdata.create_marks(target)  # before the older dump: every dump has the table, only the newest the mark
    _next_second(stamps)
    run_.action(backup_database, target)
    appdata.mark(target, BETWEEN_MARK)
    _next_second(stamps)
    run_.action(backup_database, target)
    _amcheck(stack, True)
    ctx.notes["backups"] = sorted(p.name for p in Path(target.paths.backup_dir).glob("db_*.dump"))


def newest_backup_restored(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    try:
        with integrity.connect(run_.target, "mks_db") as conn:
            found = appdata.marked(conn, BETWEEN_MARK)
    except Exception as exc:
        return [OracleResult("newest backup restored", False, f"mks_db cannot be read: {first_error(exc)}")]
    ok = found == 1
    older, newest = ctx.notes["backups"][0], ctx.notes["backups"][-1]
    detail = (f"the row written after {older} and before {newest} is back" if ok else
              f"the row written after {older} and before {newest} is missing: an older backup was "
              "restored, or none")
    return [OracleResult("newest backup restored", ok, detail)]


@dataclass
class DropDatabaseAfterFailedAttempt:
    """The database lost, and a restore beside it tried once already: an earlier attempt's mks_db_restore
    is left (a procedure that restores beside must clear it, not fail on it or swap it in)."""

    name: str = "drop-database-leftover-restore"
    label: str = "データベース消失 (前回のリストア試行の mks_db_restore が残存)"

    def inject(self, stack: Stack) -> Details:
        details = DropDatabase().inject(stack)
        with stack.pg.connect("postgres") as conn:
            conn.execute("DROP DATABASE IF EXISTS mks_db_restore")
            conn.execute("CREATE DATABASE mks_db_restore")
        with stack.pg.connect("mks_db_restore") as conn:
            conn.execute("CREATE TABLE half_restored (id int)")
        return {**details, "leftover": "mks_db_restore"}

    def confirm(self, stack: Stack, details: Details) -> str:
        return DropDatabase().confirm(stack, details) + "; an earlier attempt's mks_db_restore is left"


def _copy_folders(run_: DrillRun) -> list[Path]:
    """Where a procedure may leave its safety copy: the backup area, or /tmp (which a reboot may clear)."""
    return [Path(run_.target.paths.backup_dir), run_.stack.root / "tmp"]


def live_database_copied(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """The damaged live database was kept (a dump or a renamed database) before it was replaced."""
    before = set(ctx.notes["backups"])
    copies = [f"/{p.relative_to(run_.stack.root)}" for folder in _copy_folders(run_)
              for p in folder.glob("*.dump") if p.name not in before and p.stat().st_size > 0]
    with run_.stack.pg.connect("postgres") as conn:
        kept = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'mks_db_%%' "
                                           "AND datname <> 'mks_db_restore'").fetchall()]
    ok = bool(copies or kept)
    return [OracleResult("the live database was kept before it was replaced", ok,
                         f"kept as {', '.join(copies + kept)}" if ok else
                         "replaced the live database without a copy of it (no new dump, no renamed "
                         "database)")]


# ---- アップロードファイル復旧 ---------------------------------------------------------------------

def _tar_uploads(stack: Stack, dest: Path) -> None:
    run(["tar", "-czf", str(dest), "-C", str(stack.root), appdata.store_member(stack.target())], timeout=300,
        run_as=None if stack.sandbox.service_account.is_current else stack.sandbox.service_account)


def archive_manifest(path: Path, store: str) -> dict[str, tuple[str, bool]]:
    """relative path under the file store (`store`: opt/mks/uploads) -> (sha256, executable) of every
    regular file in the archive."""
    found: dict[str, tuple[str, bool]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.removeprefix("./").removeprefix(f"{store}/")
            handle = tar.extractfile(member)
            digest = hashlib.sha256(handle.read() if handle else b"").hexdigest()
            found[name] = (digest, bool(member.mode & 0o111))
    return found


def folder_manifest(folder: Path) -> dict[str, tuple[str, bool]]:
    found: dict[str, tuple[str, bool]] = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            try:
                mode = path.lstat().st_mode
                if not stat.S_ISREG(mode):
                    found[str(path.relative_to(folder))] = ("not a regular file", False)
                    continue
                found[str(path.relative_to(folder))] = (sha256_file(path), bool(mode & 0o111))
            except FileNotFoundError:
                continue  # gone while read: the running app's own temp file (its health probe's)
    return found


def prepare_uploads(run_: DrillRun, ctx: Context) -> None:
    """An older uploads archive, a file added, the newest archive (uploads_<ts>.tar.gz, relative to /)."""
    stack, stamps = run_.stack, []
    backup_dir = Path(run_.target.paths.backup_dir)
    made = []
    for step in ("older", "newest"):
        _next_second(stamps)
        dest = backup_dir / f"uploads_{dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.tar.gz"
        _tar_uploads(stack, dest)
        made.append(dest)
        if step == "older":
            stack.sandbox.write_text(stack.uploads_dir / BETWEEN_FILE, "added between the two backups\n",
                                     mode=0o640)
    ctx.notes["archives"] = [p.name for p in made]
    ctx.notes["manifest"] = archive_manifest(made[-1], appdata.store_member(run_.target))


@dataclass
class WipeUploadsLeaveStale:
    """The uploads folder wiped, then half-restored by hand: files the backup does not have are left,
    one of them hidden and one executable (a restore must not keep them)."""

    name: str = "wipe-uploads-stale"
    label: str = "アップロードファイル消失 (古い不要ファイルが残存)"

    def inject(self, stack: Stack) -> Details:
        details = WipeUploads().inject(stack)
        for name, mode in STALE_FILES.items():
            stack.sandbox.write_text(stack.uploads_dir / name, "not in any backup\n", mode=mode)
        return details

    def confirm(self, stack: Stack, details: Details) -> str:
        # the stale files; not what the running app made once the wipe had begun (a health probe's file)
        left = sorted(p.name for p in stack.uploads_dir.rglob("*")
                      if p.is_file() and (p.name in STALE_FILES or made_before(p, details["wiped_at"])))
        if not details["removed_files"] or left != sorted(STALE_FILES):
            raise FaultDidNotBite(f"uploads not wiped as planned: {details['removed_files']} removed, "
                                  f"left {left}")
        return f"{details['removed_files']} files removed; left: {', '.join(left)}"


def files_are_the_backup(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    backup: dict[str, tuple[str, bool]] = ctx.notes["manifest"]
    live = folder_manifest(Path(run_.target.paths.uploads_dir))
    missing = sorted(set(backup) - set(live))
    extra = sorted(set(live) - set(backup))
    changed = sorted(n for n in set(backup) & set(live) if backup[n][0] != live[n][0])
    made_exec = sorted(n for n in set(backup) & set(live) if live[n][1] and not backup[n][1])
    newest = ctx.notes["archives"][-1]
    return [
        OracleResult("newest uploads backup restored", BETWEEN_FILE in live,
                     f"{BETWEEN_FILE} (only in {newest}) is "
                     + ("back" if BETWEEN_FILE in live else "missing")),
        OracleResult("same files as the backup", not missing,
                     f"{len(backup) - len(missing)} of {len(backup)} files of {newest}"
                     + (f"; missing: {_few(missing)}" if missing else "")),
        OracleResult("same content as the backup", not changed,
                     "every file's sha256 as in the archive" if not changed
                     else f"content differs: {_few(changed)}"),
        OracleResult("no stale file left (hidden files included)", not extra,
                     "nothing the backup does not have" if not extra else f"left from before: {_few(extra)}"),
        OracleResult("nothing made executable", not made_exec,
                     "no file executable that was not in the archive" if not made_exec
                     else f"made executable: {_few(made_exec)}"),
    ]


def uploads_kept_before(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """What the uploads folder held before the restore was kept (an archive or a folder beside it)."""
    uploads = Path(run_.target.paths.uploads_dir)
    made = set(ctx.notes["archives"])
    found = []
    for path in (p for folder in _copy_folders(run_) for p in folder.glob("*.tar.gz")):
        if path.name in made:
            continue
        try:
            names = {n.rsplit("/", 1)[-1]
                     for n in archive_manifest(path, appdata.store_member(run_.target))}
        except (tarfile.TarError, OSError):
            continue
        if set(STALE_FILES) <= names:
            found.append(f"/{path.relative_to(run_.stack.root)}")
    for beside in uploads.parent.glob(f"{uploads.name}?*"):
        if beside.is_dir() and all((beside / n).exists() for n in STALE_FILES):
            found.append(str(beside.relative_to(uploads.parent)))
    return [OracleResult("the uploads as they were are kept", bool(found),
                         f"kept in {', '.join(found)}" if found else
                         "replaced the uploads without a copy of what was there (no archive or folder holds "
                         f"{', '.join(STALE_FILES)})")]


# ---- ポイントインタイムリカバリ ---------------------------------------------------------------------

@dataclass
class MistakeThenMore:
    """Rows deleted by mistake after the target time, then one more commit after it (which a
    point-in-time recovery to the target must not bring back). The rows: children of the profile's
    relation; without a relation, the gate's own marks written before the target."""

    name: str = "rows-deleted-by-mistake-then-commit"
    label: str = "誤操作によるデータ削除 (DELETE) とその後の更新"

    def inject(self, stack: Stack) -> Details:
        target = stack.target()
        details = DeleteRowsByMistake().inject(stack) if target.app.relation else appdata.delete_marks(target)
        appdata.mark(target, AFTER_TARGET_MARK)
        return details

    def confirm(self, stack: Stack, details: Details) -> str:
        if details["table"] == appdata.MARKS:
            return appdata.confirm_marks_deleted(stack.target(), details, AFTER_TARGET_MARK)
        return DeleteRowsByMistake().confirm(stack, details)


def prepare_pitr(run_: DrillRun, ctx: Context) -> None:
    """Two base backups with data between them; the WAL archive cleaned up before the newest one (as
    pg_archivecleanup after each base backup does): only the newest base backup can reach the target."""
    from recovery import pitr

    stamps: list[float] = []
    appdata.create_marks(run_.target)
    for label in ("gate older", "gate newest"):
        _next_second(stamps)
        run_.action(pitr.base_backup, run_.target, label=label)
        if label == "gate older":
            appdata.mark(run_.target, BETWEEN_MARK)
    newest = pitr.base_backups(run_.target)[-1]
    archive = Path(run_.target.paths.wal_archive)
    removed = [p for p in archive.iterdir() if len(p.name) == 24 and p.name < newest.start_segment]
    for path in removed:
        path.unlink()
    ctx.notes["cleaned"] = len(removed)


RECOVERY_SETTINGS = ("restore_command", "recovery_target_time", "recovery_target_action")


def recovery_settings_removed(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """The runbook's own step: a later start must not recover again (settings gone from the files, and
    the running server's restore_command reloaded)."""
    try:
        with integrity.connect(run_.target, "postgres") as conn:
            in_files = [f"{r[0]} in {Path(r[1]).name}" for r in conn.execute(
                "SELECT name, sourcefile FROM pg_file_settings WHERE name = ANY(%s)",
                (list(RECOVERY_SETTINGS),)).fetchall()]
            live = conn.execute("SHOW restore_command").fetchone()
    except Exception as exc:
        return [OracleResult("recovery settings removed", False,
                             f"the server cannot be read: {first_error(exc)}")]
    if live and live[0]:
        in_files.append(f"the server still has restore_command = '{live[0]}' (not reloaded)")
    return [OracleResult("recovery settings removed", not in_files,
                         "none left in the configuration" if not in_files else "; ".join(in_files))]


def data_directory_kept(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """The data directory as it was before the recovery is kept beside (the runbook removes it only after
    the result is confirmed)."""
    data = Path(run_.target.database.data_dir)
    kept = [p.name for p in data.parent.glob(f"{data.name}?*") if (p / "PG_VERSION").is_file()]
    return [OracleResult("the data directory before the recovery is kept", bool(kept),
                         f"kept as {', '.join(kept)}" if kept else
                         f"no copy of {data.name} beside it: what was there before the recovery is gone")]


def pitr_env(run_: DrillRun) -> dict[str, str]:
    return {"TARGET_TIME": str(run_.fault_details["target_time"])}


def point_in_time(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    details = run_.fault_details
    out = []
    try:
        with integrity.connect(run_.target, "mks_db") as conn:
            after = appdata.marked(conn, AFTER_TARGET_MARK)
            # the rows the mistake deleted (without a relation the gate's marks: the later one not counted)
            documents = appdata.count(conn, details["table"], but=AFTER_TARGET_MARK)
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            timeline = int(conn.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
                           .fetchone()[0], 16) if not in_recovery else 0  # type: ignore[index]
    except Exception as exc:
        return [OracleResult("point in time", False, f"mks_db cannot be read: {first_error(exc)}")]
    out.append(OracleResult("rows deleted by mistake are back", documents == details["documents_before"],
                            f"{integrity.label(details['table'])}: {details['documents_before']} before the "
                            f"mistake, {details['documents_before'] - details['deleted']} after it, "
                            f"{documents} now"))
    out.append(OracleResult("changes after the target are absent", after == 0,
                            "the commit after the target is " + ("absent" if after == 0 else "present: the "
                                                                 "recovery replayed past the target")))
    out.append(OracleResult("new timeline", timeline >= 2,
                            f"timeline {timeline}" if timeline else "the server is still in recovery"))
    try:
        with integrity.connect(run_.target, "postgres") as conn:
            conn.execute("CREATE TABLE gate_write_probe (id int)")
            conn.execute("DROP TABLE gate_write_probe")
        out.append(OracleResult("accepts writes", True, "a table was created and dropped"))
    except Exception as exc:
        out.append(OracleResult("accepts writes", False, first_error(exc)))
    return out


# ---- every drill -------------------------------------------------------------------------------

# the server's own lines carry no `user@db` after the pid (log_line_prefix '%m [%p] %q%u@%d ')
SERVER_FATAL = re.compile(r"\[\d+\] (?:FATAL|PANIC):")


def server_fatal(log_file: str | Path, lines: int = 200) -> str | None:
    """The server's own last FATAL or PANIC line of the log's last `lines` (a client's `user@db FATAL`,
    such as a refused login while the server starts, is not why the server is down)."""
    found = [line for line in tail(Path(log_file), lines).splitlines() if SERVER_FATAL.search(line)]
    return found[-1] if found else None


def services_running(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    down = [f"{name} is {run_.stack.services.status(name).active_state}"
            for name in ("postgresql", "mks-backend", "nginx") if not run_.stack.services.is_active(name)]
    if not run_.stack.services.is_active("postgresql"):
        fatal = server_fatal(run_.target.database.log_file)
        down += [f"server log: {fatal}"] if fatal else []
    return [OracleResult("every service runs again", not down,
                         "; ".join(down) or "postgresql, mks-backend, nginx")]


def backend_restarted(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """The backend was stopped while its data was replaced (and started again): its process changed.
    One left running could write in the middle of the restore, and keeps connections to what was replaced."""
    status = run_.stack.services.status("mks-backend")
    before = ctx.notes.get("backend_pid")
    if not status.is_active or before is None:
        return []  # not running: `every service runs again` says so
    ok = status.pid != before
    return [OracleResult("the backend was stopped during the restore", ok,
                         f"stopped and started again (pid {before} -> {status.pid})" if ok else
                         f"the backend ran through the whole procedure (pid {before}): it could write while "
                         "the data under it was replaced")]


@dataclass
class DrilledResult:
    drill: str
    fault: str
    verdict: str
    blocks: list[BlockOutcome]
    checks: list[str]
    problems: list[str]
    oracles: list[OracleResult] = field(default_factory=list)


def run_drilled(plan: Plan, drill: Drill, sections: list[Section], stack: Stack,
                session_for: Callable[[Any, dict[str, str]], Any], settings: DrillSettings,
                name: str) -> DrilledResult:
    """The drill's lifecycle with the sections' blocks as its recovery; never raises."""
    ctx = Context()

    def prepare(run_: DrillRun) -> None:
        if plan.prepare is not None:
            plan.prepare(run_, ctx)
        elif drill.prepare is not None:
            drill.prepare(run_)

    def recover(run_: DrillRun) -> None:
        env = plan.env(run_) if plan.env else {}
        ctx.notes["backend_pid"] = run_.stack.services.status("mks-backend").pid
        ctx.blocks = run_session(sections, session_for(run_.stack, env), name)
        try:
            _amcheck(run_.stack, True)  # the harness's own extension, for the fingerprint
        except Exception as exc:
            log.info("amcheck not re-created after %s: %s", name, exc)
        for oracle in plan.oracles:
            try:
                ctx.oracles += oracle(run_, ctx)
            except Exception as exc:
                ctx.oracles.append(OracleResult(oracle.__name__, False,
                                                f"the check itself failed: {first_error(exc)}"))

    fault = plan.fault or drill.fault
    # twice=False: a second run of the sections would replace ctx.blocks, the report's record of the first
    gate_drill = replace(drill, name=f"gate-{drill.name}", fault=fault, prepare=prepare, recover=recover,
                         forecast=(), twice=False)
    try:
        record = run_drill(gate_drill, stack, settings, drill_id=f"{name}-{drill.name}")
    except DrillFailed as failed:
        record = failed.record
    except Exception as exc:  # run_drill ends in a record; this is the gate's safety net
        return DrilledResult(drill.name, fault.label, "failed", ctx.blocks, [],
                             [f"the drill could not run: {first_error(exc)}"])
    checks = [check_line(c) for c in record.checks]
    checks += [f"oracle {o.name}: {'ok' if o.ok else 'FAILED'} ({o.detail})" for o in ctx.oracles]
    if record.canary is not None:
        lost = record.canary.lost_rows
        checks.append(f"rows committed before the fault: {lost} lost (level {record.level})")
    if record.recovery_seconds is not None:
        checks.append(f"recovery time: {record.recovery_seconds:.1f}s (level {record.level})")
    reason = " ".join(record.failure_reason.split())  # one line: a psycopg message carries its hint below
    problems = [f"drill verdict: {reason}"] if record.verdict != "passed" else []
    problems += [f"oracle {o.name}: {o.detail}" for o in ctx.oracles if not o.ok]
    if not ctx.blocks and not problems:
        problems.append("the procedure's blocks did not run")
    verdict = "passed" if not problems and all(b.status != FAILED for b in ctx.blocks) else "failed"
    return DrilledResult(drill.name, fault.label, verdict, ctx.blocks, checks, problems, ctx.oracles)


def run_variant(variant: Variant, drill: Drill, sections: list[Section], stack: Stack,
                session_for: Callable[[Any, dict[str, str]], Any], settings: DrillSettings,
                name: str) -> OracleResult:
    """The procedure under a bad backup; only safe or harmed counts (refusing is the right answer)."""
    plan = Plan(drill.name, variant.prepare, variant.fault, variant.judges, env=variant.env)
    result = run_drilled(plan, drill, sections, stack, session_for, settings, name)
    if not result.oracles:
        why = "; ".join(result.problems)[:300] or "no judgement"
        return OracleResult(f"variant {variant.name}", False, f"the variant could not be judged: {why}")
    failed = [o for o in result.oracles if not o.ok]
    return OracleResult(f"variant {variant.name}", not failed,
                        "; ".join(o.detail for o in (failed or result.oracles)))


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def check_line(check: CheckResult) -> str:
    """A drill check as the gate shows it: a check that does not apply is skipped, never FAILED."""
    state = "skipped" if check.skipped else "ok" if check.passed else "FAILED"
    return f"{check.name}: {state} ({check.detail})"
