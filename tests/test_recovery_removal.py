"""recovery.removal.remove_tree: everything below goes, nothing a link points to, a top link refused."""

from __future__ import annotations

import os

import pytest

from recovery.removal import remove_tree


def test_remove_tree_removes_every_entry_and_follows_no_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not below the folder")
    folder = tmp_path / ".uploads.old-20990101_000000"
    for n in range(50):
        (folder / str(n) / "deep").mkdir(parents=True)
        (folder / str(n) / "deep" / "f").write_bytes(b"x" * n)
        (folder / str(n) / ".hidden").write_text("h")
    (folder / "top-file").write_text("t")
    os.symlink(outside, folder / "link-to-dir")
    os.symlink(outside, folder / "7" / "link-inside")
    os.symlink(outside / "keep.txt", folder / "link-to-file")

    remove_tree(folder, threads=4)

    assert not folder.exists()
    assert (outside / "keep.txt").read_text() == "not below the folder"


def test_remove_tree_refuses_a_symlink_and_a_missing_folder(tmp_path):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    link = tmp_path / "link"
    os.symlink(real, link)
    with pytest.raises(OSError):
        remove_tree(link)
    assert (real / "sub").is_dir()
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "missing")

