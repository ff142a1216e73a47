"""Staging an mks archive with GNU tar while this process checks every member against the manifest.

The decompressed tar stream is read once, here: each chunk is handed on to `tar -x` (run as the
service account, into a new staging folder) as it is parsed and its members hashed here, by
recovery.tar_reader (an archive with a header that reader leaves to tarfile is staged again with
tarfile: the same checks, slower). tar creates the entries at C speed while the checks run beside
it, so the restore takes about as long as bare `tar -xzf`; Python creating 100,000 files itself took
3-4 times as long. tar writes exactly the bytes hashed here.

Nothing in the staging folder is live: a member that fails a check, or a tar that fails, discards the
whole folder (tar is stopped first). GNU tar keeps every entry inside the folder by itself (leading
`/` stripped, `..` refused, links that leave the folder made last, and refused here before that); it
is told to set no owner from the archive (its files belong to the account it runs as), to overwrite
nothing, and to leave out the manifest. Modes outside the policy of recovery.staging (executable or
group/other-writable files, folders other than 0755) are set after tar's exit from the members'
headers.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import shutil
import tarfile
import zlib
from pathlib import Path
from typing import IO

from recovery.archives import (
    MANIFEST_NAME,
    ArchiveError,
    Entry,
    Manifest,
    check_members,
    decompressed,
)
from recovery.commands import RunAs, input_to, run
from recovery.errors import CommandError
from recovery.removal import remove_tree
from recovery.staging import DIR_MODE, file_mode
from recovery.tar_reader import TarReader, Truncated, UnusualHeader
from recovery.tar_stream import TarfileMembers

TAR_OPTIONS = ("-x", "-f", "-", "--no-same-owner", "--same-permissions",
               "--anchored", f"--exclude={MANIFEST_NAME}")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux
PIPE_BYTES = 1024 * 1024  # the checks and tar run further apart than the default 64 kB pipe allows


log = logging.getLogger(__name__)


@functools.cache
def gnu_tar() -> str | None:
    """The path of GNU tar where it is installed (its refusals of unsafe members are relied on)."""
    tar = shutil.which("tar")
    if tar is None:
        return None
    try:
        version = run([tar, "--version"], timeout=10).stdout
    except CommandError:
        return None
    return tar if "GNU tar" in version else None


class _TarStopped(ArchiveError):
    """tar stopped reading the stream before its end."""


class _Tee:
    """A reader that hands every chunk it reads to tar's stdin as well."""

    def __init__(self, source: IO[bytes], sink: IO[bytes]):
        self.source, self.sink = source, sink

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        if data:
            try:
                self.sink.write(data)
            except BrokenPipeError:
                raise _TarStopped("tar stopped reading the archive") from None
        return data


def _widen(pipe: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # a smaller pipe only makes the two sides wait on each other more
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)


def _mode_fixes(fixes: list[tuple[str, int]], member: tarfile.TarInfo, name: str, entry: Entry) -> None:
    """The modes tar gives that the staging's policy does not."""
    if member.isreg() and member.mode != file_mode(entry.mode):
        fixes.append((name, file_mode(entry.mode)))
    elif member.isdir() and member.mode != DIR_MODE:
        fixes.append((name, DIR_MODE))


def stage_with_tar(path: str | Path, staging_dir: str | Path, expected_root: str,
                   run_as: RunAs | None = None) -> Manifest:
    """Check and extract in one pass into a new staging_dir, owned by `run_as` (tar runs as it); see
    the module's note. Any failure removes staging_dir and raises ArchiveError."""
    path, staging = Path(path), Path(staging_dir)
    tar_path = gnu_tar()
    if tar_path is None:
        raise ArchiveError("GNU tar is not installed")
    try:
        return _stage(path, staging, expected_root, run_as, tar_path, TarReader)
    except UnusualHeader as exc:
        log.info("%s has %s; checking it again with Python's tarfile", path, exc)
        return _stage(path, staging, expected_root, run_as, tar_path, TarfileMembers)


def _stage(path: Path, staging: Path, expected_root: str, run_as: RunAs | None, tar_path: str,
           reader_type: type[TarReader] | type[TarfileMembers]) -> Manifest:
    staging.mkdir(mode=DIR_MODE)
    os.chmod(staging, DIR_MODE)
    if run_as is not None and not run_as.is_current:
        os.chown(staging, run_as.uid, run_as.gid)
    fixes: list[tuple[str, int]] = []
    try:
        with decompressed(path) as source:
            try:
                with input_to([tar_path, *TAR_OPTIONS, "-C", str(staging)], run_as=run_as, cwd=staging,
                              timeout=3600) as sink:
                    _widen(sink)
                    manifest = check_members(path, reader_type(_Tee(source, sink)), expected_root,
                                             functools.partial(_mode_fixes, fixes))
            except CommandError as exc:  # tar's own refusal (the checks here passed)
                detail = (exc.stderr or exc.reason).strip().splitlines()[:1] or [exc.reason]
                raise ArchiveError(f"{path}: tar could not extract it: {detail[0]}") from None
        for name, mode in fixes:
            os.chmod(f"{staging}/{name}", mode, follow_symlinks=False)
    except (Truncated, tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        remove_tree(staging)
        raise ArchiveError(f"{path}: truncated or corrupt archive ({exc})") from None
    except BaseException:  # an ArchiveError (UnusualHeader too: the caller reads again) as it is
        remove_tree(staging)
        raise
    return manifest
