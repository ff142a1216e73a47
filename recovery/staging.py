"""A staging folder that archive members are written into while they are checked, in one pass.

The folder is new (it must not exist) and beside the live one; nothing in it is live until the
caller swaps it in, and `discard` removes it when any member fails. Every entry gets its owner when
it is created (no second walk to chown), files are written without following links and never
executable, and a file's SHA-256 is computed from the bytes as they are written (no second read).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from recovery.errors import RecoveryError

CHUNK = 1024 * 1024
DIR_MODE = 0o755


class StagingError(RecoveryError):
    """A member cannot be written safely into the staging folder."""


def file_mode(original: int) -> int:
    """Never executable, never more open than 0644, never looser than the original (config.yml 0640)."""
    return (original & 0o644) | 0o600


class Staging:
    """staging/ with an owner (uid, gid) for every entry, or None to keep the current user's."""

    def __init__(self, root: Path, owner: tuple[int, int] | None = None):
        self.root, self.owner = Path(root), owner
        self.root.mkdir(mode=DIR_MODE, parents=False)
        self._own_dir(self.root)

    def _own_dir(self, path: Path) -> None:
        os.chmod(path, DIR_MODE, follow_symlinks=False)
        if self.owner is not None:
            os.lchown(path, *self.owner)

    def parents(self, name: str) -> Path:
        """staging/name's parent folders, made as needed; never through a symlink."""
        destination = self.root / name
        missing = []
        folder = destination.parent
        while folder != self.root:
            if folder.is_symlink():
                raise StagingError(f"{folder} is a symlink; refusing to extract below it")
            if folder.is_dir():
                break
            missing.append(folder)
            folder = folder.parent
        for folder in reversed(missing):
            folder.mkdir(mode=DIR_MODE)
            self._own_dir(folder)
        return destination

    def directory(self, name: str) -> None:
        destination = self.parents(name)
        if destination.is_symlink():
            raise StagingError(f"{destination} is a symlink; refusing to make it a directory")
        if not destination.is_dir():
            destination.mkdir(mode=DIR_MODE)
        self._own_dir(destination)

    def symlink(self, name: str, target: str) -> None:
        destination = self.parents(name)
        os.symlink(target, destination)
        if self.owner is not None:
            os.lchown(destination, *self.owner)

    def file(self, name: str, data: Any, mode: int) -> str:
        """A new regular file at staging/name from the binary reader `data`; its sha256."""
        destination = self.parents(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(destination, flags, file_mode(mode))
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, data:
            os.fchmod(fd, file_mode(mode))
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            while chunk := data.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def copy(self, name: str, source: str, mode: int) -> str:
        """A hardlink member: a copy of a file written before it (never a link out of staging)."""
        fd = os.open(self.root / source, os.O_RDONLY | os.O_NOFOLLOW)
        return self.file(name, os.fdopen(fd, "rb"), mode)

    def discard(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
