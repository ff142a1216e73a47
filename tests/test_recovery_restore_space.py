"""Issue 14's reliability rules: free space checked before anything is touched (needed vs free), the
renamed old database / folder as the safety copy, staging discarded when a member fails mid-way.

The free-space tests fake the filesystem's answer (os.statvfs in recovery.safety_copies) to report
almost nothing free: filling a real disk on a shared machine is not an option. Everything else is real.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recovery import health, safety_copies
from recovery.archives import listing
from recovery.database import backup_database, restore_database
from recovery.integrity import compare, fingerprint
from recovery.journal import ActionFailed
from recovery.safety_copies import list_safety_copies, remove_safety_copies
from recovery.uploads import restore_uploads
from tests.test_recovery_archives import _info, hostile
from tests.test_recovery_database import databases, step_detail
from tests.test_recovery_files import bare_target, noted
from tests.test_recovery_plain_archives import fill, tar


@pytest.fixture
def full_disk(monkeypatch):
    """statvfs answering 1 MB free on every filesystem (a fake: see the module's docstring)."""
    real = os.statvfs

    class Almost:
        def __init__(self, path):
            answer = real(path)
            self.f_frsize = answer.f_frsize
            self.f_bavail = (1024 * 1024) // answer.f_frsize

    monkeypatch.setattr(safety_copies.os, "statvfs", Almost)


def live_uploads(root: Path):
    target = bare_target(root)
    uploads = Path(target.paths.uploads_dir)
    fill(uploads)
    (uploads / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return target, uploads, Path(target.paths.backup_dir)


def test_an_uploads_restore_that_does_not_fit_is_refused_before_anything_is_touched(tmp_path, full_disk):
    target, uploads, backup_dir = live_uploads(tmp_path / "root")
    tar(backup_dir / "uploads_20240101_000000.tar.gz", "-C", str(uploads), ".")
    before = listing(uploads)
    with pytest.raises(ActionFailed, match=r"not enough free space: needed about [\d.]+ MB .*free 1\.0 MB"):
        restore_uploads(target)
    assert listing(uploads) == before
    assert not any(p.name.startswith(".uploads.") for p in uploads.parent.iterdir())


def test_the_renamed_old_folder_is_the_safety_copy_when_not_archived(tmp_path):
    target, uploads, backup_dir = live_uploads(tmp_path / "root")
    tar(backup_dir / "uploads_20240101_000000.tar.gz", "-C", str(uploads), ".")
    (uploads / "after the backup.txt").write_text("kept only in the safety copy")
    before = listing(uploads)
    journal = restore_uploads(target, safety_archive=False)
    kept = Path(noted(journal, "safety_copy"))
    assert kept.name.startswith(".uploads.old-") and kept.parent == uploads.parent
    assert listing(kept) == before
    assert not list(backup_dir.glob("uploads_pre_restore_*"))
    assert not (uploads / "after the backup.txt").exists()

    # a safety copy like the others: listed with its kind, removed only when asked (dry run first)
    listed = list_safety_copies(target).steps[0].details
    assert [c["kind"] for c in listed["copies"]] == ["uploads-folder"]
    assert "renamed databases not listed" in listed["warning"]  # a bare target has no server
    plan = remove_safety_copies(target, keep=0, dry_run=True)
    assert plan.steps[0].details["remove"] == [str(kept)] and kept.is_dir()
    remove_safety_copies(target, keep=0)
    assert not kept.exists() and listing(uploads)


def test_staging_is_discarded_when_a_later_member_fails(tmp_path):
    target, uploads, backup_dir = live_uploads(tmp_path / "root")
    good = b"written before the bad member comes"
    entries = [{"path": "a", "type": "file", "mode": "0644", "size": len(good),
                "sha256": hashlib.sha256(good).hexdigest()},
               {"path": "b", "type": "file", "mode": "0644", "size": 1,
                "sha256": hashlib.sha256(b"y").hexdigest()}]
    hostile(backup_dir / "uploads_20240101_000000.tar.gz", [(_info("a"), good), (_info("b"), b"x")], entries)
    before = listing(uploads)
    with pytest.raises(ActionFailed, match="member b does not match its manifest"):
        restore_uploads(target)
    assert listing(uploads) == before
    assert not any(p.name.startswith(".uploads.") for p in uploads.parent.iterdir()), "staging left behind"


@pytest.mark.stack
def test_a_database_restore_that_does_not_fit_is_refused_and_one_without_safety_dump_keeps_the_renamed_db(
        stack, monkeypatch):
    target = stack.target()
    backup = Path(step_detail(backup_database(target), "dump", "path"))
    live, names = fingerprint(target), databases(stack)
    real = os.statvfs
    with monkeypatch.context() as patched:
        class Almost:
            def __init__(self, path):
                answer = real(path)
                self.f_frsize, self.f_bavail = answer.f_frsize, (1024 * 1024) // answer.f_frsize

        patched.setattr(safety_copies.os, "statvfs", Almost)
        with pytest.raises(ActionFailed, match=r"not enough free space: needed about .*the side database"):
            restore_database(target, backup=backup)
    assert compare(live, fingerprint(target)) == [] and databases(stack) == names
    assert health.backend(target).ok

    journal = restore_database(target, backup=backup, safety_dump=False, jobs=2)
    old = step_detail(journal, "swap", "previous_database")
    assert step_detail(journal, "safety_copy", "database") == old
    assert old in databases(stack)
    assert step_detail(journal, "pg_restore", "jobs") == 2
    assert not list(Path(target.paths.backup_dir).glob("pre_restore_*"))
    assert compare(live, fingerprint(target)) == []

    listed = list_safety_copies(target).steps[0].details["copies"]
    assert {"kind": "database-renamed", "path": old} in [{k: c[k] for k in ("kind", "path")} for c in listed]
    plan = remove_safety_copies(target, keep=0, dry_run=True)
    assert old in plan.steps[0].details["remove"] and old in databases(stack)
    remove_safety_copies(target, keep=0)
    assert old not in databases(stack) and target.database.name in databases(stack)


@pytest.mark.parametrize("pigz", [True, False], ids=["pigz", "python gzip"])
def test_both_decompressors_stage_the_same_and_refuse_the_same(tmp_path, monkeypatch, pigz):
    import shutil as real_shutil

    from recovery import archives

    if pigz and real_shutil.which("pigz") is None:
        pytest.skip("pigz is not installed here")
    if not pigz:
        monkeypatch.setattr(archives.shutil, "which", lambda name: None)
    target, uploads, backup_dir = live_uploads(tmp_path / "root")
    want = listing(uploads)
    archive = tar(backup_dir / "uploads_20240101_000000.tar.gz", "-C", str(uploads), ".")
    journal = restore_uploads(target)
    assert noted(journal, "decompressor") == ("pigz" if pigz else "python gzip")
    assert {k: v.split()[2:] for k, v in listing(uploads).items()} == {
        k: v.split()[2:] for k, v in want.items()}
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) - 4096])
    before, beside = listing(uploads), sorted(uploads.parent.iterdir())  # the first restore's kept folder
    with pytest.raises(ActionFailed, match="truncated or corrupt"):
        restore_uploads(target, backup=archive)
    assert listing(uploads) == before
    assert sorted(uploads.parent.iterdir()) == beside, "staging left behind"
