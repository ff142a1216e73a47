"""Reading a tar stream member by member, once, in order: what tarfile keeps for random access and
its per-member buffering layers are not needed for that, and cost memory and time for archives of
100,000 members (recovery.archives and recovery.plain_archives read them so)."""

from __future__ import annotations

import hashlib
import tarfile
from typing import Any

CHUNK = 1024 * 1024


def data_sha256(data: Any) -> str:
    """The SHA-256 of what a binary reader gives, read to its end a CHUNK at a time."""
    digest = hashlib.sha256()
    while chunk := data.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def below_any(name: str, folders: set[str]) -> bool:
    """Whether a parent of the normalised name is one of folders."""
    parent = name.rpartition("/")[0]
    while parent:
        if parent in folders:
            return True
        parent = parent.rpartition("/")[0]
    return False


class _MemberData:
    """A regular member's data read straight from the tar stream, size bytes and no more: what
    tarfile.extractfile gives, without its two buffering layers per member (100,000 members)."""

    def __init__(self, fileobj: Any, size: int):
        self.fileobj, self.left = fileobj, size

    def read(self, size: int = -1) -> bytes:
        want = self.left if size < 0 else min(size, self.left)
        if want <= 0:
            return b""
        data = self.fileobj.read(want)
        if len(data) != want:
            raise tarfile.ReadError("unexpected end of data")
        self.left -= want
        return data

    def __enter__(self) -> _MemberData:
        return self

    def __exit__(self, *_: object) -> None:
        pass


def next_member(tar: tarfile.TarFile) -> tarfile.TarInfo | None:
    """tar.next(), dropping the members tarfile keeps for random access (never used here: members are
    read once, in order): 100,000 TarInfo objects would otherwise stay in memory."""
    tar.members.clear()
    return tar.next()


def member_data(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    """A reader of a regular member's data, just after tar.next() returned it."""
    fileobj = tar.fileobj
    if member.issparse() or fileobj is None or fileobj.tell() != member.offset_data:
        data = tar.extractfile(member)
        assert data is not None
        return data
    return _MemberData(fileobj, member.size)


class TarfileMembers:
    """A tar stream read through tarfile with recovery.tar_reader.TarReader's methods (the archives
    that reader leaves to tarfile)."""

    def __init__(self, source: Any):
        self.tar = tarfile.open(fileobj=source, mode="r|")  # noqa: SIM115 (it closes nothing of its own)
        self.member: tarfile.TarInfo | None = None

    def next(self) -> tarfile.TarInfo | None:
        self.member = next_member(self.tar)
        return self.member

    def extractfile(self, member: tarfile.TarInfo) -> Any:
        return self.tar.extractfile(member)

    def data_sha256(self) -> str:
        assert self.member is not None
        return data_sha256(member_data(self.tar, self.member))

    def read_to_end(self) -> None:
        read_to_end(self.tar)


def read_to_end(tar: tarfile.TarFile) -> None:
    """Read past the tar's end to the end of the gzip stream, so that its CRC is checked."""
    assert tar.fileobj is not None
    while tar.fileobj.read(CHUNK):
        pass
