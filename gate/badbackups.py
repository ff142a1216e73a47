"""Bad backups that need more than a truncated file: an uploads archive whose members escape the uploads
folder, and a WAL archive missing a segment that the recovery target needs.

Each is a variant of its procedure's drill (gate.types.Variant): it ends safe (the procedure refused,
and what was live is still there, nothing written outside the folder it restores) or with the harm
named in plain words.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fixtures.engine.drill import DrillRun
from fixtures.engine.faults import DeleteRowsByMistake, Details, FaultDidNotBite
from fixtures.stack import Stack
from gate import appdata
from gate.drilled import (
    AFTER_TARGET_MARK,
    BETWEEN_FILE,
    folder_manifest,
    prepare_database,
    prepare_uploads,
    server_fatal,
)
from gate.types import Context, OracleResult, first_error
from recovery import integrity
from recovery.waiting import wait_until

UPLOADS_MEMBER = "opt/mks/uploads"
ESCAPES = {  # member name -> how it escapes (the file names are unique: found wherever they land)
    f"{UPLOADS_MEMBER}/../../../etc/mks/gate-escape-dotdot.txt": "a ../ member",
    "/etc/mks/gate-escape-absolute.txt": "an absolute member",
    f"{UPLOADS_MEMBER}/gate-escape-link/gate-escape-via-link.txt": "a file through a link out",
}
LINK = f"{UPLOADS_MEMBER}/gate-escape-link"
LINK_TARGET = "../../../etc/mks"  # relative: wherever it resolves, it stays inside the sandbox
ESCAPE_NAMES = {name.rsplit("/", 1)[-1] for name in ESCAPES}
BEFORE_TARGET_MARK = "gate: committed after the base backup, before the target (WAL segment removed)"


# ---- truncated backups ---------------------------------------------------
# The live data is damaged, not lost (so a careless procedure has something to destroy), and the
# newest backup is bad. Safe: the procedure refused, or restored the older valid backup, and what was
# live is still there. Harm is named in plain words.

def truncate(path: Path) -> None:
    """Cut a file at 60%: a custom-format dump keeps its table of contents (pg_restore --list reads it)."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(int(size * 0.6))


def prepare_database_bad_newest(run_: DrillRun, ctx: Context) -> None:
    prepare_database(run_, ctx)
    newest = Path(run_.target.paths.backup_dir) / ctx.notes["backups"][-1]
    truncate(newest)
    ctx.notes["bad"] = f"{newest.name} truncated, its table of contents intact"


def prepare_uploads_bad_newest(run_: DrillRun, ctx: Context) -> None:
    prepare_uploads(run_, ctx)
    newest = Path(run_.target.paths.backup_dir) / ctx.notes["archives"][-1]
    truncate(newest)
    ctx.notes["bad"] = f"{newest.name} truncated"


@dataclass
class RemoveSomeUploads:
    """A few uploaded files lost; the rest is live (and must survive a restore from a bad archive)."""

    count: int = 5
    name: str = "remove-some-uploads"
    label: str = "アップロードファイルの一部消失"

    def inject(self, stack: Stack) -> Details:
        files = [p for p in appdata.store_files(stack.target()) if p.name != BETWEEN_FILE]
        for path in files[:self.count]:
            path.unlink()
        return {"removed": [str(p) for p in files[:self.count]], "left": len(files) - self.count}

    def confirm(self, stack: Stack, details: Details) -> str:
        if any(Path(p).exists() for p in details["removed"]):
            raise FaultDidNotBite("the uploaded files are still there")
        return f"{len(details['removed'])} files removed, {details['left']} left"


