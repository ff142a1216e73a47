"""安全コピー: what the restores keep of what they replaced, listed, and removed by age or count.

Every restore keeps the state it replaces (the runbook's 念のため copies): pre_restore_<ts>.dump
and the uploads and config pre_restore archives in the backup folder, the config files a git
restore replaced in the scratch folder, and the data directory a PITR replaced (or a failed PITR
left) beside the live one, the uploads folder a restore renamed aside and kept (.uploads.old-<ts>),
and the old databases a database restore renamed aside (<db>_pre_<ts>, listed when the server
answers). Only names these actions make are considered, never a scheduled backup.

A removal keeps the newest `keep` of each kind and, of the others, removes those older than
`older_than_hours` (either rule alone, or both). Every copy to remove is checked first (a real
file or folder, not a link; a data directory no server runs in); one that fails stops the
removal before anything is deleted; a renamed database is dropped only while nobody is connected
to it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from recovery import backups
from recovery.actions import action, option
from recovery.errors import RecoveryError
from recovery.integrity import connect
from recovery.journal import Journal
from recovery.removal import remove_tree
from recovery.target import Target

_STAMP = r"(\d{8}_\d{6})"
REMOVAL_HINT = "kept until safety-copies-remove (--older-than HOURS and/or --keep N; --dry-run first)"


class SafetyCopyError(RecoveryError):
    """A safety copy cannot be removed safely, or the removal was not asked for clearly."""


@dataclass(frozen=True)
class Kind:
    name: str
    folder: Path
    pattern: re.Pattern[str]
    utc: bool  # the stamp in the name is UTC (backups.stamp) or local time (archives.timestamp)
    folder_copy: bool  # a folder, not a file
    companions: Callable[[Path], list[Path]] = lambda path: []


def kinds(target: Target) -> tuple[Kind, ...]:
    backup_dir, scratch = Path(target.paths.backup_dir), Path(target.paths.scratch_dir)
    data_dir, uploads = Path(target.database.data_dir), Path(target.paths.uploads_dir)
    pitr = re.escape(data_dir.name)
    return (
        Kind("database-dump", backup_dir, re.compile(rf"pre_restore_{_STAMP}\.dump"), True, False,
             lambda path: [backups.sidecar(path), backups.manifest_path(path)]),
        Kind("uploads-archive", backup_dir, re.compile(rf"uploads_pre_restore_{_STAMP}\.tar\.gz"),
             False, False),
        Kind("config-archive", backup_dir, re.compile(rf"config_pre_restore_{_STAMP}\.tar\.gz"),
             False, False),
        Kind("config-files", scratch, re.compile(rf"config_pre_restore_{_STAMP}"), False, True),
        Kind("pitr-data-dir", data_dir.parent, re.compile(rf"{pitr}\.pre_pitr_{_STAMP}"), True, True),
        Kind("pitr-failed-dir", data_dir.parent, re.compile(rf"{pitr}\.failed_pitr_{_STAMP}"), True, True),
        Kind("uploads-folder", uploads.parent, re.compile(rf"\.{re.escape(uploads.name)}\.old-{_STAMP}"),
             False, True),
    )


@dataclass(frozen=True)
class SafetyCopy:
    kind: str
    path: Path
    made_at: dt.datetime
    bytes: int
    companions: tuple[Path, ...]
    folder_copy: bool
    database: str = ""  # a renamed database (<db>_pre_<ts>): path is only its name

    def age_hours(self, now: dt.datetime) -> float:
        return round((now - self.made_at).total_seconds() / 3600, 2)

    def describe(self, now: dt.datetime) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path), "made_at": self.made_at.isoformat(),
                "age_hours": self.age_hours(now), "bytes": self.bytes,
                "companions": [str(c) for c in self.companions]}


class NoSpaceError(RecoveryError):
    """A restore would not fit (staging, side database, safety copy); refused before anything changed."""


MB = 1024 * 1024


def require_free_space(needs: dict[Path, tuple[int, str]]) -> list[dict[str, Any]]:
    """Check that what a restore will write fits: `needs` maps a folder to (bytes, what it is for).
    Needs on one filesystem add up. Raises NoSpaceError saying needed and free; returns the notes."""
    by_device: dict[int, tuple[int, int, list[str]]] = {}
    unchecked = []
    for folder, (needed, what) in needs.items():
        if not folder.is_dir():  # e.g. a server's data directory inside a container
            unchecked.append({"for": [f"{what} in {folder}"], "needed_mb": round(needed / MB, 1),
                              "free_mb": None, "note": "not a folder on this host: not checked"})
            continue
        info = os.statvfs(folder)
        device = os.stat(folder).st_dev
        total, _, parts = by_device.get(device, (0, info.f_bavail * info.f_frsize, []))
        by_device[device] = (total + needed, info.f_bavail * info.f_frsize, [*parts, f"{what} in {folder}"])
    notes = unchecked
    for needed, free, parts in by_device.values():
        notes.append({"for": parts, "needed_mb": round(needed / MB, 1), "free_mb": round(free / MB, 1)})
        if needed > free:
            what = "; ".join(parts)
            raise NoSpaceError(f"not enough free space: needed about {needed / MB:.1f} MB ({what}), "
                               f"free {free / MB:.1f} MB on that filesystem")
    return notes


def folder_bytes(path: Path) -> int:
    """The bytes of a file, or of every file below a folder (files vanishing meanwhile skipped)."""
    return _size(path)


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(f"{folder}/{name}").st_size  # strings: once per file of 100,000
            except FileNotFoundError:
                continue
    return total


def find(target: Target) -> list[SafetyCopy]:
    """Every safety copy of the target, oldest first within each kind."""
    found = []
    for kind in kinds(target):
        if not kind.folder.is_dir():
            continue
        for path in kind.folder.iterdir():
            match = kind.pattern.fullmatch(path.name)
            if not match:
                continue
            made = dt.datetime.strptime(match[1], "%Y%m%d_%H%M%S")
            made = made.replace(tzinfo=dt.UTC) if kind.utc else made.astimezone()
            companions = tuple(c for c in kind.companions(path) if c.exists())
            found.append(SafetyCopy(kind.name, path, made, _size(path), companions, kind.folder_copy))
    return sorted(found, key=lambda c: (c.kind, c.made_at, c.path.name))


def renamed_databases(target: Target) -> list[SafetyCopy]:
    """The old databases a database restore renamed aside (<db>_pre_<ts>, UTC): its safety copies.
    Raises psycopg.Error or OSError when the server does not answer."""
    live = target.database.name
    pattern = re.compile(rf"{re.escape(live)}_pre_{_STAMP}")
    with connect(target, "postgres") as conn:
        rows = conn.execute("SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY 1").fetchall()
    found = []
    for name, size in rows:
        if (match := pattern.fullmatch(name)) is not None:
            made = dt.datetime.strptime(match[1], "%Y%m%d_%H%M%S").replace(tzinfo=dt.UTC)
            found.append(SafetyCopy("database-renamed", Path(name), made, int(size), (), False,
                                    database=name))
    return found


def find_all(target: Target) -> tuple[list[SafetyCopy], str]:
    """The files and folders, and the renamed databases when the server answers (else why not)."""
    copies = find(target)
    try:
        return copies + renamed_databases(target), ""
    except (psycopg.Error, OSError) as exc:
        return copies, f"renamed databases not listed: the server does not answer ({str(exc).strip()[:200]})"


def select(copies: list[SafetyCopy], older_than_hours: float | None, keep: int | None,
           now: dt.datetime) -> list[SafetyCopy]:
    """The copies to remove: beyond the newest `keep` of their kind, and older than the age given."""
    if older_than_hours is None and keep is None:
        raise SafetyCopyError("say which copies go: --older-than HOURS, --keep N, or both")
    if (keep is not None and keep < 0) or (older_than_hours is not None and older_than_hours < 0):
        raise SafetyCopyError("--older-than and --keep cannot be negative")
    chosen = []
    for kind in sorted({c.kind for c in copies}):
        newest_first = sorted((c for c in copies if c.kind == kind), key=lambda c: c.made_at, reverse=True)
        for candidate in newest_first[keep or 0:]:
            if older_than_hours is None or candidate.age_hours(now) > older_than_hours:
                chosen.append(candidate)
    return chosen


def _check_removable(copy: SafetyCopy, target: Target) -> None:
    if copy.database:
        if copy.database == target.database.name:
            raise SafetyCopyError(f"{copy.database} is the live database")
        with connect(target, "postgres") as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                               (copy.database,)).fetchone()
        if row and row[0]:
            raise SafetyCopyError(f"{copy.database} has {row[0]} connections; not dropped")
        return
    if copy.path.is_symlink():
        raise SafetyCopyError(f"{copy.path} is a symbolic link, not a safety copy made here")
    if copy.folder_copy != copy.path.is_dir():
        raise SafetyCopyError(f"{copy.path} is not a {'folder' if copy.folder_copy else 'file'}")
    if copy.folder_copy and (copy.path / "postmaster.pid").exists():
        raise SafetyCopyError(f"{copy.path} holds postmaster.pid: a server may run in it; not removed")


def _remove(copy: SafetyCopy, target: Target) -> None:
    if copy.database:
        with connect(target, "postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(copy.database)))
        return
    if copy.folder_copy:
        remove_tree(copy.path)
    else:
        copy.path.unlink()
    for companion in copy.companions:
        companion.unlink(missing_ok=True)


LIST_TITLE = "安全コピー一覧"
REMOVE_TITLE = "安全コピー削除"


@action("safety_copies_list", LIST_TITLE, cli="safety-copies",
        help="安全コピー一覧: the copies the restores kept of what they replaced, with age and size",
        plan=(("list", LIST_TITLE, "find the safety copies in the backup, scratch and data folders"),))
def list_safety_copies(journal: Journal, target: Target) -> None:
    now = dt.datetime.now(dt.UTC)
    with journal.step("list", LIST_TITLE) as step:
        copies, unlisted = find_all(target)
        step.note("copies", [c.describe(now) for c in copies])
        if unlisted:
            step.note("warning", unlisted)
        step.note("count", len(copies))
        step.note("bytes", sum(c.bytes for c in copies))


def _plan_remove(journal: Journal, target: Target, older_than_hours: float | None = None,
                 keep: int | None = None) -> None:
    now = dt.datetime.now(dt.UTC)
    chosen = select(find_all(target)[0], older_than_hours, keep, now)  # reads only
    journal.plan("select", "削除対象の選定",
                 what="the newest --keep of each kind stay; older than --older-than go",
                 older_than_hours=older_than_hours, keep=keep, remove=[str(c.path) for c in chosen])
    journal.plan("remove", REMOVE_TITLE,
                 what=f"check, then remove {len(chosen)} safety copies and their sidecars")


@action("safety_copies_remove", REMOVE_TITLE, cli="safety-copies-remove", plan=_plan_remove,
        help="安全コピー削除: those older than --older-than hours and/or beyond the newest --keep of "
             "each kind",
        options=(option("--older-than", type=float, metavar="HOURS", dest="older_than_hours",
                        help="remove copies older than this"),
                 option("--keep", type=int, metavar="N", help="keep the newest N of each kind")))
def remove_safety_copies(journal: Journal, target: Target, older_than_hours: float | None = None,
                         keep: int | None = None) -> None:
    now = dt.datetime.now(dt.UTC)
    with journal.step("select", "削除対象の選定") as step:
        copies, unlisted = find_all(target)
        chosen = select(copies, older_than_hours, keep, now)
        step.note("kept", [str(c.path) for c in copies if c not in chosen])
        step.note("remove", [c.describe(now) for c in chosen])
        if unlisted:
            step.note("warning", unlisted)
        for copy in chosen:  # every one is checked before the first is removed
            _check_removable(copy, target)
    with journal.step("remove", REMOVE_TITLE) as step:
        for copy in chosen:
            _remove(copy, target)
        step.note("removed", [str(c.path) for c in chosen])
        step.note("bytes_freed", sum(c.bytes for c in chosen))
