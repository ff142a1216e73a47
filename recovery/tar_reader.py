"""A tar stream read member by member, fast enough for the tar-fed check of recovery.tar_extract.

tarfile parses a 512-byte header through a dozen calls and reads a stream through two buffering
layers: for 100,000 members of 10 kB that was most of the check's CPU, and on two cores the check
competes with tar and pigz for them. This reader takes the stream a megabyte at a time, parses the
headers with slices and hashes the data straight from its buffer.

It reads what mks archives are written with and nothing more: GNU tar's format (plain headers and
`L`/`K` long names, recovery.archives._gzip_writer) and the pax format of older archives (`x` headers
with a path, a link path and times). Anything else raises UnusualHeader, and the caller reads the
archive again with tarfile, the same members under the same checks, only slower: a global or sparse
pax header, a base-256 number, a checksum only the signed sum matches, a V7 or GNU-incremental header,
a type other than file, folder, symlink and hardlink, data on a member that has none. Two headers
that both rename the next member are refused as they are (ArchiveError): no tool agrees on which wins.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import IO, Any

from recovery.manifest import ArchiveError
from recovery.tar_stream import CHUNK

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
GNU_MAGIC = b"ustar  \x00"
POSIX_MAGIC = b"ustar\x0000"
SIMPLE_TYPES = frozenset((tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE))
MAX_NAME_HEADER = 1024 * 1024  # a path is at most 4 kB here; a pax header of names, a few
PAX_NAMES = {"path": "name", "linkpath": "linkname"}
PAX_IGNORED = frozenset(("mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "comment"))


class UnusualHeader(ArchiveError):
    """A header this reader leaves to tarfile (see the module's note)."""


class Truncated(ArchiveError):
    """The stream ended inside a header or a member's data."""


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:
        raise UnusualHeader("a base-256 number")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise UnusualHeader(f"a number that is not octal: {field!r}") from None


def _text(raw: bytes) -> str:
    """A name as tarfile decodes it (up to the first NUL, UTF-8, undecodable bytes escaped)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """The `length key=value\\n` records of a pax header, keeping those that name the member."""
    kept: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[pos:pos + length]
        key, sep, value = record[space - pos + 1:-1].partition(b"=")
        if length <= 0 or not sep or not record.endswith(b"\n"):
            raise UnusualHeader("a pax record it cannot parse")
        try:
            name, text = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnusualHeader("a pax record that is not UTF-8") from None
        if name in PAX_NAMES:
            kept[PAX_NAMES[name]] = text
        elif name not in PAX_IGNORED:
            raise UnusualHeader(f"the pax key {name!r}")
        pos += length
    return kept


class TarReader:
    """Members of a tar stream in order, each as a tarfile.TarInfo; a regular member's data is read
    (data_sha256, extractfile) before the next member is asked for, or skipped then."""

    def __init__(self, source: IO[bytes] | Any):
        self._source = source
        self._buf = b""
        self._pos = 0
        self._size = 0  # the current member's data not read yet
        self._padding = 0  # and the padding after it

    # ---- the buffer ---------------------------------------------------------------------------
    def _refill(self, want: int) -> None:
        """At least `want` bytes from _pos on (the rest of the buffer kept)."""
        rest = self._buf[self._pos:]
        parts, have = [rest] if rest else [], len(rest)
        while have < want:
            chunk = self._source.read(max(CHUNK, want - have))
            if not chunk:
                raise Truncated("unexpected end of data")
            parts.append(chunk)
            have += len(chunk)
        self._buf, self._pos = b"".join(parts), 0  # one part: the chunk itself, not a copy

    def _take(self, count: int) -> bytes:
        if len(self._buf) - self._pos < count:
            self._refill(count)
        start = self._pos
        self._pos += count
        return self._buf[start:self._pos]

    def _pieces(self, count: int) -> Any:
        """count bytes of the stream as memoryviews of the buffer (no copy)."""
        while count:
            if self._pos >= len(self._buf):
                self._refill(1)
            end = min(len(self._buf), self._pos + count)
            yield memoryview(self._buf)[self._pos:end]
            count -= end - self._pos
            self._pos = end

    def _skip(self, count: int) -> None:
        for _ in self._pieces(count):
            pass

    # ---- members ------------------------------------------------------------------------------
    def _header(self) -> bytes | None:
        block = self._take(BLOCK)
        if block == ZERO_BLOCK:
            return None
        if _octal(block[148:156]) != sum(block) - sum(block[148:156]) + 256:
            raise UnusualHeader("a header checksum that its unsigned sum does not match")
        return block

    def next(self) -> tarfile.TarInfo | None:
        """The next member, or None at the end of the archive."""
        self._skip(self._size + self._padding)
        self._size = self._padding = 0
        renames: dict[str, str] = {}
        while True:
            block = self._header()
            if block is None:
                if renames:
                    raise Truncated("the archive ends after a long-name header")
                return None
            kind, size = block[156:157], _octal(block[124:136])
            if kind not in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE):
                break
            if size > MAX_NAME_HEADER:  # read whole: never gigabytes into memory (tarfile would)
                raise ArchiveError(f"a long-name or pax header of {size} bytes")
            data = self._take(_padded(size))[:size]
            found = _pax_records(data) if kind == tarfile.XHDTYPE else {
                "name" if kind == tarfile.GNUTYPE_LONGNAME else "linkname": _text(data)}
            if renames.keys() & found.keys():
                raise ArchiveError("two headers rename the same member")
            renames.update(found)
        return self._member(block, kind, size, renames)

    def _member(self, block: bytes, kind: bytes, size: int, renames: dict[str, str]) -> tarfile.TarInfo:
        magic = block[257:265]
        name = block[0:100]
        if magic == POSIX_MAGIC:
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name.split(b"\0", 1)[0]
        elif magic != GNU_MAGIC or block[345:500] != ZERO_BLOCK[:155]:
            raise UnusualHeader("a V7 header or one with GNU incremental fields")
        if kind not in SIMPLE_TYPES:
            raise UnusualHeader(f"the member type {kind!r}")
        if size and kind != tarfile.REGTYPE:
            raise UnusualHeader("data on a member that has none")
        member = tarfile.TarInfo(renames.get("name") or _text(name))
        member.type, member.mode, member.size = kind, _octal(block[100:108]), size
        member.linkname = renames.get("linkname") or _text(block[157:257])
        if kind == tarfile.DIRTYPE:
            member.name = member.name.rstrip("/")
        self._size, self._padding = size, _padded(size) - size
        return member

    # ---- data ---------------------------------------------------------------------------------
    def data_sha256(self) -> str:
        """The SHA-256 of the current member's data, read to its end."""
        digest = hashlib.sha256()
        for piece in self._pieces(self._size):
            digest.update(piece)
        self._size = 0
        return digest.hexdigest()

    def extractfile(self, member: tarfile.TarInfo) -> io.BufferedReader:
        """A reader of the current member's data (the manifest's, read line by line), as tarfile's."""
        return io.BufferedReader(_Data(self), CHUNK)

    def readinto(self, buffer: Any) -> int:
        """Into buffer, the current member's data that is left, as much as fits."""
        count = min(len(buffer), self._size)
        if count:
            buffer[:count] = self._take(count)
            self._size -= count
        return count

    def read_to_end(self) -> None:
        """The stream after the archive's end, read (and so handed on, and its gzip CRC checked)."""
        self._buf, self._pos = b"", 0
        while self._source.read(CHUNK):
            pass


class _Data(io.RawIOBase):
    def __init__(self, reader: TarReader):
        self.reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.reader.readinto(buffer)
