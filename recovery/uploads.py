"""アップロードファイル復旧: back up and restore the uploads folder through verified archives.

Where this differs from the runbook's shell block, and why:
- `rm -rf /opt/mks/uploads/*` leaves hidden files behind (the glob skips dot files) and empties the
  live folder before the restore is known to work. Here the archive is checked member by member
  while it is extracted into a staging folder beside the uploads folder (discarded if any member
  fails), and swapped in by rename; the renamed old folder is the safety copy, kept beside the live
  one (no second copy of the data on the recovery's path) until safety-copies-remove, or archived
  and removed after the restored folder checked out (--safety-archive).
- `tar -xzf $LATEST_UPLOADS -C /` trusts every path in the archive (absolute paths, `..`, links);
  here each member is checked against the archive's SHA-256 manifest as it is written into the
  staging folder, which nothing reads and which is discarded when any member fails.
- `chmod -R 755` makes every uploaded file executable; here directories are 0755, files 0644.
- `ls -t | head -1` picks a safety copy or a broken archive if it is newest; here the newest
  scheduled backup (`uploads_YYYYmmdd_HHMMSS.tar.gz`) that verifies is used, and a safety archive
  (`uploads_pre_restore_<ts>.tar.gz`, in the backup folder instead of /tmp) is restored only when
  named.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
from pathlib import Path

from recovery import safety_copies
from recovery.actions import BACKUP_OPTION, action, option
from recovery.archives import (
    DIR_MODE,
    ArchiveError,
    Manifest,
    backup_path,
    choose_backup,
    create_archive,
    decompressor,
    stage_archive,
    timestamp,
    verify_archive,
)
from recovery.commands import RunAs
from recovery.config_files import target_root
from recovery.errors import RecoveryError
from recovery.journal import Journal, Step
from recovery.plain_archives import NO_MANIFEST, has_manifest, scan_plain, stage_plain
from recovery.removal import remove_tree
from recovery.tar_extract import gnu_tar, stage_with_tar
from recovery.target import Target
from recovery.waiting import wait_until

log = logging.getLogger(__name__)

ROOT = "uploads"  # the manifest root of every uploads archive
PREFIX = "uploads"

BACKUP_PLAN = (("archive", "アップロードバックアップ作成", "tar.gz with a SHA-256 manifest"),)


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


def _plan_restore(journal: Journal, target: Target, backup: str | Path | None = None,
                  safety_archive: bool = True) -> None:
    for name, title, what in RESTORE_PLAN:
        journal.plan(name, title, what=what, uploads_dir=target.paths.uploads_dir,
                     backup=str(backup or "newest"))


SAFETY_ARCHIVE_OPTION = option("--safety-archive", action=argparse.BooleanOptionalAction, default=False,
                               help="archive the renamed old folder to uploads_pre_restore_<ts>.tar.gz and "
                                    "remove it (default: the renamed folder .uploads.old-<ts> is kept as the "
                                    "safety copy)")


@action("uploads-restore", "アップロードファイル復旧", plan=_plan_restore, cli="uploads-restore",
        help="アップロードファイル復旧", options=(BACKUP_OPTION, SAFETY_ARCHIVE_OPTION))
def restore_uploads(journal: Journal, target: Target, backup: str | Path | None = None,
                    safety_archive: bool = False) -> None:
    """Restore the uploads folder from `backup` or the newest valid uploads backup.

    Choosing and staging are one pass: each candidate is checked member by member while it is
    extracted into a staging folder beside the uploads folder (discarded when any member fails, and
    the next older candidate tried). The old folder is renamed aside by the swap; that is the safety
    copy, kept as .uploads.old-<ts> until safety-copies-remove (with `safety_archive`, archived to
    uploads_pre_restore_<ts>.tar.gz and removed after the restored folder checked out).
    """
    uploads, backup_dir = Path(target.paths.uploads_dir), Path(target.paths.backup_dir)
    staging, old = aside_names(uploads)
    account = target.service_account()
    try:
        with journal.step(*RESTORE_PLAN[0][:2]) as step:
            prefixes = folder_prefixes(target)
            live_bytes = safety_copies.folder_bytes(uploads) if safety_archive and uploads.is_dir() else 0

            def stage(path: Path) -> Manifest:
                needs = {uploads.parent: (staged_bytes(path), "the staging folder")}
                if live_bytes:
                    needs[backup_dir] = (live_bytes, "the safety archive (at most the live folder's bytes)")
                step.note("free_space", safety_copies.require_free_space(needs))
                return stage_uploads_archive(path, staging, prefixes, account)

            archive, manifest = choose_backup(backup_dir, PREFIX, ROOT, backup, step.record.details,
                                              verify=stage)
            step.note("archive", str(archive))
            step.note("files", len(manifest.files))
            step.note("bytes", manifest.total_bytes)
            step.note("verification", NO_MANIFEST if manifest.plain else "every member against its manifest")
            step.note("decompressor", decompressor())
            tar_fed = not manifest.plain and gnu_tar() is not None
            step.note("extractor", "GNU tar, fed what was checked here" if tar_fed else "python")
        with journal.step(*RESTORE_PLAN[1][:2]) as step:  # written by select's one pass; what it holds
            step.note("staging", str(staging))
            step.note("owner", account.name if account else "current user")
            step.note("entries", len(manifest.entries))
            if account is not None and uploads.is_dir() and uploads.stat().st_uid != account.uid:
                step.note("warning", f"the live folder was owned by uid {uploads.stat().st_uid}, not by "
                                     f"{account.name}; check target.service_user is the backend's account")
        with journal.step(*RESTORE_PLAN[2][:2]) as step:
            swap_in(staging, uploads, old)
            step.note("previous_folder", str(old) if old.exists() else f"none: {uploads} did not exist")
        with journal.step(*RESTORE_PLAN[3][:2]) as step:
            # every file of the backup must be there with its size; the service stays up during an
            # uploads restore, so files it adds meanwhile (an upload, its health probe) are no error
            problems = _missing_or_different(uploads, manifest)
            step.note("files", len(manifest.files))
            step.note("bytes", manifest.total_bytes)
            if problems:
                swap_back(uploads, old, staging)
                raise ArchiveError(f"{uploads} does not hold the backup's files (the old folder is back): "
                                   + "; ".join(problems[:10]))
        del manifest  # 100,000 entries: not held while the safety archive builds its own
        with journal.step(*RESTORE_PLAN[4][:2]) as step:
            keep_safety_copy(step, old, backup_dir, safety_archive)
    finally:
        if staging.exists():
            remove_tree(staging)


RESTORE_PLAN = (
    ("select", "バックアップ確認", "newest uploads_YYYYmmdd_HHMMSS.tar.gz (or the one named) checked "
     "member by member while extracted into a staging folder beside the uploads folder; a plain tar.gz "
     "without manifest: every member checked, the whole gzip stream read; free space first"),
    ("stage", "リストア実行", "the staging folder select wrote (GNU tar as the service account, fed the "
     "bytes checked and hashed here; without GNU tar or for a plain archive, written here)"),
    ("swap", "アップロードディレクトリ入れ替え", "rename the live folder aside, staging into place"),
    ("check", "ファイル確認", "every file (count, bytes), folder and link of the archive's listing at its "
     "place in the restored folder (the old folder back if not)"),
    ("safety-copy", "現在のアップロードディレクトリバックアップ",
     "the renamed old folder kept as .uploads.old-<ts> until safety-copies-remove (with "
     "--safety-archive: uploads_pre_restore_<ts>.tar.gz of it, then removed)"),
)


def aside_names(uploads: Path) -> tuple[Path, Path]:
    """The staging folder and the name the live folder is renamed to, stamped with a second that no
    earlier restore's kept folder has (a second restore within the same second waits for the next)."""
    def free() -> tuple[Path, Path] | None:
        stamp = timestamp()
        names = (uploads.parent / f".{uploads.name}.staging-{stamp}",
                 uploads.parent / f".{uploads.name}.old-{stamp}")
        return None if any(os.path.lexists(n) for n in names) else names

    return wait_until(f"a free name beside {uploads}", free, timeout=3, interval=0.1, error=ArchiveError)


