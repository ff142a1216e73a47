"""recovery.tar_extract: GNU tar extracts what this process checks, member by member, as it streams.

The same archives as the Python staging's tests (tests/test_recovery_archives.py): what is restored,
with which modes, and every hostile or damaged archive refused with the staging folder gone and
nothing written beside it. Real tar, real pigz (or Python's gzip), nothing faked but the lookup of
GNU tar where the fallback is tested.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile

import pytest

from recovery import uploads as uploads_module
from recovery.archives import MANIFEST_NAME, ArchiveError, create_archive, listing
from recovery.tar_extract import gnu_tar, stage_with_tar
from recovery.uploads import backup_uploads, restore_uploads
from tests.test_recovery_archives import HOSTILE, _info, damaged_archives, hostile, make_source
from tests.test_recovery_files import noted
from tests.test_recovery_restore_space import live_uploads

pytestmark = pytest.mark.skipif(gnu_tar() is None, reason="GNU tar is not installed")


def test_tar_restores_content_hidden_files_links_and_the_policy_modes(tmp_path):
    source = make_source(tmp_path)
    archive = tmp_path / "uploads_20240101_000000.tar.gz"
    manifest = create_archive(source, archive, root="uploads")
    staging = tmp_path / "staging"
    assert stage_with_tar(archive, staging, "uploads").entries == manifest.entries
    for entry in manifest.files:
        restored = staging / entry.path
        assert hashlib.sha256(restored.read_bytes()).hexdigest() == entry.sha256
        assert stat.S_IMODE(restored.stat().st_mode) & 0o111 == 0, entry.path
    assert not (staging / MANIFEST_NAME).exists()
    assert (staging / ".hidden").is_file()
    assert stat.S_IMODE((staging / "2024/run.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((staging / "private.yml").stat().st_mode) == 0o640, "never loosen a private file"
    assert stat.S_IMODE((staging / "2024/01").stat().st_mode) == 0o755
    assert os.readlink(staging / "latest") == "2024/01/empty.bin"


def test_a_folder_that_is_group_writable_in_the_archive_is_0755_after(tmp_path):
    source = make_source(tmp_path)
    (source / "2024").chmod(0o775)
    archive = create_archive(source, tmp_path / "a.tar.gz", root="uploads") and tmp_path / "a.tar.gz"
    stage_with_tar(archive, tmp_path / "staging", "uploads")
    assert stat.S_IMODE((tmp_path / "staging/2024").stat().st_mode) == 0o755


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_and_nothing_is_left(tmp_path, case):
    members, reason = HOSTILE[case]
    archive = hostile(tmp_path / "evil.tar.gz", members)
    with pytest.raises(ArchiveError, match=reason):  # the fast reader's refusal, or tarfile's after it
        stage_with_tar(archive, tmp_path / "staging", "uploads")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_what_tar_itself_refuses_fails_the_staging_with_its_reason(tmp_path):
    # every check here passes (each member is in the manifest, none below a symlink), but "f/g"
    # cannot be made below the file "f": tar's refusal, not a crash, and the folder removed
    archive = hostile(tmp_path / "odd.tar.gz", [(_info("f"), b"x"), (_info("f/g"), b"y")])
    with pytest.raises(ArchiveError, match="tar could not extract it"):
        stage_with_tar(archive, tmp_path / "staging", "uploads")
    assert not (tmp_path / "staging").exists()


def test_a_damaged_archive_or_one_that_does_not_match_its_manifest_is_refused(tmp_path):
    damaged_archives(tmp_path, 300_000)  # truncated.tar.gz, corrupt.tar.gz
    body = b"real content"
    good = {"path": "f", "type": "file", "mode": "0644", "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest()}
    hostile(tmp_path / "tampered.tar.gz", [(_info("f"), b"tampered")], [good])
    hostile(tmp_path / "missing.tar.gz", [(_info("f"), body)], [good, {**good, "path": "gone"}])
    for name in ("truncated", "corrupt", "tampered", "missing"):
        with pytest.raises(ArchiveError, match=r"truncated or corrupt|does not match|not in the archive"):
            stage_with_tar(tmp_path / f"{name}.tar.gz", tmp_path / "staging", "uploads")
        assert not (tmp_path / "staging").exists(), name


@pytest.mark.parametrize("extractor", ["GNU tar", "python"])
def test_the_restore_says_which_extractor_it_used_and_both_restore_the_same(tmp_path, monkeypatch, extractor):
    if extractor == "python":
        monkeypatch.setattr(uploads_module, "gnu_tar", lambda: None)
    target, uploads, _ = live_uploads(tmp_path / "root")
    (uploads / "2024").mkdir(exist_ok=True)
    (uploads / "2024/run.sh").write_text("#!/bin/sh\n")
    (uploads / "2024/run.sh").chmod(0o755)
    want = {k: v.replace("f 0755", "f 0644") for k, v in listing(uploads).items()}  # never executable
    backup_uploads(target)
    (uploads / "big.bin").write_bytes(b"damaged")
    journal = restore_uploads(target)
    assert noted(journal, "extractor").startswith(extractor)
    assert listing(uploads) == want


def test_a_tar_member_header_the_checks_refuse_stops_tar_before_the_end(tmp_path):
    # the refused member comes first, a large one after it: tar is stopped, not left to finish
    archive = hostile(tmp_path / "evil.tar.gz", [(_info("dev", tarfile.CHRTYPE), None),
                                                  (_info("big"), os.urandom(2_000_000))])
    with pytest.raises(ArchiveError, match="device or fifo"):
        stage_with_tar(archive, tmp_path / "staging", "uploads")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]
