"""A staging folder that archive members are written into while they are checked, in one pass.

The folder is new (it must not exist) and beside the live one; nothing in it is live until the
caller swaps it in, and `discard` removes it when any member fails. Every entry gets its owner when
it is created (no second walk to chown), files are written without following links and never
executable, and a file's SHA-256 is computed from the bytes as they are written (no second read).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from recovery.errors import RecoveryError
from recovery.removal import remove_tree

CHUNK = 1024 * 1024
DIR_MODE = 0o755
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class StagingError(RecoveryError):
    """A member cannot be written safely into the staging folder."""


def file_mode(original: int) -> int:
    """Never executable, never more open than 0644, never looser than the original (config.yml 0640)."""
    return (original & 0o644) | 0o600


class Staging:
    """staging/ with an owner (uid, gid) for every entry, or None to keep the current user's.

    The folder is new, so the folders made here are known without asking the file system again: a
    member's parents cost a set lookup, not two stats, and a folder gets its mode and owner once.
    """

    def __init__(self, root: Path, owner: tuple[int, int] | None = None):
        self.root, self.owner = Path(root), owner
        self.root.mkdir(mode=DIR_MODE, parents=False)
        self._base = os.fspath(self.root)
        self._umask = process_umask()
        self._made: set[str] = {""}  # folders made here, relative to root ("" is root itself)
        self._own_dir(self._base)

    def _needs_chmod(self, mode: int) -> bool:
        """Whether a new entry created with `mode` lost bits to the umask (unknown umask: always)."""
        return self._umask is None or bool(mode & self._umask)

    def _own_dir(self, path: str) -> None:
        if self._needs_chmod(DIR_MODE):
            os.chmod(path, DIR_MODE, follow_symlinks=False)
        if self.owner is not None:
            os.lchown(path, *self.owner)

    def parents(self, name: str) -> str:
        """staging/name (a normalised relative name) with its parent folders made as needed; never
        through a symlink."""
        parent = name.rpartition("/")[0]
        if parent not in self._made:
            missing = []
            while parent not in self._made:
                path = f"{self._base}/{parent}"
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    missing.append(parent)
                    parent = parent.rpartition("/")[0]
                    continue
                if stat.S_ISLNK(info.st_mode):
                    raise StagingError(f"{path} is a symlink; refusing to extract below it")
                if not stat.S_ISDIR(info.st_mode):
                    missing.append(parent)  # a file: its mkdir below fails (FileExistsError)
                    parent = parent.rpartition("/")[0]
                    continue
                self._made.add(parent)
            for folder in reversed(missing):
                os.mkdir(f"{self._base}/{folder}", DIR_MODE)
                self._own_dir(f"{self._base}/{folder}")
                self._made.add(folder)
        return f"{self._base}/{name}"

    def directory(self, name: str) -> None:
        destination = self.parents(name)
        if name in self._made:
            return  # made here already, with its mode and owner
        if os.path.islink(destination):
            raise StagingError(f"{destination} is a symlink; refusing to make it a directory")
        try:
            os.mkdir(destination, DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(destination):  # a file of that name
                raise
        self._own_dir(destination)
        self._made.add(name)

    def symlink(self, name: str, target: str) -> None:
        destination = self.parents(name)
        os.symlink(target, destination)
        if self.owner is not None:
            os.lchown(destination, *self.owner)

    def file(self, name: str, data: Any, mode: int) -> str:
        """A new regular file at staging/name from the binary reader `data`; its sha256."""
        destination = self.parents(name)
        mode = file_mode(mode)
        digest = hashlib.sha256()
        with data:
            fd = os.open(destination, NEW_FILE, mode)
            try:
                if self._needs_chmod(mode):
                    os.fchmod(fd, mode)
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
                while chunk := data.read(CHUNK):
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        return digest.hexdigest()

    def copy(self, name: str, source: str, mode: int) -> str:
        """A hardlink member: a copy of a file written before it (never a link out of staging)."""
        fd = os.open(f"{self._base}/{source}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return self.file(name, os.fdopen(fd, "rb"), mode)

    def discard(self) -> None:
        if self.root.exists():
            remove_tree(self.root)


def process_umask() -> int | None:
    """This process's umask, read without changing it (os.umask would, for every thread); None where
    the kernel does not say (/proc/self/status has it since Linux 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None
