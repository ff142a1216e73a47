"""アップロードファイル復旧: back up and restore the uploads folder through verified archives.

Where this differs from the runbook's shell block, and why:
- `rm -rf /opt/mks/uploads/*` leaves hidden files behind (the glob skips dot files) and empties the
  live folder before the restore is known to work. Here the archive is verified first, extracted into
  a staging folder beside the uploads folder, checked, and swapped in by rename; the old folder is
  removed only after the swap succeeded.
- `tar -xzf $LATEST_UPLOADS -C /` trusts every path in the archive (absolute paths, `..`, links);
  here each member is checked against the archive's SHA-256 manifest before anything is written.
- `chmod -R 755` makes every uploaded file executable; here directories are 0755, files 0644.
- `ls -t | head -1` picks a safety copy or a broken archive if it is newest; here the newest
  scheduled backup (`uploads_YYYYmmdd_HHMMSS.tar.gz`) that verifies is used, and the safety copy
  (`uploads_pre_restore_<ts>.tar.gz`, kept in the backup folder instead of /tmp) is restored only
  when named.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from pathlib import Path

from recovery.actions import BACKUP_OPTION, action
from recovery.archives import (
    DIR_MODE,
    ArchiveError,
    Manifest,
    backup_path,
    choose_backup,
    chown_tree,
    create_archive,
    extract_verified,
    timestamp,
    verify_archive,
)
from recovery.config_files import target_root
from recovery.errors import RecoveryError
from recovery.journal import Journal
from recovery.plain_archives import NO_MANIFEST, extract_plain, has_manifest, scan_plain
from recovery.target import Target

log = logging.getLogger(__name__)

ROOT = "uploads"  # the manifest root of every uploads archive
PREFIX = "uploads"

BACKUP_PLAN = (("archive", "アップロードバックアップ作成", "tar.gz with a SHA-256 manifest"),)
RESTORE_PLAN = (
    ("select", "バックアップ確認", "newest uploads_YYYYmmdd_HHMMSS.tar.gz that verifies (or the one named); "
     "a plain tar.gz without manifest: every member checked, the whole gzip stream read"),
    ("safety-copy", "現在のアップロードディレクトリバックアップ", "uploads_pre_restore_<ts>.tar.gz"),
    ("stage", "リストア実行", "extract into a staging folder beside the uploads folder, verify sha256"),
    ("swap", "アップロードディレクトリ入れ替え", "rename old away, staging into place, remove old"),
    ("check", "ファイル確認", "file count and bytes against the manifest"),
)


def _plan_backup(journal: Journal, target: Target) -> None:
    for name, title, what in BACKUP_PLAN:
        journal.plan(name, title, what=what, source=target.paths.uploads_dir,
                     backup_dir=target.paths.backup_dir)


@action("uploads-backup", "アップロードファイルバックアップ", plan=_plan_backup, cli="uploads-backup",
        help="アップロードファイルのバックアップ")
def backup_uploads(journal: Journal, target: Target) -> None:
    """Write backup_dir/uploads_YYYYmmdd_HHMMSS.tar.gz of the uploads folder (hidden files included)."""
    uploads, backup_dir = Path(target.paths.uploads_dir), Path(target.paths.backup_dir)
    with journal.step(*BACKUP_PLAN[0][:2]) as step:
        dest = backup_path(backup_dir, PREFIX)
        manifest = create_archive(uploads, dest, root=ROOT)
        step.note("archive", str(dest))
        step.note("files", len(manifest.files))
        step.note("bytes", manifest.total_bytes)


def _plan_restore(journal: Journal, target: Target, backup: str | Path | None = None) -> None:
    for name, title, what in RESTORE_PLAN:
        journal.plan(name, title, what=what, uploads_dir=target.paths.uploads_dir,
                     backup=str(backup or "newest"))


@action("uploads-restore", "アップロードファイル復旧", plan=_plan_restore, cli="uploads-restore",
        help="アップロードファイル復旧", options=(BACKUP_OPTION,))
def restore_uploads(journal: Journal, target: Target, backup: str | Path | None = None) -> None:
    """Restore the uploads folder from `backup` or the newest valid uploads backup."""
    uploads, backup_dir = Path(target.paths.uploads_dir), Path(target.paths.backup_dir)
    stamp = timestamp()
    staging = uploads.parent / f".{uploads.name}.staging-{stamp}"
    old = uploads.parent / f".{uploads.name}.old-{stamp}"
    try:
        with journal.step(*RESTORE_PLAN[0][:2]) as step:
            prefixes = folder_prefixes(target)
            archive, manifest = choose_backup(backup_dir, PREFIX, ROOT, backup, step.record.details,
                                              verify=lambda path: verify_uploads_archive(path, prefixes))
            step.note("archive", str(archive))
            step.note("files", len(manifest.files))
            step.note("bytes", manifest.total_bytes)
            step.note("verification", NO_MANIFEST if manifest.plain else "every member against its manifest")
        with journal.step(*RESTORE_PLAN[1][:2]) as step:
            if uploads.is_dir():
                safety = backup_path(backup_dir, f"{PREFIX}_pre_restore")
                kept = create_archive(uploads, safety, root=ROOT)
                step.note("safety_copy", str(safety))
                step.note("files", len(kept.files))
            else:
                step.note("safety_copy", f"none: {uploads} does not exist")
        with journal.step(*RESTORE_PLAN[2][:2]) as step:
            if manifest.plain:
                extract_plain(archive, staging, prefixes, manifest)
            else:
                extract_verified(archive, staging, ROOT)
            account = target.service_account()
            if account is not None:
                chown_tree(staging, account.uid, account.gid)
            step.note("staging", str(staging))
            step.note("owner", account.name if account else "current user")
            if account is not None and uploads.is_dir() and uploads.stat().st_uid != account.uid:
                step.note("warning", f"the live folder was owned by uid {uploads.stat().st_uid}, not by "
                                     f"{account.name}; check target.service_user is the backend's account")
        with journal.step(*RESTORE_PLAN[3][:2]) as step:
            swap_in(staging, uploads, old)
            step.note("removed_old", str(old))
        with journal.step(*RESTORE_PLAN[4][:2]) as step:
            # every file of the backup must be there with its size; the service stays up during an
            # uploads restore, so files it adds meanwhile (an upload, its health probe) are no error
            problems = _missing_or_different(uploads, manifest)
            step.note("files", len(manifest.files))
            step.note("bytes", manifest.total_bytes)
            if problems:
                raise ArchiveError(f"{uploads} does not hold the backup's files: " + "; ".join(problems[:10]))
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def folder_prefixes(target: Target) -> tuple[str, ...]:
    """The uploads folder's path as a plain archive made relative to / names it (opt/mks/uploads; in a
    sandbox also the sandbox's own path, for an archive made there)."""
    uploads = Path(target.paths.uploads_dir)
    found = [uploads.as_posix().lstrip("/")]
    with contextlib.suppress(RecoveryError, ValueError):  # a target whose root cannot be told
        found.insert(0, uploads.relative_to(target_root(target)).as_posix())
    return tuple(dict.fromkeys(p for p in found if p not in ("", ".")))


def verify_uploads_archive(path: Path, prefixes: tuple[str, ...]) -> Manifest:
    """An mks archive against its manifest; a plain tar.gz (no manifest first) by its members and CRC."""
    if has_manifest(path) is False:
        log.warning("%s: %s", path, NO_MANIFEST)
        return scan_plain(path, prefixes, ROOT)
    return verify_archive(path, ROOT)


def swap_in(staging: Path, live: Path, old: Path) -> None:
    """Put staging where live is; the old folder goes back if the second rename fails."""
    os.chmod(staging, DIR_MODE)
    if live.exists():
        os.rename(live, old)
        try:
            os.rename(staging, live)
        except OSError:
            os.rename(old, live)
            raise
        shutil.rmtree(old)
    else:
        os.rename(staging, live)


def _missing_or_different(directory: Path, manifest: Manifest) -> list[str]:
    problems = []
    for entry in manifest.files:
        try:
            info = (directory / entry.path).lstat()
        except FileNotFoundError:
            problems.append(f"{entry.path}: missing")
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
            problems.append(f"{entry.path}: {info.st_size} bytes, expected {entry.size}")
    return problems