def database_kept_safe(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    details = run_.fault_details
    table, left = details["table"], details["documents_before"] - details["deleted"]
    rows = integrity.label(table) + " rows"
    try:
        with integrity.connect(run_.target, "mks_db") as conn:
            found = appdata.counts(conn, run_.target)
            kept = appdata.count(conn, table)
    except Exception as exc:
        found, kept = {}, -1
        ctx.notes["why"] = first_error(exc)
    empty = appdata.empty_tables(found, run_.target)
    safe = kept >= left and not empty
    why = ctx.notes.get("why") or (f"{kept} {rows} left of {left}" if kept < left else
                                   f"{', '.join(empty)} empty")
    detail = (f"the live database kept its data ({kept} {rows}, {left} before the procedure); "
              "the bad backup was not swapped in" if safe else
              f"dropped the live database before the backup was known to restore ({why})")
    return [OracleResult(f"bad backup ({ctx.notes['bad']})", safe, detail)]


def uploads_kept_safe(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    live = folder_manifest(Path(run_.target.paths.uploads_dir))
    left = run_.fault_details["left"]
    kept = sum(1 for n in ctx.notes["manifest"] if n in live and n != BETWEEN_FILE)
    safe = kept >= left
    detail = (f"{kept} live files kept ({left} before the procedure)" if safe else
              f"removed the uploads before the archive was read ({kept} of {left} live files left)")
    return [OracleResult(f"bad backup ({ctx.notes['bad']})", safe, detail)]


# ---- uploads archive with escaping members ------------------------------------------------------

def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o640
    tar.addfile(info, io.BytesIO(data))


def prepare_uploads_escaping(run_: DrillRun, ctx: Context) -> None:
    """The newest archive has every file of the uploads, then a ../ member, an absolute member, and a
    link out of the folder with a file written through it (GNU tar refuses some of these by itself;
    `-C /` does not refuse the absolute one once its leading / is stripped)."""
    prepare_uploads(run_, ctx)
    newest = Path(run_.target.paths.backup_dir) / ctx.notes["archives"][-1]
    ctx.notes["bad"] = add_escaping_members(newest)


def add_escaping_members(newest: Path) -> str:
    """The archive rewritten in place with the escaping members after its own; what was done, in words."""
    buffer = io.BytesIO()
    with tarfile.open(newest) as source, tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in source:
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        link = tarfile.TarInfo(LINK)
        link.type, link.linkname = tarfile.SYMTYPE, LINK_TARGET
        tar.addfile(link)
        for name in ESCAPES:
            _add(tar, name, b"written by the gate's escaping archive\n")
    with open(newest, "r+b") as handle:  # the same file: its owner and mode stay the backup's
        handle.truncate(0)
        handle.write(buffer.getvalue())
    return f"{newest.name} with a ../ member, an absolute member and a link out"


def escaped(root: Path, uploads: Path) -> list[str]:
    """Where the escaping members landed outside the uploads folder, and links out of it."""
    inside = uploads.resolve()
    found = [f"/{Path(d, n).relative_to(root)}" for d, _, files in os.walk(root) for n in files
             if n in ESCAPE_NAMES and not Path(d, n).resolve().is_relative_to(inside)]
    for dirpath, dirs, files in os.walk(uploads):
        for name in dirs + files:
            path = Path(dirpath, name)
            if path.is_symlink() and not path.resolve().is_relative_to(inside):
                found.append(f"a link /{path.relative_to(root)} -> {os.readlink(path)}")
    host = [f"{name} on the host itself" for name in ESCAPES if name.startswith("/") and Path(name).exists()]
    return found + host


def nothing_written_outside(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    uploads = Path(run_.target.paths.uploads_dir)
    found = escaped(run_.stack.root, uploads)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        return [OracleResult("nothing written outside the uploads folder", False,
                             f"wrote outside /{appdata.store_member(run_.target)}: {len(found)} ({shown})")]
    live = folder_manifest(uploads)
    kept = [n for n in live if n.rsplit("/", 1)[-1] in ESCAPE_NAMES]
    return [OracleResult("nothing written outside the uploads folder", not kept,
                         "no escaping member was extracted" if not kept else
                         f"escaping members extracted inside the folder: {', '.join(kept)}")]


# ---- a WAL segment the target needs is missing --------------------------------------------------

def prepare_pitr_missing_wal(run_: DrillRun, ctx: Context) -> None:
    """A base backup, a commit after it, and the WAL segment holding that commit lost from the archive
    (the recovery cannot get past it, so it cannot reach the target time that comes later)."""
    from recovery import pitr

    appdata.create_marks(run_.target)
    run_.action(pitr.base_backup, run_.target, label="gate")
    appdata.mark(run_.target, BEFORE_TARGET_MARK)
    with integrity.connect(run_.target, "postgres") as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        segment = str(row[0]) if row else ""

        def archived() -> bool:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            return bool(last and last[0] and str(last[0]) >= segment)

        wait_until(f"{segment} archived", archived, timeout=30)
    (Path(run_.target.paths.wal_archive) / segment).unlink()
    ctx.notes["bad"] = f"WAL segment {segment} removed from the archive"
    ctx.notes["segment"] = segment


def not_promoted_short(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """Harm: a server that accepts writes while a commit before the target is missing."""
    name = f"bad backup ({ctx.notes['bad']})"
    try:
        with integrity.connect(run_.target, "mks_db") as conn:
            promoted = not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            before = appdata.marked(conn, BEFORE_TARGET_MARK)
    except Exception as exc:  # refused to start: the safe answer when the target cannot be reached
        fatal = server_fatal(run_.target.database.log_file)
        why = fatal.split("FATAL:", 1)[-1].strip() if fatal else f"{type(exc).__name__}"
        return [OracleResult(name, True, f"the server did not open short of the target ({why})")]
    if promoted and not before:
        return [OracleResult(name, False, "promoted a server that stopped short of the target (the commit "
                             f"in {ctx.notes['segment']}, before the target, is missing)")]
    state = "serving with every commit before the target" if promoted else "still in recovery, not promoted"
    return [OracleResult(name, True, state)]


def original_cluster_serves(run_: DrillRun, ctx: Context) -> list[OracleResult]:
    """After a refused recovery the cluster as it was before the procedure serves again: the commit
    before the target (still in its own WAL), the mistake and the commit after the target as they were."""
    name = "the cluster before the procedure serves again"
    details = run_.fault_details
    table = details["table"]  # what the mistake deleted from: the relation's child, or the gate's marks
    try:
        with integrity.connect(run_.target, "mks_db") as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
            before_mark = appdata.marked(conn, BEFORE_TARGET_MARK)
            after_mark = appdata.marked(conn, AFTER_TARGET_MARK)
            rows = appdata.count(conn, table, but=AFTER_TARGET_MARK)
    except Exception as exc:
        return [OracleResult(name, False, "PostgreSQL does not serve mks_db after the procedure: "
                             f"{first_error(exc)} (left down: the cluster before the recovery was not "
                             "started again)")]
    expected = details["documents_before"] - details["deleted"]
    label = integrity.label(table)
    wrong = [what for what, bad in (
        ("the server is still in recovery", in_recovery),
        # without a relation the mistake deleted the gate's marks, the one before the target among them
        ("the commit before the target is missing", table != appdata.MARKS and before_mark != 1),
        ("the commit after the target is missing", after_mark != 1),
        (f"{label}: {rows}, {expected} before the procedure", rows != expected)) if bad]
    return [OracleResult(name, not wrong, "; ".join(wrong) or
                         f"the data as before the procedure ({label}: {rows}, the commit after the target)")]


# ---- the full-recovery script: the database and the uploads at once ----------------------------

@dataclass
class RowsAndFilesLost:
    """Rows deleted by mistake and a few uploaded files lost: both live, both at stake under a bad backup."""

    name: str = "rows-and-files-lost"
    label: str = "データの一部削除とアップロードファイルの一部消失"

    def inject(self, stack: Stack) -> Details:
        rows = DeleteRowsByMistake().inject(stack)
        return {**rows, **RemoveSomeUploads().inject(stack), "rows": rows}

    def confirm(self, stack: Stack, details: Details) -> str:
        return f"{DeleteRowsByMistake().confirm(stack, details['rows'])}; " \
               f"{RemoveSomeUploads().confirm(stack, details)}"


def prepare_full_bad_dump(run_: DrillRun, ctx: Context) -> None:
    prepare_database_bad_newest(run_, ctx)
    prepare_uploads(run_, ctx)


def prepare_full_bad_archive(run_: DrillRun, ctx: Context) -> None:
    prepare_database(run_, ctx)
    prepare_uploads_bad_newest(run_, ctx)


def prepare_full_escaping(run_: DrillRun, ctx: Context) -> None:
    prepare_database(run_, ctx)
    prepare_uploads_escaping(run_, ctx)
