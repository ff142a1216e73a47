"""アップロードファイル復旧 from a plain `tar -czf` archive (no manifest): the layouts people make, the
hostile ones refused with the live folder untouched, and a round trip on a live stack.

The archives are made by the real GNU tar where tar can make them; the hostile members tar would never
write (an absolute path, `..`) are written with Python's tarfile.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from recovery.archives import listing
from recovery.commands import run
from recovery.journal import ActionFailed
from recovery.plain_archives import NO_MANIFEST
from recovery.uploads import restore_uploads
from tests.test_recovery_files import bare_target, noted

NAME = "uploads_20240101_000000.tar.gz"


def fill(uploads: Path) -> None:
    (uploads / "2024/01").mkdir(parents=True, exist_ok=True)
    (uploads / "2024/01/図面 A.pdf").write_bytes(b"%PDF-1.7 drawing" * 300)
    (uploads / "2024/01/empty.bin").write_bytes(b"")
    (uploads / ".index").write_text("hidden file")
    script = uploads / "2024/run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    (uploads / "latest").symlink_to("2024/01/empty.bin")


def tar(archive: Path, *args: str) -> Path:
    run(["tar", "-czf", str(archive), *args], timeout=60)
    return archive


def expected_listing(source: Path) -> dict[str, str]:
    """What a restore gives: the same files and links, no executable bits, directories 0755."""
    result = {}
    for name, line in listing(source).items():
        kind, _, digest = line.split(" ", 2)
        mode = {"d": "0755", "f": "0644", "l": line.split(" ")[1]}[kind]
        result[name] = f"{kind} {mode} {digest}"
    return result


def live_folder(root: Path):
    target = bare_target(root)
    uploads = Path(target.paths.uploads_dir)
    (uploads / "live.pdf").write_bytes(b"%PDF live data")
    (uploads / ".keep").write_text("hidden")
    return target, uploads, Path(target.paths.backup_dir)


LAYOUTS = {
    "relative to the folder, with ./": lambda src: ("-C", str(src), "."),
    "relative to the folder, without ./": lambda src: ("-C", str(src), *sorted(os.listdir(src))),
    "relative to /": lambda src: ("-C", "/", str(src).lstrip("/")),
    "relative to /, with ./": lambda src: ("-C", "/", "./" + str(src).lstrip("/")),
    "absolute path given (tar strips the /)": lambda src: (str(src),),
    "relative to the folder's parent": lambda src: ("-C", str(src.parent), src.name),
    "relative to the folder's parent, with ./": lambda src: ("-C", str(src.parent), "./" + src.name),
    "relative to a folder further up": lambda src: ("-C", str(src.parent.parent),
                                                    f"{src.parent.name}/{src.name}"),
}
ROOT_RELATIVE = {"relative to /", "relative to /, with ./", "absolute path given (tar strips the /)",
                 "relative to the folder's parent", "relative to the folder's parent, with ./",
                 "relative to a folder further up"}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_plain_archive_in_each_layout_restores_the_folder(tmp_path, layout):
    target, uploads, backup_dir = live_folder(tmp_path / "root")
    source = tmp_path / "made-by-cron"
    source.mkdir()
    fill(source)
    if layout in ROOT_RELATIVE:
        source = uploads  # the folder as it was when cron archived it
        for child in list(uploads.iterdir()):
            child.unlink()
        fill(uploads)
    want = expected_listing(source)
    tar(backup_dir / NAME, *LAYOUTS[layout](source))
    if source == uploads:  # the damage after the backup
        (uploads / "2024/01/図面 A.pdf").write_bytes(b"corrupted")
        (uploads / "stray").write_text("not in the backup")

    journal = restore_uploads(target)
    assert journal.status == "succeeded"
    assert noted(journal, "verification") == NO_MANIFEST
    assert noted(journal, "extractor") == "python"  # a plain archive is written here, member by member
    assert noted(journal, "archive") == str(backup_dir / NAME)
    assert listing(uploads) == want
    assert not any(p.name.startswith(".uploads.staging") for p in uploads.parent.iterdir()), "staging left"
    safety = Path(noted(journal, "safety_copy"))  # the renamed old folder, kept as it was
    assert safety.name.startswith(".uploads.old-") and safety.parent == uploads.parent


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes | None = b"x"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind == tarfile.REGTYPE and data is not None:
        info.size = len(data)
        return info, io.BytesIO(data)
    return info, None


def handmade(path: Path, members: list) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            archive.addfile(info, data)
    return path


def _made_by_tar_then(path: Path, source: Path, change) -> Path:
    tar(path, "-C", str(source), ".")
    path.write_bytes(change(path.read_bytes()))
    return path


def _flip(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle:middle + 64]) + blob[middle + 64:]


BAD = {
    "dot-dot": (lambda p, _: handmade(p, [_member("./a/../../evil")]), r"'\.\.' component"),
    "absolute path": (lambda p, _: handmade(p, [_member("/etc/cron.d/evil")]), "absolute path"),
    "symlink to an absolute path": (lambda p, _: handmade(p, [_member("up", tarfile.SYMTYPE, "/etc")]),
                                    "points outside"),
    "symlink climbing out": (lambda p, _: handmade(p, [_member("./a/up", tarfile.SYMTYPE, "../../etc")]),
                             "points outside"),
    "hardlink out": (lambda p, _: handmade(p, [_member("h", tarfile.LNKTYPE, "/etc/shadow")]),
                     "points outside"),
    "fifo": (lambda p, _: handmade(p, [_member("pipe", tarfile.FIFOTYPE)]), "device or fifo"),
    "file below a symlink": (lambda p, _: handmade(p, [_member("d", tarfile.SYMTYPE, "."),
                                                       _member("d/f")]), "below a symlink"),
    "member twice": (lambda p, _: handmade(p, [_member("f"), _member("./f")]), "appears twice"),
    "outside the folder in a root-relative archive": (
        lambda p, up: handmade(p, [_member(str(up).lstrip("/") + "/ok"), _member("etc/cron.d/evil")]),
        "lies outside the folder"),
    "outside the folder in a parent-relative archive": (
        lambda p, up: handmade(p, [_member(f"{up.name}/ok"), _member("cron.d/evil")]),
        "lies outside the folder"),
    "truncated": (lambda p, up: _made_by_tar_then(p, up, lambda b: b[: len(b) * 2 // 3]),
                  "truncated or corrupt"),
    "corrupt in the middle": (lambda p, up: _made_by_tar_then(p, up, _flip), "truncated or corrupt|not a"),
    "not gzip": (lambda p, _: p.write_bytes(b"uploads as a text file\n" * 10) and p, "not a readable tar.gz"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_plain_archive_is_refused_and_the_live_folder_is_left_alone(tmp_path, case):
    target, uploads, backup_dir = live_folder(tmp_path / "root")
    big = tmp_path / "big"
    big.mkdir()
    (big / "random.bin").write_bytes(os.urandom(300_000))  # so that a cut lands inside the data
    make, reason = BAD[case]
    make(backup_dir / NAME, big if case in ("truncated", "corrupt in the middle") else uploads)
    before = listing(uploads)
    with pytest.raises(ActionFailed, match=reason) as failure:
        restore_uploads(target)
    assert listing(uploads) == before
    assert failure.value.journal.failed_step().name == "select"
    assert not (tmp_path / "etc").exists() and not (uploads.parent / "up").exists()
    assert not any(p.name.startswith(".uploads.") for p in uploads.parent.iterdir()), "staging left behind"
    assert not list(backup_dir.glob("uploads_pre_restore_*")), "a safety copy before the archive was checked"


def test_a_newer_bad_plain_archive_is_passed_over_for_an_older_good_one(tmp_path):
    target, uploads, backup_dir = live_folder(tmp_path / "root")
    source = tmp_path / "src"
    source.mkdir()
    fill(source)
    tar(backup_dir / "uploads_20240101_000000.tar.gz", "-C", str(source), ".")
    handmade(backup_dir / "uploads_20240102_000000.tar.gz", [_member("../evil")])
    journal = restore_uploads(target)
    assert noted(journal, "archive").endswith("uploads_20240101_000000.tar.gz")
    assert "'..' component" in noted(journal, "refused_newer_backups")[0]
    assert listing(uploads) == expected_listing(source)


@pytest.mark.stack
def test_plain_archive_restore_on_a_live_stack(stack):
    """The runbook's own backup line (tar -czf of the folder's absolute path) restored under a live
    backend: owner the service account, modes 0755/0644, health still 200."""
    target = stack.target()
    uploads = stack.uploads_dir
    stack.sandbox.write_text(uploads / ".index", "hidden file of the uploads folder")
    want = expected_listing(uploads)
    archive = Path(target.paths.backup_dir) / "uploads_20240101_000000.tar.gz"
    tar(archive, str(uploads))
    for path in [p for p in uploads.rglob("*") if p.is_file()][:3]:
        path.unlink()

    journal = restore_uploads(target, backup=archive)
    assert noted(journal, "verification") == NO_MANIFEST
    assert listing(uploads) == want
    account = stack.sandbox.service_account
    for path in [uploads, *uploads.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == account.uid, path
        assert stat.S_IMODE(info.st_mode) in (0o755, 0o644), path
    stack.wait_healthy(timeout=10)


@pytest.mark.stack
def test_the_plain_backups_drill_fails_when_the_uploads_are_not_restored(stack, drill_runner):
    """The drill can fail: its recovery sabotaged to restore the .sql.gz only."""
    from fixtures.engine.drill import DrillFailed
    from recovery import database
    from scenarios.drills import PLAIN_BACKUPS, recreate_if_dropped, sabotaged

    def database_only(run) -> None:
        recreate_if_dropped(run)
        run.action(database.restore_database, run.target, level=run.record.level)

    with pytest.raises(DrillFailed) as caught:
        drill_runner(sabotaged(PLAIN_BACKUPS, recover=database_only), stack)
    record = caught.value.record
    assert record.verdict == "failed"
    assert "data differs from the baseline" in record.failure_reason
    assert "missing files" in record.failure_reason


def test_a_restore_that_does_not_put_the_archive_s_listing_in_place_fails_and_puts_the_old_folder_back(
        tmp_path, monkeypatch):
    """成功 only when every file, folder and link of the archive is at its place after the swap."""
    from recovery import uploads as uploads_module

    target, uploads, backup_dir = live_folder(tmp_path / "root")
    source = tmp_path / "src"
    source.mkdir()
    fill(source)
    (source / "empty-folder").mkdir()
    tar(backup_dir / NAME, "-C", str(source), ".")
    before = listing(uploads)
    swap_in = uploads_module.swap_in

    def swap_losing_a_folder(staging: Path, live: Path, old: Path) -> None:
        (staging / "empty-folder").rmdir()  # as a wrong place would: the listing is not where it belongs
        swap_in(staging, live, old)

    monkeypatch.setattr(uploads_module, "swap_in", swap_losing_a_folder)
    with pytest.raises(ActionFailed, match="empty-folder: missing") as failure:
        restore_uploads(target)
    assert failure.value.journal.failed_step().name == "check"
    assert listing(uploads) == before
