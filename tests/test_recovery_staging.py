"""recovery.staging.Staging with its worker threads: what it writes, and how a failure shows."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from recovery.staging import CHUNK, Staging, StagingError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("threads", [1, 8])
def test_staging_writes_every_file_with_its_hash_mode_and_folders(tmp_path, threads):
    staging = Staging(tmp_path / "staging", threads=threads)
    written = {}
    for n in range(300):
        name = f"{n % 40}/sub{n % 3}/file-{n}"
        data = os.urandom(n * 37)
        assert staging.file(name, io.BytesIO(data), 0o755) == _sha(data)
        written[name] = data
    big = os.urandom(2 * CHUNK + 5)  # streamed by the caller's thread
    assert staging.file("big/one", io.BytesIO(big), 0o640) == _sha(big)
    staging.directory("empty/folder")
    staging.symlink("0/link", "sub0")
    staging.finish()

    root = tmp_path / "staging"
    for name, data in written.items():
        assert (root / name).read_bytes() == data
        assert (root / name).stat().st_mode & 0o777 == 0o644, "never executable"
    assert (root / "big/one").read_bytes() == big and (root / "big/one").stat().st_mode & 0o777 == 0o640
    assert (root / "empty/folder").is_dir() and os.readlink(root / "0/link") == "sub0"


def test_a_workers_failure_fails_the_staging_and_discard_removes_it(tmp_path):
    staging = Staging(tmp_path / "staging", threads=8)
    staging.file("a", io.BytesIO(b"a file"), 0o644)
    with pytest.raises(OSError):  # "a" is a file, not a folder: raised by a later call or finish
        staging.file("a/b", io.BytesIO(b"below a file"), 0o644)
        for n in range(200):
            staging.file(f"more/{n}", io.BytesIO(b"x"), 0o644)
        staging.finish()
    staging.discard()
    assert not (tmp_path / "staging").exists()


def test_nothing_is_written_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    staging = Staging(tmp_path / "staging", threads=8)
    staging.symlink("link", str(outside))
    with pytest.raises(StagingError, match="symlink"):
        staging.file("link/escaped", io.BytesIO(b"x"), 0o644)
    with pytest.raises(StagingError, match="symlink"):
        staging.directory("link")
    staging.discard()
    assert list(outside.iterdir()) == []
