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
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from recovery.errors import RecoveryError
from recovery.removal import remove_tree

CHUNK = 1024 * 1024
THREADS = 8  # creating entries waits on the file system, not on the CPU
IN_FLIGHT = 64  # pending tasks; a task holding data takes a slot per SLOT_BYTES of it
SLOT_BYTES = 256 * 1024  # so at most ~16 MB of data are pending (64 files of 1 MB would be 64 MB)
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

    Creating a folder or a file waits on the file system's journal here (0.2-2 ms each), not on the
    CPU, so folders and small files (their data already read and hashed by the caller's thread) are
    created by `threads` workers side by side; a task waits for its folder's task, submitted before
    it. At most IN_FLIGHT tasks, with at most IN_FLIGHT * SLOT_BYTES of data, are pending; a file
    larger than CHUNK is streamed by the caller's thread. The first error of a worker is raised by
    the next call, or by `finish`.
    """

    def __init__(self, root: Path, owner: tuple[int, int] | None = None, threads: int = THREADS):
        self.root, self.owner = Path(root), owner
        self.root.mkdir(mode=DIR_MODE, parents=False)
        self._base = os.fspath(self.root)
        self._umask = process_umask()
        self._made: set[str] = {""}  # folders made (or being made) here, relative to root
        self._own_dir(self._base)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="staging") if threads > 1 else None
        self._pending: dict[str, Future[None]] = {}  # folder -> its task, while it runs
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._error: BaseException | None = None

    def _needs_chmod(self, mode: int) -> bool:
        """Whether a new entry created with `mode` lost bits to the umask (unknown umask: always)."""
        return self._umask is None or bool(mode & self._umask)

    def _own_dir(self, path: str) -> None:
        if self._needs_chmod(DIR_MODE):
            os.chmod(path, DIR_MODE, follow_symlinks=False)
        if self.owner is not None:
            os.lchown(path, *self.owner)

    # ---- the workers' side ----
    def _submit(self, folder: str | None, task: Callable[..., None], *args: Any, size: int = 0) -> None:
        self._raise_error()
        if self._pool is None:
            task(*args)
            return
        slots = 1 + size // SLOT_BYTES
        for _ in range(slots):  # only this thread acquires: taking them one by one cannot deadlock
            self._slots.acquire()
        future = self._pool.submit(task, *args)
        if folder is not None:
            self._pending[folder] = future
        future.add_done_callback(lambda done: self._done(done, folder, slots))

    def _done(self, future: Future[None], folder: str | None, slots: int) -> None:
        if folder is not None and self._pending.get(folder) is future:
            del self._pending[folder]
        if not future.cancelled() and future.exception() is not None and self._error is None:
            self._error = future.exception()
        for _ in range(slots):
            self._slots.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _mkdir(self, path: str, parent: Future[None] | None) -> None:
        if parent is not None:
            parent.result()
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if os.path.islink(path) or not os.path.isdir(path):  # a file or link of that name
                raise
        self._own_dir(path)

    def _write(self, path: str, parent: Future[None] | None, data: bytes, mode: int) -> None:
        if parent is not None:
            parent.result()
        fd = os.open(path, NEW_FILE, mode)
        try:
            if self._needs_chmod(mode):
                os.fchmod(fd, mode)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    # ---- the caller's side ----
    def _folder(self, folder: str) -> Future[None] | None:
        """The folder (relative, normalised) made or being made, its parents first; never through a
        symlink. Its task while it is pending."""
        if folder not in self._made:
            missing = []
            parent = folder
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
                    missing.append(parent)  # a file: its mkdir fails (FileExistsError)
                    parent = parent.rpartition("/")[0]
                    continue
                self._made.add(parent)
            for made in reversed(missing):
                above = self._pending.get(made.rpartition("/")[0])
                self._submit(made, self._mkdir, f"{self._base}/{made}", above)
                self._made.add(made)
        return self._pending.get(folder)

    def parents(self, name: str) -> str:
        """staging/name (a normalised relative name) with its parent folders made; never through a
        symlink. Waits for them."""
        parent = self._folder(name.rpartition("/")[0])
        if parent is not None:
            parent.result()
        return f"{self._base}/{name}"

    def directory(self, name: str) -> None:
        if name in self._made:
            return  # made here already (or being made), with its mode and owner
        destination = f"{self._base}/{name}"
        if os.path.islink(destination):
            raise StagingError(f"{destination} is a symlink; refusing to make it a directory")
        self._folder(name)

    def symlink(self, name: str, target: str) -> None:
        destination = self.parents(name)
        self._raise_error()
        os.symlink(target, destination)
        if self.owner is not None:
            os.lchown(destination, *self.owner)

    def file(self, name: str, data: Any, mode: int) -> str:
        """A new regular file at staging/name from the binary reader `data`; its sha256 (of the data
        read here: a worker writes exactly those bytes, or the staging fails)."""
        mode = file_mode(mode)
        digest = hashlib.sha256()
        with data:
            first = data.read(CHUNK)
            more = data.read(CHUNK) if len(first) == CHUNK else b""
            digest.update(first)
            if not more:
                parent = self._folder(name.rpartition("/")[0])
                self._submit(None, self._write, f"{self._base}/{name}", parent, first, mode, size=len(first))
                return digest.hexdigest()
            fd = os.open(self.parents(name), NEW_FILE, mode)
            try:
                if self._needs_chmod(mode):
                    os.fchmod(fd, mode)
                if self.owner is not None:
                    os.fchown(fd, *self.owner)
                chunk = first
                while chunk:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    chunk, more = more, data.read(CHUNK) if more else b""
                    digest.update(chunk)
            finally:
                os.close(fd)
        return digest.hexdigest()

    def copy(self, name: str, source: str, mode: int) -> str:
        """A hardlink member: a copy of a file written before it (never a link out of staging)."""
        self._drain()
        fd = os.open(f"{self._base}/{source}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return self.file(name, os.fdopen(fd, "rb"), mode)

    def _drain(self) -> None:
        """Until every pending task has run; its first error raised."""
        if self._pool is not None:
            for _ in range(IN_FLIGHT):
                self._slots.acquire()
            for _ in range(IN_FLIGHT):
                self._slots.release()
        self._raise_error()

    def finish(self) -> None:
        """Every entry written (the workers done); the first error raised. Call before using it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._raise_error()

    def discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
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