def staged_bytes(archive: Path) -> int:
    """About what extracting the archive writes: the gzip trailer's size of the tar (modulo 4 GiB,
    so never taken below the archive's own size)."""
    size = archive.stat().st_size
    if size < 18:
        return size
    with open(archive, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return max(size, int.from_bytes(handle.read(4), "little"))


def stage_uploads_archive(path: Path, staging: Path, prefixes: tuple[str, ...],
                          account: RunAs | None) -> Manifest:
    """An mks archive checked against its manifest (extracted by GNU tar where it is installed, by
    recovery.staging else), or a plain tar.gz by its members and CRC, while written into staging
    (removed on failure), owned by `account`."""
    owner = (account.uid, account.gid) if account is not None else None
    if has_manifest(path) is False:
        log.warning("%s: %s", path, NO_MANIFEST)
        return stage_plain(path, staging, prefixes, ROOT, owner)
    if gnu_tar() is not None:
        return stage_with_tar(path, staging, ROOT, account)
    return stage_archive(path, staging, ROOT, owner)


def keep_safety_copy(step: Step, old: Path, backup_dir: Path, archive: bool) -> None:
    """The renamed old folder is the safety copy: archived and removed, or kept as it is."""
    if not old.exists():
        step.note("safety_copy", "none: there was no uploads folder to replace")
        return
    if not archive:
        step.note("safety_copy", str(old))
        step.note("removal", safety_copies.REMOVAL_HINT)
        return
    safety = backup_path(backup_dir, f"{PREFIX}_pre_restore")
    try:
        kept = create_archive(old, safety, root=ROOT)
    except RecoveryError as exc:  # the restore is done; the renamed folder still holds it all
        step.note("safety_copy", str(old))
        step.note("warning", f"archiving {old} failed, the folder itself is the safety copy: {exc}")
        return
    step.note("safety_copy", str(safety))
    step.note("files", len(kept.files))
    remove_tree(old)
    step.note("removed_old", str(old))


def folder_prefixes(target: Target) -> tuple[str, ...]:
    """The uploads folder's path as a plain archive made relative to / names it (opt/mks/uploads; in a
    sandbox also the sandbox's own path, for an archive made there)."""
    uploads = Path(target.paths.uploads_dir)
    found = [uploads.as_posix().lstrip("/")]
    with contextlib.suppress(RecoveryError, ValueError):  # a target whose root cannot be told
        found.insert(0, uploads.relative_to(target_root(target)).as_posix())
    return tuple(dict.fromkeys(p for p in found if p not in ("", ".")))


def verify_uploads_archive(path: Path, prefixes: tuple[str, ...]) -> Manifest:
    """Check only (the full recovery's choice); see stage_uploads_archive."""
    """An mks archive against its manifest; a plain tar.gz (no manifest first) by its members and CRC."""
    if has_manifest(path) is False:
        log.warning("%s: %s", path, NO_MANIFEST)
        return scan_plain(path, prefixes, ROOT)
    return verify_archive(path, ROOT)


def swap_in(staging: Path, live: Path, old: Path) -> None:
    """Put staging where live is, live kept as old; the old folder goes back if the second rename fails."""
    os.chmod(staging, DIR_MODE)
    if live.exists():
        os.rename(live, old)
        try:
            os.rename(staging, live)
        except OSError:
            os.rename(old, live)
            raise
    else:
        os.rename(staging, live)


def swap_back(live: Path, old: Path, aside: Path) -> None:
    """Undo swap_in: the restored folder out (to `aside`, then removed), the old one back."""
    if not old.exists():
        return
    os.rename(live, aside)
    os.rename(old, live)
    remove_tree(aside)


def _missing_or_different(directory: Path, manifest: Manifest) -> list[str]:
    """What of the archive's listing is not at its place in the restored folder: a file missing or of
    another size, a folder or a link missing or of another kind (or target)."""
    problems = []
    base = os.fspath(directory)
    for entry in manifest.entries:
        try:
            info = os.lstat(f"{base}/{entry.path}")
        except FileNotFoundError:
            problems.append(f"{entry.path}: missing")
            continue
        if entry.type == "dir":
            if not stat.S_ISDIR(info.st_mode):
                problems.append(f"{entry.path}: not a folder")
        elif entry.type == "symlink":
            if not stat.S_ISLNK(info.st_mode) or os.readlink(f"{base}/{entry.path}") != entry.target:
                problems.append(f"{entry.path}: not the link to {entry.target}")
        elif not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
            problems.append(f"{entry.path}: {info.st_size} bytes, expected {entry.size}")
    return problems
